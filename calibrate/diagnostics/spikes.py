"""Irregularity of spike trains: ISI CV and CV2, spike-count Fano factors, count correlation, firing regime.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from hw_models.recording import Recording

__all__ = ["population_counts", "FLUCTUATION_DRIVEN", "MEAN_DRIVEN", "UNCLASSIFIED", "sort_by_neuron", "isi_cv", "isi_cv2",
           "spike_count_fano", "mean_count_correlation", "classify_regime"]


FLUCTUATION_DRIVEN = 1
MEAN_DRIVEN = 0
UNCLASSIFIED = -1


def sort_by_neuron(times_ms: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Spikes ordered by neuron, then by time within each neuron.

    Parameters
    ----------
    times_ms : array of float, shape [S]
    ids : array of int, shape [S]

    Returns
    -------
    times_ms, ids : ndarray
        Sorted copies (float64, int64). Already-sorted input is returned after an O(S) check.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    i = np.asarray(ids, dtype=np.int64)
    if t.size < 2:
        return t, i
    di = np.diff(i)
    if np.all(di >= 0) and np.all(np.diff(t)[di == 0] >= 0):
        return t, i
    if np.all(np.diff(t) >= 0):  # time-sorted (a recording): a stable sort by neuron keeps time order
        key = i.astype(np.uint16) if 0 <= i.min() and i.max() < 2**16 else i  # 16-bit keys: radix sort
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((t, i))
    return t[order], i[order]


def _isis(times_ms: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inter-spike intervals and their neuron, from neuron-sorted spikes."""
    same = ids[1:] == ids[:-1]
    return np.diff(times_ms)[same], ids[1:][same]


def isi_cv(
    times_ms: np.ndarray, ids: np.ndarray, n_neurons: int, *, min_isis: int = 10
) -> np.ndarray:
    """Coefficient of variation of the inter-spike intervals, per neuron.

    ``CV = std(ISI) / mean(ISI)`` with the unbiased (ddof = 1) standard deviation over the neuron's ISIs.
    A Poisson train has CV = 1 (exponential ISIs), a periodic one CV = 0; fluctuation-driven neurons in the
    balanced state fire with CV near 1, mean-driven (suprathreshold) neurons regularly (CV well below 1);
    docs/diagnostics.md (CV ~ sigma/sqrt(dV*mu)), Softky and Koch 1993, van Vreeswijk and Sompolinsky 1996.

    Parameters
    ----------
    times_ms, ids : array, shape [S]
        Spike times (ms) and neurons, in any order.
    n_neurons : int
    min_isis : int
        Neurons with fewer ISIs get NaN.

    Returns
    -------
    ndarray of float64, shape [N]
    """
    t, i = sort_by_neuron(times_ms, ids)
    isi, owner = _isis(t, i)
    cnt = np.bincount(owner, minlength=n_neurons).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(owner, isi, minlength=n_neurons) / cnt
        dev = isi - mean[owner]
        var = np.bincount(owner, dev * dev, minlength=n_neurons) / (cnt - 1.0)
        cv = np.sqrt(var) / mean
    cv[cnt < max(min_isis, 2)] = np.nan
    return cv


def isi_cv2(
    times_ms: np.ndarray, ids: np.ndarray, n_neurons: int, *, min_isis: int = 10
) -> np.ndarray:
    """Local irregularity CV2 of Holt, Softky, Koch and Douglas (J Neurophysiol 75:1806, 1996), per neuron.

    ``CV2 = mean_k 2 |I_{k+1} - I_k| / (I_{k+1} + I_k)`` over consecutive ISI pairs. It is 1 for Poisson and 0
    for periodic trains like the CV, but insensitive to slow rate changes (which inflate the CV).

    Returns
    -------
    ndarray of float64, shape [N]; NaN for neurons with fewer than ``min_isis`` ISIs.
    """
    t, i = sort_by_neuron(times_ms, ids)
    isi, owner = _isis(t, i)
    pair = owner[1:] == owner[:-1]
    a, b = isi[:-1][pair], isi[1:][pair]
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(a + b > 0, 2.0 * np.abs(b - a) / (a + b), 0.0)
        cnt = np.bincount(owner[1:][pair], minlength=n_neurons).astype(np.float64)
        out = np.bincount(owner[1:][pair], v, minlength=n_neurons) / cnt
    out[cnt + 1 < max(min_isis, 2)] = np.nan
    return out


