"""Progress of long work on a terminal, drawn by ``rich``; silent when stderr is not a terminal (pipes, logs, CI).

One helper for every long job of eical (a calibration's phases, a diagnosis, a tracking run, a yield study's chips):
:class:`PhaseProgress` shows one line per job::

    measuring   ━━━━━━━━━━━━━━━━━━━━━━╸━━━━━━━━━━━━━━━━━━  52%  46.8/90.0 s  iteration 6/15  rate 10.1 Hz ...  0:00:03 ETA 0:00:02

with the phase's name, its fraction done (of the budget, of the replay, of the chips), the work it counts in its own
unit, a free text, the elapsed time and an estimated time left. ``rich`` redraws the line from its own thread four
times a second, so the clock keeps running while a long window is measured: the compiled engine releases the GIL
(``hw_models.kernels``, ``nogil=True``), and numpy releases it in its larger loops.

A phase whose work reports no progress of its own (a replay, the diagnostics' recordings) may be given an
``estimate_s``: its bar then follows the elapsed time against the estimate (never past 99 % before it ends), and its
time left is marked ``~``, as it is a forecast from the speed measured so far, not a count.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

__all__ = ["PhaseProgress", "enabled_for_stderr"]


def enabled_for_stderr() -> bool:
    """Whether progress should be drawn: stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _columns():
    from rich.progress import BarColumn, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Left(ProgressColumn):
        """Time left: rich's own estimate from the work's speed, or ``~`` the phase's forecast."""

        def render(self, task: Any) -> Text:
            est = task.fields.get("estimate_s")
            if task.finished:
                return Text("")
            if est is not None:
                left = max(0.0, est - (task.elapsed or 0.0))
                return Text(f"ETA ~{_clock(left)}", style="progress.remaining")
            if task.total is None or task.time_remaining is None:
                return Text("ETA -:--:--", style="progress.remaining")
            return Text(f"ETA {_clock(task.time_remaining)}", style="progress.remaining")

    class Amount(ProgressColumn):
        """``46.8/90.0 s``, ``3/20 chips``: the work done in the phase's own unit."""

        def render(self, task: Any) -> Text:
            unit = task.fields.get("unit", "")
            if task.fields.get("estimate_s") is not None or task.total is None or not unit:
                return Text("")
            fmt = "{:.0f}" if unit != "s" else "{:.1f}"
            return Text(f"{fmt.format(task.completed)}/{fmt.format(task.total)} {unit}")

    return [TextColumn("[bold]{task.description:<11}"), BarColumn(bar_width=28), TaskProgressColumn(), Amount(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), Left()]


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PhaseProgress:
    """A progress line through named phases (module docstring). Use as a context manager.

    Parameters
    ----------
    enabled: draw at all; None (default): only when stderr (or ``console``) is a terminal.
    console: a ``rich.console.Console`` to draw on (tests); default: stderr.
    refresh_per_second: redraws per second, from rich's own thread (at least one a second is the promise).
    """

    def __init__(self, *, enabled: Optional[bool] = None, console: Any = None, refresh_per_second: float = 4.0):
        if enabled is None:
            enabled = console.is_terminal if console is not None else enabled_for_stderr()
        self.enabled = bool(enabled)
        self._console = console
        self._refresh = refresh_per_second
        self._p: Any = None
        self._task: Any = None
        self._phase: Optional[str] = None
        self._t0 = time.monotonic()

    # -- lifetime -------------------------------------------------------------------------------------------------
    def start(self) -> "PhaseProgress":
        if self.enabled and self._p is None:
            from rich.console import Console
            from rich.progress import Progress

            class _Forecasting(Progress):
                def get_renderables(self):  # called by rich's refresh thread: move forecast bars with the clock
                    for t in self.tasks:
                        est = t.fields.get("estimate_s")
                        if est is not None and not t.finished and t.total:
                            t.completed = min(0.99 * t.total, (t.elapsed or 0.0) / est * t.total)
                    yield from super().get_renderables()

            console = self._console if self._console is not None else Console(stderr=True)
            self._p = _Forecasting(*_columns(), console=console, auto_refresh=True,
                                   refresh_per_second=self._refresh, transient=False)
            self._p.start()
        return self

    def stop(self) -> None:
        if self._p is not None:
            self._finish_task()
            self._p.stop()
            self._p = None

    def __enter__(self) -> "PhaseProgress":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- phases ---------------------------------------------------------------------------------------------------
    @property
    def phase_name(self) -> Optional[str]:
        return self._phase

    def phase(self, name: str, *, total: Optional[float] = None, unit: str = "", estimate_s: Optional[float] = None,
              info: str = "") -> None:
        """Begin phase ``name`` (the previous one is marked done). ``total``: the work it counts, in ``unit``
        (``update(completed=...)``); ``estimate_s``: no count, a forecast of its wall time instead."""
        self._phase = name
        if self._p is None:
            self.start()
            if self._p is None:
                return
        self._finish_task()
        if estimate_s is not None:
            est = max(float(estimate_s), 0.1)
            self._task = self._p.add_task(name, total=100.0, unit=unit, info=info, estimate_s=est)
        else:
            self._task = self._p.add_task(name, total=total, unit=unit, info=info, estimate_s=None)

    def update(self, completed: Optional[float] = None, info: Optional[str] = None, advance: float = 0.0) -> None:
        """Set the work done in the current phase (or ``advance`` it) and its free text."""
        if self._p is None or self._task is None:
            return
        kw: dict = {}
        if completed is not None:
            kw["completed"] = completed
        if advance:
            kw["advance"] = advance
        if info is not None:
            kw["info"] = info
        self._p.update(self._task, **kw)

    def _finish_task(self) -> None:
        if self._p is None or self._task is None:
            return
        task = next((t for t in self._p.tasks if t.id == self._task), None)
        if task is not None:
            fields = dict(task.fields)
            fields["estimate_s"] = None
            total = task.total if task.total is not None else max(task.completed, 1.0)
            self._p.update(self._task, total=total, completed=total, **fields)
            self._p.stop_task(self._task)
        self._task = None
