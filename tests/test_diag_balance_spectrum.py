"""Balance index and conductance ratio against docs/model.md; population spectrum and its gamma peak; chi."""
from __future__ import annotations

import numpy as np
import pytest

from calibrate import figures
from calibrate.diagnostics import (
    Theory,
    balance_index_of_parts,
    conductance_ratio,
    population_spectrum,
    signed_balance,
    synchrony_chi,
)


def test_conductance_ratio_theory_matches_model_md():
    # docs/model.md 1: at Vbal = -65, EE = 0, EI = -75 the balanced ratio is 10/65 = 0.1538
    _, theory = conductance_ratio(np.ones(1), np.ones(1), vbal_mv=-65.0, ee_mv=0.0, ei_mv=-75.0)
    assert theory == pytest.approx(10 / 65)
    assert Theory(vbal_mv=-65.0, ee_mv=0.0, ei_mv=-75.0).conductance_ratio == pytest.approx(0.1538, abs=1e-4)
    assert Theory(model="dpi", vbal_mv=-65.0).conductance_ratio is None
    t = Theory.from_meta({"model": "cond_lif", "Vbal": -55.0, "EE": 0.0, "EI": -80.0})
    assert t is not None and t.conductance_ratio == pytest.approx(25 / 55)
    assert Theory.from_meta({}) is None


def test_balance_index_known_values_and_its_relation_to_the_conductance_ratio():
    vbal, ee, ei = -55.0, 0.0, -80.0
    rng = np.random.default_rng(41)
    ge = rng.uniform(2, 20, 1000)
    theory = (vbal - ei) / (ee - vbal)
    factor = rng.uniform(0.2, 3.0, 1000)  # inhibition scaled away from balance by this factor
    gi = ge / theory * factor
    iexc, iinh = ge * (ee - vbal), gi * (ei - vbal)
    bi = balance_index_of_parts(iexc, iinh)
    np.testing.assert_allclose(bi, np.abs(1 - factor), atol=1e-12)  # |<Ibal>|/<Iexc>
    # the one balance index, of the net current: the same bits
    np.testing.assert_array_equal(bi, figures.balance_index(iexc + iinh, iexc))
    np.testing.assert_allclose(signed_balance(iexc, iinh), 1 - factor, atol=1e-12)
    ratio, th = conductance_ratio(ge, gi, vbal_mv=vbal, ee_mv=ee, ei_mv=ei)
    np.testing.assert_allclose(bi, np.abs(1 - th / ratio), atol=1e-12)
    # balanced: 0; inhibition cut to a third: 2/3 and excitation-dominated; no excitation: undefined
    assert balance_index_of_parts(np.array([55.0]), np.array([-55.0]))[0] == 0.0
    assert signed_balance(np.array([30.0]), np.array([-10.0]))[0] == pytest.approx(2 / 3)
    assert np.isnan(balance_index_of_parts(np.array([0.0]), np.array([-1.0]))[0])
    assert np.isnan(figures.balance_index(np.array([1.0]), np.array([0.0]))[0])


def test_dpi_balance_index_uses_ampa_minus_gaba():
    iampa, igaba = np.array([100.0, 100.0]), np.array([100.0, 40.0])
    np.testing.assert_allclose(balance_index_of_parts(iampa, -igaba), [0.0, 0.6])


def test_flat_spectrum_of_poisson_population():
    rng = np.random.default_rng(42)
    n, rate, bin_ms = 1000, 10.0, 1.0
    x = rng.poisson(n * rate * bin_ms * 1e-3, 100_000) / (n * bin_ms * 1e-3)
    s = population_spectrum(x, bin_ms)
    assert s.gamma_peak_ratio < 1.6  # the max of ~50 noisy bins of a flat spectrum
    assert s.gamma_modulation < 0.05
    # white counting noise: PSD = 2 * rate / n (one-sided, Hz^2/Hz)
    assert s.floor == pytest.approx(2 * rate / n, rel=0.05)


@pytest.mark.parametrize("f_gamma, depth", [(40.0, 0.3), (63.0, 0.5)])
def test_gamma_rhythm_peak_and_depth(f_gamma, depth):
    """PING-like modulation of a 1000-cell population: rate 10 Hz * (1 + depth sin(2 pi f t))."""
    rng = np.random.default_rng(43)
    n, bin_ms = 1000, 1.0
    t = np.arange(100_000) * bin_ms * 1e-3
    rate = 10.0 * (1 + depth * np.sin(2 * np.pi * f_gamma * t + rng.uniform(0, 1)))
    x = rng.poisson(rate * n * bin_ms * 1e-3) / (n * bin_ms * 1e-3)
    s = population_spectrum(x, bin_ms)
    assert abs(s.gamma_peak_hz - f_gamma) <= 1.0  # resolution 1000/1024 Hz
    assert s.gamma_peak_ratio > 50
    assert s.gamma_modulation == pytest.approx(depth, rel=0.15)
    assert s.mean_rate == pytest.approx(10.0, rel=0.01)


def test_synchrony_chi_limits():
    rng = np.random.default_rng(44)
    common = rng.standard_normal((5000, 1))
    assert synchrony_chi(np.repeat(common, 64, axis=1)) == pytest.approx(1.0)
    chi = synchrony_chi(rng.standard_normal((5000, 64)))
    assert chi == pytest.approx(1 / np.sqrt(64), rel=0.1)
    half = common + rng.standard_normal((5000, 64))  # half the variance shared
    assert synchrony_chi(half) == pytest.approx(np.sqrt(0.5 + 0.5 / 64), rel=0.1)


def test_counting_noise_floor_from_the_cell_count():
    """With n_cells the floor is the exact shot-noise level, and a flat spectrum has no gamma excess even from
    a short, noisy estimate (2 s: three Welch segments)."""
    rng = np.random.default_rng(45)
    n = 500
    x = rng.poisson(n * 8.0 * 1e-3, 2000) / (n * 1e-3)
    s = population_spectrum(x, 1.0, n_cells=n)
    assert s.floor == pytest.approx(2 * x.mean() / n)
    assert s.gamma_modulation < 0.1


def test_broadband_shared_fluctuations_are_not_a_gamma_rhythm():
    """A population driven by a common low-pass (tau 5 ms) fluctuation, as shared Poisson inputs drive a
    feed-forward chip: lots of power above the counting floor in 30-80 Hz, but no peak, hence no rhythm."""
    rng = np.random.default_rng(46)
    n, T = 500, 200_000
    a = np.exp(-1.0 / 5.0)
    z = rng.standard_normal(T)
    x = np.empty(T)
    acc = 0.0
    for t in range(T):
        acc = a * acc + z[t]
        x[t] = acc
    rate = 10.0 * np.clip(1.0 + 0.4 * x / x.std(), 0, None)
    y = rng.poisson(rate * n * 1e-3) / (n * 1e-3)
    s = population_spectrum(y, 1.0, n_cells=n)
    band = (s.freqs_hz >= 30) & (s.freqs_hz <= 80)
    assert s.psd[band].mean() > 3 * s.floor  # far above counting noise (depth 0.3 against that floor) ...
    assert s.gamma_modulation < 0.1  # ... yet no rhythm
    assert s.gamma_peak_ratio < 1.5
