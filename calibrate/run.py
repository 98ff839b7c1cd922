"""The run loop: a controller, a ``Device``, and the record of everything that happened.

``calibrate(device, controller, targets=...)`` asks the controller for windows, sets codes, measures, hands the
measurements back, and records every window (:class:`calibrate.history.History`). It knows a controller only through
the :class:`~calibrate.controllers.base.Controller` interface: the windows it plans, the records it returns, why it
stopped, its status, and the balance reference it used (for the measured figures before and after).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from hw_models.device import Device, DeviceIdentity, KnobSpec, Measurement

from .controllers.base import (BalanceReference, Controller, Status, StopReason, Targets, UpdateRecord, Window,
                               WindowKind)
from .figures import MeasuredFigures, measured_figures
from .history import History

__all__ = ["calibrate", "CalibrationResult", "History", "replay", "ProgressFn"]

#: called after each iteration with (iteration, model time in s, the controller's record)
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
    status: Status
    history: History
    iterations: int
    model_ms: float
    hardware_ms: float
    wall_s: float
    before: Optional[MeasuredFigures]
    after: Optional[MeasuredFigures]
    stopped: StopReason
    balance_reference: Optional[BalanceReference] = None

    def to_dict(self) -> dict:
        """The run's part of ``summary.json``."""
        return {
            "chip": {"uid": self.identity.uid, "profile": self.identity.profile, "seed": self.identity.seed,
                     "backend": self.identity.backend, "n_neurons": self.identity.n_neurons},
            "controller": {"name": self.controller, "settings": self.controller_settings},
            "targets": self.targets.to_dict(),
            "stopped": self.stopped.value,
            "iterations": self.iterations,
            "windows": len(self.history),
            "model_time_s": self.model_ms / 1e3,
            "hardware_time_s": self.hardware_ms / 1e3,
            "wall_time_s": self.wall_s,
            "neurons": self.status.counts().to_dict(),
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


def calibrate(device: Device, controller: Controller, *, targets: Targets = Targets(),
              start_codes: Optional[Mapping[str, np.ndarray]] = None, max_iterations: int = 15,
              progress: Optional[ProgressFn] = None,
              environment: Optional[Callable[[float], None]] = None, verify_ms: float = 0.0) -> CalibrationResult:
    """Run ``controller`` against ``device`` until it finishes, or ``max_iterations`` loop iterations are spent.

    Parameters
    ----------
    start_codes: initial codes (a previous table to warm-start from); default: every knob at its ``code_ref``.
    progress: called after each iteration with (iteration, model time in s, the controller's record).
    environment: called with the model time (ms) before each window; drift experiments use it to set the chip's
        temperature. It never sees the controller.
    verify_ms: length of a final window at the final codes whose measured figures become ``after`` (0: use the
        controller's last loop window).
    """
    from hw_models.emulator import nominal_codes

    start = {k: np.asarray(v, dtype=np.int64).copy()
             for k, v in (start_codes if start_codes is not None else nominal_codes(device.knobs)).items()}
    controller.begin(device.identity, device.knobs, targets, start)
    hist = History()
    t0 = time.perf_counter()
    t_ms = hw_ms = 0.0
    loop_iters = it = 0
    stopped: Optional[StopReason] = None
    first_loop: Optional[Loop] = None
    last_loop: Optional[Loop] = None
    while True:
        windows = controller.plan()
        if not windows:
            break
        if any(w.kind == WindowKind.LOOP for w in windows):
            if loop_iters >= max_iterations:
                stopped = StopReason.ITERATIONS
                break
            loop_iters += 1
        meas = []
        for w in windows:
            if environment is not None:
                environment(t_ms)
            device.set_codes(w.codes)
            m = device.measure(w.window_ms, monitor=w.monitor)
            t_ms += m.window_ms
            hw_ms += m.hardware_ms
            hist.add(it, w, m, t_ms)
            meas.append(m)
        record = controller.update(windows, meas)
        hist.iterations.append({"iteration": it, "model_time_s": t_ms / 1e3, **record.to_dict()})
        loops = [(w, m) for w, m in zip(windows, meas) if w.kind == WindowKind.LOOP]
        if loops:
            first_loop = first_loop or loops
            last_loop = loops
        if progress is not None:
            progress(it, t_ms / 1e3, record)
        it += 1
    status = controller.status()
    ref = controller.balance_reference()
    knob = device.knobs["gain_e"]
    before = loop_figures(first_loop, knob, ~status.dead, ref)
    if verify_ms > 0:
        w = Window(controller.codes, verify_ms, WindowKind.VERIFY)
        device.set_codes(controller.codes)
        m = device.measure(verify_ms)
        hist.add(it, w, m, t_ms + m.window_ms)
        last_loop = [(w, m)]
    after = loop_figures(last_loop, knob, ~status.dead, ref)
    _record_figures(hist, before, after, ref)
    return CalibrationResult(
        identity=device.identity, controller=controller.name, controller_settings=controller.settings(),
        targets=targets, codes={k: np.asarray(v).copy() for k, v in controller.codes.items()}, start_codes=start,
        status=status, history=hist, iterations=loop_iters, model_ms=t_ms, hardware_ms=hw_ms,
        wall_s=time.perf_counter() - t0, before=before, after=after,
        stopped=stopped if stopped is not None else controller.stop_reason(), balance_reference=ref)


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
