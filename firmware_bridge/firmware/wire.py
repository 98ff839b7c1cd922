# Wire framing shared by the board firmware and the host: COBS, CRC-32, frame layout, stream decoder.
#
# Theory of operation
# -------------------
# A frame on the wire is
#
#     0x00  COBS( ver:u8 | type:u8 | seq:u8 | status:u8 | payload | crc32:u32le )  0x00
#
# The CRC-32 (binascii.crc32, the IEEE polynomial) covers ver..payload. COBS removes every 0x00 from the frame
# body, so 0x00 only ever delimits frames: a receiver resynchronises after line noise by waiting for the next
# 0x00. A sender also *starts* every frame with 0x00, so that a partial frame left in the receiver's buffer by
# noise is closed (and rejected) before the real frame begins; empty frames between two delimiters are ignored.
#
# The decoder never raises on peer bytes: a damaged frame (bad COBS, bad CRC, too short, too long) comes out as a
# BadFrame event, because the board must answer it with a NAK rather than crash, and the host must resend at
# once. Its buffer is bounded: a frame longer than the negotiated maximum is discarded as it arrives and
# reported as TOO_LONG when its delimiter finally shows up.
#
# MicroPython subset: this module runs unchanged on a board. No typing, dataclasses, enum, f-strings, numpy or
# struct.Struct objects; int constants; plain classes with __slots__.

import binascii
import struct

VERSION = 1  # protocol version, carried in every frame

# Message types. A reply has the request's type with REPLY set; NAK is the board's answer to a damaged frame.
T_HELLO = 0x01
T_SET_CODES = 0x02
T_MEASURE = 0x03
T_MEASURE_READ = 0x04
T_FLASH_BEGIN = 0x10
T_FLASH_DATA = 0x11
T_FLASH_VERIFY = 0x12
T_FLASH_COMMIT = 0x13
T_READ_TABLE = 0x14
T_RESET = 0x20
REPLY = 0x80
T_NAK = 0xFF

TYPE_NAMES = {
    T_HELLO: "HELLO",
    T_SET_CODES: "SET_CODES",
    T_MEASURE: "MEASURE",
    T_MEASURE_READ: "MEASURE_READ",
    T_FLASH_BEGIN: "FLASH_BEGIN",
    T_FLASH_DATA: "FLASH_DATA",
    T_FLASH_VERIFY: "FLASH_VERIFY",
    T_FLASH_COMMIT: "FLASH_COMMIT",
    T_READ_TABLE: "READ_TABLE",
    T_RESET: "RESET",
    T_NAK: "NAK",
}

# ROLLBACK (docs/protocol.md section 3 and "Rollback"): make the previous table in the other bank the active one.
T_ROLLBACK = 0x15
TYPE_NAMES[T_ROLLBACK] = "ROLLBACK"

# Status codes, one byte in every reply. The one table from code to name and meaning (docs/protocol.md lists it;
# tests check the two agree).
OK = 0
E_FRAME = 1
E_VERSION = 2
E_TYPE = 3
E_LENGTH = 4
E_STATE = 5
E_IDENT = 6
E_RANGE = 7
E_VERIFY = 8
E_GEN = 9
E_TABLE = 10
E_NVM = 11
E_CHIP = 12
E_INTERNAL = 13

STATUS_TEXT = {
    OK: ("OK", "done"),
    E_FRAME: ("E_FRAME", "frame damaged (bad COBS, bad CRC, too short or too long); resend"),
    E_VERSION: ("E_VERSION", "protocol version not supported by this firmware"),
    E_TYPE: ("E_TYPE", "unknown message type"),
    E_LENGTH: ("E_LENGTH", "payload malformed or of the wrong length"),
    E_STATE: ("E_STATE", "not allowed in the board's current state (no flash session, or verify first)"),
    E_IDENT: ("E_IDENT", "table was made for another chip (UID or profile hash differ)"),
    E_RANGE: ("E_RANGE", "offset, index or code out of range"),
    E_VERIFY: ("E_VERIFY", "CRC of the written bank does not match the announced CRC"),
    E_GEN: ("E_GEN", "generation must be the active generation + 1"),
    E_TABLE: ("E_TABLE", "table payload malformed or does not fit this board's knobs"),
    E_NVM: ("E_NVM", "non-volatile memory operation failed"),
    E_CHIP: ("E_CHIP", "the chip failed to carry out the request"),
    E_INTERNAL: ("E_INTERNAL", "firmware error"),
}

# Decoder events -------------------------------------------------------------------------------------------------

BAD_COBS = 1
BAD_CRC = 2
TOO_SHORT = 3
TOO_LONG = 4

BAD_REASONS = {BAD_COBS: "bad COBS", BAD_CRC: "bad CRC", TOO_SHORT: "too short", TOO_LONG: "too long"}

HEADER_SIZE = 4  # ver, type, seq, status
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
MAX_PAYLOAD = 1040  # 1024 B of flash data + offset + room; the board reports its own value in HELLO