def spike_count_fano(
    times_ms: np.ndarray,
    ids: np.ndarray,
    n_neurons: int,
    t_start_ms: float,
    t_stop_ms: float,
    *,
    windows_ms: Sequence[float] = (10.0, 30.0, 100.0, 300.0, 1000.0),
    min_windows: int = 10,
) -> np.ndarray:
    """Fano factor of the spike counts per neuron, at several counting windows: the irregularity of each spike train.

    (Not :func:`calibrate.figures.counting_noise_fano`, the one number that sets the counting noise of a measured
    rate.)

    ``F(w) = Var(n_w) / E(n_w)``, ``n_w`` the neuron's spike count in consecutive non-overlapping windows of
    width ``w`` over ``[t_start, t_stop)`` (an incomplete last window is left out), unbiased variance.
    Poisson: F = 1 at every window; a periodic train: F -> 0 as w grows; slow rate fluctuations or bursts make
    F grow with w (Teich 1989; Churchland et al. 2010 for cortex). Cost O(S) per window: counts are
    run-lengths of ``neuron * n_bins + bin`` over the neuron-sorted spikes, never a dense N x n_bins matrix.

    Parameters
    ----------
    times_ms, ids : array, shape [S]
    n_neurons : int
    t_start_ms, t_stop_ms : float
        The span counted.
    windows_ms : sequence of float
    min_windows : int
        Windows with fewer complete bins than this give NaN for every neuron.

    Returns
    -------
    ndarray of float64, shape [len(windows_ms), N]; NaN where a neuron has no spike or too few windows.
    """
    t, i = sort_by_neuron(times_ms, ids)
    out = np.full((len(windows_ms), n_neurons), np.nan)
    for w_idx, w in enumerate(windows_ms):
        mom = _count_moments(t, i, n_neurons, t_start_ms, t_stop_ms, w, min_windows)
        if mom is None:
            continue
        mean, var, _ = mom
        with np.errstate(invalid="ignore", divide="ignore"):
            out[w_idx] = np.where(mean > 0, var / mean, np.nan)
    return out


def _count_moments(
    t: np.ndarray, i: np.ndarray, n_neurons: int, t_start_ms: float, t_stop_ms: float, w: float, min_windows: int
) -> Optional[Tuple[np.ndarray, np.ndarray, float]]:
    """Per-neuron mean and unbiased variance of counts in windows ``w``, and the variance of their sum.

    ``t, i`` must be neuron-sorted. Returns None with fewer than ``max(2, min_windows)`` complete windows.
    """
    nb = int(math.floor((float(t_stop_ms) - float(t_start_ms)) / w + 1e-9))
    if nb < max(2, min_windows):
        return None
    b = np.floor((t - t_start_ms) / w).astype(np.int64)
    ok = (b >= 0) & (b < nb)
    key = i[ok] * nb + b[ok]  # non-decreasing: neuron-sorted, time-sorted within neuron
    if key.size == 0:
        z = np.zeros(n_neurons)
        return z, z.copy(), 0.0
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    c = np.diff(np.append(starts, key.size)).astype(np.float64)
    who = key[starts] // nb
    s1 = np.bincount(who, c, minlength=n_neurons)
    s2 = np.bincount(who, c * c, minlength=n_neurons)
    mean = s1 / nb
    var = (s2 - nb * mean * mean) / (nb - 1)
    pop = np.bincount(b[ok], minlength=nb).astype(np.float64)
    return mean, var, float(pop.var(ddof=1))


