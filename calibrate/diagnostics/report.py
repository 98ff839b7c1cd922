"""What a calibration report adds: the chip diagnosed at its start codes and at its calibrated codes.

:func:`diagnose_calibration` records both states of an emulated chip (same profile, seed and temperature; the numpy
engine, which gives the same spikes as Lava) and diagnoses them; :meth:`CalibrationDiagnostics.write` renders the
report section and writes, into a calibration's output directory:

- ``diagnostics.json``: ``{"run": ..., "before": ..., "after": ...}``, each state ``Diagnostics.to_dict()`` plus its
  ``"headline"``, and ``"run"`` (durations, input stream, costs);
- ``diagnostics_section.html``: the fragment of :func:`~calibrate.diagnostics.render.diagnostics_section`, which
  :func:`saved_section` reads back so that ``eical report DIR`` re-renders it;
- ``report/diag_<name>.png`` and ``.svg``: its figures, which the fragment (and so ``report.html``) shows.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from hw_models.table import json_default

from .headlines import headline
from .recording import (DEFAULT_REPORT_DURATION_S, DEFAULT_SETTLE_S, DIAGNOSTICS_INPUT_STREAM, Pair,
                        diagnose_codes)
from .render import diagnostics_section

__all__ = ["SECTION_TITLE", "SECTION_FILE", "JSON_FILE", "FIGURE_DIR", "CalibrationDiagnostics", "diagnose_calibration",
           "saved_section"]

SECTION_TITLE = "Balance diagnostics (emulated chip, independent recording)"
#: Files :meth:`CalibrationDiagnostics.write` writes into a calibration output directory.
SECTION_FILE = "diagnostics_section.html"
JSON_FILE = "diagnostics.json"
#: The folder beside ``report.html`` that holds every figure of the report (calibrate.report.FIGURE_DIR).
FIGURE_DIR = "report"


@dataclass
class CalibrationDiagnostics:
    """The chip before (start codes) and after (calibrated codes) calibration, each a fresh recording."""

    before: Pair
    after: Pair
    run: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        return {"run": self.run,
                "before": dict(self.before[0].to_dict(), headline=headline(*self.before).to_dict()),
                "after": dict(self.after[0].to_dict(), headline=headline(*self.after).to_dict())}

    def write(self, out_dir: Any, *, dpi: int = 100) -> Tuple[str, str]:
        """Render the section, write both files and the figures (PNG and SVG under ``report/``); (title, html) for
        ``write_report(extra_sections=[...])``."""
        out = Path(out_dir)
        t0 = time.perf_counter()
        body, _ = diagnostics_section(self.before, self.after, dpi=dpi, figure_dir=out / FIGURE_DIR,
                                      figure_href=f"{FIGURE_DIR}/")
        self.run["wall_s"]["figures"] = time.perf_counter() - t0
        (out / JSON_FILE).write_text(json.dumps(self.to_dict(), indent=1, default=json_default) + "\n")
        (out / SECTION_FILE).write_text(body + "\n")
        return SECTION_TITLE, body


def diagnose_calibration(device: Any, before_codes: Optional[Mapping[str, np.ndarray]],
                         after_codes: Mapping[str, np.ndarray], *, duration_s: float = DEFAULT_REPORT_DURATION_S,
                         settle_s: float = DEFAULT_SETTLE_S, input_stream: int = DIAGNOSTICS_INPUT_STREAM,
                         n_boot: int = 100) -> Optional[CalibrationDiagnostics]:
    """Record and diagnose ``device``'s chip at ``before_codes`` (None: nominal) and at ``after_codes``.

    ``device``: an emulated device (``NumpyDevice`` or ``LavaDevice``); anything without a drawn ``chip`` (a board)
    gives None."""
    chip = getattr(device, "chip", None)
    prof = getattr(device, "profile", None)
    if chip is None or prof is None:
        return None
    temp = getattr(device, "temperature_k", None)
    kw = dict(input_stream=input_stream, temperature_k=temp, settle_s=settle_s, chip=chip, n_boot=n_boot)
    t0 = time.perf_counter()
    before = diagnose_codes(prof, chip.seed, before_codes, duration_s, label="before", **kw)
    t1 = time.perf_counter()
    after = diagnose_codes(prof, chip.seed, after_codes, duration_s, label="after", **kw)
    t2 = time.perf_counter()
    run = {"duration_s": duration_s, "settle_s": settle_s, "input_stream": input_stream, "temperature_k": temp,
           "profile": prof.name, "seed": chip.seed, "wall_s": {"before": t1 - t0, "after": t2 - t1}}
    return CalibrationDiagnostics(before, after, run)


def saved_section(out_dir: Any) -> Optional[Tuple[str, str]]:
    """The section :meth:`CalibrationDiagnostics.write` wrote into ``out_dir`` (None when there is none), for
    ``write_report(out_dir, extra_sections=[...])`` when a report is re-rendered from its files."""
    p = Path(out_dir) / SECTION_FILE
    if not p.is_file():
        return None
    return SECTION_TITLE, p.read_text()
