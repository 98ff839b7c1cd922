"""Multiscale E/I co-fluctuation: identical and delayed copies, independence, counting-noise correction."""
from __future__ import annotations

import numpy as np
import pytest

from calibrate.diagnostics import ei_cofluctuation, log_scales

T_MS = 100_000  # 100 s at 1 ms


def _rates(n_samples: int, seed: int, lam: float = 5.0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(lam, n_samples).astype(np.float64)


def test_32_log_spaced_scales():
    k = log_scales(0.1, 100_000.0)
    assert k.size == 32 and np.all(np.diff(k) > 0)
    assert k[0] * 0.1 == pytest.approx(1.0) and k[-1] * 0.1 == pytest.approx(5000.0)  # 1 ms .. T/20
    ratios = k[1:] / k[:-1]
    assert np.allclose(ratios, ratios.mean(), rtol=0.05)  # geometric
    # coarse input: still 32 distinct widths, unit steps at the fine end
    k1 = log_scales(1.0, 100_000.0)
    assert k1.size == 32 and k1[0] == 1 and np.all(np.diff(k1) >= 1)
    assert log_scales(1.0, 400.0).tolist() == list(range(1, 21))  # fewer widths than 32 exist


def test_identical_series_correlate_perfectly_at_every_scale():
    x = _rates(T_MS, seed=31)
    c = ei_cofluctuation(x, x.copy(), 1.0)
    assert c.bin_ms.size == 32
    np.testing.assert_allclose(c.rho, 1.0, atol=1e-12)
    np.testing.assert_allclose(c.peak_lag_ms, 0.0)
    np.testing.assert_allclose(c.peak_corr, 1.0, atol=1e-9)
    np.testing.assert_allclose(c.deviation, 0.0, atol=1e-6)
    np.testing.assert_allclose(c.imbalance, 0.0, atol=1e-12)
    np.testing.assert_allclose(c.ratio, 1.0)


@pytest.mark.parametrize("delay_ms", [3, 7, 20])
def test_delayed_copy_peaks_at_the_delay_at_every_scale(delay_ms):
    x = _rates(T_MS + delay_ms, seed=32)
    e, i = x[delay_ms:], x[:-delay_ms]  # i(t) = e(t - d): I follows E by d
    c = ei_cofluctuation(e, i, 1.0, max_lag_ms=50.0)
    np.testing.assert_allclose(c.peak_lag_ms, float(delay_ms))
    assert np.all(c.peak_corr > 0.99)
    # zero-lag correlation is low where the bin is shorter than the delay, high where it is much longer
    assert c.rho[c.bin_ms <= delay_ms / 2].max() < 0.6
    assert c.rho[c.bin_ms >= 20 * delay_ms].min() > 0.9
    # and the other way round: E following I gives a negative lag
    c2 = ei_cofluctuation(i, e, 1.0, max_lag_ms=50.0)
    np.testing.assert_allclose(c2.peak_lag_ms, -float(delay_ms))


def test_finer_input_resolution_gives_finer_lags():
    x = _rates(200_000 + 25, seed=33, lam=1.0)
    c = ei_cofluctuation(x[25:], x[:-25], 0.1, max_lag_ms=10.0)  # 2.5 ms delay at 0.1 ms resolution
    np.testing.assert_allclose(c.peak_lag_ms, 2.5)


def test_independent_series_are_uncorrelated():
    e, i = _rates(T_MS, seed=34), _rates(T_MS, seed=35)
    c = ei_cofluctuation(e, i, 1.0)
    fine = c.n_bins >= 1000  # enough bins for a tight estimate
    assert np.all(np.abs(c.rho[fine]) < 4 / np.sqrt(c.n_bins[fine]))
    np.testing.assert_allclose(c.deviation[fine], 1.0, atol=0.1)


def test_counting_noise_correction_recovers_shared_fluctuations():
    """Two populations (400 E, 100 I cells) whose rates follow one slow common signal, plus Poisson noise:
    the raw correlation is lowered by counting noise at fine scales, the corrected one is ~1 at all scales
    with excess variance; independent Poisson populations have population Fano ~1 (asynchronous)."""
    rng = np.random.default_rng(36)
    n_e, n_i, dt_s = 400, 100, 1e-3
    t = np.arange(T_MS)
    common = 1.0 + 0.5 * np.sin(2 * np.pi * t / 500.0) + 0.3 * np.sin(2 * np.pi * t / 73.0)
    rate = 5.0 * common  # Hz per cell
    e = rng.poisson(rate * n_e * dt_s) / (n_e * dt_s)
    i = rng.poisson(rate * n_i * dt_s) / (n_i * dt_s)
    c = ei_cofluctuation(e, i, 1.0, n_cells_e=n_e, n_cells_i=n_i)
    shared = (c.fano_e > 2) & (c.fano_i > 2)
    assert shared.sum() >= 10
    assert c.rho[0] < 0.5  # 1 ms: counting noise dominates the raw correlation
    np.testing.assert_allclose(c.rho_signal[shared], 1.0, atol=0.1)
    e0 = rng.poisson(5.0 * n_e * dt_s, T_MS) / (n_e * dt_s)
    i0 = rng.poisson(5.0 * n_i * dt_s, T_MS) / (n_i * dt_s)
    c0 = ei_cofluctuation(e0, i0, 1.0, n_cells_e=n_e, n_cells_i=n_i)
    ok = c0.n_bins >= 1000
    np.testing.assert_allclose(c0.fano_e[ok], 1.0, atol=0.15)
    np.testing.assert_allclose(c0.fano_i[ok], 1.0, atol=0.15)


def test_imbalance_sees_a_static_offset_that_correlation_cannot():
    """Inhibitory current cut to a third: perfectly correlated with E, but far from the balance line."""
    x = 100.0 + _rates(T_MS, seed=37)
    c = ei_cofluctuation(x, x / 3.0, 1.0, signal="currents")
    np.testing.assert_allclose(c.rho, 1.0, atol=1e-9)
    np.testing.assert_allclose(c.ratio, 3.0, rtol=1e-9)
    # rms(E - E/3) / mean((E + E/3)/2) = (2/3) rms(E) / ((2/3) mean(E)) ~ 1 for E = 100 + small noise
    np.testing.assert_allclose(c.imbalance, 1.0, rtol=0.01)
    assert c.signal == "currents"
    balanced = ei_cofluctuation(x, x + np.random.default_rng(38).normal(0, 1, T_MS), 1.0)
    assert balanced.imbalance.max() < 0.02
