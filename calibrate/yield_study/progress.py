"""The study's progress bar: chips done of all, elapsed time and ETA, drawn by ``rich`` on stderr.

Live only on a terminal; a pipe, a log file or CI sees nothing (``enabled=None`` decides by ``isatty``)."""
from __future__ import annotations

import sys
from typing import Optional

__all__ = ["StudyProgress"]


class StudyProgress:
    def __init__(self, total: int, *, enabled: Optional[bool] = None, label: str = "chips"):
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.label = label
        self._p = None
        self._task = None

    def __enter__(self) -> "StudyProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"),
                               TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._p.start()
            self._task = self._p.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
