"""A tracking session as a library function: keep an emulated chip calibrated while its temperature ramps, and
compare it with the same chip left on its static table (``eical track``; docs/controller.md, "tracking drift").

Two estimators (``estimator``):

- ``"board"`` (the default for a table with a tracker section): the on-board tracker's estimator
  (``firmware_bridge.firmware.tracker``, built as the board builds it) run on the host against the ``Device``:
  the same code, settings and table section as a board running ``eical track --on-board start``, so host-side and
  on-board tracking differ only in who reads the chip.
- ``"dual-loop"`` (the only one for a table without a tracker section, format 1): the dual loop with forgetting
  (old windows lose weight with ``halflife_s``) and fixed windows, warm-started from the table: its rates are known
  to about the precision its calibration stopped at, a prior that keeps the first few short windows from undoing
  the per-neuron calibration.

At ``checkpoints`` instants the *true* figures of the chip at that temperature are read by a replay (independent
inputs) with the codes in force then, and with the static table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from hw_models.table import GainTable, json_default

from .controllers import DualLoop, DualLoopSettings, Targets
from .metrics import TrueFigures, true_figures
from .run import calibrate

__all__ = ["Ramp", "Checkpoint", "TrackingResult", "run_tracking", "ESTIMATORS", "TrackerUnfit"]

ESTIMATORS = ("board", "dual-loop")


class TrackerUnfit(ValueError):
    """The board estimator cannot run on this table and chip (no tracker section, or knobs it cannot drive)."""


@dataclass(frozen=True)
class Ramp:
    """A linear temperature ramp from ``t0_k`` to ``t1_k`` over ``seconds`` of model time."""

    t0_k: float
    t1_k: float
    seconds: float

    def at(self, t_ms: float) -> float:
        return self.t0_k + (self.t1_k - self.t0_k) * min(max(t_ms / (self.seconds * 1e3), 0.0), 1.0)


@dataclass
class Checkpoint:
    model_time_s: float
    temperature_k: float
    tracked: TrueFigures
    static: TrueFigures

    def to_dict(self) -> dict:
        return {"model_time_s": self.model_time_s, "temperature_k": self.temperature_k,
                "tracked": self.tracked.to_dict(), "static": self.static.to_dict()}


@dataclass
class TrackingResult:
    """The checkpoints of a tracking run, the worst figures of each side, and the codes tracking ended at."""

    ramp: Ramp
    target_rate_hz: float
    checkpoints: list[Checkpoint]
    final_codes: dict[str, np.ndarray]
    windows: int
    start_table: Optional[GainTable] = field(default=None, repr=False)
    estimator: str = "dual-loop"
    frozen_groups: int = 0  # board estimator: groups frozen at their flashed codes (silent or saturating)

    def worst(self, side: str) -> dict:
        """The worst true figures over the checkpoints of ``side`` ("tracked" or "static")."""
        figs = [getattr(c, side) for c in self.checkpoints]
        return {"rate_cv_deconvolved": max(f.rate_cv_deconvolved for f in figs),
                "rate_err": max(abs(f.rate_mean_hz / self.target_rate_hz - 1) for f in figs),
                "balance_p95": max(f.balance_p95 for f in figs)}

    def to_dict(self) -> dict:
        """The document of ``track.json``."""
        return {"ramp": {"T0_K": self.ramp.t0_k, "T1_K": self.ramp.t1_k, "seconds": self.ramp.seconds},
                "checkpoints": [c.to_dict() for c in self.checkpoints],
                "tracked_worst": self.worst("tracked"), "static_worst": self.worst("static"),
                "final_codes": {k: v.tolist() for k, v in self.final_codes.items()},
                "windows": self.windows, "target_rate_hz": self.target_rate_hz, "estimator": self.estimator,
                "frozen_groups": self.frozen_groups}

    def table(self) -> GainTable:
        """The start table with the codes tracking ended at."""
        if self.start_table is None:
            raise ValueError("no start table to update")
        new = GainTable.from_dict(self.start_table.to_dict())
        for k, v in self.final_codes.items():
            new.knobs[k].codes = [int(c) for c in v]
        return new

    def write(self, out: Any) -> Path:
        """Write ``track.json`` and the updated ``table.json`` into directory ``out``."""
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "track.json").write_text(json.dumps(self.to_dict(), indent=1, default=json_default) + "\n")
        self.table().save(out_dir / "table.json")
        return out_dir


def run_tracking(profile: Any, seed: int, table: GainTable, ramp: Ramp, *, checkpoints: int = 6,
                 replay_s: float = 40.0, window_s: float = 5.0, halflife_s: float = 15.0,
                 estimator: Optional[str] = None,
                 progress: Optional[Callable[[int, float, Any], None]] = None,
                 out: Any = None) -> TrackingResult:
    """Track chip ``(profile, seed)`` from ``table`` through ``ramp`` (module docstring); with ``out`` write the
    files of :meth:`TrackingResult.write`. ``estimator``: "board" or "dual-loop" (None: "board" when the table has
    a tracker section, else "dual-loop"); ``window_s`` and ``halflife_s`` are the dual loop's (the board estimator
    takes its settings from the table's tracker section). ``progress`` is called at each checkpoint with (index,
    model time in s, the tracked chip's true figures)."""
    from hw_models.emulator import NumpyDevice

    if estimator is None:
        estimator = "board" if table.tracker else "dual-loop"
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; one of {', '.join(ESTIMATORS)}")
    if estimator == "board" and not table.tracker:
        raise TrackerUnfit("no tracker section (a format-1 table), so no board estimator to run; use the dual-loop "
                           "estimator, or a table from a calibration by this eical")
    dev = NumpyDevice(profile, seed, temperature_k=ramp.t0_k)
    table.check_identity(dev.identity)
    table.check_knobs(dev.knobs)
    rate = table.targets.get("rate_hz", dev.profile["targets"]["rate_hz"])
    static = table.codes()
    total_ms = ramp.seconds * 1e3
    marks = list(np.linspace(0.0, total_ms, checkpoints))
    rows: list[Checkpoint] = []

    def checkpoint(t_ms: float, codes: dict) -> None:
        T = ramp.at(t_ms)
        rows.append(Checkpoint(t_ms / 1e3, T,
                               true_figures(dev.profile, seed, codes, replay_s=replay_s, target_rate_hz=rate,
                                            temperature_k=T),
                               true_figures(dev.profile, seed, static, replay_s=replay_s, target_rate_hz=rate,
                                            temperature_k=T)))
        if progress is not None:
            progress(len(rows), t_ms / 1e3, rows[-1].tracked)

    if estimator == "board":
        final, windows, frozen = _track_with_board_estimator(dev, table, ramp, marks, checkpoint)
    else:
        final, windows = _track_with_dual_loop(dev, static, rate, ramp, marks, checkpoint, window_s, halflife_s)
        frozen = 0
    out_result = TrackingResult(ramp=ramp, target_rate_hz=rate, checkpoints=rows, final_codes=final,
                                windows=windows, start_table=table, estimator=estimator, frozen_groups=frozen)
    if out is not None:
        out_result.write(out)
    return out_result


