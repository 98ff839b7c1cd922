"""Yield studies: what fraction of many emulated chips calibrates to spec, with confidence bounds (docs/yield.md).

A Monte Carlo over chip instances. Each chip ``(sweep point, seed)`` is calibrated by a controller and judged by an
independent replay (the true figures ``eical calibrate --evaluate`` reports), optionally beside the oracle
(``calibrate.oracle``); chips run as Dask tasks, and the driver writes them to a Parquet dataset as they finish.

- ``sweep``: ``KEY=V1,V2,...`` / ``KEY=START:STOP:COUNT`` over profile keys and ``mismatch.scale``; the grid.
- ``spec``: the criteria and their limits (judged by ``calibrate.criteria``, as the pytest plugin judges).
- ``chip``: ``run_chip(task)``, one chip -> one flat record (``_calibrate_and_judge`` is the library call).
- ``replay``: the judging replay, each figure's uncertainty, the replay lengths per profile.
- ``store``: the Parquet dataset (atomic batches, exactly once on read).
- ``study``: ``Study`` and the Dask driver ``run_study`` (resumable).
- ``summary``, ``report``: ``yield.json`` (Wilson intervals) and ``report.html`` with PNG/SVG figures.

Only ``study`` imports Dask, and only when a study runs; the rest is plain library code.
"""
from .chip import ChipTask, run_chip
from .spec import DEFAULT_SPEC, Spec, SpecError, parse_spec
from .study import Study, StudyBusy, StudyMismatch, StudyOutcome, run_study
from .summary import wilson_interval
from .sweep import Sweep, SweepError, apply_point, grid, parse_sweep, scale_mismatch, with_dac_bits

__all__ = ["ChipTask", "run_chip", "Spec", "SpecError", "parse_spec", "DEFAULT_SPEC", "Study", "StudyOutcome",
           "StudyMismatch", "StudyBusy", "run_study", "wilson_interval", "Sweep", "SweepError", "parse_sweep",
           "grid", "apply_point", "scale_mismatch", "with_dac_bits"]
