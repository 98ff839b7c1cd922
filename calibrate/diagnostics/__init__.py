"""The science of balance as diagnostics: pure functions of a chip recording, one module per family.

Every analysis is a pure function of plain arrays or of a :class:`hw_models.recording.Recording`; nothing reads a
chip, a controller or a file. :func:`diagnose` runs them all on one recording and returns a :class:`Diagnostics`
with the figures, the ``flags`` raised by the rule set of :mod:`.flags` and ``healthy``. docs/diagnostics.md gives
the formulas with the reasons for the thresholds. Time is in ms, rates in Hz, currents in pA, conductances in nS
(docs/model.md). Everything random takes a seed.

The six families:

- irregularity of spike trains (:mod:`.spikes`): :func:`isi_cv`, :func:`isi_cv2`, :func:`spike_count_fano`,
  :func:`mean_count_correlation`, :func:`classify_regime`, and :func:`population_counts` of a recording;
- per-neuron balance (:mod:`.balance`): :func:`balance_index_of_parts`, :func:`signed_balance`,
  :func:`conductance_ratio` and the :class:`Theory` they are judged against (the balance index itself is
  :func:`calibrate.figures.balance_index`);
- multiscale E/I co-fluctuation after Dehghani et al. 2016 (:mod:`.cofluctuation`): :func:`log_scales`,
  :func:`ei_cofluctuation`;
- branching ratio with the multistep-regression estimator of Wilting and Priesemann 2018 (:mod:`.branching`:
  :func:`mr_coefficients`, :func:`branching_ratio_mr`), and the dominant (possibly oscillating) mode
  (:mod:`.mode`: :func:`damped_mode`, :func:`recording_mode`);
- population spectrum and its gamma (PING) peak, synchrony of the sampled potentials (:mod:`.spectrum`:
  :func:`population_spectrum`, :func:`synchrony_chi`);
- recordings of an emulated chip (:mod:`.recording`: :func:`record_chip`, :func:`diagnose_codes`).

Around them: :mod:`.pipeline` (:func:`diagnose`: all of it), :mod:`.result` and :mod:`.headlines` (typed results), :mod:`.render` and
:mod:`.plots` (HTML and PNGs), :mod:`.report` (a calibration report's section) and :mod:`.session` (a diagnose run,
``eical diagnose``).
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of the package that defines it (imported on first use: `import calibrate.diagnostics`
#: stays light, so the CLI and a script that needs one family do not load scipy and matplotlib for all of them)
_WHERE = {
    "Theory": "balance",
    "balance_index_of_parts": "balance",
    "conductance_ratio": "balance",
    "signed_balance": "balance",
    "BranchingFit": "branching",
    "branching_ratio_mr": "branching",
    "mr_coefficients": "branching",
    "CoFluctuation": "cofluctuation",
    "ei_cofluctuation": "cofluctuation",
    "log_scales": "cofluctuation",
    "DiagnoseSettings": "pipeline",
    "diagnose": "pipeline",
    "FLAG_MEANING": "flags",
    "FlagThresholds": "flags",
    "Headline": "headlines",
    "headline": "headlines",
    "DampedMode": "mode",
    "damped_mode": "mode",
    "recording_mode": "mode",
    "Diagnostics": "result",
    "Spectrum": "spectrum",
    "population_spectrum": "spectrum",
    "synchrony_chi": "spectrum",
    "FLUCTUATION_DRIVEN": "spikes",
    "MEAN_DRIVEN": "spikes",
    "UNCLASSIFIED": "spikes",
    "classify_regime": "spikes",
    "isi_cv": "spikes",
    "isi_cv2": "spikes",
    "mean_count_correlation": "spikes",
    "population_counts": "spikes",
    "sort_by_neuron": "spikes",
    "spike_count_fano": "spikes",
}


__all__ = [
    "Theory", "FlagThresholds", "FLAG_MEANING", "CoFluctuation", "BranchingFit", "Spectrum", "DampedMode",
    "Diagnostics", "DiagnoseSettings", "Headline", "FLUCTUATION_DRIVEN", "MEAN_DRIVEN", "UNCLASSIFIED",
    "sort_by_neuron", "isi_cv", "isi_cv2", "spike_count_fano", "mean_count_correlation", "classify_regime",
    "balance_index_of_parts", "signed_balance", "conductance_ratio", "log_scales", "ei_cofluctuation",
    "mr_coefficients", "branching_ratio_mr", "damped_mode", "recording_mode", "population_spectrum",
    "synchrony_chi", "population_counts", "diagnose", "headline",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_WHERE))
