"""Branching ratio of population activity: the multistep-regression estimator (Wilting and Priesemann 2018).

Wilting and Priesemann, "Inferring collective dynamical states from widely unobserved systems", Nat Commun
9:2325 (2018). For a branching process ``A_{t+1} = m A_t + h + noise`` observed through subsampling
``a_t`` (each unit seen with probability p), the lag-k regression slopes are
``r_k = Cov(a_t, a_{t+k}) / Var(a_t) = b m^k`` with an unknown ``b`` that depends on p; the conventional
one-step estimate ``r_1 = b m`` is biased, the fit of the whole curve is not. Steps:

1. :func:`mr_coefficients` for k = 1..k_max;
2. least-squares fit ``r_k = b m^k`` (``fit="exp"``, default) or ``b m^k + c`` (``"exp_offset"``, the
   default of the authors' toolbox mrestimator, which absorbs slow non-stationarity). We default to the
   pure exponential because with tau close to or beyond k_max the offset trades off against tau and m
   becomes ill-determined (our choice; pass ``"exp_offset"`` for the toolbox behaviour). The fit is
   exact least squares: for fixed m it is linear in (b, c), so we scan m on a grid dense near 1 and
   refine (resolution ~1e-5 near m = 0.98), with b >= 0 enforced;
3. ``tau = -bin_ms / ln m``;
4. confidence interval: block bootstrap. The series is cut into ``n_blocks`` contiguous blocks (trials for 2-D
   input); the sufficient statistics of every regression are summed per block, blocks are resampled with
   replacement ``n_boot`` times, r_k recomputed from the resampled sums, refitted, and the percentiles of m give
   the interval (our choice of resampling unit; mrestimator resamples trials).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["BranchingFit", "mr_coefficients", "branching_ratio_mr"]


@dataclass
class BranchingFit:
    """Result of :func:`branching_ratio_mr`.

    Attributes
    ----------
    m : float
        Branching ratio per bin of ``bin_ms``: ``m = exp(-bin_ms/tau_ms)``.
    tau_ms : float
        Autocorrelation time ``-bin_ms/ln m`` (inf for m >= 1).
    ci_low, ci_high : float
        Bootstrap confidence interval of m (percentiles, level ``ci``).
    ci : float
        Confidence level.
    b, offset : float
        Fitted amplitude and offset: ``r_k = b m^k (+ offset)``.
    k : ndarray of int
        Lags 1..k_max.
    r_k : ndarray
        The regression slopes of A_{t+k} on A_t.
    r_k_fit : ndarray
        The fitted curve at ``k``.
    r_k_boot_sd : ndarray
        Bootstrap standard deviation of each r_k.
    m_naive : float
        The conventional one-step estimate ``r_1`` (biased low by subsampling; for comparison).
    r2 : float
        Coefficient of determination of the fit over k = 1..k_max.
    bin_ms : float
    fit : str
        ``"exp"`` or ``"exp_offset"``.
    n_boot : int
    fit_ok : bool
        False when the fit is not meaningful: constant activity, ``r_1 <= 0`` (anticorrelated successive bins,
        as regular refractory-limited firing gives), no positive amplitude, or ``r2 < min_r2`` (r_k not an
        exponential decay, e.g. oscillating under PING). ``m``, ``tau_ms`` and the interval are then NaN.
    """

    m: float
    tau_ms: float
    ci_low: float
    ci_high: float
    ci: float
    b: float
    offset: float
    k: np.ndarray
    r_k: np.ndarray
    r_k_fit: np.ndarray
    r_k_boot_sd: np.ndarray
    m_naive: float
    r2: float
    bin_ms: float
    fit: str
    n_boot: int
    fit_ok: bool


def _mr_block_stats(a: np.ndarray, k_max: int, edges: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-block sufficient statistics of the lag-k regressions, arrays [n_blocks, k_max].

    A pair (A_t, A_{t+k}) belongs to the block of t (it may reach into the next block). For block b and lag k:
    ``n`` pairs, ``f = sum A_t``, ``g = sum A_{t+k}``, ``q = sum A_t^2``, ``p = sum A_t A_{t+k}``.
    """
    n = a.size
    nbk = edges.size - 1
    cs = np.concatenate(([0.0], np.cumsum(a)))
    cs2 = np.concatenate(([0.0], np.cumsum(a * a)))
    out = {key: np.empty((nbk, k_max)) for key in ("n", "f", "g", "q", "p")}
    lo_e, hi_e = edges[:-1], edges[1:]
    for k in range(1, k_max + 1):
        lo = np.minimum(lo_e, n - k)
        hi = np.minimum(hi_e, n - k)
        out["n"][:, k - 1] = hi - lo
        out["f"][:, k - 1] = cs[hi] - cs[lo]
        out["q"][:, k - 1] = cs2[hi] - cs2[lo]
        out["g"][:, k - 1] = cs[hi + k] - cs[lo + k]
        cp = np.concatenate(([0.0], np.cumsum(a[: n - k] * a[k:])))
        out["p"][:, k - 1] = cp[hi] - cp[lo]
    return out


