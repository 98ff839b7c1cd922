"""The simulation engine shared by every emulated backend: Poisson inputs, recurrent spikes, the compiled window.

``Engine(chip)`` owns the dynamic state of one chip and advances it with ``run(n_steps)``, which returns the
window's true statistics (``WindowStats``). The numpy emulator calls it directly, the board emulator's chip through
the numpy emulator, and the Lava process model calls the same object one step at a time inside its ``run_spk``;
so every backend gives the same spikes to the bit.

A window is one call into compiled code (``hw_models.kernels``): the synaptic input of each step, the neuron
update, refractoriness, spike counting, the proxy accumulators and the recorder's events and samples all happen
there. Python draws the window's Poisson input beforehand and hands the recorder what the kernel collected after.

Inputs (MODEL.md 6). External sources are Bernoulli per step with p = rate*dt, generated in fixed blocks of
``BLOCK_STEPS`` steps from the chip's run-time input stream, so the spike trains do not depend on how a caller
cuts time into windows. Within a pool all sources share one rate, so the (step, source) grid of a block is one
i.i.d. Bernoulli sequence: we draw the gaps between its successes (geometric), which costs O(events) instead of
O(steps * sources). The draws are exactly those of the numpy step loop the compiled engine replaced
(``hw_models.reference``), so the same chip sees the same input spikes as before.

Threads: ``threads`` (default: ``default_threads()``, 1 unless ``set_default_threads`` changed it) runs blocks of
neurons in parallel. The results are the same for any thread count (docs/model.md, "Performance").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp

from .chip import N_STREAMS, Chip
from .models import CondLifConsts, DpiConsts, dpi_jumps
from .window import WindowedEngine, WindowStats

__all__ = ["Engine", "WindowStats", "InputSpikes", "BLOCK_STEPS", "default_threads", "set_default_threads"]

BLOCK_STEPS = 1000  # steps of Poisson input drawn at once (100 ms at dt = 0.1 ms)
# With recurrent input or a recorder the kernel synchronises its blocks every step. Threads then pay a barrier per
# step (microseconds, and a scheduler time slice when the machine is oversubscribed), which only a step of many
# neurons (tens of microseconds of work and more) repays; smaller chips run that mode on one thread. The results
# are the same either way.
STEPWISE_PARALLEL_MIN_NEURONS = 32768

_default_threads = 1


def default_threads() -> int:
    """Threads an ``Engine`` uses when not told (1 unless ``set_default_threads`` said otherwise)."""
    return _default_threads


def set_default_threads(threads: int) -> None:
    """Threads for every engine created from now on in this process without an explicit ``threads`` (the CLI's
    ``--threads``). Results do not depend on it."""
    global _default_threads
    _default_threads = _check_threads(threads)


def _check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


@dataclass
class InputSpikes:
    """The external input spikes an engine fed its chip over a stretch of steps (``Engine.record_inputs``): the
    realisation to drive another simulator with (docs/model.md, "DynapSim").

    ``steps[j]`` is the step of spike j counted from ``first_step`` (the engine's step index when recording
    started), ``sources[j]`` its source: ``0 .. n_src_e - 1`` the excitatory pool, ``n_src_e ..`` the inhibitory
    one. Within a step, sources ascend (excitatory first), exactly the order in which the engine added them.
    """

    first_step: int
    n_steps: int
    n_src_e: int
    n_src_i: int
    steps: np.ndarray
    sources: np.ndarray

    def rasters(self, a: int = 0, b: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Boolean rasters of steps ``a .. b - 1`` (default: all): ``[steps x n_src_e]`` and ``[steps x n_src_i]``."""
        b = self.n_steps if b is None else b
        lo, hi = np.searchsorted(self.steps, [a, b])
        st, src = self.steps[lo:hi] - a, self.sources[lo:hi]
        exc = src < self.n_src_e
        re = np.zeros((b - a, self.n_src_e), dtype=bool)
        ri = np.zeros((b - a, self.n_src_i), dtype=bool)
        re[st[exc], src[exc]] = True
        ri[st[~exc], src[~exc] - self.n_src_e] = True
        return re, ri


