"""``SerialDevice``: a board behind a serial link as a ``hw_models.Device``.

HELLO gives the identity and the knobs; ``set_codes`` sends SET_CODES (RAM only: nothing is flashed), and
``measure`` sends MEASURE and turns the board's integer reply (spike counts, proxies in fA, a sentinel where a
neuron was not observed) into a ``Measurement`` with NaN where not observed.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from hw_models.device import CodeError, DeviceIdentity, KnobSpec, Measurement, validate_codes

from .client import BoardClient, Hello, Timing
from .errors import BridgeError, LinkLost
from .firmware import messages as M
from .transport import SerialTransport, Transport, TransportError

__all__ = ["SerialDevice", "open_serial_device", "knobs_from_hello", "open_client", "probe_ports",
           "probe_emulators"]


def knobs_from_hello(h: Hello) -> dict[str, KnobSpec]:
    """KnobSpecs of the board's knobs.

    When the profile the board names is installed here with the same hash, its knobs are built exactly as the
    emulator builds them (DAC transfer included); otherwise from HELLO alone, which can only describe linear
    DACs. Sharing per core assumes contiguous blocks of ``n_neurons // n_cores`` neurons, as the profiles do.
    """
    try:
        from hw_models.chip import make_knobs
        from hw_models.profile import load_profile

        prof = load_profile(h.profile)
        if prof.sha256 == h.profile_sha256:
            local = make_knobs(prof)
            if all(k.name in local and local[k.name].n_groups == k.n_groups and local[k.name].bits == k.bits
                   for k in h.knobs) and len(local) == len(h.knobs):
                return dict(local)
    except Exception:
        pass  # profile not installed here (or another version): describe the knobs from HELLO
    n = h.n_neurons
    per_core = max(1, n // max(1, h.n_cores))
    out = {}
    for k in h.knobs:
        if k.dac != "linear":
            raise BridgeError(f"board {h.uid} has a {k.dac} DAC on {k.name}; its profile {h.profile!r} (sha256 "
                              f"{h.profile_sha256[:12]}...) must be installed here to describe it")
        if k.sharing == "neuron":
            group_of = np.arange(n)
        elif k.sharing == "core":
            group_of = np.arange(n) // per_core
        else:
            group_of = np.zeros(n, dtype=np.int64)
        out[k.name] = KnobSpec(name=k.name, sharing=k.sharing, bits=k.bits, code_ref=k.code_ref,
                               n_groups=k.n_groups, group_of=group_of, dac="linear")
    return out


class SerialDevice:
    """A board reached over a serial link (any pyserial URL), implementing ``hw_models.device.Device``.

    Parameters
    ----------
    url
        pyserial URL: ``/dev/ttyACM0``, ``/dev/pts/7``, ``socket://host:port``, ``eicalfault://...``.
    baudrate
        Nominal baud rate; sets how long timeouts are (ptys and native USB ignore it). Never 1200.
    timing
        Timeouts and give-up policy (``client.Timing``).
    transport
        Use this transport instead of opening ``url`` (tests: an in-process board).

    Raises
    ------
    PortError
        (a usage error, exit 2) when there is no such port, it is not a serial port, or it is busy.
    LinkLost
        When the board does not answer HELLO, or the link fails after it was opened.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, timing: Optional[Timing] = None,
                 transport: Optional[Transport] = None):
        self.url = url
        if transport is None:
            try:
                transport = SerialTransport.open(url, baudrate=baudrate)
            except TransportError as e:
                raise LinkLost(str(e)) from None
        self.client = BoardClient(transport, timing=timing)
        try:
            self.hello = self.client.hello()
            self.knobs: dict[str, KnobSpec] = knobs_from_hello(self.hello)
        except BaseException:
            self.client.close()
            raise
        h = self.hello
        self.identity = DeviceIdentity(
            uid=h.uid, profile=h.profile, profile_sha256=h.profile_sha256, n_neurons=h.n_neurons,
            n_cores=h.n_cores, model=h.model, dt_ms=h.dt_ms, speedup=h.speedup, seed=None, firmware=h.firmware,
            backend="serial", proxy_channels=h.proxy_channels)
        self._closed = False

    def set_codes(self, codes: Mapping[str, np.ndarray]) -> None:
        """Validate and send codes (SET_CODES: the board's RAM only; flash with ``eical flash``)."""
        self._check_open()
        valid = validate_codes(self.knobs, codes)
        self.client.set_codes({k: v.tolist() for k, v in valid.items()})

    def measure(self, window_ms: float, monitor: Optional[Sequence[int]] = None) -> Measurement:
        """Run one window on the board and return what it observed."""
        self._check_open()
        if not (isinstance(window_ms, (int, float, np.floating, np.integer)) and np.isfinite(window_ms)
                and window_ms > 0):
            raise ValueError(f"window_ms must be a positive number, got {window_ms!r}")
        mon = None
        if monitor is not None:
            mon = [int(i) for i in monitor]
            bad = [i for i in mon if not 0 <= i < self.identity.n_neurons]
            if bad:
                raise CodeError(f"monitor index {bad[0]} outside [0, {self.identity.n_neurons - 1}]")
        r = self.client.measure(float(window_ms), mon)
        counts = np.asarray(r.counts, dtype=np.int64)
        raw = np.asarray(r.proxies_fa, dtype=np.int64)
        observed = raw != M.PROXY_NONE
        proxy = np.where(observed, raw / 1000.0, np.nan)
        return Measurement(spike_counts=counts, window_ms=r.window_us / 1000.0, proxy_pa=proxy, observed=observed,
                           hardware_ms=r.hw_us / 1000.0, temperature_k=(r.temp_mk / 1000.0) if r.temp_mk else None)

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self.client.close()

    def __enter__(self) -> "SerialDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BridgeError(f"serial device {self.url} is closed")

    def __repr__(self) -> str:
        return f"SerialDevice({self.url!r}, uid={self.identity.uid!r}, {self.hello.table_desc()})"


