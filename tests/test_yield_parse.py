"""Yield studies: sweep and spec parsing, the profile transformations (mismatch.scale, DAC bits), the Wilson
interval, and the one judge shared with the pytest plugin. Fast: no chip is simulated."""
import math

import numpy as np
import pytest

from calibrate.criteria import judge
from calibrate.yield_study import (DEFAULT_SPEC, SpecError, SweepError, apply_point, grid, parse_spec, parse_sweep,
                                   scale_mismatch, wilson_interval, with_dac_bits)
from calibrate.yield_study.sweep import point_key
from hw_models.chip import draw_chip
from hw_models.profile import load_profile


@pytest.fixture(scope="module")
def devboard():
    return load_profile("devboard")


@pytest.fixture(scope="module")
def dynapse2():
    return load_profile("dynapse2")


def test_list_and_range_sweeps_are_typed_by_the_schema(devboard):
    s = parse_sweep("knobs.bits=6,8,10", devboard)
    assert s.key == "knobs.bits" and s.values == (6, 8, 10) and all(type(v) is int for v in s.values)
    r = parse_sweep("mismatch.lognormal.eps_e.neuron=0.1:0.3:5", devboard)
    assert r.values == pytest.approx((0.1, 0.15, 0.2, 0.25, 0.3))
    assert all(type(v) is float for v in r.values)
    assert parse_sweep("mismatch.scale=0.5,1,1.5,2", devboard).values == (0.5, 1.0, 1.5, 2.0)
    assert parse_sweep("observe.proxy_channels=all,one_per_core", devboard).values == ("all", "one_per_core")
    assert parse_sweep("knobs.bits=6:8:3", devboard).values == (6, 7, 8)
    assert parse_sweep("targets.rate_hz=5", devboard).values == (5.0,)


@pytest.mark.parametrize("text,needle", [
    ("knobs.bitz=6,8", "knobs.bitz: unknown key; expected one of"),
    ("mismatch.lognormal.eps_q.neuron=0.1", "mismatch.lognormal.eps_q: unknown key"),
    ("mismatch.lognormal.eps_e.die=0.1", "mismatch.lognormal.eps_e.die: unknown key; expected one of chip, core, neuron"),
    ("mismatch.lognormal.eps_e=0.1", "takes a level"),
    ("knobs=6", "names a section, not a value"),
    ("recurrent.K_ee=10", "this profile has no such section"),
    ("knobs.bits=6.5", "expected integers"),
    ("knobs.bits=5:8:3", "does not give integers"),
    ("knobs.sharing=row", "expected one of 'neuron', 'core', 'chip'"),
    ("knobs.bits", "expected KEY=V1,V2,..."),
    ("knobs.bits=6,,8", "an empty value"),
    ("knobs.bits=6,6", "repeated"),
    ("mismatch.scale=0,1", "factors > 0"),
    ("mismatch.scale=1:2:0", "COUNT must be in"),
    ("targets.rate_hz=abc", "expected numbers"),
    ("name=x", "cannot be swept"),
])
def test_bad_sweeps_say_which_key_in_one_line(devboard, text, needle):
    with pytest.raises(SweepError) as e:
        parse_sweep(text, devboard)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert msg.startswith("--sweep")


def test_out_of_range_values_fail_when_the_point_is_built(devboard):
    sw = parse_sweep("mismatch.lognormal.eps_e.neuron=0.2,3.0", devboard)
    apply_point(devboard, {sw.key: 0.2})
    with pytest.raises(SweepError, match=r"mismatch.lognormal.eps_e.neuron: expected a number in \[0, 2\]"):
        apply_point(devboard, {sw.key: 3.0})


def test_several_sweeps_make_a_grid_first_slowest(devboard):
    a = parse_sweep("knobs.bits=6,8", devboard)
    b = parse_sweep("mismatch.scale=0.5,1,2", devboard)
    g = grid([a, b])
    assert len(g) == 6
    assert g[0] == {"knobs.bits": 6, "mismatch.scale": 0.5} and g[-1] == {"knobs.bits": 8, "mismatch.scale": 2.0}
    assert len({point_key(v) for v in g}) == 6
    assert grid([]) == [{}]
    with pytest.raises(SweepError, match="given twice"):
        grid([a, a])


