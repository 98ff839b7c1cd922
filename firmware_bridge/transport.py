"""Byte transports under the host client: a pyserial port, an in-process board, and a fault injector.

A transport has ``write(data)``, ``read(timeout) -> bytes`` (at least one byte, or ``b""`` when nothing arrived
in time), ``monotonic()`` (the clock its timeouts run on), ``baudrate`` (None when bytes take no time) and
``close()``. It raises ``TransportError`` when the link is gone (port vanished, board powered off); the client
turns that into ``LinkLost``.

``BoardTransport`` runs a firmware ``Board`` in this process on a simulated clock: a read that finds nothing
advances the clock by the whole timeout and returns at once, so timeouts and back-off are exercised without
waiting (power-cut and fault-injection tests run hundreds of flashes this way).
"""
from __future__ import annotations

import errno
import math
import os
import random
import select
import stat
import time
from typing import Callable, Optional, Protocol
from urllib.parse import parse_qs

from .errors import NoSuchPort, NotASerialPort, PortBusy, PortError, UsageError
from .firmware.nvm import PowerLoss

__all__ = [
    "Transport",
    "TransportError",
    "SerialTransport",
    "BoardTransport",
    "FaultInjector",
    "FaultyTransport",
    "BYTE_FAULTS",
    "FRAME_FAULTS",
    "ALL_FAULTS",
    "parse_faults",
    "open_port",
    "check_port",
    "FORBIDDEN_BAUD",
]

# Opening a port at 1200 baud reboots an RP2040 (and several other native-USB boards) into its bootloader.
FORBIDDEN_BAUD = 1200
POLL_S = 0.005  # read timeout of ports that cannot be select()ed (loop://): set once at open


class TransportError(Exception):
    """The link is gone: the port vanished or failed, or the board lost power."""


class Transport(Protocol):
    baudrate: Optional[int]

    def write(self, data: bytes) -> None: ...

    def read(self, timeout: float) -> bytes: ...

    def monotonic(self) -> float: ...

    def close(self) -> None: ...


PORT_FORMS = "a serial device (/dev/ttyACM0, /dev/pts/7, COM3) or a pyserial URL (socket://host:port)"


