"""Bounded-memory recording of an emulated chip: spike rasters and sampled conductances and currents (the
writing side; what it returns, a :class:`~hw_models.recording.Recording`, and its file format are in
``hw_models.recording``).

The emulator engine owns a :class:`Recorder` and calls it from its step loop:

- ``on_spikes(step, neurons)`` once per step in which any neuron spiked (``step`` is the absolute step index
  since chip start, ``neurons`` the integer indices that spiked in it);
- ``on_sample(step, ge, gi, v, iexc, iinh)`` every ``sample_every_steps`` steps with the full ``[N]`` state;
- ``finish()`` once, which returns the :class:`Recording`.

What is kept:

- every spike, as ``(step, neuron)``, packed in the hot loop into one int64 code ``step * N + neuron`` in a
  preallocated buffer (one vectorised write per call, no per-spike Python work);
- per sample: the population means of ``ge, gi, v, iexc, iinh`` over all neurons, the excitatory and the
  inhibitory population (``pop_series[s, pop, quantity]``);
- per sample: the individual ``ge, gi, v`` of a subset of at most 64 neurons by default (``traces``);
- per neuron, over all samples: the means of ``ge, gi, v, iexc, iinh``, of ``v**2`` and of the squared
  balance proxy ``(iexc + iinh)**2`` (running float64 sums, so nothing per sample is kept per neuron).

Memory is bounded in one of two ways:

- ``path`` given: every store is cut into fixed-size chunks that are written to ``path`` as ``.npy`` files as
  they fill, so resident memory is a few chunks whatever the duration. ``finish`` joins the chunks into one
  ``.npy`` per array (streamed, chunk by chunk) and the :class:`Recording` memory-maps them, so its arrays are
  paged in lazily.
- no ``path``: the stores are ring buffers of chunks within ``max_memory_mb``. When a store would exceed its
  share of the budget, its oldest chunk is dropped: the recording then holds the most recent stretch and says
  from which step on it is complete (``spikes_complete_from_step``, ``samples_dropped``). Per-neuron spike
  counts and per-neuron means always cover the whole recording. A 4096-neuron chip at 10 Hz for 100 s of model
  time (about 4.1 M spikes, 33 MB of codes; 1e5 samples, 6 MB of population series and 77 MB of traces for 64
  neurons) fits the default budget of 256 MB without dropping anything (:meth:`Recorder.capacity`: 16.4 M
  spikes, 2.2e5 samples, 1.3e5 trace samples). ``finish`` needs about 20 bytes per kept spike more while it
  decodes the codes into steps and ids.

``hw_models`` does not import ``calibrate``; the analysis of a recording lives in ``calibrate.diagnostics``.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .recording import FORMAT, NEURON_MEAN_KEYS, POPS, QUANTITIES, TRACE_QUANTITIES, PathLike, Recording

__all__ = ["Recorder"]


class _ChunkStore:
    """Rows of a fixed shape and dtype, appended one at a time or many at once, kept in chunks.

    ``directory`` given: full chunks go to ``directory/<name>_<k>.npy``. Otherwise they stay in memory and the
    oldest are dropped once the retained chunks exceed ``budget_bytes`` (a ring of chunks).
    """

    def __init__(
        self,
        name: str,
        row_shape: tuple[int, ...],
        dtype: Any,
        chunk_rows: int,
        budget_bytes: int,
        directory: Optional[Path],
        on_seal: Optional[Any] = None,
    ) -> None:
        self.name = name
        self.on_seal = on_seal
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.chunk_rows = max(1, int(chunk_rows))
        self.budget_bytes = int(budget_bytes)
        self.directory = directory
        self.buf = np.empty((self.chunk_rows,) + self.row_shape, self.dtype)
        self.pos = 0
        self.chunks: List[np.ndarray] = []
        self.files: List[Path] = []
        self.retained_bytes = 0
        self.dropped_rows = 0
        self.last_dropped: Optional[np.ndarray] = None  # the last row of the newest dropped chunk
        self.total_rows = 0

    def seal(self) -> None:
        """Close the current buffer as a chunk (spill to disk or keep in the ring) and start a new one."""
        if self.pos == 0:
            return
        chunk = self.buf if self.pos == self.buf.shape[0] else self.buf[: self.pos].copy()
        self.total_rows += self.pos
        if self.on_seal is not None:
            self.on_seal(chunk)
        if self.directory is not None:
            f = self.directory / f"{self.name}_{len(self.files):06d}.npy"
            np.save(f, chunk)
            self.files.append(f)
            if chunk is not self.buf:
                del chunk
            self.pos = 0  # reuse the buffer
            return
        self.chunks.append(chunk)
        self.retained_bytes += chunk.nbytes
        while len(self.chunks) > 1 and self.retained_bytes + self.buf.nbytes > self.budget_bytes:
            old = self.chunks.pop(0)
            self.retained_bytes -= old.nbytes
            self.dropped_rows += old.shape[0]
            self.last_dropped = old[-1].copy()
        if chunk is self.buf:
            self.buf = np.empty((self.chunk_rows,) + self.row_shape, self.dtype)
        self.pos = 0

    def append_rows(self, rows: np.ndarray) -> None:
        """Append ``rows`` (shape ``[n, *row_shape]``), sealing chunks as they fill."""
        n = rows.shape[0]
        start = 0
        while start < n:
            room = self.buf.shape[0] - self.pos
            take = min(room, n - start)
            self.buf[self.pos : self.pos + take] = rows[start : start + take]
            self.pos += take
            start += take
            if self.pos == self.buf.shape[0]:
                self.seal()

    def rows_total(self) -> int:
        """Rows ever appended (retained, spilled or dropped)."""
        return self.total_rows + self.pos

    def joined(self, out_file: Optional[Path]) -> np.ndarray:
        """All retained rows in order: in memory, or streamed into ``out_file`` and memory-mapped from it."""
        self.seal()
        if self.directory is None:
            if not self.chunks:
                return np.empty((0,) + self.row_shape, self.dtype)
            out = np.concatenate(self.chunks, axis=0) if len(self.chunks) > 1 else self.chunks[0]
            self.chunks = []
            return out
        assert out_file is not None
        n = self.total_rows
        mm = np.lib.format.open_memmap(out_file, mode="w+", dtype=self.dtype, shape=(n,) + self.row_shape)
        at = 0
        for f in self.files:
            part = np.load(f)
            mm[at : at + part.shape[0]] = part
            at += part.shape[0]
            del part
            os.remove(f)
        self.files = []
        mm.flush()
        del mm
        return np.load(out_file, mmap_mode="r")


class Recorder:
    """Records an emulated chip while it runs; see the module docstring for what is kept and the memory bound.

    Parameters
    ----------
    n_neurons : int
        Neurons on the chip.
    dt_ms : float
        The model step (ms).
    is_exc : array of bool, shape [N], optional
        Excitatory neurons; None treats the chip as one population (then ``exc`` means all, ``inh`` is NaN).
    sample_every_steps : int
        The engine calls :meth:`on_sample` every this many steps.
    sample_neurons : sequence of int, optional
        Neurons whose ``ge, gi, v`` traces are kept. None: up to 64 neurons spread evenly over the chip, with
        excitatory and inhibitory neurons in proportion when ``is_exc`` is given.
    path : path, optional
        Directory for chunked writes (created if missing). The recording is then memory-mapped from there.
    max_memory_mb : float
        Memory budget of the in-memory mode (ignored with ``path``): 55 % for spikes, 40 % for traces, 5 % for
        population series (the step indices of samples come on top: 8 bytes per sample). Older data are
        dropped ring-wise beyond it; :meth:`capacity` says how much is kept for sure.
    start_step : int, optional
        First step of the recording; default: the first step seen by any callback.
    chunk_spikes : int
        Spikes per chunk (the unit of spilling and of ring dropping).
    chunk_samples : int
        Samples per chunk.
    meta : dict, optional
        JSON-serialisable metadata copied into the recording (model, Vbal, EE, EI, profile, seed, ...).
    """

    def __init__(
        self,
        n_neurons: int,
        dt_ms: float,
        *,
        is_exc: Optional[np.ndarray] = None,
        sample_every_steps: int = 10,
        sample_neurons: Optional[Sequence[int]] = None,
        path: Optional[PathLike] = None,
        max_memory_mb: float = 256.0,
        start_step: Optional[int] = None,
        chunk_spikes: int = 1 << 20,
        chunk_samples: int = 4096,
        meta: Optional[Dict[str, Any]] = None,
    ) -> None:
        if n_neurons <= 0:
            raise ValueError("n_neurons must be positive")
        if sample_every_steps <= 0:
            raise ValueError("sample_every_steps must be positive")
        n = int(n_neurons)
        self.n_neurons = n
        self.dt_ms = float(dt_ms)
        self.sample_every_steps = int(sample_every_steps)
        self.meta = dict(meta or {})
        self.is_exc = None if is_exc is None else np.asarray(is_exc, dtype=bool).copy()
        if self.is_exc is not None and self.is_exc.shape != (n,):
            raise ValueError(f"is_exc must have shape ({n},)")
        exc = self.is_exc if self.is_exc is not None else np.ones(n, dtype=bool)
        inh = ~exc
        # Population-mean weights: sample[q] @ w gives the means over all, exc, inh in one product.
        w = np.zeros((n, len(POPS)))
        w[:, 0] = 1.0 / n
        w[exc, 1] = 1.0 / max(1, int(exc.sum()))
        w[inh, 2] = 1.0 / max(1, int(inh.sum()))
        self._pop_w = w
        self._pop_empty = np.array([False, not exc.any(), not inh.any()])

        if sample_neurons is None:
            sample_neurons = self._default_subset(exc, 64)
        self.sample_neurons = np.asarray(sample_neurons, dtype=np.int64).ravel()
        if self.sample_neurons.size and (self.sample_neurons.min() < 0 or self.sample_neurons.max() >= n):
            raise ValueError("sample_neurons out of range")

        self.path: Optional[Path] = None
        if path is not None:
            self.path = Path(path)
            self.path.mkdir(parents=True, exist_ok=True)
        budget = int(max_memory_mb * 2**20)
        m = self.sample_neurons.size
        b_spk, b_trc, b_pop = budget * 55 // 100, budget * 40 // 100, budget * 5 // 100
        spike_chunk = max(1024, min(int(chunk_spikes), b_spk // 8 // 3))
        trace_row = 3 * max(m, 1) * 4
        trace_chunk = max(16, min(int(chunk_samples), b_trc // trace_row // 3))
        pop_chunk = max(16, min(int(chunk_samples), b_pop // (15 * 4) // 3))
        d = self.path
        self._counts = np.zeros(n, dtype=np.int64)
        self._spikes = _ChunkStore(
            "spike_codes", (), np.int64, spike_chunk, b_spk, d, on_seal=self._count_chunk
        )
        self._pop = _ChunkStore("pop_series", (len(POPS), len(QUANTITIES)), np.float32, pop_chunk, b_pop, d)
        self._sstep = _ChunkStore("sample_steps", (), np.int64, pop_chunk, b_pop, d)
        self._traces = _ChunkStore("traces", (len(TRACE_QUANTITIES), m), np.float32, trace_chunk, b_trc, d)
        self._tstep = _ChunkStore("trace_steps", (), np.int64, trace_chunk, b_trc, d)
        # The ring of a store is sized in bytes; the step stores must drop in lock-step with their data stores.
        self._sstep.budget_bytes = 1 << 62
        self._tstep.budget_bytes = 1 << 62

        self._sums = np.zeros((len(NEURON_MEAN_KEYS), n), dtype=np.float64)
        self._n_samples = 0
        self._first_step: Optional[int] = None if start_step is None else int(start_step)
        self._last_step = -1
        self._finished = False

    def capacity(self) -> Dict[str, Optional[int]]:
        """How many of the most recent spikes, samples and trace samples are kept for sure (None: unbounded).

        In memory mode a store keeps whole chunks while they and the chunk being filled fit its share of the
        budget, so at least ``share // row_bytes - 2 * chunk_rows`` of the latest rows survive. With ``path``
        nothing is dropped.
        """
        if self.path is not None:
            return {"spikes": None, "samples": None, "trace_samples": None}

        def keep(store: _ChunkStore) -> int:
            row = max(1, store.buf.itemsize * int(np.prod(store.row_shape, dtype=np.int64)))
            return max(0, store.budget_bytes // row - 2 * store.chunk_rows)

        return {"spikes": keep(self._spikes), "samples": keep(self._pop), "trace_samples": keep(self._traces)}

    def _count_chunk(self, codes: np.ndarray) -> None:
        """Per-neuron spike counts, updated once per sealed chunk (so they survive ring dropping)."""
        self._counts += np.bincount(codes % self.n_neurons, minlength=self.n_neurons)

    @staticmethod
    def _default_subset(exc: np.ndarray, k: int) -> np.ndarray:
        """Up to ``k`` neurons spread evenly, excitatory and inhibitory in proportion (at least one of each)."""
        n = exc.size
        if n <= k:
            return np.arange(n)
        e_idx, i_idx = np.flatnonzero(exc), np.flatnonzero(~exc)
        k_i = 0 if i_idx.size == 0 else max(1, int(round(k * i_idx.size / n)))
        k_e = k - k_i
        pick_e = e_idx[np.linspace(0, e_idx.size - 1, k_e).round().astype(int)] if k_e else e_idx[:0]
        pick_i = i_idx[np.linspace(0, i_idx.size - 1, k_i).round().astype(int)] if k_i else i_idx[:0]
        return np.unique(np.concatenate([pick_e, pick_i]))

    # ------------------------------------------------------------------ hot-loop callbacks
    def on_spikes(self, step: int, neurons: np.ndarray) -> None:
        """Record that ``neurons`` (int indices) spiked in absolute step ``step``. One vectorised write."""
        store = self._spikes
        k = len(neurons)
        if self._first_step is None:
            self._first_step = int(step)
        if k == 0:
            return
        pos = store.pos
        if pos + k <= store.buf.shape[0]:
            np.add(neurons, step * self.n_neurons, out=store.buf[pos : pos + k], casting="unsafe")
            store.pos = pos + k
        else:
            store.append_rows(np.asarray(neurons, dtype=np.int64) + step * self.n_neurons)
        if step > self._last_step:
            self._last_step = step

    def on_spike_block(self, steps: np.ndarray, neurons: np.ndarray) -> None:
        """Record many spikes at once: spike ``i`` is neuron ``neurons[i]`` in step ``steps[i]`` (steps
        non-decreasing, neurons ascending within a step). The same as ``on_spikes`` once per step, in one write;
        the compiled engine hands over a window's spikes this way."""
        if len(steps) == 0:
            return
        steps = np.asarray(steps, dtype=np.int64)
        if self._first_step is None:
            self._first_step = int(steps[0])
        self._spikes.append_rows(steps * self.n_neurons + np.asarray(neurons, dtype=np.int64))
        last = int(steps[-1])
        if last > self._last_step:
            self._last_step = last

    def on_sample(
        self,
        step: int,
        ge: np.ndarray,
        gi: np.ndarray,
        v: np.ndarray,
        iexc: np.ndarray,
        iinh: np.ndarray,
    ) -> None:
        """Record the full state of step ``step``: ``ge, gi`` (nS), ``v`` (mV), ``iexc, iinh`` (pA), each [N]."""
        if self._first_step is None:
            self._first_step = int(step)
        x = np.stack([ge, gi, v, iexc, iinh]).astype(np.float64, copy=False)  # [5, N]
        pops = x @ self._pop_w  # [5, 3]
        pops[:, self._pop_empty] = np.nan
        self._pop.append_rows(pops.T[None].astype(np.float32))
        self._sstep.append_rows(np.array([step], dtype=np.int64))
        if self._pop.dropped_rows > self._sstep.dropped_rows:
            self._drop_to(self._sstep, self._pop.dropped_rows)
        if self.sample_neurons.size:
            self._traces.append_rows(x[None, :3, self.sample_neurons].astype(np.float32))
            self._tstep.append_rows(np.array([step], dtype=np.int64))
            if self._traces.dropped_rows > self._tstep.dropped_rows:
                self._drop_to(self._tstep, self._traces.dropped_rows)
        s = self._sums
        s[:5] += x
        s[5] += x[2] * x[2]
        net = x[3] + x[4]
        s[6] += net * net
        self._n_samples += 1
        if step > self._last_step:
            self._last_step = step

    @staticmethod
    def _drop_to(store: _ChunkStore, rows: int) -> None:
        """Drop the oldest retained rows of ``store`` until ``rows`` rows in all have been dropped."""
        store.seal()
        while store.dropped_rows < rows and store.chunks:
            need = rows - store.dropped_rows
            head = store.chunks[0]
            if head.shape[0] <= need:
                store.chunks.pop(0)
                store.dropped_rows += head.shape[0]
            else:
                store.chunks[0] = head[need:]
                store.dropped_rows += need
            store.retained_bytes = sum(c.nbytes for c in store.chunks)

    # ------------------------------------------------------------------ end
    def finish(self, end_step: Optional[int] = None) -> Recording:
        """Close the recording and return it.

        Parameters
        ----------
        end_step : int, optional
            One past the last simulated step. Default: one past the last step any callback saw.
        """
        if self._finished:
            raise RuntimeError("Recorder.finish() called twice")
        self._finished = True
        n = self.n_neurons
        t0 = self._first_step if self._first_step is not None else 0
        stop = int(end_step) if end_step is not None else self._last_step + 1
        stop = max(stop, t0)
        d = self.path

        def out(name: str) -> Optional[Path]:
            return None if d is None else d / f"{name}.npy"

        # Spike codes -> steps and ids, chunk by chunk so the mmap path never holds more than one chunk.
        self._spikes.seal()  # before reading last_dropped: sealing may drop one more chunk
        complete_from = t0
        if self._spikes.last_dropped is not None:
            complete_from = int(self._spikes.last_dropped) // n + 1
        if d is None:
            codes = self._spikes.joined(None)
            dropped = self._spikes.dropped_rows
            first = int(np.searchsorted(codes, complete_from * n, side="left"))
            steps, ids = np.divmod(codes[first:], n)
            spike_steps, spike_ids = steps.astype(np.int64), ids.astype(np.int32)
            if dropped:
                warnings.warn(
                    f"Recorder: memory budget reached, {dropped} early spikes dropped; spikes complete from "
                    f"step {complete_from}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        else:
            total = self._spikes.total_rows
            steps_mm = np.lib.format.open_memmap(d / "spike_steps.npy", mode="w+", dtype=np.int64, shape=(total,))
            ids_mm = np.lib.format.open_memmap(d / "spike_ids.npy", mode="w+", dtype=np.int32, shape=(total,))
            at = 0
            for f in self._spikes.files:
                part = np.load(f)
                s_, i_ = np.divmod(part, n)
                steps_mm[at : at + part.size] = s_
                ids_mm[at : at + part.size] = i_
                at += part.size
                del part, s_, i_
                os.remove(f)
            steps_mm.flush()
            ids_mm.flush()
            del steps_mm, ids_mm
            spike_steps = np.load(d / "spike_steps.npy", mmap_mode="r")
            spike_ids = np.load(d / "spike_ids.npy", mmap_mode="r")

        pop = self._pop.joined(out("pop_series"))
        sample_steps = self._sstep.joined(out("sample_steps"))
        traces = self._traces.joined(out("traces"))
        trace_steps = self._tstep.joined(out("trace_steps"))
        ns = max(self._n_samples, 1)
        nan = np.nan if self._n_samples == 0 else 0.0
        means = {k: self._sums[j] / ns + nan for j, k in enumerate(NEURON_MEAN_KEYS)}
        rec = Recording(
            n_neurons=n,
            dt_ms=self.dt_ms,
            t_start_step=int(t0),
            n_steps=int(stop - t0),
            is_exc=None if self.is_exc is None else self.is_exc.copy(),
            spike_steps=spike_steps,
            spike_ids=spike_ids,
            spike_counts=self._counts.copy(),
            spikes_complete_from_step=int(complete_from),
            sample_every_steps=self.sample_every_steps,
            sample_steps=sample_steps,
            pop_series=pop,
            trace_neurons=self.sample_neurons.copy(),
            trace_steps=trace_steps,
            traces=traces,
            neuron_means=means,
            n_samples=self._n_samples,
            samples_dropped=int(self._pop.dropped_rows),
            meta=dict(self.meta),
        )
        if d is not None:
            for k, v in means.items():
                np.save(d / f"mean_{k}.npy", v)
            np.save(d / "spike_counts.npy", rec.spike_counts)
            np.save(d / "trace_neurons.npy", rec.trace_neurons)
            np.save(d / "is_exc.npy", rec.is_exc if rec.is_exc is not None else np.empty(0, bool))
            names = [
                "spike_steps", "spike_ids", "spike_counts", "sample_steps", "pop_series", "trace_neurons",
                "trace_steps", "traces", "is_exc",
            ] + [f"mean_{k}" for k in means]
            header = {
                "format": FORMAT,
                "arrays": names,
                "n_neurons": n,
                "dt_ms": self.dt_ms,
                "t_start_step": rec.t_start_step,
                "n_steps": rec.n_steps,
                "has_is_exc": rec.is_exc is not None,
                "spikes_complete_from_step": rec.spikes_complete_from_step,
                "sample_every_steps": rec.sample_every_steps,
                "n_samples": rec.n_samples,
                "samples_dropped": rec.samples_dropped,
                "meta": rec.meta,
            }
            (d / "header.json").write_text(json.dumps(header))
        return rec
