"""ROLLBACK and reading a board's table back, in one process: the message in every state, the host's library
(read_board_table, previous_table, rollback), and the rollback under power cuts, failed and lost writes and flipped
bits (firmware_bridge.faultsim), with a deliberately broken rollback as a negative control."""
from __future__ import annotations

import pytest

from firmware_bridge import faultsim as F
from firmware_bridge.client import Hello
from firmware_bridge.errors import BoardError, LinkLost
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import messages as M
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware import wire as W
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.tables import (NothingToRollBack, bank_index, gain_table_from_board, previous_table,
                                    read_board_table, rollback)
from firmware_bridge.testing import memory_client

BANK = 32 * 1024
N = 40
UID = "rb-0001"


class Rig:
    """A test-chip board on a RAM flash, raw requests, and a host client."""

    def __init__(self, board_class=B.Board):
        self.chip = TestChip(N, UID)
        self.flash = nvm.RamFlash(nvm.flash_size(BANK))
        self.board_class = board_class
        self.board = self.boot()
        self.dec = W.Decoder(max_payload=4096)
        self.seq = 0

    def boot(self):
        self.board = self.board_class(self.chip, self.flash, bank_size=BANK)
        return self.board

    def raw(self, t, payload=b""):
        self.seq = (self.seq + 1) & 0xFF
        evs = self.dec.feed(self.board.receive(W.encode_frame(t, self.seq, 0, payload)))
        assert len(evs) == 1
        return evs[0]

    def image(self, value):
        info = self.chip.info()
        return TableImage.from_codes(UID, info["profile_sha256"], {"gain_e": [(value + i) % 256 for i in range(N)],
                                                                   "gain_i": [value] * N}, profile=info["profile"])

    def client(self):
        return memory_client(lambda: self.board)

    def flash_values(self, *values):
        for v in values:
            flash_table(self.client(), self.image(v))

    def hello(self):
        return Hello.from_payload(self.raw(W.T_HELLO).payload)


def test_rollback_activates_the_previous_table_and_hello_shows_it():
    rig = Rig()
    rig.flash_values(1, 2)
    h = rig.hello()
    assert (h.generation, h.active_bank) == (2, 1)
    q = rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_QUERY))
    assert q.status == W.OK
    bank, gen, crc, length = M.unpack_rollback_reply(q.payload)
    assert (bank, gen) == (0, 1)
    assert rig.hello().generation == 2  # a query changes nothing
    r = rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_DO, h.generation, h.table_crc))
    assert r.status == W.OK and M.unpack_rollback_reply(r.payload) == (bank, gen, crc, length)
    h2 = rig.hello()
    assert (h2.generation, h2.active_bank, h2.table_crc) == (1, 0, crc)
    assert rig.chip.codes["gain_i"] == [1] * N  # the chip runs the previous codes at once
    # and after a reboot (the revoked header stays revoked)
    rig.boot()
    assert rig.board.store.active["gen"] == 1 and rig.chip.codes["gain_i"] == [1] * N
    # nothing further back: a rollback goes one table back
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_QUERY)).status == W.E_RANGE
    # the next flash goes into the revoked bank with the generation it had
    rig.flash_values(3)
    assert rig.board.store.active["bank"] == 1 and rig.board.store.active["gen"] == 2


def test_rollback_refusals():
    rig = Rig()
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_QUERY)).status == W.E_RANGE  # no table at all
    rig.flash_values(1)
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_QUERY)).status == W.E_RANGE  # no previous table
    rig.flash_values(2)
    h = rig.hello()
    # mode 1 must name the active table (a host that looked before someone else flashed)
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_DO, 1, h.table_crc)).status == W.E_STATE
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_DO, 2, h.table_crc ^ 1)).status == W.E_STATE
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(7)).status == W.E_RANGE
    assert rig.raw(W.T_ROLLBACK, b"\x00").status == W.E_LENGTH
    # not during a flash session: it is writing the very bank a rollback would activate
    img = rig.image(3)
    payload = img.payload(h)
    r = rig.raw(W.T_FLASH_BEGIN, M.pack_begin(3, len(payload), nvm.crc32(payload), UID,
                                               bytes.fromhex(img.profile_sha256)))
    assert r.status == W.OK and rig.board.state == B.OPEN
    assert rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_QUERY)).status == W.E_STATE
    assert rig.hello().generation == 2


