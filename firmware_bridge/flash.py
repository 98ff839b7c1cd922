"""Flash a gain table into a board's NVM: identity check, diff, write, verify, commit, read-back.

The library behind ``eical flash`` (the CLI only parses arguments and maps exceptions to exit codes).

Safety comes from the board (``firmware.nvm``: the inactive bank is written, the header written last is the only
commit point); this module adds the host's side of it:

- the identity check happens here, against HELLO, *before* anything is sent that writes (and the board checks
  again at FLASH_BEGIN);
- a table whose CRC and length equal the active table's is "already up to date": nothing is written;
- the new generation is the active one + 1, so a re-run after any interruption simply starts over;
- if the board reset in the middle (its boot count moved on and it answers E_STATE), the flash restarts from
  FLASH_BEGIN, at most twice;
- data chunks shrink (down to ``min_chunk``) while frames keep getting damaged and grow back when the link is
  clean: absolute offsets make that free;
- every error says which table the board runs now (``BridgeError.board_table``).
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from .client import BoardClient, Hello
from .errors import BoardError, BridgeError, IdentityError, LinkLost, UsageError, VerifyFailed
from .firmware import messages as M
from .firmware import nvm
from .firmware import wire as W

__all__ = ["TableImage", "FlashReport", "flash_table", "estimate_seconds"]

EventHook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class KnobCodes:
    sharing: str
    bits: int
    codes: tuple[int, ...]


@dataclass(frozen=True)
class TableImage:
    """What a flash writes: whom the table is for, and its codes per knob.

    Build it with ``load(path)`` (a ``table.json``), ``from_gain_table`` or ``from_codes``.
    """

    chip_uid: str
    profile: str
    profile_sha256: str
    knobs: Mapping[str, KnobCodes]
    source: str = "<table>"
    tracker: Optional[Mapping] = None  # the tracker section in the firmware's units (nvm.encode_table), or None

    @classmethod
    def from_gain_table(cls, table, source: str = "<table>") -> "TableImage":
        """From a ``hw_models.table.GainTable`` (its tracker section, if any, goes into a format-2 payload)."""
        return cls(chip_uid=table.chip_uid, profile=table.profile, profile_sha256=table.profile_sha256,
                   knobs={k: KnobCodes(v.sharing, int(v.bits), tuple(int(c) for c in v.codes))
                          for k, v in table.knobs.items()},
                   source=source, tracker=tracker_to_firmware(table.tracker) if table.tracker else None)

    @classmethod
    def load(cls, path) -> "TableImage":
        """Read and validate a ``table.json``. Raises UsageError with one clear line when it is not valid."""
        from hw_models.table import GainTable, TableError

        try:
            gt = GainTable.load(path)
        except TableError as e:
            raise UsageError(str(e)) from None
        return cls.from_gain_table(gt, source=str(Path(path)))

    @classmethod
    def from_codes(cls, chip_uid: str, profile_sha256: str, codes: Mapping[str, Sequence[int]], *,
                   profile: str = "", sharing: str = "neuron", bits: int = 8,
                   source: str = "<codes>") -> "TableImage":
        """From raw codes (every knob with the same sharing and bit width)."""
        return cls(chip_uid=chip_uid, profile=profile, profile_sha256=profile_sha256,
                   knobs={k: KnobCodes(sharing, bits, tuple(int(c) for c in v)) for k, v in codes.items()},
                   source=source)

    def check_against(self, h: Hello) -> None:
        """Refuse a board this table was not made for (raises IdentityError; nothing has been written): another
        UID or profile, other knobs, or a tracker section sized for another geometry."""
        where = f"{self.source} is for"
        if h.uid != self.chip_uid:
            raise IdentityError(f"{where} chip {self.chip_uid!r} but the board is {h.uid!r}; nothing was written",
                                board_table=h.table_desc())
        if h.profile_sha256 != self.profile_sha256:
            raise IdentityError(
                f"{where} profile {self.profile!r} sha256 {self.profile_sha256[:12]}... but board {h.uid!r} runs "
                f"profile {h.profile!r} sha256 {h.profile_sha256[:12]}...; nothing was written",
                board_table=h.table_desc())
        board = {k.name: k for k in h.knobs}
        if set(board) != set(self.knobs):
            raise IdentityError(f"{self.source} has knobs {sorted(self.knobs)} but board {h.uid!r} has "
                                f"{sorted(board)}; nothing was written", board_table=h.table_desc())
        for name, kc in self.knobs.items():
            b = board[name]
            if kc.sharing != b.sharing or kc.bits != b.bits or len(kc.codes) != b.n_groups:
                raise IdentityError(
                    f"knob {name!r}: {self.source} has {len(kc.codes)} {kc.bits}-bit codes per {kc.sharing}, board "
                    f"{h.uid!r} has {b.n_groups} {b.bits}-bit codes per {b.sharing}; nothing was written",
                    board_table=h.table_desc())
        if self.tracker is not None and len(self.tracker["offset"]) != h.n_neurons:
            raise IdentityError(f"{self.source}: its tracker section has {len(self.tracker['offset'])} ADC offsets, "
                                f"board {h.uid!r} has {h.n_neurons} neurons; nothing was written",
                                board_table=h.table_desc())

    def payload(self, h: Hello) -> bytes:
        """The NVM table payload (docs/protocol.md, "Table payload"), knobs in the board's order.

        The order is the board's so that the same table always gives the same bytes, hence the same CRC, and
        "already up to date" can be decided from HELLO alone.
        """
        return nvm.encode_table([
            {"name": k.name, "sharing": M.SHARING.index(self.knobs[k.name].sharing), "bits": self.knobs[k.name].bits,
             "codes": list(self.knobs[k.name].codes)}
            for k in h.knobs], tracker=self.tracker)


def tracker_to_firmware(tr: Mapping) -> dict:
    """A table's tracker section (hw_models.table, seconds, JSON names) in the firmware's units and names (ms;
    ``a``, ``b``, ``offset``): what ``nvm.encode_table`` writes."""
    ms = lambda s: int(round(float(s) * 1000.0))  # noqa: E731
    return {"boot": 1 if tr["boot"] == "on" else 0, "splits": int(tr["splits"]), "window_ms": ms(tr["window_s"]),
            "halflife_ms": ms(tr["halflife_s"]), "dev_halflife_ms": ms(tr["dev_halflife_s"]),
            "band": float(tr["band"]), "rate_hz": float(tr["rate_hz"]), "fano": float(tr["fano"]),
            "rate_se": float(tr["rate_se"]), "balance_se": float(tr["balance_se"]), "gamma": float(tr["gamma"]),
            "sat_ratio": float(tr["sat_ratio"]), "silent_expected": float(tr["silent_expected"]),
            "max_step": float(tr["max_step"]), "beta": [float(x) for x in tr["beta"]],
            "a": [float(x) for x in tr["a_pa"]], "b": [float(x) for x in tr["b_pa"]],
            "offset": [float(x) for x in tr["adc_offset_pa"]]}


def _shortest_f32(x: float) -> float:
    """The shortest decimal whose f32 is ``x``'s (9 significant digits always are)."""
    exact = struct.pack("<f", float(x))
    for digits in range(6, 9):
        y = float("%.*g" % (digits, float(x)))
        if struct.pack("<f", y) == exact:
            return y
    return float("%.9g" % float(x))


