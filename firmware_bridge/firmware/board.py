# The board's protocol state machine: bytes in, bytes out. No I/O of its own: the chip and the flash are injected.
#
# Theory of operation
# -------------------
# ``Board.receive(data)`` feeds bytes from the link to the frame decoder and returns the bytes to send back.
# Every good request gets exactly one reply frame with the request's sequence number echoed; every damaged frame
# gets a NAK (type 0xFF, status E_FRAME) so that the host resends at once instead of waiting for a timeout.
#
# Rule 1 (delivery): the board keeps the last request and its reply. A request identical to the last one (same
#         type, sequence number and payload) is a resend after a lost reply: it is answered from the cache, never
#         run twice. Any other request is run and replaces the cache.
# Rule 2 (state): the flash session is a small state machine, and TRANSITIONS below is the only place that says
#         which request is legal in which state and where a successful one leads. A request not in the table is
#         answered E_STATE and changes nothing. A handler may only move the state elsewhere on failure, and says
#         so in a comment.
# Rule 3 (safety): everything that touches the NVM goes through nvm.Store, whose rules make every interruption
#         end in the complete old table or the complete new one.
# Rule 4 (RAM vs NVM): SET_CODES changes the codes in RAM only. At boot, at COMMIT and at ROLLBACK the RAM codes
#         become the active table's codes (the profile's reference code everywhere on an empty board).
# Rule 5 (the on-board tracker, tracker.py): while it runs (state TRACKING) the chip is the tracker's: the board
#         runs one tracker sub-window per ``tick()`` (its I/O loop calls it whenever no request is waiting) and
#         writes the tracker's codes to RAM, never to the NVM. The host may ask (HELLO, READ_TABLE, TRACK_STATUS,
#         TRACK_READ) and stop it; SET_CODES and MEASURE are refused (E_STATE). FLASH_BEGIN and ROLLBACK stop it first. A
#         reset boots the flashed table with the tracker as the table says (its tracker section's ``boot``).
#
# States: IDLE (no flash session), OPEN (BEGIN done, data may be written), VERIFIED (the written payload's CRC
# and format checked out; COMMIT allowed), TRACKING (the on-board tracker runs). A reset loses the session: the
# board boots IDLE, or TRACKING when the active table says so.
#
# MicroPython subset: no typing, dataclasses, f-strings, struct.Struct, numpy.

import binascii

from . import messages as M
from . import nvm
from . import tracker as TR
from .board_tracker import TrackerHandlers
from . import wire as W

FW_VERSION = (0, 3, 0)  # 0.2: ROLLBACK; 0.3: the on-board tracker (TRACK_*, TRACKING, table format 2)

from .states import IDLE, OPEN, STATE_NAMES, TRACKING, VERIFIED  # noqa: F401  (the states, named here as before)