def check_port(url: str) -> None:
    """Refuse, before anything is opened, a port that cannot be one (docs/protocol.md, "Ports").

    Raises
    ------
    NoSuchPort
        No port given, or nothing at that path.
    NotASerialPort
        A path that exists but is a regular file, a directory, a FIFO, a socket or a block device.
    UsageError
        A malformed ``eicalfault://`` URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise NoSuchPort(f"no port given; expected {PORT_FORMS}")
    if "://" in url:
        if url.split("://", 1)[0].lower() == "eicalfault":
            try:
                inner = parse_fault_url(url)[0]
            except ValueError as e:
                raise UsageError(f"invalid port {url!r}: {e}") from None
            check_port(inner)
        return  # other URL schemes: pyserial knows them and says what is wrong at open
    if os.name != "posix":
        return  # COM ports are not files: pyserial's open says whether one is there
    try:
        st = os.stat(url)
    except FileNotFoundError:
        raise NoSuchPort(f"no such port: {url}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise NoSuchPort(f"no such port: {url!r} ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISCHR(st.st_mode):
        return  # a character device: whether it is a terminal shows at open (/dev/null is not)
    what = ("a directory" if stat.S_ISDIR(st.st_mode) else "a regular file" if stat.S_ISREG(st.st_mode)
            else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a block device" if stat.S_ISBLK(st.st_mode) else "not a character device")
    raise NotASerialPort(f"not a serial port: {url} is {what}; expected {PORT_FORMS}")


def _open_failure(url: str, e: BaseException) -> PortError:
    """The PortError for a port that exists but would not open (pyserial's exception, classified)."""
    code = getattr(e, "errno", None)
    text = str(e)
    if code is None:
        for c in (errno.ENOTTY, errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY, errno.ENOENT, errno.ENXIO,
                  errno.ENODEV, errno.EACCES, errno.ECONNREFUSED):
            if f"({c}," in text or f"[Errno {c}]" in text:
                code = c
                break
    if code == errno.ENOTTY:
        return NotASerialPort(f"not a serial port: {url} is not a terminal device; expected {PORT_FORMS}")
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        return PortBusy(f"port {url} is busy: another program has it open (close it, or find it with "
                        f"`fuser {url}`)")
    if code in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
        return NoSuchPort(f"no such port: {url} (the device is not there)")
    if code == errno.EACCES:
        return PortError(f"cannot open {url}: permission denied (on Linux, is your user in the dialout group?)")
    if code == errno.ECONNREFUSED:
        return NoSuchPort(f"no such port: nothing accepts connections at {url}")
    return PortError(f"cannot open {url}: {text}".replace("\n", " "))


def open_port(url: str, *, baudrate: int = 115200, write_timeout: float = 2.0, dtr: bool = False,
              rts: bool = False):
    """Open a pyserial port by URL, safely for dev boards.

    - ``exclusive=True`` (two processes on one port corrupt each other's frames);
    - DTR and RTS are set *before* opening (USB-UART bridges reset the MCU when they toggle);
    - never 1200 baud (RP2040 bootloader entry);
    - the read timeout is set once (on a POSIX port each change is a tcsetattr call): 0, then select() waits.

    Raises
    ------
    UsageError
        For a forbidden baud rate or a malformed URL.
    PortError
        (a UsageError: exit 2) when the port cannot be opened: ``NoSuchPort``, ``NotASerialPort``, ``PortBusy``.
        A port that was never opened is not a lost link; only a failure after opening is (``TransportError``,
        then ``LinkLost`` in the client).
    """
    import serial

    if baudrate == FORBIDDEN_BAUD:
        raise UsageError(f"refusing {FORBIDDEN_BAUD} baud: opening a port at {FORBIDDEN_BAUD} baud reboots an "
                         "RP2040 into its bootloader")
    if baudrate <= 0:
        raise UsageError(f"not a valid baud rate: {baudrate!r}")
    check_port(url)
    try:
        ser = serial.serial_for_url(url, do_not_open=True, baudrate=baudrate, timeout=0,
                                    write_timeout=write_timeout, exclusive=True)
    except ValueError as e:
        raise UsageError(f"invalid port {url!r}: {e}") from None
    except serial.SerialException as e:
        raise _open_failure(url, e) from None
    try:
        ser.dtr = dtr
        ser.rts = rts
        ser.open()
    except ValueError as e:
        raise UsageError(f"invalid port {url!r}: {e}") from None
    except (serial.SerialException, OSError) as e:
        raise _open_failure(url, e) from None
    return ser


class SerialTransport:
    """A pyserial port (any URL) as a transport. Waits with select() where the port has a file descriptor."""

    def __init__(self, ser, *, url: Optional[str] = None):
        self.ser = ser
        self.url = url or getattr(ser, "port", None) or "?"
        self._fd: Optional[int] = None
        try:
            fd = ser.fileno()
            select.select([fd], [], [], 0)
            self._fd = fd
        except Exception:
            # No pollable descriptor (loop://): poll with a short fixed read timeout instead.
            ser.timeout = POLL_S

    @classmethod
    def open(cls, url: str, *, baudrate: int = 115200, **kw) -> "SerialTransport":
        return cls(open_port(url, baudrate=baudrate, **kw), url=url)

    @property
    def baudrate(self) -> Optional[int]:
        return getattr(self.ser, "baudrate", None)

    def monotonic(self) -> float:
        return time.monotonic()

    def write(self, data: bytes) -> None:
        import serial

        try:
            self.ser.write(data)
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"write to {self.url} failed: {e}") from None

    def read(self, timeout: float) -> bytes:
        import serial

        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
                if not ready:
                    return b""
                return self.ser.read(max(1, self.ser.in_waiting))
            deadline = time.monotonic() + timeout
            while True:
                data = self.ser.read(max(1, self.ser.in_waiting))
                if data or time.monotonic() >= deadline:
                    return data
        except (serial.SerialException, OSError, ValueError) as e:
            # pyserial: "device reports readiness to read but returned no data" = the other end vanished.
            raise TransportError(f"read from {self.url} failed: {e}") from None

    def close(self) -> None:
        try:
            self.ser.close()
        except Exception:
            pass


class BoardTransport:
    """A firmware Board in this process, on a simulated clock (see the module docstring).

    Parameters
    ----------
    make_board
        Boots a Board (called once now, and again after a RESET: a reboot on the same flash).
    """

    baudrate = None

    def __init__(self, make_board: Callable[[], object]):
        self.make_board = make_board
        self.board = make_board()
        self.now = 0.0
        self.dead = False
        self._rx = bytearray()

    def monotonic(self) -> float:
        return self.now

    def write(self, data: bytes) -> None:
        if self.dead:
            raise TransportError("the board is off")
        try:
            self._rx += self.board.receive(data)
        except PowerLoss:
            self.dead = True
            raise TransportError("the board lost power") from None
        if self.board.reset_requested:
            self.board = self.make_board()

    def read(self, timeout: float) -> bytes:
        if self.dead:
            raise TransportError("the board is off")
        if self._rx:
            out = bytes(self._rx)
            self._rx.clear()
            return out
        self.now += max(0.0, timeout)
        return b""

    def close(self) -> None:
        pass


BYTE_FAULTS = ("drop", "flip", "insert")
FRAME_FAULTS = ("truncate", "duplicate", "garbage")
ALL_FAULTS = BYTE_FAULTS + FRAME_FAULTS


def parse_faults(spec) -> tuple:
    """Fault kinds from ``"all"``, ``"bytes"``, ``"frames"`` or a comma-separated list of ``ALL_FAULTS``."""
    if isinstance(spec, (tuple, list)):
        kinds = tuple(spec)
    else:
        named = {"all": ALL_FAULTS, "bytes": BYTE_FAULTS, "frames": FRAME_FAULTS}
        kinds = named.get(spec) or tuple(k.strip() for k in str(spec).split(",") if k.strip())
    bad = [k for k in kinds if k not in ALL_FAULTS]
    if not kinds or bad:
        raise ValueError(f"unknown fault kind {bad[0]!r}" if bad else "no fault kinds given"
                         f"; expected all, bytes, frames or a list of {', '.join(ALL_FAULTS)}")
    return kinds


