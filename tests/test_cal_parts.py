"""The dual loop's named parts, each on its own, without a chip: known answers in closed form."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from calibrate.controllers.balance import BalanceFit, OffsetEstimate
from calibrate.controllers.base import LoopRecord, Phase, PhaseRecord, Status, StopReason
from calibrate.controllers.dual_loop import ProxySampler
from calibrate.controllers.fano import FanoEstimate, group_sample, neuron_sample, population_sample
from calibrate.controllers.lattice import CodeLattice, codes_in_gain_order, neighbour_codes
from calibrate.controllers.population import PopulationRateLoop
from calibrate.controllers.rate_model import RateModel, RateWindow
from calibrate.controllers.settings import DualLoopSettings
from calibrate.controllers.state import LoopObservation, LoopState
from hw_models.device import DeviceIdentity, KnobSpec


def linear_knob(name: str, n: int, bits: int = 8, code_ref: int = 64) -> KnobSpec:
    return KnobSpec(name, "neuron", bits, code_ref, n, np.arange(n))


def scrambled_knob(n: int) -> KnobSpec:
    """A 4-bit DAC whose gain is not monotonic in the code (as dynapse2's coarse/fine), with two invalid codes."""
    transfer = np.array([0.0, 0.4, 0.2, np.nan, 1.0, 0.7, 1.6, 1.3, 2.4, np.nan, 3.0, 2.0, 4.2, 3.6, 5.0, 4.6])
    return KnobSpec("gain_e", "neuron", 4, 4, n, np.arange(n), dac="coarse_fine", transfer=transfer)


# -- the code lattice -------------------------------------------------------------------------------------------
def test_codes_in_gain_order_follow_the_transfer_not_the_code():
    k = scrambled_knob(3)
    order = codes_in_gain_order(k)
    assert order.tolist() == [0, 2, 1, 5, 4, 7, 6, 11, 8, 10, 13, 12, 15, 14]
    assert np.all(np.diff(k.nominal_gain(order)) >= 0)
    # neighbours are neighbours in gain, clipped at both ends
    nb = neighbour_codes(k, np.array([0, 4, 14]))
    assert nb.tolist() == [[0, 0, 2], [5, 4, 7], [15, 14, 14]]
    assert neighbour_codes(linear_knob("g", 2), np.array([0, 255])).tolist() == [[0, 0, 1], [254, 255, 255]]


def test_clip_keeps_the_ratio_first_and_reports_what_is_out_of_range():
    lat = CodeLattice(linear_knob("gain_e", 3), linear_knob("gain_i", 3))
    lo, hi = lat.lim_e
    ln_s = np.array([0.0, 0.0, 5.0])
    ln_r = np.array([0.0, 2 * (hi - lo) + 1.0, 0.0])  # neuron 1 wants a ratio no code pair gives
    c = lat.clip(ln_s, ln_r)
    assert c.ratio_out_of_range.tolist() == [False, True, False]
    assert c.ln_r[1] == pytest.approx(hi - lo)  # the widest ratio the DACs give
    assert c.s_at_limit.tolist() == [0, 1, 1] and c.ln_s[2] < 5.0  # scale pinned at the top, ratio kept
    ge, gi = np.exp(c.ln_s + c.ln_r / 2), np.exp(c.ln_s - c.ln_r / 2)
    assert np.all(ge <= np.exp(hi) * (1 + 1e-12)) and np.all(gi <= np.exp(hi) * (1 + 1e-12))


def test_joint_quantisation_is_the_best_neighbouring_pair():
    lat = CodeLattice(linear_knob("gain_e", 50), linear_knob("gain_i", 50))
    rng = np.random.default_rng(3)
    ln_s, ln_r = rng.uniform(-0.5, 0.5, 50), rng.uniform(-0.4, 0.4, 50)
    slope_s, slope_r, rate_tol, ratio_tol = np.full(50, 2.0), 3.0, 0.035, 0.015
    codes = lat.quantise(ln_s, ln_r, slope_s, slope_r, rate_tol, ratio_tol)
    ke = lat.ke
    for g in range(50):
        ce = neighbour_codes(ke, ke.code_for_gain(np.exp([ln_s[g] + ln_r[g] / 2])))[0]
        ci = neighbour_codes(ke, ke.code_for_gain(np.exp([ln_s[g] - ln_r[g] / 2])))[0]

        def cost(e, i):
            le, li = np.log(e / 64), np.log(i / 64)
            d_rate = 2.0 * (0.5 * (le + li) - ln_s[g]) + 3.0 * (le - li - ln_r[g])
            return (d_rate / rate_tol) ** 2 + ((le - li - ln_r[g]) / ratio_tol) ** 2

        best = min(itertools.product(ce, ci), key=lambda p: cost(*p))
        assert cost(codes["gain_e"][g], codes["gain_i"][g]) == pytest.approx(cost(*best))
    # and what it set is what the rate model is fitted on
    s_app, r_app = lat.applied_state(codes, ln_s, ln_r)
    ge, gi = lat.gains(codes)
    np.testing.assert_allclose(s_app, 0.5 * np.log(ge * gi))
    np.testing.assert_allclose(r_app, np.log(ge / gi))


# -- loop 1: offsets and the balance least squares ---------------------------------------------------------------
def test_offsets_are_the_mean_of_the_null_readings():
    off = OffsetEstimate(3)
    off.add(np.array([10.0, 20.0, np.nan]), np.array([True, True, False]))
    off.add(np.array([12.0, np.nan, np.nan]), np.array([True, False, False]))
    sd = off.finish()
    assert off.offset_pa.tolist() == [11.0, 20.0, 0.0]  # never read: no correction
    assert sd == pytest.approx(np.std([11.0, 20.0]))


def test_balance_fit_recovers_a_and_b_and_steps_the_ratio_to_their_zero():
    n = 40
    rng = np.random.default_rng(5)
    a, b = rng.uniform(200, 400, n), rng.uniform(200, 400, n)
    fit = BalanceFit(np.arange(n), n, shared=False)
    for ge_s, gi_s in ((1.0, 0.0), (1.0, 1.0), (1.2, 0.8), (0.9, 1.1)):  # probe, then loop windows
        ge, gi = np.full(n, ge_s), np.full(n, gi_s)
        y = ge * a - gi * b + rng.normal(0, 2.0, n) + 5.0
        fit.add(ge, gi, y, np.ones(n, bool), np.full(n, 5.0), 0.0, 300.0)
    ln_s, ln_r = np.zeros(n), np.zeros(n)
    new_r = fit.solve(ln_s, ln_r, max_step=1.0, frozen=False)
    np.testing.assert_allclose(fit.a, a, rtol=0.02)
    np.testing.assert_allclose(fit.b, b, rtol=0.02)
    np.testing.assert_allclose(new_r, np.log(fit.b / fit.a))
    assert np.all(np.isfinite(fit.balance_se)) and np.all(fit.balance_se < 0.05)
    assert np.array_equal(fit.solve(ln_s, ln_r, 1.0, frozen=True), ln_r)  # frozen ratios stay
    assert np.all(np.abs(fit.solve(ln_s, ln_r, 0.01, False)) <= 0.01 + 1e-12)  # steps are bounded
    # the measured balance index of a window at the balanced ratio is its noise only
    idx = fit.measured_index(np.zeros(n), np.ones(n), np.ones(n))
    assert np.all(idx == 0.0)


# -- the Fano estimate -------------------------------------------------------------------------------------------
def test_fano_estimate_is_a_clipped_window_weighted_mean():
    est = FanoEstimate(1.0, 0.2, 5.0)
    est.add(2.0, 100.0)  # the initial value has no weight
    assert est.value == 2.0
    est.add(4.0, 300.0)
    assert est.value == pytest.approx((2.0 * 100 + 4.0 * 300) / 400)
    est.add(None, 1e6)  # a window that could not estimate it changes nothing
    assert est.value == pytest.approx(3.5)
    est.add(1e6, 1e6)
    assert est.value == 5.0


def test_fano_samples_of_poisson_counts_are_one():
    rng = np.random.default_rng(8)
    n, k = 400, 8
    sub = [rng.poisson(30.0, n) for _ in range(k)]
    live = np.ones(n, dtype=bool)
    assert neuron_sample(sub, live) == pytest.approx(1.0, abs=0.1)
    group_of = np.arange(n) // 100  # four groups of 100 neurons
    assert group_sample(sub, group_of, 4, live) == pytest.approx(1.0, abs=0.6)
    pops = [np.arange(n) < 300, np.arange(n) >= 300]
    many = [rng.poisson(30.0, n) for _ in range(64)]
    assert population_sample(many, pops) == pytest.approx(1.0, abs=0.3)
    assert neuron_sample(sub[:1], live) is None and population_sample(sub[:1], pops) is None


# -- the rate model ----------------------------------------------------------------------------------------------
def test_rate_model_recovers_slopes_and_intercepts():
    g = 30
    rng = np.random.default_rng(2)
    alpha, beta, gamma = np.log(10.0) + rng.normal(0, 0.2, g), 2.0, 1.5
    model = RateModel(beta0=1.0, gamma0=0.0, beta_sd=0.3, near=0.5, halflife_ms=None, prior_rate_se=None,
                      start_ln_s=np.zeros(g), start_ln_r=np.zeros(g))
    t = 0.0
    for k in range(8):
        ln_s, ln_r = rng.normal(0, 0.1, g), rng.normal(0, 0.1, g)
        rate = np.exp(alpha + beta * ln_s + gamma * ln_r)
        T = 100_000.0  # long windows: counts of 1e3-1e4, so the fit is close to exact
        t += T
        model.add(RateWindow(ln_s, ln_r, rate * T * 1e-3 - 0.5, np.ones(g), T, t))
    fit = model.fit(np.full(g, 10.0), 1.0, t, T)
    assert model.beta == pytest.approx(beta, rel=0.02) and model.gamma == pytest.approx(gamma, rel=0.02)
    np.testing.assert_allclose(fit.alpha, alpha, atol=0.02)
    assert fit.has.all()


# -- the population strategy -------------------------------------------------------------------------------------
def test_population_loop_follows_a_paradoxical_jacobian_to_the_targets():
    """A linear recurrent plant in ln rate whose inhibitory rate falls when the inhibitory scale rises (J_II < 0,
    the paradoxical effect): the loop measures J and reaches both population targets."""
    n = 100
    inh = np.arange(n) >= 80
    cfg = DualLoopSettings()
    state = LoopState.start(np.zeros(n), np.zeros(n))
    loop = PopulationRateLoop(cfg, inh_mask=inh, targets_hz=(5.0, 14.0), state=state)
    J = np.array([[1.3, -1.6], [0.8, -0.4]])
    c = np.log([5.0, 14.0]) - J @ np.array([0.3, -0.2])  # the targets lie at S = (0.3, -0.2)
    lat = CodeLattice(linear_knob("gain_e", n, bits=10, code_ref=256), linear_knob("gain_i", n, bits=10,
                                                                                   code_ref=256))
    t, T = 0.0, 2000.0
    for _ in range(12):
        S = loop.scale.copy()
        y = c + J @ S
        rates = np.where(inh, np.exp(y[1]), np.exp(y[0]))
        counts = rates * T * 1e-3  # expected counts: no counting noise
        t += T
        obs = LoopObservation(counts, np.ones(n, bool), counts, np.ones(n), state.ln_s.copy(), state.ln_r.copy(),
                              T, t, np.zeros(n))
        loop.fano.add(1.0, T)
        loop.step(state, lat, obs)
    np.testing.assert_allclose(loop.scale, [0.3, -0.2], atol=0.02)
    assert loop.jacobian[1, 1] < 0  # the sign the chip shows, not the single-neuron one
    assert loop.ratios_frozen  # balance already within tolerance (balance_se 0): ratios frozen


# -- the interface -----------------------------------------------------------------------------------------------
def test_status_refuses_a_neuron_in_two_categories_or_none():
    t, f = np.array([True, False]), np.array([False, False])
    Status(calibrated=t, unreachable=~t, dead=f)
    with pytest.raises(ValueError, match="no category or in two"):
        Status(calibrated=t, unreachable=t, dead=f)
    with pytest.raises(ValueError):
        Status(calibrated=f, unreachable=f, dead=f)


def test_records_serialise_with_enum_values_and_answer_none_for_missing_figures():
    r = PhaseRecord(Phase.PROBE)
    assert r.to_dict() == {"phase": "probe"} and r.rate_mean_hz is None
    with pytest.raises(AttributeError):
        r.jacobian  # noqa: B018
    lr = LoopRecord(Phase.LOOP, 300.0, 9.5, 0.1, None, 1.5, 0.0, 1.1, 0.2, None)
    assert list(lr.to_dict()) == ["phase", "window_ms", "rate_mean_hz", "rate_cv", "balance_p95", "beta", "gamma",
                                  "fano", "rate_se_rms", "balance_se_rms"]
    assert StopReason("budget") is StopReason.BUDGET


def test_proxy_sampler_walks_every_neuron_of_each_core_once_per_sweep():
    ident = DeviceIdentity(uid="chip-x", profile="p", profile_sha256="0" * 64, n_neurons=4 * 16, n_cores=4,
                           model="dpi", dt_ms=0.1, proxy_channels="one_per_core")
    s = ProxySampler(ident)
    sets = s.next(16)
    assert all(len(m) == 4 for m in sets)
    seen = np.concatenate(sets)
    assert sorted(seen.tolist()) == list(range(64))
    again = ProxySampler(ident)
    assert all(np.array_equal(a, b) for a, b in zip(again.next(16), sets))  # seeded by the uid
    all_channels = ProxySampler(DeviceIdentity(uid="c", profile="p", profile_sha256="0" * 64, n_neurons=8,
                                               n_cores=1, model="cond_lif", dt_ms=0.1))
    assert all_channels.next(3) == [None, None, None]