# (state, request type) -> state after an OK reply. Missing: E_STATE.
TRANSITIONS = {
    (IDLE, W.T_HELLO): IDLE,
    (OPEN, W.T_HELLO): OPEN,
    (VERIFIED, W.T_HELLO): VERIFIED,
    (IDLE, W.T_SET_CODES): IDLE,
    (OPEN, W.T_SET_CODES): OPEN,
    (VERIFIED, W.T_SET_CODES): VERIFIED,
    (IDLE, W.T_MEASURE): IDLE,
    (OPEN, W.T_MEASURE): OPEN,
    (VERIFIED, W.T_MEASURE): VERIFIED,
    (IDLE, W.T_MEASURE_READ): IDLE,
    (OPEN, W.T_MEASURE_READ): OPEN,
    (VERIFIED, W.T_MEASURE_READ): VERIFIED,
    (IDLE, W.T_READ_TABLE): IDLE,
    (OPEN, W.T_READ_TABLE): OPEN,
    (VERIFIED, W.T_READ_TABLE): VERIFIED,
    (IDLE, W.T_RESET): IDLE,
    (OPEN, W.T_RESET): IDLE,
    (VERIFIED, W.T_RESET): IDLE,
    # A new BEGIN abandons any open session (its bank was never committed, so nothing is lost).
    (IDLE, W.T_FLASH_BEGIN): OPEN,
    (OPEN, W.T_FLASH_BEGIN): OPEN,
    (VERIFIED, W.T_FLASH_BEGIN): OPEN,
    (OPEN, W.T_FLASH_DATA): OPEN,
    (VERIFIED, W.T_FLASH_DATA): OPEN,  # new data: verify again
    (OPEN, W.T_FLASH_VERIFY): VERIFIED,
    (VERIFIED, W.T_FLASH_VERIFY): VERIFIED,
    (VERIFIED, W.T_FLASH_COMMIT): IDLE,
    # COMMIT in IDLE is only OK when it names the active table: a resent COMMIT whose reply was lost and whose
    # cache entry is gone (the host sent something in between). Anything else is E_STATE.
    (IDLE, W.T_FLASH_COMMIT): IDLE,
    # The on-board tracker (Rule 5). START in TRACKING starts it afresh from the flashed table.
    (IDLE, W.T_TRACK_START): TRACKING,
    (TRACKING, W.T_TRACK_START): TRACKING,
    (IDLE, W.T_TRACK_STOP): IDLE,
    (TRACKING, W.T_TRACK_STOP): IDLE,
    (IDLE, W.T_TRACK_STATUS): IDLE,
    (OPEN, W.T_TRACK_STATUS): OPEN,
    (VERIFIED, W.T_TRACK_STATUS): VERIFIED,
    (TRACKING, W.T_TRACK_STATUS): TRACKING,
    (IDLE, W.T_TRACK_READ): IDLE,
    (OPEN, W.T_TRACK_READ): OPEN,
    (VERIFIED, W.T_TRACK_READ): VERIFIED,
    (TRACKING, W.T_TRACK_READ): TRACKING,
    (TRACKING, W.T_HELLO): TRACKING,
    (TRACKING, W.T_READ_TABLE): TRACKING,
    (TRACKING, W.T_RESET): IDLE,
    # A flash stops the tracker first (the handler does it before anything else).
    (TRACKING, W.T_FLASH_BEGIN): OPEN,
}
# ROLLBACK only outside a flash session: an open session is writing the very bank a rollback would activate.
TRANSITIONS[(IDLE, W.T_ROLLBACK)] = IDLE
# In TRACKING a query leaves the tracker running; a rollback stops it first (Rule 5), and the board is IDLE after.
TRANSITIONS[(TRACKING, W.T_ROLLBACK)] = TRACKING


def board_knobs(chip_knobs):
    """The firmware's knob dicts (sharing and DAC kind as their codes in HELLO) of a chip port's ``info()["knobs"]``
    (names)."""
    return [{"name": k["name"], "sharing": M.SHARING.index(k["sharing"]), "dac": M.DACS.index(k.get("dac", "linear")),
             "bits": k["bits"], "code_ref": k["code_ref"], "n_groups": k["n_groups"]} for k in chip_knobs]