def test_mismatch_scale_multiplies_every_sigma_and_offset_sd(devboard, dynapse2):
    s = scale_mismatch(devboard, 1.5)
    mm0, mm1 = devboard["mismatch"], s["mismatch"]
    for section in ("lognormal", "offsets_mV"):
        for name, lv in mm0[section].items():
            for level, sigma in lv.items():
                assert mm1[section][name][level] == pytest.approx(1.5 * sigma)
    assert mm1["synapse_sigma"] == pytest.approx(1.5 * mm0["synapse_sigma"])
    assert s["observe"] == devboard["observe"] and s["neuron"] == devboard["neuron"]  # nothing else moves
    d = scale_mismatch(dynapse2, 0.5)
    assert d["mismatch"]["lognormal"]["Itau_mem"]["core"] == pytest.approx(0.025)
    # the drawn chip follows: with the same seed (common random numbers), ln eps deviations scale by the factor
    c1, c2 = draw_chip(devboard, 3), draw_chip(scale_mismatch(devboard, 2.0), 3)
    np.testing.assert_allclose(np.log(c2.params["eps_e"]), 2 * np.log(c1.params["eps_e"]), rtol=1e-12)
    np.testing.assert_allclose(c2.params["Vth"] - devboard["neuron"]["Vth_mV"],
                               2 * (c1.params["Vth"] - devboard["neuron"]["Vth_mV"]), rtol=1e-9, atol=1e-9)
    c0 = draw_chip(scale_mismatch(devboard, 0.0), 3)
    assert np.all(c0.params["eps_e"] == 1.0) and np.all(c0.params["gL"] == devboard["neuron"]["gL_nS"])


def test_dac_bits_keep_the_full_scale_range(devboard):
    for bits in (5, 6, 7, 8, 10):
        p = with_dac_bits(devboard, bits)
        kn = p["knobs"]
        assert kn["bits"] == bits
        assert kn["code_ref_e"] == 64 * 2 ** (bits - 8) and kn["code_ref_i"] == kn["code_ref_e"]
        full_scale = ((1 << bits) - 1) / kn["code_ref_e"]
        assert full_scale == pytest.approx(255 / 64, rel=0.04)
    # an explicit code_ref in the same point wins over the rescaling
    p = apply_point(devboard, {"knobs.bits": 10, "knobs.code_ref_e": 100})
    assert p["knobs"]["code_ref_e"] == 100 and p["knobs"]["code_ref_i"] == 256


def test_spec_parsing_defaults_and_errors():
    assert DEFAULT_SPEC.as_dict() == {"rate_cv": 0.05, "balance_p95": 0.05, "rate_err": 0.03}
    assert parse_spec(None) == DEFAULT_SPEC
    s = parse_spec("rate_err=0.01")
    assert s.rate_err == 0.01 and s.rate_cv == 0.05
    assert parse_spec("rate_cv=0.04,balance_p95=0.06,rate_err=0.02").as_dict() == {
        "rate_cv": 0.04, "balance_p95": 0.06, "rate_err": 0.02}
    for bad, needle in (("rate_cv", "expected NAME=LIMIT"), ("cv=0.1", "unknown criterion"),
                        ("rate_cv=x", "expected a number"), ("rate_cv=-1", "expected a number in (0, 10)"),
                        ("rate_cv=0.1,rate_cv=0.2", "given twice")):
        with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_spec(bad)


def test_wilson_interval_against_the_closed_form():
    def closed(k, n, z=1.959963984540054):
        p = k / n
        d = 1 + z * z / n
        c = (p + z * z / (2 * n)) / d
        h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
        return c - h, c + h

    for k, n in ((0, 10), (10, 10), (7, 8), (45, 50), (950, 1000), (1, 3)):
        lo, hi = wilson_interval(k, n)
        elo, ehi = closed(k, n)
        assert lo == pytest.approx(elo, abs=1e-9) and hi == pytest.approx(ehi, abs=1e-9)
        assert 0 <= lo <= k / n <= hi <= 1
    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(20, 20)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.8389, abs=1e-4)


def test_one_judge_for_per_neuron_shared_and_recurrent_chips():
    fig = {"rate_cv_deconvolved": 0.04, "balance_p95": 0.06, "balance_median": 0.01, "rate_mean_hz": 9.8,
           "group_rate_err_max": None, "group_balance_max": None}
    c = {x.name: x for x in judge(fig, shared=False, target_rate_hz=10.0, se={"balance_p95": 0.004})}
    assert [*c] == ["rate_cv", "balance_p95", "rate_err"]
    assert c["rate_cv"].met and not c["balance_p95"].met and c["rate_err"].met
    assert c["balance_p95"].se == 0.004 and math.isnan(c["rate_cv"].se)
    assert c["rate_err"].value == pytest.approx(0.02)
    shared = {**fig, "group_rate_err_max": 0.035, "group_balance_max": 0.01, "rate_cv_deconvolved": 0.9}
    c = {x.name: x for x in judge(shared, shared=True, target_rate_hz=10.0)}
    assert not c["rate_cv"].applies and c["rate_cv"].met  # a core-knob chip cannot trim single neurons
    assert c["rate_err"].figure == "group_rate_err_max" and not c["rate_err"].met
    assert c["balance_p95"].figure == "group_balance_max" and c["balance_p95"].met
    rec = {**fig, "balance_p95": 0.01, "rate_mean_exc_hz": 5.0, "rate_mean_inh_hz": 13.0}
    c = {x.name: x for x in judge(rec, shared=False, target_rate_hz=5.0, target_inh_hz=14.0)}
    assert c["rate_err"].figure == "rate_err_inh" and c["rate_err"].value == pytest.approx(1 / 14)
    nan = {**fig, "rate_cv_deconvolved": float("nan")}
    assert not judge(nan, shared=False, target_rate_hz=10.0)[0].met
