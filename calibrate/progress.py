"""A one-line progress display for long runs: live on a terminal, silent otherwise (logs, CI, pipes)."""
from __future__ import annotations

import sys
import time
from typing import IO, Optional


class Progress:
    """Rewrites one status line on ``stream`` (stderr) when it is a TTY; does nothing otherwise.

    Use as a context manager; ``update(text)`` replaces the line, ``close()`` ends it with a newline.
    """

    def __init__(self, label: str, stream: Optional[IO[str]] = None, enabled: Optional[bool] = None,
                 min_interval_s: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._last = 0.0
        self._width = 0
        self._t0 = time.monotonic()
        self.min_interval_s = min_interval_s

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        line = f"{self.label} [{now - self._t0:6.1f}s] {text}"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
