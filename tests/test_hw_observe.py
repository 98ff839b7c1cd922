"""What a controller may observe (MODEL.md 5): the proxy ADC, the channel limit, spike counters; and temperature."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hw_models.device import CodeError
from hw_models.emulator import NumpyDevice, observe_proxy
from hw_models.profile import load_profile


def _adc_profile(**observe):
    return load_profile("bss2").with_changes({f"observe.{k}": v for k, v in observe.items()})


def test_adc_offset_alone():
    p = _adc_profile(proxy_noise_sd_pA=0.0, proxy_lsb_pA=0.0)
    true = np.linspace(-100, 100, 512)
    off = np.random.default_rng(0).standard_normal(512) * 7
    x = observe_proxy(p, true, off, np.ones(512, bool), np.random.default_rng(1))
    np.testing.assert_allclose(x, true + off)


def test_adc_read_noise_has_the_profile_sd():
    p = _adc_profile(proxy_noise_sd_pA=4.0, proxy_lsb_pA=0.0)
    true = np.full(20000, 50.0)
    x = observe_proxy(p, true, np.zeros(20000), np.ones(20000, bool), np.random.default_rng(2))
    assert stats.kstest((x - 50.0) / 4.0, "norm").pvalue > 1e-3


def test_adc_quantisation_and_range():
    p = _adc_profile(proxy_noise_sd_pA=0.0, proxy_lsb_pA=2.5, proxy_range_pA=100.0)
    true = np.linspace(-300, 300, 2001)
    x = observe_proxy(p, true, np.zeros(true.size), np.ones(true.size, bool), np.random.default_rng(3))
    inside = np.abs(true) < 95
    assert np.allclose(x / 2.5, np.rint(x / 2.5))  # multiples of the LSB
    assert np.all(np.abs(x[inside] - true[inside]) <= 1.25 + 1e-9)  # within half an LSB
    assert x.max() == 100.0 and x.min() == -100.0  # clipped to +-range
    np.testing.assert_array_equal(x[true > 101], 100.0)


def test_unobserved_channels_are_nan_and_do_not_shift_the_noise_stream():
    p = _adc_profile(proxy_noise_sd_pA=3.0)
    true = np.arange(8.0)
    a = observe_proxy(p, true, np.zeros(8), np.ones(8, bool), np.random.default_rng(4))
    mask = np.array([True, False] * 4)
    b = observe_proxy(p, true, np.zeros(8), mask, np.random.default_rng(4))
    assert np.all(np.isnan(b[~mask]))
    np.testing.assert_array_equal(a[mask], b[mask])


def test_device_reading_is_true_mean_plus_offset_plus_noise():
    dev = NumpyDevice("bss2", 3)
    ob = dev.profile["observe"]
    sd = dev.chip.adc_offset_pa.std()
    assert sd == pytest.approx(ob["proxy_offset_sd_pA"], rel=0.1)
    errs = []
    for _ in range(4):
        m = dev.measure(20.0)
        assert m.observed.all()
        errs.append(m.proxy_pa - dev.last_stats.ibal - dev.chip.adc_offset_pa)
    e = np.concatenate(errs)
    # read noise (3 pA) plus quantisation (1 pA LSB: variance 1/12)
    assert e.std() == pytest.approx(np.sqrt(ob["proxy_noise_sd_pA"] ** 2 + ob["proxy_lsb_pA"] ** 2 / 12), rel=0.1)


def test_one_per_core_monitor():
    dev = NumpyDevice("dynapse2", 1)
    seen = []
    for _ in range(3):
        m = dev.measure(1.0)
        idx = np.flatnonzero(m.observed)
        assert np.array_equal(np.unique(dev.chip.core_of[idx]), np.arange(4))  # one neuron in each core
        assert np.all(np.isnan(m.proxy_pa[~m.observed])) and np.all(np.isfinite(m.proxy_pa[m.observed]))
        seen.append(idx)
    assert not np.array_equal(seen[0], seen[1])  # round robin moves on
    np.testing.assert_array_equal(seen[1], seen[0] + 1)
    m = dev.measure(1.0, monitor=[5, 300])
    assert np.flatnonzero(m.observed).tolist() == [5, 300]
    with pytest.raises(CodeError, match="one neuron per core"):
        dev.measure(1.0, monitor=[5, 6])
    with pytest.raises(CodeError, match=r"must lie in \[0, 1023\]"):
        dev.measure(1.0, monitor=[1024])


def test_all_channel_monitor_can_be_restricted():
    dev = NumpyDevice("devboard", 1)
    m = dev.measure(1.0, monitor=[0, 3])
    assert np.flatnonzero(m.observed).tolist() == [0, 3]


def test_spike_counters_saturate_at_their_width():
    p = load_profile("devboard").with_changes({"observe.counter_bits": 3})
    dev = NumpyDevice(p, 1)
    dev.set_codes({"gain_e": np.full(32, 200), "gain_i": np.full(32, 20)})  # drive hard
    m = dev.measure(500.0)
    true = dev.last_stats.spike_counts
    assert true.max() > 7
    np.testing.assert_array_equal(m.spike_counts, np.minimum(true, 7))


# ---------------------------------------------------------------------------------------------------------------
# temperature (MODEL.md 3): bias-derived conductances/currents scale by (1 + a*(T - T0)), U_T by T/T0
# ---------------------------------------------------------------------------------------------------------------
def test_temperature_scales_cond_lif_conductances():
    dev = NumpyDevice("bss2", 1)
    c = dev.profile["temperature"]["coeff_per_K"]
    t0 = dev.profile["temperature"]["T0_K"]
    gL0, je0, ji0 = dev.engine.consts.gL.copy(), dev.engine.jump_e.copy(), dev.engine.jump_i.copy()
    dev.set_temperature(t0 + 10)
    assert dev.temperature_k == t0 + 10
    np.testing.assert_allclose(dev.engine.consts.gL, gL0 * (1 + 10 * c["leak"]))
    np.testing.assert_allclose(dev.engine.consts.gLEL, gL0 * (1 + 10 * c["leak"]) * dev.chip.params["EL"])
    np.testing.assert_allclose(dev.engine.jump_e, je0 * (1 + 10 * c["exc"]))
    np.testing.assert_allclose(dev.engine.jump_i, ji0 * (1 + 10 * c["inh"]))
    assert dev.measure(1.0).temperature_k == t0 + 10


def test_temperature_scales_dpi_currents_and_thermal_voltage():
    dev = NumpyDevice("dynapse2", 1, temperature_k=298.0)
    p, s, dt = dev.chip.params, dev.chip.scalars, dev.chip.dt
    c = dev.profile["temperature"]["coeff_per_K"]
    T = 318.0
    dev.set_temperature(T)
    f_leak, f_ut = 1 + 20 * c["leak"], T / 298.0
    k = dev.engine.consts
    # the leak is Itau_mem + Iahp, the adaptation current at its floor I0 (MODEL.md 2), which does not drift
    ileak = p["Itau_mem"] * f_leak + s["I0"]
    np.testing.assert_allclose(k.Ileak, ileak)
    np.testing.assert_allclose(k.gain_over_tau, p["Igain_mem"] / p["Itau_mem"])
    np.testing.assert_allclose(k.ahp, 1 + s["I0"] / (p["Itau_mem"] * f_leak))
    tau_mem = p["C_mem"] * s["UT"] * f_ut / (s["kappa"] * ileak)
    np.testing.assert_allclose(k.dt_over_tau_mem, dt / tau_mem)
    tau_a = p["C_syn"] * s["UT"] * f_ut / (s["kappa"] * p["Itau_ampa"])
    np.testing.assert_allclose(k.da, np.exp(-dt / tau_a))
    je = p["Igain_syn"] * s["Iw_e"] * (1 + 20 * c["exc"]) * (1 - np.exp(-p["t_pulse"] / tau_a)) * dev.engine.gain_e
    np.testing.assert_allclose(dev.engine.jump_e, je)


def test_temperature_drift_breaks_the_balance():
    """bss2's excitatory bias path drifts faster than the inhibitory one: warming moves the proxy up."""
    cold, warm = NumpyDevice("bss2", 2), NumpyDevice("bss2", 2, temperature_k=310.0)
    a, b = cold.run_true(300.0), warm.run_true(300.0)
    assert np.mean(b.ibal) > np.mean(a.ibal) + 0.05 * np.mean(a.iexc)
