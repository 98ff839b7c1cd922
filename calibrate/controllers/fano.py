"""The Fano factor of what loop 2 estimates: one running estimate, fed by one sample per loop window.

The counting noise of a measured rate is ``sqrt(F / (r T))``; loop 2 sizes its windows and weighs its windows by
it. Which counts' Fano factor matters depends on what the rate loop estimates (docs/controller.md, "Fano factor"):

- per-neuron knobs: each neuron's count, the population's common fluctuation removed (:func:`neuron_sample`);
- shared knobs: each group's summed count, common fluctuation included (:func:`group_sample`);
- population mode (recurrent chips): each population's summed count (:func:`population_sample`).

A loop strategy picks one of the three; :class:`FanoEstimate` averages its samples, weighted by window length.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["FanoEstimate", "neuron_sample", "group_sample", "population_sample"]


class FanoEstimate:
    """Running window-length-weighted mean of Fano samples, clipped to ``[lo, hi]`` after each update."""

    def __init__(self, initial: float = 1.0, lo: float = 0.2, hi: float = 5.0):
        self.value = float(initial)
        self.weight_ms = 0.0
        self.lo, self.hi = lo, hi

    def add(self, sample: Optional[float], window_ms: float) -> None:
        """Fold in one window's sample (None: the window could not estimate it)."""
        if sample is None:
            return
        self.value = float(np.clip((self.value * self.weight_ms + sample * window_ms) / (self.weight_ms + window_ms),
                                   self.lo, self.hi))
        self.weight_ms += window_ms


def neuron_sample(sub_counts: Sequence[np.ndarray], live: np.ndarray) -> Optional[float]:
    """Fano factor of each live neuron's count across the sub-windows of one window, the population's common
    fluctuation removed (shared inputs make every neuron fire more in the same window; that does not spread
    neurons apart); the mean over neurons with at least half a spike per sub-window."""
    if len(sub_counts) < 2:
        return None
    c = np.array(sub_counts, dtype=float)[:, live]
    m = c.mean(axis=0)
    ok = m > 0.5
    if ok.sum() < 3:
        return None
    c = c[:, ok]
    tot = c.sum(axis=1, keepdims=True)
    r = c - m[ok][None, :] * (tot / max(tot.mean(), 1e-9))
    # the mean, not the median: with a few sub-windows each neuron's variance has few degrees of freedom, and the
    # median of a chi-square with 3 of them is 0.79 of its mean (F came out 1.06 against 1.3)
    f = float(np.mean(r.var(axis=0, ddof=1) / m[ok]))
    return f if np.isfinite(f) else None


def group_sample(sub_counts: Sequence[np.ndarray], group_of: np.ndarray, n_groups: int,
                 live: np.ndarray) -> Optional[float]:
    """Fano factor of each group's *summed* count (common fluctuation included: it is exactly what moves a core's
    mean rate), with sub-windows merged into at most 8 bins so slow input fluctuations are seen; the median over
    groups."""
    if len(sub_counts) < 2:
        return None
    c = np.array(sub_counts, dtype=float)
    g = np.stack([np.bincount(group_of, weights=row * live, minlength=n_groups) for row in c])
    k = min(8, g.shape[0])
    bins = np.array_split(np.arange(g.shape[0]), k)
    g = np.stack([g[b].sum(axis=0) for b in bins])
    lens = np.array([len(b) for b in bins], dtype=float)[:, None]
    g = g / lens  # equal-length bins up to one sub-window; per-sub-window mean count
    m = g.mean(axis=0)
    ok = m > 0
    if k < 2 or not ok.any():
        return None
    # var of a bin's mean over lens sub-windows, scaled back to the Fano of a bin's total count
    f = float(np.median(g[:, ok].var(axis=0, ddof=1) * lens.mean() / m[ok]))
    return f if np.isfinite(f) else None


def population_sample(sub_counts: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Optional[float]:
    """Fano factor of each population's summed count across sub-windows (common fluctuation included: it moves a
    population's mean), the median over the populations that fired."""
    if len(sub_counts) < 2:
        return None
    sc = np.array(sub_counts, dtype=float)
    f = []
    for mask in masks:
        tot = sc[:, mask].sum(axis=1)
        if tot.mean() > 0:
            f.append(tot.var(ddof=1) / tot.mean())
    return float(np.median(f)) if f else None
