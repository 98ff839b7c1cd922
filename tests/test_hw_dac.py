"""Knobs and DACs (MODEL.md 4): code <-> gain for linear and coarse/fine DACs, code validation, Device conformance."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_models.chip import coarse_fine_transfer, draw_chip, make_knobs
from hw_models.device import CodeError, Device, validate_codes
from hw_models.emulator import NumpyDevice, gains_from_codes, nominal_codes
from hw_models.profile import load_profile

BSS2 = make_knobs(load_profile("bss2"))["gain_e"]
DEVBOARD = make_knobs(load_profile("devboard"))["gain_e"]
DYNAPSE = make_knobs(load_profile("dynapse2"))["gain_e"]


@pytest.mark.parametrize("spec", [BSS2, DEVBOARD], ids=["bss2", "devboard"])
def test_linear_dac_is_code_over_code_ref(spec):
    codes = np.arange(spec.max_code + 1)
    np.testing.assert_array_equal(spec.nominal_gain(codes), codes / spec.code_ref)
    assert spec.nominal_gain(spec.code_ref) == 1.0
    assert spec.gain_limits() == (1 / spec.code_ref, spec.max_code / spec.code_ref)


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 1023), bits=st.sampled_from([8, 10]))
def test_linear_round_trip_code_gain_code(code, bits):
    spec = BSS2 if bits == 10 else DEVBOARD
    code = min(code, spec.max_code)
    assert int(spec.code_for_gain(spec.nominal_gain(np.array([code])))[0]) == code


@settings(max_examples=200, deadline=None)
@given(gain=st.floats(1e-3, 10.0))
def test_linear_code_for_gain_is_nearest_and_clipped(gain):
    spec = DEVBOARD
    c = int(spec.code_for_gain(np.array([gain]))[0])
    assert 0 <= c <= spec.max_code
    if gain * spec.code_ref <= spec.max_code:
        assert abs(spec.nominal_gain(c) - gain) <= 0.5 / spec.code_ref + 1e-12
    else:
        assert c == spec.max_code


@settings(max_examples=300, deadline=None)
@given(coarse=st.integers(0, 5), fine=st.integers(0, 255))
def test_coarse_fine_round_trip(coarse, fine):
    code = coarse * 256 + fine
    g = DYNAPSE.nominal_gain(np.array([code]))
    back = DYNAPSE.code_for_gain(g)
    # several codes can give the same current (the floor, overlapping ranges): the round trip keeps the gain
    assert DYNAPSE.nominal_gain(back)[0] == pytest.approx(g[0], rel=1e-12)
    assert np.isfinite(DYNAPSE.transfer[back[0]])


@settings(max_examples=200, deadline=None)
@given(gain=st.floats(1e-3, 100.0))
def test_coarse_fine_code_for_gain_is_nearest_in_log(gain):
    c = int(DYNAPSE.code_for_gain(np.array([gain]))[0])
    valid = DYNAPSE.valid_codes()
    err = np.abs(np.log(DYNAPSE.nominal_gain(valid)) - np.log(gain)).min()
    assert abs(np.log(DYNAPSE.nominal_gain(c)) - np.log(gain)) <= err + 1e-12


def test_coarse_fine_transfer_shape():
    cf = load_profile("dynapse2")["knobs"]["coarse_fine"]
    t = coarse_fine_transfer(cf, 11)
    tops = cf["coarse_max_nA"]
    for c, top in enumerate(tops):
        assert t[c * 256 + 255] == pytest.approx(top * 1e3)  # fine 255 is the top of the range (pA)
        assert t[c * 256] == cf["floor_pA"]  # fine 0 gives the floor
    assert np.all(np.isnan(t[len(tops) * 256:]))  # no such coarse range
    # the fine DAC drops at multiples of 32 (binary-weighted MSBs a little light): 127 -> 128 by about 5.5 %
    assert t[3 * 256 + 128] / t[3 * 256 + 127] == pytest.approx(17.72 / 18.75, abs=0.005)
    for f in (32, 64, 128):
        assert t[2 * 256 + f] < t[2 * 256 + f - 1]
    # ranges grow about 8x per coarse step
    assert np.all(np.diff(np.log(tops)) > np.log(7))
    # nominal gain 1 at code_ref, a high fine code; headroom both ways
    assert DYNAPSE.nominal_gain(DYNAPSE.code_ref) == 1.0
    assert DYNAPSE.code_ref % 256 >= 100
    lo, hi = DYNAPSE.gain_limits()
    assert lo < 0.01 and hi > 100


def test_gains_from_codes_follow_sharing_and_eps():
    chip = draw_chip("dynapse2", 3)
    codes = nominal_codes(chip.knobs)
    assert codes["gain_e"].shape == (4,)
    codes["gain_e"] = np.array([723, 723 - 100, 723 + 256, 723])
    ge, gi = gains_from_codes(chip, codes)
    dac = DYNAPSE.nominal_gain(codes["gain_e"])
    np.testing.assert_allclose(ge, dac[chip.core_of] * chip.params["eps_e"])
    np.testing.assert_allclose(gi, chip.params["eps_i"])
    chip2 = draw_chip("devboard", 3)
    codes2 = {"gain_e": np.arange(32) + 50, "gain_i": np.full(32, 64)}
    ge2, gi2 = gains_from_codes(chip2, codes2)
    np.testing.assert_allclose(ge2, (np.arange(32) + 50) / 64 * chip2.params["eps_e"])


@pytest.mark.parametrize("codes,match", [
    ({"gain_x": 1}, "unknown knob 'gain_x'"),
    ({"gain_e": np.zeros(5, dtype=int)}, r"takes 32 codes \(one per neuron\), got shape \(5,\)"),
    ({"gain_e": np.full(32, 256)}, r"codes must lie in \[0, 255\], got \[256, 256\]"),
    ({"gain_e": np.full(32, -1)}, r"codes must lie in \[0, 255\]"),
    ({"gain_e": np.full(32, 1.5)}, "codes must be integers"),
    ({"gain_e": np.full(32, np.nan)}, "codes must be integers"),
    ({"gain_e": np.array(["a"] * 32)}, "codes must be integers, got dtype"),
])
def test_bad_codes_raise_code_error(codes, match):
    dev = NumpyDevice("devboard", 1)
    with pytest.raises(CodeError, match=match):
        dev.set_codes(codes)
    np.testing.assert_array_equal(dev.codes["gain_e"], np.full(32, 64))  # nothing applied


def test_invalid_coarse_fine_code_is_refused():
    knobs = make_knobs(load_profile("dynapse2"))
    with pytest.raises(CodeError, match="not a valid coarse/fine pair"):
        validate_codes(knobs, {"gain_e": np.array([723, 723, 7 * 256 + 3, 723])})
    out = validate_codes(knobs, {"gain_i": 723, "gain_e": np.array([1.0, 2.0, 3.0, 4.0])})  # scalar, integral floats
    assert out["gain_i"].tolist() == [723] * 4 and out["gain_e"].dtype == np.int64


@pytest.mark.parametrize("name", ["bss2", "dynapse2", "devboard"])
def test_numpy_device_conforms_to_device_protocol(name):
    dev = NumpyDevice(name, 1)
    assert isinstance(dev, Device)
    assert dev.identity.uid == f"emu-{name}-1" and dev.identity.profile == name
    assert set(dev.knobs) == {"gain_e", "gain_i"}
    with dev as d:
        m = d.measure(20.0)
        assert m.spike_counts.shape == (dev.chip.n,) and m.window_ms == pytest.approx(20.0)
        assert m.hardware_ms == pytest.approx(20.0 / dev.profile.speedup)
    with pytest.raises(RuntimeError, match="closed"):
        dev.measure(1.0)


def test_codes_change_the_gains_the_engine_uses():
    dev = NumpyDevice("devboard", 1)
    eps = dev.chip.params["eps_e"]
    np.testing.assert_allclose(dev.engine.gain_e, eps)
    dev.set_codes({"gain_e": np.full(32, 128)})
    np.testing.assert_allclose(dev.engine.gain_e, 2.0 * eps)
    np.testing.assert_allclose(dev.engine.jump_e, dev.chip.scalars["Ge0"] * 2.0 * eps)