class Board(TrackerHandlers):
    """One board: boots from the flash, then answers frames.

    ``store_class`` (a class attribute, ``nvm.Store``) is the NVM store the board boots with. It is a seam for
    the fault tests only: they swap in deliberately broken stores to prove that the fault simulation catches a
    broken commit (tests/fault_controls.py). Nothing else changes it.

    Parameters
    ----------
    chip
        The chip port: ``info()`` -> dict (uid, profile, profile_sha256 hex, n_neurons, n_cores, model, dt_ms,
        speedup, counter_bits, knobs: list of dicts name, sharing ("neuron"|"core"|"chip"), bits, code_ref,
        n_groups, optional dac ("linear"|"coarse_fine"); optional proxy_channels ("all"|"one_per_core") and
        measure_ms_per_s), ``set_codes(dict name -> list of int)``, and
        ``measure(window_ms, monitor)`` -> (counts, proxies in pA or None where not observed, hardware_ms,
        temperature_k or None).
    flash
        NOR flash object (see nvm.Store).
    bank_size, max_payload
        NVM bank size and largest frame payload this board accepts.
    erase_ms, op_ms
        Worst-case times the board reports in HELLO so that the host can scale its timeouts.
    encode, decode
        COBS functions (the CPython emulator may pass the C ones).
    """

    store_class = nvm.Store

    def __init__(self, chip, flash, bank_size=nvm.BANK_SIZE, max_payload=W.MAX_PAYLOAD, erase_ms=50, op_ms=20,
                 encode=W.cobs_encode, decode=W.cobs_decode):
        info = chip.info()
        self.chip = chip
        self.info = info
        self.uid = info["uid"]
        self.sha = binascii.unhexlify(info["profile_sha256"])
        self.knobs = board_knobs(info["knobs"])
        self.max_payload = max_payload
        self.erase_ms = erase_ms
        self.op_ms = op_ms
        self._encode = encode
        self._dec = W.Decoder(max_payload, decode)
        self.store = self.store_class(flash, self.uid, self.sha, self.knobs, bank_size, n_neurons=info["n_neurons"])
        # Boot: count it, pick the newest valid bank, load its codes into RAM and into the chip (Rule 4).
        self.boot_count = self.store.count_boot()
        active = self.store.scan()
        if active is None:
            self.codes = [[k["code_ref"]] * k["n_groups"] for k in self.knobs]
        else:
            self.codes = [list(c) for c in active["codes"]]
        self._dirty = True
        self.push_codes()
        self.state = IDLE
        self.session = None  # dict bank, gen, length, crc while a flash is open
        self.meas = None
        self.meas_id = 0
        self._last_key = None
        self._last_reply = None
        self.reset_requested = False
        self.frames = 0  # good frames received since boot (TRACK_STATUS: proof of a silent host)
        self.model_ms = 0.0  # model time the chip ran since boot (host windows and tracker windows)
        self.prev_frame_ms = 0.0
        self.last_frame_ms = 0.0
        self.tracker = None
        self.track_why = TR.WHY_NEVER
        self.start_ms = 0.0
        if active is not None and active.get("tracker") is not None and active["tracker"]["boot"]:
            if self.start_tracker() == W.OK:
                self.state = TRACKING
        self.handlers = {
            W.T_HELLO: self.on_hello,
            W.T_SET_CODES: self.on_set_codes,
            W.T_MEASURE: self.on_measure,
            W.T_MEASURE_READ: self.on_measure_read,
            W.T_FLASH_BEGIN: self.on_begin,
            W.T_FLASH_DATA: self.on_data,
            W.T_FLASH_VERIFY: self.on_verify,
            W.T_FLASH_COMMIT: self.on_commit,
            W.T_READ_TABLE: self.on_read_table,
            W.T_RESET: self.on_reset,
            W.T_TRACK_START: self.on_track_start,
            W.T_TRACK_STOP: self.on_track_stop,
            W.T_TRACK_STATUS: self.on_track_status,
            W.T_TRACK_READ: self.on_track_read,
        }
        self.handlers[W.T_ROLLBACK] = self.on_rollback

    # -- bytes in, bytes out --

    def receive(self, data):
        """Feed bytes from the link; return the bytes to send back (possibly empty).

        After a RESET reply, ``reset_requested`` is set and the rest of ``data`` is dropped (RAM is lost at a
        reset): the I/O loop sends the reply, then boots a new Board on the same flash.
        """
        out = []
        for ev in self._dec.feed(data):
            if isinstance(ev, W.BadFrame):
                out.append(W.encode_frame(W.T_NAK, 0, W.E_FRAME, b"", encode=self._encode))
            else:
                out.append(self.handle(ev))
            if self.reset_requested:
                break
        return b"".join(out)

    def handle(self, f):
        """Reply bytes for one good frame (Rules 1 and 2)."""
        rtype = (f.type | W.REPLY) & 0xFF
        if f.version != W.VERSION:
            return self.reply(rtype, f.seq, W.E_VERSION, b"")
        self.frames += 1
        self.prev_frame_ms = self.last_frame_ms
        self.last_frame_ms = self.model_ms
        key = (f.type, f.seq, bytes(f.payload))
        if key == self._last_key:
            return self._last_reply
        handler = self.handlers.get(f.type)
        if handler is None:
            out = self.reply(rtype, f.seq, W.E_TYPE, b"")
        elif (self.state, f.type) not in TRANSITIONS:
            out = self.reply(rtype, f.seq, W.E_STATE, b"")
        else:
            nxt = TRANSITIONS[(self.state, f.type)]
            try:
                status, payload = handler(f.payload)
            except ValueError:
                status, payload = W.E_LENGTH, b""
            except OSError:
                status, payload = W.E_NVM, b""
            except Exception:
                # A firmware bug must not take the link down: report it and stay in the current state.
                status, payload = W.E_INTERNAL, b""
            if status == W.OK:
                self.state = nxt
            if self.state == TRACKING and (self.tracker is None or not self.tracker.running):
                self.state = IDLE  # TRACKING only while the tracker runs (a rollback stopped it)
            out = self.reply(rtype, f.seq, status, payload)
        self._last_key = key
        self._last_reply = out
        return out

    def reply(self, rtype, seq, status, payload):
        return W.encode_frame(rtype, seq, status, payload, encode=self._encode)

    # -- helpers --

    def push_codes(self):
        """Hand the RAM codes to the chip if they changed since the last push."""
        if self._dirty:
            codes = {}
            for i in range(len(self.knobs)):
                codes[self.knobs[i]["name"]] = self.codes[i]
            self.chip.set_codes(codes)
            self._dirty = False

    def hello_fields(self):
        info = self.info
        a = self.store.active
        return {
            "proto": W.VERSION, "fw": FW_VERSION, "uid": self.uid, "profile": info["profile"],
            "profile_sha256": self.sha, "model": info["model"],
            "proxy_channels": info.get("proxy_channels", "all"), "n_neurons": info["n_neurons"],
            "n_cores": info["n_cores"], "dt_ms": info["dt_ms"], "speedup": info["speedup"],
            "counter_bits": info["counter_bits"], "max_payload": self.max_payload,
            "bank_size": self.store.bank_size, "sector_size": self.store.flash.sector_size,
            "erase_ms": self.erase_ms, "op_ms": self.op_ms,
            "measure_ms_per_s": int(info.get("measure_ms_per_s", 0)),
            "active_bank": M.NO_BANK if a is None else a["bank"],
            "generation": 0 if a is None else a["gen"],
            "table_crc": 0 if a is None else a["crc"],
            "table_len": 0 if a is None else a["length"],
            "boot_count": self.boot_count, "knobs": self.knobs,
        }

    # -- handlers: each returns (status, payload); ValueError from unpacking means E_LENGTH --

    def on_hello(self, payload):
        return W.OK, M.pack_hello(self.hello_fields())

    def on_set_codes(self, payload):
        knob, first, raw = M.unpack_set_codes_head(payload)
        if knob >= len(self.knobs):
            return W.E_RANGE, b""
        spec = self.knobs[knob]
        w = M.code_width(spec["bits"])
        if len(raw) % w:
            return W.E_LENGTH, b""
        n = len(raw) // w
        if first + n > spec["n_groups"]:
            return W.E_RANGE, b""
        codes = M.unpack_codes(raw, n, spec["bits"])
        top = (1 << spec["bits"]) - 1
        for c in codes:
            if c > top:
                return W.E_RANGE, b""
        self.codes[knob][first:first + n] = codes
        self._dirty = True
        return W.OK, b""

    def on_measure(self, payload):
        window_us, monitor, page = M.unpack_measure(payload)
        n = self.info["n_neurons"]
        if window_us == 0:
            return W.E_RANGE, b""
        if monitor is not None:
            for i in monitor:
                if i >= n:
                    return W.E_RANGE, b""
        try:
            self.push_codes()
            counts, proxies, hw_ms, temp_k = self.chip.measure(window_us / 1000.0, monitor)
        except Exception:
            return W.E_CHIP, b""
        self.model_ms += window_us / 1000.0
        cnt = []
        for c in counts:
            c = int(c)
            cnt.append(0 if c < 0 else (0xFFFFFFFF if c > 0xFFFFFFFF else c))
        prx = []
        for p in proxies:
            prx.append(to_fa(p))
        self.meas_id = (self.meas_id + 1) & 0xFFFF
        hw_us = min(0xFFFFFFFF, max(0, int(hw_ms * 1000.0 + 0.5)))
        temp_mk = 0 if temp_k is None else min(0xFFFFFFFF, max(1, int(temp_k * 1000.0 + 0.5)))
        self.meas = (self.meas_id, window_us, hw_us, temp_mk, cnt, prx)
        return W.OK, self.meas_page(0, page)

    def meas_page(self, first, page):
        mid, window_us, hw_us, temp_mk, cnt, prx = self.meas
        k = M.measure_page_size(self.max_payload, page)
        end = min(len(cnt), first + k)
        return M.pack_measure_page(mid, window_us, hw_us, temp_mk, len(cnt), first, cnt[first:end], prx[first:end])

    def on_measure_read(self, payload):
        mid, first, page = M.unpack_measure_read(payload)
        if self.meas is None or self.meas[0] != mid:
            return W.E_STATE, b""
        if first >= len(self.meas[4]) and first != 0:
            return W.E_RANGE, b""
        return W.OK, self.meas_page(first, page)

    def on_begin(self, payload):
        # A flash stops the tracker first (Rule 5), whatever becomes of the flash; the tracked codes stay in RAM
        # until the COMMIT loads the new table.
        if self.tracker is not None and self.tracker.running:
            self.stop_tracker(TR.WHY_FLASH)
        gen, length, crc, uid, sha = M.unpack_begin(payload)
        # Any failure here also abandons an open session: the host meant to start over.
        self.session = None
        self.state = IDLE
        if uid != self.uid or bytes(sha) != self.sha:
            return W.E_IDENT, b""
        if length == 0 or length > self.store.capacity:
            return W.E_RANGE, b""
        if gen != self.store.next_gen():
            return W.E_GEN, b""
        bank = self.store.target()
        self.store.erase_for(bank, length)
        self.session = {"bank": bank, "gen": gen, "length": length, "crc": crc}
        return W.OK, bytes([bank])

    def on_data(self, payload):
        offset, data = M.unpack_data(payload)
        s = self.session
        if offset + len(data) > s["length"]:
            return W.E_RANGE, b""
        self.store.write(s["bank"], offset, data)
        return W.OK, b""

    def check_session(self):
        """(status, crc) of the open session's bank: E_VERIFY on a CRC mismatch, E_TABLE on a bad payload."""
        s = self.session
        c = self.store.crc(s["bank"], s["length"])
        if c != s["crc"]:
            return W.E_VERIFY, c
        if self.store.fit(self.store.read(s["bank"], 0, s["length"])) is None:
            return W.E_TABLE, c
        return W.OK, c

    def on_verify(self, payload):
        if payload:
            return W.E_LENGTH, b""
        status, c = self.check_session()
        if status != W.OK:
            self.state = OPEN  # failed: data must be rewritten and verified again
        return status, M.pack_verify_reply(c, self.session["length"])

    def on_commit(self, payload):
        gen, crc = M.unpack_commit(payload)
        a = self.store.active
        if self.state == IDLE:
            if a is not None and a["gen"] == gen and a["crc"] == crc:
                return W.OK, M.pack_commit_reply(a["bank"], gen, crc)
            return W.E_STATE, b""
        s = self.session
        if gen != s["gen"] or crc != s["crc"]:
            return W.E_STATE, b""
        status, _ = self.check_session()  # re-verify: the data could have changed since VERIFY
        if status != W.OK:
            self.state = OPEN
            return status, b""
        a = self.store.commit(s["bank"], s["gen"], s["length"], s["crc"])
        if a is None:
            self.state = OPEN
            return W.E_NVM, b""
        self.session = None
        self.codes = [list(c) for c in a["codes"]]
        self._dirty = True
        try:
            self.push_codes()
        except Exception:
            # The table is committed (and will be loaded at the next boot); the chip refused it now.
            return W.E_CHIP, b""
        return W.OK, M.pack_commit_reply(a["bank"], a["gen"], a["crc"])

    def on_read_table(self, payload):
        bank, offset, length = M.unpack_read_table(payload)
        a = self.store.active
        if bank == M.NO_BANK:
            if a is None:
                return W.E_RANGE, b""
            bank, gen, crc, total = a["bank"], a["gen"], a["crc"], a["length"]
        elif bank < nvm.N_BANKS:
            # Reading the other bank (the previous table) is allowed; its header is checked, its payload the host
            # checks against the CRC returned here.
            h = nvm.unpack_header(self.store.flash.read(self.store.base(bank), nvm.HEADER_SIZE))
            if h is None or h["length"] > self.store.capacity:
                return W.E_RANGE, b""
            gen, crc, total = h["gen"], h["crc"], h["length"]
        else:
            return W.E_RANGE, b""
        if offset > total:
            return W.E_RANGE, b""
        n = min(length, total - offset, self.max_payload - 13)
        return W.OK, M.pack_table_chunk(bank, gen, crc, total, self.store.read(bank, offset, n))

    def on_reset(self, payload):
        self.reset_requested = True
        return W.OK, b""

    def on_rollback(self, payload):
        """ROLLBACK: query (mode 0) or activate (mode 1) the previous table in the other bank (nvm Rule 4).

        E_RANGE: no table, or no valid previous table to go back to. E_STATE (mode 1): the active table is not
        the one the host names (it changed since the host looked). E_NVM: the flash failed, or the write did not
        take (the board still runs its table, or the previous one: the reply's HELLO says which)."""
        mode, gen, crc = M.unpack_rollback(payload)
        if mode > M.ROLLBACK_DO:
            return W.E_RANGE, b""
        if mode == M.ROLLBACK_DO and self.state == TRACKING:
            self.stop_tracker(TR.WHY_ROLLBACK)  # Rule 5: the tracker stops first, whatever becomes of the rollback
        a = self.store.active
        if a is None:
            return W.E_RANGE, b""
        if mode == M.ROLLBACK_DO and (a["gen"] != gen or a["crc"] != crc):
            return W.E_STATE, b""
        t = self.store.rollback_target()
        if t is None:
            return W.E_RANGE, b""
        if mode == M.ROLLBACK_QUERY:
            return W.OK, M.pack_rollback_reply(t["bank"], t["gen"], t["crc"], t["length"])
        try:
            now = self.store.revoke_active()
        except OSError:
            now = self.store.active  # rescanned: what the NVM holds, whatever the flash reported
        # Done when the previous table is what the NVM now activates (a write the flash reported failed may still
        # have broken the header's magic: the rollback happened); anything else is E_NVM.
        status = W.OK if now is not None and now["bank"] == t["bank"] and now["gen"] == t["gen"] else W.E_NVM
        # RAM follows the NVM whatever happened (Rule 4 above): the codes of the table active now.
        if now is not None:
            self.codes = [list(c) for c in now["codes"]]
        else:
            self.codes = [[k["code_ref"]] * k["n_groups"] for k in self.knobs]
        self._dirty = True
        try:
            self.push_codes()
        except Exception:
            return (W.E_CHIP if status == W.OK else status), b""
        if status != W.OK:
            return status, b""
        return W.OK, M.pack_rollback_reply(now["bank"], now["gen"], now["crc"], now["length"])


def to_fa(p):
    """Proxy in pA (float or None) -> i32 fA, PROXY_NONE when not observed (None or NaN)."""
    if p is None or p != p:
        return M.PROXY_NONE
    v = p * 1000.0
    if v >= M.PROXY_MAX:
        return M.PROXY_MAX
    if v <= -M.PROXY_MAX:
        return -M.PROXY_MAX
    return int(v + 0.5) if v >= 0 else -int(-v + 0.5)
