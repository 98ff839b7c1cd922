"""The judging replay (calibrate.replay, calibrate.control_variate): replicas are independent copies of the chip,
the proxy parts' expectations are exact, the control-variate rates are unbiased with the standard errors they
claim, and every case it cannot handle falls back to the plain estimates."""
import dataclasses
import math
import warnings

import numpy as np
import pytest

import calibrate.replay as replay
from calibrate.control_variate import MIN_SUB_WINDOWS, estimate_rates
from calibrate.metrics import figures_from_record, true_figures
from calibrate.replay import (expected_parts, judging_replay, record_replay, replicas_for, replicated_chip)
from hw_models.chip import draw_chip
from hw_models.emulator import NumpyDevice, gains_from_codes, nominal_codes
from hw_models.engine import Engine
from hw_models.profile import load_profile


def test_replicas_fill_an_engine_of_small_chips_only():
    assert replicas_for(32, 400.0) == 8  # devboard: 256 neurons per step
    assert replicas_for(512, 100.0) == 1 and replicas_for(1024, 60.0) == 1
    assert replicas_for(32, 10.0) == 2  # at least 4 sub-windows per copy
    assert replicas_for(32, 3.0) == 1


def test_replicated_chip_is_independent_copies_of_the_chip():
    chip = draw_chip("devboard", 3)
    big = replicated_chip(chip, 3)
    n, ns = chip.n, chip.in_e.shape[1]
    assert big.n == 3 * n and big.in_e.shape == (3 * n, 3 * ns) and big.in_i.shape == (3 * n, 3 * ns)
    for j in range(3):
        rows = slice(j * n, (j + 1) * n)
        # copy j reads its own block of sources, with the chip's weights, and nothing else
        assert (big.in_e[rows, j * ns:(j + 1) * ns] != chip.in_e).nnz == 0
        assert big.in_e[rows].nnz == chip.in_e.nnz and big.in_i[rows].nnz == chip.in_i.nnz
        for k, v in chip.params.items():
            np.testing.assert_array_equal(big.params[k][rows], v)
    assert big.profile["input"]["n_src_e"] == 3 * ns and big.seed == chip.seed
    assert replicated_chip(chip, 1) is chip


def test_one_copy_replays_what_the_emulator_replays():
    """With one copy the replay's sub-windows are the emulator's own windows on the same input stream, bit for bit
    (the replay draws the chip and its engine as NumpyDevice does)."""
    codes = {"gain_e": np.full(32, 70), "gain_i": np.full(32, 60)}
    rec = record_replay("devboard", 4, codes, replay_s=6.0, replicas=1, input_stream=1)
    dev = NumpyDevice("devboard", 4, input_stream=1)
    dev.set_codes(codes)
    dev.run_true(500.0)
    for k in range(6):
        st = dev.run_true(1000.0)
        np.testing.assert_array_equal(rec.counts[k], st.spike_counts)
        np.testing.assert_array_equal(rec.iexc[k], st.iexc)


def test_copies_fire_as_the_chip_does():
    """8 copies in one engine against 8 replays of the chip alone on other streams: each neuron's mean rate agrees
    within its counting noise (the copies are the same chip, not a different one)."""
    codes = {"gain_e": np.full(32, 64), "gain_i": np.full(32, 64)}
    many = record_replay("devboard", 2, codes, replay_s=160.0, replicas=8, input_stream=1).counts.mean(axis=0)
    alone = np.mean([record_replay("devboard", 2, codes, replay_s=20.0, replicas=1, input_stream=10 + k).counts.mean(
        axis=0) for k in range(8)], axis=0)
    se = np.sqrt(1.5 * (many + alone) / 160.0)  # counts per 1 s sub-window, F <= 1.5, 160 sub-windows each
    assert np.all(np.abs(many - alone) < 5 * se + 1e-9)
    assert abs(many.mean() - alone.mean()) < 5 * math.sqrt(6.0 * many.mean() / (160 * 32))  # population: F_pop ~ 4


@pytest.mark.parametrize("profile,sub_s,temperature", [("devboard", 1.0, None), ("devboard", 1.0, 306.0),
                                                       ("dynapse2", 0.4, None)])
def test_expected_parts_are_the_long_run_means(profile, sub_s, temperature):
    """The proxy parts' expectations against a replay at calibrated-like codes (and off T0: tracking replays at
    other temperatures), per neuron in units of the window mean's own standard error (30 sub-windows: t with 29
    degrees of freedom, |t| > 4.5 once in 5000 neurons)."""
    chip = draw_chip(profile, 6)
    codes = nominal_codes(chip.knobs)
    codes["gain_e"] = codes["gain_e"] + 3
    eng = Engine(chip, temperature_k=temperature, input_stream=2)
    eng.set_gains(*gains_from_codes(chip, codes))
    mu_e, mu_i = expected_parts(eng)
    eng.run(int(300 / chip.dt))
    subs = [eng.run(int(sub_s * 1e3 / chip.dt)) for _ in range(30)]
    for part, mu in (("iexc", mu_e), ("iinh", mu_i)):
        x = np.stack([getattr(s, part) for s in subs])
        z = (x.mean(axis=0) - mu) / (x.std(axis=0, ddof=1) / math.sqrt(len(subs)))
        live = ~chip.dead
        assert np.mean(np.abs(z[live]) > 4.5) < 0.005, part
        assert abs(np.mean(z[live])) < 2.5, part  # no common offset beyond the shared pools' noise