class FaultInjector:
    """Damage a byte stream at a given byte error rate, reproducibly.

    Each byte independently starts a fault with probability ``rate``; the fault's kind is drawn evenly from
    ``kinds``:

    - ``drop``: the byte is lost; ``flip``: one of its bits is flipped; ``insert``: a random byte comes before it;
    - ``truncate``: the byte and the rest of this write (a frame, on the host side) are lost;
    - ``duplicate``: the whole write arrives twice (the second copy undamaged), as from a bridge that resends;
    - ``garbage``: a burst of 1-32 random bytes arrives before this write, i.e. between two frames.

    Gaps between faults are drawn geometrically, so the cost does not grow with the rate's inverse. ``by_kind``
    counts the faults of each kind.
    """

    def __init__(self, rate: float, seed: int, kinds=BYTE_FAULTS):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"byte error rate must lie in [0, 1), got {rate!r}")
        self.rate = rate
        self.kinds = parse_faults(kinds)
        self.rng = random.Random(seed)
        self.faults = 0
        self.by_kind = {k: 0 for k in self.kinds}
        self._gap = self._draw()

    def _draw(self) -> float:
        if self.rate == 0.0:
            return math.inf
        u = self.rng.random()
        return math.floor(math.log1p(-u) / math.log1p(-self.rate))

    def apply(self, data: bytes) -> bytes:
        if self._gap >= len(data):
            self._gap -= len(data)
            return data
        out = bytearray()
        before = bytearray()
        repeat = False
        pos = 0
        n = len(data)
        while self._gap < n - pos:
            at = pos + int(self._gap)
            out += data[pos:at]
            kind = self.kinds[self.rng.randrange(len(self.kinds))]
            self.faults += 1
            self.by_kind[kind] += 1
            pos = at + 1
            self._gap = self._draw()
            if kind == "drop":
                pass
            elif kind == "flip":
                out.append(data[at] ^ (1 << self.rng.randrange(8)))
            elif kind == "insert":
                out.append(self.rng.randrange(256))
                out.append(data[at])
            elif kind == "truncate":
                pos = n  # the rest of this write never arrives
                break
            elif kind == "duplicate":
                out.append(data[at])
                repeat = True
            else:  # garbage between frames
                before += bytes(self.rng.randrange(256) for _ in range(1 + self.rng.randrange(32)))
                out.append(data[at])
        else:
            self._gap -= n - pos
            out += data[pos:]
        return bytes(before + out + (data if repeat else b""))


class FaultyTransport:
    """Wrap a transport so that both directions pass through a FaultInjector (seeds ``2*seed`` and ``2*seed+1``)."""

    def __init__(self, inner, rate: float, seed: int, kinds=BYTE_FAULTS):
        self.inner = inner
        self.tx = FaultInjector(rate, 2 * seed, kinds)
        self.rx = FaultInjector(rate, 2 * seed + 1, kinds)

    @property
    def baudrate(self) -> Optional[int]:
        return self.inner.baudrate

    def monotonic(self) -> float:
        return self.inner.monotonic()

    def write(self, data: bytes) -> None:
        self.inner.write(self.tx.apply(data))

    def read(self, timeout: float) -> bytes:
        return self.rx.apply(self.inner.read(timeout))

    def close(self) -> None:
        self.inner.close()


# -- the eicalfault:// URL (its pyserial handler is firmware_bridge.urlhandler.protocol_eicalfault) ----------

FAULT_SCHEME = "eicalfault://"


def parse_fault_url(url: str) -> tuple[str, float, int, tuple]:
    """(inner url, byte error rate, seed, fault kinds). Raises ValueError with the expected form on a bad URL."""
    if not url.lower().startswith(FAULT_SCHEME):
        raise ValueError(f"expected a URL of the form {FAULT_SCHEME}<port>?ber=<rate>&seed=<n>, got {url!r}")
    rest = url[len(FAULT_SCHEME):]
    inner, sep, query = rest.rpartition("?")
    if not sep:
        inner, query = rest, ""
    if not inner:
        raise ValueError(f"no inner port; expected {FAULT_SCHEME}<port>?ber=<rate>&seed=<n>")
    try:
        q = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
        unknown = set(q) - {"ber", "seed", "faults"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        ber = float(q.get("ber", 0.0))
        seed = int(q.get("seed", 0))
        if not 0.0 <= ber < 1.0:
            raise ValueError(f"ber must lie in [0, 1), got {ber!r}")
        kinds = parse_faults(q.get("faults", BYTE_FAULTS))
    except ValueError as e:
        raise ValueError(f"{e}; expected {FAULT_SCHEME}<port>?ber=<rate>&seed=<n>[&faults=all|bytes|frames]") from None
    return inner, ber, seed, kinds
