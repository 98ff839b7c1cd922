"""The record of a calibration run: every window (codes, spike counts, proxy readings, times), the controller's
per-iteration figures, and the measured figures before and after with the estimates behind them.

``history.npz`` is :meth:`History.save`; it is enough to replay a run without the chip (``calibrate.run.replay``),
to plot it, and to re-render its report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from hw_models.device import Measurement

from .controllers.base import Window, WindowKind

__all__ = ["History"]

FIGURE_PREFIX = "figures_"


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
    iterations: list[dict] = field(default_factory=list)  # the controller's records per iteration (to_dict())
    # the run's measured figures and the controller's estimates behind them, saved as ``figures_<name>``:
    # before_rates_hz, before_balance, after_rates_hz, after_balance (per neuron; balance per knob group for shared
    # knobs, NaN where not read), offset_pa (ADC offsets), exc_pa_per_gain (excitatory proxy part at unit gain)
    figures: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, it: int, w: Window, m: Measurement, t_ms: float) -> None:
        self.kind.append(WindowKind(w.kind).value)
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
        np.savez_compressed(
            path, kind=np.array(self.kind), iteration=np.array(self.iteration), window_ms=np.array(self.window_ms),
            hardware_ms=np.array(self.hardware_ms), model_time_ms=np.array(self.model_time_ms),
            codes_e=np.array(self.codes_e), codes_i=np.array(self.codes_i),
            spike_counts=np.array(self.spike_counts), proxy_pa=np.array(self.proxy_pa),
            temperature_k=np.array(self.temperature_k), iterations=np.array(json.dumps(self.iterations)),
            **{FIGURE_PREFIX + k: np.asarray(v) for k, v in self.figures.items()})

    @classmethod
    def load(cls, path) -> "History":
        with np.load(path, allow_pickle=False) as z:
            h = cls(kind=[str(k) for k in z["kind"]], iteration=[int(i) for i in z["iteration"]],
                    window_ms=list(z["window_ms"]), hardware_ms=list(z["hardware_ms"]),
                    model_time_ms=list(z["model_time_ms"]), codes_e=list(z["codes_e"]), codes_i=list(z["codes_i"]),
                    spike_counts=list(z["spike_counts"]), proxy_pa=list(z["proxy_pa"]),
                    temperature_k=list(z["temperature_k"]), iterations=json.loads(str(z["iterations"])),
                    figures={k[len(FIGURE_PREFIX):]: z[k] for k in z.files if k.startswith(FIGURE_PREFIX)})
        return h

    def measurement(self, i: int) -> Measurement:
        """Window ``i`` as the controller measured it (for a replay)."""
        p = self.proxy_pa[i].astype(float)
        return Measurement(spike_counts=self.spike_counts[i].astype(np.int64), window_ms=self.window_ms[i], proxy_pa=p,
                           observed=np.isfinite(p), hardware_ms=self.hardware_ms[i])

    def equal(self, other: "History") -> bool:
        """Same windows, codes, counts and readings (NaN == NaN)."""
        if self.kind != other.kind or self.window_ms != other.window_ms:
            return False
        pairs = ((self.codes_e, other.codes_e), (self.codes_i, other.codes_i),
                 (self.spike_counts, other.spike_counts), (self.proxy_pa, other.proxy_pa))
        return all(len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))
                   for a, b in pairs)
