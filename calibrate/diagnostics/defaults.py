"""Defaults of the recordings diagnostics are made from (a light module: the CLI reads it to build its parser)."""
from __future__ import annotations

__all__ = ["DEFAULT_DURATION_S", "MIN_DURATION_S", "DEFAULT_REPORT_DURATION_S", "DEFAULT_SETTLE_S",
           "DIAGNOSTICS_INPUT_STREAM"]

#: Model seconds ``eical diagnose`` records by default.
DEFAULT_DURATION_S = 10.0
#: Below this the population series are too short for the multiscale analysis.
MIN_DURATION_S = 0.5
#: Model seconds recorded per chip state in a calibration report (512 neurons: ~3 s wall per state).
DEFAULT_REPORT_DURATION_S = 5.0
#: Model seconds run before recording, so conductances and potentials forget their initial state.
DEFAULT_SETTLE_S = 0.5
#: Input stream of diagnostic recordings (0: the calibration's own inputs, 1: the true-figures replay).
DIAGNOSTICS_INPUT_STREAM = 2