def test_a_previous_bank_with_a_bad_payload_is_not_rolled_back_to():
    """A flipped bit in the old bank (retention): its header is intact but its CRC fails, so there is nothing
    to roll back to, and the board keeps its table."""
    rig = Rig()
    rig.flash_values(1, 2)
    at = rig.board.store.base(0) + nvm.HEADER_SIZE + 10
    rig.flash.mem[at] ^= 0x01
    rig.boot()
    c = rig.client()
    assert previous_table(c) is None
    with pytest.raises(NothingToRollBack, match="holds no valid table"):
        rollback(c)
    assert rig.hello().generation == 2


def test_a_lost_write_is_reported_and_changes_nothing():
    rig = Rig()
    rig.flash_values(1, 2)
    h = rig.hello()
    rig.flash.program = lambda addr, data: None  # the flash drops the write and says nothing
    r = rig.raw(W.T_ROLLBACK, M.pack_rollback(M.ROLLBACK_DO, h.generation, h.table_crc))
    assert r.status == W.E_NVM and rig.hello().generation == 2 and rig.chip.codes["gain_i"] == [2] * N


def test_host_rollback_and_dry_run():
    rig = Rig()
    rig.flash_values(1, 2)
    c = rig.client()
    prev = previous_table(c)
    assert prev == {"bank": "A", "generation": 1, "crc": prev["crc"], "bytes": prev["bytes"]}
    dry = rollback(c, dry_run=True)
    assert dry.outcome == "dry-run" and "nothing was changed" in dry.summary() and rig.hello().generation == 2
    rep = rollback(c)
    assert rep.outcome == "rolled-back" and rep.left["generation"] == 2 and rep.active["generation"] == 1
    assert "gen 1" in rep.board_table and "bank A" in rep.board_table
    assert "flash its table.json" in rep.summary()
    with pytest.raises(NothingToRollBack):
        rollback(c)


def test_host_recognises_a_rollback_whose_reply_a_reboot_lost():
    """The board rolled back and rebooted before its reply left: the resent request meets a fresh board (no
    cache) that runs the previous table; the host sees E_STATE, asks HELLO, and calls it done."""
    rig = Rig()
    rig.flash_values(1, 2)
    c = rig.client()
    h = c.hello()
    real = c.rollback

    def reboot_after(mode, gen=0, crc=0):
        r = real(mode, gen, crc)
        if mode == M.ROLLBACK_DO:
            rig.boot()
            return real(mode, gen, crc)  # the resend, answered by the rebooted board
        return r

    c.rollback = reboot_after
    rep = rollback(c)
    assert rep.outcome == "rolled-back" and rep.active["generation"] == 1 and h.generation == 2


def test_host_rollback_link_lost_says_both_possible_tables():
    rig = Rig()
    rig.flash_values(1, 2)
    c = rig.client()

    def cut(mode, gen=0, crc=0):
        if mode == M.ROLLBACK_DO:
            raise LinkLost("link lost during ROLLBACK: gone")
        return type(c).rollback(c, mode, gen, crc)

    c.rollback = cut
    with pytest.raises(LinkLost) as e:
        rollback(c)
    assert "either table gen 2" in e.value.line() and "table gen 1" in e.value.line()


def test_firmware_without_rollback_is_named():
    class OldBoard(B.Board):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            del self.handlers[W.T_ROLLBACK]

    rig = Rig(OldBoard)
    rig.flash_values(1, 2)
    with pytest.raises(BoardError, match="has no ROLLBACK"):
        rollback(rig.client())


# -- read-table ------------------------------------------------------------------------------------------------------


def test_read_board_table_gives_the_flashed_codes_and_identity_and_flashes_back_up_to_date(tmp_path):
    from hw_models.table import GainTable

    rig = Rig()
    rig.flash_values(5, 6)
    c = rig.client()
    bt = read_board_table(c, port="mem")
    t = bt.table
    assert (t.chip_uid, t.profile, t.profile_sha256) == (UID, rig.chip.info()["profile"],
                                                         rig.chip.info()["profile_sha256"])
    assert t.knobs["gain_e"].codes == [(6 + i) % 256 for i in range(N)] and t.knobs["gain_i"].codes == [6] * N
    assert t.knobs["gain_e"].sharing == "neuron" and t.knobs["gain_e"].bits == 8
    assert t.metrics == {} and t.targets == {} and t.seed is None  # the board stores none of them
    assert t.controller["name"] == "read-back" and t.controller["settings"]["generation"] == 2
    assert bt.active and bt.describe().startswith("table gen 2")
    t.save(tmp_path / "back.json")
    again = GainTable.load(tmp_path / "back.json")  # a valid table.json
    rep = flash_table(c, TableImage.load(tmp_path / "back.json"))
    assert rep.outcome == "up-to-date" and again.codes()["gain_i"].tolist() == [6] * N
    # the other bank: the previous table, marked as not active
    old = read_board_table(c, bank_index("a"))
    assert not old.active and old.generation == 1 and old.table.knobs["gain_i"].codes == [5] * N


