"""Multi-fault flash tests against the firmware core, in the manner of a bootloader simulator.

``firmware_bridge.faultsim`` counts the NVM operations of a clean flash, then (a) cuts the power at every
operation (torn and just after) and fails or drops every operation, (b) cuts at every pair of operations (a cut
during the recovery from a cut), (c) runs seeded random trials mixing 1-3 power cuts, failed and dropped writes
and bit flips at a byte error rate. After each trial the board must boot the complete old table or the complete
new one at every boot (never a mix, never none), and a clean re-run of the flash must finish the job.

Deliberately broken firmware (tests/fault_controls.py) runs through the same plans and must be caught: that is
what shows these plans can fail. The full >= 10,000-trial run is marked ``slow``; ``make bench`` prints its
table (benchmarks/bench_faults.py).
"""
from __future__ import annotations

import random

import pytest
from fault_controls import CONTROLS, HeaderFirstBoard, InPlaceBoard, NoCrcBoard

from firmware_bridge import faultsim as F
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware.testchip import TestChip


@pytest.fixture(scope="module")
def scenarios():
    return F.standard_scenarios()


def assert_clean(st: F.CampaignStats) -> None:
    assert st.counts["bricked"] == 0 and st.counts["mixed"] == 0 and st.rerun_failed == 0, \
        f"{st.label}: {st.row()}; first failures: {st.failures}"


# -- the fault model itself -----------------------------------------------------------------------------------


def test_faulty_flash_counts_operations_and_cuts_where_planned():
    mem = nvm.RamFlash(3 * 4096)
    ff = F.FaultyFlash(mem, {2: F.CUT_AFTER})
    ff.erase(0)
    ff.program(0, b"\x0f\xf0")
    with pytest.raises(nvm.PowerLoss):
        ff.program(2, b"\x00")
    assert ff.ops == 3 and ff.fired == [(2, F.CUT_AFTER, "program", 2)]
    assert mem.read(0, 3) == b"\x0f\xf0\x00"  # cut *after*: the operation completed
    with pytest.raises(nvm.PowerLoss):
        ff.read(0, 1)  # no power: nothing works until power_on
    ff.power_on()
    assert ff.read(0, 3) == b"\x0f\xf0\x00" and not ff.pending()


def test_torn_program_only_clears_bits_and_stops_somewhere():
    for seed in range(200):
        mem = nvm.RamFlash(4096)
        mem.program(0, b"\xf0" * 64)
        ff = F.FaultyFlash(mem, {0: F.CUT_TORN}, seed=seed)
        data = bytes(random.Random(seed).randrange(256) for _ in range(64))
        with pytest.raises(nvm.PowerLoss):
            ff.program(0, data)
        got = mem.read(0, 64)
        full = nvm.and_bytes(b"\xf0" * 64, data)
        k = next((i for i in range(64) if got[i] != full[i]), 64)
        assert got[:k] == full[:k] and k < 64 or got == full  # a programmed prefix ...
        assert got[k + 1:] == (b"\xf0" * 64)[k + 1:]  # ... nothing after the torn byte
        assert all(g & ~0xF0 & 0xFF == 0 for g in got)  # NOR: a program never sets a bit


def test_failed_operation_is_reported_and_lost_one_is_not():
    mem = nvm.RamFlash(4096)
    with pytest.raises(OSError):
        F.FaultyFlash(mem, {0: F.FAIL}, seed=1).program(0, b"\x00" * 16)
    ff = F.FaultyFlash(nvm.RamFlash(4096), {0: F.LOST}, seed=1)
    ff.program(0, b"\x00" * 16)  # returns as if it worked
    assert ff.fired[0][1] == F.LOST and ff.powered


@pytest.mark.parametrize("ber", [1e-3, 1e-2])
def test_bit_flips_follow_the_byte_error_rate_and_the_seed(ber):
    a = F.FaultyFlash(nvm.RamFlash(4096), ber=ber, seed=3)
    for _ in range(100):
        a.erase(0)
    n = 100 * 4096
    assert abs(a.flips / n - ber) < 5 * (ber / n) ** 0.5
    b = F.FaultyFlash(nvm.RamFlash(4096), ber=ber, seed=3)
    for _ in range(100):
        b.erase(0)
    assert a.flips == b.flips and a.mem.mem == b.mem.mem


def test_unknown_fault_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        F.FaultyFlash(nvm.RamFlash(4096), {0: "meteor"})


def test_a_clean_flash_takes_the_expected_operations(scenarios):
    """Boot-log write, two sector erases (header sector first), five 1 KiB data programs, the header: 9."""
    for scn in scenarios:
        assert F.count_ops(scn) == 9, scn.name
        r = F.run_trial(scn, {})
        assert r.outcome == "new" and r.boots == ["old", "new"] and r.rerun_ok


