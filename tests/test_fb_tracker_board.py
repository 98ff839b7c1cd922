"""The on-board tracker inside the firmware: the TRACKING state and the TRACK_* messages, over the host client, on
the MicroPython test chip (in this process, fast). What the issue asks of it: the tracker writes RAM only (the
NVM is byte-identical after a run), a reset boots the flashed table with the tracker as the table says, a flash
stops the tracker first, the board counts frames (a silent host is provable), and the tracked codes come back as
a table the user may flash."""
from __future__ import annotations

import dataclasses

import pytest

from firmware_bridge.tables import read_board_table
from firmware_bridge.client import TrackerStatus
from firmware_bridge.errors import BoardError, BridgeError
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import messages as M
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware import tracker as TR
from firmware_bridge.firmware import wire as W
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.host import SerialDevice
from firmware_bridge.testing import memory_client
from hw_models.table import GainTable

N = 24
UID = "trk-0001"


class Rig:
    def __init__(self, n=N, **section):
        self.chip = TestChip(n, UID, seed=3)
        self.flash = nvm.RamFlash(nvm.flash_size())
        self.client = memory_client(lambda: B.Board(self.chip, self.flash))
        self.section = dict(self.chip.tracker_section(), **section)

    @property
    def board(self):
        return self.client.transport.board

    def image(self, value=128, tracker=True, **section):
        info = self.chip.info()
        img = TableImage.from_codes(UID, info["profile_sha256"], {"gain_e": [value] * self.chip.n,
                                                                  "gain_i": [value - 8] * self.chip.n},
                                    profile=info["profile"])
        return dataclasses.replace(img, tracker=dict(self.section, **section) if tracker else None)

    def flash_image(self, **kw):
        img = self.image(**kw)
        flash_table(self.client, img)
        return img

    def run(self, windows):
        b = self.board
        for _ in range(windows * b.tracker.splits):
            assert b.tick()


def test_start_needs_a_table_with_a_tracker_section():
    r = Rig()
    with pytest.raises(BoardError) as e:
        r.client.track_start()  # empty board
    assert e.value.status == W.E_TABLE
    r.flash_image(tracker=False)  # a format-1 table flashes and runs, but gives the tracker nothing to start from
    with pytest.raises(BoardError) as e:
        r.client.track_start()
    assert e.value.status == W.E_TABLE and "tracker section" in e.value.line()
    st = r.client.track_status()
    assert (st.running, st.section, st.windows) == (False, "none", 0)


def test_while_tracking_the_chip_is_the_trackers():
    r = Rig()
    r.flash_image()
    st = r.client.track_start()
    assert st.running and st.section == "off at boot" and r.board.state == B.TRACKING
    r.run(2)
    for t, payload in ((W.T_SET_CODES, M.pack_set_codes(0, 0, [1], 8)), (W.T_MEASURE, M.pack_measure(1000, None)),
                       (W.T_MEASURE_READ, M.pack_measure_read(1, 0, 1))):
        assert r.client.request(t, payload).status == W.E_STATE
    assert r.client.hello().has_table and r.client.read_table()[1] == 1
    assert r.client.track_status().windows == 2 and r.board.state == B.TRACKING
    with pytest.raises(BoardError) as e:
        SerialDevice("mem", transport=r.client.transport).measure(100.0)
    assert e.value.status == W.E_STATE


def test_the_tracker_writes_ram_only_the_nvm_is_byte_identical():
    r = Rig()
    img = r.flash_image()
    before = bytes(r.flash.mem)
    r.client.track_start()
    r.run(20)
    st = r.client.track_status(detail=True)
    assert st.windows == 20 and any(st.moves["gain_e"]) and any(st.moves["gain_i"])
    r.client.track_stop()
    assert bytes(r.flash.mem) == before
    assert r.client.read_ram_codes() != {k: list(v.codes) for k, v in img.knobs.items()}  # the RAM did move


@pytest.mark.parametrize("boot", [0, 1])
def test_a_reset_during_tracking_boots_the_flashed_table_with_the_tracker_as_the_table_says(boot):
    r = Rig()
    img = r.flash_image(boot=boot)
    flashed = {k: list(v.codes) for k, v in img.knobs.items()}
    r.client.track_start()
    r.run(10)
    assert r.client.read_ram_codes() != flashed
    h = r.client.reset()
    assert h.boot_count == 2
    assert r.client.read_ram_codes() == flashed
    assert r.chip.codes == flashed  # and the chip runs them
    st = r.client.track_status()
    assert st.running == bool(boot) and st.windows == 0 and st.section == ("on at boot" if boot else "off at boot")
    assert r.board.state == (B.TRACKING if boot else B.IDLE)
    if boot:
        r.run(1)
        assert r.client.track_status().windows == 1


def test_a_flash_during_tracking_stops_the_tracker_first():
    r = Rig()
    r.flash_image()
    r.client.track_start()
    r.run(5)
    new = r.image(value=140)
    rep = flash_table(r.client, new)
    assert rep.outcome == "flashed" and rep.generation == 2
    st = r.client.track_status()
    assert not st.running and st.why == "stopped by a flash" and r.board.state == B.IDLE
    assert r.client.read_ram_codes() == {k: list(v.codes) for k, v in new.knobs.items()}  # the new table runs
    # even a flash the board refuses (another chip's table) stops the tracker before anything else
    r.client.track_start()
    r.run(1)
    info = r.chip.info()
    rep = r.client.flash_begin(3, 100, 0, "other-chip", bytes.fromhex(info["profile_sha256"]))
    assert rep.status == W.E_IDENT
    st = r.client.track_status()
    assert not st.running and st.why == "stopped by a flash"


