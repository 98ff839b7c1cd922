"""The host side of the wire protocol, sans-IO: bytes in, events out; requests in, bytes out.

Theory of operation
-------------------
``ClientConnection`` is the host's half of a stop-and-wait link. It owns the sequence number and the frame
decoder and nothing else: it never reads a clock or touches a port (``firmware_bridge.client`` does that).

- ``send_request(type, payload)`` gives the bytes of a new request with the next sequence number and moves to
  AWAITING. Only one request may be in flight.
- ``resend()`` gives the same bytes again (same sequence number): the board answers a repeat from its cache.
- ``receive_data(data)`` returns events: ``Reply`` when the reply to the request in flight arrived (back to
  IDLE), ``Resend`` when the board sent a NAK or a damaged frame arrived while a request is in flight (the caller
  should resend at once rather than wait for a timeout). Replies with another sequence number are late copies of
  earlier replies: they are counted in ``stale`` and dropped.
- A frame the host cannot make sense of (another protocol version, a reply of the wrong type to our sequence
  number, a request frame from the board) raises ``RemoteProtocolError`` and poisons the connection (state
  ERROR) until ``resync()``: a link in that state is not silently reused.
- Using the connection wrongly (a second request in flight, a payload too large) raises ``LocalProtocolError``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Union

from .firmware import wire

__all__ = [
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "Reply",
    "Resend",
    "ClientConnection",
    "cobs_codec",
]


class ProtocolError(Exception):
    """Base of protocol errors; abstract: raise LocalProtocolError or RemoteProtocolError."""

    def __init__(self, msg: str):
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise LocalProtocolError or RemoteProtocolError")
        super().__init__(msg)


class LocalProtocolError(ProtocolError):
    """This host asked for something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The board sent something the protocol does not allow."""


@dataclass(frozen=True)
class Reply:
    """The reply to the request in flight."""

    type: int
    seq: int
    status: int
    payload: bytes

    @property
    def request_type(self) -> int:
        return self.type & ~wire.REPLY & 0xFF


@dataclass(frozen=True)
class Resend:
    """Resend the request in flight now: ``reason`` is ``"nak"`` (the board got a damaged frame) or
    ``"damaged"`` (a damaged frame arrived here)."""

    reason: str


Event = Union[Reply, Resend]

IDLE = "IDLE"
AWAITING = "AWAITING"
ERROR = "ERROR"


def cobs_codec() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """(encode, decode): the C ``cobs`` package when installed (1 us/KiB), else the firmware's pure Python."""
    try:
        from cobs import cobs as ccobs
    except ImportError:  # pragma: no cover - cobs is a dependency
        return wire.cobs_encode, wire.cobs_decode
    return ccobs.encode, ccobs.decode


class ClientConnection:
    """Host half of the link (see the module docstring).

    Parameters
    ----------
    first_seq
        Sequence number before the first request (the first request uses the next one). Random by default, so
        that a new host process does not repeat the last request of an old one byte for byte (the board would
        answer that from its cache).
    max_payload
        Largest payload this side sends (the board's limit, from HELLO).
    max_reply
        Largest reply payload accepted; a longer frame is dropped as damaged (bounded receive buffer).
    """

    def __init__(self, *, first_seq: Optional[int] = None, max_payload: int = wire.MAX_PAYLOAD,
                 max_reply: int = 16384):
        self._encode, decode = cobs_codec()
        self.max_payload = max_payload
        self.max_reply = max_reply
        self._decoder = wire.Decoder(max_reply, decode)
        self.seq = os.urandom(1)[0] if first_seq is None else first_seq & 0xFF
        self.state = IDLE
        self._pending: Optional[tuple[int, int, bytes]] = None  # type, seq, frame bytes
        self.stale = 0
        self.damaged = 0
        self.naks = 0

    def send_request(self, type: int, payload: bytes = b"") -> bytes:
        """Bytes of a new request; the connection then awaits its reply."""
        if self.state == ERROR:
            raise LocalProtocolError("connection is in ERROR state after a protocol error; call resync()")
        if self.state == AWAITING:
            raise LocalProtocolError("a request is already in flight (stop-and-wait)")
        if type & wire.REPLY:
            raise LocalProtocolError(f"0x{type:02x} is a reply type, not a request")
        if len(payload) > self.max_payload:
            raise LocalProtocolError(f"payload of {len(payload)} B exceeds the maximum of {self.max_payload} B")
        self.seq = (self.seq + 1) & 0xFF
        frame = wire.encode_frame(type, self.seq, wire.OK, payload, encode=self._encode)
        self._pending = (type, self.seq, frame)
        self.state = AWAITING
        return frame

    def resend(self) -> bytes:
        """The request in flight, byte for byte."""
        if self.state != AWAITING or self._pending is None:
            raise LocalProtocolError("no request in flight to resend")
        return self._pending[2]

    def abandon(self) -> None:
        """Give up on the request in flight; a late reply to it will be dropped as stale."""
        if self.state == AWAITING:
            self.state = IDLE
            self._pending = None

    def resync(self) -> None:
        """Leave ERROR: drop buffered bytes and any request in flight."""
        self._decoder = wire.Decoder(self.max_reply, self._decoder._decode)
        self.state = IDLE
        self._pending = None

    def receive_data(self, data: bytes) -> list[Event]:
        """Events for the bytes received (see the module docstring). Raises RemoteProtocolError."""
        if self.state == ERROR:
            raise RemoteProtocolError("can't receive data when the connection is in ERROR state")
        events: list[Event] = []
        try:
            for ev in self._decoder.feed(data):
                out = self._event(ev)
                if out is not None:
                    events.append(out)
        except RemoteProtocolError:
            self.state = ERROR
            self._pending = None
            raise
        return events

    def _event(self, ev: Union[wire.Frame, wire.BadFrame]) -> Optional[Event]:
        if isinstance(ev, wire.BadFrame):
            self.damaged += 1
            return Resend("damaged") if self.state == AWAITING else None
        if ev.version != wire.VERSION:
            raise RemoteProtocolError(f"board speaks protocol version {ev.version}; this host speaks {wire.VERSION}")
        if ev.type == wire.T_NAK:
            self.naks += 1
            return Resend("nak") if self.state == AWAITING else None
        if not ev.type & wire.REPLY:
            raise RemoteProtocolError(
                f"received a request frame (type 0x{ev.type:02x}): is the port looped back or another host on it?")
        if self.state != AWAITING or self._pending is None or ev.seq != self._pending[1]:
            self.stale += 1
            return None
        want = self._pending[0] | wire.REPLY
        if ev.type != want:
            raise RemoteProtocolError(
                f"reply type 0x{ev.type:02x} to request 0x{self._pending[0]:02x} (seq {ev.seq}); expected 0x{want:02x}")
        self.state = IDLE
        self._pending = None
        return Reply(ev.type, ev.seq, ev.status, bytes(ev.payload))
