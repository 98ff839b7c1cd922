"""Multiscale co-fluctuation of the excitatory and inhibitory populations (after Dehghani et al. 2016).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import fft as sfft

__all__ = ["CoFluctuation", "log_scales", "ei_cofluctuation"]


@dataclass
class CoFluctuation:
    """E/I co-fluctuation over time scales (:func:`ei_cofluctuation`). Arrays have one entry per scale.

    Attributes
    ----------
    bin_ms : ndarray
        Bin widths (ms), log-spaced.
    rho : ndarray
        Zero-lag Pearson correlation of the coarse-grained E and I series (non-overlapping bins).
    peak_lag_ms : ndarray
        Lag of the maximum of the cross-correlation at that scale (> 0: I follows E), resolution ``dt_ms``;
        NaN when the maximum lies on the edge of the lag window (no peak).
    peak_corr : ndarray
        The cross-correlation at its peak.
    deviation : ndarray
        ``std(z_E - z_I)/sqrt(2)`` of the z-scored coarse series: 0 for perfect co-fluctuation, 1 for
        independent series (equals ``sqrt(1 - rho)``).
    imbalance : ndarray
        ``rms(E - I) / mean((E + I)/2)``: relative distance from the balance line ``E = I``, counting both a
        static offset and uncorrelated fluctuations.
    ratio : ndarray
        ``mean(E) / mean(I)``.
    n_bins : ndarray of int
        Bins at that scale.
    fano_e, fano_i : ndarray
        Population Fano factor of the E and I spike counts at that scale: ``Var(E_Delta) / noise``, with the
        Poisson counting noise ``noise = mean(E_Delta) / (n_cells * Delta)``. 1 for independent Poisson
        neurons (asynchronous state), > 1 with shared fluctuations. NaN unless cell counts were given.
    rho_signal : ndarray
        Correlation of the fluctuations left after removing the counting noise:
        ``Cov(E, I) / sqrt((Var E - noise_E)(Var I - noise_I))`` (independent neurons make the noise of E and I
        independent, so the covariance needs no correction), clipped to [-1, 1]; NaN where either excess
        variance is not positive or no cell counts were given.
    dt_ms : float
        Resolution of the input series.
    signal : str
        What E and I are (``"rates"``: per-cell population rates in Hz; ``"currents"``: population-mean
        excitatory and inhibitory input currents in pA).
    """

    bin_ms: np.ndarray
    rho: np.ndarray
    peak_lag_ms: np.ndarray
    peak_corr: np.ndarray
    deviation: np.ndarray
    imbalance: np.ndarray
    ratio: np.ndarray
    n_bins: np.ndarray
    fano_e: np.ndarray
    fano_i: np.ndarray
    rho_signal: np.ndarray
    dt_ms: float
    signal: str = "rates"

    def median_over(self, name: str, min_bin_ms: float = 0.0) -> float:
        """Median of the per-scale array ``name`` over the scales at or above ``min_bin_ms`` (NaN if none)."""
        v = np.asarray(getattr(self, name), dtype=np.float64)[self.bin_ms >= min_bin_ms - 1e-9]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else float("nan")


def log_scales(
    dt_ms: float,
    duration_ms: float,
    *,
    n_scales: int = 32,
    min_bin_ms: Optional[float] = None,
    max_bin_ms: Optional[float] = None,
) -> np.ndarray:
    """Bin widths for the multiscale analysis, as integer numbers of input samples.

    ``n_scales`` widths geometrically spaced from ``min_bin_ms`` (default max(dt, 1 ms)) to ``max_bin_ms``
    (default duration/20, so the coarsest scale still has 20 bins), rounded to multiples of ``dt_ms``. Where
    rounding would repeat a width at the fine end, the widths step up by one sample instead (1, 2, 3, ...
    samples, then geometric), so there are ``n_scales`` distinct widths whenever the range holds that many;
    otherwise every width in the range once. The 32 log-spaced scales follow Dehghani et al. 2016; the end
    points and the rounding are our choice (docs/diagnostics.md: the published recipe could not be checked).

    Returns
    -------
    ndarray of int64: samples per bin, strictly increasing.
    """
    lo = max(dt_ms, 1.0) if min_bin_ms is None else max(min_bin_ms, dt_ms)
    hi = duration_ms / 20.0 if max_bin_ms is None else max_bin_ms
    k_lo = max(1, int(round(lo / dt_ms)))
    k_hi = max(k_lo, int(round(hi / dt_ms)))
    if k_hi - k_lo + 1 <= n_scales:
        return np.arange(k_lo, k_hi + 1, dtype=np.int64)
    k = np.round(np.geomspace(k_lo, k_hi, n_scales)).astype(np.int64)
    for j in range(1, n_scales):  # fine end: at least one sample apart
        k[j] = max(k[j], k[j - 1] + 1)
    for j in range(n_scales - 2, -1, -1):  # keep the top end at k_hi
        k[j] = min(k[j], k[j + 1] - 1)
    return k


def _box(x: np.ndarray, k: int) -> np.ndarray:
    """Sums of ``k`` consecutive entries (valid part, length len(x) - k + 1), via a cumulative sum."""
    c = np.concatenate(([0.0], np.cumsum(x)))
    return c[k:] - c[:-k]


def ei_cofluctuation(
    e: np.ndarray,
    i: np.ndarray,
    dt_ms: float,
    *,
    n_scales: int = 32,
    min_bin_ms: Optional[float] = None,
    max_bin_ms: Optional[float] = None,
    max_lag_ms: float = 50.0,
    signal: str = "rates",
    n_cells_e: Optional[int] = None,
    n_cells_i: Optional[int] = None,
) -> CoFluctuation:
    """Multiscale co-fluctuation of an excitatory and an inhibitory population signal.

    After Dehghani, Peyrache, Telenczuk, Le Van Quyen, Halgren, Cash, Hatsopoulos and Destexhe, Sci Rep
    6:23176 (2016): E and I ensembles co-fluctuate at zero lag over many time scales in every normal brain
    state, with the largest deviations in slow-wave sleep, and the E-I temporal correlation breaks down in
    seizures. Their exact recipe could not be checked (docs/diagnostics.md); this implementation is our choice:

    1. For each of the bin widths ``Delta`` of :func:`log_scales`, coarse-grain both series into
       non-overlapping bins (mean per bin): ``E_Delta(t)``, ``I_Delta(t)``.
    2. ``rho(Delta) = corr(E_Delta, I_Delta)`` (Pearson, zero lag).
    3. ``deviation(Delta) = std(z_E - z_I)/sqrt(2)``, z the z-scored series (0 perfect, 1 independent).
    4. ``imbalance(Delta) = sqrt(mean((E_Delta - I_Delta)^2)) / mean((E_Delta + I_Delta)/2)``: the relative
       distance from the balance line, which sees a static offset too. It is meaningful when E and I are in
       units where balance means ``E = I``: per-cell rates of identical populations, or the excitatory
       current ``<ge*(EE - Vbal)>`` against the inhibitory one ``-<gi*(EI - Vbal)>``.
    5. ``ratio(Delta) = mean(E)/mean(I)``.
    6. The cross-correlation ``C_Delta(tau) = Cov(E_Delta(t), I_Delta(t + tau)) / (sd sd)`` with
       ``E_Delta, I_Delta`` the *moving* averages of width Delta, at the input resolution ``dt_ms``; its
       maximum over ``|tau| <= max_lag_ms`` gives ``peak_lag_ms`` (> 0: I follows E; NaN when the maximum
       lies on the edge of the window, i.e. there is no peak inside it). Moving rather than
       binned averages keep the lag resolution at ``dt_ms`` at every scale: the smoothed covariance is the raw
       cross-covariance (one FFT) convolved with a triangle of half-width Delta (two running sums).

    7. With ``n_cells_e`` and ``n_cells_i`` (E and I are then per-cell rates in Hz), the counting noise is
       separated out (our addition): ``fano_e``, ``fano_i`` and ``rho_signal`` (see :class:`CoFluctuation`).

    Counting noise alone lowers ``rho`` at fine scales (independent Poisson noise in E and I). In an
    asynchronous state the population rates of a few hundred neurons are almost pure counting noise, so
    ``rho`` is near 0 at every scale although nothing is wrong: there is no shared fluctuation to co-vary.
    Judge the co-fluctuation with ``rho_signal`` at scales where ``fano_e`` and ``fano_i`` exceed 1 clearly.

    Parameters
    ----------
    e, i : array of float, shape [T]
        The two signals on a common grid of step ``dt_ms`` (rates in Hz, or currents).
    dt_ms : float
    n_scales, min_bin_ms, max_bin_ms : see :func:`log_scales`.
    max_lag_ms : float
        Half-range of the lag search.
    signal : str
        Label stored in the result.
    n_cells_e, n_cells_i : int, optional
        Neurons behind E and I when they are per-cell spike rates in Hz (enables the noise correction).

    Returns
    -------
    CoFluctuation
    """
    e = np.asarray(e, dtype=np.float64)
    i = np.asarray(i, dtype=np.float64)
    if e.shape != i.shape or e.ndim != 1:
        raise ValueError("e and i must be 1-D series of equal length")
    n = e.size
    ks = log_scales(dt_ms, n * dt_ms, n_scales=n_scales, min_bin_ms=min_bin_ms, max_bin_ms=max_bin_ms)
    ks = ks[ks <= max(1, n // 2)]
    cells = (n_cells_e, n_cells_i) if n_cells_e and n_cells_i and n_cells_e > 0 and n_cells_i > 0 else None
    binned = _binned(e, i, ks, dt_ms, cells)
    pk, lag = _lagged(e, i, ks, dt_ms, max_lag_ms)
    return CoFluctuation(bin_ms=ks * dt_ms, peak_lag_ms=lag, peak_corr=pk, dt_ms=float(dt_ms), signal=signal,
                         **binned)


def _binned(e: np.ndarray, i: np.ndarray, ks: np.ndarray, dt_ms: float,
            cells: Optional[tuple]) -> dict:
    """Steps 1-5 and 7 of :func:`ei_cofluctuation`: the figures of the non-overlapping bins at each scale."""
    n, S = e.size, ks.size
    rho, dev, imb, rat, fe_, fi_, rsig = (np.full(S, np.nan) for _ in range(7))
    nbins = np.zeros(S, dtype=np.int64)
    for s, k in enumerate(ks):
        nb = n // k
        nbins[s] = nb
        E = e[: nb * k].reshape(nb, k).mean(axis=1)
        I = i[: nb * k].reshape(nb, k).mean(axis=1)
        me, mi = E.mean(), I.mean()
        se, si = E.std(), I.std()
        if nb >= 3 and se > 0 and si > 0:
            r = float(np.mean((E - me) * (I - mi)) / (se * si))
            rho[s] = r
            dev[s] = float(np.std((E - me) / se - (I - mi) / si) / math.sqrt(2.0))
        half = 0.5 * (me + mi)
        if half != 0:
            imb[s] = float(np.sqrt(np.mean((E - I) ** 2)) / abs(half))
        if mi != 0:
            rat[s] = float(me / mi)
        if cells is not None and nb >= 3:
            width_s = k * dt_ms * 1e-3
            noise_e, noise_i = me / (cells[0] * width_s), mi / (cells[1] * width_s)
            if noise_e > 0 and noise_i > 0:
                fe_[s], fi_[s] = se * se / noise_e, si * si / noise_i
                xe, xi = se * se - noise_e, si * si - noise_i
                if xe > 0 and xi > 0:
                    cov = float(np.mean((E - me) * (I - mi)))
                    rsig[s] = float(np.clip(cov / math.sqrt(xe * xi), -1.0, 1.0))
    return {"rho": rho, "deviation": dev, "imbalance": imb, "ratio": rat, "n_bins": nbins, "fano_e": fe_,
            "fano_i": fi_, "rho_signal": rsig}


def _lagged(e: np.ndarray, i: np.ndarray, ks: np.ndarray, dt_ms: float,
            max_lag_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 6 of :func:`ei_cofluctuation`: the peak of the cross-correlation of the moving averages at each scale
    (triangle-smoothed raw covariances); (peak correlation, peak lag in ms)."""
    n, S = e.size, ks.size
    lag, pk = np.full(S, np.nan), np.full(S, np.nan)
    L_lag = int(round(max_lag_ms / dt_ms))
    L_lag = max(0, min(L_lag, n // 4))
    kmax = int(ks.max()) if S else 1
    L = L_lag + kmax  # raw lags needed: |tau| <= L_lag + k - 1
    L = min(L, n - 1)
    ce, ci = e - e.mean(), i - i.mean()
    nfft = sfft.next_fast_len(n + L + 1, real=True)
    fe, fi = sfft.rfft(ce, nfft), sfft.rfft(ci, nfft)
    lags = np.arange(-L, L + 1)

    def raw(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        c = sfft.irfft(np.conj(fa) * fb, nfft)  # c[tau] = sum_t a[t] b[t + tau]
        return c[lags % nfft] / n

    c_ei, c_ee, c_ii = raw(fe, fi), raw(fe, fe), raw(fi, fi)
    for s, k in enumerate(ks):
        k = int(k)
        if k - 1 + L_lag > L:
            continue
        tri_ei = _box(_box(c_ei, k), k)  # centre lag of entry j: -L + j + (k - 1)
        tri_ee = _box(_box(c_ee, k), k)
        tri_ii = _box(_box(c_ii, k), k)
        j0 = L - (k - 1)  # entry of lag 0
        var_e, var_i = tri_ee[j0], tri_ii[j0]
        if var_e <= 0 or var_i <= 0:
            continue
        window = tri_ei[j0 - L_lag : j0 + L_lag + 1] / math.sqrt(var_e * var_i)
        j = int(np.argmax(window))
        pk[s] = float(window[j])
        if L_lag == 0 or 0 < j < window.size - 1:  # a maximum on the edge of the window is no peak
            lag[s] = (j - L_lag) * dt_ms
    return pk, lag