def test_a_rollback_during_tracking_stops_the_tracker_first_and_a_query_does_not():
    from firmware_bridge.tables import previous_table, rollback

    r = Rig()
    first = r.flash_image(value=120)
    r.flash_image(value=136)
    r.client.track_start()
    r.run(2)
    nvm_before = bytes(r.flash.mem)
    assert previous_table(r.client)["generation"] == 1  # a query leaves the tracker running
    st = r.client.track_status()
    assert st.running and r.board.state == B.TRACKING and bytes(r.flash.mem) == nvm_before
    rep = rollback(r.client)
    assert rep.outcome == "rolled-back"
    st = r.client.track_status()
    assert not st.running and st.why == "stopped by a rollback" and r.board.state == B.IDLE
    assert r.client.read_ram_codes() == {k: list(v.codes) for k, v in first.knobs.items()}  # the previous table runs
    # the board serves the host again (SET_CODES is no longer refused)
    r.client.set_codes({"gain_e": [100] * N})


def test_the_board_counts_frames_so_a_silent_host_is_provable():
    r = Rig()
    r.flash_image()
    start = r.client.track_start()
    r.run(6)  # the board alone: no frame
    st = r.client.track_status()
    assert st.frames == start.frames + 1 and st.prev_frame_s == st.start_s
    assert st.board_s == pytest.approx(st.start_s + 6 * 1.0)
    r.run(1)
    r.client.hello()  # a request in between shows
    st = r.client.track_status()
    assert st.frames == start.frames + 3 and st.prev_frame_s > st.start_s


def test_stop_keeps_or_reverts_the_codes():
    r = Rig()
    img = r.flash_image()
    flashed = {k: list(v.codes) for k, v in img.knobs.items()}
    r.client.track_start()
    r.run(8)
    tracked = r.client.read_ram_codes()
    st = r.client.track_stop()
    assert not st.running and st.why == "stopped by the host" and st.windows == 8
    assert r.client.read_ram_codes() == tracked
    r.client.track_stop(revert=True)
    assert r.client.read_ram_codes() == flashed
    # stopped: SET_CODES and MEASURE are the host's again
    r.client.set_codes({"gain_e": [100] * N})
    assert r.client.measure(100.0).counts


def test_tracked_codes_come_back_as_a_table_that_flashes(tmp_path):
    r = Rig()
    r.flash_image()
    bt = read_board_table(r.client)  # what `eical read-table` saves (the NVM's table)
    plain = bt.table
    assert bt.tracker_status is None and plain.controller["name"] == "read-back" and plain.tracker["boot"] == "off"
    # the tracker section comes back as it was flashed: flashing the read-back table is "already up to date"
    assert flash_table(r.client, TableImage.from_gain_table(plain)).outcome == "up-to-date"
    with pytest.raises(BridgeError, match="has not run since boot"):
        read_board_table(r.client, tracked=True)
    r.client.track_start()
    r.run(12)
    tbt = read_board_table(r.client, tracked=True)
    table, st = tbt.table, tbt.tracker_status
    assert st.windows == 12 and table.controller["name"] == "on-board-tracker"
    assert {k: v.codes for k, v in table.knobs.items()} == r.client.read_ram_codes()
    assert table.tracker["adc_offset_pa"] == plain.tracker["adc_offset_pa"]
    table.save(tmp_path / "tracked.json")
    back = GainTable.load(tmp_path / "tracked.json")
    rep = flash_table(r.client, TableImage.load(tmp_path / "tracked.json"))
    assert rep.outcome == "flashed"
    assert read_board_table(r.client).table.knobs["gain_e"].codes == back.knobs["gain_e"].codes
    # the band is now centred on the tracked codes
    r.client.track_start()
    assert r.board.tracker.code0_e.tolist() == back.knobs["gain_e"].codes


def test_reads_of_many_groups_come_in_pages():
    r = Rig(n=1500)
    r.flash_image()
    r.client.track_start()
    r.run(1)
    st = r.client.track_status(detail=True)
    assert len(st.flags) == 1500 and len(st.moves["gain_i"]) == 1500
    assert r.client.stats.requests > 6  # codes of 2 knobs and the flags did not fit one frame each


def test_the_band_holds_and_is_reported_on_the_board():
    r = Rig(rate_hz=22.0, band=0.1)  # the test chip fires 30 Hz at balance whatever the scale: unreachable
    r.flash_image()
    r.client.track_start()
    r.run(30)
    st = r.client.track_status(detail=True)
    lo_e, hi_e = int(128 * 0.9 + 0.999), int(128 * 1.1)
    assert all(lo_e <= 128 + m <= hi_e for m in st.moves["gain_e"])
    assert st.at_band > 0 and any(f & (TR.F_BAND_E | TR.F_BAND_I) for f in st.flags)
    assert "at the +-10% band" in st.summary()


def test_a_board_whose_table_says_on_tracks_from_boot():
    r = Rig()
    r.flash_image(boot=1)
    r.client.reset()
    assert r.board.state == B.TRACKING
    r.run(3)
    st = r.client.track_status()
    assert st.running and st.windows == 3 and st.section == "on at boot"


def test_status_summary_and_dict():
    r = Rig()
    r.flash_image()
    r.client.track_start()
    r.run(4)
    st = r.client.track_status(detail=True)
    d = st.to_dict()
    assert d["windows"] == 4 and d["frozen_groups"] == [] and isinstance(st, TrackerStatus)
    assert "4 windows" in st.summary() and "code moves" in st.summary()
