# Payload layouts of every message, packed and unpacked by the same functions on the board and on the host.
#
# All integers are little-endian. ``s8`` is a string: u8 length, then that many UTF-8 bytes. Every unpack_*
# raises ValueError on a malformed payload (wrong length, bad string): the board answers E_LENGTH, the host
# raises RemoteProtocolError. docs/protocol.md describes each layout in prose; the functions are the truth.
#
# MicroPython subset: struct.pack/unpack_from only (no struct.Struct), plain dicts and lists.

import struct

SHARING = ("neuron", "core", "chip")  # sharing code -> name, as in HELLO and the NVM table
DACS = ("linear", "coarse_fine")  # DAC kind code -> name, as in HELLO
NO_BANK = 0xFF
PROXY_NONE = -0x80000000  # proxy value (i32 fA) meaning "not observed in this window"
PROXY_MAX = 0x7FFFFFFF


class Reader:
    """Sequential reader over a payload; every read checks the length and raises ValueError when short."""

    __slots__ = ("data", "pos")

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("payload too short")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def one(self, fmt):
        return self.take(fmt)[0]

    def raw(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("payload too short")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def s8(self):
        n = self.one("<B")
        b = self.raw(n)
        try:
            return b.decode()
        except Exception:
            raise ValueError("string is not UTF-8")

    def rest(self):
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def end(self):
        if self.pos != len(self.data):
            raise ValueError("payload has %d trailing bytes" % (len(self.data) - self.pos))


def s8(text):
    b = text.encode()
    if len(b) > 255:
        raise ValueError("string longer than 255 bytes")
    return struct.pack("<B", len(b)) + b


def code_width(bits):
    """Bytes per code on the wire and in NVM: 1 up to 8 bits, else 2."""
    return 1 if bits <= 8 else 2


def pack_codes(codes, bits):
    if code_width(bits) == 1:
        return bytes(codes)
    out = bytearray()
    for c in codes:
        out += struct.pack("<H", c)
    return bytes(out)


def unpack_codes(data, n, bits):
    if code_width(bits) == 1:
        if len(data) != n:
            raise ValueError("wrong number of codes")
        return list(data)
    if len(data) != 2 * n:
        raise ValueError("wrong number of codes")
    return list(struct.unpack("<%dH" % n, data))


# HELLO -------------------------------------------------------------------------------------------------------------
#
# Reply: proto u8, fw major/minor/patch u8, uid s8, profile s8, profile_sha256 32 B, model s8, proxy_channels s8
# ("all" or "one_per_core"), n_neurons u32,
# n_cores u32, dt_ms f64, speedup f64, counter_bits u8, max_payload u16, bank_size u32, sector_size u32,
# erase_ms u16 (per sector), op_ms u16 (any other request), measure_ms_per_s u32 (board compute time per model
# second, 0 on real hardware), active_bank u8 (0xFF: none), generation u32, table_crc u32, table_len u32,
# boot_count u32, n_knobs u8, then per knob: name s8, sharing u8, dac u8, bits u8, code_ref u16, n_groups u32.

HELLO_FIELDS_1 = "<BBBB"
HELLO_FIELDS_2 = "<IIddBHIIHHI"
HELLO_FIELDS_3 = "<BIIIIB"
KNOB_FIELDS = "<BBBHI"


def pack_hello(h):
    out = bytearray(struct.pack(HELLO_FIELDS_1, h["proto"], h["fw"][0], h["fw"][1], h["fw"][2]))
    out += s8(h["uid"]) + s8(h["profile"])
    sha = h["profile_sha256"]
    if len(sha) != 32:
        raise ValueError("profile_sha256 must be 32 bytes")
    out += sha + s8(h["model"]) + s8(h["proxy_channels"])
    out += struct.pack(HELLO_FIELDS_2, h["n_neurons"], h["n_cores"], h["dt_ms"], h["speedup"],
                       h["counter_bits"], h["max_payload"], h["bank_size"], h["sector_size"],
                       h["erase_ms"], h["op_ms"], h["measure_ms_per_s"])
    knobs = h["knobs"]
    out += struct.pack(HELLO_FIELDS_3, h["active_bank"], h["generation"], h["table_crc"], h["table_len"],
                       h["boot_count"], len(knobs))
    for k in knobs:
        out += s8(k["name"]) + struct.pack(KNOB_FIELDS, k["sharing"], k["dac"], k["bits"], k["code_ref"],
                                           k["n_groups"])
    return bytes(out)


def unpack_hello(payload):
    r = Reader(payload)
    proto, a, b, c = r.take(HELLO_FIELDS_1)
    h = {"proto": proto, "fw": (a, b, c), "uid": r.s8(), "profile": r.s8(), "profile_sha256": r.raw(32),
         "model": r.s8(), "proxy_channels": r.s8()}
    (h["n_neurons"], h["n_cores"], h["dt_ms"], h["speedup"], h["counter_bits"], h["max_payload"],
     h["bank_size"], h["sector_size"], h["erase_ms"], h["op_ms"], h["measure_ms_per_s"]) = r.take(HELLO_FIELDS_2)
    (h["active_bank"], h["generation"], h["table_crc"], h["table_len"], h["boot_count"],
     n_knobs) = r.take(HELLO_FIELDS_3)
    knobs = []
    for _ in range(n_knobs):
        name = r.s8()
        sharing, dac, bits, code_ref, n_groups = r.take(KNOB_FIELDS)
        if sharing >= len(SHARING) or dac >= len(DACS) or not 1 <= bits <= 16:
            raise ValueError("bad knob descriptor")
        knobs.append({"name": name, "sharing": sharing, "dac": dac, "bits": bits, "code_ref": code_ref,
                      "n_groups": n_groups})
    r.end()
    h["knobs"] = knobs
    return h


# SET_CODES: knob index u8, first group u32, codes (1 or 2 B each). Reply: empty. -------------------------------

def pack_set_codes(knob, first, codes, bits):
    return struct.pack("<BI", knob, first) + pack_codes(codes, bits)


def unpack_set_codes_head(payload):
    r = Reader(payload)
    knob, first = r.take("<BI")
    return knob, first, r.rest()


# MEASURE: window_us u32, page u16 (neurons in the reply page; 0: header only, 0xFFFF: as many as fit),
#   n_monitor u16, n_monitor x neuron index u32 (0 monitors: the chip chooses).
# MEASURE_READ: meas_id u16, first u32, page u16.
# Reply to both, one page: meas_id u16, window_us u32, hw_us u32, temperature_mK u32 (0: unknown), n u32,
# first u32, k u16, then k x count u32, then k x proxy i32 in fA (PROXY_NONE: not observed).

MEAS_HEAD = "<HIIIIIH"


def pack_measure(window_us, monitor, page=0):
    mon = monitor or []
    return struct.pack("<IHH", window_us, page, len(mon)) + struct.pack("<%dI" % len(mon), *mon)


def unpack_measure(payload):
    r = Reader(payload)
    window_us, page, n = r.take("<IHH")
    mon = list(r.take("<%dI" % n)) if n else None
    r.end()
    return window_us, mon, page


def pack_measure_read(meas_id, first, page=0):
    return struct.pack("<HIH", meas_id, first, page)


def unpack_measure_read(payload):
    r = Reader(payload)
    out = r.take("<HIH")
    r.end()
    return out


def measure_page_size(max_payload, want=0):
    """Neurons per MEASURE reply page: ``want`` (0: none, header only) within what ``max_payload`` allows."""
    most = (max_payload - struct.calcsize(MEAS_HEAD)) // 8
    return min(want, most)


def pack_measure_page(meas_id, window_us, hw_us, temp_mk, n, first, counts, proxies):
    k = len(counts)
    return (struct.pack(MEAS_HEAD, meas_id, window_us, hw_us, temp_mk, n, first, k)
            + struct.pack("<%dI" % k, *counts) + struct.pack("<%di" % k, *proxies))


def unpack_measure_page(payload):
    r = Reader(payload)
    meas_id, window_us, hw_us, temp_mk, n, first, k = r.take(MEAS_HEAD)
    counts = r.take("<%dI" % k)
    proxies = r.take("<%di" % k)
    r.end()
    if first + k > n:
        raise ValueError("page runs past the neuron count")
    return {"meas_id": meas_id, "window_us": window_us, "hw_us": hw_us, "temp_mk": temp_mk, "n": n,
            "first": first, "counts": counts, "proxies": proxies}


# FLASH_BEGIN: generation u32, length u32, crc u32, uid s8, profile_sha256 32 B. Reply: bank u8.
# FLASH_DATA: offset u32, data. Reply: empty.
# FLASH_VERIFY: empty. Reply: crc u32, length u32 (what the board computed).
# FLASH_COMMIT: generation u32, crc u32. Reply: bank u8, generation u32, crc u32.
# READ_TABLE: bank u8 (0xFF: the active one), offset u32, length u16.
#   Reply: bank u8, generation u32, crc u32, table length u32, data.

def pack_begin(gen, length, crc, uid, sha):
    return struct.pack("<III", gen, length, crc) + s8(uid) + bytes(sha)


def unpack_begin(payload):
    r = Reader(payload)
    gen, length, crc = r.take("<III")
    uid = r.s8()
    sha = r.raw(32)
    r.end()
    return gen, length, crc, uid, sha


def pack_data(offset, data):
    return struct.pack("<I", offset) + bytes(data)


def unpack_data(payload):
    r = Reader(payload)
    return r.one("<I"), r.rest()


def pack_verify_reply(crc, length):
    return struct.pack("<II", crc, length)


def unpack_verify_reply(payload):
    r = Reader(payload)
    out = r.take("<II")
    r.end()
    return out


def pack_commit(gen, crc):
    return struct.pack("<II", gen, crc)


def unpack_commit(payload):
    r = Reader(payload)
    out = r.take("<II")
    r.end()
    return out


def pack_commit_reply(bank, gen, crc):
    return struct.pack("<BII", bank, gen, crc)


def unpack_commit_reply(payload):
    r = Reader(payload)
    out = r.take("<BII")
    r.end()
    return out


def pack_read_table(bank, offset, length):
    return struct.pack("<BIH", bank, offset, length)


def unpack_read_table(payload):
    r = Reader(payload)
    out = r.take("<BIH")
    r.end()
    return out


def pack_table_chunk(bank, gen, crc, total, data):
    return struct.pack("<BIII", bank, gen, crc, total) + bytes(data)


def unpack_table_chunk(payload):
    r = Reader(payload)
    bank, gen, crc, total = r.take("<BIII")
    return bank, gen, crc, total, r.rest()


# ROLLBACK: mode u8 (0 query, 1 roll back), generation u32, crc u32 (of the active table the host means to leave;
#   checked by mode 1 only). Reply: bank u8, generation u32, crc u32, length u32 of the table a rollback activates
#   (query) or activated (roll back).

ROLLBACK_QUERY = 0
ROLLBACK_DO = 1


def pack_rollback(mode, gen=0, crc=0):
    return struct.pack("<BII", mode, gen, crc)


def unpack_rollback(payload):
    r = Reader(payload)
    out = r.take("<BII")
    r.end()
    return out


def pack_rollback_reply(bank, gen, crc, length):
    return struct.pack("<BIII", bank, gen, crc, length)


def unpack_rollback_reply(payload):
    r = Reader(payload)
    out = r.take("<BIII")
    r.end()
    return out
