"""A calibration session as a library function: the one thing ``eical calibrate``, the pytest plugin, a user's
script and a study over many chips all call.

- :func:`calibrate_chip` draws an emulated chip (``profile``, optionally changed, and ``seed``), calibrates it and
  returns a :class:`CalibrationOutcome`, in process and without writing anything unless ``out`` is given: the call
  a yield study makes per chip.
- :func:`run_calibration` does the same on a chip already open (any ``Device``: an emulator or a board).

A session sets the targets (the profile's, or ``target_rate_hz``), runs the controller (``calibrate.run``), judges
the result against a spec (``calibrate.verdict``: on an emulated chip by an independent replay, ``evaluate_s``; on
a board by the measured figures of a final verification, ``verify_s``), makes the gain table with that verdict and,
with ``diagnostics_s``, records the balance diagnostics before and after. The output directory holds:

- ``table.json``: the gain table (hw_models.table format) with its verdict, validated on load, refused by any other
  chip;
- ``summary.json``: :meth:`CalibrationOutcome.to_dict`: the verdict, figures before and after, neuron accounting,
  controller and settings, times, true figures and their uncertainties, the run's settings (``run``);
- ``history.npz``: every window (codes, spike counts, proxy readings, times), the start codes and the figures before
  and after; saved after every iteration while the run goes on;
- ``diagnostics.json`` and ``diagnostics_section.html`` with the diagnostics;
- ``report.html``: the same as a page with plots (``eical report DIR`` re-renders it from the files).

A run that stops early (Ctrl-C, SIGTERM, a lost link) writes ``history.npz`` of its whole iterations and a
``summary.json`` with ``complete: false`` (and no table), and raises :class:`SessionInterrupted`; the same session
with ``resume=History.load(...)`` continues it (``eical calibrate --resume DIR``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from hw_models.device import Device
from hw_models.table import GainTable, json_default

from .controllers import Controller, Targets, make_controller
from .diagnostics.report import CalibrationDiagnostics, diagnose_calibration
from .backends import profile_of
from .figures import counting_floor
from .history import History
from .metrics import TrueFigures
from .replay import JudgedReplay
from .run import CalibrationResult, RunInterrupted, calibrate
from .verdict import Verdict, incomplete_verdict, measured_verdict, true_verdict

__all__ = ["CalibrationOutcome", "SessionInterrupted", "calibrate_chip", "run_calibration", "targets_for",
           "profile_of", "default_verify_s", "make_session_controller"]


@dataclass
class CalibrationOutcome:
    """What a calibration session produced: the run, its gain table, its verdict and, for an emulated chip, the
    true figures (an independent replay at the final codes) and the diagnostics before and after when they were
    asked for. An interrupted session's outcome has ``complete`` False, no table and an incomplete verdict."""

    result: CalibrationResult
    table: Optional[GainTable]
    code_ref: dict[str, int]
    true_after: Optional[TrueFigures] = None
    counting_floor: Optional[float] = None
    cv_over_floor: Optional[float] = None
    diagnostics: Optional[CalibrationDiagnostics] = None
    verdict: Optional[Verdict] = None
    judged: Optional[JudgedReplay] = None
    settings: dict = field(default_factory=dict)
    interrupted: Optional[str] = None  # why the session stopped early (None: it finished)

    @property
    def converged(self) -> bool:
        return self.result.stopped is not None and self.result.stopped.value == "converged"

    @property
    def complete(self) -> bool:
        return self.interrupted is None

    def to_dict(self) -> dict:
        """The document of ``summary.json``."""
        d = self.result.to_dict()
        d["complete"] = self.complete
        if self.interrupted:
            d["interrupted"] = self.interrupted
        d["code_ref"] = dict(self.code_ref)
        verdict = self.verdict if self.verdict is not None else incomplete_verdict(self.interrupted or "")
        d["verdict"] = verdict.to_dict()
        d["judged_by"] = verdict.how
        if self.true_after is not None:
            d["true_after"] = self.true_after.to_dict()
            if self.judged is not None:
                d["true_after_se"] = dict(self.judged.se)
            d["counting_floor"] = self.counting_floor
            d["cv_over_floor"] = self.cv_over_floor
        if self.diagnostics is not None:
            d["diagnostics"] = self.diagnostics.to_dict()
        if self.settings:
            d["run"] = dict(self.settings)
        return d

    def write(self, out: Any, *, report: bool = True, progress: Any = None) -> Path:
        """Write the output directory (module docstring); returns its path. An incomplete outcome writes
        ``history.npz`` and ``summary.json`` only."""
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.result.history.save(out_dir / "history.npz")
        if not self.complete:
            _write_json(out_dir / "summary.json", self.to_dict())
            return out_dir
        self.table.save(out_dir / "table.json")
        sections = [self.diagnostics.write(out_dir)] if self.diagnostics is not None else []
        _write_json(out_dir / "summary.json", self.to_dict())
        if report:
            from .report import write_report

            _phase(progress, "report", estimate_s=REPORT_ESTIMATE_S)
            write_report(out_dir, extra_sections=sections)
        return out_dir


