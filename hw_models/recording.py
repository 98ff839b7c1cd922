"""A recording of an emulated chip (spike raster, population series, traces, per-neuron means) and its file format.

A :class:`Recording` is what a :class:`~hw_models.recorder.Recorder` returns from ``finish()``, or what
``Recording.load`` reads back (a directory of ``.npy`` files, memory-mapped, or one ``.npz``). How the recorder keeps
memory bounded while the chip runs is in ``hw_models.recorder``.

``hw_models`` does not import ``calibrate``; the analysis of a recording lives in ``calibrate.diagnostics``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

__all__ = ["Recording", "POPS", "QUANTITIES", "TRACE_QUANTITIES", "NEURON_MEAN_KEYS"]

#: Populations of ``Recording.pop_series`` (axis 1).
POPS: tuple[str, ...] = ("all", "exc", "inh")
#: Quantities of ``Recording.pop_series`` (axis 2): conductances in nS, potential in mV, currents in pA.
QUANTITIES: tuple[str, ...] = ("ge", "gi", "v", "iexc", "iinh")
#: Quantities of ``Recording.traces`` (axis 1).
TRACE_QUANTITIES: tuple[str, ...] = ("ge", "gi", "v")
#: Keys of ``Recording.neuron_means``: the time means per neuron over all samples.
NEURON_MEAN_KEYS: tuple[str, ...] = ("ge", "gi", "v", "iexc", "iinh", "v_sq", "ibal_sq")

FORMAT = "eical-recording-1"
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Recording:
    """What a :class:`Recorder` produced: a spike raster and sampled state, for ``calibrate.diagnostics``.

    Attributes
    ----------
    n_neurons : int
        Neurons on the chip.
    dt_ms : float
        The model step (ms). Times are ``step * dt_ms``.
    t_start_step : int
        First step covered (absolute step index since chip start).
    n_steps : int
        Steps covered: the recording spans ``[t_start_step, t_start_step + n_steps)``.
    is_exc : ndarray of bool, shape [N], or None
        Which neurons are excitatory; None when the chip is treated as one population.
    spike_steps : ndarray of int64, shape [S]
        Absolute step of each kept spike, non-decreasing.
    spike_ids : ndarray of int32, shape [S]
        Neuron of each kept spike.
    spike_counts : ndarray of int64, shape [N]
        Spikes per neuron over the whole recording (also those a memory ring dropped).
    spikes_complete_from_step : int
        Every spike at or after this step is in ``spike_steps``; equal to ``t_start_step`` unless the in-memory
        ring dropped early spikes.
    sample_every_steps : int
        Steps between samples.
    sample_steps : ndarray of int64, shape [T]
        Steps of the kept samples.
    pop_series : ndarray of float32, shape [T, 3, 5]
        Population means per sample, axes ``(sample, POPS, QUANTITIES)``: pops ``all, exc, inh``, quantities
        ``ge, gi`` (nS), ``v`` (mV), ``iexc, iinh`` (pA). A population with no neuron is NaN.
    trace_neurons : ndarray of int64, shape [M]
        Neurons whose individual traces are kept.
    trace_steps : ndarray of int64, shape [T']
        Steps of the kept trace samples (they may start later than ``sample_steps`` under a memory ring).
    traces : ndarray of float32, shape [T', 3, M]
        ``ge, gi, v`` of the trace neurons, axes ``(sample, TRACE_QUANTITIES, neuron)``.
    neuron_means : dict of str to ndarray of float64, shape [N]
        Time means per neuron over all samples: ``ge, gi, v, iexc, iinh, v_sq`` (mean of v**2) and ``ibal_sq``
        (mean of (iexc + iinh)**2).
    n_samples : int
        Samples that went into ``neuron_means`` (all samples, dropped or not).
    samples_dropped : int
        Samples of ``pop_series`` dropped by the memory ring (0 when none).
    meta : dict
        Free-form metadata from the engine (model, profile, Vbal, EE, EI, ...), JSON-serialisable.
    """

    n_neurons: int
    dt_ms: float
    t_start_step: int
    n_steps: int
    is_exc: Optional[np.ndarray]
    spike_steps: np.ndarray
    spike_ids: np.ndarray
    spike_counts: np.ndarray
    spikes_complete_from_step: int
    sample_every_steps: int
    sample_steps: np.ndarray
    pop_series: np.ndarray
    trace_neurons: np.ndarray
    trace_steps: np.ndarray
    traces: np.ndarray
    neuron_means: Dict[str, np.ndarray]
    n_samples: int
    samples_dropped: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived views
    @property
    def duration_ms(self) -> float:
        """Model time covered (ms)."""
        return self.n_steps * self.dt_ms

    @property
    def t_stop_step(self) -> int:
        """One past the last step covered."""
        return self.t_start_step + self.n_steps

    @property
    def sample_dt_ms(self) -> float:
        """Time between samples (ms)."""
        return self.sample_every_steps * self.dt_ms

    def spike_times_ms(self) -> np.ndarray:
        """Spike times in ms since chip start (float64)."""
        return np.asarray(self.spike_steps, dtype=np.float64) * self.dt_ms

    def rates_hz(self) -> np.ndarray:
        """Mean rate per neuron over the whole recording (Hz)."""
        return np.asarray(self.spike_counts, dtype=np.float64) / (self.duration_ms * 1e-3)

    def series(self, quantity: str, pop: str = "all") -> np.ndarray:
        """Population-mean series of ``quantity`` (one of QUANTITIES) over ``pop`` (one of POPS)."""
        return np.asarray(self.pop_series[:, POPS.index(pop), QUANTITIES.index(quantity)])

    def exc_mask(self) -> np.ndarray:
        """Boolean [N]: excitatory neurons (all True when ``is_exc`` is None)."""
        if self.is_exc is None:
            return np.ones(self.n_neurons, dtype=bool)
        return np.asarray(self.is_exc, dtype=bool)

    # ------------------------------------------------------------------ construction from plain arrays
    @classmethod
    def from_spikes(
        cls,
        spike_steps: np.ndarray,
        spike_ids: np.ndarray,
        n_neurons: int,
        dt_ms: float,
        n_steps: int,
        *,
        is_exc: Optional[np.ndarray] = None,
        t_start_step: int = 0,
        meta: Optional[Dict[str, Any]] = None,
    ) -> "Recording":
        """A spike-only recording from plain arrays (synthetic data, tests, other simulators).

        Spikes are sorted by step (stable) and those outside ``[t_start_step, t_start_step + n_steps)`` are
        dropped. The sample stores are empty and ``neuron_means`` are NaN.
        """
        steps = np.asarray(spike_steps, dtype=np.int64)
        ids = np.asarray(spike_ids, dtype=np.int32)
        keep = (steps >= t_start_step) & (steps < t_start_step + n_steps)
        steps, ids = steps[keep], ids[keep]
        if steps.size and np.any(np.diff(steps) < 0):
            order = np.argsort(steps, kind="stable")
            steps, ids = steps[order], ids[order]
        nan = np.full(n_neurons, np.nan)
        return cls(
            n_neurons=int(n_neurons),
            dt_ms=float(dt_ms),
            t_start_step=int(t_start_step),
            n_steps=int(n_steps),
            is_exc=None if is_exc is None else np.asarray(is_exc, dtype=bool),
            spike_steps=steps,
            spike_ids=ids,
            spike_counts=np.bincount(ids, minlength=n_neurons).astype(np.int64),
            spikes_complete_from_step=int(t_start_step),
            sample_every_steps=1,
            sample_steps=np.empty(0, np.int64),
            pop_series=np.empty((0, len(POPS), len(QUANTITIES)), np.float32),
            trace_neurons=np.empty(0, np.int64),
            trace_steps=np.empty(0, np.int64),
            traces=np.empty((0, len(TRACE_QUANTITIES), 0), np.float32),
            neuron_means={k: nan.copy() for k in NEURON_MEAN_KEYS},
            n_samples=0,
            meta=dict(meta or {}),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike) -> Path:
        """Write the recording to one ``.npz`` file (uncompressed; memory-mapped arrays are read through)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        arrays: Dict[str, Any] = {
            "spike_steps": np.asarray(self.spike_steps),
            "spike_ids": np.asarray(self.spike_ids),
            "spike_counts": np.asarray(self.spike_counts),
            "sample_steps": np.asarray(self.sample_steps),
            "pop_series": np.asarray(self.pop_series),
            "trace_neurons": np.asarray(self.trace_neurons),
            "trace_steps": np.asarray(self.trace_steps),
            "traces": np.asarray(self.traces),
            "is_exc": np.asarray(self.is_exc if self.is_exc is not None else np.empty(0, bool)),
        }
        for k, v in self.neuron_means.items():
            arrays[f"mean_{k}"] = np.asarray(v)
        header = {
            "format": FORMAT,
            "n_neurons": self.n_neurons,
            "dt_ms": self.dt_ms,
            "t_start_step": self.t_start_step,
            "n_steps": self.n_steps,
            "has_is_exc": self.is_exc is not None,
            "spikes_complete_from_step": self.spikes_complete_from_step,
            "sample_every_steps": self.sample_every_steps,
            "n_samples": self.n_samples,
            "samples_dropped": self.samples_dropped,
            "meta": self.meta,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: PathLike, *, mmap: bool = True) -> "Recording":
        """Read a recording written by :meth:`save` (``.npz``) or a :class:`Recorder` directory (``path=``).

        A recorder directory is memory-mapped (``mmap=True``): arrays are paged in as they are read.
        """
        path = Path(path)
        if path.is_dir():
            header = json.loads((path / "header.json").read_text())
            mode = "r" if mmap else None

            def arr(name: str) -> np.ndarray:
                return np.load(path / f"{name}.npy", mmap_mode=mode)

            arrays = {n: arr(n) for n in header["arrays"]}
        else:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(bytes(arrays.pop("header")).decode())
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: not an eical recording (format {header.get('format')!r})")
        means = {k: np.asarray(arrays[f"mean_{k}"]) for k in NEURON_MEAN_KEYS if f"mean_{k}" in arrays}
        return cls(
            n_neurons=int(header["n_neurons"]),
            dt_ms=float(header["dt_ms"]),
            t_start_step=int(header["t_start_step"]),
            n_steps=int(header["n_steps"]),
            is_exc=np.asarray(arrays["is_exc"], dtype=bool) if header["has_is_exc"] else None,
            spike_steps=arrays["spike_steps"],
            spike_ids=arrays["spike_ids"],
            spike_counts=np.asarray(arrays["spike_counts"]),
            spikes_complete_from_step=int(header["spikes_complete_from_step"]),
            sample_every_steps=int(header["sample_every_steps"]),
            sample_steps=arrays["sample_steps"],
            pop_series=arrays["pop_series"],
            trace_neurons=np.asarray(arrays["trace_neurons"]),
            trace_steps=arrays["trace_steps"],
            traces=arrays["traces"],
            neuron_means=means,
            n_samples=int(header["n_samples"]),
            samples_dropped=int(header["samples_dropped"]),
            meta=dict(header.get("meta") or {}),
        )