def _r_from_stats(st: Dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    """r_k from block statistics pooled with block weights ``w`` [B, n_blocks] -> [B, k_max]."""
    N = w @ st["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        F, G, Q, P = (w @ st[key] / N for key in ("f", "g", "q", "p"))
        return (P - F * G) / (Q - F * F)


def mr_coefficients(activity: np.ndarray, k_max: int) -> np.ndarray:
    """Multistep regression coefficients ``r_k = Cov(A_t, A_{t+k}) / Var(A_t)``, k = 1..k_max.

    Wilting and Priesemann, Nat Commun 9:2325 (2018), eq. for the MR estimator: the slope of the linear
    regression of A_{t+k} on A_t. Per trial (the 'ts' method of their toolbox): front mean and variance over
    ``A[:-k]``, back mean over ``A[k:]``. With several trials (rows of a 2-D ``activity``) the sums are pooled
    over trials before the ratio is formed (our choice; equal to mrestimator's 'sm' method when trials share
    a mean).

    Parameters
    ----------
    activity : array, shape [T] or [trials, T]
        Population spike counts per bin.
    k_max : int

    Returns
    -------
    ndarray of float64, shape [k_max]
    """
    a = np.asarray(activity, dtype=np.float64)
    rows = a[None] if a.ndim == 1 else a
    stats = None
    for row in rows:
        row = row - row.mean()
        st = _mr_block_stats(row, k_max, np.array([0, row.size]))
        stats = st if stats is None else {key: stats[key] + st[key] for key in st}
    assert stats is not None
    return _r_from_stats(stats, np.ones((1, 1)))[0]


def _fit_grid() -> np.ndarray:
    """Candidate m values, dense near 1: tau from 0.1 to 1e5 bins below 1, and up to m = e^0.1 above."""
    tau = np.geomspace(0.1, 1e5, 700)
    below = np.exp(-1.0 / tau)
    above = np.exp(1.0 / np.geomspace(1e5, 10.0, 150))
    return np.concatenate((below, [1.0], above))


def _profile_sse(r: np.ndarray, m: np.ndarray, k: np.ndarray, offset: bool) -> Tuple[np.ndarray, ...]:
    """Least-squares error of ``r_k ~ b m^k (+ c)`` for every row of r [B, K] and every m [G], b >= 0.

    For fixed m the model is linear in (b, c), so the error has a closed form; returns (sse, b, c) [B, G].
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        phi = np.exp(np.outer(np.log(m), k))  # [G, K]
    phi = np.where(np.isfinite(phi), phi, 0.0)
    rr = np.einsum("bk,bk->b", r, r)[:, None]
    rp = r @ phi.T  # [B, G]
    pp = np.einsum("gk,gk->g", phi, phi)[None, :]
    if not offset:
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.where(rp > 0, rp / pp, 0.0)
        sse = rr - 2 * b * rp + b * b * pp
        return sse, b, np.zeros_like(b)
    K = float(k.size)
    r1 = r.sum(axis=1)[:, None]
    p1 = phi.sum(axis=1)[None, :]
    det = pp * K - p1 * p1
    with np.errstate(invalid="ignore", divide="ignore"):
        b = (rp * K - p1 * r1) / det
        c = (pp * r1 - p1 * rp) / det
    bad = ~np.isfinite(b) | (b < 0)
    # b < 0 or singular: the best admissible fit is the constant c = mean(r) (b = 0)
    b = np.where(bad, 0.0, b)
    c = np.where(bad, r1 / K, c)
    resid_sse = rr - 2 * (b * rp + c * r1) + b * b * pp + 2 * b * c * p1 + c * c * K
    return resid_sse, b, c


def _fit_mr(r: np.ndarray, k: np.ndarray, offset: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best m, b, c for each row of r [B, K]: a coarse grid in m, then a fine grid around each minimum."""
    grid = _fit_grid()
    sse, _, _ = _profile_sse(r, grid, k, offset)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    j = np.argmin(sse, axis=1)
    lo = grid[np.maximum(j - 1, 0)]
    hi = grid[np.minimum(j + 1, grid.size - 1)]
    B = r.shape[0]
    m_out, b_out, c_out = np.empty(B), np.empty(B), np.empty(B)
    frac = np.linspace(0.0, 1.0, 201)
    for row in range(B):
        fine = lo[row] + (hi[row] - lo[row]) * frac
        s, b, c = _profile_sse(r[row : row + 1], fine, k, offset)
        s = np.where(np.isfinite(s), s, np.inf)
        q = int(np.argmin(s[0]))
        m_out[row], b_out[row], c_out[row] = fine[q], b[0, q], c[0, q]
    return m_out, b_out, c_out


def branching_ratio_mr(
    activity: np.ndarray,
    bin_ms: float,
    *,
    k_max: Optional[int] = None,
    fit: str = "exp",
    n_boot: int = 200,
    n_blocks: int = 20,
    ci: float = 0.95,
    seed: int = 0,
    min_r2: float = 0.5,
) -> BranchingFit:
    """Branching ratio of population activity with the multistep regression (MR) estimator.

    The estimator and its four steps are in the module docstring.

    Parameters
    ----------
    activity : array, shape [T] or [trials, T]
        Population spike counts per bin of ``bin_ms`` (subsampled or not).
    bin_ms : float
        Bin width; m is per bin (``m_Delta = exp(-Delta/tau)``: compare m only at equal bins).
    k_max : int, optional
        Largest lag; default ``min(T // 10, 250)``, never above ``T // 4``. It should cover a few tau.
    fit : {"exp", "exp_offset"}
    n_boot : int
        Bootstrap replicates (0: no interval, ci_low = ci_high = NaN).
    n_blocks : int
        Blocks of the bootstrap for 1-D input.
    ci : float
        Confidence level of the interval.
    seed : int
        Seed of the bootstrap.
    min_r2 : float
        Fits explaining less of the variance of r_k than this are reported as not meaningful.

    Returns
    -------
    BranchingFit
    """
    if fit not in ("exp", "exp_offset"):
        raise ValueError("fit must be 'exp' or 'exp_offset'")
    a = np.asarray(activity, dtype=np.float64)
    rows = a[None] if a.ndim == 1 else a
    T = rows.shape[1]
    if k_max is None:
        k_max = min(T // 10, 250)
    k_max = int(max(2, min(k_max, T // 4)))
    k = np.arange(1, k_max + 1)

    stats, nb = _blocks(rows, k_max, n_blocks if a.ndim == 1 else None)

    r = _r_from_stats(stats, np.ones((1, nb)))
    nan_fit = BranchingFit(
        m=float("nan"), tau_ms=float("nan"), ci_low=float("nan"), ci_high=float("nan"), ci=ci, b=float("nan"),
        offset=float("nan"), k=k, r_k=r[0], r_k_fit=np.full(k_max, np.nan), r_k_boot_sd=np.full(k_max, np.nan),
        m_naive=float(r[0, 0]), r2=float("nan"), bin_ms=float(bin_ms), fit=fit, n_boot=0, fit_ok=False,
    )
    if not np.all(np.isfinite(r)):
        return nan_fit
    offset = fit == "exp_offset"
    m, b, c = _fit_mr(r, k.astype(np.float64), offset)
    m0, b0, c0 = float(m[0]), float(b[0]), float(c[0])
    r_fit = b0 * m0 ** k.astype(np.float64) + c0
    ss_tot = float(np.sum((r[0] - r[0].mean()) ** 2))
    r2 = 1.0 - float(np.sum((r[0] - r_fit) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    fit_ok = bool(b0 > 0 and r[0, 0] > 0 and np.isfinite(r2) and r2 >= min_r2)
    if not fit_ok:
        nan_fit.r2, nan_fit.b, nan_fit.offset, nan_fit.r_k_fit = r2, b0, c0, r_fit
        return nan_fit

    lo_ci, hi_ci, sd = _bootstrap(stats, nb, k, offset, n_boot, ci, seed)
    tau = -bin_ms / math.log(m0) if 0 < m0 < 1 else float("inf")
    return BranchingFit(
        m=m0, tau_ms=tau, ci_low=lo_ci, ci_high=hi_ci, ci=ci, b=b0, offset=c0, k=k, r_k=r[0], r_k_fit=r_fit,
        r_k_boot_sd=sd, m_naive=float(r[0, 0]), r2=r2, bin_ms=float(bin_ms), fit=fit, n_boot=int(n_boot),
        fit_ok=True,
    )


def _blocks(rows: np.ndarray, k_max: int, n_blocks: Optional[int]) -> Tuple[Dict[str, np.ndarray], int]:
    """The per-block regression statistics and the number of blocks: ``n_blocks`` contiguous blocks of one series
    (at least two, each at least ``k_max`` long), or one block per trial (``n_blocks`` None)."""
    T = rows.shape[1]
    if n_blocks is not None:
        nb = int(max(2, min(n_blocks, T // max(k_max, 1))))
        edges = np.linspace(0, T, nb + 1).round().astype(np.int64)
        return _mr_block_stats(rows[0] - rows[0].mean(), k_max, edges), nb
    parts = [_mr_block_stats(row - row.mean(), k_max, np.array([0, T])) for row in rows]
    return {key: np.concatenate([p[key] for p in parts], axis=0) for key in parts[0]}, rows.shape[0]


def _bootstrap(stats: Dict[str, np.ndarray], nb: int, k: np.ndarray, offset: bool, n_boot: int, ci: float,
               seed: int) -> Tuple[float, float, np.ndarray]:
    """Step 4 of :func:`branching_ratio_mr`: blocks resampled with replacement, r_k recomputed from the resampled
    sums and refitted; the percentile interval of m and each r_k's bootstrap standard deviation."""
    lo_ci = hi_ci = float("nan")
    sd = np.full(k.size, np.nan)
    if n_boot > 0 and nb >= 2:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, nb, size=(n_boot, nb))
        w = np.zeros((n_boot, nb))
        np.add.at(w, (np.repeat(np.arange(n_boot), nb), picks.ravel()), 1.0)
        rb = _r_from_stats(stats, w)
        good = np.all(np.isfinite(rb), axis=1)
        if good.any():
            mb, _, _ = _fit_mr(rb[good], k.astype(np.float64), offset)
            alpha = (1.0 - ci) / 2.0
            lo_ci, hi_ci = (float(x) for x in np.quantile(mb, [alpha, 1.0 - alpha]))
            sd = rb[good].std(axis=0)
    return lo_ci, hi_ci, sd