def test_scenarios_hold_what_they_say(scenarios):
    by = {s.name: s for s in scenarios}
    assert by["empty"].old is None and by["empty"].new_gen == 1
    assert by["two tables"].old[0] == 2 and by["two tables"].older == (1,) and by["two tables"].new_gen == 3
    assert by["generation wrap"].old[0] == 0xFFFFFFFF and by["generation wrap"].new_gen == 0
    for scn in scenarios:
        assert scn.old is None or scn.old[1] != scn.new_codes


def test_a_failed_boot_log_write_does_not_stop_the_boot():
    """Found by these tests: an NVM error while counting the boot used to escape Board.__init__."""
    chip = TestChip(16, "bootlog-0001")
    for kind in (F.FAIL, F.LOST):
        ff = F.FaultyFlash(nvm.RamFlash(nvm.flash_size(16 * 1024)), {0: kind})
        b = B.Board(chip, ff, bank_size=16 * 1024)
        assert b.boot_count == 1 and b.store.active is None


# -- the real firmware: never bricked, never mixed ---------------------------------------------------------------


def test_every_single_fault_at_every_operation(scenarios):
    st = F.every_single(scenarios, F.ALL_KINDS)
    assert st.trials == 4 * 9 * 4
    assert_clean(st)
    assert st.counts["old"] > 0 and st.counts["new"] > 0  # both ends are reached: the plan is not trivial


def test_every_pair_of_cuts(scenarios):
    st = F.every_pair(scenarios)
    assert st.trials == 4 * 9 * 9 * 4
    assert st.faults_fired >= 2 * st.trials - st.counts["new"]  # the second cut does land in the recovery
    assert_clean(st)


@pytest.mark.parametrize("ber", [0.0, 1e-4])
def test_random_multi_fault_trials(scenarios, ber):
    st = F.random_campaign(scenarios, 600, ber=ber, seed=7)
    assert_clean(st)
    assert st.faults_fired >= 1.5 * st.trials  # 1-3 faults per trial, nearly all of them fire
    if ber:
        assert st.flips > 0


@pytest.mark.slow
def test_ten_thousand_random_trials(scenarios):
    """The full plan of issue 14: >= 10,000 seeded trials, 1-3 faults each, at four byte error rates."""
    total = F.CampaignStats("all", "1-3", float("nan"))
    for ber in (0.0, 1e-5, 1e-4, 1e-3):
        for k in (1, 2, 3):
            st = F.random_campaign(scenarios, 834, faults=(k,), ber=ber, seed=2024)
            assert_clean(st)
            total.merge(st)
    assert total.trials >= 10_000
    assert_clean(total)


def test_random_trials_are_reproducible(scenarios):
    a = F.random_campaign(scenarios, 40, ber=1e-4, seed=5)
    b = F.random_campaign(scenarios, 40, ber=1e-4, seed=5)
    assert a.row() == b.row() and (a.faults_fired, a.flips) == (b.faults_fired, b.flips)
    c = F.random_campaign(scenarios, 40, ber=1e-4, seed=6)
    assert (c.faults_fired, c.flips) != (a.faults_fired, a.flips)


# -- controls: broken firmware must be caught ----------------------------------------------------------------------


def test_controls_are_only_in_the_test_suite():
    import firmware_bridge

    for cls in CONTROLS.values():
        assert cls.__module__ == "fault_controls"
        assert not hasattr(firmware_bridge, cls.__name__)
    assert B.Board.store_class is nvm.Store


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_broken_firmware_is_caught(scenarios, name):
    fw = CONTROLS[name]
    single = F.every_single(scenarios, F.ALL_KINDS, firmware=fw)
    rand = F.random_campaign(scenarios, 200, ber=1e-4, firmware=fw, seed=1)
    assert single.bad > 0 and rand.bad > 0, (single.row(), rand.row())


def test_header_first_is_caught_by_power_cuts_alone(scenarios):
    st = F.every_single(scenarios, F.CUTS, firmware=HeaderFirstBoard)
    assert st.counts["mixed"] > 0


def test_in_place_update_bricks_boards(scenarios):
    st = F.every_single(scenarios, F.CUTS, firmware=InPlaceBoard)
    assert st.counts["bricked"] > 0


def test_no_crc_survives_cuts_but_not_write_faults(scenarios):
    """Power cuts alone cannot catch a board that never checks CRCs (the header is still written last): the
    failed, dropped and flipped writes of the random plan are needed, which is why the plan mixes them."""
    cuts = F.every_pair(scenarios[2:3], firmware=NoCrcBoard)
    assert cuts.bad == 0
    writes = F.every_single(scenarios, (F.FAIL, F.LOST), firmware=NoCrcBoard)
    assert writes.counts["mixed"] > 0
