"""What the commands print: numbers or "n/a", a live progress line on a terminal, JSON on stdout, notes on stderr."""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Optional

from hw_models.table import json_default

__all__ = ["fmt", "note", "print_json", "ProgressPrinter"]


def fmt(x: Any, spec: str = ".3f") -> str:
    """``x`` formatted, or "n/a" when it was not measured (None or not finite)."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def note(msg: str) -> None:
    print(f"eical: note: {msg}", file=sys.stderr)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=1, default=json_default))


class ProgressPrinter:
    """The progress of a calibration or tracking run on a terminal (``calibrate.progress.PhaseProgress``, drawn by
    rich), silent otherwise. The session calls :meth:`phase` at each phase (measuring, verifying, replay,
    diagnostics, report) and the run loop calls the object after each iteration with (loop iterations so far, the
    number summary.json reports; model time in s; a record with optional ``rate_mean_hz``, ``rate_cv``,
    ``balance_p95`` and ``phase``)."""

    def __init__(self, label: str, enabled: Optional[bool] = None, *, max_iterations: Optional[int] = None,
                 console: Any = None, counter: str = "iteration"):
        from ..progress import PhaseProgress

        self.label = label
        self.counter = counter
        self.max_iterations = max_iterations
        self.p = PhaseProgress(enabled=enabled, console=console)

    def phase(self, name: str, **kw: Any) -> None:
        self.p.phase(name, **kw)

    def __call__(self, it: int, t_s: float, record: Any) -> None:
        of = f"/{self.max_iterations}" if self.max_iterations is not None else ""
        parts = [f"{self.counter} {it}{of}"]
        if record.rate_mean_hz is not None:
            parts.append(f"rate {record.rate_mean_hz:.2f} Hz")
        if record.rate_cv is not None:
            parts.append(f"CV {record.rate_cv:.3f}")
        if record.balance_p95 is not None:
            parts.append(f"balance p95 {record.balance_p95:.3f}")
        phase = getattr(record, "phase", None)
        if phase is not None and getattr(phase, "value", phase) != "loop":
            parts.append(f"references ({getattr(phase, 'value', phase)})")
        if self.p.phase_name is None:
            self.p.phase(self.label)
        self.p.update(completed=t_s, info="  ".join(parts))

    def close(self) -> None:
        self.p.stop()
