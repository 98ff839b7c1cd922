"""The study's progress: chips done of all, elapsed time and ETA, on the one progress helper of eical
(``calibrate.progress.PhaseProgress``, drawn by rich on stderr).

Live only on a terminal; a pipe, a log file or CI sees nothing (``enabled=None`` decides by ``isatty``)."""
from __future__ import annotations

from typing import Optional

from ..progress import PhaseProgress

__all__ = ["StudyProgress"]


class StudyProgress:
    def __init__(self, total: int, *, enabled: Optional[bool] = None, label: str = "chips"):
        self.total = total
        self.label = label
        self._p = PhaseProgress(enabled=enabled)
        self.enabled = self._p.enabled

    def __enter__(self) -> "StudyProgress":
        self._p.start()
        self._p.phase(self.label, total=self.total, unit="chips")
        return self

    def advance(self, n: int = 1) -> None:
        self._p.update(advance=n)

    def __exit__(self, *exc: object) -> None:
        self._p.stop()
