# The board's side of the on-board tracker (board.py Rule 5; docs/protocol.md section 12): starting and stopping
# it, one sub-window per tick() while it runs, and the TRACK_* handlers. A mixin of board.Board (kept apart so
# that each firmware module stays readable); it uses the board's state, store, chip, knobs and codes.
#
# MicroPython subset: no typing, dataclasses, f-strings, struct.Struct, numpy.

from . import messages as M
from . import tracker as TR
from . import wire as W
from .states import IDLE, TRACKING


class TrackerHandlers:
    """board.Board's tracker methods (Rule 5)."""

    def start_tracker(self):
        """Start the tracker afresh from the active table: status OK, or E_TABLE (no table, no tracker section,
        or one the tracker cannot use on this chip)."""
        a = self.store.active
        if a is None or a.get("tracker") is None:
            return W.E_TABLE
        try:
            tr, knob_index = new_tracker(a["tracker"], self.knobs, a["codes"], self.info)
        except ValueError:
            return W.E_TABLE
        self.tracker = tr
        self.track_knobs = knob_index
        self.start_ms = self.model_ms
        self.codes = [list(c) for c in a["codes"]]
        self._dirty = True
        return W.OK

    def stop_tracker(self, why, revert=False):
        if self.tracker is not None:
            self.tracker.stop(why)
        if self.state == TRACKING:
            self.state = IDLE
        if revert and self.store.active is not None:
            self.codes = [list(c) for c in self.store.active["codes"]]
            self._dirty = True

    def wants_tick(self):
        """True while the tracker runs: the I/O loop should call ``tick()`` whenever no request is waiting."""
        return self.state == TRACKING

    def next_tick_ms(self):
        """Model time the next ``tick()`` runs the chip for (None when the tracker is not running)."""
        if self.state != TRACKING:
            return None
        return self.tracker.next_subwindow()[0]

    def tick(self):
        """Run one tracker sub-window; returns True if it ran. Never raises: a chip failure stops the tracker."""
        if self.state != TRACKING:
            return False
        tr = self.tracker
        ms, mon = tr.next_subwindow()
        try:
            self.push_codes()
            counts, proxies, hw_ms, temp_k = self.chip.measure(ms, mon)
        except Exception:
            self.stop_tracker(TR.WHY_CHIP)
            return False
        self.model_ms += ms
        try:
            new = tr.add_subwindow(counts, proxies, ms, temp_k)
        except Exception:
            # a firmware bug must not take the board down: stop tracking, keep serving
            self.stop_tracker(TR.WHY_CHIP)
            return False
        if new is not None:
            ie, ii = self.track_knobs
            self.codes[ie] = new[0]
            self.codes[ii] = new[1]
            self._dirty = True
        if not tr.running:
            self.stop_tracker(tr.why)
        return True

    def track_status(self):
        a = self.store.active
        if a is None or a.get("tracker") is None:
            section = 0
        else:
            section = 2 if a["tracker"]["boot"] else 1
        st = {"running": 1 if self.state == TRACKING else 0, "why": self.track_why, "section": section,
              "frames": self.frames, "board_ms": self.model_ms, "start_ms": self.start_ms,
              "prev_frame_ms": self.prev_frame_ms}
        if self.tracker is not None:
            f = self.tracker.figures()
            st.update(f)
            st["why"] = f["why"]
            st["running"] = 1 if self.state == TRACKING else 0
            st["temperature_mk"] = int(f["temperature_k"] * 1000.0 + 0.5) if f["temperature_k"] else 0
            st["tracked_ms"] = f["tracked_ms"]
            st["rate_target_hz"] = self.tracker.rate_hz
            st["max_move_e"] = min(0xFFFF, f["max_move_e"])
            st["max_move_i"] = min(0xFFFF, f["max_move_i"])
        return M.pack_track_status(st)

    def on_track_start(self, payload):
        if payload:
            return W.E_LENGTH, b""
        if self.tracker is not None and self.tracker.running:
            self.tracker.stop(TR.WHY_HOST)
        status = self.start_tracker()
        if status != W.OK:
            self.state = IDLE  # failed: whatever ran before is stopped
            return status, self.track_status()
        self.state = TRACKING  # so that the status says running (TRANSITIONS agrees)
        return W.OK, self.track_status()

    def on_track_stop(self, payload):
        revert = M.unpack_track_stop(payload)
        if self.tracker is not None and self.tracker.running:
            self.stop_tracker(TR.WHY_HOST, revert)
        elif revert:
            self.stop_tracker(self.tracker.why if self.tracker is not None else TR.WHY_NEVER, True)
        return W.OK, self.track_status()

    def on_track_status(self, payload):
        if payload:
            return W.E_LENGTH, b""
        return W.OK, self.track_status()

    def on_track_read(self, payload):
        what, knob, first, count = M.unpack_track_read(payload)
        if knob >= len(self.knobs):
            return W.E_RANGE, b""
        spec = self.knobs[knob]
        if what == M.READ_CODES:
            values = self.codes[knob]
            width = M.code_width(spec["bits"])
        elif what == M.READ_FLAGS:
            if self.tracker is None:
                return W.E_STATE, b""
            values = self.tracker.flags
            width = 1
        else:
            return W.E_RANGE, b""
        total = len(values)
        if first > total or (first == total and total):
            return W.E_RANGE, b""
        k = min(count, total - first, (self.max_payload - 12) // width)
        return W.OK, M.pack_track_read_reply(what, knob, first, total, list(values[first:first + k]), spec["bits"])


def new_tracker(section, knobs, codes, info):
    """A Tracker for a chip with ``knobs`` (the board's knob dicts: name, dac, bits, code_ref, n_groups) and
    ``info`` (n_neurons, n_cores, proxy_channels, counter_bits), started at ``codes`` (per knob, in ``knobs``'
    order) with the table's tracker ``section`` (as ``nvm.decode_payload`` returns it). Returns (tracker, (index of
    gain_e, index of gain_i)); raises ValueError when the tracker cannot drive this chip: it needs exactly the
    knobs gain_e and gain_i on linear DACs shared alike. The board and a host-side run (calibrate.tracking) build
    it here, so both run the same estimator."""
    names = [k["name"] for k in knobs]
    if "gain_e" not in names or "gain_i" not in names or len(names) != 2:
        raise ValueError("the tracker drives exactly the knobs gain_e and gain_i")
    ie, ii = names.index("gain_e"), names.index("gain_i")
    ke, ki = knobs[ie], knobs[ii]
    if ke["dac"] != 0 or ki["dac"] != 0 or ke["n_groups"] != ki["n_groups"]:
        raise ValueError("the tracker drives linear DACs shared alike")
    tr = TR.Tracker(section, codes[ie], codes[ii], ke["code_ref"], ki["code_ref"], ke["bits"], ki["bits"],
                    info["n_neurons"], info.get("n_cores", 1), info.get("proxy_channels", "all") == "one_per_core",
                    (1 << info.get("counter_bits", 16)) - 1)
    return tr, (ie, ii)
