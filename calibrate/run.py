"""The run loop: a controller, a ``Device``, and the record of everything that happened.

``calibrate(device, controller, targets=...)`` asks the controller for windows, sets codes, measures, hands the
measurements back, and records every window (:class:`calibrate.history.History`). It knows a controller only through
the :class:`~calibrate.controllers.base.Controller` interface: the windows it plans, the records it returns, why it
stopped, its status, and the balance reference it used (for the measured figures before and after).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from hw_models.device import Device, DeviceIdentity, KnobSpec, Measurement

from .controllers.base import (BalanceReference, Controller, Status, StopReason, Targets, UpdateRecord, Window,
                               WindowKind)
from .figures import MeasuredFigures, measured_figures
from .history import History

__all__ = ["calibrate", "CalibrationResult", "History", "replay", "ProgressFn", "RunInterrupted", "ResumeMismatch",
           "VERIFY_SUB_WINDOWS"]

#: called after each iteration with (loop iterations so far, as summary.json counts them; model time in s; the
#: controller's record)
ProgressFn = Callable[[int, float, UpdateRecord], None]


@dataclass
class CalibrationResult:
    """What a calibration produced. Per-neuron status arrays account for every neuron."""

    identity: DeviceIdentity
    controller: str
    controller_settings: dict
    targets: Targets
    codes: dict[str, np.ndarray]
    start_codes: dict[str, np.ndarray]
    status: Optional[Status]
    history: History
    iterations: int
    model_ms: float
    hardware_ms: float
    wall_s: float
    before: Optional[MeasuredFigures]
    after: Optional[MeasuredFigures]
    stopped: Optional[StopReason]
    balance_reference: Optional[BalanceReference] = None
    interrupted: Optional[str] = None  # set on the partial result of a run that did not finish
    knobs: Optional[dict] = None  # the chip's KnobSpecs (for figures judged from the record, calibrate.verdict)

    @property
    def complete(self) -> bool:
        return self.interrupted is None

    def to_dict(self) -> dict:
        """The run's part of ``summary.json``."""
        return {
            "chip": {"uid": self.identity.uid, "profile": self.identity.profile, "seed": self.identity.seed,
                     "backend": self.identity.backend, "n_neurons": self.identity.n_neurons},
            "controller": {"name": self.controller, "settings": self.controller_settings},
            "targets": self.targets.to_dict(),
            "stopped": "interrupted" if self.interrupted else self.stopped.value,
            "iterations": self.iterations,
            "windows": len(self.history),
            "model_time_s": self.model_ms / 1e3,
            "hardware_time_s": self.hardware_ms / 1e3,
            "wall_time_s": self.wall_s,
            "neurons": self.status.counts().to_dict() if self.status is not None else {},
            "before": self.before.to_dict() if self.before is not None else {},
            "after": self.after.to_dict() if self.after is not None else {},
        }


Loop = Sequence[tuple[Window, Measurement]]


def loop_figures(loops: Optional[Loop], knob: KnobSpec, live: np.ndarray,
                 ref: Optional[BalanceReference]) -> Optional[MeasuredFigures]:
    """Measured figures of one iteration's loop windows: rates, and with the controller's balance reference the
    balance index ``|proxy - offset| / (gain_e a)`` (per neuron; per knob group for shared knobs, where balance is
    the group's: the mean over its sampled neurons)."""
    if not loops:
        return None
    counts = sum(m.spike_counts.astype(float) for _, m in loops)
    T = sum(m.window_ms for _, m in loops)
    proxy = exc = None
    if ref is not None:
        ys, n = np.zeros(len(live)), np.zeros(len(live))
        for w, m in loops:
            ok = m.observed & np.isfinite(m.proxy_pa)
            ys[ok] += (m.proxy_pa - ref.offset_pa)[ok]
            n[ok] += 1
        gain_e = knob.nominal_gain(loops[0][0].codes["gain_e"])
        with np.errstate(invalid="ignore", divide="ignore"):
            proxy = np.where(n > 0, ys / np.maximum(n, 1), np.nan)
            exc = gain_e[knob.group_of] * ref.exc_pa_per_gain[knob.group_of]
        if knob.sharing != "neuron":
            g = knob.group_of
            ok = np.isfinite(proxy)
            proxy = np.bincount(g[ok], weights=proxy[ok], minlength=knob.n_groups) / np.maximum(
                np.bincount(g[ok], minlength=knob.n_groups), 1)
            exc = gain_e * ref.exc_pa_per_gain
    return measured_figures(counts, T, live, knob.group_of, knob.n_groups, proxy, exc)


