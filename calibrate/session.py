"""A calibration session as a library function: the one thing ``eical calibrate``, the pytest plugin, a user's
script and a study over many chips all call.

- :func:`calibrate_chip` draws an emulated chip (``profile``, optionally changed, and ``seed``), calibrates it and
  returns a :class:`CalibrationOutcome`, in process and without writing anything unless ``out`` is given: the call
  a yield study makes per chip.
- :func:`run_calibration` does the same on a chip already open (any ``Device``: an emulator or a board).

A session sets the targets (the profile's, or ``target_rate_hz``), runs the controller (``calibrate.run``), makes
the gain table, and for an emulated chip measures the true figures by an independent replay (``evaluate_s``) and,
with ``diagnostics_s``, the balance diagnostics before and after. :meth:`CalibrationOutcome.write` writes an output
directory once:

- ``table.json``: the gain table (hw_models.table format), validated on load, refused by any other chip; with the
  on-board tracker's section (format 2, ``calibrate.onboard``) when the run measured what the tracker needs;
- ``summary.json``: :meth:`CalibrationOutcome.to_dict`: figures before and after, neuron accounting, controller and
  settings, times, true figures;
- ``history.npz``: every window (codes, spike counts, proxy readings, times) and the figures before and after;
- ``diagnostics.json`` and ``diagnostics_section.html`` with the diagnostics;
- ``report.html``: the same as a page with plots (``eical report DIR`` re-renders it from the files).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from hw_models.device import Device
from hw_models.table import GainTable, json_default

from .controllers import Controller, Targets, make_controller
from .diagnostics.report import CalibrationDiagnostics, diagnose_calibration
from .figures import counting_floor
from .metrics import TrueFigures, true_figures
from .onboard import tracker_section_for
from .run import CalibrationResult, ProgressFn, calibrate

__all__ = ["CalibrationOutcome", "calibrate_chip", "run_calibration", "targets_for"]


@dataclass
class CalibrationOutcome:
    """What a calibration session produced: the run, its gain table and, for an emulated chip, the true figures
    (an independent replay at the final codes) and the diagnostics before and after when they were asked for."""

    result: CalibrationResult
    table: GainTable
    code_ref: dict[str, int]
    true_after: Optional[TrueFigures] = None
    counting_floor: Optional[float] = None
    cv_over_floor: Optional[float] = None
    diagnostics: Optional[CalibrationDiagnostics] = None

    @property
    def converged(self) -> bool:
        return self.result.stopped.value == "converged"

    def to_dict(self) -> dict:
        """The document of ``summary.json``."""
        d = self.result.to_dict()
        d["code_ref"] = dict(self.code_ref)
        if self.true_after is not None:
            d["true_after"] = self.true_after.to_dict()
            d["counting_floor"] = self.counting_floor
            d["cv_over_floor"] = self.cv_over_floor
        if self.diagnostics is not None:
            d["diagnostics"] = self.diagnostics.to_dict()
        return d

    def write(self, out: Any, *, report: bool = True) -> Path:
        """Write the output directory (module docstring); returns its path."""
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.table.save(out_dir / "table.json")
        self.result.history.save(out_dir / "history.npz")
        sections = [self.diagnostics.write(out_dir)] if self.diagnostics is not None else []
        (out_dir / "summary.json").write_text(json.dumps(self.to_dict(), indent=1, default=json_default) + "\n")
        if report:
            from .report import write_report

            write_report(out_dir, extra_sections=sections)
        return out_dir


def targets_for(device: Device, target_rate_hz: Optional[float] = None) -> Targets:
    """The targets of a chip: its profile's (an emulator's own, or a board's profile when installed here), else
    ``target_rate_hz`` or 10 Hz."""
    prof = getattr(device, "profile", None)
    if prof is None and device.identity.profile:
        try:
            from hw_models.profile import load_profile

            prof = load_profile(device.identity.profile)
        except Exception:  # a board whose profile is not installed here: the plain targets
            prof = None
    if prof is not None:
        return Targets.from_profile(prof, rate_hz=target_rate_hz)
    return Targets(rate_hz=target_rate_hz if target_rate_hz is not None else 10.0)


def run_calibration(device: Device, *, controller: Union[str, Controller] = "dual-loop",
                    target_rate_hz: Optional[float] = None, budget_s: Optional[float] = None,
                    max_iterations: int = 15, start_codes: Optional[Mapping[str, np.ndarray]] = None,
                    evaluate_s: float = 0.0, verify_s: float = 0.0, diagnostics_s: float = 0.0,
                    progress: Optional[ProgressFn] = None, out: Any = None, report: bool = True) -> CalibrationOutcome:
    """Calibrate the open ``device`` with ``controller`` (a name of ``calibrate.controllers.CONTROLLERS`` with
    ``budget_s`` model seconds, or a controller object that carries its own budget).

    ``evaluate_s`` and ``diagnostics_s`` apply to emulated chips only (they replay the chip). With ``out`` the output
    directory is written (``report``: with ``report.html``)."""
    if isinstance(controller, Controller):
        if budget_s is not None:
            raise ValueError("budget_s applies to a controller given by name; set a controller object's own budget")
        ctrl = controller
    else:
        ctrl = make_controller(controller, **({"budget_ms": budget_s * 1e3} if budget_s is not None else {}))
    targets = targets_for(device, target_rate_hz)
    result = calibrate(device, ctrl, targets=targets, start_codes=start_codes, max_iterations=max_iterations,
                       progress=progress, verify_ms=verify_s * 1e3)
    table = GainTable.from_codes(device.identity, device.knobs, result.codes, targets=targets.to_dict(),
                                 metrics={"before": _figures(result.before), "after": _figures(result.after)},
                                 controller={"name": result.controller, "settings": result.controller_settings})
    table.tracker = tracker_section_for(result.history, device.knobs, targets.to_dict())  # format 2 when it can
    outcome = CalibrationOutcome(result=result, table=table,
                                 code_ref={k: int(spec.code_ref) for k, spec in device.knobs.items()})
    emulated = getattr(device, "chip", None) is not None
    if evaluate_s > 0 and emulated:
        tf = true_figures(device.profile, device.chip.seed, result.codes, replay_s=evaluate_s,  # type: ignore
                          target_rate_hz=targets.rate_hz)
        floor = counting_floor(targets.rate_hz, result.model_ms / 1e3, tf.fano if np.isfinite(tf.fano) else 1.0)
        outcome.true_after, outcome.counting_floor = tf, floor
        outcome.cv_over_floor = tf.rate_cv_deconvolved / floor if floor > 0 else None
    if diagnostics_s > 0 and emulated:
        outcome.diagnostics = diagnose_calibration(device, start_codes, result.codes, duration_s=diagnostics_s)
    if out is not None:
        outcome.write(out, report=report)
    return outcome


def calibrate_chip(profile: Any, seed: int, *, profile_changes: Optional[Mapping[str, Any]] = None,
                   controller: Union[str, Controller] = "dual-loop", budget_s: Optional[float] = None,
                   evaluate_s: float = 30.0, backend: str = "numpy", temperature_k: Optional[float] = None,
                   **session: Any) -> CalibrationOutcome:
    """Calibrate the emulated chip ``seed`` of ``profile`` (a ``Profile``, a name or a path), with dotted-path
    ``profile_changes`` applied first (``Profile.with_changes``, e.g. ``{"mismatch.lognormal.eps_e.neuron": 0.3}``).

    Runs in this process and writes nothing unless ``out=DIR`` is among ``session`` (the keywords of
    :func:`run_calibration`). The true figures come from an ``evaluate_s`` replay on independent inputs."""
    from hw_models.profile import load_profile

    from .backends import open_device

    prof = load_profile(profile)
    if profile_changes:
        prof = prof.with_changes(profile_changes)
    with open_device(backend, prof, seed, temperature_k=temperature_k) as device:
        return run_calibration(device, controller=controller, budget_s=budget_s, evaluate_s=evaluate_s, **session)


def _figures(fig) -> dict:
    return fig.to_dict() if fig is not None else {}
