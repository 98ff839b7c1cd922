"""The scalar figures of one diagnosis (:class:`Headline`): the report's table rows, the JSON summary, the printout.

``to_dict()`` flattens it to the keys ``diagnostics.json`` carries under ``headline`` (a family that was not measured
leaves its keys out; a figure that was measured but is undefined is None).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from hw_models.recording import Recording

from .result import Diagnostics

__all__ = ["Headline", "EIRates", "EICurrents", "Branching", "Gamma", "Mode", "headline"]


def _f(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class EIRates:
    """E/I population-rate co-fluctuation (two populations only)."""

    ei_rate_rho_median: Optional[float]
    ei_rate_rho_10ms: Optional[float]
    ei_rate_rho_signal_median: Optional[float]
    ei_rate_shared_scales: int
    ei_rate_peak_lag_ms: Optional[float]
    ei_rate_fano_e_median: Optional[float]
    ei_rate_fano_i_median: Optional[float]


@dataclass
class EICurrents:
    """E/I input-current co-fluctuation (recordings with samples)."""

    ei_current_rho_median: Optional[float]
    ei_current_imbalance_median: Optional[float]
    ei_current_deviation_median: Optional[float]
    ei_current_ratio_median: Optional[float]
    ei_current_peak_lag_ms: Optional[float]


@dataclass
class Branching:
    branching_m: Optional[float]
    branching_ci_low: Optional[float]
    branching_ci_high: Optional[float]
    branching_tau_ms: Optional[float]
    branching_r1: Optional[float]
    branching_r2: Optional[float]
    branching_fit_ok: bool
    branching_bin_ms: Optional[float]


@dataclass
class Gamma:
    gamma_peak_hz: Optional[float]
    gamma_peak_ratio: Optional[float]
    gamma_modulation: Optional[float]


@dataclass
class Mode:
    mode_modulus: Optional[float]
    mode_tau_ms: Optional[float]
    mode_freq_hz: Optional[float]
    mode_r2: Optional[float]
    mode_fit_ok: bool
    mode_bin_ms: Optional[float]


@dataclass
class Headline:
    """Rates (all, E, I), balance, irregularity (Fano and count correlation per window), synchrony, and the
    families that were measured (E/I rates, E/I currents, branching, gamma, dominant mode), with the verdict."""

    n_neurons: int
    n_exc: int
    n_inh: int
    duration_s: float
    n_spikes: int
    rate_mean_hz: Optional[float]
    rate_exc_hz: Optional[float]
    rate_inh_hz: Optional[float]
    balance_index_median: Optional[float]
    balance_index_p90: Optional[float]
    signed_balance_median: Optional[float]
    conductance_ratio_median: Optional[float]
    conductance_ratio_theory: Optional[float]
    cv_median: Optional[float]
    cv2_median: Optional[float]
    fluctuation_driven_fraction: Optional[float]
    mean_driven_fraction: Optional[float]
    fano_by_window_ms: Dict[float, Optional[float]]
    count_corr_by_window_ms: Dict[float, Optional[float]]
    synchrony_chi: Optional[float]
    ei_rates: Optional[EIRates]
    ei_currents: Optional[EICurrents]
    branching: Optional[Branching]
    gamma: Optional[Gamma]
    mode: Optional[Mode]
    flags: List[str] = field(default_factory=list)
    healthy: bool = True

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {k: getattr(self, k) for k in (
            "n_neurons", "n_exc", "n_inh", "duration_s", "n_spikes", "rate_mean_hz", "rate_exc_hz", "rate_inh_hz",
            "balance_index_median", "balance_index_p90", "signed_balance_median", "conductance_ratio_median",
            "conductance_ratio_theory", "cv_median", "cv2_median", "fluctuation_driven_fraction",
            "mean_driven_fraction")}
        d.update({f"fano_{w:g}ms": v for w, v in self.fano_by_window_ms.items()})
        d.update({f"count_corr_{w:g}ms": v for w, v in self.count_corr_by_window_ms.items()})
        d["synchrony_chi"] = self.synchrony_chi
        for part in (self.ei_rates, self.ei_currents, self.branching, self.gamma, self.mode):
            if part is not None:
                d.update(asdict(part))
        d["flags"] = list(self.flags)
        d["healthy"] = bool(self.healthy)
        return d


def headline(d: Diagnostics, rec: Optional[Recording] = None) -> Headline:
    """The headline of diagnosis ``d``; ``rec`` (its recording) gives the E and I rates."""
    rate_exc = rate_inh = None
    if rec is not None and rec.is_exc is not None and 0 < d.n_exc < d.n_neurons:
        exc = rec.exc_mask()
        rate_exc, rate_inh = _f(d.rate_hz[exc].mean()), _f(d.rate_hz[~exc].mean())
    bi = d.balance_index[np.isfinite(d.balance_index)]
    return Headline(
        n_neurons=d.n_neurons, n_exc=d.n_exc, n_inh=d.n_inh, duration_s=d.duration_ms / 1e3, n_spikes=d.n_spikes,
        rate_mean_hz=_f(d.mean_rate_hz), rate_exc_hz=rate_exc, rate_inh_hz=rate_inh,
        balance_index_median=_f(d.balance_index_median),
        balance_index_p90=_f(np.quantile(bi, 0.9)) if bi.size else None,
        signed_balance_median=_f(d.signed_balance_median),
        conductance_ratio_median=_f(d.conductance_ratio_median),
        conductance_ratio_theory=_f(d.conductance_ratio_theory), cv_median=_f(d.cv_median),
        cv2_median=_f(np.nanmedian(d.cv2)) if np.isfinite(d.cv2).any() else None,
        fluctuation_driven_fraction=_f(d.fluctuation_driven_fraction), mean_driven_fraction=_f(d.mean_driven_fraction),
        fano_by_window_ms={float(w): _f(v) for w, v in zip(d.fano_windows_ms, d.fano_median)},
        count_corr_by_window_ms={float(w): _f(v) for w, v in zip(d.count_corr_windows_ms, d.count_corr)},
        synchrony_chi=_f(d.synchrony_chi), ei_rates=_ei_rates(d), ei_currents=_ei_currents(d),
        branching=_branching(d), gamma=_gamma(d), mode=_mode(d), flags=list(d.flags), healthy=bool(d.healthy))


def _ei_rates(d: Diagnostics) -> Optional[EIRates]:
    cr = d.cofluct_rates
    if cr is None:
        return None
    shared = d.thresholds.shared_scales(cr)
    rs = cr.rho_signal[shared]
    return EIRates(
        ei_rate_rho_median=_f(cr.median_over("rho")), ei_rate_rho_10ms=_f(cr.median_over("rho", 10.0)),
        ei_rate_rho_signal_median=_f(np.median(np.where(np.isfinite(rs), rs, 0.0))) if rs.size else None,
        ei_rate_shared_scales=int(shared.sum()), ei_rate_peak_lag_ms=_f(cr.median_over("peak_lag_ms")),
        ei_rate_fano_e_median=_f(cr.median_over("fano_e", 10.0)),
        ei_rate_fano_i_median=_f(cr.median_over("fano_i", 10.0)))


def _ei_currents(d: Diagnostics) -> Optional[EICurrents]:
    cc = d.cofluct_currents
    if cc is None:
        return None
    return EICurrents(
        ei_current_rho_median=_f(cc.median_over("rho")), ei_current_imbalance_median=_f(cc.median_over("imbalance")),
        ei_current_deviation_median=_f(cc.median_over("deviation")),
        ei_current_ratio_median=_f(cc.median_over("ratio")), ei_current_peak_lag_ms=_f(cc.median_over("peak_lag_ms")))


def _branching(d: Diagnostics) -> Optional[Branching]:
    b = d.branching
    if b is None:
        return None
    return Branching(branching_m=_f(b.m), branching_ci_low=_f(b.ci_low), branching_ci_high=_f(b.ci_high),
                     branching_tau_ms=_f(b.tau_ms), branching_r1=_f(b.m_naive), branching_r2=_f(b.r2),
                     branching_fit_ok=bool(b.fit_ok), branching_bin_ms=_f(b.bin_ms))


def _gamma(d: Diagnostics) -> Optional[Gamma]:
    s = d.spectrum
    if s is None:
        return None
    return Gamma(gamma_peak_hz=_f(s.gamma_peak_hz), gamma_peak_ratio=_f(s.gamma_peak_ratio),
                 gamma_modulation=_f(s.gamma_modulation))


def _mode(d: Diagnostics) -> Optional[Mode]:
    m = d.mode
    if m is None:
        return None
    return Mode(mode_modulus=_f(m.modulus), mode_tau_ms=_f(m.tau_ms), mode_freq_hz=_f(m.freq_hz), mode_r2=_f(m.r2),
                mode_fit_ok=bool(m.fit_ok), mode_bin_ms=_f(m.bin_ms))
