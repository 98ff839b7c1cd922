"""Helpers for tests and benchmarks: a board emulator in a child process, and a board in this process.

``EmulatorProcess`` starts ``eical board-emulator ...`` (``python -m calibrate.cli``, the command line that wires
the bridge; a child process, not an import), waits (with a deadline, no sleeps)
for the pty path it prints, and can ``kill()`` it with SIGKILL, as a power cut or a yanked cable would.
``memory_client`` joins a ``BoardClient`` to a firmware ``Board`` in this process on a simulated clock.
``pty_noisy_flash`` flashes a board emulator through the fault-injecting ``eicalfault://`` URL (real time).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from .client import BoardClient, Timing
from .transport import BoardTransport, FaultyTransport

__all__ = ["EmulatorProcess", "memory_client", "pty_noisy_flash", "PtyNoiseResult", "REPO_ROOT", "eical_on_a_terminal"]

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


def eical_on_a_terminal(*argv: str, timeout: float = 120.0) -> tuple[int, bytes, bytes]:
    """Run ``eical ARGV`` with its stderr on a pseudo-terminal (where progress bars are drawn) and stdout on a pipe;
    returns (exit code, stdout, everything the terminal received)."""
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "calibrate.cli", *argv], stdout=subprocess.PIPE, stderr=slave,
                         cwd=REPO_ROOT)
    os.close(slave)
    out, _ = p.communicate(timeout=timeout)
    err = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # Linux: EIO once the other side is closed and drained
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    return p.returncode, out, err


def memory_client(make_board: Callable[[], object], *, rate: float = 0.0, seed: int = 0,
                  timing: Optional[Timing] = None) -> BoardClient:
    """A client talking to a Board in this process (simulated clock), through a fault injector if ``rate``."""
    t = BoardTransport(make_board)
    return BoardClient(FaultyTransport(t, rate, seed) if rate else t, timing=timing)


@dataclass
class PtyNoiseResult:
    """One flash through ``eicalfault://`` to a board emulator (see ``linksim.NoiseResult`` for ``outcome``)."""

    outcome: str
    error: Optional[Exception]
    line: str
    table_bytes: int
    wall_s: float
    host_cpu_s: float
    resends: int
    timeouts: int
    attempts: int
    requests: int
    faults: Dict[str, int]
    rerun_ok: bool


def pty_noisy_flash(workdir: Path, rate: float, seed: int, *, faults: str = "all", n_neurons: int = 4096,
                    uid: str = "noisy-pty-0001") -> PtyNoiseResult:
    """A board emulator (test chip, NVM in ``workdir``) with table 1, flashed with table 2 through
    ``eicalfault://PTY?ber=rate&seed=seed&faults=faults``; then a clean link checks what the board runs (HELLO and
    a byte-for-byte read of the active table) and re-runs the flash."""
    from .errors import BridgeError
    from .firmware import nvm as _nvm
    from .firmware.testchip import TestChip
    from .flash import TableImage, flash_table
    from .transport import SerialTransport

    sha = TestChip(n_neurons, uid).info()["profile_sha256"]

    def image(value: int) -> TableImage:
        return TableImage.from_codes(uid, sha, {"gain_e": [(value + i) % 256 for i in range(n_neurons)],
                                                "gain_i": [(3 * value + i // 5) % 256 for i in range(n_neurons)]})

    def clean(path: str) -> BoardClient:
        return BoardClient(SerialTransport.open(path))

    nvm_file = Path(workdir) / f"noise-{rate:g}-{seed}.nvm"
    with EmulatorProcess(["--test-chip", str(n_neurons), "--uid", uid], nvm=nvm_file) as emu:
        c = clean(emu.path)
        flash_table(c, image(1))
        c.close()
        noisy = BoardClient(SerialTransport.open(f"eicalfault://{emu.path}?ber={rate}&seed={seed}&faults={faults}"))
        error, line, size = None, "", 0
        t, cpu = time.perf_counter(), time.process_time()
        try:
            size = flash_table(noisy, image(2)).table_bytes
        except BridgeError as e:
            error, line = e, e.line()
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        ser = noisy.transport.ser
        kinds = {k: ser._tx.by_kind[k] + ser._rx.by_kind[k] for k in ser._tx.by_kind}
        st = noisy.stats
        noisy.close()
        c = clean(emu.path)
        h = c.hello()
        _, gen, crc, data = c.read_table()
        whole = _nvm.crc32(data) == crc == h.table_crc
        want = {1: image(1), 2: image(2)}.get(gen)
        exact = want is not None and data == want.payload(h)
        if not (whole and exact):
            outcome = "wrong"
        elif error is None:
            outcome = "flashed" if gen == 2 else "wrong"
        else:
            outcome = "gave up, old table" if gen == 1 else "gave up, new table"
        size = size or len(image(2).payload(h))
        rerun = flash_table(c, image(2))
        rerun_ok = rerun.outcome in ("flashed", "up-to-date") and c.hello().generation == 2
        c.close()
    return PtyNoiseResult(outcome=outcome, error=error, line=line, table_bytes=size, wall_s=wall,
                          host_cpu_s=cpu, resends=st.resends_nak + st.resends_damaged + st.timeouts,
                          timeouts=st.timeouts, attempts=st.attempts, requests=st.requests, faults=kinds,
                          rerun_ok=rerun_ok)
