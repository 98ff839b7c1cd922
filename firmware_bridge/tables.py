"""A board's tables from the host: read one back as a ``table.json``, and roll back to the previous one.

The library behind ``eical read-table`` and ``eical rollback`` (docs/protocol.md sections 7 and 10):

- :func:`read_board_table` reads a bank (the active one by default) with READ_TABLE, checks it against the CRC the
  board reports, decodes the payload and returns it as a ``hw_models.table.GainTable`` built by
  :func:`gain_table_from_board` from the board's identity (HELLO) and codes. Written with ``GainTable.save`` it is a
  ``table.json`` like any other: flashing it back to the same board is "already up to date" (same knobs in the
  board's order, same codes, so the same payload and CRC). What the board does not store (targets, metrics, the
  verdict, the mismatch seed) is absent; ``controller`` says where the codes came from (``"read-back"``, the port,
  bank, generation and CRC).
- :func:`previous_table` asks the board (ROLLBACK, query) which table a rollback would activate;
  :func:`rollback` activates it. The board revokes the active bank's header (nvm Rule 4: one 4-byte program, safe
  to cut at any point), so the newer table is gone from the board afterwards: flash its ``table.json`` to return.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from hw_models.table import GainTable, KnobTable

from .client import BoardClient, Hello
from .errors import BoardError, BridgeError, LinkLost, VerifyFailed
from .firmware import messages as M
from .firmware import nvm
from .firmware import wire as W

__all__ = ["BoardTable", "gain_table_from_board", "read_board_table", "NothingToRollBack", "RollbackReport",
           "previous_table", "rollback", "bank_index"]


class NothingToRollBack(BridgeError):
    """The board has no previous table a rollback could activate (or no table at all)."""


def bank_index(name: str) -> int:
    """``"active"`` -> 0xFF (the active bank), ``"A"`` -> 0, ``"B"`` -> 1 (case-insensitive)."""
    n = name.strip().upper()
    if n == "ACTIVE":
        return M.NO_BANK
    if n in nvm.BANK_NAMES:
        return nvm.BANK_NAMES.index(n)
    raise ValueError(f"bank must be 'active', 'A' or 'B', got {name!r}")


def _desc(bank: int, gen: int, crc: int, length: int) -> str:
    return f"table gen {gen} (crc 0x{crc:08x}, {length} B, bank {nvm.BANK_NAMES[bank]})"


def gain_table_from_board(identity: Any, knobs: Sequence[Mapping[str, Any]], *,
                          provenance: Optional[Mapping[str, Any]] = None) -> GainTable:
    """A ``GainTable`` of a board's codes.

    ``identity``: anything with ``uid``, ``profile`` and ``profile_sha256`` (hex), such as a ``Hello``.
    ``knobs``: per knob a mapping with ``name``, ``sharing`` (a name, or the wire's index), ``bits`` and ``codes``
    (as ``nvm.decode_table`` gives them). ``provenance``: where the codes came from, kept as the table's
    ``controller`` (``{"name": "read-back", "settings": provenance}``). Knobs are sorted by name, as a calibration
    writes them. The table has no targets, metrics or seed: the board stores none of them."""
    tables = {}
    for k in knobs:
        sharing = k["sharing"] if isinstance(k["sharing"], str) else M.SHARING[k["sharing"]]
        tables[k["name"]] = KnobTable(sharing, int(k["bits"]), [int(c) for c in k["codes"]])
    return GainTable(chip_uid=identity.uid, profile=identity.profile, profile_sha256=identity.profile_sha256,
                     knobs={name: tables[name] for name in sorted(tables)}, seed=None, targets={}, metrics={},
                     controller={"name": "read-back", "settings": dict(provenance or {})},
                     created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     eical_version=_eical_version())


def _eical_version() -> str:
    try:
        from importlib.metadata import version

        return version("eical")
    except Exception:  # running from a source tree
        return "0+unknown"


@dataclass
class BoardTable:
    """A table read back from a board: the ``GainTable`` and where it was (bank, generation, CRC, bytes)."""

    table: GainTable
    uid: str
    bank: int
    generation: int
    crc: int
    length: int
    active: bool
    hello: Hello = field(repr=False)

    def describe(self) -> str:
        return _desc(self.bank, self.generation, self.crc, self.length)

    def to_dict(self) -> dict:
        return {"uid": self.uid, "bank": nvm.BANK_NAMES[self.bank], "generation": self.generation,
                "crc": f"0x{self.crc:08x}", "bytes": self.length, "active": self.active,
                "knobs": {k: len(v.codes) for k, v in self.table.knobs.items()}}


def read_board_table(client: BoardClient, bank: int = M.NO_BANK, *, port: str = "") -> BoardTable:
    """Read a bank's table (``M.NO_BANK``: the active one) and return it as a ``BoardTable``.

    Raises ``BridgeError`` when the bank holds no table, ``VerifyFailed`` when what was read does not match the
    CRC the board reports, does not decode or does not fit the board's knobs, ``LinkLost``."""
    h = client.hello()
    if bank == M.NO_BANK and not h.has_table:
        raise BridgeError(f"board {h.uid} has no table to read (it runs the reference codes; nothing was ever "
                          "flashed)", board_table=h.table_desc())
    try:
        b, gen, crc, data = client.read_table(bank)
    except BoardError as e:
        if e.status == W.E_RANGE:
            raise BridgeError(f"bank {nvm.BANK_NAMES[bank]} of board {h.uid} holds no table", board_table=h.table_desc()) \
                from None
        raise
    if nvm.crc32(data) != crc:
        raise VerifyFailed(f"the table read from bank {nvm.BANK_NAMES[b]} does not match its CRC 0x{crc:08x} "
                           f"(read 0x{nvm.crc32(data):08x} over {len(data)} B)", board_table=h.table_desc())
    try:
        knobs = nvm.decode_table(data)
    except ValueError as e:
        raise VerifyFailed(f"the table in bank {nvm.BANK_NAMES[b]} does not decode: {e}", board_table=h.table_desc()) \
            from None
    by_name = {k.name: k for k in h.knobs}
    for k in knobs:
        spec = by_name.get(k["name"])
        if spec is None or spec.bits != k["bits"] or spec.n_groups != len(k["codes"]):
            raise VerifyFailed(f"the table in bank {nvm.BANK_NAMES[b]} does not fit the board's knobs "
                               f"({k['name']!r})", board_table=h.table_desc())
    active = h.has_table and b == h.active_bank and gen == h.generation and crc == h.table_crc
    provenance = {"port": port, "bank": nvm.BANK_NAMES[b], "generation": gen, "crc": f"0x{crc:08x}",
                  "active": active, "firmware": h.firmware}
    table = gain_table_from_board(h, knobs, provenance=provenance)
    return BoardTable(table=table, uid=h.uid, bank=b, generation=gen, crc=crc, length=len(data), active=active,
                      hello=h)


# -- rollback ---------------------------------------------------------------------------------------------------------


@dataclass
class RollbackReport:
    """What ``rollback`` did: ``outcome`` "rolled-back" or "dry-run", the table left and the one active now."""

    outcome: str
    uid: str
    left: dict
    active: dict
    board_table: str
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        left = _desc(nvm.BANK_NAMES.index(self.left["bank"]), self.left["generation"],
                     int(self.left["crc"], 16), self.left["bytes"])
        if self.outcome == "dry-run":
            return (f"dry run: board {self.uid} would go back from {left} to {self.board_table.replace('table ', '', 1)}"
                    f"; nothing was changed")
        return (f"rolled back board {self.uid} from {left}; the board runs {self.board_table} (gen "
                f"{self.left['generation']} is no longer on the board: flash its table.json to return to it)")


def _entry(bank: int, gen: int, crc: int, length: int) -> dict:
    return {"bank": nvm.BANK_NAMES[bank], "generation": gen, "crc": f"0x{crc:08x}", "bytes": length}


def previous_table(client: BoardClient) -> Optional[dict]:
    """The table a rollback would activate (``{"bank", "generation", "crc", "bytes"}``), or None when there is
    none. Raises ``BoardError`` when the board cannot say (E_TYPE: firmware without ROLLBACK; E_STATE: a flash
    session is open)."""
    h = client._need_hello()
    if not h.has_table:
        return None
    r = client.rollback(M.ROLLBACK_QUERY)
    if r.status == W.E_RANGE:
        return None
    if r.status != W.OK:
        raise _refusal(r.status, h)
    bank, gen, crc, length = M.unpack_rollback_reply(r.payload)
    return _entry(bank, gen, crc, length)


def _refusal(status: int, h: Hello) -> BoardError:
    detail = {W.E_TYPE: f"(board firmware {h.firmware} has no ROLLBACK: update it to 0.2 or later)",
              W.E_STATE: "(a flash session is open on the board: it is writing the bank a rollback would "
                         "activate; finish the flash or reset the board)"}.get(status, "")
    return BoardError("ROLLBACK", status, board_table=h.table_desc(), detail=detail)


def rollback(client: BoardClient, *, dry_run: bool = False) -> RollbackReport:
    """Make the previous table (the other bank's, when valid) the active one, as a bootloader's revert does.

    Raises ``NothingToRollBack`` (no table, or no valid previous one), ``BoardError`` (a refusal, an NVM failure),
    ``LinkLost`` (its ``board_table`` says which table the board may run). A reply lost to a reboot after the
    rollback went through is recognised: the board then runs the previous table, and that is success."""
    import time

    t0 = time.monotonic()
    h = client.hello()
    if not h.has_table:
        raise NothingToRollBack(f"nothing to roll back to: board {h.uid} has no table", board_table=h.table_desc())
    target = previous_table(client)
    if target is None:
        raise NothingToRollBack(
            f"nothing to roll back to: the other bank of board {h.uid} holds no valid table (a rollback goes back "
            "one table; after one, flash the table.json you want)", board_table=h.table_desc())
    left = _entry(h.active_bank, h.generation, h.table_crc, h.table_len)
    tdesc = _desc(nvm.BANK_NAMES.index(target["bank"]), target["generation"], int(target["crc"], 16),
                  target["bytes"])
    if dry_run:
        return RollbackReport("dry-run", h.uid, left, target, tdesc, time.monotonic() - t0)

    def now_runs_target(h2: Hello) -> bool:
        return (h2.has_table and h2.generation == target["generation"] and h2.table_crc == int(target["crc"], 16)
                and nvm.BANK_NAMES[h2.active_bank] == target["bank"])

    try:
        r = client.rollback(M.ROLLBACK_DO, h.generation, h.table_crc)
    except LinkLost as e:
        e.board_table = (f"either {h.table_desc()} or, if the rollback went through, {tdesc}: run `eical info`")
        raise
    if r.status != W.OK:
        h2 = client.hello(gate=False)
        if r.status == W.E_STATE and now_runs_target(h2):
            # the rollback went through and a reboot lost the reply (the cache went with the RAM)
            return RollbackReport("rolled-back", h.uid, left, target, h2.table_desc(), time.monotonic() - t0)
        raise _refusal(r.status, h2)
    h2 = client.hello(gate=False)
    if not now_runs_target(h2):
        raise VerifyFailed(f"after ROLLBACK the board reports {h2.table_desc()}, expected {tdesc}",
                           board_table=h2.table_desc())
    return RollbackReport("rolled-back", h.uid, left, target, h2.table_desc(), time.monotonic() - t0)