def open_serial_device(url: str, **kwargs) -> SerialDevice:
    """Open the board at ``url`` (any pyserial URL) as a ``Device``; keyword arguments go to ``SerialDevice``."""
    return SerialDevice(url, **kwargs)


def open_client(port: str, baud: int = 115200, timing: Optional[Timing] = None) -> BoardClient:
    """A ``BoardClient`` on serial port (or pyserial URL) ``port``; ``LinkLost`` when the port cannot be opened."""
    try:
        return BoardClient(SerialTransport.open(port, baudrate=baud), timing=timing)
    except TransportError as e:
        raise LinkLost(f"cannot reach the board: {e}", board_table="an unknown table (the board was not reached)") \
            from None


def probe_ports(baud: int = 115200) -> list[dict]:
    """HELLO (short timeout) on every port ``serial.tools.list_ports.comports()`` lists; the ones that answered:
    port, description, serial number, and the board's uid, profile, firmware and table."""
    from serial.tools import list_ports

    found = []
    quick = Timing(latency_s=0.15, max_attempts=2, max_timeout_s=0.3)
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        client = None
        try:
            client = open_client(port.device, baud, quick)
            h = client.hello()
        except (BridgeError, OSError, ValueError):
            continue  # busy, not ours, or silent: not an eical board
        finally:
            if client is not None:
                client.close()
        found.append({"port": port.device, "description": port.description, "serial_number": port.serial_number,
                      "uid": h.uid, "profile": h.profile, "firmware": h.firmware, "table": h.table_desc()})
    return found


def probe_emulators(baud: int = 115200) -> list[dict]:
    """The board emulators running here (``firmware_bridge.registry``) whose pty answers HELLO, as
    :func:`probe_ports` lists ports, with ``emulator``: its pid, profile, seed and NVM file. One whose pty another
    program holds open is listed as ``busy`` (it cannot be asked)."""
    from .errors import PortBusy
    from .registry import running_emulators

    found = []
    quick = Timing(latency_s=0.15, max_attempts=2, max_timeout_s=0.3)
    for e in running_emulators():
        emu = {k: e.get(k) for k in ("pid", "profile", "seed", "nvm", "started")}
        client = None
        try:
            client = open_client(e["port"], baud, quick)
            h = client.hello()
        except PortBusy:
            found.append({"port": e["port"], "description": "eical board emulator", "serial_number": None,
                          "uid": e.get("uid"), "profile": e.get("profile"), "firmware": None,
                          "table": "busy: another program has the port open", "busy": True, "emulator": emu})
            continue
        except (BridgeError, OSError, ValueError):
            continue  # not answering: a pid reused by another program, or an emulator still starting
        finally:
            if client is not None:
                client.close()
        found.append({"port": e["port"], "description": "eical board emulator", "serial_number": None,
                      "uid": h.uid, "profile": h.profile, "firmware": h.firmware, "table": h.table_desc(),
                      "busy": False, "emulator": emu})
    return found
