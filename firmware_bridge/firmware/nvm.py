# Non-volatile storage of gain tables: two banks (A/B), a header written last, newest valid generation wins.
#
# Theory of operation
# -------------------
# The flash is NOR-like: erase sets a whole sector to 0xFF, program can only clear bits (new = old AND data).
# It holds, in this order: bank A, bank B (``bank_size`` bytes each, whole sectors), and one boot-log sector.
#
# A bank is a 128-byte header followed by the table payload. The header names the generation, the payload's
# length and CRC-32, and the chip (UID, profile hash) the table was made for; it ends in its own CRC-32.
#
# Rule 1: the header, written last, is the only commit point. A flash erases the *inactive* bank (its header
#         sector first), programs the payload, and programs the header only after the payload's CRC checked out.
#         The active bank is never touched, so a power cut at any point leaves it whole.
# Rule 2: at boot the newest valid generation wins. A bank is valid when its header's magic, layout version and
#         CRC are good, its UID and profile hash are this board's, its payload CRC matches and the payload decodes
#         to a table that fits this board's knobs. Generations compare with serial-number arithmetic (mod 2**32),
#         so they may wrap.
# Rule 3: a new generation must be exactly the active generation + 1 (1 on an empty board): a host that lost
#         track cannot roll the board back to an older table by accident.
# Rule 4: a rollback (on purpose: ROLLBACK) revokes the active bank's header by clearing its magic (one program of
#         4 zero bytes, no erase): the header is no longer valid, so the other bank's table, when valid, wins at
#         boot. A torn clear leaves the magic either intact (the table stays active) or broken (the rollback
#         happened): never a mix. The next flash goes to the revoked bank with the generation it had.
#
# The boot log counts boots in unary: each boot clears one more bit of its sector; when the sector is all zero it
# is erased and the count starts over. It is a hint for the host (a changed count reveals a reset), never a
# commit point, so a torn write there costs nothing but a miscount.
#
# MicroPython subset: no typing, dataclasses, f-strings, struct.Struct; the flash object is injected.

import binascii
import struct

from . import messages

HEADER_SIZE = 128
MAGIC = b"EGTB"
LAYOUT_VERSION = 1
UID_MAX = 63
# magic, layout version, header size, generation, length, data crc, uid length, uid, profile sha256
HEADER_FMT = "<4sHHIIIB63s32s"
HEADER_CRC_AT = HEADER_SIZE - 4

TABLE_MAGIC = b"EGTP"
TABLE_VERSION = 1

SECTOR_SIZE = 4096
BANK_SIZE = 128 * 1024
N_BANKS = 2
BANK_NAMES = ("A", "B")


class PowerLoss(BaseException):
    """Raised by test flashes to simulate a power cut. A BaseException so that no firmware handler catches it."""


class RamFlash:
    """NOR flash in RAM (tests, and the MicroPython test process when no file is given)."""

    def __init__(self, size, sector_size=SECTOR_SIZE, image=None):
        self.size = size
        self.sector_size = sector_size
        self.mem = bytearray(image) if image is not None else bytearray(b"\xff" * size)

    def read(self, addr, n):
        return bytes(self.mem[addr:addr + n])

    def erase(self, addr):
        """Erase the sector starting at ``addr``."""
        self.mem[addr:addr + self.sector_size] = b"\xff" * self.sector_size

    def program(self, addr, data):
        self.mem[addr:addr + len(data)] = and_bytes(self.mem[addr:addr + len(data)], data)


# NVM image files --------------------------------------------------------------------------------------------------
#
# Where the NVM lives in a file (the board emulator, a board keeping its tables in a filesystem file), the file is
# an *image*: a 64-byte header, then the flash bytes. Header: magic "EICALNVM", image format version u16 (1),
# header size u16 (64), flash size u32, sector size u32, bank size u32, zero padding, and at offset 60 the CRC-32
# of bytes 0..59. A file is only ever opened as NVM when its header says it is one, for this geometry, and the
# file is exactly header + flash long; anything else is refused (ValueError), never padded or overwritten.

IMAGE_MAGIC = b"EICALNVM"
IMAGE_VERSION = 1
IMAGE_HEADER_SIZE = 64
IMAGE_FMT = "<8sHHIII"  # magic, format version, header size, flash size, sector size, bank size
IMAGE_CRC_AT = IMAGE_HEADER_SIZE - 4


def pack_image_header(size, sector_size, bank_size):
    body = struct.pack(IMAGE_FMT, IMAGE_MAGIC, IMAGE_VERSION, IMAGE_HEADER_SIZE, size, sector_size, bank_size)
    body += b"\x00" * (IMAGE_CRC_AT - len(body))
    return body + struct.pack("<I", crc32(body))