def test_estimator_recovers_a_linear_response_with_the_se_it_claims():
    """Synthetic sub-windows ``y = a + b u + c v + e``: the control-variate intercepts are unbiased, their se is
    what their spread over repeats shows, and they beat the plain means by the share of variance u, v explain."""
    rng = np.random.default_rng(0)
    S, N, reps = 200, 40, 200
    a = rng.uniform(8, 12, N)
    b = rng.uniform(20, 40, N)
    cv_est, cv_se, plain_est = [], [], []
    for _ in range(reps):
        common = rng.normal(0, 0.02, (S, 1))  # shared input pools: every neuron's drive moves together
        u = common + rng.normal(0, 0.02, (S, N))
        v = 0.5 * common + rng.normal(0, 0.02, (S, N))
        y = a + b * u - 0.5 * b * v + rng.normal(0, 1.0, (S, N))
        est = estimate_rates(y, u, v)
        cv_est.append(est.rates.mean())
        cv_se.append(est.mean_se(np.ones(N, bool), np.ones(N)))
        plain_est.append(y.mean())
    cv_est, plain_est = np.array(cv_est), np.array(plain_est)
    assert abs(cv_est.mean() - a.mean()) < 4 * cv_est.std() / math.sqrt(reps)
    assert cv_est.std() / np.mean(cv_se) == pytest.approx(1.0, abs=0.15)
    assert cv_est.std() < 0.5 * plain_est.std()


def test_the_plain_estimator_below_enough_sub_windows():
    y = np.random.default_rng(1).poisson(10.0, (MIN_SUB_WINDOWS - 1, 5)).astype(float)
    est = estimate_rates(y, np.zeros_like(y), np.zeros_like(y))
    assert est.method == "plain" and np.allclose(est.rates, y.mean(axis=0))


@pytest.mark.slow
def test_control_variate_is_unbiased_and_its_se_right_on_devboard():
    """24 replays of a devboard chip on independent streams, each judged with the control variate and with the plain
    means from the same sub-windows: their paired difference is 0 within its se (the plain mean is unbiased), the
    control variate's spread over replays is the se it predicts, and far below the plain mean's (benchmarks/
    bench_yield.py measures the same on every profile, docs/yield.md)."""
    prof = load_profile("devboard")
    codes = {"gain_e": np.full(32, 66), "gain_i": np.full(32, 62)}
    cv, plain, se = [], [], []
    for k in range(24):
        rec = record_replay(prof, 7, codes, replay_s=160.0, input_stream=20 + k)
        live = ~rec.dead
        est = rec.rate_estimate()
        assert est.method == "control-variate"
        cv.append(est.rates[live].mean())
        plain.append(rec.rates_hz[:, live].mean())
        se.append(est.mean_se(live, np.ones(32)))
    cv, plain = np.array(cv), np.array(plain)
    d = cv - plain
    assert abs(d.mean()) < 4 * d.std(ddof=1) / math.sqrt(len(d))
    assert 0.6 < cv.std(ddof=1) / np.mean(se) < 1.5
    assert cv.std(ddof=1) < 0.6 * plain.std(ddof=1)


def test_balance_is_exact_and_the_figures_are_the_replays():
    """On a feed-forward chip the balance figures are the exact expectations (se 0); ``true_figures`` and the
    yield study's ``judging_replay`` give the same figures from the same arguments."""
    codes = {"gain_e": np.full(32, 66), "gain_i": np.full(32, 62)}
    j = judging_replay("devboard", 5, codes, replay_s=40.0)
    tf = true_figures("devboard", 5, codes, replay_s=40.0)
    assert j.figures == tf and tf.control_variate and tf.replicas == replicas_for(32, 40.0)
    assert j.se["balance_p95"] == 0.0 and j.se["rate_err"] > 0
    eng = Engine(draw_chip("devboard", 5))
    eng.set_gains(*gains_from_codes(eng.chip, codes))
    mu_e, mu_i = expected_parts(eng)
    bi = np.abs(mu_e + mu_i) / mu_e
    assert tf.balance_p95 == pytest.approx(float(np.quantile(bi, 0.95)), rel=1e-12)


def test_recurrent_chips_and_short_replays_use_the_plain_estimates():
    rec = record_replay("balanced-net", 1, {}, replay_s=3.0)
    assert rec.mu_e is None and rec.rate_estimate().method == "plain"
    short = record_replay("devboard", 1, {}, replay_s=5.0)
    assert short.mu_e is None


def test_contradicted_expectations_fall_back_with_a_warning(monkeypatch):
    """A model whose proxy is not what the expectations say (here: expectations 5 % off) is caught by the replay's
    own window means: a warning, and the plain estimates with measured balance."""
    real = replay.expected_parts
    monkeypatch.setattr(replay, "expected_parts", lambda eng: tuple(1.05 * x for x in real(eng)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = record_replay("devboard", 2, {}, replay_s=40.0)
    assert rec.mu_e is None and any("contradict" in str(w.message) for w in caught)
    fig = figures_from_record(load_profile("devboard"), rec, rec.rate_estimate())
    assert not fig.control_variate


def test_a_replay_on_a_given_device_is_one_copy_and_keeps_its_state():
    dev = NumpyDevice("devboard", 3, input_stream=1)
    t0 = dev.engine.step_index
    tf = true_figures(dev.profile, 3, nominal_codes(dev.knobs), replay_s=30.0, device=dev)
    assert tf.replicas == 1 and dev.engine.step_index - t0 == int(30.5e3 / 0.1)
    assert dataclasses.asdict(tf)["replay_s"] == 30.0