def tracker_from_firmware(t: Mapping) -> dict:
    """The inverse of ``tracker_to_firmware`` (a tracker section read back from a board's NVM), each number the
    shortest decimal that is the same f32, so that the section writes back byte for byte."""
    f = _shortest_f32
    return {"boot": "on" if t["boot"] else "off", "band": f(t["band"]), "window_s": t["window_ms"] / 1000.0,
            "splits": int(t["splits"]), "halflife_s": t["halflife_ms"] / 1000.0,
            "dev_halflife_s": t["dev_halflife_ms"] / 1000.0, "rate_hz": f(t["rate_hz"]), "fano": f(t["fano"]),
            "rate_se": f(t["rate_se"]), "balance_se": f(t["balance_se"]), "gamma": f(t["gamma"]),
            "sat_ratio": f(t["sat_ratio"]), "silent_expected": f(t["silent_expected"]), "max_step": f(t["max_step"]),
            "beta": [f(x) for x in t["beta"]], "a_pa": [f(x) for x in t["a"]], "b_pa": [f(x) for x in t["b"]],
            "adc_offset_pa": [f(x) for x in t["offset"]]}


@dataclass
class FlashReport:
    """What a flash did (``to_dict`` is the ``--json`` output)."""

    outcome: str  # "flashed" | "up-to-date" | "dry-run"
    uid: str
    table: str
    table_bytes: int
    crc: int
    generation: int
    bank: Optional[str]
    previous: Optional[dict]
    changed: Optional[dict]
    board_table: str
    seconds: float = 0.0
    write_seconds: float = 0.0
    estimate_seconds: float = 0.0
    restarts: int = 0
    final_chunk: int = 0
    link: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["crc"] = f"0x{self.crc:08x}"
        return d

    def summary(self) -> str:
        """One line for people."""
        if self.outcome == "up-to-date":
            return f"already up to date: board {self.uid} runs {self.board_table}"
        diff = ""
        if self.changed is not None:
            n = sum(self.changed.values())
            diff = f"; {n} codes change (" + ", ".join(f"{k} {v}" for k, v in self.changed.items()) + ")"
        elif self.outcome != "up-to-date":
            diff = "; the board had no table"
        if self.outcome == "dry-run":
            return (f"dry run: would write {self.table_bytes} B (crc 0x{self.crc:08x}) to board {self.uid} as "
                    f"gen {self.generation} in about {self.estimate_seconds:.2f} s{diff}; nothing was written; "
                    f"the board runs {self.board_table}")
        rate = self.table_bytes / self.write_seconds / 1024 if self.write_seconds > 0 else float("inf")
        return (f"flashed {self.table} to board {self.uid}: {self.table_bytes} B in {self.seconds:.2f} s "
                f"({rate:.0f} KiB/s writing){diff}; the board runs {self.board_table}")


