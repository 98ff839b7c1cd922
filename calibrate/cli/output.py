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
    """The progress callback of a calibration or tracking run: one line, rewritten on a terminal, silent otherwise.

    Called with (iteration, model time in s, a record with optional ``rate_mean_hz``, ``rate_cv``, ``balance_p95``
    and ``phase``)."""

    def __init__(self, label: str, enabled: Optional[bool] = None):
        from ..progress import Progress

        self.p = Progress(label, enabled=enabled)

    def __call__(self, it: int, t_s: float, record: Any) -> None:
        parts = [f"iter {it:2d}", f"model {t_s:7.1f} s"]
        if record.rate_mean_hz is not None:
            parts.append(f"rate {record.rate_mean_hz:6.2f} Hz")
        if record.rate_cv is not None:
            parts.append(f"CV {record.rate_cv:.3f}")
        if record.balance_p95 is not None:
            parts.append(f"balance p95 {record.balance_p95:.3f}")
        phase = getattr(record, "phase", None)
        if phase is not None and phase != "loop":
            parts.append(str(getattr(phase, "value", phase)))
        self.p.update("  ".join(parts), force=True)

    def close(self) -> None:
        self.p.close()