class RunInterrupted(Exception):
    """A run that stopped before its end: Ctrl-C or SIGTERM (``stop`` asked for it, or a ``KeyboardInterrupt``
    arrived), or a device error such as a lost link.

    ``partial`` is a :class:`CalibrationResult` of the iterations that completed (its history holds only whole
    iterations, so :func:`calibrate` can resume from it exactly); ``reason`` says why in one line; ``cause`` is the
    device error or ``KeyboardInterrupt`` that stopped it (None for a stop that was asked for)."""

    def __init__(self, partial: "CalibrationResult", reason: str, cause: Optional[BaseException] = None):
        super().__init__(reason)
        self.partial = partial
        self.reason = reason
        self.cause = cause


class ResumeMismatch(ValueError):
    """A recorded history cannot be resumed here: the controller asks for other windows than the record holds, or
    the emulated chip measures other spikes than it recorded (another chip, profile, controller or setting)."""


#: a final verification window is measured as this many equal sub-windows, so its figures carry their own
#: counting-noise uncertainty (docs/verdicts.md)
VERIFY_SUB_WINDOWS = 10


class _Run:
    """The state of one run: the history, times, the loop windows kept for the figures, and what is complete."""

    def __init__(self) -> None:
        self.hist = History()
        self.t_ms = self.hw_ms = 0.0
        self.loop_iters = self.it = 0
        self.first_loop: Optional[Loop] = None
        self.last_loop: Optional[Loop] = None
        self.complete_windows = 0  # windows of whole iterations (what an interruption keeps)
        self.complete_loop_iters = 0


def calibrate(device: Device, controller: Controller, *, targets: Targets = Targets(),
              start_codes: Optional[Mapping[str, np.ndarray]] = None, max_iterations: int = 15,
              progress: Optional[ProgressFn] = None,
              environment: Optional[Callable[[float], None]] = None, verify_ms: float = 0.0,
              stop: Optional[Callable[[], Optional[str]]] = None, resume: Optional[History] = None,
              remeasure: bool = True, checkpoint: Optional[Callable[[History], None]] = None) -> CalibrationResult:
    """Run ``controller`` against ``device`` until it finishes, or ``max_iterations`` loop iterations are spent.

    Parameters
    ----------
    start_codes: initial codes (a previous table to warm-start from); default: every knob at its ``code_ref``.
    progress: called after each iteration with (loop iterations so far, the number ``summary.json`` reports as
        ``iterations``; model time in s; the controller's record).
    environment: called with the model time (ms) before each window; drift experiments use it to set the chip's
        temperature. It never sees the controller.
    verify_ms: length of a final verification at the final codes, measured as ``VERIFY_SUB_WINDOWS`` windows whose
        measured figures become ``after`` (0: use the controller's last loop windows).
    stop: asked after every window; a line (e.g. "interrupted (Ctrl-C)") stops the run with :class:`RunInterrupted`.
    resume: the history of an interrupted run of the same chip, controller and settings. Its iterations are fed
        through the fresh controller first, so the run continues where that one stopped. With ``remeasure`` (an
        emulated chip) each recorded window is measured again, which brings the chip's state and random streams
        to exactly where they were, and must give the recorded spikes (else :class:`ResumeMismatch`); the resumed
        run then ends with the very table of an uninterrupted run. Without it (a board) the recorded measurements
        are handed to the controller and the chip is not touched until the record ends.
    checkpoint: called with the history after every whole iteration (a session saves it, so a kill loses at most
        one iteration).

    Raises :class:`RunInterrupted` (with the partial result) on ``stop``, ``KeyboardInterrupt`` or a
    ``DeviceError``.
    """
    from hw_models.device import DeviceError
    from hw_models.emulator import nominal_codes

    start = {k: np.asarray(v, dtype=np.int64).copy()
             for k, v in (start_codes if start_codes is not None else nominal_codes(device.knobs)).items()}
    controller.begin(device.identity, device.knobs, targets, start)
    run = _Run()
    run.hist.start_codes = {k: v.copy() for k, v in start.items()}
    t0 = time.perf_counter()
    record = _Replayer(resume, device, remeasure) if resume is not None else None
    stopped: Optional[StopReason] = None
    try:
        stopped = _loop(device, controller, run, max_iterations, progress, environment, stop, record, checkpoint)
        if record is not None:
            record.finish()
        if verify_ms > 0:
            _verify(device, controller, run, verify_ms, stop)
        else:
            # the device is left at the final codes, not at its last window's: a test or a user reading the chip
            # after calibrate() sees the calibration (tests/test_cal_controllers.py judged the last window's codes)
            device.set_codes(controller.codes)
    except (KeyboardInterrupt, DeviceError) as e:
        if isinstance(e, KeyboardInterrupt):
            reason = f"interrupted ({e.args[0] if e.args else 'Ctrl-C'})"
        else:
            reason = f"device error: {_line(e)}"
        raise RunInterrupted(_partial(device, controller, run, start, t0), reason, e) from None
    except _Stop as e:
        raise RunInterrupted(_partial(device, controller, run, start, t0), e.reason) from None
    return _result(device, controller, run, start, t0, stopped)


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _line(e: BaseException) -> str:
    return e.line() if hasattr(e, "line") else str(e)


