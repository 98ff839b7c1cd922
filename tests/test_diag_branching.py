"""MR estimator (Wilting and Priesemann 2018) on branching processes with known m, subsampled to 10 %."""
from __future__ import annotations

import numpy as np
import pytest

from calibrate.diagnostics import branching_ratio_mr, mr_coefficients


def branching_process(m: float, h: float, n_steps: int, seed: int, a0: float | None = None) -> np.ndarray:
    """A driven branching process: A_{t+1} ~ Poisson(m A_t + h) (every active unit has Poisson(m) offspring,
    the drive adds Poisson(h) new units). Stationary mean h/(1-m) for m < 1; for m = 1 it drifts upwards."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_steps)
    a = h / (1.0 - m) if a0 is None else a0
    for t in range(n_steps):
        a = rng.poisson(m * a + h)
        out[t] = a
    return out


def subsample(a: np.ndarray, p: float, seed: int) -> np.ndarray:
    """Observe each active unit with probability p (binomial thinning = recording p of the units)."""
    return np.random.default_rng(seed).binomial(a.astype(np.int64), p).astype(np.float64)


# Lengths and k_max (about 10 tau for m < 1) chosen so that +-0.01 is at least 2.5 standard deviations of the
# estimate: over 20 seeds the error sd was 0.004 (m = 0.9, 1e5 steps), 0.002 (m = 0.98, 5e4 steps), < 1e-4
# (m = 1.0), so the known answer is not a lucky seed.
@pytest.mark.parametrize(
    "m, h, a0, n_steps, k_max",
    [(0.9, 100.0, None, 100_000, 100), (0.98, 20.0, None, 50_000, 250), (1.0, 10.0, 1000.0, 50_000, 250)],
)
def test_mr_recovers_m_within_0_01_under_10_percent_subsampling(m, h, a0, n_steps, k_max):
    full = branching_process(m, h, n_steps, seed=21, a0=a0)
    seen = subsample(full, 0.1, seed=22)
    fit = branching_ratio_mr(seen, bin_ms=4.0, k_max=k_max, n_boot=100, seed=3)
    assert fit.fit_ok
    assert fit.m == pytest.approx(m, abs=0.01)
    assert fit.ci_low <= fit.m <= fit.ci_high
    if m < 1:
        # the conventional one-step estimate is badly biased by subsampling; MR is not (the point of MR)
        assert fit.m_naive < m - 0.2
        assert fit.ci_low - 0.01 <= m <= fit.ci_high + 0.01
        assert fit.tau_ms == pytest.approx(-4.0 / np.log(m), rel=0.3)
    assert fit.r2 > 0.9


def test_offset_fit_also_recovers_subcritical_m():
    seen = subsample(branching_process(0.95, 50.0, 50_000, seed=23), 0.1, seed=24)
    fit = branching_ratio_mr(seen, bin_ms=1.0, k_max=150, fit="exp_offset", n_boot=0)
    assert fit.m == pytest.approx(0.95, abs=0.01)
    assert np.isnan(fit.ci_low)  # no bootstrap asked


def test_mr_coefficients_of_an_ar1_process():
    """r_k of an AR(1) process x_{t+1} = a x_t + noise is a^k (no subsampling: b = 1)."""
    rng = np.random.default_rng(25)
    x = np.empty(200_000)
    acc = 0.0
    noise = rng.standard_normal(x.size)
    for t in range(x.size):
        acc = 0.8 * acc + noise[t]
        x[t] = acc
    r = mr_coefficients(x, 5)
    np.testing.assert_allclose(r, 0.8 ** np.arange(1, 6), atol=0.01)
    # trials (rows) pooled give the same answer
    r2 = mr_coefficients(x.reshape(10, -1), 5)
    np.testing.assert_allclose(r2, r, atol=0.01)


def test_no_memory_or_anticorrelated_activity_is_not_fitted():
    rng = np.random.default_rng(26)
    white = rng.poisson(20.0, 20_000).astype(float)
    fit = branching_ratio_mr(white, 4.0, k_max=50, n_boot=20)
    assert abs(fit.m_naive) < 0.05
    # Regular alternation (what refractory-limited regular firing gives at a bin near the period): r_1 < 0.
    alt = 50.0 + 10.0 * (-1.0) ** np.arange(20_000) + rng.normal(0, 1, 20_000)
    fit2 = branching_ratio_mr(alt, 4.0, k_max=50, n_boot=20)
    assert fit2.m_naive < -0.5
    assert not fit2.fit_ok and np.isnan(fit2.m) and np.isnan(fit2.tau_ms)
    const = branching_ratio_mr(np.full(1000, 3.0), 4.0, n_boot=0)
    assert not const.fit_ok and np.isnan(const.m)


def test_bootstrap_is_seeded():
    seen = subsample(branching_process(0.9, 100.0, 10_000, seed=27), 0.1, seed=28)
    a = branching_ratio_mr(seen, 4.0, k_max=60, n_boot=50, seed=5)
    b = branching_ratio_mr(seen, 4.0, k_max=60, n_boot=50, seed=5)
    c = branching_ratio_mr(seen, 4.0, k_max=60, n_boot=50, seed=6)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.m == c.m  # the point estimate does not depend on the bootstrap
