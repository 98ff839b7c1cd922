"""The dominant mode of population activity (``calibrate.diagnostics.mode.damped_mode``) on processes with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from calibrate.diagnostics import damped_mode


def branching_process(m: float, h: float, n_steps: int, seed: int) -> np.ndarray:
    """A_{t+1} ~ Poisson(m A_t + h): every active unit has Poisson(m) offspring, the drive adds Poisson(h)."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_steps)
    a = h / (1.0 - m)
    for t in range(n_steps):
        a = rng.poisson(m * a + h)
        out[t] = a
    return out


def oscillating_process(rho: float, omega: float, n_steps: int, seed: int, obs_noise: float) -> np.ndarray:
    """AR(2) with the complex roots rho e^(+-i omega), observed with white noise (as subsampling adds)."""
    rng = np.random.default_rng(seed)
    a1, a2 = 2 * rho * np.cos(omega), -rho * rho
    e = rng.standard_normal(n_steps)
    x = np.zeros(n_steps)
    for t in range(2, n_steps):
        x[t] = a1 * x[t - 1] + a2 * x[t - 2] + e[t]
    return 100.0 + x + obs_noise * x.std() * rng.standard_normal(n_steps)


def test_real_mode_is_the_mr_branching_ratio_under_subsampling():
    full = branching_process(0.9, 100.0, 60_000, seed=31)
    seen = np.random.default_rng(32).binomial(full.astype(np.int64), 0.1).astype(float)
    mode = damped_mode(seen, 4.0, 60)
    assert mode.fit_ok and mode.r2 > 0.9
    assert mode.modulus == pytest.approx(0.9, abs=0.015)
    assert mode.freq_hz < 5.0  # not oscillating: omega ~ 0 (within a grid cell)
    assert mode.tau_ms == pytest.approx(-4.0 / np.log(0.9), rel=0.2)
    assert mode.r_k[0] < 0.6  # the naive r_1 is biased low by subsampling; the fit is not


@pytest.mark.parametrize("rho, freq_hz", [(0.75, 45.0), (0.93, 60.0)])
def test_oscillating_mode_modulus_and_frequency(rho, freq_hz):
    bin_ms = 1.0
    omega = 2 * np.pi * freq_hz * bin_ms * 1e-3
    a = oscillating_process(rho, omega, 100_000, seed=33, obs_noise=2.0)
    mode = damped_mode(a, bin_ms, 100)
    assert mode.fit_ok and mode.r2 > 0.8
    assert mode.modulus == pytest.approx(rho, abs=0.02)
    assert mode.freq_hz == pytest.approx(freq_hz, rel=0.05)
    assert mode.b < 0.5  # observation noise: r_k is the true autocorrelation times b < 1


def test_no_memory_and_constant_input_are_not_meaningful():
    white = np.random.default_rng(34).poisson(50.0, 20_000).astype(float)
    assert not damped_mode(white, 1.0, 50).fit_ok
    flat = np.full(5000, 3.0)
    m = damped_mode(flat, 1.0, 50)
    assert not m.fit_ok and np.isnan(m.modulus)