def _loop(device: Device, controller: Controller, run: _Run, max_iterations: int, progress: Optional[ProgressFn],
          environment: Optional[Callable[[float], None]], stop: Optional[Callable[[], Optional[str]]],
          record: Optional["_Replayer"], checkpoint: Optional[Callable[[History], None]]) -> Optional[StopReason]:
    hist = run.hist
    while True:
        windows = controller.plan()
        if not windows:
            return None
        if any(w.kind == WindowKind.LOOP for w in windows):
            if run.loop_iters >= max_iterations:
                return StopReason.ITERATIONS
            run.loop_iters += 1
        meas = []
        for w in windows:
            if environment is not None:
                environment(run.t_ms)
            if record is not None and record.has_next():
                m = record.next(w)
            else:
                device.set_codes(w.codes)
                m = device.measure(w.window_ms, monitor=w.monitor)
            run.t_ms += m.window_ms
            run.hw_ms += m.hardware_ms
            hist.add(run.it, w, m, run.t_ms)
            meas.append(m)
            why = stop() if stop is not None else None
            if why:
                raise _Stop(why)
        rec = controller.update(windows, meas)
        hist.iterations.append({"iteration": run.it, "model_time_s": run.t_ms / 1e3, **rec.to_dict()})
        loops = [(w, m) for w, m in zip(windows, meas) if w.kind == WindowKind.LOOP]
        if loops:
            run.first_loop = run.first_loop or loops
            run.last_loop = loops
        run.it += 1
        run.complete_windows, run.complete_loop_iters = len(hist), run.loop_iters
        if checkpoint is not None and (record is None or not record.has_next()):
            checkpoint(hist)
        if progress is not None:
            progress(run.loop_iters, run.t_ms / 1e3, rec)


def _verify(device: Device, controller: Controller, run: _Run, verify_ms: float,
            stop: Optional[Callable[[], Optional[str]]]) -> None:
    """The final verification at the final codes, in ``VERIFY_SUB_WINDOWS`` windows."""
    sub = verify_ms / VERIFY_SUB_WINDOWS
    device.set_codes(controller.codes)
    verify: list = []
    t = run.t_ms
    for _ in range(VERIFY_SUB_WINDOWS):
        w = Window(controller.codes, sub, WindowKind.VERIFY)
        m = device.measure(sub)
        t += m.window_ms
        verify.append((w, m))
        why = stop() if stop is not None else None
        if why:
            raise _Stop(why)
    for w, m in verify:  # recorded only once whole: an interrupted verification is measured again on resume
        run.hist.add(run.it, w, m, run.t_ms + m.window_ms)
        run.t_ms += m.window_ms
        run.hw_ms += m.hardware_ms
    run.last_loop = verify


def _result(device: Device, controller: Controller, run: _Run, start: dict, t0: float,
            stopped: Optional[StopReason], interrupted: Optional[str] = None) -> CalibrationResult:
    status = controller.status()
    ref = controller.balance_reference()
    knob = device.knobs["gain_e"]
    before = loop_figures(run.first_loop, knob, ~status.dead, ref)
    after = loop_figures(run.last_loop, knob, ~status.dead, ref)
    _record_figures(run.hist, before, after, ref)
    return CalibrationResult(
        identity=device.identity, controller=controller.name, controller_settings=controller.settings(),
        targets=controller.targets, codes={k: np.asarray(v).copy() for k, v in controller.codes.items()},
        start_codes=start, status=status, history=run.hist, iterations=run.loop_iters, model_ms=run.t_ms,
        hardware_ms=run.hw_ms, wall_s=time.perf_counter() - t0, before=before, after=after,
        stopped=stopped if stopped is not None or interrupted else controller.stop_reason(),
        balance_reference=ref, interrupted=interrupted, knobs=dict(device.knobs))


