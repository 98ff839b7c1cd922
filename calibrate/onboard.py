"""The on-board tracker from the host's side: the tracker section of a gain table, derived from a calibration's
record, and the session that runs the board's tracker through a temperature ramp and judges it.

The board's tracker (``firmware_bridge/firmware/tracker.py``) runs the dual loop's two slow loops without ever
taking the chip off line, so it cannot measure what the host measured with null windows and excitation-only
probes. The table carries it instead (hw_models/table.py, format 2, ``tracker``):

- ``adc_offset_pa`` per neuron: the mean of the calibration's null windows (all codes 0: the ADC reads only its
  offset), exactly as the dual loop's offset correction;
- ``a_pa``, ``b_pa`` per group: the balance sensitivities of ``y = gain_e a - gain_i b``, by the same weighted
  least squares over the excitation-only probe and every loop window (weights: window length);
- ``beta`` per group: the rate slope d ln rate / d ln s, each group's own regression over the loop windows at the
  codes really applied, shrunk towards the population's slope (empirical Bayes, prior spread 0.3, as the dual
  loop); ``gamma``, the population's d ln rate / d ln r, and the Fano factor, as the dual loop last estimated them;
- ``rate_se``, ``balance_se``: how precisely the calibration pinned the table's rates and balance (the warm-start
  prior of the tracker: how much a few noisy windows on the board may move a group away from its table).

Everything is read from ``History`` (``history.npz``) and the knobs; nothing here touches a chip.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

from hw_models.device import KnobSpec
from hw_models.table import TRACKER_DEFAULTS, GainTable

from .metrics import TrueFigures, true_figures
from .tracking import Ramp, TrackingResult, run_tracking

__all__ = ["tracker_section", "tracker_section_for", "tracker_supported", "run_onboard_tracking", "OnboardTrackingResult",
           "OnboardCheckpoint"]


def tracker_supported(knobs: Mapping[str, KnobSpec], targets: Optional[Mapping] = None) -> Optional[str]:
    """None when the on-board tracker can drive these knobs, else why not (one phrase)."""
    ke, ki = knobs.get("gain_e"), knobs.get("gain_i")
    if ke is None or ki is None or set(knobs) != {"gain_e", "gain_i"}:
        return "the tracker drives exactly the two knobs gain_e and gain_i"
    if ke.dac != "linear" or ki.dac != "linear":
        return f"the tracker drives linear DACs only (this chip has {ke.dac} DACs)"
    if ke.sharing != ki.sharing or ke.n_groups != ki.n_groups:
        return "gain_e and gain_i must be shared alike"
    if targets and targets.get("rate_inh_hz") is not None:
        return "the tracker holds one rate target; this table has separate E and I population targets"
    return None


def _history_arrays(history) -> dict:
    """The fields used here, from a ``calibrate.run.History`` or a path to ``history.npz``."""
    if isinstance(history, (str, bytes)) or hasattr(history, "__fspath__"):
        with np.load(history, allow_pickle=False) as z:
            d = {k: z[k] for k in ("kind", "iteration", "window_ms", "codes_e", "codes_i", "spike_counts",
                                   "proxy_pa")}
            d["iterations"] = json.loads(str(z["iterations"]))
        return d
    return {"kind": np.array(history.kind), "iteration": np.array(history.iteration),
            "window_ms": np.array(history.window_ms),
            "codes_e": np.array(history.codes_e), "codes_i": np.array(history.codes_i),
            "spike_counts": np.array(history.spike_counts), "proxy_pa": np.array(history.proxy_pa),
            "iterations": list(history.iterations)}


def tracker_section(history, knobs: Mapping[str, KnobSpec], *, rate_hz: float, boot: bool = False,
                    band: float = TRACKER_DEFAULTS["band"], **settings) -> dict:
    """The ``tracker`` section of a table from a calibration's ``history`` (a ``History`` or ``history.npz``).

    ``settings`` overrides the tracker's other settings (``window_s``, ``halflife_s``, ...; hw_models.table
    ``TRACKER_DEFAULTS``). Raises ValueError when the record has no null window or no loop window, or when the
    tracker cannot drive these knobs (``tracker_supported``)."""
    why = tracker_supported(knobs)
    if why:
        raise ValueError(why)
    for key in settings:
        if key not in TRACKER_DEFAULTS:
            raise ValueError(f"unknown tracker setting {key!r}; expected one of {', '.join(sorted(TRACKER_DEFAULTS))}")
    h = _history_arrays(history)
    kind = np.asarray(h["kind"]).astype(str)
    if not (kind == "null").any() or not (kind == "loop").any():
        raise ValueError("the calibration record needs null windows and loop windows (a dual-loop calibration)")
    offset = _adc_offsets(h, kind)
    a, b = _balance_sensitivities(h, kind, offset, knobs)
    last = next((it for it in reversed(h["iterations"]) if it.get("beta") is not None), {})
    gamma = float(last.get("gamma", 0.0))
    fano = float(last.get("fano", 1.0))
    beta = _rate_slopes(h, kind, knobs, rate_hz, float(last.get("beta", 1.5)), gamma, fano)
    rate_se = float(last.get("rate_se_rms") or TRACKER_DEFAULTS["rate_se"])
    balance_se = float(last.get("balance_se_rms") or TRACKER_DEFAULTS["balance_se"])
    out = dict(TRACKER_DEFAULTS)
    out.update({
        "boot": "on" if boot else "off", "band": float(band), "rate_hz": float(rate_hz),
        "fano": float(np.clip(fano, 0.5, 5.0)), "gamma": gamma,
        "rate_se": float(np.clip(rate_se, 0.01, 0.2)), "balance_se": float(np.clip(balance_se, 0.005, 0.1)),
        "beta": [round(float(x), 5) for x in beta], "a_pa": [round(float(x), 4) for x in a],
        "b_pa": [round(float(x), 4) for x in b], "adc_offset_pa": [round(float(x), 4) for x in offset],
    })
    out.update(settings)
    return out


def tracker_section_for(history, knobs: Mapping[str, KnobSpec], targets: Mapping) -> Optional[dict]:
    """The tracker section a calibration's table gets (boot off, default settings), or None when the tracker
    cannot use this run: knobs it does not drive (``tracker_supported``), or a controller that measured no null
    windows and no loop windows (the baselines)."""
    if tracker_supported(knobs, targets) is not None:
        return None
    try:
        return tracker_section(history, knobs, rate_hz=float(targets["rate_hz"]))
    except ValueError:
        return None


def _adc_offsets(h: dict, kind: np.ndarray) -> np.ndarray:
    """Each channel's ADC offset: the null windows' mean (a channel never read: 0, and never used)."""
    proxy = np.asarray(h["proxy_pa"], dtype=float)[kind == "null"]
    obs = np.isfinite(proxy)
    n_obs = obs.sum(axis=0)
    return np.where(n_obs > 0, np.where(obs, proxy, 0.0).sum(axis=0) / np.maximum(n_obs, 1), 0.0)


def _balance_sensitivities(h: dict, kind: np.ndarray, offset: np.ndarray,
                           knobs: Mapping[str, KnobSpec]) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per group: weighted least squares of y = gain_e a - gain_i b over the probe and loop windows
    (weights: window length), as the dual loop's loop 1; a group with no usable fit gets the population median."""
    ke, ki = knobs["gain_e"], knobs["gain_i"]
    group_of, G = np.asarray(ke.group_of), ke.n_groups
    use = (kind == "exc_probe") | (kind == "loop")
    ge = ke.nominal_gain(np.asarray(h["codes_e"])[use].astype(np.int64))[:, group_of]
    gi = ki.nominal_gain(np.asarray(h["codes_i"])[use].astype(np.int64))[:, group_of]
    y = np.asarray(h["proxy_pa"], dtype=float)[use] - offset[None, :]
    ok = np.isfinite(y)
    w = np.where(ok, np.asarray(h["window_ms"], dtype=float)[use][:, None], 0.0)
    y0 = np.where(ok, y, 0.0)

    def gsum(x):
        return np.bincount(group_of, weights=(w * x).sum(axis=0), minlength=G)

    Se2, Sei, Si2, Sey, Siy = gsum(ge * ge), gsum(ge * gi), gsum(gi * gi), gsum(ge * y0), gsum(gi * y0)
    det = Se2 * Si2 - Sei * Sei
    good = det > 1e-12 * np.maximum(Se2 * Si2, 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(good, (Sey * Si2 - Sei * Siy) / np.where(good, det, 1), np.nan)
        b = np.where(good, (Sey * Sei - Se2 * Siy) / np.where(good, det, 1), np.nan)
    fit = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if not fit.any():
        raise ValueError("no group's balance sensitivities could be fitted from the calibration record")
    return np.where(fit, a, np.median(a[fit])), np.where(fit, b, np.median(b[fit]))


def _rate_slopes(h: dict, kind: np.ndarray, knobs: Mapping[str, KnobSpec], rate_hz: float, beta_pop: float,
                 gamma: float, fano: float) -> np.ndarray:
    """beta per group: each group's own regression of ln rate on ln s (the codes really applied) over the loop
    windows, weighted by counts and closeness to target as the dual loop weighs them, shrunk towards the
    population's slope (empirical Bayes, prior spread 0.3: docs/controller.md)."""
    ke, ki = knobs["gain_e"], knobs["gain_i"]
    group_of, G = np.asarray(ke.group_of), ke.n_groups
    loop = kind == "loop"
    geL = ke.nominal_gain(np.asarray(h["codes_e"])[loop].astype(np.int64))
    giL = ki.nominal_gain(np.asarray(h["codes_i"])[loop].astype(np.int64))
    live = (geL > 0) & (giL > 0)
    with np.errstate(divide="ignore"):
        le, li = np.log(np.where(live, geL, 1)), np.log(np.where(live, giL, 1))
    lnS, lnR = np.where(live, 0.5 * (le + li), 0.0), np.where(live, le - li, 0.0)
    counts = np.asarray(h["spike_counts"], dtype=float)[loop]
    cL = np.stack([np.bincount(group_of, weights=row, minlength=G) for row in counts])
    nper = np.bincount(group_of, minlength=G)
    TL = np.asarray(h["window_ms"], dtype=float)[loop][:, None] * 1e-3
    yr = np.log((cL + 0.5) / np.maximum(nper, 1) / TL) - gamma * lnR
    close = np.exp(-((yr + gamma * lnR - math.log(rate_hz)) / 0.5) ** 2)  # the dual loop's closeness (near 0.5)
    W = (cL + 1.0) * close * live
    wsum = W.sum(axis=0)
    has = wsum > 0
    safe = np.where(has, wsum, 1.0)
    xm, ym = (W * lnS).sum(axis=0) / safe, (W * yr).sum(axis=0) / safe
    Sxx = (W * (lnS - xm) ** 2).sum(axis=0)
    Sxy = (W * (lnS - xm) * (yr - ym)).sum(axis=0)
    k = fano / 0.3 ** 2
    return np.clip(np.where(has, (Sxy + k * beta_pop) / (Sxx + k), beta_pop), 0.3, 8.0)


# -- the on-board tracker through a temperature ramp: a session ----------------------------------------------------


@dataclass
class OnboardCheckpoint:
    """The true figures, at one instant of the ramp, of the codes the board ran then and of the static table."""

    model_time_s: float
    temperature_k: float
    onboard: TrueFigures
    static: TrueFigures

    def to_dict(self) -> dict:
        return {"model_time_s": self.model_time_s, "temperature_k": self.temperature_k,
                "onboard": self.onboard.to_dict(), "static": self.static.to_dict()}


@dataclass
class OnboardTrackingResult:
    """What a ramp with the on-board tracker showed, with the proofs the issue asks for: the host was silent from
    TRACK_START to the ramp's end (``frames_*``), the NVM is byte-identical before and after, and the tracked codes
    came back as a table."""

    ramp: Ramp
    target_rate_hz: float
    checkpoints: list[OnboardCheckpoint]
    status: Any  # firmware_bridge.client.TrackerStatus at the ramp's end
    host_silent: bool
    frames_at_start: int
    frames_at_status: int
    nvm_unchanged: bool
    tracked_table: GainTable
    sim_cpu_s: float
    host: Optional[TrackingResult] = None  # host-side tracking by the dual loop (``eical track --estimator dual-loop``)

    def worst(self, side: str) -> dict:
        """The worst true figures over the checkpoints of ``side`` ("onboard" or "static")."""
        figs = [getattr(c, side) for c in self.checkpoints]
        errs = [f.rate_mean_hz / self.target_rate_hz - 1 for f in figs]
        return {"rate_err": max(abs(e) for e in errs), "rate_err_signed": max(errs, key=abs),
                "balance_p95": max(f.balance_p95 for f in figs),
                "rate_cv_deconvolved": max(f.rate_cv_deconvolved for f in figs)}

    def to_dict(self) -> dict:
        d = {"ramp": {"T0_K": self.ramp.t0_k, "T1_K": self.ramp.t1_k, "seconds": self.ramp.seconds},
             "target_rate_hz": self.target_rate_hz, "checkpoints": [c.to_dict() for c in self.checkpoints],
             "onboard_worst": self.worst("onboard"), "static_worst": self.worst("static"),
             "host_silent": self.host_silent, "frames_at_start": self.frames_at_start,
             "frames_at_status": self.frames_at_status, "nvm_unchanged": self.nvm_unchanged,
             "status": self.status.to_dict(), "sim_cpu_s": self.sim_cpu_s,
             "tracked_codes": {k: list(v.codes) for k, v in self.tracked_table.knobs.items()}}
        if self.host is not None:
            d["host"] = self.host.to_dict()
        return d


def _board_through_ramp(profile: Any, seed: int, table: GainTable, ramp: Ramp, progress=None) -> dict:
    """Flash ``table`` to an in-process board with the emulated chip behind it, start the tracker, let the board
    run alone to the ramp's end, then take the status, the tracked table and the NVM comparison."""
    from firmware_bridge.emulator import ModelClock, NumpyChipPort, TemperatureRamp
    from firmware_bridge.firmware import nvm
    from firmware_bridge.firmware.board import Board
    from firmware_bridge.flash import TableImage, flash_table
    from firmware_bridge.tables import read_board_table
    from firmware_bridge.testing import memory_client
    from hw_models.emulator import NumpyDevice

    rmp = TemperatureRamp(ramp.t0_k, ramp.t1_k, ramp.seconds)
    dev = NumpyDevice(profile, seed, temperature_k=ramp.t0_k)
    table.check_identity(dev.identity)
    table.check_knobs(dev.knobs)
    port = NumpyChipPort(dev, ramp=rmp, clock=ModelClock(None))
    flash = nvm.RamFlash(nvm.flash_size())
    client = memory_client(lambda: Board(port, flash))
    flash_table(client, TableImage.from_gain_table(table))
    nvm_before = bytes(flash.mem)
    started = client.track_start()
    board = client.transport.board
    cpu = time.process_time()
    while board.model_ms < rmp.end_ms - 1e-6 and board.tick():  # the board alone: no frame from the host
        if progress is not None and board.tracker.sub == 0:
            progress(board.tracker.windows, board.model_ms / 1e3, None)
    sim_cpu = time.process_time() - cpu
    status = client.track_status(detail=True)
    silent = status.frames == started.frames + 1 and abs(status.prev_frame_s - status.start_s) < 1e-9
    tracked = read_board_table(client, tracked=True).table
    client.track_stop()
    return {"port": port, "status": status, "silent": silent, "frames": (started.frames, status.frames),
            "tracked": tracked, "nvm_unchanged": bytes(flash.mem) == nvm_before, "sim_cpu": sim_cpu,
            "profile": dev.profile}


def run_onboard_tracking(profile: Any, seed: int, table: GainTable, ramp: Ramp, *, checkpoints: int = 6,
                         replay_s: float = 60.0, host: bool = False, host_halflife_s: float = 15.0,
                         progress: Optional[Callable[[int, float, Any], None]] = None) -> OnboardTrackingResult:
    """The on-board tracker through ``ramp``, judged by the emulated chip's truth, against the same chip on its
    static table, and (``host``) against host-side tracking by the dual loop with forgetting
    (``calibrate.tracking.run_tracking``, estimator "dual-loop"; its "board" estimator would repeat the board's run
    bit for bit) of the same chip and ramp.

    A board in this process (the real firmware, the numpy chip behind ``NumpyChipPort``, a RAM NVM) is flashed
    with ``table`` (format 2: it needs a tracker section); the host sends TRACK_START and then nothing: the board
    runs its tracker alone until the ramp's end in model time. One TRACK_STATUS then proves the host was silent
    (the board counted no frame in between), the tracked codes are read back as a table, the tracker is stopped and
    the NVM compared byte for byte with what it held before the start.

    At ``checkpoints`` instants (0 to the ramp's end) the codes the chip ran then (the emulator's code log) and the
    static table are replayed for ``replay_s`` on independent inputs at that instant's temperature
    (``true_figures``: the true mean rate, the CV with the replay's counting noise removed, the balance index)."""
    if table.tracker is None:
        raise ValueError("the table has no tracker section (format 2): the on-board tracker has nothing to start from")
    rate = float(table.tracker["rate_hz"])
    run = _board_through_ramp(profile, seed, table, ramp, progress)
    static = table.codes()
    rows = []
    for k in range(checkpoints):
        t_s = ramp.seconds * k / max(checkpoints - 1, 1)
        T = ramp.at(t_s * 1e3)
        codes = run["port"].codes_at(t_s * 1e3 + 1e-6)
        rows.append(OnboardCheckpoint(
            t_s, T, true_figures(run["profile"], seed, codes, replay_s=replay_s, target_rate_hz=rate, temperature_k=T),
            true_figures(run["profile"], seed, static, replay_s=replay_s, target_rate_hz=rate, temperature_k=T)))
        if progress is not None:
            progress(k + 1, t_s, rows[-1].onboard)
    out = OnboardTrackingResult(ramp=ramp, target_rate_hz=rate, checkpoints=rows, status=run["status"],
                                host_silent=run["silent"], frames_at_start=run["frames"][0],
                                frames_at_status=run["frames"][1], nvm_unchanged=run["nvm_unchanged"],
                                tracked_table=run["tracked"], sim_cpu_s=run["sim_cpu"])
    if host:
        out.host = run_tracking(profile, seed, table, ramp, checkpoints=checkpoints, replay_s=replay_s,
                                halflife_s=host_halflife_s, estimator="dual-loop")
    return out
