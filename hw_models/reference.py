"""The reference engine: the numpy step loop the compiled engine replaced, kept as it was, to the operation.

``ReferenceEngine`` is ``hw_models.engine.Engine`` as it stood before the compiled engine (issue 11): one Python
iteration per model step, numpy vector operations per step (``cond_lif_step``, ``dpi_step`` below), Poisson input
blocks turned into per-neuron input by a sparse product and made dense 250 steps at a time. No backend runs it. It is
kept for two things:

- ``python -m benchmarks emulator`` measures it beside the compiled engine in the same run, so every speed-up is a
  ratio measured on one machine at one moment (``--reference`` runs it alone);
- ``tests/test_engine_compiled.py`` holds the compiled engine to it bit for bit (spike counts, window means,
  membrane state), on cond_lif and dpi chips, a recurrent profile, dead neurons and temperature changes.

``NumpyDevice(..., reference=True)`` runs a chip on it. Its arithmetic, random streams and call sequence change
only when the model does, and then together with the compiled step: it is the definition the compiled engine is
checked against (docs/model.md, "Performance"). The dpi step changed once that way (issue 17: DynapSim's adaptation
floor in the leak, its refractory timer, its feedback order and its refractory input, MODEL.md 2).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp

from .chip import N_STREAMS, Chip
from .engine import BLOCK_STEPS
from .window import WindowedEngine, WindowStats
from .models import CondLifConsts, CondLifState, DpiConsts, DpiState, dpi_jumps

__all__ = ["ReferenceEngine", "cond_lif_step", "dpi_step"]

CHUNK_STEPS = 250  # steps of input made dense at once (bounds memory: CHUNK_STEPS x N floats per pool)


def cond_lif_step(s: CondLifState, c: CondLifConsts, xe: np.ndarray, xi: np.ndarray,
                  isyn_acc: Optional[np.ndarray] = None) -> np.ndarray:
    """Advance one step; return the indices of the neurons that spiked. ``xe``/``xi``: conductance jumps (nS).

    ``isyn_acc``, when given, accumulates the true net synaptic current ``ge*(EE-V) + gi*(EI-V)`` (pA) sampled
    after the membrane update and before the spike reset (MODEL.md step 4); it is a diagnostic and costs a few
    vector operations, so the calibration loop leaves it off."""
    ge, gi, V, g, t, u = s.ge, s.gi, s.V, s._g, s._t, s._u
    # 1-2. decay, then this step's input
    ge *= c.de
    ge += xe
    gi *= c.di
    gi += xi
    # 3. exponential Euler towards V_inf with the conductances held over the step
    np.add(c.gL, ge, out=g)
    g += gi
    np.multiply(gi, c.EI, out=u)
    u += c.gLEL
    if c.EE != 0.0:
        np.multiply(ge, c.EE, out=t)
        u += t
    u /= g  # u = V_inf
    np.multiply(g, c.neg_dt_over_C, out=t)
    np.exp(t, out=t)
    V -= u
    V *= t
    V += u
    r = s.r
    held = r > 0
    if held.any():
        np.putmask(V, held, c.Vreset)
        r -= held
    if isyn_acc is not None:
        # 4. ge*(EE - V) + gi*(EI - V) = ge*EE + gi*EI - (ge + gi)*V
        np.subtract(g, c.gL, out=t)
        t *= V
        isyn_acc -= t
        np.multiply(ge, c.EE, out=t)
        isyn_acc += t
        np.multiply(gi, c.EI, out=t)
        isyn_acc += t
    # 5. spike
    spk = V >= c.Vth
    if c.alive is not None:
        spk &= c.alive
    idx = np.flatnonzero(spk)
    if idx.size:
        V[idx] = c.Vreset[idx]
        r[idx] = c.nref[idx]
    return idx



def dpi_step(s: DpiState, c: DpiConsts, xe: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Advance one step (forward Euler on Imem, DynapSim's order, MODEL.md 2); return the indices that spiked."""
    Ia, Ig, Im, Ip, a, b, q = s.Iampa, s.Igaba, s.Imem, s.Ipre, s._a, s._b, s._c
    I0 = c.I0
    Ia *= c.da
    Ia += xe
    np.maximum(Ia, I0, out=Ia)
    Ig *= c.dg
    Ig += xi
    np.maximum(Ig, I0, out=Ig)
    # I_in = max(Iampa - Igaba - Ileak + Idc, I0); while refractory DynapSim zeroes it and then clips it: I0
    np.subtract(Ia, Ig, out=a)
    a -= c.Ileak
    if c.Idc:
        a += c.Idc
    np.maximum(a, I0, out=a)
    r = s.r
    held = r > 0
    any_held = held.any()
    if any_held:
        a[held] = I0
    # steady-state term: (Igain/Itau)*(Iin - Ileak)
    a -= c.Ileak
    a *= c.gain_over_tau
    # positive feedback: Ifb/Ileak*(Imem + Igain), Ifb = I0*(Ipre/I0)**fb_exp from the previous step's membrane
    # before its reset (DynapSim's vmem)
    np.divide(Ip, I0, out=b)
    np.power(b, c.fb_exp, out=b)
    b *= I0
    b /= c.Ileak
    np.add(Im, c.Igain, out=q)  # q = Imem + Igain
    b *= q
    a += b
    np.multiply(Im, c.ahp, out=b)  # - Imem*(1 + Iahp/Itau)
    a -= b
    # dImem = dt * Imem/(tau(Ileak)*(Imem+Igain)) * a
    a *= Im
    a /= q
    a *= c.dt_over_tau_mem
    Im += a
    np.maximum(Im, I0, out=Im)
    if c.Imax is not None:  # a dead neuron's membrane saturates at the threshold instead of diverging
        np.minimum(Im, c.Imax, out=Im)
    np.copyto(Ip, Im)  # the feedback of the next step: this step's membrane, before the reset
    if any_held:
        r -= held
    spk = Im > c.Ispkthr
    if c.alive is not None:
        spk &= c.alive
    idx = np.flatnonzero(spk)
    if idx.size:
        Im[idx] = I0
        r[idx] = c.nref[idx]
    return idx