class SessionInterrupted(Exception):
    """A session that stopped early (Ctrl-C, SIGTERM, a lost link): ``outcome`` is the incomplete outcome (already
    written when the session had ``out``), ``cause`` the exception that stopped it (None: a requested stop)."""

    def __init__(self, outcome: CalibrationOutcome, reason: str, cause: Optional[BaseException] = None):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.cause = cause


#: the report's phase has no count of its own: its forecast (s), from the reports rendered here (docs/verdicts.md)
REPORT_ESTIMATE_S = 4.0
#: a board's default verification (model seconds): the profile's judging length, but at most this long on the
#: board's own clock, so a real-time board verifies for a minute (its verdict then carries a wider uncertainty)
BOARD_VERIFY_MAX_HW_S = 60.0


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=json_default) + "\n")
    tmp.replace(path)


def _phase(progress: Any, name: str, **kw: Any) -> None:
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(name, **kw)


def targets_for(device: Device, target_rate_hz: Optional[float] = None) -> Targets:
    """The targets of a chip: its profile's (an emulator's own, or a board's profile when installed here), else
    ``target_rate_hz`` or 10 Hz."""
    prof = profile_of(device)
    if prof is not None:
        return Targets.from_profile(prof, rate_hz=target_rate_hz)
    return Targets(rate_hz=target_rate_hz if target_rate_hz is not None else 10.0)


def default_verify_s(device: Device) -> float:
    """The final verification a session measures by default: none on an emulated chip (its true figures are
    replayed); on a board the profile's judging length capped at ``BOARD_VERIFY_MAX_HW_S`` of the board's time."""
    if getattr(device, "chip", None) is not None:
        return 0.0
    from .replay import default_replay_s

    speedup = float(device.identity.speedup or 1.0)
    return float(min(default_replay_s(device.identity.profile), BOARD_VERIFY_MAX_HW_S * speedup))


def make_session_controller(controller: Union[str, Controller], budget_s: Optional[float]) -> Controller:
    """A controller by name (with ``budget_s`` model seconds), or the caller's object as it is."""
    if isinstance(controller, Controller):
        if budget_s is not None:
            raise ValueError("budget_s applies to a controller given by name; set a controller object's own budget")
        return controller
    return make_controller(controller, **({"budget_ms": budget_s * 1e3} if budget_s is not None else {}))


