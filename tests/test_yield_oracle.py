"""The oracle (calibrate.oracle): its analytic balance ratio against replays of the chip, and its calibration at
the counting floor of its budget, inside a yield study's chip record."""
import math

import numpy as np
import pytest

from calibrate.oracle import OracleUnavailable, _unit_means, balance_ratio, oracle_calibrate
from calibrate.yield_study import Study
from calibrate.yield_study.chip import run_chip
from hw_models.chip import draw_chip
from hw_models.engine import Engine
from hw_models.profile import load_profile


@pytest.mark.parametrize("profile,seconds", [("devboard", 20.0), ("dynapse2", 4.0)])
def test_analytic_current_means_match_a_replay(profile, seconds):
    """The long-run |excitatory| and |inhibitory| proxy parts per unit DAC gain, from the chip's parameters alone,
    against a replay at those gains (each neuron's window mean carries input shot noise ~ 1/sqrt(K rate T))."""
    chip = draw_chip(profile, 2)
    a, b = _unit_means(chip, Engine(chip))
    eng = Engine(chip, input_stream=3)
    eng.set_gains(chip.params["eps_e"], chip.params["eps_i"])
    eng.run(int(0.2e3 / chip.dt))
    st = eng.run(int(seconds * 1e3 / chip.dt))
    re, ri = st.iexc / a - 1, -st.iinh / b - 1
    inp = load_profile(profile)["input"]
    noise = 1.1 / math.sqrt(inp["K_e"] * inp["rate_e_hz"] * seconds)  # relative sd of one neuron's window mean
    # the neurons share their source pools, so the mean over neurons keeps the pool's own count noise
    pool = 1.0 / math.sqrt(inp["n_src_e"] * inp["rate_e_hz"] * seconds)
    assert abs(re.mean()) < 4 * pool and abs(ri.mean()) < 4 * pool
    assert np.abs(re).max() < 5 * noise and np.abs(ri).max() < 5 * noise


def test_the_analytic_ratio_balances_the_chip():
    """At gain_e / gain_i = r* (continuous gains) the replayed net current is zero up to its shot noise; at 1.1 r*
    it is clearly not."""
    chip = draw_chip("devboard", 5)
    r = balance_ratio(chip)
    assert r.shape == (32,) and np.all(r > 0)
    T = 20.0
    out = {}
    for f in (1.0, 1.1):
        eng = Engine(chip, input_stream=4)
        eng.set_gains(np.sqrt(r * f) * chip.params["eps_e"], chip.params["eps_i"] / np.sqrt(r * f))
        eng.run(2000)
        st = eng.run(int(T * 1e3 / chip.dt))
        out[f] = (st.iexc + st.iinh) / st.iexc  # signed balance index per neuron
    # the mean over neurons of the signed index carries the two source pools' count noise (64 sources at 20 Hz
    # each, shared by all neurons): about sqrt(2 / (64 * 20 * T))
    noise = math.sqrt(2 / (64 * 20 * T))
    assert abs(out[1.0].mean()) < 4 * noise
    assert out[1.1].mean() == pytest.approx(1 - 1 / 1.1, abs=4 * noise)
    assert abs(out[1.1].mean() - out[1.0].mean()) > 10 * noise


def test_shared_knobs_get_one_ratio_per_core():
    chip = draw_chip("dynapse2", 1)
    r = balance_ratio(chip)
    assert r.shape == (4,)
    a, b = _unit_means(chip, Engine(chip))
    g = chip.core_of
    np.testing.assert_allclose(r, np.bincount(g, weights=b) / np.bincount(g, weights=a))


def test_recurrent_chips_are_refused():
    with pytest.raises(OracleUnavailable, match="feed-forward"):
        oracle_calibrate("balanced-net", 1, budget_s=1.0)


@pytest.mark.slow
def test_oracle_reaches_the_counting_floor_of_its_budget():
    """devboard seed 3, a 20 s budget: the oracle's judged rate CV sits at the floor sqrt(F / (r T_budget)), not
    below it (it learns the rates only by counting in the budget) and not far above it; its ratio is exact, so its
    balance index is noise. The chip record carries the controller's and the oracle's figures side by side."""
    prof = load_profile("devboard")
    task = Study(profile=prof, chips=1, first_seed=3, budget_s=20.0, evaluate_s=40.0, oracle=True).tasks()[0]
    rec = run_chip(task)
    assert rec["error"] is None
    floor = rec["oracle.counting_floor"]
    assert floor == pytest.approx(math.sqrt(rec["oracle.fano"] / (10.0 * 20.0)), rel=1e-9)
    cv, se = rec["oracle.rate_cv_deconvolved"], rec["oracle.se.rate_cv_deconvolved"]
    assert 0.6 * floor - 2 * se < cv < 1.35 * floor + 2 * se, (cv, se, floor)
    assert abs(rec["oracle.rate_err"]) < 0.06
    # a 40 s replay reads each neuron's balance index with an sd of 0.115 / sqrt(40) = 0.018 (docs/yield.md),
    # so even an exactly balanced chip shows a p95 near 0.04; the median (about 0.012 then) is the sharper check
    assert rec["oracle.balance_median"] < 0.025 and rec["oracle.balance_p95"] < 0.05 + 2 * rec["oracle.se.balance_p95"]
    assert rec["oracle.model_time_s"] == pytest.approx(20.0) and rec["oracle.unreachable"] == 0
    assert 1.0 < rec["oracle.beta_median"] < 5.0
    assert len(rec["oracle.codes_e"]) == 32 and max(rec["oracle.codes_e"]) <= 255
    for c in ("rate_cv", "balance_p95", "rate_err"):
        assert rec[f"oracle.{c}.limit"] == rec[f"{c}.limit"]
        assert rec[f"oracle.{c}.met"] == (rec[f"oracle.{c}.value"] <= rec[f"{c}.limit"])
