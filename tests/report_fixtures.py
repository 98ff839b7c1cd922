"""Calibration output directories for the report tests: a short real run, and summaries with each kind of verdict.

The verdict follows the schema ``summary.json`` carries (docs/architecture.md, "Files a calibration writes"):
``{"met": bool, "complete": bool, "criteria": [{"name", "value", "limit", "met", "source", "uncertainty"}]}``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

CRITERIA = [
    {"name": "rate_cv", "value": 0.0412, "limit": 0.05, "met": True, "source": "true", "uncertainty": 0.0031},
    {"name": "balance_p95", "value": 0.0453, "limit": 0.05, "met": True, "source": "true", "uncertainty": 0.0022},
    {"name": "rate_err", "value": 0.0081, "limit": 0.03, "met": True, "source": "true", "uncertainty": 0.0012},
]


def verdict(kind: str) -> Optional[dict]:
    """A verdict of kind ``met``, ``failed`` (rate_cv and balance_p95 over their limits), ``incomplete`` (an
    interrupted run: rate_cv not measured) or ``none`` (a summary from before verdicts: None)."""
    crit = [dict(c) for c in CRITERIA]
    if kind == "met":
        return {"met": True, "complete": True, "criteria": crit}
    if kind == "failed":
        crit[0].update(value=0.147, met=False)
        crit[1].update(value=0.0712, met=False)
        return {"met": False, "complete": True, "criteria": crit}
    if kind == "incomplete":
        crit[0].update(value=None, met=False, uncertainty=None)
        return {"met": False, "complete": False, "criteria": crit}
    if kind == "none":
        return None
    raise ValueError(kind)


def calibration_dir(out: Path, *, diagnostics: bool = True) -> Path:
    """A short real calibration of devboard seed 1 written to ``out`` (table, summary, history; with
    ``diagnostics`` the diagnostics section and its figures), without report.html."""
    from calibrate.diagnostics.report import diagnose_calibration
    from calibrate.session import run_calibration
    from hw_models.emulator import NumpyDevice

    dev = NumpyDevice("devboard", 1)
    outcome = run_calibration(dev, budget_s=4, max_iterations=6, evaluate_s=2.0)
    if diagnostics:
        outcome.diagnostics = diagnose_calibration(dev, None, outcome.result.codes, duration_s=1.0, n_boot=20)
    outcome.write(out, report=False)
    return out


def with_verdict(src: Path, dst: Path, kind: str) -> Path:
    """A copy of calibration directory ``src`` whose summary carries a verdict of ``kind`` (see ``verdict``)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    s = json.loads((dst / "summary.json").read_text())
    v = verdict(kind)
    s.pop("verdict", None)
    if v is not None:
        s["verdict"] = v
    if kind == "incomplete":
        s["stopped"] = "interrupted"
    (dst / "summary.json").write_text(json.dumps(s, indent=1))
    return dst