class _Restart(Exception):
    """The board rebooted during the session: start again from FLASH_BEGIN."""

    def __init__(self, hello: Hello):
        super().__init__("board rebooted")
        self.hello = hello


def estimate_seconds(h: Hello, n_bytes: int, baudrate: Optional[int], chunk: int = 1024) -> float:
    """Rough time to write ``n_bytes``: wire time at ``baudrate`` (10 bits per byte) plus erase."""
    n_chunks = max(1, -(-n_bytes // chunk))
    wire_bytes = W.encoded_size(n_bytes) + n_chunks * (2 * W.OVERHEAD + 4 + 6)
    wire_s = wire_bytes * 10.0 / baudrate if baudrate else 0.0
    sectors = -(-(nvm.HEADER_SIZE + n_bytes) // max(1, h.sector_size))
    return wire_s + sectors * h.erase_ms / 1000.0 + n_chunks * 0.0005


def _diff(old: bytes, image: TableImage) -> Optional[dict]:
    try:
        table = nvm.decode_table(old)
    except ValueError:
        return None
    by = {k["name"]: k["codes"] for k in table}
    out = {}
    for name, kc in image.knobs.items():
        prev = by.get(name)
        if prev is None or len(prev) != len(kc.codes):
            out[name] = len(kc.codes)
        else:
            out[name] = sum(1 for a, b in zip(prev, kc.codes) if a != b)
    return out


def flash_table(client: BoardClient, image: TableImage, *, dry_run: bool = False, force: bool = False,
                readback: bool = True, diff: bool = True, chunk: Optional[int] = None,
                min_chunk: Optional[int] = None, on_event: Optional[EventHook] = None) -> FlashReport:
    """Write ``image`` to the board behind ``client`` and make it the active table.

    Parameters
    ----------
    dry_run
        HELLO, identity check, diff and a time estimate only; nothing is written.
    force
        Write even when the board already runs this exact table.
    readback
        After COMMIT, read the active table back and compare it byte for byte.
    diff
        Read the active table first to report how many codes change.
    chunk, min_chunk
        Largest and smallest chunk of bulk transfers (the chunk adapts in between to the link's error rate);
        default: the client's.
    on_event
        ``on_event(stage, done, total)`` at "hello", "begin", "data" (after each chunk), "verify",
        "commit-send" (just before COMMIT goes out), "commit", "readback". Progress bars use it; so do tests that
        cut the power at a chosen point.

    Raises
    ------
    IdentityError (exit 3), LinkLost (4), VerifyFailed (5), BoardError / BridgeError (6)
        Each carries ``board_table``: the table the board runs after the failure.
    """
    emit = on_event or (lambda stage, done, total: None)
    clock = time.monotonic
    t0 = clock()
    if chunk is not None or min_chunk is not None:
        top = chunk if chunk is not None else client.max_chunk
        client.set_chunk_limits(top, min(top, min_chunk if min_chunk is not None else client.min_chunk))
    try:
        hello = client.hello()
    except LinkLost as e:
        e.board_table = e.board_table or "an unknown table (the board did not answer HELLO; nothing was written)"
        raise
    emit("hello", 0, 0)
    image.check_against(hello)
    payload = image.payload(hello)
    crc = nvm.crc32(payload)
    if len(payload) > hello.bank_size - nvm.HEADER_SIZE:
        raise BridgeError(f"{image.source} takes {len(payload)} B but a bank of board {hello.uid} holds "
                          f"{hello.bank_size - nvm.HEADER_SIZE} B; nothing was written", board_table=hello.table_desc())

    def report(outcome: str, h: Hello, **kw) -> FlashReport:
        prev = None
        if hello.has_table:
            prev = {"generation": hello.generation, "crc": f"0x{hello.table_crc:08x}",
                    "bank": nvm.BANK_NAMES[hello.active_bank], "bytes": hello.table_len}
        r = FlashReport(outcome=outcome, uid=h.uid, table=image.source, table_bytes=len(payload), crc=crc,
                        generation=h.generation if outcome != "dry-run" else _next_gen(h),
                        bank=nvm.BANK_NAMES[h.active_bank] if h.has_table else None, previous=prev,
                        changed=changed, board_table=h.table_desc(), link=client.stats.to_dict(), **kw)
        r.seconds = clock() - t0
        return r

    if hello.has_table and hello.table_crc == crc and hello.table_len == len(payload) and not force:
        changed = {k: 0 for k in image.knobs}
        return report("up-to-date", hello)
    changed = None
    if diff and hello.has_table:
        try:
            _, _, old_crc, old = client.read_table()
            if nvm.crc32(old) == old_crc:
                changed = _diff(old, image)
        except BoardError:
            changed = None  # no readable table: report without a diff
        except LinkLost as e:
            e.board_table = hello.table_desc() + " (nothing was written)"
            raise
    if dry_run:
        return report("dry-run", hello, estimate_seconds=estimate_seconds(hello, len(payload),
                                                                        client.transport.baudrate, client.chunk))
    restarts = 0
    while True:
        try:
            h_after, write_s, final_chunk = _write(client, hello, image, payload, crc, readback, emit)
            break
        except _Restart as r:
            restarts += 1
            if restarts > 2:
                raise BoardError("FLASH_DATA", W.E_STATE, board_table=r.hello.table_desc(),
                                 detail="(the board keeps rebooting during the flash)") from None
            hello = r.hello
            if hello.has_table and hello.table_crc == crc and hello.table_len == len(payload):
                # The reboot happened after the commit went through.
                return report("flashed", hello, restarts=restarts)
    return report("flashed", h_after, write_seconds=write_s, restarts=restarts, final_chunk=final_chunk)


def _next_gen(h: Hello) -> int:
    return (h.generation + 1) & 0xFFFFFFFF if h.has_table else 1


def _write(client: BoardClient, hello: Hello, image: TableImage, payload: bytes, crc: int, readback: bool,
           emit: EventHook):
    """One session BEGIN..COMMIT(..read-back). Returns (HELLO after, seconds writing, final chunk size)."""
    old = hello.table_desc() + " (the old table is intact: nothing was committed)"
    gen = _next_gen(hello)
    new_desc = f"table gen {gen} (crc 0x{crc:08x}, {len(payload)} B)"
    stage = "FLASH_BEGIN"

    def board_now() -> str:
        try:
            return client.hello(gate=False).table_desc()
        except BridgeError:
            return hello.table_desc() if stage != "COMMIT" else f"either {hello.table_desc()} or the new {new_desc}"

    def state_error(name: str, status: int, detail: str = ""):
        """E_STATE after BEGIN: did the board reboot? Then restart, else it is a board error."""
        if status == W.E_STATE:
            h = client.hello(gate=False)
            if h.boot_count != hello.boot_count:
                raise _Restart(h)
        raise BoardError(name, status, board_table=board_now(), detail=detail)

    try:
        r = client.flash_begin(gen, len(payload), crc, image.chip_uid, bytes.fromhex(image.profile_sha256))
        if r.status == W.E_IDENT:
            raise IdentityError(f"board {hello.uid} refused {image.source} at FLASH_BEGIN (E_IDENT: made for another "
                                "chip); nothing was written", board_table=hello.table_desc())
        if r.status == W.E_GEN:
            h = client.hello(gate=False)
            if h.generation != hello.generation or h.boot_count != hello.boot_count:
                raise _Restart(h)  # someone else flashed meanwhile: start over from the new state
        if r.status != W.OK:
            raise BoardError("FLASH_BEGIN", r.status, board_table=hello.table_desc())
        emit("begin", 0, len(payload))
        t_write = time.monotonic()
        stage = "FLASH_DATA"
        offset = 0
        while offset < len(payload):
            try:
                offset += client.write_bulk(offset, payload[offset:])  # the client sizes the chunk to the link
            except BoardError as e:
                state_error("FLASH_DATA", e.status, f"(offset {offset})")
            emit("data", offset, len(payload))
        write_s = time.monotonic() - t_write
        stage = "FLASH_VERIFY"
        r = client.flash_verify(len(payload))
        if r.status == W.E_VERIFY:
            got = M.unpack_verify_reply(r.payload)[0] if len(r.payload) == 8 else None
            raise VerifyFailed(f"board computed crc {_hex(got)} over the written bank, expected 0x{crc:08x}; "
                               "nothing was committed", board_table=board_now())
        if r.status != W.OK:
            state_error("FLASH_VERIFY", r.status)
        got_crc, got_len = M.unpack_verify_reply(r.payload)
        if (got_crc, got_len) != (crc, len(payload)):
            raise VerifyFailed(f"board reports crc 0x{got_crc:08x} over {got_len} B, expected 0x{crc:08x} over "
                               f"{len(payload)} B; nothing was committed", board_table=board_now())
        emit("verify", len(payload), len(payload))
        emit("commit-send", len(payload), len(payload))
        stage = "COMMIT"
        r = client.flash_commit(gen, crc, len(payload))
        if r.status == W.E_VERIFY:
            raise VerifyFailed(f"the written bank no longer matches crc 0x{crc:08x} at COMMIT; nothing was committed",
                               board_table=board_now())
        if r.status != W.OK:
            state_error("FLASH_COMMIT", r.status)
        bank, cgen, ccrc = M.unpack_commit_reply(r.payload)
        if (cgen, ccrc) != (gen, crc):
            raise VerifyFailed(f"board committed gen {cgen} crc 0x{ccrc:08x}, expected gen {gen} crc 0x{crc:08x}",
                               board_table=board_now())
        emit("commit", len(payload), len(payload))
        stage = "READBACK"
        if readback:
            rbank, rgen, rcrc, data = client.read_table()
            if (rgen, rcrc) != (gen, crc) or data != payload:
                raise VerifyFailed(f"read-back differs from {image.source} (gen {rgen}, crc 0x{rcrc:08x}, "
                                   f"{len(data)} B)", board_table=board_now())
        h_after = client.hello(gate=False)
        if (h_after.generation, h_after.table_crc) != (gen, crc):
            raise VerifyFailed(f"after COMMIT the board reports gen {h_after.generation} crc "
                               f"0x{h_after.table_crc:08x}, expected gen {gen} crc 0x{crc:08x}",
                               board_table=h_after.table_desc())
        emit("readback", len(payload), len(payload))
        return h_after, write_s, client.chunk
    except LinkLost as e:
        if not e.board_table:
            if stage in ("FLASH_BEGIN", "FLASH_DATA", "FLASH_VERIFY"):
                e.board_table = old
            elif stage == "COMMIT":
                e.board_table = (f"either {hello.table_desc()} or the new {new_desc}: the link was lost during "
                                 "COMMIT; run `eical info` or re-run the flash")
            else:
                e.board_table = f"the new {new_desc} (committed; the read-back was cut off)"
        raise


def _hex(v: Optional[int]) -> str:
    return "?" if v is None else f"0x{v:08x}"
