"""The result of :func:`calibrate.diagnostics.diagnose`: every figure of one recording, with its flags.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional

import numpy as np

from .branching import BranchingFit
from .cofluctuation import CoFluctuation
from .flags import FlagThresholds
from .mode import DampedMode
from .spectrum import Spectrum

__all__ = ["Diagnostics", "nanquantile", "nanmedian", "json_clean"]


@dataclass
class Diagnostics:
    """Everything :func:`diagnose` measured on one recording, with its flags.

    Per-neuron arrays have shape [N] (NaN where undefined). ``to_dict()`` gives a JSON-ready summary.

    Attributes
    ----------
    n_neurons, n_exc, n_inh : int
        Chip size and populations (all excitatory when the recording has no ``is_exc``).
    duration_ms, dt_ms : float
    n_spikes : int
        Spikes over the whole recording.
    rate_hz : ndarray [N]; mean_rate_hz : float
        Rates over the whole recording.
    balance_index, signed_balance : ndarray [N]
        :func:`balance_index` and :func:`signed_balance` of the per-neuron current means (NaN without samples).
    balance_index_median, signed_balance_median : float
        Medians over active neurons.
    conductance_ratio : ndarray [N]; conductance_ratio_median : float; conductance_ratio_theory : float or None
        :func:`conductance_ratio` (cond_lif with a known Vbal only).
    cv, cv2 : ndarray [N]
        :func:`isi_cv`, :func:`isi_cv2`.
    fano_windows_ms : ndarray [W]; fano : ndarray [W, N]; fano_median : ndarray [W]
        :func:`~calibrate.diagnostics.spikes.spike_count_fano` and its median per window.
    regime : ndarray of int8 [N]
        :func:`classify_regime` labels; ``fluctuation_driven_fraction`` and ``mean_driven_fraction`` are the
        shares among classified neurons.
    cv_median : float
    cofluct_rates : CoFluctuation or None
        E/I population rates over 32 scales (None with one population).
    cofluct_currents : CoFluctuation or None
        Population excitatory current against the inhibitory one, from samples (None without samples).
    branching : BranchingFit or None
        MR estimator on the population activity.
    spectrum : Spectrum or None
        Population-rate spectrum.
    synchrony_chi : float
        :func:`synchrony_chi` of the trace neurons' potentials.
    count_corr_windows_ms, count_corr : ndarray
        :func:`mean_count_correlation` at 10, 30 and 100 ms (and ``thresholds.rsc_window_ms``).
    flags : list of str
        Raised flags (:class:`FlagThresholds`); ``healthy`` is True when none but advisory ones are raised.
    notes : list of str
        What could not be judged, and why.
    thresholds : FlagThresholds
        The rule set used.
    label : str
        Free text, e.g. "before" or "after".
    mode : DampedMode or None
        The dominant mode of the population activity (:func:`calibrate.diagnostics.mode.recording_mode`), computed
        once per recording; None when the recording is too short or silent.
    """

    n_neurons: int
    n_exc: int
    n_inh: int
    duration_ms: float
    dt_ms: float
    n_spikes: int
    rate_hz: np.ndarray
    mean_rate_hz: float
    # balance
    balance_index: np.ndarray
    signed_balance: np.ndarray
    balance_index_median: float
    signed_balance_median: float
    conductance_ratio: np.ndarray
    conductance_ratio_median: float
    conductance_ratio_theory: Optional[float]
    # irregularity
    cv: np.ndarray
    cv2: np.ndarray
    fano_windows_ms: np.ndarray
    fano: np.ndarray
    regime: np.ndarray
    cv_median: float
    fano_median: np.ndarray
    fluctuation_driven_fraction: float
    mean_driven_fraction: float
    # population
    cofluct_rates: Optional[CoFluctuation]
    cofluct_currents: Optional[CoFluctuation]
    branching: Optional[BranchingFit]
    spectrum: Optional[Spectrum]
    synchrony_chi: float
    count_corr_windows_ms: np.ndarray
    count_corr: np.ndarray
    # verdict
    flags: List[str]
    notes: List[str]
    healthy: bool
    thresholds: FlagThresholds
    label: str = ""
    mode: Optional[DampedMode] = None

    def to_dict(self, *, per_neuron: bool = False) -> Dict[str, Any]:
        """A JSON-serialisable summary: scalars, per-scale and per-lag curves, the spectrum, flags.

        Parameters
        ----------
        per_neuron : bool
            Also include the per-neuron arrays (rate, balance, CV, regime, ...).
        """

        per_neuron_keys = {
            "rate_hz", "balance_index", "signed_balance", "conductance_ratio", "cv", "cv2", "fano", "regime",
        }
        d: Dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in per_neuron_keys:
                if per_neuron:
                    d[f.name] = json_clean(v)
                continue
            if f.name in ("spectrum", "cofluct_rates", "cofluct_currents", "branching", "thresholds", "mode") \
                    and v is not None:
                d[f.name] = json_clean(asdict(v))
            else:
                d[f.name] = json_clean(v)
        d["balance_index_p90"] = json_clean(nanquantile(self.balance_index, 0.9))
        return d


def json_clean(x: Any) -> Any:
    """Arrays to lists, numpy scalars to Python ones, non-finite floats to None (JSON has no NaN)."""
    if isinstance(x, np.ndarray):
        return [json_clean(v) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    if isinstance(x, dict):
        return {str(k): json_clean(v) for k, v in x.items()}
    if isinstance(x, (np.floating, float)):
        xf = float(x)
        return xf if math.isfinite(xf) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def nanquantile(x: np.ndarray, q: float) -> float:
    """Quantile ``q`` of the finite entries of ``x`` (NaN when there is none)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else float("nan")


def nanmedian(x: np.ndarray) -> float:
    return nanquantile(x, 0.5)