def test_read_board_table_refusals():
    rig = Rig()
    c = rig.client()
    with pytest.raises(Exception, match="has no table to read"):
        read_board_table(c)
    rig.flash_values(1)
    with pytest.raises(Exception, match="bank B .* holds no table"):
        read_board_table(c, 1)
    with pytest.raises(ValueError):
        bank_index("C")


def test_gain_table_from_board_takes_wire_or_named_sharing():
    class Ident:
        uid, profile, profile_sha256 = "u", "p", "ab" * 32

    t = gain_table_from_board(Ident(), [{"name": "gain_i", "sharing": 1, "bits": 11, "codes": [3, 4]},
                                        {"name": "gain_e", "sharing": "core", "bits": 11, "codes": [1, 2]}],
                              provenance={"bank": "A"})
    assert list(t.knobs) == ["gain_e", "gain_i"] and t.knobs["gain_i"].sharing == "core"
    assert t.controller == {"name": "read-back", "settings": {"bank": "A"}}


# -- rollback under faults -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rb_scenarios():
    return F.rollback_scenarios()


def test_a_clean_rollback_takes_two_operations(rb_scenarios):
    # the boot's boot-log write and the one program that clears the active header's magic
    assert [F.count_rollback_ops(s) for s in rb_scenarios] == [2, 2, 2]
    for s in rb_scenarios:
        r = F.run_rollback_trial(s, {})
        assert r.ok and r.boots == ["current", "previous"], (s.name, r)


def test_rollback_survives_every_single_fault(rb_scenarios):
    st = F.rollback_every_single(rb_scenarios)
    assert st.trials == 3 * 2 * 4 and st.bad == 0, st.failures
    assert st.counts["bricked"] == st.counts["mixed"] == 0


def test_rollback_survives_every_pair_of_faults(rb_scenarios):
    st = F.rollback_every_pair(rb_scenarios)
    assert st.trials == 3 * 2 * 4 * 16 and st.bad == 0, st.failures


@pytest.mark.parametrize("ber", [0.0, 1e-3])
def test_rollback_random_faults(rb_scenarios, ber):
    st = F.rollback_random_campaign(rb_scenarios, 300, ber=ber, seed=11)
    assert st.trials == 300 and st.bad == 0, st.failures


def test_a_torn_revoke_leaves_the_current_or_the_previous_table(rb_scenarios):
    """A cut while the magic is being cleared: some torn writes leave it intact (the board still runs its table
    and the re-run finishes), most break it (the rollback happened). Never anything else."""
    seen = set()
    for seed in range(200):
        r = F.run_rollback_trial(rb_scenarios[seed % 3], {1: F.CUT_TORN}, seed=seed)
        assert r.ok and set(r.boots) <= {"current", "previous"}
        seen.add(r.boots[1])
    assert seen == {"current", "previous"}


def test_flashing_after_a_rollback_survives_every_single_and_pair_of_faults():
    scn = F.after_rollback_scenario()
    st = F.every_single([scn], F.ALL_KINDS)
    assert st.trials > 0 and st.bad == 0, st.failures
    st = F.every_pair([scn])
    assert st.bad == 0, st.failures


class HeaderTrustingRollbackBoard(B.Board):
    """A negative control: a rollback that checks only the other bank's header, not its payload."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        store = self.store

        def target():
            a = store.active
            h = nvm.unpack_header(store.flash.read(store.base(1 - a["bank"]), nvm.HEADER_SIZE))
            if h is None:
                return None
            return {"bank": 1 - a["bank"], "gen": h["gen"], "crc": h["crc"], "length": h["length"]}

        store.rollback_target = target


def test_the_negative_control_bricks_a_board_the_real_firmware_keeps():
    for board_class, bricked in ((B.Board, False), (HeaderTrustingRollbackBoard, True)):
        rig = Rig(board_class)
        rig.flash_values(1, 2)
        rig.flash.mem[rig.board.store.base(0) + nvm.HEADER_SIZE + 10] ^= 0x01  # the old bank went bad
        rig.boot()
        try:
            rollback(rig.client())
        except Exception:
            pass
        assert (rig.boot().store.active is None) == bricked