class _PoissonPool:
    """Block-wise Bernoulli sources of one pool."""

    def __init__(self, weights: sp.csr_matrix, rate_hz: float, dt_ms: float):
        self.n_src = weights.shape[1]
        self.p = rate_hz * dt_ms * 1e-3
        if self.p > 1.0:
            raise ValueError(f"input rate {rate_hz} Hz is above one spike per step at dt = {dt_ms} ms")

    def draw_block(self, rng: np.random.Generator, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The block's source spikes as (step pointer [n_steps + 1], sources ascending within each step).

        The very draws of ``reference._PoissonPool.draw_block`` (same calls on the same generator)."""
        length = n_steps * self.n_src
        if self.p <= 0.0 or self.n_src == 0:
            return np.zeros(n_steps + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        mean = length * self.p
        chunks, last = [], -1
        size = int(mean + 6.0 * np.sqrt(mean) + 16)  # almost always enough in one draw
        while last < length - 1:
            pos = np.cumsum(rng.geometric(self.p, size=size)) + last
            chunks.append(pos)
            last = int(pos[-1])
            size = int(0.25 * mean + 16)
        pos = np.concatenate(chunks)
        pos = pos[pos < length]
        step = pos // self.n_src
        src = (pos - step * self.n_src).astype(np.int64)
        indptr = np.zeros(n_steps + 1, dtype=np.int64)
        np.cumsum(np.bincount(step, minlength=n_steps), out=indptr[1:])
        return indptr, src


class _CondLifView:
    """The engine's cond_lif state as named arrays (views: writing them writes the state)."""

    __slots__ = ("V", "ge", "gi", "r")

    def __init__(self, st: np.ndarray, r: np.ndarray):
        self.V, self.ge, self.gi, self.r = st[0], st[1], st[2], r


class _DpiView:
    """The engine's dpi state as named arrays (views). ``Ipre``: the membrane current at the end of the previous
    step, before the spike reset (it sets the feedback current, as DynapSim's vmem does)."""

    __slots__ = ("Imem", "Iampa", "Igaba", "Ipre", "r")

    def __init__(self, st: np.ndarray, r: np.ndarray):
        self.Imem, self.Iampa, self.Igaba, self.Ipre, self.r = st[0], st[1], st[2], st[3], r


def _source_major(chip: Chip) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both pools' weights by source, as one CSR the kernel scatters from: rows 0 .. n_src_e - 1 are the
    excitatory sources, then the inhibitory ones; an excitatory source's targets are the neurons j, an inhibitory
    source's are N + j (the kernel's input buffer holds both sums). Targets ascend within a row, so a block of
    neurons finds its part of a row by bisection. Built in place: a million-neuron chip holds it once."""
    n = chip.n
    nnz_e, nnz_i = chip.in_e.nnz, chip.in_i.nnz
    ptr = np.empty(chip.in_e.shape[1] + chip.in_i.shape[1] + 1, dtype=np.int64)
    ind = np.empty(nnz_e + nnz_i, dtype=np.int32)
    dat = np.empty(nnz_e + nnz_i)
    at, row = 0, 0
    for m, offset in ((chip.in_e, 0), (chip.in_i, n)):
        t = m.T.tocsr()  # [n_src x N]: row k = the neurons source k projects to
        t.sort_indices()
        ptr[row:row + t.shape[0]] = t.indptr[:-1] + at
        ind[at:at + t.nnz] = t.indices
        ind[at:at + t.nnz] += offset
        dat[at:at + t.nnz] = t.data
        at += t.nnz
        row += t.shape[0]
        del t
    ptr[row] = at
    return ptr, ind, dat


def _check_chip(chip: Chip) -> None:
    """The shapes the compiled kernel relies on (it does not check indices: a malformed chip would make it write
    out of bounds, so one is refused here with the array that is wrong)."""
    n = chip.n
    inp = chip.profile["input"]
    for name, m, n_src in (("in_e", chip.in_e, inp["n_src_e"]), ("in_i", chip.in_i, inp["n_src_i"])):
        if m.shape != (n, n_src):
            raise ValueError(f"chip {chip.uid}: {name} has shape {m.shape}, expected ({n}, {n_src})")
    if chip.rec is not None:
        if chip.rec.shape != (n, n):
            raise ValueError(f"chip {chip.uid}: rec has shape {chip.rec.shape}, expected ({n}, {n})")
        if chip.rec_is_exc is None or np.shape(chip.rec_is_exc) != (n,):
            raise ValueError(f"chip {chip.uid}: rec_is_exc must have shape ({n},)")
    for key, value in chip.params.items():
        if np.shape(value) != (n,):
            raise ValueError(f"chip {chip.uid}: parameter {key} has shape {np.shape(value)}, expected ({n},)")


def _empty_like_recording():
    return (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3, 0)),
            np.zeros(0, dtype=np.int64))


class Engine(WindowedEngine):
    """Dynamic state of one chip and the compiled loop that advances it.

    Parameters
    ----------
    chip: the drawn chip.
    temperature_k: chip temperature; None means the profile's T0 (no drift).
    recorder: an ``hw_models.recorder.Recorder`` (or anything with ``on_spikes``/``on_sample``), or None.
    record_isyn: also accumulate the true net synaptic current (cond_lif; a few extra operations per step).
    input_stream: which independent realisation of the Poisson inputs and ADC read noise to draw (0, the default,
        is what every backend uses; an evaluation replay uses another so it does not re-live the calibration's own
        input noise).
    threads: threads for the neuron update (default ``default_threads()``); results do not depend on it.
    """

    def __init__(self, chip: Chip, *, temperature_k: Optional[float] = None, recorder=None, record_isyn: bool = False,
                 input_stream: int = 0, threads: Optional[int] = None):
        from . import kernels  # numba and the vector-math thunks load with the first engine, not with hw_models

        _check_chip(chip)
        self._k = kernels
        self.chip = chip
        self.n = n = chip.n
        self.dt = chip.dt
        self.recorder = recorder
        self.record_isyn = record_isyn
        self.threads = default_threads() if threads is None else _check_threads(threads)
        if not isinstance(input_stream, (int, np.integer)) or input_stream < 0:
            raise ValueError(f"input_stream must be a non-negative integer, got {input_stream!r}")
        runtime = np.random.SeedSequence(chip.seed).spawn(N_STREAMS)[N_STREAMS - 1]
        rt = runtime.spawn(2 * (int(input_stream) + 1))[2 * int(input_stream):]
        self.rng_input = np.random.default_rng(rt[0])
        self.rng_read = np.random.default_rng(rt[1])  # for the ADC model (hw_models.observe)
        inp = chip.profile["input"]
        self.pool_e = _PoissonPool(chip.in_e, inp["rate_e_hz"], self.dt)
        self.pool_i = _PoissonPool(chip.in_i, inp["rate_i_hz"], self.dt)
        self._wptr, self._wind, self._wdat = _source_major(chip)
        self._blk_e = self._blk_i = None
        self._block_pos = BLOCK_STEPS
        self._win_steps = -1  # -1: no window open
        self.step_index = 0
        self.gain_e = np.ones(n)
        self.gain_i = np.ones(n)
        self.temperature_k = chip.profile["temperature"]["T0_K"] if temperature_k is None else float(temperature_k)
        cond = chip.model == "cond_lif"
        self._st = np.zeros((kernels.N_STATE_ROWS, n))
        self._r = np.zeros(n, dtype=np.int32)
        if cond:
            self._st[0] = chip.params["EL"]
            self.state = _CondLifView(self._st, self._r)
        else:
            self._st[:] = chip.scalars["I0"]
            self.state = _DpiView(self._st, self._r)
        self._pc = np.zeros((kernels.N_CONST_ROWS, n))
        self._nref = np.zeros(n, dtype=np.int32)
        self._alive = np.ascontiguousarray(~chip.dead)
        self._sc = np.zeros(8)
        self._opt = np.zeros(len(kernels.OPT), dtype=np.int64)
        self._opt[kernels.OPT["model"]] = 0 if cond else 1
        self._opt[kernels.OPT["isyn"]] = int(bool(record_isyn) and cond)
        self._opt[kernels.OPT["n_src_e"]] = self.pool_e.n_src
        self._io = np.zeros(len(kernels.IO), dtype=np.int64)
        self._raw = np.zeros(2 * n)  # the excitatory input sums, then the inhibitory ones (zero between steps)
        self._acc = np.zeros((3, n))
        self._counts = np.zeros(n, dtype=np.int64)
        if chip.rec is not None:
            # presynaptic-major copy of the recurrent weights (rec is [post x pre]): row j holds the targets of
            # neuron j, ascending, and their weights
            rec_t = chip.rec.T.tocsr()
            rec_t.sort_indices()
            self._rptr = rec_t.indptr.astype(np.int64)
            self._rind = rec_t.indices.astype(np.int32)
            self._rdat = np.ascontiguousarray(rec_t.data, dtype=np.float64)
            self._rexc = np.ascontiguousarray(chip.rec_is_exc, dtype=bool)
            self._rsum = np.zeros((2, n))
            self._touched = np.zeros((2, n), dtype=np.uint8)
            self._prev = np.zeros((2, n), dtype=np.int64)
            self._opt[kernels.OPT["has_rec"]] = 1
        else:
            self._rptr = np.zeros(1, dtype=np.int64)
            self._rind = np.zeros(0, dtype=np.int32)
            self._rdat = np.zeros(0)
            self._rexc = np.zeros(0, dtype=bool)
            self._rsum = np.zeros((2, 0))
            self._touched = np.zeros((2, 0), dtype=np.uint8)
            self._prev = np.zeros((2, 0), dtype=np.int64)
        self._rec_buffers = _empty_like_recording()
        self._input_log: Optional[list] = None  # (first step, step pointer, sources) per advance while recording
        self._update_consts()

    # -- configuration -----------------------------------------------------------------------------------------
    def _update_consts(self) -> None:
        """The per-neuron constants, computed with numpy exactly as the reference engine computes them, then laid
        out as the rows of one matrix for the kernel."""
        chip, p, s = self.chip, self.chip.params, self.chip.scalars
        f_leak, f_exc, f_inh, f_ut = self._temperature_factors()
        k = self._k.OPT
        if chip.model == "cond_lif":
            c = CondLifConsts.from_params(p, self.dt, s["EE"], s["EI"], chip.dead, leak_scale=f_leak)
            # conductance jump per unit input weight, per neuron: Ge0 * gain_e (gain includes eps_e)
            self.jump_e = s["Ge0"] * f_exc * self.gain_e
            self.jump_i = s["Gi0"] * f_inh * self.gain_i
            self._pe = s["EE"] - s["Vbal"]
            self._pi = s["EI"] - s["Vbal"]
            rows = (c.de, c.di, c.gL, c.gLEL, c.neg_dt_over_C, c.Vth, c.Vreset, self.jump_e, self.jump_i)
            self._sc[:2] = (c.EE, c.EI)
            self._opt[k["has_ee"]] = int(c.EE != 0.0)
        else:
            c = DpiConsts.from_params(p, self.dt, s["UT"], s["kappa"], s["I0"], s["Idc"], chip.dead,
                                      leak_scale=f_leak, ut_scale=f_ut)
            je, ji = dpi_jumps(p, self.dt, s["UT"], s["kappa"], s["Iw_e"] * f_exc, s["Iw_i"] * f_inh, ut_scale=f_ut)
            self.jump_e = je * self.gain_e
            self.jump_i = ji * self.gain_i
            rows = (c.da, c.dg, c.Ileak, c.Igain, c.gain_over_tau, c.dt_over_tau_mem, c.Ispkthr, self.jump_e,
                    self.jump_i, c.Imax if c.Imax is not None else np.full(self.n, np.inf), c.ahp)
            self._sc[2:5] = (c.I0, c.Idc, c.fb_exp)
            self._opt[k["has_idc"]] = int(bool(c.Idc))
            self._opt[k["has_imax"]] = int(c.Imax is not None)
        self.consts = c
        for i, row in enumerate(rows):
            self._pc[i] = row
        self._nref[:] = c.nref

    # -- input recording ---------------------------------------------------------------------------------------
    def record_inputs(self) -> None:
        """Start keeping the external input spikes of every step from now on (``recorded_inputs`` returns them).
        Recording changes no value: the inputs are drawn as always, and only kept."""
        self._input_log = []
        self._input_first = self.step_index

    def recorded_inputs(self, stop: bool = True) -> InputSpikes:
        """The input spikes since ``record_inputs`` (and, with ``stop``, stop recording)."""
        if self._input_log is None:
            raise RuntimeError("recorded_inputs() without record_inputs()")
        steps, srcs = [], []
        for first, ptr, src in self._input_log:
            steps.append(np.repeat(np.arange(first, first + ptr.size - 1, dtype=np.int64), np.diff(ptr)))
            srcs.append(src)
        first = self._input_first
        out = InputSpikes(first_step=first, n_steps=self.step_index - first, n_src_e=self.pool_e.n_src,
                          n_src_i=self.pool_i.n_src,
                          steps=np.concatenate(steps) - first if steps else np.zeros(0, dtype=np.int64),
                          sources=np.concatenate(srcs).astype(np.int64) if srcs else np.zeros(0, dtype=np.int64))
        if stop:
            self._input_log = None
        return out

    # -- simulation --------------------------------------------------------------------------------------------
    def _take_events(self, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n_steps`` steps of both pools' source spikes, drawn block by block as the reference does,
        as (step pointer [n_steps + 1], sources): per step the excitatory sources ascending, then the inhibitory
        ones (numbered from n_src_e) ascending."""
        parts = ([], [], [], [])  # counts e, sources e, counts i, sources i
        left = n_steps
        while left > 0:
            if self._block_pos >= BLOCK_STEPS:
                self._blk_e = self.pool_e.draw_block(self.rng_input, BLOCK_STEPS)
                self._blk_i = self.pool_i.draw_block(self.rng_input, BLOCK_STEPS)
                self._block_pos = 0
            a = self._block_pos
            b = min(BLOCK_STEPS, a + left)
            for (ptr, src), cnt, srcs in ((self._blk_e, parts[0], parts[1]), (self._blk_i, parts[2], parts[3])):
                cnt.append(np.diff(ptr[a:b + 1]))
                srcs.append(src[ptr[a]:ptr[b]])
            self._block_pos = b
            left -= b - a
        ce, ci = np.concatenate(parts[0]), np.concatenate(parts[2])
        se, si = np.concatenate(parts[1]), np.concatenate(parts[3])
        ptr = np.zeros(n_steps + 1, dtype=np.int64)
        np.cumsum(ce + ci, out=ptr[1:])
        if si.size == 0:
            return ptr, se
        if se.size == 0:
            return ptr, si + self.pool_e.n_src
        steps = np.arange(n_steps)
        key = np.concatenate([np.repeat(2 * steps, ce), np.repeat(2 * steps + 1, ci)])
        src = np.concatenate([se, si + self.pool_e.n_src])
        return ptr, src[np.argsort(key, kind="stable")]

    def _recording_buffers(self, sample_every: int):
        """Buffers the kernel fills for the recorder, drained after each call (bounded: about 64 MiB at most)."""
        n = self.n
        ev_cap = max(2 * n, 1 << 16)
        s_cap = 0 if sample_every <= 0 else int(max(1, min(1024, (32 << 20) // (24 * n))))
        b = self._rec_buffers
        if b[1].shape[0] != ev_cap or b[3].shape[0] != s_cap:
            self._rec_buffers = b = (np.zeros(ev_cap, dtype=np.int64), np.zeros(ev_cap, dtype=np.int64),
                                     np.zeros((s_cap, 3, n)), np.zeros(s_cap, dtype=np.int64))
        return b

    # A window is begin_window(), then advance(k) any number of times (the Lava process model calls it once per
    # model step), then end_window(). run(n) is all three. Input comes from fixed Poisson blocks, so how time is
    # cut into windows or calls changes no value.
    def begin_window(self) -> None:
        """Open a window: zero its accumulators. Gains and temperature may change only between windows."""
        self._counts[:] = 0
        self._acc[:] = 0.0
        self._win_steps = 0

    def advance(self, n_steps: int) -> None:
        """Advance ``n_steps`` model steps inside the open window."""
        if self._win_steps < 0:
            raise RuntimeError("advance() outside a window: call begin_window() first")
        n_steps = int(n_steps)
        if n_steps <= 0:
            return
        k = self._k
        ev_ptr, ev_src = self._take_events(n_steps)
        if self._input_log is not None:
            self._input_log.append((self.step_index, ev_ptr, ev_src))
        recorder = self.recorder
        sample_every = int(getattr(recorder, "sample_every_steps", 0) or 0) if recorder is not None else 0
        opt = self._opt
        opt[k.OPT["record_spikes"]] = int(recorder is not None)
        opt[k.OPT["sample_every"]] = sample_every
        opt[k.OPT["step0"]] = self.step_index
        ev_step, ev_id, samples, sample_steps = (self._recording_buffers(sample_every) if recorder is not None
                                                 else _empty_like_recording())
        threads = self.threads
        width = k.block_width(self.n, threads)
        opt[k.OPT["block"]] = width
        stepwise = recorder is not None or self.chip.rec is not None
        buffers = (ev_ptr, ev_src, ev_step, ev_id, samples, sample_steps)
        if threads > 1 and width < self.n and (not stepwise or self.n >= STEPWISE_PARALLEL_MIN_NEURONS):
            import numba

            # numba's thread count and chunk size are settings of the calling thread: set for this call, then
            # restored, so other numba code in the process is not affected
            old = numba.get_num_threads(), numba.get_parallel_chunksize()
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            # blocks handed out one at a time as threads come free (not split evenly up front): on a shared
            # machine one thread may be descheduled for a while, and the other then takes on more blocks
            numba.set_parallel_chunksize(1)
            try:
                self._run_kernel(k.run_window_parallel, n_steps, buffers)
            finally:
                numba.set_parallel_chunksize(old[1])
                numba.set_num_threads(old[0])
        else:
            self._run_kernel(k.run_window_serial, n_steps, buffers)
        self.step_index += n_steps
        self._win_steps += n_steps

    def _run_kernel(self, kernel, n_steps: int, buffers) -> None:
        """Call the kernel until the window's steps are done (it returns early only to let the recorder drain)."""
        k, io, recorder = self._k, self._io, self.recorder
        ev_ptr, ev_src, ev_step, ev_id, samples, sample_steps = buffers
        s = 0
        while s < n_steps:
            io[k.IO["steps_done"]] = s
            io[k.IO["n_events"]] = 0
            io[k.IO["n_samples"]] = 0
            kernel(s, n_steps, self._opt, self._sc, self._st, self._r, self._pc, self._nref, self._alive, self._acc,
                   self._counts, self._wptr, self._wind, self._wdat, ev_ptr, ev_src, self._raw, self._rptr,
                   self._rind, self._rdat, self._rexc, self._rsum, self._touched, self._prev, io, ev_step, ev_id,
                   samples, sample_steps, k.VECTOR_MATH.addresses)
            done = int(io[k.IO["steps_done"]])
            if recorder is not None:
                self._deliver(recorder, ev_step[:io[k.IO["n_events"]]], ev_id[:io[k.IO["n_events"]]],
                              samples[:io[k.IO["n_samples"]]], sample_steps[:io[k.IO["n_samples"]]])
            if done <= s:
                raise RuntimeError("engine: the kernel made no progress (recorder buffers too small)")
            s = done

    def _deliver(self, recorder, ev_step, ev_id, samples, sample_steps) -> None:
        """Hand the recorder what the kernel collected, in the order the step loop made the calls: per step, its
        spikes (``on_spikes``), then its sample (``on_sample``)."""
        block = getattr(recorder, "on_spike_block", None)
        cuts = np.searchsorted(ev_step, sample_steps, side="right") if sample_steps.size else np.zeros(0, np.int64)
        start = 0
        for i in range(sample_steps.size + 1):
            stop = int(cuts[i]) if i < sample_steps.size else ev_step.size
            if stop > start:
                steps, ids = ev_step[start:stop], ev_id[start:stop]
                if block is not None:
                    block(steps, ids)
                else:
                    bounds = np.flatnonzero(np.diff(steps)) + 1
                    for a, b in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [steps.size]))):
                        recorder.on_spikes(int(steps[a]), ids[a:b].copy())
                start = stop
            if i < sample_steps.size:
                self._sample(recorder, int(sample_steps[i]), samples[i])

    def _sample(self, recorder, step: int, x: np.ndarray) -> None:
        if self.chip.model == "cond_lif":
            V, ge, gi = x[0], x[1], x[2]
            recorder.on_sample(step, ge, gi, V, ge * self._pe, gi * self._pi)
        else:
            Im, Ia, Ig = x[0], x[1], x[2]
            v = (self.chip.scalars["UT"] / self.chip.scalars["kappa"]) * np.log(Im / self.chip.scalars["I0"])
            recorder.on_sample(step, Ia, Ig, v, Ia.copy(), -Ig)

    def end_window(self) -> WindowStats:
        """Close the window and return its true statistics."""
        n_steps = self._win_steps
        if n_steps < 0:
            raise RuntimeError("end_window() without begin_window()")
        self._win_steps = -1
        m = 1.0 / max(n_steps, 1)
        counts = self._counts.copy()
        if self.chip.model == "cond_lif":
            mge, mgi = self._acc[0] * m, self._acc[1] * m
            isyn = self._acc[2] * m if self._opt[self._k.OPT["isyn"]] else None
            return WindowStats(counts, n_steps, self.dt, iexc=mge * self._pe, iinh=mgi * self._pi, isyn=isyn,
                               mean_ge=mge, mean_gi=mgi)
        ia, ig = self._acc[0] * m, self._acc[1] * m
        return WindowStats(counts, n_steps, self.dt, iexc=ia, iinh=-ig, isyn=ia - ig)

