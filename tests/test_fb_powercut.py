"""Power cut at every NVM operation of a flash session, torn and just after the operation.

For each cut point the board is powered up again on what the flash holds, and must run the complete old table or
the complete new one (never a mix, never nothing when there was a table), HELLO must say which, and a re-run of
the same flash must succeed. A negative control (a store that writes into the *active* bank) shows that the
harness does catch a lost table.
"""
from __future__ import annotations

import functools
import random

import pytest

from firmware_bridge.client import BoardClient
from firmware_bridge.errors import LinkLost
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.transport import BoardTransport

BANK = 64 * 1024
UID = "cut-0001"


class CutFlash:
    """A RamFlash whose operation number ``cut_at`` (0-based, counted over erase and program) loses power:
    ``torn`` (a torn erase leaves a random erased prefix and garbage; a torn program writes a random prefix and
    part of the next byte's bits) or ``after`` (the operation completes, then the power goes)."""

    def __init__(self, inner: nvm.RamFlash, cut_at: int, mode: str, seed: int):
        self.inner = inner
        self.size = inner.size
        self.sector_size = inner.sector_size
        self.cut_at = cut_at
        self.mode = mode
        self.rng = random.Random(seed)
        self.ops = 0

    def read(self, addr, n):
        return self.inner.read(addr, n)

    def _op(self):
        k = self.ops
        self.ops += 1
        return k == self.cut_at

    def erase(self, addr):
        if self._op():
            if self.mode == "torn":
                ss = self.sector_size
                k = self.rng.randrange(ss)
                self.inner.mem[addr:addr + k] = b"\xff" * k
                self.inner.mem[addr + k:addr + ss] = bytes(self.rng.randrange(256) for _ in range(ss - k))
            else:
                self.inner.erase(addr)
            raise nvm.PowerLoss()
        self.inner.erase(addr)

    def program(self, addr, data):
        if self._op():
            if self.mode == "torn":
                k = self.rng.randrange(len(data))
                partial = bytes(data[:k]) + bytes([data[k] | self.rng.randrange(256)])
                self.inner.program(addr, partial)
            else:
                self.inner.program(addr, data)
            raise nvm.PowerLoss()
        self.inner.program(addr, data)


@functools.lru_cache(maxsize=None)
def chip_for(n: int) -> TestChip:
    """One test chip per size, reused: every boot pushes the codes it runs into it, which is what is checked."""
    return TestChip(n, UID)


def image_for(n: int, value: int) -> TableImage:
    sha = chip_for(n).info()["profile_sha256"]
    return TableImage.from_codes(UID, sha, {"gain_e": [(value + 3 * i) % 256 for i in range(n)],
                                            "gain_i": [(value * 7 + i) % 256 for i in range(n)]})


def boot(flash, n):
    chip = chip_for(n)
    b = B.Board(chip, flash, bank_size=BANK)
    return b, chip


def flash_once(flash, n, image, chunk):
    t = BoardTransport(lambda: B.Board(chip_for(n), flash, bank_size=BANK))
    return flash_table(BoardClient(t), image, chunk=chunk, min_chunk=chunk)


def prepared(n: int, n_old: int, chunk: int) -> tuple[bytes, list]:
    """Flash image after ``n_old`` flashes (0: virgin), and the codes the board runs then."""
    ram = nvm.RamFlash(nvm.flash_size(BANK))
    for g in range(n_old):
        flash_once(ram, n, image_for(n, 10 + g), chunk)
    b, chip = boot(ram, n)
    return bytes(ram.mem), {k: list(v) for k, v in chip.codes.items()}


def codes_of(image: TableImage) -> dict:
    return {k: list(v.codes) for k, v in image.knobs.items()}


def run_cut_points(n: int, n_old: int, chunk: int, seed: int = 0) -> int:
    """Cut at every operation of one flash session, both modes; returns the number of cut points checked."""
    start, old_codes = prepared(n, n_old, chunk)
    new = image_for(n, 200)
    new_codes = codes_of(new)
    old_gen = n_old
    # Count the operations of an uninterrupted session (boot included).
    probe = CutFlash(nvm.RamFlash(len(start), image=start), -1, "after", 0)
    flash_once(probe, n, new, chunk)
    n_ops = probe.ops
    assert n_ops >= 4
    checked = 0
    for cut in range(n_ops):
        for mode in ("torn", "after"):
            ram = nvm.RamFlash(len(start), image=start)
            cf = CutFlash(ram, cut, mode, seed * 100_003 + cut * 2 + (mode == "torn"))
            try:
                flash_once(cf, n, new, chunk)
                raise AssertionError(f"cut {cut} ({mode}) of {n_ops}: the flash did not notice the power cut")
            except (LinkLost, nvm.PowerLoss):
                pass
            b, chip = boot(ram, n)
            ran = {k: list(v) for k, v in chip.codes.items()}
            a = b.store.active
            where = f"n={n} old gens={n_old} cut {cut}/{n_ops} {mode}"
            if ran == new_codes:
                assert a is not None and a["gen"] == old_gen + 1, where
            else:
                assert ran == old_codes, f"{where}: the board runs neither the old nor the new table"
                assert (a is None and old_gen == 0) or (a is not None and a["gen"] == old_gen), where
            # Re-running the same flash succeeds and the board then runs the new table, also after a reboot.
            rep = flash_once(ram, n, new, chunk)
            assert rep.outcome in ("flashed", "up-to-date"), where
            _, chip2 = boot(ram, n)
            assert chip2.codes == new_codes, where
            checked += 1
    return checked


CASES = [
    # (neurons, flashes before, chunk): table sizes from ~100 B (one data frame) to ~16 KiB (5 sectors, 33 frames)
    (32, 0, 1024),
    (32, 1, 1024),
    (32, 2, 1024),
    (2048, 0, 128),
    (2048, 1, 256),
    (2048, 2, 256),
    (8192, 1, 512),
    (8192, 2, 256),
]


@pytest.mark.parametrize("n, n_old, chunk", CASES)
def test_power_cut_at_every_nvm_operation(n, n_old, chunk):
    checked = run_cut_points(n, n_old, chunk)
    assert checked >= 8


def test_enough_cut_points_in_total():
    """The cases above add up to hundreds of cut points (counted here without running them)."""
    total = 0
    for n, n_old, chunk in CASES:
        start, _ = prepared(n, n_old, chunk)
        probe = CutFlash(nvm.RamFlash(len(start), image=start), -1, "after", 0)
        flash_once(probe, n, image_for(n, 200), chunk)
        total += 2 * probe.ops
    assert total >= 400, total


def test_negative_control_writing_the_active_bank_loses_the_table(monkeypatch):
    """If a flash wrote into the active bank, some power cut would leave the board with neither table."""
    monkeypatch.setattr(nvm.Store, "target", lambda self: 0 if self.active is None else self.active["bank"])
    with pytest.raises(AssertionError, match="neither the old nor the new|did not notice"):
        run_cut_points(32, 1, 1024)