def _partial(device: Device, controller: Controller, run: _Run, start: dict, t0: float) -> CalibrationResult:
    """What an interrupted run keeps: its whole iterations (the windows of the one under way are dropped)."""
    run.hist.truncate(run.complete_windows)
    run.loop_iters = run.complete_loop_iters
    run.t_ms = run.hist.model_time_ms[-1] if len(run.hist) else 0.0
    run.hw_ms = float(sum(run.hist.hardware_ms))
    if run.last_loop is not None and run.last_loop[0][0].kind == WindowKind.VERIFY:
        run.last_loop = None
    try:
        return _result(device, controller, run, start, t0, None, interrupted="interrupted")
    except Exception:  # a controller stopped half-way may not report a status: the record alone
        return CalibrationResult(
            identity=device.identity, controller=controller.name, controller_settings=controller.settings(),
            targets=controller.targets, codes={k: np.asarray(v).copy() for k, v in controller.codes.items()},
            start_codes=start, status=None, history=run.hist, iterations=run.loop_iters, model_ms=run.t_ms,
            hardware_ms=run.hw_ms, wall_s=time.perf_counter() - t0, before=None, after=None, stopped=None,
            interrupted="interrupted", knobs=dict(device.knobs))


class _Replayer:
    """Hands a recorded history's windows to a resumed run, one at a time (see ``calibrate``'s ``resume``)."""

    def __init__(self, history: History, device: Device, remeasure: bool):
        self.h = history
        self.n = history.whole_iterations_windows()
        self.pos = 0
        self.device = device
        self.remeasure = remeasure

    def has_next(self) -> bool:
        return self.pos < self.n

    def next(self, w: Window) -> Measurement:
        h, i = self.h, self.pos
        if (h.kind[i] != WindowKind(w.kind).value or not np.array_equal(h.codes_e[i], w.codes["gain_e"])
                or not np.array_equal(h.codes_i[i], w.codes["gain_i"])
                or not math.isclose(h.window_ms[i], w.window_ms, rel_tol=1e-9, abs_tol=1e-9)):
            raise ResumeMismatch(f"the record diverges from this run at window {i}: recorded a {h.kind[i]} window "
                                 f"of {h.window_ms[i]:g} ms, the controller asks for a {WindowKind(w.kind).value} "
                                 f"window of {w.window_ms:g} ms at other codes (another controller or setting?)")
        self.pos += 1
        if not self.remeasure:
            return h.measurement(i)
        self.device.set_codes(w.codes)
        m = self.device.measure(w.window_ms, monitor=w.monitor)
        if not (np.array_equal(np.asarray(m.spike_counts, dtype=np.int32), h.spike_counts[i])
                and np.array_equal(np.where(m.observed, m.proxy_pa, np.nan).astype(np.float32), h.proxy_pa[i],
                                   equal_nan=True)):
            raise ResumeMismatch(f"the chip measured other spikes than the record at window {i}: not the chip, "
                                 f"profile or input stream of the interrupted run")
        return m

    def finish(self) -> None:
        if self.pos < self.n:
            raise ResumeMismatch(f"the run ended after {self.pos} of the record's {self.n} windows: the record is "
                                 f"not of this controller and settings")


def _record_figures(hist: History, before: Optional[MeasuredFigures], after: Optional[MeasuredFigures],
                    ref: Optional[BalanceReference]) -> None:
    for name, fig in (("before", before), ("after", after)):
        if fig is not None:
            hist.figures[f"{name}_rates_hz"] = fig.rates_hz
            if fig.balance is not None:
                hist.figures[f"{name}_balance"] = fig.balance
    if ref is not None:
        hist.figures["offset_pa"] = ref.offset_pa
        hist.figures["exc_pa_per_gain"] = ref.exc_pa_per_gain


def replay(history: History, controller: Controller, identity: DeviceIdentity, knobs, targets: Targets,
           start_codes) -> list[UpdateRecord]:
    """Feed a recorded run's measurements back through a fresh controller (no chip): the codes it asks for must
    match the recorded ones. Returns the controller's per-iteration records."""
    controller.begin(identity, knobs, targets, start_codes)
    pos = 0
    records = []
    while pos < len(history):
        windows = controller.plan()
        if not windows:
            break
        meas = []
        for w in windows:
            if history.kind[pos] != w.kind or not np.array_equal(history.codes_e[pos], w.codes["gain_e"]):
                raise ValueError(f"replay diverged at window {pos}: recorded {history.kind[pos]}, asked {w.kind}")
            meas.append(history.measurement(pos))
            pos += 1
        records.append(controller.update(windows, meas))
    return records
