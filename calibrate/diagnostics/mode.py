"""The dominant mode of the population activity: the MR regression slopes fitted with a damped oscillation
``b |lambda|^k cos(omega k + phi)`` (ours): the branching ratio of an oscillating network, where the MR exponential
does not fit (docs/diagnostics.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from hw_models.recording import Recording

from .branching import mr_coefficients
from .spikes import population_counts

__all__ = ["DampedMode", "damped_mode", "recording_mode"]


@dataclass
class DampedMode:
    """Dominant mode of the population activity, fitted to the multistep-regression coefficients (ours).

    ``r_k = b |lambda|^k cos(omega k + phi)``, k = 1..k_max: the MR model ``r_k = b m^k`` of Wilting and
    Priesemann (2018) with a complex eigenvalue ``lambda = |lambda| e^(i omega)`` allowed. For any linear
    population dynamics observed through subsampling, ``r_k`` is the true autocorrelation times an unknown
    ``b`` (the same argument as for real m), so ``|lambda|`` is the per-bin modulus of the slowest mode: it is
    the MR branching ratio m when the mode is real (``omega = 0``) and approaches 1 at an oscillatory (Hopf)
    instability, which is how an inhibition-stabilised E/I network loses stability (gamma, PING). The MR
    estimator proper reports "not meaningful" there, because ``r_k`` oscillates.

    Attributes
    ----------
    modulus : float
        ``|lambda|`` per bin (NaN when the fit is not meaningful).
    tau_ms : float
        Decay time of the mode's envelope, ``-bin_ms / ln|lambda|`` (inf at or above 1).
    freq_hz : float
        ``omega / (2 pi bin)``; 0 for a real (non-oscillating) mode.
    b, phase : float
    r2 : float
        Variance of ``r_k`` explained by the fit.
    bin_ms : float
    k, r_k, r_k_fit : ndarray
    fit_ok : bool
        False when ``r2 < min_r2`` or ``r_k`` is all zero.
    """

    modulus: float
    tau_ms: float
    freq_hz: float
    b: float
    phase: float
    r2: float
    bin_ms: float
    k: np.ndarray
    r_k: np.ndarray
    r_k_fit: np.ndarray
    fit_ok: bool


def _mode_sse(
    r: np.ndarray, k: np.ndarray, lam: np.ndarray, om: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of ``r_k ~ lam^k (A cos(om k) + B sin(om k))`` for every (lam, om) pair: SSE, A, B."""
    env = lam[:, None] ** k[None, :]  # [L, K]
    c = np.cos(om[:, None] * k[None, :])  # [W, K]
    s = np.sin(om[:, None] * k[None, :])
    ec, es = env[:, None, :] * c[None], env[:, None, :] * s[None]  # [L, W, K]
    scc, sss, scs = (ec * ec).sum(-1), (es * es).sum(-1), (ec * es).sum(-1)
    rc, rs = (ec * r).sum(-1), (es * r).sum(-1)
    det = scc * sss - scs * scs
    ok = det > 1e-12 * np.maximum(scc * sss, 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        a2 = np.where(ok, (rc * sss - rs * scs) / det, rc / np.maximum(scc, 1e-300))
        b2 = np.where(ok, (rs * scc - rc * scs) / det, 0.0)
    fit = a2[..., None] * ec + b2[..., None] * es
    sse = ((fit - r) ** 2).sum(-1)
    return sse, a2, b2


def damped_mode(activity: np.ndarray, bin_ms: float, k_max: int, *, min_r2: float = 0.5) -> DampedMode:
    """Fit the dominant (possibly oscillating) mode to the MR coefficients of ``activity`` (:class:`DampedMode`).

    Exact least squares: for fixed ``(|lambda|, omega)`` the model is linear in ``(b cos phi, b sin phi)``, so a
    grid of moduli (decay times 0.1 to 1e4 bins, and up to e^0.05 above 1) is scanned, for the real mode
    (``omega = 0``, the MR exponential) and for oscillations from one period within ``k_max`` lags up to
    Nyquist, and the best cells are refined on finer local grids. The oscillating fit is kept only when it
    lowers the Bayesian information criterion (two more parameters): a slow cosine would otherwise trade off
    against the decay of a real mode.

    Parameters
    ----------
    activity : array [T] or [trials, T]
        Population spike counts per bin.
    bin_ms : float
    k_max : int
        Lags fitted (should cover a few periods and decay times).
    """
    k_max = int(max(3, k_max))
    r = mr_coefficients(activity, k_max)
    k = np.arange(1, k_max + 1, dtype=np.float64)
    nan = float("nan")
    if not np.all(np.isfinite(r)) or not np.any(r != 0):
        return DampedMode(nan, nan, nan, nan, nan, nan, float(bin_ms), k.astype(int), r, np.full_like(r, nan), False)
    lam0 = np.concatenate((np.exp(-1.0 / np.geomspace(0.1, 1e4, 160)), np.exp(1.0 / np.geomspace(1e4, 20.0, 20))))
    w_min = 2 * np.pi / k_max  # an oscillation must complete a period within the lags fitted to be identified

    def best(om: np.ndarray) -> Tuple[float, float, float, float, float]:
        lam = lam0
        sse, A, B = _mode_sse(r, k, lam, om)
        i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
        for _ in range(2):  # local refinement around the best cell
            li = lam[max(i - 1, 0)], lam[min(i + 1, lam.size - 1)]
            lam = np.linspace(li[0], li[1], 41)
            if om.size > 1:
                om = np.linspace(max(om[max(j - 1, 0)], w_min), om[min(j + 1, om.size - 1)], 41)
            sse, A, B = _mode_sse(r, k, lam, om)
            i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
        return float(sse[i, j]), float(lam[i]), float(om[j]), float(A[i, j]), float(B[i, j])

    real = best(np.zeros(1))
    osc = best(np.linspace(w_min, np.pi, 121)) if w_min < np.pi else real

    def bic(sse: float, n_par: int) -> float:  # model choice: the oscillation must earn its two parameters
        return k_max * math.log(max(sse, 1e-300) / k_max) + n_par * math.log(k_max)

    _, l_best, w_best, a_best, b_best = osc if bic(osc[0], 4) < bic(real[0], 2) else real
    fit = l_best ** k * (a_best * np.cos(w_best * k) + b_best * np.sin(w_best * k))
    ss_tot = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - float(((fit - r) ** 2).sum()) / ss_tot if ss_tot > 0 else nan
    amp = math.hypot(a_best, b_best)
    ok = bool(np.isfinite(r2) and r2 >= min_r2 and amp > 0)
    tau = -bin_ms / math.log(l_best) if l_best < 1 else math.inf
    return DampedMode(
        modulus=l_best if ok else nan, tau_ms=tau if ok else nan,
        freq_hz=w_best / (2 * math.pi * bin_ms) * 1e3 if ok else nan, b=amp, phase=math.atan2(-b_best, a_best),
        r2=r2, bin_ms=float(bin_ms), k=k.astype(int), r_k=r, r_k_fit=fit, fit_ok=ok,
    )


def recording_mode(rec: Recording, *, bin_ms: float = 1.0, k_max_ms: float = 100.0) -> Optional[DampedMode]:
    """:func:`damped_mode` of the whole chip's spike counts in bins of ``bin_ms`` over lags up to ``k_max_ms``
    (defaults: 1 ms, 100 ms: a few gamma periods); None when the recording is too short or silent."""
    kb = max(1, int(round(bin_ms / rec.dt_ms)))
    a = population_counts(rec, kb).astype(np.float64)
    k_max = int(round(k_max_ms / (kb * rec.dt_ms)))
    if a.size < 10 * k_max or a.sum() == 0:
        return None
    return damped_mode(a, kb * rec.dt_ms, k_max)
