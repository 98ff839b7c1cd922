"""One chip instance of a yield study: calibrate it, judge it, return one flat record.

``run_chip(task)`` is what a Dask task runs. It calibrates chip ``(point's profile, seed)`` exactly as
``eical calibrate --profile P --seed S --controller C --budget B --evaluate E`` does (the same library call, the
same judging replay), judges the true figures by the study's spec, optionally runs the oracle on the same chip
(``calibrate.oracle``) and judges it by the same replay, and returns a flat dict (``RECORD_FIELDS``), one row of
the study's Parquet dataset. An exception inside becomes the record's ``error`` (one line), never a lost chip.

``_calibrate`` is the only place that calls the calibration library (``benchmarks/bench_yield.py`` uses it too):
when the library calibration session lands, it is the one function to switch.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np

from hw_models.profile import Profile

from ..replay import JudgedReplay, judging_replay
from .spec import DEFAULT_SPEC, Spec, judge_chip

__all__ = ["ChipTask", "run_chip", "FIGURES", "SE_FIGURES", "chip_key"]

# true figures stored per chip (names as calibrate.metrics.TrueFigures), and those given an uncertainty
FIGURES = ("rate_mean_hz", "rate_cv", "counting_cv", "rate_cv_deconvolved", "fano", "balance_median",
           "balance_p95", "frac_balanced_005", "live", "group_rate_err_max", "group_balance_max",
           "rate_mean_exc_hz", "rate_mean_inh_hz", "replicas", "control_variate")
SE_FIGURES = ("rate_cv_deconvolved", "rate_err", "rate_err_exc", "rate_err_inh", "balance_p95", "balance_median",
              "group_rate_err_max", "group_balance_max")


@dataclass(frozen=True)
class ChipTask:
    """Everything one chip of a study needs (picklable: it travels to a Dask worker).

    profile: the sweep point's profile (changes applied); base_sha256: the unchanged profile's hash;
    point, point_key, values: the sweep point (index, identity string, ((key, value), ...)); seed: mismatch seed;
    controller, budget_s (None: the controller's default), evaluate_s: the judging replay (s of model time);
    spec: the criteria; oracle: also run the oracle reference.
    """

    profile: Profile
    base_sha256: str
    point: int
    point_key: str
    values: tuple
    seed: int
    controller: str = "dual-loop"
    budget_s: Optional[float] = None
    evaluate_s: float = 600.0
    spec: Spec = field(default_factory=lambda: DEFAULT_SPEC)
    oracle: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return chip_key(self.point_key, self.seed)


def chip_key(point_key: str, seed: int) -> tuple[str, int]:
    """A chip's identity in a study: (sweep point, seed)."""
    return (point_key, int(seed))


@dataclass
class _Calibrated:
    codes: dict
    summary: dict  # the calibration session's summary.json document (CalibrationOutcome.to_dict)
    judged: JudgedReplay
    target_rate_hz: float
    target_inh_hz: Optional[float]
    shared: bool
    counting_floor: float
    cv_over_floor: Optional[float]
    wall_s: float
    calibration_cpu_s: float


def _calibrate(profile: Profile, seed: int, *, controller: str, budget_s: Optional[float]):
    """Calibrate emulated chip ``(profile, seed)`` as ``eical calibrate --profile P --seed S --controller C
    [--budget B]`` does; returns ``(CalibrationResult, summary dict)``.

    The one call into the calibration session (``calibrate.session.calibrate_chip``), with no output directory and
    no evaluation: the judging replay is ``_calibrate_and_judge``'s, so it can keep the replay's sub-windows for
    the uncertainties."""
    from calibrate.session import calibrate_chip

    outcome = calibrate_chip(profile, seed, controller=controller, budget_s=budget_s, evaluate_s=0.0)
    return outcome.result, outcome.to_dict()


def _calibrate_and_judge(profile: Profile, seed: int, *, controller: str, budget_s: Optional[float],
                         evaluate_s: float) -> _Calibrated:
    """Calibrate chip ``(profile, seed)`` and judge it: ``eical calibrate --profile P --seed S --controller C
    [--budget B] --evaluate E``. The judging replay is ``true_figures(profile, seed, codes, replay_s=E,
    target_rate_hz=target)`` exactly as ``run_calibration`` runs it for ``evaluate_s=E`` (fresh chip, input stream
    1), on a device that keeps the replay's sub-windows for the figures' uncertainties."""
    from calibrate.metrics import counting_floor

    t0, c0 = time.perf_counter(), time.process_time()
    result, summary = _calibrate(profile, seed, controller=controller, budget_s=budget_s)
    calibration_cpu_s = time.process_time() - c0
    rate = result.targets.rate_hz
    judged = judging_replay(profile, seed, result.codes, replay_s=evaluate_s, target_rate_hz=rate)
    tf = judged.figures
    floor = counting_floor(rate, result.model_ms / 1e3, tf.fano if np.isfinite(tf.fano) else 1.0)
    return _Calibrated(codes=result.codes, summary=summary, judged=judged, target_rate_hz=rate,
                       target_inh_hz=result.targets.rate_inh_hz,
                       shared=result.codes["gain_e"].shape[0] < result.identity.n_neurons,
                       counting_floor=floor, cv_over_floor=tf.rate_cv_deconvolved / floor if floor > 0 else None,
                       wall_s=time.perf_counter() - t0, calibration_cpu_s=calibration_cpu_s)


def _effective_budget_s(controller: str, budget_s: Optional[float]) -> float:
    if budget_s is not None:
        return float(budget_s)
    from calibrate.controllers import make_controller

    return float(make_controller(controller).settings()["budget_ms"]) / 1e3


def _figures(prefix: str, judged: JudgedReplay, target_rate_hz: float) -> dict[str, Any]:
    tf = judged.figures.to_dict()
    out: dict[str, Any] = {f"{prefix}{k}": tf.get(k) for k in FIGURES}
    out[f"{prefix}live"] = int(tf["live"])  # TrueFigures.to_dict makes every figure a float
    out[f"{prefix}replicas"] = None if tf["replicas"] is None else int(tf["replicas"])
    out[f"{prefix}control_variate"] = None if tf["control_variate"] is None else bool(tf["control_variate"])
    out[f"{prefix}rate_err"] = tf["rate_mean_hz"] / target_rate_hz - 1  # signed: below target is negative
    for k in SE_FIGURES:
        out[f"{prefix}se.{k}"] = judged.se.get(k)
    # the share of the mean rate's replay variance the control variate left (1: the plain mean)
    out[f"{prefix}replay_variance_left"] = judged.stats.get("variance_left")
    return out


def _criteria(prefix: str, crits) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in crits:
        base = f"{prefix}{c.name}."
        out.update({base + "figure": c.figure, base + "value": c.value, base + "limit": c.limit,
                    base + "se": c.se, base + "met": c.verdict_met, base + "applies": bool(c.applies)})
    # the verdict's rule (calibrate.verdict): a chip passes here exactly when eical calibrate's verdict is met
    out[f"{prefix}passed"] = all(c.verdict_met for c in crits)
    return out


def run_chip(task: ChipTask) -> dict[str, Any]:
    """Calibrate, judge and (optionally) run the oracle on one chip; return its flat record (module docstring)."""
    from calibrate import __version__

    t0 = time.perf_counter()
    c0 = time.process_time()
    prof = task.profile
    rec: dict[str, Any] = {
        "point": task.point, "point_key": task.point_key, "seed": int(task.seed),
        **{f"sweep.{k}": v for k, v in task.values},
        "profile": prof.name, "profile_sha256": prof.sha256, "base_profile_sha256": task.base_sha256,
        "eical_version": __version__, "controller": task.controller,
        "budget_s": None, "evaluate_s": float(task.evaluate_s),
        "worker": f"{socket.gethostname()}:{os.getpid()}", "error": None,
    }
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            # kept with the chip (e.g. a redraw of impossible potentials), not printed over a progress bar
            warnings.simplefilter("always")
            _run(task, rec)
    except Exception as e:  # recorded, not lost: the study reports it and a re-run of a fixed bug recomputes it
        rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
        rec["passed"] = False
    rec["warnings"] = "; ".join(sorted({str(w.message).splitlines()[0] for w in caught}))[:1000] or None
    rec["wall_s"] = time.perf_counter() - t0
    rec["cpu_s"] = time.process_time() - c0  # what a chip costs on a shared machine
    rec["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return rec


def _run(task: ChipTask, rec: dict) -> None:
    """The chip's calibration, judgement and oracle, filled into ``rec``."""
    prof = task.profile
    rec["budget_s"] = _effective_budget_s(task.controller, task.budget_s)
    cal = _calibrate_and_judge(prof, task.seed, controller=task.controller, budget_s=task.budget_s,
                               evaluate_s=task.evaluate_s)
    s = cal.summary
    n = s["neurons"]
    rec.update({
        "chip_uid": s["chip"]["uid"], "n_neurons": n["n"], "shared_knobs": cal.shared,
        "target_rate_hz": cal.target_rate_hz, "stopped": s["stopped"], "iterations": s["iterations"],
        "windows": s["windows"], "model_time_s": s["model_time_s"], "hardware_time_s": s["hardware_time_s"],
        "calibrated": n["calibrated"], "unreachable": n["unreachable"], "dead": n["dead"],
        "calibration_wall_s": s["wall_time_s"], "replay_s": cal.judged.replay_s,
        "replay_wall_s": cal.judged.wall_s, "counting_floor": cal.counting_floor,
        "calibration_cpu_s": cal.calibration_cpu_s, "replay_cpu_s": cal.judged.cpu_s,
        "cv_over_floor": cal.cv_over_floor,
        "codes_e": [int(x) for x in cal.codes["gain_e"]], "codes_i": [int(x) for x in cal.codes["gain_i"]],
    })
    rec.update(_figures("", cal.judged, cal.target_rate_hz))
    crits = judge_chip(cal.judged.figures, task.spec, shared=cal.shared, target_rate_hz=cal.target_rate_hz,
                       target_inh_hz=cal.target_inh_hz, se=cal.judged.se)
    rec.update(_criteria("", crits))
    if task.oracle:
        rec.update(_oracle_record(task, cal))


def _oracle_record(task: ChipTask, cal: _Calibrated) -> dict[str, Any]:
    from calibrate.metrics import counting_floor
    from calibrate.oracle import oracle_calibrate

    c0 = time.process_time()
    budget = _effective_budget_s(task.controller, task.budget_s)
    orc = oracle_calibrate(task.profile, task.seed, budget_s=budget, target_rate_hz=cal.target_rate_hz)
    t1 = time.perf_counter()
    judged = judging_replay(task.profile, task.seed, orc.codes, replay_s=task.evaluate_s,
                            target_rate_hz=cal.target_rate_hz)
    tf = judged.figures
    floor = counting_floor(cal.target_rate_hz, orc.model_ms / 1e3, tf.fano if np.isfinite(tf.fano) else 1.0)
    out: dict[str, Any] = {
        "oracle.model_time_s": orc.model_ms / 1e3, "oracle.search_model_s": orc.search_model_ms / 1e3,
        "oracle.unreachable": orc.unreachable, "oracle.calibration_wall_s": orc.wall_s,
        "oracle.replay_wall_s": time.perf_counter() - t1, "oracle.counting_floor": floor,
        "oracle.beta_median": float(np.median(orc.beta)), "oracle.gamma": orc.gamma,
        "oracle.codes_e": [int(x) for x in orc.codes["gain_e"]],
        "oracle.codes_i": [int(x) for x in orc.codes["gain_i"]],
        "oracle.cpu_s": time.process_time() - c0, "oracle.search_cpu_s": orc.search_cpu_s,
        "oracle.calibration_cpu_s": orc.cpu_s, "oracle.replay_cpu_s": judged.cpu_s,
    }
    out.update(_figures("oracle.", judged, cal.target_rate_hz))
    crits = judge_chip(tf, task.spec, shared=cal.shared, target_rate_hz=cal.target_rate_hz,
                       target_inh_hz=cal.target_inh_hz, se=judged.se)
    out.update(_criteria("oracle.", crits))
    return out
