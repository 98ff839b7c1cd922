"""What a board says, decoded: HELLO (``Hello``, ``KnobInfo``), a measurement window (``MeasureResult``) and the
on-board tracker's state (``TrackerStatus``). ``client.BoardClient`` returns them; docs/protocol.md defines the
payloads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import protocol
from .firmware import messages as M
from .firmware import nvm

__all__ = ["KnobInfo", "Hello", "MeasureResult", "TrackerStatus", "decode_reply"]


def decode_reply(unpack, payload: bytes, what: str, *args):
    """``unpack(payload, *args)``; a payload it cannot read is the board breaking the protocol, one line naming
    the reply (``RemoteProtocolError``), not a ValueError from deep in the decoder."""
    try:
        return unpack(payload, *args)
    except ValueError as e:
        raise protocol.RemoteProtocolError(f"malformed {what}: {e}") from None


@dataclass(frozen=True)
class KnobInfo:
    name: str
    sharing: str
    dac: str
    bits: int
    code_ref: int
    n_groups: int


@dataclass(frozen=True)
class Hello:
    """What HELLO says about a board (docs/protocol.md, HELLO)."""

    proto: int
    firmware: str
    uid: str
    profile: str
    profile_sha256: str  # hex
    model: str
    proxy_channels: str
    n_neurons: int
    n_cores: int
    dt_ms: float
    speedup: float
    counter_bits: int
    max_payload: int
    bank_size: int
    sector_size: int
    erase_ms: int
    op_ms: int
    measure_ms_per_s: int
    active_bank: Optional[int]
    generation: int
    table_crc: int
    table_len: int
    boot_count: int
    knobs: tuple[KnobInfo, ...] = field(default=())

    @classmethod
    def from_payload(cls, payload: bytes) -> "Hello":
        h = decode_reply(M.unpack_hello, payload, "HELLO reply")
        knobs = tuple(KnobInfo(k["name"], M.SHARING[k["sharing"]], M.DACS[k["dac"]], k["bits"], k["code_ref"],
                               k["n_groups"]) for k in h["knobs"])
        return cls(proto=h["proto"], firmware="%d.%d.%d" % h["fw"], uid=h["uid"], profile=h["profile"],
                   profile_sha256=bytes(h["profile_sha256"]).hex(), model=h["model"],
                   proxy_channels=h["proxy_channels"], n_neurons=h["n_neurons"], n_cores=h["n_cores"],
                   dt_ms=h["dt_ms"], speedup=h["speedup"], counter_bits=h["counter_bits"],
                   max_payload=h["max_payload"], bank_size=h["bank_size"], sector_size=h["sector_size"],
                   erase_ms=h["erase_ms"], op_ms=h["op_ms"], measure_ms_per_s=h["measure_ms_per_s"],
                   active_bank=None if h["active_bank"] == M.NO_BANK else h["active_bank"],
                   generation=h["generation"], table_crc=h["table_crc"], table_len=h["table_len"],
                   boot_count=h["boot_count"], knobs=knobs)

    @property
    def has_table(self) -> bool:
        return self.active_bank is not None

    def table_desc(self) -> str:
        """One phrase naming the table the board runs, for messages."""
        if not self.has_table:
            return "no table (reference codes; nothing was ever flashed)"
        return (f"table gen {self.generation} (crc 0x{self.table_crc:08x}, {self.table_len} B, "
                f"bank {nvm.BANK_NAMES[self.active_bank]})")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["knobs"] = [dict(k.__dict__) for k in self.knobs]
        d["active_bank"] = None if self.active_bank is None else nvm.BANK_NAMES[self.active_bank]
        return d


@dataclass(frozen=True)
class MeasureResult:
    """One measurement window as the board reported it (proxies in fA, ``PROXY_NONE`` where not observed)."""

    meas_id: int
    window_us: int
    hw_us: int
    temp_mk: int
    counts: list
    proxies_fa: list


@dataclass(frozen=True)
class TrackerStatus:
    """What TRACK_START, TRACK_STOP and TRACK_STATUS report (docs/protocol.md, "The on-board tracker").

    ``frames`` counts the good frames the board received since boot, this request's included, and
    ``prev_frame_s`` is the board's model time when the frame before it arrived: together they prove that a host
    stayed silent while the tracker ran. ``moves`` (per knob: codes now minus the flashed table's, one per group)
    and ``flags`` (per group, ``firmware.tracker.F_*``) are filled in by ``BoardClient.track_status(detail=True)``.
    """

    running: bool
    why: str
    section: str  # "none" | "off at boot" | "on at boot"
    windows: int
    frames: int
    board_s: float
    start_s: float
    prev_frame_s: float
    tracked_s: float
    temperature_k: Optional[float]
    n_groups: int
    moved: dict  # knob -> groups whose code moved
    max_move: dict  # knob -> largest |code - flashed code|
    mean_move: dict  # knob -> mean code - flashed code
    at_band: int
    frozen: int
    frozen_silent: int
    frozen_saturated: int
    fano: float
    rate_target_hz: float
    rate_last_hz: float
    rate_cv_last: float
    rate_pred_hz: float
    balance_p95_last: float
    balance_p95_smooth: float
    rate_drift_per_s: float
    ratio_drift_per_s: float
    band: float
    window_s: float
    splits: int = 4
    moves: Optional[dict] = None
    flags: Optional[list] = None

    @classmethod
    def from_payload(cls, payload: bytes) -> "TrackerStatus":
        from .firmware import tracker as TR

        d = decode_reply(M.unpack_track_status, payload, "tracker status")
        why = TR.WHY_TEXT[d["why"]] if d["why"] < len(TR.WHY_TEXT) else f"reason {d['why']}"
        return cls(running=bool(d["running"]), why="running" if d["running"] else why,
                   section=("none", "off at boot", "on at boot")[min(d["section"], 2)], windows=d["windows"],
                   frames=d["frames"], board_s=d["board_ms"] / 1e3, start_s=d["start_ms"] / 1e3,
                   prev_frame_s=d["prev_frame_ms"] / 1e3, tracked_s=d["tracked_ms"] / 1e3,
                   temperature_k=d["temperature_mk"] / 1e3 if d["temperature_mk"] else None,
                   n_groups=d["n_groups"], moved={"gain_e": d["moved_e"], "gain_i": d["moved_i"]},
                   max_move={"gain_e": d["max_move_e"], "gain_i": d["max_move_i"]},
                   mean_move={"gain_e": d["mean_move_e"], "gain_i": d["mean_move_i"]}, at_band=d["at_band"],
                   frozen=d["frozen"], frozen_silent=d["frozen_silent"], frozen_saturated=d["frozen_saturated"],
                   fano=d["fano"], rate_target_hz=d["rate_target_hz"],
                   rate_last_hz=d["rate_last_hz"], rate_cv_last=d["rate_cv_last"], rate_pred_hz=d["rate_pred_hz"],
                   balance_p95_last=d["balance_p95_last"], balance_p95_smooth=d["balance_p95_smooth"],
                   rate_drift_per_s=d["rate_drift_per_s"], ratio_drift_per_s=d["ratio_drift_per_s"],
                   band=d["band"], window_s=d["window_ms"] / 1e3, splits=max(1, d["splits"]))

    @property
    def frozen_groups(self) -> list:
        """(group, reason) of every frozen group (needs ``detail``)."""
        from .firmware import tracker as TR

        out = []
        for g, f in enumerate(self.flags or []):
            if f & TR.FROZEN:
                out.append((g, "silent" if f & TR.F_SILENT else "saturated" if f & TR.F_SATURATED else "no gain"))
        return out

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if self.flags is not None:
            d["frozen_groups"] = [{"group": g, "reason": r} for g, r in self.frozen_groups]
        return d

    def summary(self) -> str:
        """A few lines for people."""
        head = "running" if self.running else f"not running ({self.why})"
        lines = [f"on-board tracker: {head}; table's tracker section: {self.section}"]
        if self.windows:
            t = f", chip at {self.temperature_k:.2f} K" if self.temperature_k else ""
            lines.append(f"  {self.windows} windows ({self.tracked_s:.1f} s of model time){t}; board model time "
                         f"{self.board_s:.1f} s, {self.frames} frames received since boot")
            lines.append(f"  rate: last window {self.rate_last_hz:.2f} Hz (target {self.rate_target_hz:.2f}, CV "
                         f"{self.rate_cv_last:.3f}), predicted now {self.rate_pred_hz:.2f} Hz; drift "
                         f"{self.rate_drift_per_s * 100:+.3f} %/s")
            lines.append(f"  balance index p95: last window {self.balance_p95_last:.3f}, smoothed "
                         f"{self.balance_p95_smooth:.3f}; ratio drift {self.ratio_drift_per_s * 100:+.4f} %/s")
            lines.append("  code moves from the flashed table: " + ", ".join(
                f"{k} {self.moved[k]}/{self.n_groups} groups (max {self.max_move[k]}, mean {self.mean_move[k]:+.2f})"
                for k in ("gain_e", "gain_i")) + f"; {self.at_band} at the +-{self.band:.0%} band")
            fz = f"  frozen: {self.frozen} groups ({self.frozen_silent} neurons silent, {self.frozen_saturated} saturated)"
            if self.flags is not None and self.frozen:
                fg = self.frozen_groups
                fz += ": " + ", ".join(f"{g} ({r})" for g, r in fg[:20]) + (" ..." if len(fg) > 20 else "")
            lines.append(fz)
            lines.append(f"  Fano factor {self.fano:.2f}")
        return "\n".join(lines)
