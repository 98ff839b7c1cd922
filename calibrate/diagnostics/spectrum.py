"""Population spectrum and its gamma (PING) peak; synchrony of the sampled membrane potentials.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import signal as ssignal

__all__ = ["Spectrum", "population_spectrum", "synchrony_chi"]


@dataclass
class Spectrum:
    """Population spectrum (:func:`population_spectrum`).

    Attributes
    ----------
    freqs_hz, psd : ndarray
        Welch estimate of the power spectral density of the population rate (Hz^2/Hz for a rate in Hz).
    gamma_band : tuple of float
        Band searched for the peak (Hz).
    gamma_peak_hz : float
        Frequency in the band where the PSD rises most above the aperiodic baseline.
    gamma_peak_ratio : float
        PSD over baseline there (about 1 without a rhythm).
    gamma_power_fraction : float
        Power in the band over the power from ``floor_band[0]`` to Nyquist.
    floor : float
        Counting-noise level ``2 <rate> / n_cells`` when the cell count is known, else the median PSD over
        ``floor_band``.
    baseline : ndarray
        The aperiodic baseline at ``freqs_hz`` (NaN outside the band and flanks; see
        :func:`population_spectrum`).
    gamma_modulation : float
        Depth of the gamma-band rate modulation relative to the mean rate: ``sqrt(2 P_ex) / <rate>`` with
        ``P_ex`` the band power above the baseline. A rate ``r0 (1 + a sin(2 pi f t))`` gives ``a``; it does
        not grow with the number of neurons, and broadband (aperiodic) power does not count.
    mean_rate : float
        Mean of the input series.
    bin_ms : float
    """

    freqs_hz: np.ndarray
    psd: np.ndarray
    gamma_band: Tuple[float, float]
    gamma_peak_hz: float
    gamma_peak_ratio: float
    gamma_power_fraction: float
    floor: float
    baseline: np.ndarray
    gamma_modulation: float
    mean_rate: float
    bin_ms: float


def population_spectrum(
    rate: np.ndarray,
    bin_ms: float,
    *,
    gamma_band: Tuple[float, float] = (30.0, 80.0),
    nperseg: int = 1024,
    floor_band: Tuple[float, Optional[float]] = (5.0, None),
    n_cells: Optional[int] = None,
) -> Spectrum:
    """Power spectrum of a population rate and its gamma-band peak (PING).

    Welch's method (Hann windows of ``nperseg`` bins, half overlap, mean removed per segment;
    ``scipy.signal.welch``). Pyramidal-interneuron network gamma (PING: E drives I, I silences E, the cycle
    set by the synaptic and membrane time constants of the loop) shows as a peak in 30-80 Hz (docs/diagnostics.md;
    Whittington et al. 2000, Brunel and Wang 2003). A rhythm is a *peak*: power above the aperiodic spectrum
    around it. Shared input fluctuations (a feed-forward chip whose neurons share Poisson sources) raise the
    whole low-frequency spectrum above the counting noise without any rhythm, so the reference is an
    aperiodic baseline (our choice, in the spirit of the 1/f-corrected peak detection of Donoghue et al.
    2020): a power law ``log PSD = a + b log f`` fitted to the flanks ``[lo/2, lo)`` and
    ``(hi, min(2 hi, 0.9 Nyquist)]`` of the band ``[lo, hi]``, and inside the band at least the mean PSD of
    the lower flank. The second term makes it conservative: a spectrum that bends down inside the band (the
    knee of shared input filtered by the synapses, measured on bss2 chips) lies above any power law through
    its flanks, yet is no rhythm; a rhythm must rise above the spectrum just below the band. Weak gamma
    bumps on a steep 1/f spectrum are missed by design. Reported: the peak frequency and
    ``gamma_peak_ratio = PSD/baseline`` at the largest ratio in the band, and the modulation depth
    ``gamma_modulation = sqrt(2 * max(0, sum_band (PSD - baseline) df)) / mean`` (N-independent, used by the
    flag; the band excess is summed before clipping so that estimation noise cancels). Without usable flanks
    the baseline is the floor: the counting noise ``2 r / N`` of N cells at ``r`` Hz (one-sided, per-cell
    rate; also the high-frequency limit of any renewal train) when ``n_cells`` is given, else the median PSD
    over ``floor_band``. Caveat: regular (mean-driven) neurons firing near the same rate make a peak at that
    rate without any synchrony; read the peak with the CV.

    Parameters
    ----------
    rate : array, shape [T]
        Population rate on a grid of ``bin_ms`` (Hz per cell, or counts: the ratio is unit-free).
    bin_ms : float
    gamma_band : (float, float)
    nperseg : int
        Segment length (bins); reduced to the series length when shorter.
    floor_band : (float, float or None)
        Band of the median floor (without ``n_cells``); None upper edge = Nyquist.
    n_cells : int, optional
        Cells behind a per-cell rate in Hz: the floor is then the counting noise ``2 * mean / n_cells``.

    Returns
    -------
    Spectrum
    """
    x = np.asarray(rate, dtype=np.float64)
    fs = 1000.0 / bin_ms
    nps = int(min(nperseg, x.size))
    f, p = ssignal.welch(x, fs=fs, nperseg=nps, detrend="constant")
    hi = fs / 2.0 if floor_band[1] is None else floor_band[1]
    fl = (f >= floor_band[0]) & (f <= hi)
    mean = float(x.mean()) if x.size else float("nan")
    if n_cells is not None and n_cells > 0:
        floor = 2.0 * mean / n_cells
    else:
        floor = float(np.median(p[fl])) if fl.any() else float("nan")
    lo, hi_b = float(gamma_band[0]), float(gamma_band[1])
    band = (f >= lo) & (f <= hi_b)
    baseline = _aperiodic_baseline(f, p, lo, hi_b, fs, floor)
    if band.any() and np.all(np.isfinite(baseline[band])) and np.all(baseline[band] > 0):
        rel = p[band] / baseline[band]
        j = np.flatnonzero(band)[int(np.argmax(rel))]
        peak_hz, ratio = float(f[j]), float(p[j] / baseline[j])
        tot = float(p[f >= floor_band[0]].sum())
        frac = float(p[band].sum() / tot) if tot > 0 else float("nan")
        df = float(f[1] - f[0]) if f.size > 1 else 0.0
        excess = max(0.0, float(np.sum(p[band] - baseline[band])) * df)
        mod = math.sqrt(2.0 * excess) / abs(mean) if mean else float("nan")
    else:
        peak_hz, ratio, frac, mod = float("nan"), float("nan"), float("nan"), float("nan")
    return Spectrum(
        freqs_hz=f, psd=p, gamma_band=(lo, hi_b), gamma_peak_hz=peak_hz, gamma_peak_ratio=ratio,
        gamma_power_fraction=frac, floor=floor, baseline=baseline, gamma_modulation=mod, mean_rate=mean,
        bin_ms=float(bin_ms),
    )


def _aperiodic_baseline(f: np.ndarray, p: np.ndarray, lo: float, hi_b: float, fs: float, floor: float) -> np.ndarray:
    """The reference a gamma peak must rise above (see :func:`population_spectrum`): a power law through the flanks
    of the band, and inside the band at least the mean PSD of the lower flank; without usable flanks the floor.
    NaN outside the band and flanks."""
    band = (f >= lo) & (f <= hi_b)
    flank_lo = (f >= lo / 2) & (f < lo) & (p > 0)
    flank_hi = (f > hi_b) & (f <= min(2 * hi_b, 0.9 * fs / 2)) & (p > 0)
    baseline = np.full(f.shape, np.nan)
    if flank_lo.sum() >= 2 and flank_hi.sum() >= 2:
        fx = flank_lo | flank_hi
        slope, icpt = np.polyfit(np.log10(f[fx]), np.log10(p[fx]), 1)
        use = band | fx
        baseline[use] = 10.0 ** (icpt + slope * np.log10(f[use]))
        # conservative: a rhythm must also rise above the spectrum just below the band (a knee is no peak)
        baseline[band] = np.maximum(baseline[band], float(np.mean(p[flank_lo])))
    elif np.isfinite(floor):
        baseline[band] = floor
    return baseline


def synchrony_chi(v: np.ndarray) -> float:
    """Synchrony measure chi of membrane potentials (Golomb and Rinzel 1993; Golomb, Scholarpedia 2(1):1347).

    ``chi^2 = Var_t(mean_i V_i(t)) / mean_i Var_t(V_i(t))``: about ``1/sqrt(M)`` for M asynchronous neurons,
    1 for full synchrony.

    Parameters
    ----------
    v : array, shape [T, M]
        Sampled potentials of M neurons.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 3 or v.shape[1] < 2:
        return float("nan")
    den = float(v.var(axis=0).mean())
    if den <= 0:
        return float("nan")
    return float(math.sqrt(v.mean(axis=1).var() / den))