class _PoissonPool:
    """Block-wise Bernoulli sources of one pool; yields the block's raw per-neuron input as CSR [BLOCK x N]."""

    def __init__(self, weights: sp.csr_matrix, rate_hz: float, dt_ms: float):
        self.n_src = weights.shape[1]
        self.p = rate_hz * dt_ms * 1e-3
        self.wT = weights.T.tocsr()  # [n_src x N]: row k = the neurons source k projects to
        if self.p > 1.0:
            raise ValueError(f"input rate {rate_hz} Hz is above one spike per step at dt = {dt_ms} ms")

    def draw_block(self, rng: np.random.Generator, n_steps: int) -> sp.csr_matrix:
        length = n_steps * self.n_src
        if self.p <= 0.0 or self.n_src == 0:
            return sp.csr_matrix((n_steps, self.wT.shape[1]))
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
        src = pos - step * self.n_src
        indptr = np.zeros(n_steps + 1, dtype=np.int64)
        np.cumsum(np.bincount(step, minlength=n_steps), out=indptr[1:])
        spikes = sp.csr_matrix((np.ones(pos.size), src, indptr), shape=(n_steps, self.n_src))
        return (spikes @ self.wT).tocsr()


class ReferenceEngine(WindowedEngine):
    """Today's numpy step loop (before the compiled engine): the dynamic state of one chip and its loop.

    Parameters
    ----------
    chip: the drawn chip.
    temperature_k: chip temperature; None means the profile's T0 (no drift).
    recorder: an ``hw_models.recorder.Recorder`` (or anything with ``on_spikes``/``on_sample``), or None.
    record_isyn: also accumulate the true net synaptic current (cond_lif; a few extra operations per step).
    input_stream: which independent realisation of the Poisson inputs and ADC read noise to draw (0, the default,
        is what every backend uses; an evaluation replay uses another so it does not re-live the calibration's own
        input noise).
    """

    def __init__(self, chip: Chip, *, temperature_k: Optional[float] = None, recorder=None, record_isyn: bool = False,
                 input_stream: int = 0):
        self.chip = chip
        self.n = chip.n
        self.dt = chip.dt
        self.recorder = recorder
        self.record_isyn = record_isyn
        if not isinstance(input_stream, (int, np.integer)) or input_stream < 0:
            raise ValueError(f"input_stream must be a non-negative integer, got {input_stream!r}")
        runtime = np.random.SeedSequence(chip.seed).spawn(N_STREAMS)[N_STREAMS - 1]
        rt = runtime.spawn(2 * (int(input_stream) + 1))[2 * int(input_stream):]
        self.rng_input = np.random.default_rng(rt[0])
        self.rng_read = np.random.default_rng(rt[1])  # for the ADC model (hw_models.observe)
        inp = chip.profile["input"]
        self.pool_e = _PoissonPool(chip.in_e, inp["rate_e_hz"], self.dt)
        self.pool_i = _PoissonPool(chip.in_i, inp["rate_i_hz"], self.dt)
        self._block_e: Optional[sp.csr_matrix] = None
        self._block_i: Optional[sp.csr_matrix] = None
        self._block_pos = BLOCK_STEPS
        self._raw_e = np.zeros((0, self.n))
        self._raw_i = np.zeros((0, self.n))
        self._raw_pos = 0
        self._win_steps = -1  # -1: no window open
        self.step_index = 0
        self.gain_e = np.ones(self.n)
        self.gain_i = np.ones(self.n)
        self.temperature_k = chip.profile["temperature"]["T0_K"] if temperature_k is None else float(temperature_k)
        if chip.model == "cond_lif":
            self.state = CondLifState(chip.params["EL"])
        else:
            self.state = DpiState(self.n, chip.scalars["I0"])
        self._rec_prev = np.zeros(0, dtype=np.int64)
        if chip.rec is not None:
            # presynaptic-major copy of the recurrent weights (rec is [post x pre]): row j of its transpose holds
            # the targets of neuron j (distinct, ascending) and their weights; plain lists for per-spike lookups
            rec_t = chip.rec.T.tocsr()
            rec_t.sort_indices()
            self._rec_ptr = rec_t.indptr.tolist()
            self._rec_ind = rec_t.indices.astype(np.intp)  # intp: fancy indexing skips a conversion per use
            self._rec_dat = rec_t.data
            self._rec_exc = np.asarray(chip.rec_is_exc, dtype=bool).tolist()
            self._rec_buf_e = np.zeros(self.n)  # scratch per-target weight sums, zero between steps
            self._rec_buf_i = np.zeros(self.n)
        self._update_consts()

    # -- configuration -----------------------------------------------------------------------------------------
    def _update_consts(self) -> None:
        chip, p, s = self.chip, self.chip.params, self.chip.scalars
        f_leak, f_exc, f_inh, f_ut = self._temperature_factors()
        if chip.model == "cond_lif":
            self.consts = CondLifConsts.from_params(p, self.dt, s["EE"], s["EI"], chip.dead, leak_scale=f_leak)
            # conductance jump per unit input weight, per neuron: Ge0 * gain_e (gain includes eps_e)
            self.jump_e = s["Ge0"] * f_exc * self.gain_e
            self.jump_i = s["Gi0"] * f_inh * self.gain_i
            self._pe = s["EE"] - s["Vbal"]
            self._pi = s["EI"] - s["Vbal"]
        else:
            self.consts = DpiConsts.from_params(p, self.dt, s["UT"], s["kappa"], s["I0"], s["Idc"], chip.dead,
                                                leak_scale=f_leak, ut_scale=f_ut)
            je, ji = dpi_jumps(p, self.dt, s["UT"], s["kappa"], s["Iw_e"] * f_exc, s["Iw_i"] * f_inh, ut_scale=f_ut)
            self.jump_e = je * self.gain_e
            self.jump_i = ji * self.gain_i

    # -- simulation --------------------------------------------------------------------------------------------
    def _next_rows(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense raw input (sum of weights of the sources that spiked) for up to ``n_max`` steps of one block."""
        if self._block_pos >= BLOCK_STEPS:
            self._block_e = self.pool_e.draw_block(self.rng_input, BLOCK_STEPS)
            self._block_i = self.pool_i.draw_block(self.rng_input, BLOCK_STEPS)
            self._block_pos = 0
        a = self._block_pos
        b = min(BLOCK_STEPS, a + n_max)
        self._block_pos = b
        return self._block_e[a:b].toarray(), self._block_i[a:b].toarray()

    # A window is begin_window(), then advance(k) any number of times (the Lava process model calls it once per
    # model step), then end_window(). run(n) is all three. The raw input rows come from a buffer filled CHUNK_STEPS
    # at a time from the fixed Poisson blocks, so how time is cut into windows or calls changes no value.
    def begin_window(self) -> None:
        """Open a window: zero its accumulators. Gains and temperature may change only between windows."""
        n = self.n
        self._counts = np.zeros(n, dtype=np.int64)
        self._acc_e = np.zeros(n)
        self._acc_i = np.zeros(n)
        self._isyn = np.zeros(n) if (self.record_isyn and self.chip.model == "cond_lif") else None
        self._win_steps = 0

    def advance(self, n_steps: int) -> None:
        """Advance ``n_steps`` model steps inside the open window."""
        if self._win_steps < 0:
            raise RuntimeError("advance() outside a window: call begin_window() first")
        cond = self.chip.model == "cond_lif"
        st, c = self.state, self.consts
        step_fn = cond_lif_step if cond else dpi_step
        se, si = (st.ge, st.gi) if cond else (st.Iampa, st.Igaba)
        counts, acc_e, acc_i, isyn = self._counts, self._acc_e, self._acc_i, self._isyn
        rec = self.chip.rec is not None
        recorder = self.recorder
        sample_every = getattr(recorder, "sample_every_steps", 0) if recorder is not None else 0
        left = n_steps
        while left > 0:
            if self._raw_pos >= self._raw_e.shape[0]:
                self._raw_e, self._raw_i = self._next_rows(CHUNK_STEPS)
                self._raw_pos = 0
            a = self._raw_pos
            k = min(left, self._raw_e.shape[0] - a)
            xe = self._raw_e[a:a + k] * self.jump_e  # the same IEEE products whatever k is
            xi = self._raw_i[a:a + k] * self.jump_i
            self._raw_pos = a + k
            for j in range(k):
                ye, yi = xe[j], xi[j]
                if rec and self._rec_prev.size:
                    ye, yi = self._add_recurrent(ye, yi)
                if isyn is not None:
                    idx = step_fn(st, c, ye, yi, isyn)
                else:
                    idx = step_fn(st, c, ye, yi)
                acc_e += se
                acc_i += si
                if idx.size:
                    counts[idx] += 1
                    if recorder is not None:
                        recorder.on_spikes(self.step_index, idx)
                if rec:
                    self._rec_prev = idx
                if sample_every and self.step_index % sample_every == 0:
                    self._sample(recorder)
                self.step_index += 1
            left -= k
            self._win_steps += k

    def end_window(self) -> WindowStats:
        """Close the window and return its true statistics."""
        n_steps = self._win_steps
        if n_steps < 0:
            raise RuntimeError("end_window() without begin_window()")
        self._win_steps = -1
        m = 1.0 / max(n_steps, 1)
        if self.chip.model == "cond_lif":
            mge, mgi = self._acc_e * m, self._acc_i * m
            return WindowStats(self._counts, n_steps, self.dt, iexc=mge * self._pe, iinh=mgi * self._pi,
                               isyn=None if self._isyn is None else self._isyn * m, mean_ge=mge, mean_gi=mgi)
        ia, ig = self._acc_e * m, self._acc_i * m
        return WindowStats(self._counts, n_steps, self.dt, iexc=ia, iinh=-ig, isyn=ia - ig)


    def _add_recurrent(self, ye: np.ndarray, yi: np.ndarray):
        """Add the previous step's chip spikes through the recurrent weights (one step of delay, MODEL.md 1.2).

        ``ye``/``yi`` are this step's input rows, fresh arrays that ``advance`` made for this step alone: the
        recurrent input is added into them in place, and they are returned. Each postsynaptic neuron receives
        (the sum of the weights from the presynaptic neurons that spiked, summed in ascending presynaptic order)
        times its own conductance jump: the same IEEE operations, in the same order, as adding
        ``np.bincount(targets, weights) * jump`` to a copy, so the results are unchanged to the bit; but the work
        is a few Python operations per spike and two dense vector operations per step with spikes of a type,
        instead of index concatenation, bincount over every neuron and copies.
        """
        pre = self._rec_prev.tolist()
        ptr, ind, dat, exc = self._rec_ptr, self._rec_ind, self._rec_dat, self._rec_exc
        if len(pre) == 1:  # the common case: a target's sum is the one weight, w*jump added to the row
            j = pre[0]
            a, b = ptr[j], ptr[j + 1]
            tgt = ind[a:b]
            if exc[j]:
                ye[tgt] += dat[a:b] * self.jump_e[tgt]
            else:
                yi[tgt] += dat[a:b] * self.jump_i[tgt]
            return ye, yi
        be, bi = self._rec_buf_e, self._rec_buf_i
        has_e = has_i = False
        for j in pre:  # ascending: each target's sum builds up in the order bincount would add
            a, b = ptr[j], ptr[j + 1]
            if exc[j]:
                be[ind[a:b]] += dat[a:b]  # a row's targets are distinct, so fancy += adds every weight
                has_e = True
            else:
                bi[ind[a:b]] += dat[a:b]
                has_i = True
        if has_e:
            be *= self.jump_e
            ye += be
            be.fill(0.0)
        if has_i:
            bi *= self.jump_i
            yi += bi
            bi.fill(0.0)
        return ye, yi

    def _sample(self, recorder) -> None:
        st = self.state
        if self.chip.model == "cond_lif":
            recorder.on_sample(self.step_index, st.ge, st.gi, st.V, st.ge * self._pe, st.gi * self._pi)
        else:
            v = (self.chip.scalars["UT"] / self.chip.scalars["kappa"]) * np.log(st.Imem / self.chip.scalars["I0"])
            recorder.on_sample(self.step_index, st.Iampa, st.Igaba, v, st.Iampa.copy(), -st.Igaba)
