"""The run loop: a controller, a ``Device``, and the record of everything that happened.

``calibrate(device, controller, targets=...)`` asks the controller for windows, sets codes, measures, hands the
measurements back, and records every window (codes, spike counts, proxy readings, model and hardware time). The
``History`` is enough to replay a run without the chip (``replay``), to plot it, and to re-render a report.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np

from hw_models.device import Device, DeviceIdentity, Measurement

from .controllers import Controller, Status, Targets, Window

__all__ = ["calibrate", "CalibrationResult", "History", "replay", "measured_metrics"]


@dataclass
class History:
    """Every window of a run, in order. Arrays are stacked per window."""

    kind: list[str] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)
    window_ms: list[float] = field(default_factory=list)
    hardware_ms: list[float] = field(default_factory=list)
    model_time_ms: list[float] = field(default_factory=list)  # cumulative, at the window's end
    codes_e: list[np.ndarray] = field(default_factory=list)
    codes_i: list[np.ndarray] = field(default_factory=list)
    spike_counts: list[np.ndarray] = field(default_factory=list)
    proxy_pa: list[np.ndarray] = field(default_factory=list)
    temperature_k: list[float] = field(default_factory=list)
    iterations: list[dict] = field(default_factory=list)  # the controller's figures per iteration

    def add(self, it: int, w: Window, m: Measurement, t_ms: float) -> None:
        self.kind.append(w.kind)
        self.iteration.append(it)
        self.window_ms.append(float(m.window_ms))
        self.hardware_ms.append(float(m.hardware_ms))
        self.model_time_ms.append(t_ms)
        self.codes_e.append(np.asarray(w.codes["gain_e"], dtype=np.int32))
        self.codes_i.append(np.asarray(w.codes["gain_i"], dtype=np.int32))
        self.spike_counts.append(np.asarray(m.spike_counts, dtype=np.int32))
        self.proxy_pa.append(np.where(m.observed, m.proxy_pa, np.nan).astype(np.float32))
        self.temperature_k.append(float("nan") if m.temperature_k is None else float(m.temperature_k))

    def __len__(self) -> int:
        return len(self.kind)

    def save(self, path) -> None:
        import json

        np.savez_compressed(
            path, kind=np.array(self.kind), iteration=np.array(self.iteration), window_ms=np.array(self.window_ms),
            hardware_ms=np.array(self.hardware_ms), model_time_ms=np.array(self.model_time_ms),
            codes_e=np.array(self.codes_e), codes_i=np.array(self.codes_i),
            spike_counts=np.array(self.spike_counts), proxy_pa=np.array(self.proxy_pa),
            temperature_k=np.array(self.temperature_k), iterations=np.array(json.dumps(self.iterations)))

    @classmethod
    def load(cls, path) -> "History":
        import json

        with np.load(path, allow_pickle=False) as z:
            h = cls(kind=[str(k) for k in z["kind"]], iteration=[int(i) for i in z["iteration"]],
                    window_ms=list(z["window_ms"]), hardware_ms=list(z["hardware_ms"]),
                    model_time_ms=list(z["model_time_ms"]), codes_e=list(z["codes_e"]), codes_i=list(z["codes_i"]),
                    spike_counts=list(z["spike_counts"]), proxy_pa=list(z["proxy_pa"]),
                    temperature_k=list(z["temperature_k"]), iterations=json.loads(str(z["iterations"])))
        return h

    def equal(self, other: "History") -> bool:
        """Same windows, codes, counts and readings (NaN == NaN)."""
        if self.kind != other.kind or self.window_ms != other.window_ms:
            return False
        pairs = ((self.codes_e, other.codes_e), (self.codes_i, other.codes_i),
                 (self.spike_counts, other.spike_counts), (self.proxy_pa, other.proxy_pa))
        return all(len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))
                   for a, b in pairs)


@dataclass
class CalibrationResult:
    """What a calibration produced. Per-neuron status arrays account for every neuron."""

    identity: DeviceIdentity
    controller: str
    controller_settings: dict
    targets: Targets
    codes: dict[str, np.ndarray]
    start_codes: dict[str, np.ndarray]
    status: Status
    history: History
    iterations: int
    model_ms: float
    hardware_ms: float
    wall_s: float
    before: dict
    after: dict
    stopped: str  # "converged" | "budget" | "iterations"

    def summary(self) -> dict:
        st = self.status.counts()
        return {
            "chip": {"uid": self.identity.uid, "profile": self.identity.profile, "seed": self.identity.seed,
                     "backend": self.identity.backend, "n_neurons": self.identity.n_neurons},
            "controller": {"name": self.controller, "settings": self.controller_settings},
            "targets": {"rate_hz": self.targets.rate_hz, "proxy_pa": self.targets.proxy_pa,
                        **({"rate_inh_hz": self.targets.rate_inh_hz} if self.targets.rate_inh_hz is not None else {})},
            "stopped": self.stopped,
            "iterations": self.iterations,
            "windows": len(self.history),
            "model_time_s": self.model_ms / 1e3,
            "hardware_time_s": self.hardware_ms / 1e3,
            "wall_time_s": self.wall_s,
            "neurons": st,
            "before": self.before,
            "after": self.after,
        }


def measured_metrics(counts: np.ndarray, window_ms: float, live: np.ndarray, group_of: np.ndarray,
                     n_groups: int, proxy: Optional[np.ndarray] = None, exc: Optional[np.ndarray] = None) -> dict:
    """Rate and balance figures from measurements (what a board can report; no emulator truth)."""
    rates = counts / (window_ms * 1e-3)
    r = rates[live]
    out = {"window_s": window_ms / 1e3, "rate_mean_hz": float(r.mean()) if r.size else None,
           "rate_cv": float(r.std() / r.mean()) if r.size and r.mean() > 0 else None,
           # the part of that spread that counting noise alone explains (Poisson): sqrt(1/(rate*T))
           "counting_cv": float(1.0 / math.sqrt(max(r.mean(), 1e-9) * window_ms * 1e-3)) if r.size else None}
    if n_groups < live.size:
        c = np.bincount(group_of, weights=counts * live, minlength=n_groups)
        n = np.bincount(group_of, weights=live.astype(float), minlength=n_groups)
        gr = c[n > 0] / n[n > 0] / (window_ms * 1e-3)
        out["group_rates_hz"] = [float(x) for x in gr]
    if proxy is not None and exc is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            bi = np.abs(proxy) / exc
        bi = bi[np.isfinite(bi)]
        if bi.size:
            out["balance_median"] = float(np.median(bi))
            out["balance_p95"] = float(np.quantile(bi, 0.95))
    return out


ProgressFn = Callable[[int, float, dict], None]


def calibrate(device: Device, controller: Controller, *, targets: Targets = Targets(),
              start_codes: Optional[Mapping[str, np.ndarray]] = None, max_iterations: int = 15,
              progress: Optional[ProgressFn] = None,
              environment: Optional[Callable[[float], None]] = None, verify_ms: float = 0.0) -> CalibrationResult:
    """Run ``controller`` against ``device`` until it finishes, or ``max_iterations`` loop iterations are spent.

    Parameters
    ----------
    start_codes: initial codes (a previous table to warm-start from); default: every knob at its ``code_ref``.
    progress: called after each iteration with (iteration, model time in s, the controller's figures).
    environment: called with the model time (ms) before each window; drift experiments use it to set the chip's
        temperature. It never sees the controller.
    verify_ms: length of a final window at the final codes whose measured figures become ``after`` (0: use the
        controller's last loop window).
    """
    from hw_models.emulator import nominal_codes

    if start_codes is None:
        start_codes = nominal_codes(device.knobs)
    start = {k: np.asarray(v, dtype=np.int64).copy() for k, v in start_codes.items()}
    controller.begin(device.identity, device.knobs, targets, start)
    hist = History()
    t0 = time.perf_counter()
    t_ms = 0.0
    hw_ms = 0.0
    loop_iters = 0
    it = 0
    stopped = "converged"
    first_loop: Optional[tuple] = None
    last_loop: Optional[tuple] = None
    while True:
        windows = controller.plan()
        if not windows:
            break
        if any(w.kind == "loop" for w in windows):
            if loop_iters >= max_iterations:
                stopped = "iterations"
                break
            loop_iters += 1
        meas = []
        for w in windows:
            if environment is not None:
                environment(t_ms)
            device.set_codes(w.codes)
            m = device.measure(w.window_ms, monitor=w.monitor)
            t_ms += m.window_ms
            hw_ms += m.hardware_ms
            hist.add(it, w, m, t_ms)
            meas.append(m)
        info = controller.update(windows, meas)
        info = {"iteration": it, "model_time_s": t_ms / 1e3, **info}
        hist.iterations.append(info)
        loops = [(w, m) for w, m in zip(windows, meas) if w.kind == "loop"]
        if loops:
            if first_loop is None:
                first_loop = loops
            last_loop = loops
        if progress is not None:
            progress(it, t_ms / 1e3, info)
        it += 1
    if stopped == "converged" and getattr(controller, "done", True) and hasattr(controller, "model_ms"):
        budget = getattr(getattr(controller, "cfg", controller), "budget_ms", None)
        if budget is not None and controller.model_ms >= budget - 1e-6 and controller.name == "dual-loop":
            stopped = "budget"
    status = controller.status()
    live = ~status.dead
    ke = device.knobs["gain_e"]

    def figures(loops):
        if not loops:
            return {}
        counts = sum(m.spike_counts.astype(float) for _, m in loops)
        T = sum(m.window_ms for _, m in loops)
        proxy = exc = None
        off = getattr(controller, "offset", None)
        a = getattr(controller, "a", None)
        if off is not None and a is not None:
            ys, n = np.zeros(len(live)), np.zeros(len(live))
            for w, m in loops:
                ok = m.observed & np.isfinite(m.proxy_pa)
                ys[ok] += (m.proxy_pa - off)[ok]
                n[ok] += 1
            w0 = loops[0][0]
            ge = ke.nominal_gain(w0.codes["gain_e"])[ke.group_of]
            with np.errstate(invalid="ignore", divide="ignore"):
                proxy = np.where(n > 0, ys / np.maximum(n, 1), np.nan)
                exc = ge * a[ke.group_of]
            if ke.sharing != "neuron":  # balance of a shared knob is the group's: mean over its sampled neurons
                g = ke.group_of
                ok = np.isfinite(proxy)
                pm = np.bincount(g[ok], weights=proxy[ok], minlength=ke.n_groups) / np.maximum(
                    np.bincount(g[ok], minlength=ke.n_groups), 1)
                proxy = pm
                exc = ke.nominal_gain(w0.codes["gain_e"]) * a
        return measured_metrics(counts, T, live, ke.group_of, ke.n_groups, proxy, exc)

    before = figures(first_loop)
    if verify_ms > 0:
        w = Window(controller.codes, verify_ms, "verify")
        device.set_codes(controller.codes)
        m = device.measure(verify_ms)
        hist.add(it, w, m, t_ms + m.window_ms)
        after = figures([(w, m)])
    else:
        after = figures(last_loop)
    return CalibrationResult(
        identity=device.identity, controller=controller.name, controller_settings=controller.settings(),
        targets=targets, codes={k: np.asarray(v).copy() for k, v in controller.codes.items()}, start_codes=start,
        status=status, history=hist, iterations=loop_iters, model_ms=t_ms, hardware_ms=hw_ms,
        wall_s=time.perf_counter() - t0, before=before, after=after, stopped=stopped)


def replay(history: History, controller: Controller, identity: DeviceIdentity, knobs, targets: Targets,
           start_codes) -> list[dict]:
    """Feed a recorded run's measurements back through a fresh controller (no chip): the codes it asks for must
    match the recorded ones. Returns the controller's per-iteration figures."""
    controller.begin(identity, knobs, targets, start_codes)
    pos = 0
    infos = []
    while pos < len(history):
        windows = controller.plan()
        if not windows:
            break
        meas = []
        for w in windows:
            if history.kind[pos] != w.kind or not np.array_equal(history.codes_e[pos], w.codes["gain_e"]):
                raise ValueError(f"replay diverged at window {pos}: recorded {history.kind[pos]}, asked {w.kind}")
            p = history.proxy_pa[pos].astype(float)
            meas.append(Measurement(spike_counts=history.spike_counts[pos].astype(np.int64),
                                    window_ms=history.window_ms[pos], proxy_pa=p, observed=np.isfinite(p),
                                    hardware_ms=history.hardware_ms[pos]))
            pos += 1
        infos.append(controller.update(windows, meas))
    return infos
