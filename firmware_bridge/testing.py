"""Helpers for tests and benchmarks: a board emulator in a child process, and a board in this process.

``EmulatorProcess`` starts ``eical board-emulator ...`` (``python -m calibrate.cli``, the command line that wires
the bridge; a child process, not an import), waits (with a deadline, no sleeps)
for the pty path it prints, and can ``kill()`` it with SIGKILL, as a power cut or a yanked cable would.
``memory_client`` joins a ``BoardClient`` to a firmware ``Board`` in this process on a simulated clock.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .client import BoardClient, Timing
from .transport import BoardTransport, FaultyTransport

__all__ = ["EmulatorProcess", "memory_client", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class EmulatorProcess:
    """A board emulator child process; ``path`` is its pty.

    Parameters
    ----------
    args
        Arguments after ``board-emulator`` (``["--test-chip", "64"]``, ``["--profile", "devboard", ...]``).
    nvm
        NVM file (kept across restarts).
    startup_timeout
        Seconds to wait for the pty path.
    """

    def __init__(self, args: Sequence[str] = (), *, nvm: Optional[os.PathLike] = None, startup_timeout: float = 60.0):
        cmd = [sys.executable, "-m", "calibrate.cli", "board-emulator", *args]
        if nvm is not None:
            cmd += ["--nvm", str(nvm)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        self.path = self._read_path(startup_timeout)

    def _read_path(self, timeout: float) -> str:
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 4096) if r else b""
            if not chunk:
                err = self._stop_and_stderr()
                why = "timed out" if not r else f"exited with {self.proc.returncode}"
                raise RuntimeError(f"board emulator {why} before printing its pty path: {err.strip()}")
            buf += chunk
        return buf.split(b"\n", 1)[0].decode().strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the emulator (and a MicroPython child in its process group) and wait for it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def _stop_and_stderr(self) -> str:
        self.kill()
        try:
            return self.proc.stderr.read().decode(errors="replace")
        except Exception:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def memory_client(make_board: Callable[[], object], *, rate: float = 0.0, seed: int = 0,
                  timing: Optional[Timing] = None) -> BoardClient:
    """A client talking to a Board in this process (simulated clock), through a fault injector if ``rate``."""
    t = BoardTransport(make_board)
    return BoardClient(FaultyTransport(t, rate, seed) if rate else t, timing=timing)