def unpack_image_header(raw):
    """(format version, flash size, sector size, bank size) of an image header, or a string saying what is wrong
    with it (not an image at all, damaged, or a format this firmware does not read)."""
    if len(raw) < IMAGE_HEADER_SIZE or bytes(raw[:8]) != IMAGE_MAGIC:
        return "not an eical NVM image (it does not start with the EICALNVM header)"
    if struct.unpack_from("<I", raw, IMAGE_CRC_AT)[0] != crc32(bytes(raw[:IMAGE_CRC_AT])):
        return "damaged eical NVM image (its header CRC does not match)"
    magic, version, hsize, size, sector_size, bank_size = struct.unpack_from(IMAGE_FMT, raw, 0)
    if version != IMAGE_VERSION or hsize != IMAGE_HEADER_SIZE:
        return "eical NVM image of format %d; this firmware reads format %d" % (version, IMAGE_VERSION)
    return (version, size, sector_size, bank_size)


def image_problem(raw, file_size, size, sector_size, bank_size):
    """None when ``raw`` (the file's first bytes) and ``file_size`` make a good image for this geometry, else a
    short reason."""
    h = unpack_image_header(raw)
    if isinstance(h, str):
        return h
    if h[1:] != (size, sector_size, bank_size):
        return ("eical NVM image for %d-byte banks of %d-byte sectors (%d B of flash); this board has %d-byte "
                "banks of %d-byte sectors (%d B)" % (h[3], h[2], h[1], bank_size, sector_size, size))
    if file_size != IMAGE_HEADER_SIZE + size:
        return "truncated or padded eical NVM image: %d bytes, expected %d" % (file_size, IMAGE_HEADER_SIZE + size)
    return None


class FileFlash:
    """NOR flash kept in an NVM image file: every operation reaches the file before it returns (kill -9 safe).

    An existing file must be an image for this geometry (``image_problem``), else ValueError and the file is left
    as it was; a missing one is created erased. The host's ``firmware_bridge.nvmimage.open_image`` applies the
    user-facing rules (``--new``, old headerless images) before it gets here.
    """

    def __init__(self, path, size, sector_size=SECTOR_SIZE, bank_size=BANK_SIZE):
        self.size = size
        self.sector_size = sector_size
        self.path = path
        try:
            f = open(path, "r+b")
        except OSError:
            f = None
        if f is None:
            f = open(path, "w+b")
            f.write(pack_image_header(size, sector_size, bank_size))
            blank = b"\xff" * sector_size
            left = size
            while left > 0:
                f.write(blank[:min(left, sector_size)])
                left -= sector_size
            f.flush()
        else:
            raw = f.read(IMAGE_HEADER_SIZE)
            f.seek(0, 2)
            why = image_problem(raw, f.tell(), size, sector_size, bank_size)
            if why is not None:
                f.close()
                raise ValueError("%s: %s" % (path, why))
        self._f = f

    def read(self, addr, n):
        self._f.seek(IMAGE_HEADER_SIZE + addr)
        return self._f.read(n)

    def erase(self, addr):
        self._f.seek(IMAGE_HEADER_SIZE + addr)
        self._f.write(b"\xff" * self.sector_size)
        self._f.flush()

    def program(self, addr, data):
        new = and_bytes(self.read(addr, len(data)), data)
        self._f.seek(IMAGE_HEADER_SIZE + addr)
        self._f.write(new)
        self._f.flush()

    def close(self):
        self._f.close()


def and_bytes(a, b):
    """Bytewise AND of two equal-length byte strings (NOR programming can only clear bits)."""
    n = len(b)
    if n == 0:
        return b""
    return (int.from_bytes(bytes(a), "little") & int.from_bytes(bytes(b), "little")).to_bytes(n, "little")


def flash_size(bank_size=BANK_SIZE, sector_size=SECTOR_SIZE):
    """Bytes of flash the layout needs: two banks and the boot-log sector."""
    return N_BANKS * bank_size + sector_size


def crc32(data, crc=0):
    return binascii.crc32(data, crc) & 0xFFFFFFFF


def newer(a, b):
    """True when generation ``a`` is newer than ``b`` (serial-number arithmetic mod 2**32)."""
    d = (a - b) & 0xFFFFFFFF
    return d != 0 and d < 0x80000000


# Table payload ------------------------------------------------------------------------------------------------------
#
# magic "EGTP", format version u8, n_knobs u8, then per knob: name s8, sharing u8, bits u8, n_groups u32, codes
# (u8 each when bits <= 8, else u16 LE). Who the table is for lives in the bank header, not here.

