"""The rule set of :func:`calibrate.diagnostics.diagnose`, in one place: the thresholds, the rules that raise each
flag, and what each flag means. docs/diagnostics.md gives the reasons for every threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # annotations only: the rule set itself needs no fitting code
    from .branching import BranchingFit
    from .cofluctuation import CoFluctuation
    from .spectrum import Spectrum

__all__ = ["FlagThresholds", "FLAG_MEANING", "Evidence", "judge", "healthy"]


@dataclass(frozen=True)
class FlagThresholds:
    """The rule set of :func:`diagnose`. Each flag names what it catches; docs/diagnostics.md says why.

    Attributes
    ----------
    balance_index_max : float
        ``imbalanced`` when the median per-neuron balance index ``|<Ibal>|/<Iexc>`` exceeds it. A calibrated
        chip sits near 0; inhibition cut to a third of balance gives 2/3; 0.2 is a fifth of the excitatory drive
        left uncancelled (our choice).
    balance_fraction_max : float
        ``imbalanced`` also when more than this fraction of active neurons exceed ``balance_index_neuron``.
    balance_index_neuron : float
        Per-neuron balance index counted by ``balance_fraction_max``.
    rho_min : float
        ``ei_decorrelated`` when the E and I population rates fluctuate beyond counting noise but not together:
        over the scales at or above ``rho_scale_min_ms`` whose population Fano factors (E and I) are both at
        least ``fano_shared_min``, the median noise-corrected correlation ``rho_signal`` is below ``rho_min``
        (at least ``rho_min_scales`` such scales needed). Dehghani et al. 2016: E and I ensembles co-fluctuate
        at zero lag in all normal states; the E-I temporal correlation is disrupted in seizures.
    rho_scale_min_ms : float
        Finest scale counted by ``rho_min``.
    fano_shared_min : float
        Population Fano factor from which the E and I rates are judged to carry shared fluctuations (2: the
        shared variance at least equals the counting noise). Below it the state is asynchronous and the
        co-fluctuation is not judged (a note says so).
    rho_min_scales : int
        Scales needed for a verdict on ``rho_min``.
    current_imbalance_max : float
        ``ei_current_imbalance`` when the median over scales of the relative rms distance of the population
        excitatory and inhibitory input currents from the balance line, ``rms(E_s - I_s)/mean((E_s + I_s)/2)``
        with ``E = <iexc>`` and ``I = -<iinh>``, exceeds it.
    m_near_critical : float
        ``near_critical`` when the MR branching ratio ``m`` (at ``mr_bin_ms``) is at or above it.
    m_supercritical : float
        ``supercritical`` when the lower end of the confidence interval of ``m`` is at or above it.
    m_min_r1 : float
        The MR fit is trusted only when the lag-1 regression ``r_1`` is at least this (else m is noise).
    cv_threshold : float
        ISI CV at or above which a neuron counts as fluctuation-driven (:func:`classify_regime`).
    mean_driven_fraction_max : float
        ``mean_driven`` when more than this fraction of classified neurons are mean-driven.
    gamma_modulation_max : float
        ``gamma_oscillation`` when the population rate is modulated in the gamma band (30-80 Hz) by more than
        this fraction of its mean (``Spectrum.gamma_modulation``): PING-like synchrony.
    chi_max : float
        ``synchronous`` when the synchrony measure chi of the sampled membrane potentials exceeds it (about
        1/sqrt(M) for M asynchronous neurons: 0.125 for the 64 default trace neurons; 1 for full synchrony).
        0.5 means a quarter of the potential variance is common to all neurons; shared Poisson inputs alone
        (12.5 % of the sources shared, as in the bss2, devboard and dynapse2 profiles) gave 0.28 on a
        calibrated bss2 chip.
    rsc_max : float
        ``synchronous`` also when the mean pairwise spike-count correlation (:func:`mean_count_correlation`)
        in windows of ``rsc_window_ms`` exceeds it. Asynchronous balanced networks: ~0.01 (Renart et al.
        2010); 0.1 is ten times that.
    rsc_window_ms : float
        Window of that correlation (30 ms, our choice: a few synaptic and membrane time constants).
    min_rate_hz : float
        ``silent`` when the mean rate is below it (most other figures are then meaningless).
    advisory : tuple of str
        Flags that are reported but do not make a chip unhealthy. Default ``("gamma_oscillation",)``: a gamma
        rhythm is physiological (PING, docs/diagnostics.md) and not by itself a failure of balance.
    """

    balance_index_max: float = 0.2
    balance_fraction_max: float = 0.5
    balance_index_neuron: float = 0.3
    rho_min: float = 0.5
    rho_scale_min_ms: float = 10.0
    fano_shared_min: float = 2.0
    rho_min_scales: int = 3
    current_imbalance_max: float = 0.35
    m_near_critical: float = 0.99
    m_supercritical: float = 1.0
    m_min_r1: float = 0.05
    cv_threshold: float = 0.5
    mean_driven_fraction_max: float = 0.5
    gamma_modulation_max: float = 0.3
    chi_max: float = 0.5
    rsc_max: float = 0.1
    rsc_window_ms: float = 30.0
    min_rate_hz: float = 0.1
    advisory: Tuple[str, ...] = ("gamma_oscillation",)

    def shared_scales(self, co: CoFluctuation) -> np.ndarray:
        """Scales at or above ``rho_scale_min_ms`` where both population Fano factors show shared fluctuations
        (the scales ``ei_decorrelated`` is judged on)."""
        return ((co.bin_ms >= self.rho_scale_min_ms - 1e-9) & (co.fano_e >= self.fano_shared_min)
                & (co.fano_i >= self.fano_shared_min))


#: What each flag means, in one line (reports and docs/diagnostics.md).
FLAG_MEANING = {
    "silent": "the chip barely fires; the other figures are not meaningful",
    "imbalanced": "excitation is not cancelled by inhibition in most neurons (balance index)",
    "ei_current_imbalance": "the population E and I input currents leave the balance line at every scale",
    "ei_decorrelated": "E and I populations fluctuate beyond counting noise but not together (seizure signature)",
    "near_critical": "the branching ratio approaches 1: reverberating, near-runaway activity",
    "supercritical": "the branching ratio is above 1: runaway activity",
    "mean_driven": "most neurons fire regularly (CV < threshold): the fluctuation-driven balanced state is lost",
    "synchronous": "neurons fire together (count correlation or chi above threshold)",
    "gamma_oscillation": "a gamma rhythm (PING) modulates the population rate (advisory)",
}


@dataclass
class Evidence:
    """The figures the rule set judges (all computed by :func:`calibrate.diagnostics.diagnose`)."""

    mean_rate_hz: float
    rate_hz: np.ndarray
    balance_index: np.ndarray
    balance_index_median: float
    cofluct_rates: Optional[CoFluctuation]
    cofluct_currents: Optional[CoFluctuation]
    branching: Optional[BranchingFit]
    mean_driven_fraction: float
    spectrum: Optional[Spectrum]
    synchrony_chi: float
    count_corr_windows_ms: np.ndarray
    count_corr: np.ndarray


def judge(ev: Evidence, th: FlagThresholds) -> Tuple[List[str], List[str]]:
    """The flags the rule set raises on ``ev``, and notes on what could not be judged (in that order)."""
    flags: List[str] = []
    notes: List[str] = []
    if not (ev.mean_rate_hz >= th.min_rate_hz):
        flags.append("silent")
    _balance_rules(ev, th, flags)
    _cofluctuation_rules(ev, th, flags, notes)
    _branching_rules(ev, th, flags, notes)
    if np.isfinite(ev.mean_driven_fraction) and ev.mean_driven_fraction > th.mean_driven_fraction_max:
        flags.append("mean_driven")
    sp = ev.spectrum
    if sp is not None and np.isfinite(sp.gamma_modulation) and sp.gamma_modulation > th.gamma_modulation_max:
        flags.append("gamma_oscillation")
    rsc_at = float(ev.count_corr[int(np.argmin(np.abs(ev.count_corr_windows_ms - th.rsc_window_ms)))])
    chi = ev.synchrony_chi
    if (np.isfinite(chi) and chi > th.chi_max) or (np.isfinite(rsc_at) and rsc_at > th.rsc_max):
        flags.append("synchronous")
    return flags, notes


def healthy(flags: List[str], th: FlagThresholds) -> bool:
    """No flag raised but advisory ones."""
    return not [f for f in flags if f not in th.advisory]


def _balance_rules(ev: Evidence, th: FlagThresholds, flags: List[str]) -> None:
    bi, active = ev.balance_index, ev.rate_hz > 0
    if np.isfinite(ev.balance_index_median):
        frac_hi = float(np.mean(bi[active & np.isfinite(bi)] > th.balance_index_neuron)) if active.any() else 0.0
        if ev.balance_index_median > th.balance_index_max or frac_hi > th.balance_fraction_max:
            flags.append("imbalanced")


def _cofluctuation_rules(ev: Evidence, th: FlagThresholds, flags: List[str], notes: List[str]) -> None:
    if ev.cofluct_rates is not None:
        sel = th.shared_scales(ev.cofluct_rates)
        if int(sel.sum()) >= th.rho_min_scales:
            rs = ev.cofluct_rates.rho_signal[sel]
            rs = np.where(np.isfinite(rs), rs, 0.0)
            if float(np.median(rs)) < th.rho_min:
                flags.append("ei_decorrelated")
        else:
            notes.append(
                "E and I rates fluctuate at the counting-noise level (asynchronous): co-fluctuation not judged"
            )
    if ev.cofluct_currents is not None:
        imb_med = ev.cofluct_currents.median_over("imbalance")
        if np.isfinite(imb_med) and imb_med > th.current_imbalance_max:
            flags.append("ei_current_imbalance")


def _branching_rules(ev: Evidence, th: FlagThresholds, flags: List[str], notes: List[str]) -> None:
    b = ev.branching
    if b is None:
        return
    if b.fit_ok and b.m_naive >= th.m_min_r1:
        if np.isfinite(b.ci_low) and b.ci_low >= th.m_supercritical:
            flags.append("supercritical")
        elif b.m >= th.m_near_critical:
            flags.append("near_critical")
    elif b.m_naive <= 0:
        mean_frac = ev.mean_driven_fraction
        regular = np.isfinite(mean_frac) and mean_frac > th.mean_driven_fraction_max
        cause = ("regular refractory-limited firing gives" if regular
                 else "a population oscillation with a period of a few bins gives; see the spectrum")
        notes.append(
            f"branching ratio not meaningful: r_1 = {b.m_naive:.3g} <= 0 (successive bins "
            f"anticorrelated, as {cause})"
        )
    elif b.m_naive < th.m_min_r1:
        notes.append(f"branching ratio not meaningful: r_1 = {b.m_naive:.3g} (no memory)")
    else:
        notes.append(
            f"branching ratio not meaningful: r_k not an exponential decay (R^2 = {b.r2:.2f}; "
            "oscillation?)"
        )
