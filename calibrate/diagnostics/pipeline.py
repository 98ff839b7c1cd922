""":func:`diagnose`: every diagnostic of one recording, one family at a time, then the flags of the rule set.

The families (each its own module): per-neuron balance (:mod:`.balance`), irregularity (:mod:`.spikes`), E/I
co-fluctuation over scales (:mod:`.cofluctuation`), branching ratio and dominant mode (:mod:`.branching`,
:mod:`.mode`), spectrum and synchrony (:mod:`.spectrum`); the rules are in :mod:`.flags`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hw_models.recording import Recording

from .balance import Theory, balance_index_of_parts, conductance_ratio, signed_balance
from .branching import BranchingFit, branching_ratio_mr
from .cofluctuation import CoFluctuation, ei_cofluctuation
from .flags import Evidence, FlagThresholds, healthy, judge
from .mode import recording_mode
from .result import Diagnostics, nanmedian
from .spectrum import population_spectrum, synchrony_chi
from .spikes import (FLUCTUATION_DRIVEN, MEAN_DRIVEN, UNCLASSIFIED, classify_regime, isi_cv, isi_cv2,
                     mean_count_correlation, population_counts, sort_by_neuron, spike_count_fano)

__all__ = ["DiagnoseSettings", "diagnose"]


@dataclass(frozen=True)
class DiagnoseSettings:
    """How :func:`diagnose` cuts a recording.

    n_scales: scales of the E/I co-fluctuation (32, Dehghani et al. 2016).
    base_bin_ms: resolution of the population-rate series for the co-fluctuation (finest scale and lag resolution).
    max_lag_ms: lag search range of the E/I cross-correlation.
    mr_bin_ms: bin of the population activity for the MR estimator (4 ms: our default; m depends on the bin).
    mr_k_max_ms: largest lag of the MR fit (ms). mr_fit: ``"exp"`` or ``"exp_offset"`` (:func:`branching_ratio_mr`).
    n_boot: bootstrap replicates of the MR confidence interval. seed: seed of the bootstrap.
    fano_windows_ms: counting windows of the spike-count Fano factor.
    min_isis: neurons with fewer ISIs are not classified.
    spectrum_bin_ms: bin of the population rate for the spectrum (Nyquist = 500/bin Hz).
    mode_bin_ms, mode_k_max_ms: bin and largest lag of the dominant-mode fit (1 ms, 100 ms: a few gamma periods).
    """

    n_scales: int = 32
    base_bin_ms: float = 1.0
    max_lag_ms: float = 50.0
    mr_bin_ms: float = 4.0
    mr_k_max_ms: float = 1000.0
    mr_fit: str = "exp"
    n_boot: int = 100
    fano_windows_ms: Sequence[float] = (10.0, 30.0, 100.0, 300.0, 1000.0)
    min_isis: int = 10
    spectrum_bin_ms: float = 1.0
    seed: int = 0
    mode_bin_ms: float = 1.0
    mode_k_max_ms: float = 100.0


def diagnose(rec: Recording, *, theory: Optional[Theory] = None, thresholds: Optional[FlagThresholds] = None,
             label: str = "", settings: Optional[DiagnoseSettings] = None, **overrides: Any) -> Diagnostics:
    """All diagnostics of one recording, and the flags of the rule set ``thresholds``.

    ``theory``: the balanced conductance ratio for cond_lif (default from ``rec.meta``, ``Theory.from_meta``);
    ``settings`` (or keyword overrides of :class:`DiagnoseSettings`, e.g. ``n_boot=20``): how the recording is cut;
    ``label``: free text kept in the result (e.g. "before", "after").

    Flags (each documented in :class:`FlagThresholds` and docs/diagnostics.md): ``silent``, ``imbalanced``,
    ``ei_decorrelated``, ``ei_current_imbalance``, ``near_critical``, ``supercritical``, ``mean_driven``,
    ``gamma_oscillation``, ``synchronous``. ``healthy`` is True when no flag other than the advisory ones is raised.
    ``notes`` carry what could not be judged (no samples, one population, fit not meaningful, ...).
    """
    th = thresholds or FlagThresholds()
    s = settings if settings is not None else DiagnoseSettings(**overrides)
    theory = theory if theory is not None else Theory.from_meta(rec.meta)
    notes: List[str] = []
    rate = rec.rates_hz()
    n = rec.n_neurons
    bal = _balance(rec, theory, notes)
    irr = _irregularity(rec, s, th)
    co_rates, co_cur = _cofluctuation(rec, s, notes, bal["have_samples"])
    branching = _branching(rec, s, notes)
    k_sp = max(1, int(round(s.spectrum_bin_ms / rec.dt_ms)))
    pop_rate = population_counts(rec, k_sp).astype(np.float64) / (max(n, 1) * k_sp * rec.dt_ms * 1e-3)
    spectrum = population_spectrum(pop_rate, k_sp * rec.dt_ms, n_cells=n) if pop_rate.size >= 64 else None
    chi = float("nan")
    if rec.traces.shape[0] >= 3 and rec.traces.shape[2] >= 2:
        chi = synchrony_chi(np.asarray(rec.traces[:, 2, :]))
    active = rate > 0
    bi, sb = bal["balance_index"], bal["signed_balance"]
    ev = Evidence(mean_rate_hz=float(rate.mean()) if n else float("nan"), rate_hz=rate, balance_index=bi,
                  balance_index_median=nanmedian(bi[active]) if active.any() else nanmedian(bi),
                  cofluct_rates=co_rates, cofluct_currents=co_cur, branching=branching,
                  mean_driven_fraction=irr["mean_driven_fraction"], spectrum=spectrum, synchrony_chi=chi,
                  count_corr_windows_ms=irr["count_corr_windows_ms"], count_corr=irr["count_corr"])
    flags, rule_notes = judge(ev, th)
    n_exc = int(rec.exc_mask().sum())
    return Diagnostics(
        n_neurons=n, n_exc=n_exc, n_inh=n - n_exc, duration_ms=rec.duration_ms, dt_ms=rec.dt_ms,
        n_spikes=int(np.asarray(rec.spike_counts).sum()), rate_hz=rate, mean_rate_hz=ev.mean_rate_hz,
        balance_index=bi, signed_balance=sb, balance_index_median=ev.balance_index_median,
        signed_balance_median=nanmedian(sb[active]) if active.any() else nanmedian(sb),
        conductance_ratio=bal["conductance_ratio"], conductance_ratio_median=nanmedian(bal["conductance_ratio"]),
        conductance_ratio_theory=bal["conductance_ratio_theory"], cofluct_rates=co_rates, cofluct_currents=co_cur,
        branching=branching, spectrum=spectrum, synchrony_chi=chi, flags=flags, notes=notes + rule_notes,
        healthy=healthy(flags, th), thresholds=th, label=label,
        mode=recording_mode(rec, bin_ms=s.mode_bin_ms, k_max_ms=s.mode_k_max_ms), **irr)


def _balance(rec: Recording, theory: Optional[Theory], notes: List[str]) -> Dict[str, Any]:
    """Per-neuron balance from the sample means, and the conductance ratio against theory (cond_lif)."""
    n = rec.n_neurons
    nm = rec.neuron_means
    have_samples = rec.n_samples > 0 and "iexc" in nm
    if have_samples:
        bi = balance_index_of_parts(nm["iexc"], nm["iinh"])
        sb = signed_balance(nm["iexc"], nm["iinh"])
    else:
        bi = sb = np.full(n, np.nan)
        notes.append("no samples: balance index and current co-fluctuation not measured")
    cr = np.full(n, np.nan)
    cr_theory = theory.conductance_ratio if theory is not None else None
    if have_samples and cr_theory is not None and theory is not None and theory.vbal_mv is not None:
        cr, cr_theory = conductance_ratio(nm["ge"], nm["gi"], vbal_mv=theory.vbal_mv, ee_mv=theory.ee_mv,
                                          ei_mv=theory.ei_mv)
    return {"have_samples": have_samples, "balance_index": bi, "signed_balance": sb, "conductance_ratio": cr,
            "conductance_ratio_theory": cr_theory}


def _irregularity(rec: Recording, s: DiagnoseSettings, th: FlagThresholds) -> Dict[str, Any]:
    """ISI CV and CV2, Fano factors, count correlations and regimes over the complete span of spikes: the fields of
    :class:`Diagnostics` by name."""
    n, dt = rec.n_neurons, rec.dt_ms
    t0_ms, t1_ms = rec.spikes_complete_from_step * dt, rec.t_stop_step * dt
    times, ids = sort_by_neuron(rec.spike_times_ms(), np.asarray(rec.spike_ids))
    cv = isi_cv(times, ids, n, min_isis=s.min_isis)
    cv2 = isi_cv2(times, ids, n, min_isis=s.min_isis)
    ff = spike_count_fano(times, ids, n, t0_ms, t1_ms, windows_ms=s.fano_windows_ms)
    rsc_windows = np.unique(np.array([10.0, 30.0, 100.0, th.rsc_window_ms]))
    rsc = mean_count_correlation(times, ids, n, t0_ms, t1_ms, windows_ms=rsc_windows)
    regime = classify_regime(cv, cv_threshold=th.cv_threshold)
    n_cls = int(np.sum(regime != UNCLASSIFIED))
    return {"cv": cv, "cv2": cv2, "fano_windows_ms": np.asarray(s.fano_windows_ms, dtype=np.float64), "fano": ff,
            "regime": regime, "cv_median": nanmedian(cv), "fano_median": np.array([nanmedian(row) for row in ff]),
            "fluctuation_driven_fraction": float(np.sum(regime == FLUCTUATION_DRIVEN) / n_cls) if n_cls
            else float("nan"),
            "mean_driven_fraction": float(np.sum(regime == MEAN_DRIVEN) / n_cls) if n_cls else float("nan"),
            "count_corr_windows_ms": rsc_windows, "count_corr": rsc}


def _cofluctuation(rec: Recording, s: DiagnoseSettings, notes: List[str],
                   have_samples: bool) -> Tuple[Optional[CoFluctuation], Optional[CoFluctuation]]:
    """E/I co-fluctuation of the population rates (two populations) and of the input currents (samples)."""
    dt, n = rec.dt_ms, rec.n_neurons
    exc = rec.exc_mask()
    n_exc = int(exc.sum())
    n_inh = n - n_exc
    k_base = max(1, int(round(s.base_bin_ms / dt)))
    co_rates = None
    if n_exc > 0 and n_inh > 0:
        ce = population_counts(rec, k_base, exc).astype(np.float64) / (n_exc * k_base * dt * 1e-3)
        ci = population_counts(rec, k_base, ~exc).astype(np.float64) / (n_inh * k_base * dt * 1e-3)
        if ce.size >= 40:
            co_rates = ei_cofluctuation(ce, ci, k_base * dt, n_scales=s.n_scales, max_lag_ms=s.max_lag_ms,
                                        n_cells_e=n_exc, n_cells_i=n_inh)
        else:
            notes.append("recording too short for the E/I co-fluctuation of rates")
    else:
        notes.append("one population (no is_exc, or no E or no I neuron): E/I rate co-fluctuation not measured")
    co_cur = None
    if have_samples and rec.pop_series.shape[0] >= 40:
        e_cur = rec.series("iexc", "all").astype(np.float64)
        i_cur = -rec.series("iinh", "all").astype(np.float64)
        co_cur = ei_cofluctuation(e_cur, i_cur, rec.sample_dt_ms, n_scales=s.n_scales, max_lag_ms=s.max_lag_ms,
                                  signal="currents")
    return co_rates, co_cur


def _branching(rec: Recording, s: DiagnoseSettings, notes: List[str]) -> Optional[BranchingFit]:
    dt = rec.dt_ms
    k_mr = max(1, int(round(s.mr_bin_ms / dt)))
    act = population_counts(rec, k_mr).astype(np.float64)
    if not (act.size >= 50 and act.sum() > 0):
        notes.append("too little activity for the branching ratio")
        return None
    return branching_ratio_mr(act, k_mr * dt, k_max=max(2, min(int(round(s.mr_k_max_ms / (k_mr * dt))),
                                                                 act.size // 10)),
                              fit=s.mr_fit, n_boot=s.n_boot, seed=s.seed)