def encode_table(knobs):
    """Payload bytes for a table. ``knobs``: list of dicts with name, sharing (int), bits, codes (list of int)."""
    out = bytearray(TABLE_MAGIC + struct.pack("<BB", TABLE_VERSION, len(knobs)))
    for k in knobs:
        codes = k["codes"]
        top = (1 << k["bits"]) - 1
        for c in codes:
            if c < 0 or c > top:
                raise ValueError("knob %s: code %d outside [0, %d]" % (k["name"], c, top))
        out += messages.s8(k["name"]) + struct.pack("<BBI", k["sharing"], k["bits"], len(codes))
        out += messages.pack_codes(codes, k["bits"])
    return bytes(out)


def decode_table(data):
    """Inverse of encode_table; raises ValueError when malformed."""
    r = messages.Reader(data)
    if r.raw(4) != TABLE_MAGIC:
        raise ValueError("not a table payload")
    version, n = r.take("<BB")
    if version != TABLE_VERSION:
        raise ValueError("table format version %d not supported" % version)
    knobs = []
    for _ in range(n):
        name = r.s8()
        sharing, bits, n_groups = r.take("<BBI")
        if not 1 <= bits <= 16:
            raise ValueError("bad bit width")
        codes = messages.unpack_codes(r.raw(n_groups * messages.code_width(bits)), n_groups, bits)
        knobs.append({"name": name, "sharing": sharing, "bits": bits, "codes": codes})
    r.end()
    return knobs


def table_fits(table, knob_specs):
    """The table's codes in the board's knob order, or None when it does not fit the board's knobs exactly."""
    if len(table) != len(knob_specs):
        return None
    by_name = {}
    for k in table:
        by_name[k["name"]] = k
    out = []
    for spec in knob_specs:
        k = by_name.get(spec["name"])
        if (k is None or k["sharing"] != spec["sharing"] or k["bits"] != spec["bits"]
                or len(k["codes"]) != spec["n_groups"]):
            return None
        out.append(k["codes"])
    return out


# Header -----------------------------------------------------------------------------------------------------------

def pack_header(gen, length, crc, uid, sha):
    u = uid.encode()
    if len(u) > UID_MAX:
        raise ValueError("uid longer than %d bytes" % UID_MAX)
    body = struct.pack(HEADER_FMT, MAGIC, LAYOUT_VERSION, HEADER_SIZE, gen, length, crc, len(u), u, bytes(sha))
    body += b"\x00" * (HEADER_CRC_AT - len(body))
    return body + struct.pack("<I", crc32(body))


def unpack_header(raw):
    """Header fields as a dict, or None when the header is not intact (erased, torn, garbage)."""
    if len(raw) != HEADER_SIZE or raw[:4] != MAGIC:
        return None
    if struct.unpack_from("<I", raw, HEADER_CRC_AT)[0] != crc32(raw[:HEADER_CRC_AT]):
        return None
    magic, version, size, gen, length, crc, ulen, uid, sha = struct.unpack_from(HEADER_FMT, raw, 0)
    if version != LAYOUT_VERSION or size != HEADER_SIZE or ulen > UID_MAX:
        return None
    try:
        uid = uid[:ulen].decode()
    except Exception:
        return None
    return {"gen": gen, "length": length, "crc": crc, "uid": uid, "sha": sha}


# The store ----------------------------------------------------------------------------------------------------------

