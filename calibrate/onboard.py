"""What the host hands the on-board tracker: the tracker section of a gain table, derived from a calibration's record.

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
from typing import Mapping, Optional

import numpy as np

from hw_models.device import KnobSpec
from hw_models.table import TRACKER_DEFAULTS

__all__ = ["tracker_section", "tracker_supported"]


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
    h = _history_arrays(history)
    kind = np.asarray(h["kind"]).astype(str)
    T = np.asarray(h["window_ms"], dtype=float)
    ce = np.asarray(h["codes_e"], dtype=float)
    ci = np.asarray(h["codes_i"], dtype=float)
    counts = np.asarray(h["spike_counts"], dtype=float)
    proxy = np.asarray(h["proxy_pa"], dtype=float)
    ke, ki = knobs["gain_e"], knobs["gain_i"]
    G = ke.n_groups
    group_of = np.asarray(ke.group_of)
    null = kind == "null"
    loop = kind == "loop"
    if not null.any() or not loop.any():
        raise ValueError("the calibration record needs null windows and loop windows (a dual-loop calibration)")
    # ADC offsets: the null windows' mean per channel (never observed: 0, and never used)
    obs = np.isfinite(proxy[null])
    n_obs = obs.sum(axis=0)
    offset = np.where(n_obs > 0, np.where(obs, proxy[null], 0.0).sum(axis=0) / np.maximum(n_obs, 1), 0.0)
    # balance sensitivities: weighted least squares of y = ge a - gi b per group over probe and loop windows
    use = (kind == "exc_probe") | loop
    ge = ke.nominal_gain(ce[use].astype(np.int64))[:, group_of]
    gi = ki.nominal_gain(ci[use].astype(np.int64))[:, group_of]
    y = proxy[use] - offset[None, :]
    ok = np.isfinite(y)
    w = np.where(ok, T[use][:, None], 0.0)
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
    a = np.where(fit, a, np.median(a[fit]))
    b = np.where(fit, b, np.median(b[fit]))
    # rate slopes: each group's own regression of ln rate on ln s (applied codes) over the loop windows, shrunk
    # towards the population slope the dual loop ended with
    last = next((it for it in reversed(h["iterations"]) if it.get("beta") is not None), {})
    beta_pop = float(last.get("beta", 1.5))
    gamma = float(last.get("gamma", 0.0))
    fano = float(last.get("fano", 1.0))
    geL = ke.nominal_gain(ce[loop].astype(np.int64))
    giL = ki.nominal_gain(ci[loop].astype(np.int64))
    live = (geL > 0) & (giL > 0)
    with np.errstate(divide="ignore"):
        lnS = np.where(live, 0.5 * (np.log(np.where(live, geL, 1)) + np.log(np.where(live, giL, 1))), 0.0)
        lnR = np.where(live, np.log(np.where(live, geL, 1)) - np.log(np.where(live, giL, 1)), 0.0)
    cL = np.stack([np.bincount(group_of, weights=row, minlength=G) for row in counts[loop]])
    nper = np.bincount(group_of, minlength=G)
    TL = T[loop][:, None] * 1e-3
    yr = np.log((cL + 0.5) / np.maximum(nper, 1) / TL) - gamma * lnR
    close = np.exp(-((yr + gamma * lnR - math.log(rate_hz)) / 0.5) ** 2)  # the dual loop's closeness (near 0.5)
    W = (cL + 1.0) * close * live
    wsum = W.sum(axis=0)
    has = wsum > 0
    safe = np.where(has, wsum, 1.0)
    xm = (W * lnS).sum(axis=0) / safe
    ym = (W * yr).sum(axis=0) / safe
    Sxx = (W * (lnS - xm) ** 2).sum(axis=0)
    Sxy = (W * (lnS - xm) * (yr - ym)).sum(axis=0)
    k = fano / 0.3 ** 2
    beta = np.clip(np.where(has, (Sxy + k * beta_pop) / (Sxx + k), beta_pop), 0.3, 8.0)
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
    for key, v in settings.items():
        if key not in TRACKER_DEFAULTS:
            raise ValueError(f"unknown tracker setting {key!r}; expected one of {', '.join(sorted(TRACKER_DEFAULTS))}")
        out[key] = v
    return out


def _figures(tf) -> dict:
    d = tf.to_dict()
    return {k: d[k] for k in ("rate_mean_hz", "rate_cv", "rate_cv_deconvolved", "counting_cv", "balance_median",
                              "balance_p95", "fano", "replay_s")}


def run_onboard_tracking(profile, seed: int, table, ramp: tuple[float, float, float], *, checkpoints: int = 6,
                         replay_s: float = 60.0, host: bool = True, host_halflife_s: float = 15.0,
                         progress=None) -> dict:
    """The on-board tracker through a temperature ramp, judged by the emulated chip's truth; the same chip on its
    static table, and (``host``) host-side tracking (``eical track``) on the same chip and ramp, for comparison.

    An in-process board (the real firmware, the numpy chip behind ``NumpyChipPort``, a RAM NVM) is flashed with
    ``table`` (format 2: it needs a tracker section), the host sends TRACK_START and then nothing: the board runs
    its tracker alone (``Board.tick``) until the ramp's end in model time. Then one TRACK_STATUS proves the host was
    silent (the board counted no frame between the start and it), the tracked codes are read as a table, the
    tracker is stopped and the NVM is compared byte for byte with what it held before the start.

    At ``checkpoints`` instants (0 to the ramp's end) the codes the chip ran then (the emulator's code log) are
    replayed for ``replay_s`` on independent inputs at that instant's temperature (``true_figures``: the true
    rate, counting noise removed from the CV, and the true balance index). Returns a JSON-able dict.
    """
    import time

    from firmware_bridge.boardtable import read_board_table
    from firmware_bridge.emulator import ModelClock, NumpyChipPort, TemperatureRamp
    from firmware_bridge.firmware import nvm
    from firmware_bridge.firmware.board import Board
    from firmware_bridge.flash import TableImage, flash_table
    from firmware_bridge.testing import memory_client
    from hw_models.emulator import NumpyDevice

    from .metrics import true_figures

    if table.tracker is None:
        raise ValueError("the table has no tracker section (format 2): the on-board tracker has nothing to start from")
    t0, t1, sec = ramp
    rmp = TemperatureRamp(t0, t1, sec)
    dev = NumpyDevice(profile, seed, temperature_k=t0)
    table.check_identity(dev.identity)
    table.check_knobs(dev.knobs)
    rate = float(table.tracker["rate_hz"])
    port = NumpyChipPort(dev, ramp=rmp, clock=ModelClock(None))
    flash = nvm.RamFlash(nvm.flash_size())
    client = memory_client(lambda: Board(port, flash))
    flash_table(client, TableImage.from_gain_table(table))
    nvm_before = bytes(flash.mem)
    board = client.transport.board
    started = client.track_start()
    cpu = time.process_time()
    ticks = 0
    while board.model_ms < rmp.end_ms - 1e-6:
        if not board.tick():
            break
        ticks += 1
        if progress is not None and board.tracker.sub == 0:
            progress(board.tracker.windows, board.model_ms / 1e3, {"rate_mean_hz": board.tracker.last_rate_hz})
    sim_cpu = time.process_time() - cpu
    status = client.track_status(detail=True)
    silent = (status.frames == started.frames + 1 and abs(status.prev_frame_s - status.start_s) < 1e-9)
    tracked_table, _ = read_board_table(client, tracked=True)
    stopped = client.track_stop()
    nvm_same = bytes(flash.mem) == nvm_before
    static = table.codes()
    marks = [sec * k / max(checkpoints - 1, 1) for k in range(checkpoints)]
    rows = []
    for t_s in marks:
        T = rmp.at(t_s * 1e3)
        codes = port.codes_at(t_s * 1e3 + 1e-6)
        tr = true_figures(profile, seed, codes, replay_s=replay_s, target_rate_hz=rate, temperature_k=T)
        st = true_figures(profile, seed, static, replay_s=replay_s, target_rate_hz=rate, temperature_k=T)
        rows.append({"model_time_s": t_s, "temperature_k": T, "tracked": _figures(tr), "static": _figures(st)})
        if progress is not None:
            progress(len(rows), t_s, {"rate_mean_hz": tr.rate_mean_hz})

    def worst(key: str) -> dict:
        xs = [r[key] for r in rows]
        return {"rate_err": max(abs(x["rate_mean_hz"] / rate - 1) for x in xs),
                "rate_err_signed": max((x["rate_mean_hz"] / rate - 1 for x in xs), key=abs),
                "balance_p95": max(x["balance_p95"] for x in xs),
                "rate_cv_deconvolved": max(x["rate_cv_deconvolved"] for x in xs)}

    out = {
        "profile": str(profile), "seed": seed, "ramp": {"T0_K": t0, "T1_K": t1, "seconds": sec},
        "target_rate_hz": rate, "replay_s": replay_s, "checkpoints": rows,
        "onboard_worst": worst("tracked"), "static_worst": worst("static"),
        "host_silent": silent, "frames_at_start": started.frames, "frames_at_status": status.frames,
        "nvm_unchanged": nvm_same, "windows": status.windows, "board_ticks": ticks, "sim_cpu_s": sim_cpu,
        "status": status.to_dict(), "stopped": stopped.running is False,
        "tracked_codes": {k: list(v.codes) for k, v in tracked_table.knobs.items()},
    }
    if host:
        from .commands import run_tracking

        h = run_tracking(profile, seed, table, ramp, checkpoints=checkpoints, replay_s=replay_s,
                         halflife_s=host_halflife_s)
        out["host"] = {"checkpoints": [{"model_time_s": c["model_time_s"], "temperature_k": c["temperature_k"],
                                        "tracked": _figures_dict(c["tracked"])} for c in h["checkpoints"]],
                       "worst": {"rate_err": h["tracked_worst"]["rate_err"],
                                 "balance_p95": h["tracked_worst"]["balance_p95"],
                                 "rate_cv_deconvolved": h["tracked_worst"]["rate_cv_deconvolved"]},
                       "windows": h["windows"]}
    return out


def _figures_dict(d: dict) -> dict:
    return {k: d[k] for k in ("rate_mean_hz", "rate_cv", "rate_cv_deconvolved", "counting_cv", "balance_median",
                              "balance_p95", "fano", "replay_s")}
