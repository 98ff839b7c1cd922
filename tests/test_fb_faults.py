"""Flashing over a link that drops, flips and inserts bytes at random (seeded), in both directions.

In one process (simulated clock, so timeouts cost no real time): at byte error rates 1e-4 and 1e-3 every flash
succeeds and the board runs the new table; at 1e-2 the flash gives up with exit code 4 and the board still runs
the complete old table. The same over a real pty through the ``eicalfault://`` pyserial URL and the CLI is in
``test_fb_emulator.py``.
"""
from __future__ import annotations

import pytest

from firmware_bridge.client import BoardClient
from calibrate.cli.exits import ExitCode, exit_code_for
from firmware_bridge.errors import LinkLost
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.transport import BoardTransport, FaultInjector, FaultyTransport

N = 4096  # 8 KiB table: 8 frames of 1 KiB, or 64 of 128 B
BANK = 32 * 1024
UID = "noisy-0001"
CHIP = TestChip(N, UID)


def image(value: int) -> TableImage:
    return TableImage.from_codes(UID, CHIP.info()["profile_sha256"],
                                 {"gain_e": [(value + i) % 256 for i in range(N)], "gain_i": [value % 256] * N})


def board_with_old_table():
    flash = nvm.RamFlash(nvm.flash_size(BANK))
    make = lambda: B.Board(CHIP, flash, bank_size=BANK)  # noqa: E731
    flash_table(BoardClient(BoardTransport(make)), image(1))
    return flash, make


def noisy_client(make, rate, seed):
    return BoardClient(FaultyTransport(BoardTransport(make), rate, seed))


@pytest.mark.parametrize("rate", [1e-4, 1e-3])
@pytest.mark.parametrize("seed", range(4))
def test_flash_succeeds_on_a_noisy_link(rate, seed):
    flash, make = board_with_old_table()
    c = noisy_client(make, rate, seed)
    rep = flash_table(c, image(2))
    assert rep.outcome == "flashed"
    b = make()
    assert b.store.active["gen"] == 2 and b.chip.codes["gain_i"] == [2] * N
    if rate == 1e-3:
        assert c.stats.resends_nak + c.stats.resends_damaged + c.stats.timeouts > 0  # the faults did bite


@pytest.mark.parametrize("diff", [True, False], ids=["with-diff", "no-diff"])
@pytest.mark.parametrize("seed", range(4))
def test_flash_gives_up_at_1e_2_and_keeps_the_old_table(seed, diff):
    """Without the diff read, the give-up happens in the middle of FLASH_DATA: still the old table."""
    flash, make = board_with_old_table()
    c = noisy_client(make, 1e-2, seed)
    with pytest.raises(LinkLost) as e:
        flash_table(c, image(2), diff=diff)
    assert exit_code_for(e.value) == ExitCode.LINK_LOST
    line = e.value.line()
    assert "gen 1" in line or "no good reply" in line or "unknown" in line, line
    b = make()
    assert b.store.active["gen"] == 1 and b.chip.codes["gain_i"] == [1] * N
    # A clean link afterwards flashes fine.
    assert flash_table(BoardClient(BoardTransport(make)), image(2)).outcome == "flashed"


def test_measure_and_hello_survive_1e_3():
    flash, make = board_with_old_table()
    c = noisy_client(make, 1e-3, 11)
    for _ in range(20):
        assert c.hello().uid == UID
        assert len(c.measure(50.0).counts) == N


@pytest.mark.parametrize("rate", [1e-3, 1e-2, 0.1])
def test_fault_injector_rate_and_reproducibility(rate):
    data = bytes(range(256)) * 400
    a = FaultInjector(rate, 5)
    out = b"".join(a.apply(data[i:i + 1000]) for i in range(0, len(data), 1000))
    assert abs(a.faults / len(data) - rate) < 4 * (rate / len(data)) ** 0.5 + 1e-4
    b = FaultInjector(rate, 5)
    assert b.apply(data) == out
    assert FaultInjector(0.0, 1).apply(data) == data


def test_fault_injector_rejects_bad_rates():
    with pytest.raises(ValueError):
        FaultInjector(1.0, 0)
    with pytest.raises(ValueError):
        FaultInjector(-0.1, 0)
