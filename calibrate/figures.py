"""One home for the figures every part of eical reports: balance index, Fano factors, E/I populations, rates.

Each quantity is defined once here, under a name that says which one it is; the controllers, the run loop, the true
figures, the diagnostics and the CLI all call these (docs/architecture.md, "figures").

- :func:`balance_index` and :func:`signed_balance`: docs/model.md section 1. The balance proxy reads the net current
  ``Ibal = Iexc + Iinh`` (``ge (EE - Vbal) + gi (EI - Vbal)`` for cond_lif, ``Iampa - Igaba`` for dpi); the index
  is ``|<Ibal>| / <Iexc>``. Callers that hold the two parts pass ``iexc + iinh`` as the net current.
- Two Fano factors with two meanings: :func:`counting_noise_fano` is one number, the Fano factor of spike counts
  across the sub-windows of one measurement (what sets the counting noise ``sqrt(F / (r T))`` of a measured rate);
  :func:`calibrate.diagnostics.spike_count_fano` is per neuron and per counting window, from spike times (the
  irregularity of a spike train, docs/diagnostics.md).
- :func:`exc_mask`: the excitatory neurons of a recurrent profile (the first ``recurrent.n_exc``), derived once from
  the profile.
- :class:`MeasuredFigures` / :func:`measured_figures`: rates and balance from measurements only (what a board can
  report), the ``before`` and ``after`` of a calibration summary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["balance_index", "signed_balance", "counting_noise_fano", "counting_floor", "exc_mask", "target_rates",
           "MeasuredFigures", "measured_figures", "window_summary"]


def signed_balance(ibal: np.ndarray, iexc: np.ndarray) -> np.ndarray:
    """``<Ibal> / <Iexc>`` per neuron (or group): > 0 excitation dominates, < 0 inhibition; NaN where ``iexc <= 0``
    (no excitatory drive: balance is undefined)."""
    net = np.asarray(ibal, dtype=np.float64)
    exc = np.asarray(iexc, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(exc > 0, net / exc, np.nan)


def balance_index(ibal: np.ndarray, iexc: np.ndarray) -> np.ndarray:
    """Balance index ``|<Ibal>| / <Iexc>`` (docs/model.md 1): 0 at perfect mean balance, 1 with no inhibition.

    ``ibal`` is the mean net current (the proxy, offset removed), ``iexc`` the mean excitatory part. NaN where
    ``iexc <= 0``."""
    net = np.asarray(ibal, dtype=np.float64)
    exc = np.asarray(iexc, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(exc > 0, np.abs(net) / exc, np.nan)


def counting_noise_fano(counts: np.ndarray, remove_common: bool = True) -> float:
    """Fano factor of the counting noise: median over neurons of var/mean of the spike counts across sub-windows.

    ``counts``: [sub-windows, neurons]. With ``remove_common`` the population's common fluctuation (shared inputs
    make every neuron fire more in the same window) is taken out first: it inflates each neuron's variance but does
    not spread neurons apart, so it is not part of the counting noise of a rate *spread*. NaN with fewer than two
    sub-windows or no spike."""
    m = counts.mean(axis=0)
    ok = m > 0
    if not ok.any() or counts.shape[0] < 2:
        return float("nan")
    c = counts[:, ok]
    if remove_common:
        total = c.sum(axis=1, keepdims=True)
        c = c - m[ok][None, :] * (total / total.mean())
    return float(np.median(c.var(axis=0, ddof=1) / m[ok]))


def counting_floor(rate_hz: float, model_s: float, fano: float = 1.0) -> float:
    """Relative standard error of a rate measured over ``model_s`` seconds at ``rate_hz``: ``sqrt(F / (r T))``, the
    best rate CV a calibration that spent that time can reach (docs/controller.md)."""
    return math.sqrt(fano / (rate_hz * model_s))


def exc_mask(profile: Any) -> Optional[np.ndarray]:
    """Excitatory chip neurons of a recurrent profile (the first ``recurrent.n_exc``); None for a feed-forward chip
    (its neurons are one population)."""
    rec = profile["recurrent"]
    if rec is None:
        return None
    return np.arange(profile.n_neurons) < int(rec["n_exc"])


def target_rates(profile: Any, rate_hz: Optional[float] = None) -> np.ndarray:
    """Target rate of every neuron (Hz): the profile's ``targets.rate_hz`` (or ``rate_hz``), and on a recurrent
    profile with ``targets.rate_inh_hz`` that rate for its inhibitory neurons."""
    t = profile["targets"]
    out = np.full(profile.n_neurons, float(rate_hz if rate_hz is not None else t["rate_hz"]))
    exc = exc_mask(profile)
    if exc is not None and t.get("rate_inh_hz") is not None:
        out[~exc] = t["rate_inh_hz"]
    return out


@dataclass
class MeasuredFigures:
    """Rate and balance figures of one measurement (a calibration's first or last loop iteration, or a verify
    window): what a board can report, no emulator truth.

    ``rates_hz`` (per neuron) and ``balance`` (per neuron, or per knob group for shared knobs; NaN where the proxy
    was not read) are the per-neuron figures behind the scalars; :meth:`to_dict` gives the scalars only (the
    summary's ``before`` and ``after``)."""

    window_s: float
    rate_mean_hz: Optional[float]
    rate_cv: Optional[float]
    counting_cv: Optional[float]
    group_rates_hz: Optional[list] = None
    balance_median: Optional[float] = None
    balance_p95: Optional[float] = None
    rates_hz: Optional[np.ndarray] = field(default=None, repr=False)
    balance: Optional[np.ndarray] = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out: dict = {"window_s": self.window_s, "rate_mean_hz": self.rate_mean_hz, "rate_cv": self.rate_cv,
                     "counting_cv": self.counting_cv}
        if self.group_rates_hz is not None:
            out["group_rates_hz"] = self.group_rates_hz
        if self.balance_median is not None:
            out["balance_median"] = self.balance_median
            out["balance_p95"] = self.balance_p95
        return out


def measured_figures(counts: np.ndarray, window_ms: float, live: np.ndarray, group_of: np.ndarray, n_groups: int,
                     proxy: Optional[np.ndarray] = None, exc: Optional[np.ndarray] = None) -> MeasuredFigures:
    """Figures of spike ``counts`` over ``window_ms`` (live neurons only) and, with the mean offset-free ``proxy``
    and its excitatory part ``exc`` (same shape: per neuron or per group), the balance index."""
    rates = counts / (window_ms * 1e-3)
    r = rates[live]
    out = MeasuredFigures(
        window_s=window_ms / 1e3, rate_mean_hz=float(r.mean()) if r.size else None,
        rate_cv=float(r.std() / r.mean()) if r.size and r.mean() > 0 else None,
        # the part of that spread that counting noise alone explains (Poisson): sqrt(1/(rate*T))
        counting_cv=float(1.0 / math.sqrt(max(r.mean(), 1e-9) * window_ms * 1e-3)) if r.size else None,
        rates_hz=rates)
    if n_groups < live.size:
        c = np.bincount(group_of, weights=counts * live, minlength=n_groups)
        n = np.bincount(group_of, weights=live.astype(float), minlength=n_groups)
        gr = c[n > 0] / n[n > 0] / (window_ms * 1e-3)
        out.group_rates_hz = [float(x) for x in gr]
    if proxy is not None and exc is not None:
        bi = balance_index(proxy, exc)
        out.balance = bi
        bi = bi[np.isfinite(bi)]
        if bi.size:
            out.balance_median = float(np.median(bi))
            out.balance_p95 = float(np.quantile(bi, 0.95))
    return out


def window_summary(rates_hz: np.ndarray, iexc: np.ndarray, ibal: np.ndarray, dead: np.ndarray) -> dict:
    """Summary figures of one window of an emulated chip's true statistics (``eical simulate``): live, dead and
    silent neurons, the mean rate and its CV across live neurons, and the balance index median and p95."""
    live = ~np.asarray(dead, dtype=bool)
    r = np.asarray(rates_hz, dtype=float)[live]
    bi = balance_index(ibal, iexc)[live]
    bi = bi[np.isfinite(bi)]
    mean = float(r.mean()) if r.size else float("nan")
    return {
        "live": int(live.sum()),
        "dead": int((~live).sum()),
        "silent": int((r == 0).sum()),
        "rate_mean_hz": mean,
        "rate_cv": float(r.std() / mean) if r.size and mean > 0 else float("nan"),
        "balance_index_median": float(np.median(bi)) if bi.size else float("nan"),
        "balance_index_p95": float(np.percentile(bi, 95)) if bi.size else float("nan"),
    }