def _track_with_dual_loop(dev: Any, static: dict, rate: float, ramp: Ramp, marks: list, checkpoint: Callable,
                          window_s: float, halflife_s: float) -> tuple[dict, int]:
    """The dual loop with forgetting through the ramp; (final codes, windows run)."""
    total_ms = ramp.seconds * 1e3
    ctrl = DualLoop(budget_ms=total_ms, first_window_ms=window_s * 1e3, max_growth=1.0,
                    forget_halflife_ms=halflife_s * 1e3, rate_tol=1e-9, balance_tol=1e-9,
                    prior_rate_se=DualLoopSettings().rate_tol)

    def environment(t_ms: float) -> None:
        dev.set_temperature(ramp.at(t_ms))
        while marks and t_ms >= marks[0] - 1e-6:
            checkpoint(t_ms, ctrl.codes)
            marks.pop(0)

    result = calibrate(dev, ctrl, targets=Targets(rate_hz=rate), start_codes=static, max_iterations=10 ** 6,
                       environment=environment)
    while marks:  # the ramp's end
        checkpoint(marks.pop(0), result.codes)
    return result.codes, len(result.history)


def _track_with_board_estimator(dev: Any, table: GainTable, ramp: Ramp, marks: list,
                                checkpoint: Callable) -> tuple[dict, int, int]:
    """The on-board tracker's estimator, built as the board builds it from the same table bytes, reading the chip
    through ``dev``: one sub-window at a time, the temperature set at each sub-window's middle (as the board
    emulator's chip port does). (final codes, windows run, frozen groups)."""
    from firmware_bridge.emulator import chip_info, firmware_reading
    from firmware_bridge.firmware import nvm
    from firmware_bridge.firmware.board import board_knobs
    from firmware_bridge.firmware.board_tracker import new_tracker
    from firmware_bridge.flash import tracker_to_firmware

    info = chip_info(dev)
    codes = table.codes()
    knobs = board_knobs(info["knobs"])
    payload = nvm.encode_table([{"name": k["name"], "sharing": k["sharing"], "bits": k["bits"],
                                 "codes": [int(c) for c in codes[k["name"]]]} for k in knobs],
                               tracker=tracker_to_firmware(table.tracker))
    kn, section = nvm.decode_payload(payload)  # the float32 section the board holds, not the table's float64
    try:
        tracker, (ie, ii) = new_tracker(section, knobs, [k["codes"] for k in kn], info)
    except ValueError as e:
        raise TrackerUnfit(f"the board estimator cannot drive this chip: {e}") from None
    names = [k["name"] for k in knobs]

    def as_codes(code_e: list, code_i: list) -> dict:
        return {names[ie]: np.asarray(code_e, dtype=np.int64), names[ii]: np.asarray(code_i, dtype=np.int64)}

    current = as_codes(kn[ie]["codes"], kn[ii]["codes"])
    running = None  # the codes the chip runs: new codes reach it with the next sub-window (as on the board)
    total_ms = ramp.seconds * 1e3
    t_ms = 0.0
    while t_ms < total_ms - 1e-9 and tracker.running:
        if running is not current:
            dev.set_codes(current)
            running = current
        ms, monitor = tracker.next_subwindow()
        while marks and marks[0] < t_ms + ms - 1e-6:  # a checkpoint in this sub-window: the codes it runs
            checkpoint(marks.pop(0), running)
        dev.set_temperature(ramp.at(t_ms + ms / 2))
        m = dev.measure(ms, monitor)
        counts, proxies = firmware_reading(m)
        new = tracker.add_subwindow(counts, proxies, ms, m.temperature_k)
        t_ms += ms
        if new is not None:
            current = as_codes(new[0], new[1])
    while marks:  # the ramp's end: the codes the chip ran last
        checkpoint(marks.pop(0), running)
    return current, tracker.windows, tracker.figures()["frozen"]