def run_calibration(device: Device, *, controller: Union[str, Controller] = "dual-loop",
                    target_rate_hz: Optional[float] = None, budget_s: Optional[float] = None,
                    max_iterations: int = 15, start_codes: Optional[Mapping[str, np.ndarray]] = None,
                    evaluate_s: Optional[float] = 0.0, verify_s: Optional[float] = 0.0, diagnostics_s: float = 0.0,
                    spec: Any = None, progress: Any = None, out: Any = None, report: bool = True,
                    stop: Optional[Callable[[], Optional[str]]] = None, resume: Optional[History] = None,
                    settings: Optional[dict] = None) -> CalibrationOutcome:
    """Calibrate the open ``device`` with ``controller`` (a name of ``calibrate.controllers.CONTROLLERS`` with
    ``budget_s`` model seconds, or a controller object that carries its own budget), and judge it.

    The verdict (``calibrate.verdict``) judges ``spec`` (a ``calibrate.yield_study.Spec``; default rate_cv 0.05,
    balance_p95 0.05, rate_err 0.03): on an emulated chip by the judging replay of ``evaluate_s`` seconds (None: the
    profile's judging length, ``calibrate.replay.default_replay_s``; 0: no replay, the measured figures judge), on a
    board by the measured figures of a final verification of ``verify_s`` seconds (None: ``default_verify_s``).
    ``diagnostics_s`` applies to emulated chips only. With ``out`` the output directory is written: ``history.npz``
    after every iteration (so a kill loses at most one), and everything at the end (``report``: with report.html).

    ``progress``: a callable ``(loop iteration, model s, record)`` or an object with ``phase(name, ...)`` and
    ``__call__`` (``calibrate.progress.PhaseProgress`` through ``calibrate.cli.output.ProgressPrinter``).
    ``stop``, ``resume``: as ``calibrate.run.calibrate``. ``settings``: what the caller wants recorded as the run's
    settings (``summary.json`` ``run``; ``eical calibrate --resume`` reads them back).

    Raises :class:`SessionInterrupted` (after writing the partial output) when the run stops early."""
    from .yield_study.spec import DEFAULT_SPEC

    ctrl = make_session_controller(controller, budget_s)
    spec = spec if spec is not None else DEFAULT_SPEC
    targets = targets_for(device, target_rate_hz)
    emulated = getattr(device, "chip", None) is not None
    verify_s = default_verify_s(device) if verify_s is None else verify_s
    if evaluate_s is None:
        from .replay import default_replay_s

        evaluate_s = default_replay_s(device.profile.name) if emulated else 0.0  # type: ignore[attr-defined]
    settings = dict(settings or {})
    code_ref = {k: int(spec_.code_ref) for k, spec_ in device.knobs.items()}
    budget_ms = ctrl.settings().get("budget_ms")
    _phase(progress, "measuring", total=float(budget_ms) / 1e3 + verify_s if budget_ms else None, unit="s")
    checkpoint = None
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        checkpoint = _Checkpoint(Path(out), settings, device.identity)
    try:
        result = calibrate(device, ctrl, targets=targets, start_codes=start_codes, max_iterations=max_iterations,
                           progress=progress if callable(progress) else None, verify_ms=verify_s * 1e3, stop=stop,
                           resume=resume, remeasure=emulated, checkpoint=checkpoint)
    except RunInterrupted as e:
        _interrupted(e.partial, code_ref, settings, e.reason, e.cause, out)
    try:
        outcome = _judge_and_diagnose(device, result, targets, spec, code_ref, settings, evaluate_s, diagnostics_s,
                                      start_codes, progress)
    except KeyboardInterrupt as e:
        why = e.args[0] if e.args else "Ctrl-C"
        _interrupted(result, code_ref, settings, f"interrupted ({why}) after the measurements", e, out)
    if out is not None:
        outcome.write(out, report=report, progress=progress)
    return outcome


def _interrupted(partial: CalibrationResult, code_ref: dict, settings: dict, reason: str,
                 cause: Optional[BaseException], out: Any) -> None:
    outcome = CalibrationOutcome(result=partial, table=None, code_ref=code_ref, settings=settings,
                                 interrupted=reason)
    partial.interrupted = reason
    if out is not None:
        outcome.write(out)
    raise SessionInterrupted(outcome, reason, cause) from None


