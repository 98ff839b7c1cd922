"""``DIR/yield.json``: per sweep point, how many chips met the spec, with a 95 % Wilson interval.

The Wilson score interval (Wilson 1927) is scipy's (``binomtest(k, n).proportion_ci(method="wilson")``): unlike the
normal approximation it stays inside [0, 1] and keeps its coverage when the yield is near 0 or 1, which is where
yields of interest sit.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from calibrate.criteria import CRITERIA

__all__ = ["wilson_interval", "summarise", "write_summary", "SUMMARY_SCHEMA", "MEDIAN_FIGURES"]

SUMMARY_SCHEMA = "eical-yield/1"
MEDIAN_FIGURES = ("rate_cv_deconvolved", "balance_p95", "abs_rate_err", "group_rate_err_max", "group_balance_max",
                  "cv_over_floor", "model_time_s", "iterations", "calibration_wall_s", "wall_s", "cpu_s")


def wilson_interval(passed: int, n: int, confidence: float = 0.95) -> Optional[tuple[float, float]]:
    """The Wilson score interval of a yield of ``passed`` out of ``n`` (None when n = 0)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(passed), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _median(rows: Sequence[dict], key: str) -> Optional[float]:
    if key == "abs_rate_err" or key.endswith(".abs_rate_err"):
        base = key[: -len("abs_rate_err")] + "rate_err"
        v = np.array([abs(_num(r.get(base))) for r in rows])
    else:
        v = np.array([_num(r.get(key)) for r in rows])
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _judged(rows: Sequence[dict], prefix: str, spec: dict) -> dict:
    n = len(rows)
    passed = sum(1 for r in rows if r.get(prefix + "passed"))
    ci = wilson_interval(passed, n)
    fails = {c: sum(1 for r in rows if r.get(f"{prefix}{c}.applies") and not r.get(f"{prefix}{c}.met"))
             for c in CRITERIA}
    out = {"chips": n, "passed": passed, "yield": passed / n if n else None,
           "ci95": list(ci) if ci else None, "failures": fails,
           "medians": {k: _median(rows, prefix + k) for k in MEDIAN_FIGURES if _median(rows, prefix + k) is not None}}
    # the replay's own uncertainty against each limit: median over chips of se / limit (the goal is <= 0.1)
    se_ratio = {}
    for c in CRITERIA:
        v = np.array([_num(r.get(f"{prefix}{c}.se")) / spec[c] for r in rows if r.get(f"{prefix}{c}.applies")])
        v = v[np.isfinite(v)]
        if v.size:
            se_ratio[c] = float(np.median(v))
    out["replay_se_over_limit"] = se_ratio
    out["replay_ok"] = all(x <= 0.1 for x in se_ratio.values())
    return out


def summarise(study, rows: Sequence[dict], run_info: dict) -> dict:
    """The content of yield.json for ``study`` from its dataset ``rows`` (one per chip, deduplicated)."""
    spec = study.spec.as_dict()
    by_point: dict[int, list] = {}
    for r in rows:
        by_point.setdefault(int(r["point"]), []).append(r)
    points = []
    for i, (vals, prof) in enumerate(study.points()):
        prs = by_point.get(i, [])
        ok = [r for r in prs if not r.get("error")]
        errs = [r for r in prs if r.get("error")]
        entry = {"point": i, "values": vals, "profile_sha256": prof.sha256, "requested": study.chips,
                 "missing": study.chips - len(prs), "errors": len(errs),
                 "error_examples": sorted({r["error"] for r in errs})[:3]}
        entry.update(_judged(ok, "", spec))
        if study.oracle:
            entry["oracle"] = _judged(ok, "oracle.", spec)
        points.append(entry)
    ok_all = [r for r in rows if not r.get("error")]
    total = _judged(ok_all, "", spec)
    if study.oracle:
        total["oracle"] = _judged(ok_all, "oracle.", spec)
    ident = study.identity()
    return {"schema": SUMMARY_SCHEMA, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "study": ident, "chips_per_point": study.chips, "first_seed": study.first_seed,
            "replay_s": study.replay_s, "points": points, "total": total, "run": run_info,
            "complete": all(p["missing"] == 0 for p in points)}


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def write_summary(out: Path, summary: dict) -> Path:
    path = Path(out) / "yield.json"
    tmp = Path(out) / ".yield.json.tmp"
    tmp.write_text(json.dumps(_clean(summary), indent=1) + "\n")
    os.replace(tmp, path)
    return path