class Frame:
    """A frame whose COBS and CRC were good."""

    __slots__ = ("version", "type", "seq", "status", "payload")

    def __init__(self, version, type, seq, status, payload):
        self.version = version
        self.type = type
        self.seq = seq
        self.status = status
        self.payload = payload

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.version == other.version
            and self.type == other.type
            and self.seq == other.seq
            and self.status == other.status
            and bytes(self.payload) == bytes(other.payload)
        )

    def __repr__(self):
        return "Frame(version=%d, type=0x%02x, seq=%d, status=%d, payload=%d B)" % (
            self.version, self.type, self.seq, self.status, len(self.payload))


class BadFrame:
    """A damaged frame: reason is one of BAD_COBS, BAD_CRC, TOO_SHORT, TOO_LONG; size its encoded length."""

    __slots__ = ("reason", "size")

    def __init__(self, reason, size):
        self.reason = reason
        self.size = size

    def __eq__(self, other):
        return isinstance(other, BadFrame) and self.reason == other.reason and self.size == other.size

    def __repr__(self):
        return "BadFrame(%s, %d B)" % (BAD_REASONS.get(self.reason, "?"), self.size)


# COBS -------------------------------------------------------------------------------------------------------------

def cobs_encode(data):
    """COBS-encode ``data`` (no delimiter added). Same output as the ``cobs`` package.

    Works on the zero-separated parts: each part becomes blocks of at most 254 bytes, a full block (code 0xFF)
    carrying no implied zero. The subtle case is a part whose length is a positive multiple of 254: if a zero
    follows it, a code 0x01 must still be emitted for that zero; at the very end of the data it must not (the
    final implied zero is never sent). Getting this wrong loses the 0x00 after exactly 254 non-zero bytes.
    """
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    last = len(parts) - 1
    for k in range(len(parts)):
        part = parts[k]
        n = len(part)
        pos = 0
        while n - pos >= 254:
            out.append(0xFF)
            out += part[pos:pos + 254]
            pos += 254
        rest = n - pos
        if rest or k != last or n == 0:
            out.append(rest + 1)
            out += part[pos:]
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (without delimiter). Raises ValueError if it is not valid COBS."""
    data = bytes(data)
    out = bytearray()
    n = len(data)
    i = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside COBS data")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end")
        out += data[i + 1:end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encoded_size(n):
    """Largest COBS-encoded length of ``n`` raw bytes, delimiters excluded."""
    return n + 1 + n // 254


# Frames ------------------------------------------------------------------------------------------------------------

def frame_body(type, seq, status, payload, version=VERSION):
    """Un-encoded frame: header, payload and CRC-32 (little-endian)."""
    head = struct.pack("<BBBB", version & 0xFF, type & 0xFF, seq & 0xFF, status & 0xFF)
    crc = binascii.crc32(payload, binascii.crc32(head)) & 0xFFFFFFFF
    return head + bytes(payload) + struct.pack("<I", crc)


def encode_frame(type, seq, status, payload=b"", version=VERSION, encode=cobs_encode):
    """Bytes to put on the wire for one frame, both delimiters included."""
    return b"\x00" + encode(frame_body(type, seq, status, payload, version)) + b"\x00"


def parse_body(body):
    """Frame or BadFrame from a decoded frame body (after COBS)."""
    n = len(body)
    if n < OVERHEAD:
        return BadFrame(TOO_SHORT, n)
    crc = binascii.crc32(body[:n - CRC_SIZE]) & 0xFFFFFFFF
    if struct.unpack("<I", body[n - CRC_SIZE:])[0] != crc:
        return BadFrame(BAD_CRC, n)
    return Frame(body[0], body[1], body[2], body[3], body[HEADER_SIZE:n - CRC_SIZE])


class Decoder:
    """Turn a byte stream into frames. ``feed(data)`` returns a list of Frame and BadFrame events.

    Parameters
    ----------
    max_payload
        Largest payload accepted; longer frames are dropped as they arrive and reported as TOO_LONG, so the
        buffer never holds more than the encoded size of one maximal frame.
    decode
        COBS decoder raising on bad input (the host passes the C ``cobs`` package's, the board uses ours).
    """

    def __init__(self, max_payload=MAX_PAYLOAD, decode=cobs_decode):
        self.max_encoded = encoded_size(max_payload + OVERHEAD)
        self._decode = decode
        self._buf = bytearray()
        self._over = 0  # bytes dropped from an over-long frame, 0 while none

    def pending(self):
        """Number of bytes buffered for a frame not yet terminated."""
        return len(self._buf) + self._over

    def feed(self, data):
        events = []
        data = bytes(data)
        n = len(data)
        start = 0
        while start < n:
            i = data.find(b"\x00", start)
            if i < 0:
                self._take(data[start:])
                break
            self._take(data[start:i])
            if self._over:
                events.append(BadFrame(TOO_LONG, self._over))
            elif self._buf:
                events.append(self._parse(bytes(self._buf)))
            self._buf = bytearray()
            self._over = 0
            start = i + 1
        return events

    def _take(self, piece):
        if not piece:
            return
        if self._over or len(self._buf) + len(piece) > self.max_encoded:
            # Too long for any legal frame: count it but do not keep it (bounded buffer).
            self._over += len(self._buf) + len(piece)
            self._buf = bytearray()
        else:
            self._buf += piece

    def _parse(self, raw):
        try:
            body = self._decode(raw)
        except Exception:
            return BadFrame(BAD_COBS, len(raw))
        return parse_body(body)