class _Checkpoint:
    """Saves ``history.npz`` after every iteration, and first marks ``summary.json`` as a run under way."""

    def __init__(self, out: Path, settings: dict, identity: Any):
        self.out = out
        _write_json(out / "summary.json", {"complete": False, "interrupted": "running (or killed)",
                                           "chip": {"uid": identity.uid, "profile": identity.profile},
                                           "verdict": incomplete_verdict("running").to_dict(), "run": settings})

    def __call__(self, history: History) -> None:
        history.save(self.out / "history.npz")


def _judge_and_diagnose(device: Device, result: CalibrationResult, targets: Targets, spec: Any,
                        code_ref: dict, settings: dict, evaluate_s: float, diagnostics_s: float,
                        start_codes: Optional[Mapping[str, np.ndarray]], progress: Any) -> CalibrationOutcome:
    """The verdict (a judging replay on an emulated chip, the measured figures otherwise) and the diagnostics."""
    from .replay import judging_replay

    emulated = getattr(device, "chip", None) is not None
    speed = result.model_ms / 1e3 / max(result.wall_s, 1e-3)  # model seconds per wall second, as measured
    outcome = CalibrationOutcome(result=result, table=None, code_ref=code_ref, settings=settings)
    if evaluate_s > 0 and emulated:
        _phase(progress, "replay", estimate_s=evaluate_s / speed, info=f"{evaluate_s:g} s judging replay")
        judged = judging_replay(device.profile, device.chip.seed, result.codes, replay_s=evaluate_s,  # type: ignore
                                target_rate_hz=targets.rate_hz)
        tf = judged.figures
        floor = counting_floor(targets.rate_hz, result.model_ms / 1e3, tf.fano if np.isfinite(tf.fano) else 1.0)
        outcome.true_after, outcome.counting_floor, outcome.judged = tf, floor, judged
        outcome.cv_over_floor = tf.rate_cv_deconvolved / floor if floor > 0 else None
        outcome.verdict = true_verdict(judged, spec, shared=result.codes["gain_e"].shape[0] < device.identity.n_neurons,
                                       targets=targets)
    else:
        outcome.verdict = measured_verdict(result, spec)
    if diagnostics_s > 0 and emulated:
        # two recordings (before, after) with their settle, at about a third of the loop's speed (recorder on)
        _phase(progress, "diagnostics", estimate_s=2 * (diagnostics_s + 0.5) / speed * 3,
               info=f"{diagnostics_s:g} s before and after")
        outcome.diagnostics = diagnose_calibration(device, start_codes, result.codes, duration_s=diagnostics_s)
    outcome.table = GainTable.from_codes(device.identity, device.knobs, result.codes, targets=targets.to_dict(),
                                         metrics={"before": _figures(result.before), "after": _figures(result.after)},
                                         controller={"name": result.controller, "settings": result.controller_settings},
                                         verdict=outcome.verdict.to_dict())
    return outcome


def calibrate_chip(profile: Any, seed: int, *, profile_changes: Optional[Mapping[str, Any]] = None,
                   controller: Union[str, Controller] = "dual-loop", budget_s: Optional[float] = None,
                   evaluate_s: Optional[float] = None, backend: str = "numpy", temperature_k: Optional[float] = None,
                   **session: Any) -> CalibrationOutcome:
    """Calibrate the emulated chip ``seed`` of ``profile`` (a ``Profile``, a name or a path), with dotted-path
    ``profile_changes`` applied first (``Profile.with_changes``, e.g. ``{"mismatch.lognormal.eps_e.neuron": 0.3}``).

    Runs in this process and writes nothing unless ``out=DIR`` is among ``session`` (the keywords of
    :func:`run_calibration`). The true figures and the verdict come from an ``evaluate_s`` replay on independent
    inputs (None: the profile's judging length)."""
    from hw_models.profile import load_profile

    from .backends import open_device

    prof = load_profile(profile)
    if profile_changes:
        prof = prof.with_changes(profile_changes)
    with open_device(backend, prof, seed, temperature_k=temperature_k) as device:
        return run_calibration(device, controller=controller, budget_s=budget_s, evaluate_s=evaluate_s, **session)


def _figures(fig) -> dict:
    return fig.to_dict() if fig is not None else {}
