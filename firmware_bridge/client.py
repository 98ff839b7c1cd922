"""The host client: stop-and-wait requests over a transport, with resends, timeouts and a link-quality gate.

Delivery rules (docs/protocol.md, "Delivery"):

- A NAK from the board, or a damaged frame arriving here, makes the client resend the request at once.
- A timeout makes it resend too; consecutive timeouts back off exponentially (factor 2, capped). A timeout is
  scaled to the link: a fixed latency allowance, plus the time the request and the largest reply take on the
  wire at the port's baud rate (10 bits per byte), plus what the board says the operation takes (HELLO reports
  erase time per sector, other operations and measurement compute time).
- Bulk transfers (FLASH_DATA, READ_TABLE, SET_CODES, MEASURE_READ pages) go in chunks of ``chunk`` bytes,
  which adapts to the link: halved (down to ``min_chunk``) when a chunk needed three attempts or two chunks in a
  row needed a resend, doubled back (up to ``max_chunk``) after 16 clean chunks. A chunk that fails three times
  is abandoned and sent again, smaller, as a new request. Absolute offsets make all of that free: every bulk
  request is idempotent.
- A request is given up after ``max_attempts`` tries, and the link is declared lost when more than 20 of the
  last 32 attempts of small frames failed (chunks already as small as they get): such a link works in principle
  but would take unbounded time, so the user is told to fix the cable. Both raise ``LinkLost``; the board's last
  good state is then known from the last HELLO. Measured in one process (40 seeds each, 8 KiB table): byte error
  rate 1e-3 flashes 40/40, 3e-3 39/40, 1e-2 0/40 (gives up, old table intact).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from . import protocol
from .errors import BoardError, LinkLost, VerifyChanged
from .firmware import messages as M
from .firmware import nvm
from .firmware import wire as W
from .replies import Hello, MeasureResult, TrackerStatus, decode_reply
from .transport import Transport, TransportError

__all__ = ["Timing", "LinkStats", "Hello", "MeasureResult", "TrackerStatus", "BoardClient"]


@dataclass(frozen=True)
class Timing:
    """How long to wait for replies, and when to give up.

    Attributes
    ----------
    latency_s
        Turnaround allowance per exchange on top of the wire time (OS, USB frames, the board's own work).
    max_attempts
        Tries per request (first send included) before ``LinkLost``.
    backoff
        Factor by which the timeout grows with each consecutive timeout.
    max_timeout_s
        Cap of the backed-off timeout (the operation's own time comes on top).
    quality_window, quality_max_failed
        Link-quality gate: ``LinkLost`` when more than ``quality_max_failed`` of the last ``quality_window``
        attempts failed (only while the caller says frames are minimal).
    """

    latency_s: float = 0.02
    max_attempts: int = 10
    backoff: float = 2.0
    max_timeout_s: float = 2.0
    quality_window: int = 32
    quality_max_failed: int = 20

    def timeout(self, n_out: int, n_in: int, op_s: float, n_timeouts: int, baudrate: Optional[int]) -> float:
        """Seconds to wait for a reply after sending ``n_out`` bytes, expecting up to ``n_in`` back."""
        wire_s = 0.0 if not baudrate else (n_out + n_in) * 10.0 / baudrate
        base = self.latency_s + wire_s
        return min(base * self.backoff ** n_timeouts, max(self.max_timeout_s, base)) + op_s


@dataclass
class LinkStats:
    """Counters of one client's link."""

    requests: int = 0
    attempts: int = 0
    resends_nak: int = 0
    resends_damaged: int = 0
    timeouts: int = 0
    bytes_out: int = 0
    bytes_in: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class BoardClient:
    """Typed requests to a board over a transport (library API; the CLI and ``SerialDevice`` build on it).

    Parameters
    ----------
    transport
        Where the bytes go (``SerialTransport``, ``BoardTransport``, ``FaultyTransport``...).
    timing
        Timeouts and give-up policy.
    max_chunk, min_chunk
        Bounds of the adaptive chunk size of bulk transfers (bytes of payload data per frame).
    """

    def __init__(self, transport: Transport, *, timing: Optional[Timing] = None, max_chunk: int = 1024,
                 min_chunk: int = 128):
        self.transport = transport
        self.timing = timing or Timing()
        self.conn = protocol.ClientConnection()
        self.stats = LinkStats()
        self.hello_info: Optional[Hello] = None
        # while the board's tracker runs, a request may wait for the sub-window in progress: this much more time
        # is allowed per request once a tracker reply said it is running (0 otherwise)
        self.busy_s = 0.0
        self._window: collections.deque = collections.deque(maxlen=self.timing.quality_window)
        self.set_chunk_limits(max_chunk, min_chunk)

    # -- delivery --

    def set_chunk_limits(self, max_chunk: int, min_chunk: int) -> None:
        """Bounds of the adaptive chunk (clamped to what the board accepts); the chunk restarts at the maximum."""
        if not 16 <= min_chunk <= max_chunk:
            raise ValueError(f"need 16 <= min_chunk <= max_chunk, got {min_chunk!r}, {max_chunk!r}")
        self.max_chunk = max_chunk
        self.min_chunk = min_chunk
        self.chunk = max_chunk
        self._clean = 0
        self._last_extra = 0
        if self.hello_info is not None:
            self._clamp()

    def _clamp(self) -> None:
        top = max(16, self.hello_info.max_payload - 16)
        self.max_chunk = min(self.max_chunk, top)
        self.min_chunk = min(self.min_chunk, self.max_chunk)
        self.chunk = max(self.min_chunk, min(self.chunk, self.max_chunk))

    def reset_quality(self) -> None:
        """Forget the link-quality history (done whenever the chunk size changes)."""
        self._window.clear()

    def _adapt(self, extra: int) -> None:
        """Shrink or grow the chunk after a bulk request that needed ``extra`` resends."""
        if extra >= 2 or (extra and self._last_extra):
            if self.chunk > self.min_chunk:
                self.chunk = max(self.min_chunk, self.chunk // 2)
                self.reset_quality()
            self._clean = 0
        elif extra == 0:
            self._clean += 1
            if self._clean >= 16 and self.chunk < self.max_chunk:
                self.chunk = min(self.max_chunk, self.chunk * 2)
                self.reset_quality()
                self._clean = 0
        self._last_extra = extra

    def transfer(self, type: int, make: Callable[[int], bytes], *, op_s: float = 0.0,
                 reply_extra: int = 0) -> tuple[protocol.Reply, int]:
        """One request of an idempotent bulk transfer, sized by the adaptive chunk: (reply, chunk used).

        ``make(chunk)`` builds the payload for a chunk size. The quality gate applies only at the smallest chunk;
        above it, a chunk that fails three times is abandoned and rebuilt at half the size.
        """
        while True:
            size = self.chunk
            before = self.stats.attempts
            small = size <= self.min_chunk
            try:
                r = self.request(type, make(size), op_s=op_s, reply_max=size + reply_extra, gate=small,
                                 attempts=None if small else 3)
            except _ChunkFailed:
                self.chunk = max(self.min_chunk, size // 2)
                self.reset_quality()
                self._clean = 0
                continue
            self._adapt(self.stats.attempts - before - 1)
            return r, size

    def request(self, type: int, payload: bytes = b"", *, op_s: float = 0.0, reply_max: Optional[int] = None,
                gate: bool = True, attempts: Optional[int] = None) -> protocol.Reply:
        """Send one request and return its reply (any status), resending as the delivery rules say.

        Parameters
        ----------
        op_s
            Time the board needs for the operation, added to the timeout.
        reply_max
            Largest reply payload expected (default: the board's maximum payload).
        gate
            Apply the link-quality gate (the caller's frames cannot get any smaller).
        attempts
            Give up after this many attempts by raising ``_ChunkFailed`` (for ``transfer``), instead of
            ``LinkLost`` after ``timing.max_attempts``.

        Raises
        ------
        LinkLost
            Transport gone, too many attempts, or the link-quality gate tripped.
        """
        name = W.TYPE_NAMES.get(type, f"0x{type:02x}")
        t = self.timing
        op_s = op_s + self.busy_s
        if reply_max is None:
            reply_max = self.hello_info.max_payload if self.hello_info else W.MAX_PAYLOAD
        n_in = W.encoded_size(reply_max + W.OVERHEAD) + 2
        try:
            frame = self.conn.send_request(type, payload)
        except protocol.LocalProtocolError:
            # A previous request was abandoned mid-flight by an exception: start clean.
            self.conn.abandon()
            frame = self.conn.send_request(type, payload)
        self.stats.requests += 1
        n_timeouts = 0
        for attempt in range(1, (attempts or t.max_attempts) + 1):
            self.stats.attempts += 1
            self.stats.bytes_out += len(frame)
            try:
                self.transport.write(frame)
                outcome = self._await(t.timeout(len(frame), n_in, op_s, n_timeouts, self.transport.baudrate))
            except TransportError as e:
                self.conn.abandon()
                raise LinkLost(f"link lost during {name}: {e}") from None
            except protocol.RemoteProtocolError as e:
                self.conn.resync()
                raise LinkLost(f"link lost during {name}: protocol error: {e}") from None
            # Only small frames (gate on) count towards link quality: big ones fail more often on a fine link.
            if isinstance(outcome, protocol.Reply):
                if gate:
                    self._window.append(False)
                return outcome
            if gate:
                self._window.append(True)
            if outcome is None:
                self.stats.timeouts += 1
                n_timeouts += 1
            elif outcome.reason == "nak":
                self.stats.resends_nak += 1
            else:
                self.stats.resends_damaged += 1
            if gate and len(self._window) == t.quality_window and sum(self._window) > t.quality_max_failed:
                self.conn.abandon()
                raise LinkLost(f"link too noisy during {name}: {sum(self._window)} of the last {t.quality_window} "
                               "frames were damaged or lost (check cable, baud rate and ground)")
        self.conn.abandon()
        if attempts:
            raise _ChunkFailed()
        raise LinkLost(f"link lost during {name}: no good reply after {t.max_attempts} attempts "
                       f"({n_timeouts} timeouts)")

    def _await(self, timeout: float):
        """Reply, Resend, or None on timeout."""
        clock = self.transport.monotonic
        deadline = clock() + timeout
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return None
            data = self.transport.read(remaining)
            if not data:
                continue
            self.stats.bytes_in += len(data)
            resend = None
            for ev in self.conn.receive_data(data):
                if isinstance(ev, protocol.Reply):
                    return ev
                resend = ev
            if resend is not None:
                return resend

    def _ok(self, reply: protocol.Reply, name: str, detail: str = "") -> bytes:
        if reply.status != W.OK:
            raise BoardError(name, reply.status, detail=detail,
                             board_table=self.hello_info.table_desc() if self.hello_info else None)
        return reply.payload

    # -- requests --

    def hello(self, *, gate: bool = True) -> Hello:
        """HELLO: who the board is and which table it runs."""
        r = self.request(W.T_HELLO, reply_max=1024, gate=gate)
        h = Hello.from_payload(self._ok(r, "HELLO"))
        self.hello_info = h
        self.conn.max_payload = h.max_payload
        self._clamp()
        return h

    def _need_hello(self) -> Hello:
        return self.hello_info if self.hello_info is not None else self.hello()

    def set_codes(self, codes: dict) -> None:
        """SET_CODES for each knob given (name -> list of int, one per group), in chunks the board accepts."""
        h = self._need_hello()
        names = [k.name for k in h.knobs]
        for name, values in codes.items():
            i = names.index(name)
            k = h.knobs[i]
            values = [int(v) for v in values]
            w = M.code_width(k.bits)
            first = 0
            while first < len(values):
                r, size = self.transfer(
                    W.T_SET_CODES, lambda size: M.pack_set_codes(i, first, values[first:first + max(1, size // w)],
                                                                 k.bits), op_s=h.op_ms / 1000.0)
                n = len(values[first:first + max(1, size // w)])
                self._ok(r, "SET_CODES", f"(knob {name}, groups {first}..{first + n - 1})")
                first += n

    def measure(self, window_ms: float, monitor: Optional[Sequence[int]] = None) -> MeasureResult:
        """MEASURE one window, then MEASURE_READ the remaining pages."""
        h = self._need_hello()
        window_us = int(round(window_ms * 1000.0))
        if window_us <= 0 or window_us > 0xFFFFFFFF:
            raise ValueError(f"window_ms must lie in (0, {0xFFFFFFFF / 1000:.0f}], got {window_ms!r}")
        op_s = (window_ms / 1000.0 / max(h.speedup, 1e-9) + h.measure_ms_per_s * window_ms / 1e6
                + h.op_ms / 1000.0)
        # MEASURE runs the window and returns the header only (page 0): it must not be abandoned and re-run for
        # a smaller page, so all data comes with MEASURE_READ, whose pages follow the adaptive chunk.
        r = self.request(W.T_MEASURE, M.pack_measure(window_us, list(monitor) if monitor is not None else None, 0),
                         op_s=op_s, reply_max=64)
        page = self._page(self._ok(r, "MEASURE"))
        counts = list(page["counts"])
        proxies = list(page["proxies"])
        n = page["n"]
        while len(counts) < n:
            r, _ = self.transfer(W.T_MEASURE_READ,
                                 lambda size: M.pack_measure_read(page["meas_id"], len(counts), max(1, size // 8)),
                                 op_s=h.op_ms / 1000.0, reply_extra=32)
            nxt = self._page(self._ok(r, "MEASURE_READ"))
            if nxt["meas_id"] != page["meas_id"] or nxt["first"] != len(counts) or not nxt["counts"]:
                raise protocol.RemoteProtocolError("MEASURE_READ returned the wrong page")
            counts += nxt["counts"]
            proxies += nxt["proxies"]
        return MeasureResult(page["meas_id"], page["window_us"], page["hw_us"], page["temp_mk"], counts, proxies)

    @staticmethod
    def _page(payload: bytes) -> dict:
        try:
            return M.unpack_measure_page(payload)
        except ValueError as e:
            raise LinkLost(f"malformed measurement page from the board: {e}") from None

    def flash_begin(self, gen: int, length: int, crc: int, uid: str, sha: bytes) -> protocol.Reply:
        """FLASH_BEGIN; returns the raw reply (the flasher maps E_IDENT and E_GEN itself)."""
        h = self._need_hello()
        sectors = (nvm.HEADER_SIZE + length + h.sector_size - 1) // h.sector_size
        return self.request(W.T_FLASH_BEGIN, M.pack_begin(gen, length, crc, uid, sha), reply_max=1,
                            op_s=(sectors * h.erase_ms + h.op_ms) / 1000.0)

    def flash_data(self, offset: int, data: bytes) -> None:
        """FLASH_DATA of exactly ``data`` at ``offset`` (one request; see ``write_bulk`` for adaptive chunks)."""
        r = self.request(W.T_FLASH_DATA, M.pack_data(offset, data), reply_max=0,
                         op_s=self._need_hello().op_ms / 1000.0)
        self._ok(r, "FLASH_DATA", f"(offset {offset}, {len(data)} B)")

    def write_bulk(self, offset: int, data: bytes) -> int:
        """FLASH_DATA of as much of ``data`` as the adaptive chunk allows, at ``offset``; bytes written."""
        r, size = self.transfer(W.T_FLASH_DATA, lambda size: M.pack_data(offset, data[:size]),
                                op_s=self._need_hello().op_ms / 1000.0)
        n = len(data[:size])
        self._ok(r, "FLASH_DATA", f"(offset {offset}, {n} B)")
        return n

    def _crc_time(self, length: int) -> float:
        h = self._need_hello()
        return h.op_ms / 1000.0 * (1 + length // 16384)

    def flash_verify(self, length: int) -> protocol.Reply:
        return self.request(W.T_FLASH_VERIFY, reply_max=8, op_s=self._crc_time(length))

    def flash_commit(self, gen: int, crc: int, length: int) -> protocol.Reply:
        return self.request(W.T_FLASH_COMMIT, M.pack_commit(gen, crc), reply_max=9,
                            op_s=2 * self._crc_time(length))

    def read_table(self, bank: int = M.NO_BANK) -> tuple[int, int, int, bytes]:
        """READ_TABLE all of a bank's table: (bank, generation, crc, data). Raises BoardError when empty."""
        h = self._need_hello()
        data = bytearray()
        total = None
        got = None
        while total is None or len(data) < total:
            r, _ = self.transfer(W.T_READ_TABLE, lambda size: M.pack_read_table(bank, len(data), min(size, 0xFFFF)),
                                 op_s=h.op_ms / 1000.0, reply_extra=13)
            try:
                b, gen, crc, tot, chunk = M.unpack_table_chunk(self._ok(r, "READ_TABLE"))
            except ValueError as e:
                raise LinkLost(f"malformed READ_TABLE reply: {e}") from None
            if got is None:
                got, total = (b, gen, crc), tot
            elif (b, gen, crc, tot) != got + (total,):
                raise VerifyChanged("the table changed while it was being read")
            if not chunk and len(data) < total:
                raise LinkLost("READ_TABLE returned no data")
            data += chunk
        assert got is not None
        return got[0], got[1], got[2], bytes(data)

    # -- the on-board tracker --

    def _tracker_reply(self, r: protocol.Reply, name: str) -> TrackerStatus:
        if r.status != W.OK:
            raise BoardError(name, r.status, board_table=self.hello_info.table_desc() if self.hello_info else None,
                             detail="(the active table has no tracker section, or it does not fit this chip)"
                             if r.status == W.E_TABLE else "")
        st = TrackerStatus.from_payload(r.payload)
        h = self.hello_info
        if st.running and h is not None:
            sub_s = st.window_s / st.splits  # a request may wait for the sub-window in progress
            self.busy_s = sub_s / max(h.speedup, 1e-9) + h.measure_ms_per_s * sub_s / 1e3
        elif not st.running:
            self.busy_s = 0.0
        return st

    def track_start(self) -> TrackerStatus:
        """TRACK_START: start the on-board tracker afresh from the flashed table (BoardError E_TABLE when the
        active table has no tracker section)."""
        self._need_hello()
        return self._tracker_reply(self.request(W.T_TRACK_START, reply_max=256), "TRACK_START")

    def track_stop(self, revert: bool = False) -> TrackerStatus:
        """TRACK_STOP: stop the tracker; its codes stay in RAM, or with ``revert`` the flashed table's come back."""
        self._need_hello()
        return self._tracker_reply(self.request(W.T_TRACK_STOP, M.pack_track_stop(revert), reply_max=256),
                                   "TRACK_STOP")

    def track_status(self, detail: bool = False) -> TrackerStatus:
        """TRACK_STATUS; with ``detail`` also each group's code moves (RAM codes against the active table) and the
        tracker's per-group flags (frozen groups and their reasons)."""
        h = self._need_hello()
        st = self._tracker_reply(self.request(W.T_TRACK_STATUS, reply_max=256), "TRACK_STATUS")
        if not detail:
            return st
        ram = self.read_ram_codes()
        moves = None
        if h.has_table:
            flashed = self.active_table()[0]
            moves = {k: [int(a) - int(b) for a, b in zip(ram[k], flashed[k])] for k in ram}
        flags = None
        if st.windows or st.running or st.why != "not started since boot":
            try:
                flags = self._read_track(M.READ_FLAGS, 0)
            except BoardError:
                flags = None
        import dataclasses

        return dataclasses.replace(st, moves=moves, flags=flags)

    def _read_track(self, what: int, knob: int) -> list:
        h = self._need_hello()
        k = h.knobs[knob]
        width = 1 if what == M.READ_FLAGS else M.code_width(k.bits)
        out: list = []
        total = None
        while total is None or len(out) < total:
            r, _ = self.transfer(W.T_TRACK_READ,
                                 lambda size: M.pack_track_read(what, knob, len(out), max(1, min(0xFFFF, size // width))),
                                 op_s=h.op_ms / 1000.0, reply_extra=16)
            payload = self._ok(r, "TRACK_READ")
            _, _, first, tot, values = decode_reply(M.unpack_track_read_reply, payload, "TRACK_READ reply", k.bits)
            if first != len(out) or (not values and len(out) < tot):
                raise protocol.RemoteProtocolError("TRACK_READ returned the wrong piece")
            total = tot
            out += values
        return out

    def read_ram_codes(self) -> dict:
        """The codes the board runs now (RAM), per knob: the tracker's while it runs or after it stopped, else the
        flashed table's or what SET_CODES set."""
        h = self._need_hello()
        return {k.name: self._read_track(M.READ_CODES, i) for i, k in enumerate(h.knobs)}

    def active_table(self) -> tuple[dict, Optional[dict], dict]:
        """The active table from the NVM (READ_TABLE, decoded): (codes per knob, its tracker section in the
        firmware's units or None, where: bank, generation, crc). Raises BridgeError when the board has no table
        or what was read does not decode."""
        from .errors import BridgeError

        h = self.hello()
        if not h.has_table:
            raise BridgeError(f"board {h.uid} has no table in its NVM (it runs the reference codes)",
                              board_table=h.table_desc())
        bank, gen, crc, data = self.read_table()
        if nvm.crc32(data) != crc:
            raise BridgeError(f"the table read from board {h.uid} does not match its CRC 0x{crc:08x} (read again)",
                              board_table=h.table_desc())
        try:
            knobs, tracker = nvm.decode_payload(data)
        except ValueError as e:
            raise BridgeError(f"board {h.uid}'s active table does not decode: {e}", board_table=h.table_desc()) \
                from None
        return ({k["name"]: list(k["codes"]) for k in knobs}, tracker,
                {"bank": nvm.BANK_NAMES[bank], "generation": gen, "crc": f"0x{crc:08x}"})

    def reset(self) -> Hello:
        """RESET the board, then HELLO: returns the new boot's HELLO (its boot count has moved on)."""
        h = self._need_hello()
        self._ok(self.request(W.T_RESET, reply_max=0, op_s=h.op_ms / 1000.0), "RESET")
        return self.hello()

    def rollback(self, mode: int, gen: int = 0, crc: int = 0) -> protocol.Reply:
        """ROLLBACK: query (``M.ROLLBACK_QUERY``) or activate (``M.ROLLBACK_DO``, naming the active table's
        generation and CRC) the previous table; the raw reply (``firmware_bridge.rollback`` maps the statuses)."""
        h = self._need_hello()
        op_s = h.op_ms / 1000.0 + (2 * self._crc_time(h.table_len) if mode == M.ROLLBACK_DO else 0.0)
        return self.request(W.T_ROLLBACK, M.pack_rollback(mode, gen, crc), reply_max=13, op_s=op_s)

    def close(self) -> None:
        self.transport.close()


class _ChunkFailed(Exception):
    """A bulk request above the smallest chunk failed three times: retry it smaller (internal to transfer)."""