class Store:
    """The two banks and the boot log on one flash, for one board identity.

    Parameters
    ----------
    flash
        Object with ``size``, ``sector_size``, ``read(addr, n)``, ``erase(addr)`` (one sector) and
        ``program(addr, data)``.
    uid, sha
        The board's UID (str) and profile hash (32 bytes): banks made for anything else are ignored at boot.
    knob_specs
        The board's knobs (dicts with name, sharing, bits, n_groups): a bank whose table does not fit is ignored.
    bank_size
        Bytes per bank, a multiple of the sector size.
    """

    def __init__(self, flash, uid, sha, knob_specs, bank_size=BANK_SIZE):
        if bank_size % flash.sector_size or flash.size < N_BANKS * bank_size + flash.sector_size:
            raise ValueError("flash too small or bank size not a multiple of the sector size")
        self.flash = flash
        self.uid = uid
        self.sha = bytes(sha)
        self.knob_specs = knob_specs
        self.bank_size = bank_size
        self.capacity = bank_size - HEADER_SIZE
        self.active = None  # dict: bank, gen, length, crc, codes (knob order); None while no valid table

    def base(self, bank):
        return bank * self.bank_size

    # -- boot --

    def count_boot(self):
        """Add one to the unary boot log and return the new count.

        The log is only a hint: an erase or program that fails here (OSError) must not keep the board from
        booting (found by the fault simulation, firmware_bridge/faultsim.py); the count returned is then one
        this boot could not record.
        """
        fl = self.flash
        addr = N_BANKS * self.bank_size
        raw = fl.read(addr, fl.sector_size)
        i = 0
        n = len(raw)
        while i < n and raw[i] == 0:
            i += 1
        full = i == n
        zeros = 0 if full else 8 * i + 8 - bin(raw[i]).count("1")
        try:
            if full:
                fl.erase(addr)
                i = 0
                raw = b"\xff"
            # Clear the lowest set bit of the first byte that still has one.
            b = raw[i]
            fl.program(addr + i, bytes([b & (b - 1)]))
        except OSError:
            pass
        return zeros + 1

    def scan(self):
        """Pick the newest valid bank (Rule 2) and make it active. Returns the active dict or None."""
        best = None
        for bank in range(N_BANKS):
            cand = self.check_bank(bank)
            if cand is not None and (best is None or newer(cand["gen"], best["gen"])):
                best = cand
        self.active = best
        return best

    def check_bank(self, bank):
        """The bank's table as an active-dict when the bank is valid for this board, else None."""
        h = unpack_header(self.flash.read(self.base(bank), HEADER_SIZE))
        if h is None or h["uid"] != self.uid or h["sha"] != self.sha or h["length"] > self.capacity:
            return None
        data = self.flash.read(self.base(bank) + HEADER_SIZE, h["length"])
        if crc32(data) != h["crc"]:
            return None
        codes = self.fit(data)
        if codes is None:
            return None
        return {"bank": bank, "gen": h["gen"], "length": h["length"], "crc": h["crc"], "codes": codes}

    def fit(self, data):
        """Codes per knob (board order) when ``data`` is a table for this board, else None."""
        try:
            table = decode_table(data)
        except ValueError:
            return None
        return table_fits(table, self.knob_specs)

    # -- flash session --

    def target(self):
        """The bank a new table goes to: the inactive one (A when there is no table)."""
        return 0 if self.active is None else 1 - self.active["bank"]

    def next_gen(self):
        return 1 if self.active is None else (self.active["gen"] + 1) & 0xFFFFFFFF

    def erase_for(self, bank, length):
        """Erase the sectors of ``bank`` that header and payload will use; the header sector goes first."""
        ss = self.flash.sector_size
        end = HEADER_SIZE + length
        n = (end + ss - 1) // ss
        for k in range(n):
            self.flash.erase(self.base(bank) + k * ss)

    def sectors_for(self, length):
        ss = self.flash.sector_size
        return (HEADER_SIZE + length + ss - 1) // ss

    def write(self, bank, offset, data):
        self.flash.program(self.base(bank) + HEADER_SIZE + offset, data)

    def read(self, bank, offset, n):
        return self.flash.read(self.base(bank) + HEADER_SIZE + offset, n)

    def crc(self, bank, length):
        """CRC-32 of the first ``length`` payload bytes of ``bank``, read in 1 KiB pieces (little RAM)."""
        c = 0
        pos = 0
        while pos < length:
            k = min(1024, length - pos)
            c = crc32(self.read(bank, pos, k), c)
            pos += k
        return c

    def commit(self, bank, gen, length, crc):
        """Write the header of ``bank`` (Rule 1) and make it active. The payload must have been verified."""
        self.flash.program(self.base(bank), pack_header(gen, length, crc, self.uid, self.sha))
        cand = self.check_bank(bank)
        if cand is None or cand["gen"] != gen:
            return None
        self.active = cand
        return cand

    # -- rollback (Rule 4) --

    def rollback_target(self):
        """The other bank's table as an active-dict when a rollback can activate it, else None."""
        a = self.active
        if a is None:
            return None
        cand = self.check_bank(1 - a["bank"])
        if cand is None or not newer(a["gen"], cand["gen"]):
            return None
        return cand

    def revoke_active(self):
        """Clear the active header's magic (Rule 4), then scan again; returns the new active dict (or None).

        The scan runs whatever the program did (an OSError from the flash still propagates after it), so that
        ``active`` always says what the NVM holds now."""
        bank = self.active["bank"]
        try:
            self.flash.program(self.base(bank), b"\x00" * len(MAGIC))
        finally:
            self.scan()
        return self.active
