"""The board state machine (sans-IO) and the host client against it, in one process: every request, every
status code the board can give, the reply cache, the transition table, the flash flow, SerialDevice as a
Device, and fuzzing of the board with arbitrary bytes and random request sequences."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.cli.board import BOARD_CODES
from calibrate.cli.exits import ExitCode, exit_code_for
from firmware_bridge import errors
from firmware_bridge.client import BoardClient
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import messages as M
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware import wire as W
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.host import SerialDevice
from firmware_bridge.testing import memory_client
from firmware_bridge.transport import BoardTransport
from hw_models.device import CodeError, Device

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
BANK = 32 * 1024


class Rig:
    """A board on a RAM flash, a raw request helper, and a host client on the same board."""

    def __init__(self, n=40, uid="rig-0001", flash=None):
        self.chip = TestChip(n, uid)
        self.flash = flash or nvm.RamFlash(nvm.flash_size(BANK))
        self.board = B.Board(self.chip, self.flash, bank_size=BANK)
        self.dec = W.Decoder(max_payload=4096)
        self.seq = 0

    def raw(self, t, payload=b"", seq=None, version=W.VERSION):
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        out = self.board.receive(W.encode_frame(t, seq, 0, payload, version=version))
        evs = self.dec.feed(out)
        assert len(evs) == 1, evs
        return evs[0]

    def hello(self):
        return M.unpack_hello(self.raw(W.T_HELLO).payload)

    def image(self, value, uid=None):
        n = self.chip.n
        info = self.chip.info()
        return TableImage.from_codes(uid or self.chip.uid, info["profile_sha256"],
                                     {"gain_e": [(value + i) % 256 for i in range(n)], "gain_i": [value] * n},
                                     profile=info["profile"])

    def client(self):
        return memory_client(lambda: B.Board(self.chip, self.flash, bank_size=BANK))


def table_bytes(rig, value):
    from firmware_bridge.client import Hello

    h = Hello.from_payload(rig.raw(W.T_HELLO).payload)
    return rig.image(value).payload(h)


def test_hello_describes_the_board():
    r = Rig()
    h = r.hello()
    assert h["uid"] == "rig-0001" and h["n_neurons"] == 40 and h["active_bank"] == M.NO_BANK
    assert [k["name"] for k in h["knobs"]] == ["gain_e", "gain_i"]
    assert h["boot_count"] == 1 and h["bank_size"] == BANK


def test_full_flash_by_hand_and_reboot():
    r = Rig()
    data = table_bytes(r, 100)
    crc = nvm.crc32(data)
    sha = bytes.fromhex(r.chip.info()["profile_sha256"])
    assert r.raw(W.T_FLASH_DATA, M.pack_data(0, data[:10])).status == W.E_STATE  # no session
    assert r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, len(data), crc, "rig-0001", sha)).status == W.OK
    assert r.raw(W.T_FLASH_COMMIT, M.pack_commit(1, crc)).status == W.E_STATE  # verify first
    assert r.raw(W.T_FLASH_DATA, M.pack_data(len(data) - 4, b"12345")).status == W.E_RANGE
    assert r.raw(W.T_FLASH_DATA, M.pack_data(0, data)).status == W.OK
    v = r.raw(W.T_FLASH_VERIFY)
    assert v.status == W.OK and M.unpack_verify_reply(v.payload) == (crc, len(data))
    c = r.raw(W.T_FLASH_COMMIT, M.pack_commit(1, crc))
    assert c.status == W.OK and M.unpack_commit_reply(c.payload) == (0, 1, crc)
    # COMMIT repeated with a new sequence number (cache gone): idempotent, answered OK.
    r.raw(W.T_HELLO)
    assert r.raw(W.T_FLASH_COMMIT, M.pack_commit(1, crc)).status == W.OK
    assert r.raw(W.T_FLASH_COMMIT, M.pack_commit(2, crc)).status == W.E_STATE
    assert r.chip.codes["gain_i"] == [100] * 40  # RAM codes follow the committed table
    b2 = B.Board(TestChip(40, "rig-0001"), r.flash, bank_size=BANK)
    assert b2.store.active["gen"] == 1 and b2.boot_count == 2
    assert b2.chip.codes["gain_i"] == [100] * 40


def test_begin_refusals():
    r = Rig()
    data = table_bytes(r, 7)
    crc = nvm.crc32(data)
    sha = bytes.fromhex(r.chip.info()["profile_sha256"])
    assert r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, len(data), crc, "other", sha)).status == W.E_IDENT
    assert r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, len(data), crc, "rig-0001", b"\x01" * 32)).status == W.E_IDENT
    assert r.raw(W.T_FLASH_BEGIN, M.pack_begin(2, len(data), crc, "rig-0001", sha)).status == W.E_GEN
    assert r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, BANK, crc, "rig-0001", sha)).status == W.E_RANGE
    assert r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, 0, crc, "rig-0001", sha)).status == W.E_RANGE
    assert r.raw(W.T_FLASH_BEGIN, b"\x01\x02").status == W.E_LENGTH
    assert r.board.state == B.IDLE


def test_verify_detects_bad_data_and_bad_tables():
    r = Rig()
    data = table_bytes(r, 7)
    sha = bytes.fromhex(r.chip.info()["profile_sha256"])
    crc = nvm.crc32(data)
    r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, len(data), crc, "rig-0001", sha))
    r.raw(W.T_FLASH_DATA, M.pack_data(0, data[:-1] + b"\x00"))
    assert r.raw(W.T_FLASH_VERIFY).status == W.E_VERIFY
    assert r.raw(W.T_FLASH_COMMIT, M.pack_commit(1, crc)).status == W.E_STATE
    # A payload with a good CRC that does not fit the board's knobs: E_TABLE.
    bad = nvm.encode_table([{"name": "gain_e", "sharing": 0, "bits": 8, "codes": [1] * 40}])
    r.raw(W.T_FLASH_BEGIN, M.pack_begin(1, len(bad), nvm.crc32(bad), "rig-0001", sha))
    r.raw(W.T_FLASH_DATA, M.pack_data(0, bad))
    assert r.raw(W.T_FLASH_VERIFY).status == W.E_TABLE
    assert r.board.store.active is None


def test_status_codes_for_bad_requests():
    r = Rig()
    assert r.raw(0x55).status == W.E_TYPE
    assert r.raw(W.T_HELLO, version=9).status == W.E_VERSION
    assert r.raw(W.T_MEASURE, b"\x01").status == W.E_LENGTH
    assert r.raw(W.T_MEASURE, M.pack_measure(0, None)).status == W.E_RANGE
    assert r.raw(W.T_MEASURE, M.pack_measure(1000, [40])).status == W.E_RANGE
    assert r.raw(W.T_MEASURE_READ, M.pack_measure_read(1, 0)).status == W.E_STATE
    assert r.raw(W.T_SET_CODES, M.pack_set_codes(2, 0, [1], 8)).status == W.E_RANGE
    assert r.raw(W.T_SET_CODES, M.pack_set_codes(0, 39, [1, 2], 8)).status == W.E_RANGE
    assert r.raw(W.T_READ_TABLE, M.pack_read_table(M.NO_BANK, 0, 10)).status == W.E_RANGE
    assert r.raw(W.T_FLASH_VERIFY, b"x").status == W.E_STATE


class ExplodingChip(TestChip):
    __test__ = False

    def measure(self, window_ms, monitor):
        raise RuntimeError("chip on fire")


def test_chip_failure_is_a_status_not_a_crash():
    chip = ExplodingChip(8, "boom")
    b = B.Board(chip, nvm.RamFlash(nvm.flash_size(BANK)), bank_size=BANK)
    f = W.Decoder().feed(b.receive(W.encode_frame(W.T_MEASURE, 1, 0, M.pack_measure(1000, None))))[0]
    assert f.status == W.E_CHIP


def test_repeated_request_is_answered_from_the_cache_not_run_twice():
    r = Rig()
    req = W.encode_frame(W.T_MEASURE, 77, 0, M.pack_measure(100_000, None))
    a = r.board.receive(req)
    b = r.board.receive(req)
    assert a == b and r.chip.n_measures == 1
    r.board.receive(W.encode_frame(W.T_MEASURE, 78, 0, M.pack_measure(100_000, None)))
    assert r.chip.n_measures == 2


def test_damaged_frame_gets_a_nak():
    r = Rig()
    frame = bytearray(W.encode_frame(W.T_HELLO, 3, 0))
    frame[3] ^= 0x10
    f = W.Decoder().feed(r.board.receive(bytes(frame)))[0]
    assert (f.type, f.status) == (W.T_NAK, W.E_FRAME)


def test_transition_table_is_the_only_gate():
    """Every (state, type) pair not in TRANSITIONS is refused with E_STATE and leaves the state alone."""
    types = [t for t in W.TYPE_NAMES if t != W.T_NAK]
    for state in (B.IDLE, B.OPEN, B.VERIFIED, B.TRACKING):
        for t in types:
            if (state, t) in B.TRANSITIONS:
                continue
            r = Rig()
            r.board.state = state
            r.board.session = {"bank": 0, "gen": 1, "length": 10, "crc": 0}
            assert r.raw(t, b"").status == W.E_STATE, (B.STATE_NAMES[state], W.TYPE_NAMES[t])
            assert r.board.state == state


def test_measure_pages_and_monitor():
    r = Rig(n=300)
    c = r.client()
    res = c.measure(200.0)
    assert len(res.counts) == 300 and res.window_us == 200_000
    assert M.measure_page_size(W.MAX_PAYLOAD, 0xFFFF) < 300  # it really took several pages
    res2 = c.measure(200.0, [0, 299])
    observed = [p != M.PROXY_NONE for p in res2.proxies_fa]
    assert observed[0] and observed[299] and sum(observed) == 2


def test_set_codes_changes_ram_only():
    r = Rig(n=600)  # more than one SET_CODES chunk per knob
    c = r.client()
    c.set_codes({"gain_e": list(range(256)) + [5] * 344})
    c.measure(10.0)
    assert r.chip.codes["gain_e"][:256] == list(range(256))
    b2 = B.Board(TestChip(600, "rig-0001"), r.flash, bank_size=BANK)
    assert b2.chip.codes["gain_e"] == [128] * 600  # nothing was flashed: a reboot brings the reference back


def test_flash_table_library_flow():
    r = Rig()
    c = r.client()
    rep = flash_table(c, r.image(10))
    assert rep.outcome == "flashed" and rep.generation == 1 and rep.bank == "A" and rep.changed is None
    rep = flash_table(c, r.image(10))
    assert rep.outcome == "up-to-date"
    rep = flash_table(c, r.image(11), dry_run=True)
    assert rep.outcome == "dry-run" and rep.changed == {"gain_e": 40, "gain_i": 40}
    assert c.hello().generation == 1
    rep = flash_table(c, r.image(11))
    assert rep.outcome == "flashed" and rep.generation == 2 and rep.bank == "B"
    # The previous table stays readable in the other bank until the next flash.
    bank, gen, crc, data = c.read_table(0)
    assert (bank, gen) == (0, 1) and nvm.crc32(data) == crc
    rep = flash_table(c, r.image(11), force=True)
    assert rep.outcome == "flashed" and rep.generation == 3 and rep.bank == "A"


def test_identity_refused_on_host_and_on_board():
    r = Rig()
    c = r.client()
    with pytest.raises(errors.IdentityError) as e:
        flash_table(c, r.image(3, uid="rig-9999"))
    assert exit_code_for(e.value) == ExitCode.IDENTITY and "rig-9999" in e.value.line()
    assert "no table" in e.value.line()
    # Board-side check: skip the host check and send a foreign BEGIN anyway.
    img = r.image(3, uid="rig-9999")
    img_ok = r.image(3)
    object.__setattr__(img, "check_against", lambda h: None)
    with pytest.raises(errors.IdentityError, match="FLASH_BEGIN"):
        flash_table(c, img)
    assert c.hello().has_table is False
    assert flash_table(c, img_ok).outcome == "flashed"


def test_flash_restarts_when_the_board_reboots_mid_flash():
    r = Rig(n=3000)
    t = BoardTransport(lambda: B.Board(r.chip, r.flash, bank_size=BANK))
    c = BoardClient(t)
    boots = c.hello().boot_count
    done = []

    def reboot_once(stage, done_b, total):
        if stage == "data" and not done:
            done.append(1)
            t.board = t.make_board()  # a watchdog reset: RAM (and the session) lost

    rep = flash_table(c, r.image(9), chunk=512, on_event=reboot_once)
    assert rep.outcome == "flashed" and rep.restarts == 1
    assert c.hello().boot_count == boots + 1


def test_reset_reboots():
    r = Rig()
    c = r.client()
    h = c.hello()
    assert c.reset().boot_count == h.boot_count + 1


def test_serial_device_is_a_device():
    r = Rig(n=50)
    t = BoardTransport(lambda: B.Board(r.chip, r.flash, bank_size=BANK))
    dev = SerialDevice("memory://", transport=t)
    assert isinstance(dev, Device)
    assert dev.identity.uid == "rig-0001" and dev.identity.backend == "serial"
    assert set(dev.knobs) == {"gain_e", "gain_i"} and dev.knobs["gain_e"].code_ref == 128
    dev.set_codes({"gain_e": np.full(50, 140), "gain_i": 120})
    m = dev.measure(500.0, monitor=[1, 2, 3])
    assert m.spike_counts.shape == (50,) and m.spike_counts.dtype.kind == "i"
    assert m.observed.sum() == 3 and np.isnan(m.proxy_pa[0]) and np.isfinite(m.proxy_pa[1])
    assert m.window_ms == 500.0 and m.temperature_k is None
    with pytest.raises(CodeError):
        dev.set_codes({"gain_e": np.full(50, 256)})
    with pytest.raises(CodeError):
        dev.set_codes({"gain_x": 3})
    with pytest.raises(CodeError):
        dev.measure(10.0, monitor=[50])
    with pytest.raises(ValueError):
        dev.measure(-1.0)
    with dev:
        pass
    with pytest.raises(errors.BridgeError):
        dev.measure(10.0)


def test_proxy_fixed_point():
    assert B.to_fa(None) == M.PROXY_NONE and B.to_fa(float("nan")) == M.PROXY_NONE
    assert B.to_fa(1.2345) == 1235 and B.to_fa(-1.2345) == -1235
    assert B.to_fa(1e12) == M.PROXY_MAX and B.to_fa(-1e12) == -M.PROXY_MAX


# -- fuzzing ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_board_with_arbitrary_bytes(data):
    r = Rig(n=8)
    out = r.board.receive(data)  # must not raise
    for ev in W.Decoder(max_payload=4096).feed(out):
        assert isinstance(ev, W.Frame) and ev.type & W.REPLY


request = st.tuples(st.sampled_from(sorted(t for t in W.TYPE_NAMES if t not in (W.T_NAK, W.T_RESET)) + [0x42]),
                    st.binary(max_size=64) | st.builds(lambda n: M.pack_measure(n, None), st.integers(1, 50_000)))


@settings(max_examples=150, deadline=None)
@given(st.lists(request, max_size=25))
def test_fuzz_board_with_random_valid_frames(reqs):
    """Every well-framed request gets exactly one reply, echoing its sequence number, whatever it says."""
    r = Rig(n=8)
    for i, (t, payload) in enumerate(reqs):
        f = r.raw(t, payload, seq=i & 0xFF)
        assert f.seq == i & 0xFF and f.type == t | W.REPLY and f.status in W.STATUS_TEXT
    assert r.board.state in (B.IDLE, B.OPEN, B.VERIFIED, B.TRACKING)


# -- documentation agrees with the code ------------------------------------------------------------------------


def test_protocol_doc_lists_every_status_type_transition_and_exit_code():
    text = DOCS.read_text()
    for code, (name, _) in W.STATUS_TEXT.items():
        assert re.search(rf"\|\s*{code}\s*\|\s*`?{name}`?\s*\|", text), f"status {name} missing in docs"
    for t, name in W.TYPE_NAMES.items():
        assert f"0x{t:02X}" in text and name in text, f"message {name} missing in docs"
    for (state, t), nxt in B.TRANSITIONS.items():
        row = rf"\|\s*{B.STATE_NAMES[state]}\s*\|\s*{W.TYPE_NAMES[t]}\s*\|\s*{B.STATE_NAMES[nxt]}\s*\|"
        assert re.search(row, text), f"transition {B.STATE_NAMES[state]} {W.TYPE_NAMES[t]} missing in docs"
    for code in BOARD_CODES:  # the board commands' exit codes, from the CLI's one table
        assert re.search(rf"\|\s*{int(code)}\s*\|", text)
