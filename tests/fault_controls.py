"""Deliberately broken firmware, for the fault tests only: controls that prove the fault simulation can fail.

Each is a ``Board`` subclass with one classic mistake of a flash commit. The multi-fault tests
(tests/test_fb_multifault.py) and the fault benchmark (benchmarks/bench_faults.py) run the same plans against
them and must count bricked boards or mixed tables; if a broken variant came through clean, the plans would be
too weak to vouch for the real firmware. None of this is reachable from the library or the CLI.

- ``HeaderFirstBoard``: the header goes in at FLASH_BEGIN, before the data, and the boot trusts a valid header
  (no payload CRC at boot). A cut while the data is being written leaves a committed, half-written table.
- ``NoCrcBoard``: the header is written last, but the board never checks a payload CRC (VERIFY and COMMIT
  report the CRC they were told, the boot trusts the header). Power cuts alone cannot break it; a write the
  flash dropped or a flipped bit is committed as if it were good.
- ``InPlaceBoard``: the new table overwrites the active bank instead of the other one (single-bank update).
"""
from __future__ import annotations

from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware import wire as W


class TrustingStore(nvm.Store):
    """A store whose boot check trusts a valid header: the payload's CRC is never compared."""

    def check_bank(self, bank):
        h = nvm.unpack_header(self.flash.read(self.base(bank), nvm.HEADER_SIZE))
        if h is None or h["uid"] != self.uid or h["sha"] != self.sha or h["length"] > self.capacity:
            return None
        codes = self.fit(self.flash.read(self.base(bank) + nvm.HEADER_SIZE, h["length"]))
        if codes is None:
            return None
        return {"bank": bank, "gen": h["gen"], "length": h["length"], "crc": h["crc"], "codes": codes}


class HeaderFirstBoard(B.Board):
    """Commits at FLASH_BEGIN: the header is programmed right after the erase, before any data."""

    store_class = TrustingStore

    def on_begin(self, payload):
        status, reply = super().on_begin(payload)
        if status == W.OK:
            s = self.session
            self.store.flash.program(self.store.base(s["bank"]),
                                     nvm.pack_header(s["gen"], s["length"], s["crc"], self.uid, self.sha))
        return status, reply


class NoCrcBoard(B.Board):
    """Never computes a payload CRC: VERIFY and COMMIT accept whatever was written, the boot trusts the header."""

    store_class = TrustingStore

    def check_session(self):
        s = self.session
        if self.store.fit(self.store.read(s["bank"], 0, s["length"])) is None:
            return W.E_TABLE, s["crc"]
        return W.OK, s["crc"]


class InPlaceStore(nvm.Store):
    def target(self):
        return 0 if self.active is None else self.active["bank"]


class InPlaceBoard(B.Board):
    """Writes the new table over the active one (a single-bank update)."""

    store_class = InPlaceStore


CONTROLS = {
    "header written first": HeaderFirstBoard,
    "no CRC check": NoCrcBoard,
    "update in place": InPlaceBoard,
}
