"""A tracking session as a library function: keep an emulated chip calibrated while its temperature ramps, and
compare it with the same chip left on its static table (``eical track``; docs/controller.md, "tracking drift").

The tracking controller is the dual loop with forgetting (old windows lose weight with ``halflife_s``) and fixed
windows, warm-started from the table: its rates are known to about the precision its calibration stopped at, a
prior that keeps the first few short windows from undoing the per-neuron calibration. At ``checkpoints`` instants
the *true* figures of the chip at that temperature are read by a replay (independent inputs) with the codes in force
then, and with the static table.
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

__all__ = ["Ramp", "Checkpoint", "TrackingResult", "run_tracking"]


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
                "windows": self.windows, "target_rate_hz": self.target_rate_hz}

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
                 progress: Optional[Callable[[int, float, Any], None]] = None,
                 out: Any = None) -> TrackingResult:
    """Track chip ``(profile, seed)`` from ``table`` through ``ramp`` (module docstring); with ``out`` write the
    files of :meth:`TrackingResult.write`. ``progress`` is called at each checkpoint with (index, model time in s,
    the tracked chip's true figures)."""
    from hw_models.emulator import NumpyDevice

    dev = NumpyDevice(profile, seed, temperature_k=ramp.t0_k)
    table.check_identity(dev.identity)
    table.check_knobs(dev.knobs)
    rate = table.targets.get("rate_hz", dev.profile["targets"]["rate_hz"])
    static = table.codes()
    total_ms = ramp.seconds * 1e3
    marks = list(np.linspace(0.0, total_ms, checkpoints))
    rows: list[Checkpoint] = []
    ctrl = DualLoop(budget_ms=total_ms, first_window_ms=window_s * 1e3, max_growth=1.0,
                    forget_halflife_ms=halflife_s * 1e3, rate_tol=1e-9, balance_tol=1e-9,
                    prior_rate_se=DualLoopSettings().rate_tol)

    def checkpoint(t_ms: float) -> None:
        T = ramp.at(t_ms)
        rows.append(Checkpoint(t_ms / 1e3, T,
                               true_figures(dev.profile, seed, ctrl.codes, replay_s=replay_s, target_rate_hz=rate,
                                            temperature_k=T),
                               true_figures(dev.profile, seed, static, replay_s=replay_s, target_rate_hz=rate,
                                            temperature_k=T)))
        if progress is not None:
            progress(len(rows), t_ms / 1e3, rows[-1].tracked)

    def environment(t_ms: float) -> None:
        dev.set_temperature(ramp.at(t_ms))
        while marks and t_ms >= marks[0] - 1e-6:
            checkpoint(t_ms)
            marks.pop(0)

    result = calibrate(dev, ctrl, targets=Targets(rate_hz=rate), start_codes=static, max_iterations=10 ** 6,
                       environment=environment)
    for _ in marks:
        checkpoint(total_ms)
    out_result = TrackingResult(ramp=ramp, target_rate_hz=rate, checkpoints=rows, final_codes=result.codes,
                                windows=len(result.history), start_table=table)
    if out is not None:
        out_result.write(out)
    return out_result