def mean_count_correlation(
    times_ms: np.ndarray,
    ids: np.ndarray,
    n_neurons: int,
    t_start_ms: float,
    t_stop_ms: float,
    *,
    windows_ms: Sequence[float] = (10.0, 30.0, 100.0),
    min_windows: int = 10,
) -> np.ndarray:
    """Mean pairwise correlation of spike counts, from the population count (no N^2 pair loop).

    ``r = sum_{i != j} Cov(n_i, n_j) / sum_{i != j} sd_i sd_j
        = (Var(sum_i n_i) - sum_i Var n_i) / ((sum_i sd_i)^2 - sum_i Var n_i)``,
    the standard-deviation-weighted mean of the pairwise count correlations in windows ``w`` (exact identity;
    weighting by sd is our choice, it makes the estimate O(S) and lets silent neurons drop out). An
    asynchronous balanced network has r of order 0.01 (Renart et al., Science 327:587, 2010; Ecker et al.
    2010 measured 0.01 in cortex); synchronous or oscillating networks tens of percent. Unlike the
    population Fano factor it does not grow with N, so one threshold fits every chip size.

    Returns
    -------
    ndarray of float64, shape [len(windows_ms)]; NaN without enough windows or spikes.
    """
    t, i = sort_by_neuron(times_ms, ids)
    out = np.full(len(windows_ms), np.nan)
    for w_idx, w in enumerate(windows_ms):
        mom = _count_moments(t, i, n_neurons, t_start_ms, t_stop_ms, w, min_windows)
        if mom is None:
            continue
        _, var, var_pop = mom
        var = np.clip(var, 0.0, None)
        den = float(np.sqrt(var).sum() ** 2 - var.sum())
        if den > 0:
            out[w_idx] = (var_pop - float(var.sum())) / den
    return out


def classify_regime(
    cv: np.ndarray,
    *,
    cv_threshold: float = 0.5,
    fano: Optional[np.ndarray] = None,
    fano_threshold: Optional[float] = None,
) -> np.ndarray:
    """Label each neuron fluctuation-driven (1), mean-driven (0) or unclassified (-1).

    Rule (our choice; the regimes are those of the balanced-state theory, docs/diagnostics.md, and
    Shadlen and Newsome 1998, Renart et al. 2007): a neuron whose mean input sits below threshold fires only
    when fluctuations carry it over, so its ISIs are irregular (CV ~ 1); a neuron driven above threshold by its
    mean input fires like a relaxation oscillator, regularly (CV << 1). ``CV >= cv_threshold`` -> fluctuation-
    driven. With ``fano`` and ``fano_threshold`` a neuron is mean-driven only if its Fano factor is also below
    ``fano_threshold`` (both statistics agree it is regular). NaN CV (too few spikes) -> unclassified.

    Parameters
    ----------
    cv : array of float, shape [N]
    cv_threshold : float
        0.5 by default: halfway between a periodic (0) and a Poisson (1) train.
    fano : array of float, shape [N], optional
    fano_threshold : float, optional

    Returns
    -------
    ndarray of int8, shape [N]
    """
    cv = np.asarray(cv, dtype=np.float64)
    out = np.full(cv.shape, UNCLASSIFIED, dtype=np.int8)
    ok = np.isfinite(cv)
    out[ok] = np.where(cv[ok] >= cv_threshold, FLUCTUATION_DRIVEN, MEAN_DRIVEN)
    if fano is not None and fano_threshold is not None:
        f = np.asarray(fano, dtype=np.float64)
        irregular_count = np.isfinite(f) & (f >= fano_threshold)
        out[(out == MEAN_DRIVEN) & irregular_count] = FLUCTUATION_DRIVEN
    return out


def population_counts(
    rec: Recording, bin_steps: int = 1, mask: Optional[np.ndarray] = None
) -> np.ndarray:
    """Spike counts per bin of ``bin_steps`` steps over the complete span of a recording.

    Parameters
    ----------
    rec : Recording
    bin_steps : int
    mask : array of bool, shape [N], optional
        Count only these neurons.

    Returns
    -------
    ndarray of int64, shape [n_bins]: bins from ``rec.spikes_complete_from_step``, incomplete last bin dropped.
    """
    s0 = int(rec.spikes_complete_from_step)
    nb = (rec.t_stop_step - s0) // bin_steps
    steps = np.asarray(rec.spike_steps)
    if mask is not None:
        steps = steps[np.asarray(mask, dtype=bool)[np.asarray(rec.spike_ids)]]
    b = (steps - s0) // bin_steps
    b = b[(b >= 0) & (b < nb)]
    return np.bincount(b, minlength=nb).astype(np.int64)
