"""The compiled engine: one model step per neuron model, and the loops that run a whole window of them.

Everything here is numba ``@njit`` (no fastmath, IEEE semantics with ``error_model="numpy"``) and cached on disk
(``cache=True``), so only the first call after an install pays for compilation (docs/model.md, "Performance").
``hw_models.engine.Engine`` is the only caller; it enters this module once per window (or once per step for the
Lava process model) and this module does the rest: the synaptic input of the window's Poisson events through the
fixed in-degree weights, the recurrent input of the previous step's spikes, the neuron update, refractoriness,
spike counting, the proxy accumulators and the recorder's spike events and state samples.

One step's arithmetic (``_block_steps``: the cond_lif and the dpi step) is the single source of the model's
numbers: every backend runs it. It is written as the numpy step loop it replaced (``hw_models.reference``) computed it, one
scalar operation per numpy operation and in the same order, so the results are the same to the bit; that is what
``tests/test_engine_compiled.py`` checks.

Transcendentals. numpy's ``exp`` and ``power`` are not the C library's on every machine: numpy links Intel's SVML
for AVX-512 CPUs and uses it for contiguous float64 arrays, which differs from glibc in the last bit for 5 to 45 %
of arguments, depending on the numpy version (measured: docs/model.md). A compiled ``math.exp`` would call glibc. To keep the reference's bits, the
step calls the very routine numpy calls: at import, ``_VectorMath`` tries the candidates (numpy's own exported SVML
routines ``__svml_exp8_ha`` and ``__svml_exp8``, then the C library's ``exp``) on a probe of arguments and keeps the
one whose results equal ``numpy.exp`` on every probe (likewise for ``pow``). The compiled step reaches it through a
tiny LLVM thunk (a loop over 8-lane blocks, built here with llvmlite at import) whose address it gets as an
argument, so nothing machine- or process-specific is baked into the cached machine code. ``VECTOR_MATH`` says
which routines were chosen and whether they match numpy.

Parallelism. The neurons are cut into blocks of at most ``BLOCK`` neurons. A neuron's arithmetic reads only its own
state and constants, and its input sums its presynaptic weights in ascending source order whatever the blocks, so
the results do not depend on the blocks or on how many threads run them. Without recurrent connections or a
recorder, each block runs the whole window on its own (its state stays in cache across steps); otherwise the
blocks are synchronised every step (recurrent input needs the previous step's spikes of every block).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = ["BLOCK", "N_STATE_ROWS", "N_CONST_ROWS", "VECTOR_MATH", "IO", "OPT", "run_window_serial", "run_window_parallel", "block_width"]

N_STATE_ROWS = 4  # rows of the state matrix ``st``: cond_lif V ge gi (and one unused); dpi Imem Iampa Igaba Ipre
N_CONST_ROWS = 11  # rows of the per-neuron constants ``pc`` (their meaning per model: ``_block_steps``)
BLOCK = 1024  # neurons per block at most: a block's working set (about 25 arrays, 200 KiB) stays in the L2 cache

# indices of the int64 option array ``opt`` (read-only in the kernel)
OPT = dict(model=0, has_ee=1, has_idc=2, has_imax=3, isyn=4, has_rec=5, record_spikes=6, sample_every=7, step0=8,
           block=9, n_src_e=10)
# indices of the int64 in/out array ``io``
IO = dict(steps_done=0, n_events=1, n_samples=2, n_prev=3, prev_row=4)

_O_MODEL, _O_EE, _O_IDC, _O_IMAX, _O_ISYN, _O_REC, _O_RECSPK, _O_SAMPLE, _O_STEP0, _O_BLOCK, _O_NSRC_E = range(11)
_IO_DONE, _IO_NEV, _IO_NSMP, _IO_NPREV, _IO_PREVROW = range(5)


# ----------------------------------------------------------------------------------------------------------------
# vector math: numpy's own exp and pow, reached through an LLVM thunk
# ----------------------------------------------------------------------------------------------------------------
def _build_thunks():
    """An LLVM module with four in-place maps over a float64 buffer of ``n`` elements (``n`` a multiple of 8 for
    the 8-lane ones): ``map8(fn, buf, n)`` calls ``<8 x double> fn(<8 x double>)`` per 8 elements (an SVML routine,
    ZMM calling convention); ``map1(fn, buf, n)`` calls ``double fn(double)`` per element (the C library);
    ``map8p(fn, buf, y, n)`` and ``map1p(fn, buf, y, n)`` the same for ``pow(x, y)`` with a scalar ``y``."""
    mod = ir.Module("eical_vector_math")
    d, i64 = ir.DoubleType(), ir.IntType(64)
    v8 = ir.VectorType(d, 8)
    dp = d.as_pointer()

    def make(name, lanes, binary):
        vt = v8 if lanes == 8 else d
        fnty = ir.FunctionType(vt, [vt, vt] if binary else [vt])
        args = [i64, dp, d, i64] if binary else [i64, dp, i64]
        f = ir.Function(mod, ir.FunctionType(ir.VoidType(), args), name)
        entry, loop, end = f.append_basic_block("entry"), f.append_basic_block("loop"), f.append_basic_block("end")
        b = ir.IRBuilder(entry)
        faddr, buf = f.args[0], f.args[1]
        n = f.args[3] if binary else f.args[2]
        fp = b.inttoptr(faddr, fnty.as_pointer())
        yv = None
        if binary:
            yv = f.args[2]
            if lanes == 8:
                yv = b.insert_element(ir.Constant(v8, ir.Undefined), yv, i64(0))
                yv = b.shuffle_vector(yv, ir.Constant(v8, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                                                     [0] * 8))
        b.cbranch(b.icmp_signed(">", n, i64(0)), loop, end)
        b = ir.IRBuilder(loop)
        k = b.phi(i64)
        k.add_incoming(i64(0), entry)
        ptr = b.gep(buf, [k])
        if lanes == 8:
            ptr = b.bitcast(ptr, v8.as_pointer())
        x = b.load(ptr, align=8)
        y = b.call(fp, [x, yv] if binary else [x])
        b.store(y, ptr, align=8)
        k2 = b.add(k, i64(lanes))
        k.add_incoming(k2, loop)
        b.cbranch(b.icmp_signed("<", k2, n), loop, end)
        ir.IRBuilder(end).ret_void()

    make("map8", 8, False)
    make("map1", 1, False)
    make("map8p", 8, True)
    make("map1p", 1, True)
    return str(mod)


def _numpy_umath_library():
    try:
        import numpy._core._multiarray_umath as umath
    except ImportError:  # numpy 1.x
        import numpy.core._multiarray_umath as umath
    return ctypes.CDLL(umath.__file__)


def _c_math_library():
    """The C library's math functions (what numpy calls where it has no SIMD routine of its own)."""
    names = [ctypes.util.find_library("m"), "libm.so.6", "ucrtbase", "msvcrt"]
    for name in names:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("hw_models.kernels: cannot find the C math library (exp, pow)")


@dataclass(frozen=True)
class _Choice:
    name: str  # e.g. "numpy SVML __svml_exp8_ha" or "C library exp"
    matches_numpy: bool  # equal to numpy on every probe argument


class _VectorMath:
    """Chooses, per function, the routine that gives numpy's bits on this machine, and holds the thunks."""

    def __init__(self) -> None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        self._tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                                features=llvm.get_host_cpu_features().flatten(), opt=2)
        module = llvm.parse_assembly(_build_thunks())
        module.verify()
        self._ee = llvm.create_mcjit_compiler(module, self._tm)  # keeps the machine code alive with this object
        self._ee.finalize_object()
        addr = {name: self._ee.get_function_address(name) for name in ("map8", "map1", "map8p", "map1p")}
        self._map = {
            "map8": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)(addr["map8"]),
            "map1": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)(addr["map1"]),
            "map8p": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_double,
                                      ctypes.c_int64)(addr["map8p"]),
            "map1p": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_double,
                                      ctypes.c_int64)(addr["map1p"]),
        }
        self._addr = addr
        libm = _c_math_library()
        try:
            umath = _numpy_umath_library()
        except OSError:
            umath = None
        features = {f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f[:1] == "+"}
        # numpy calls its SVML routines on AVX512_SKX CPUs only (F, CD, BW, DQ, VL); elsewhere they may not even run
        simd_ok = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= features

        def symbol(lib, name):
            if lib is None:
                return None
            try:
                return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            except AttributeError:
                return None

        exp_cands, pow_cands = [], []
        if simd_ok:  # numpy calls its SVML routines only on AVX-512 machines; the 8-lane thunk needs ZMM registers
            for name in ("__svml_exp8_ha", "__svml_exp8"):
                exp_cands.append((f"numpy SVML {name}", "map8", symbol(umath, name)))
            for name in ("__svml_pow8_ha", "__svml_pow8"):
                pow_cands.append((f"numpy SVML {name}", "map8p", symbol(umath, name)))
        exp_cands.append(("C library exp", "map1", symbol(libm, "exp")))
        pow_cands.append(("C library pow", "map1p", symbol(libm, "pow")))

        rng = np.random.default_rng(20240611)
        # probes: the ranges the models use (cond_lif: -dt*g/C in [-0.1, 0); dpi: Imem/I0 in [1, 1e7]) and beyond
        xs = np.concatenate([rng.uniform(-0.1, 0.0, 4096), rng.uniform(-1e-3, 0.0, 1024), rng.uniform(-30, 30, 1024),
                             -np.logspace(-12, 2, 512)])
        ys = np.concatenate([rng.uniform(1.0, 2.0, 2048), np.exp(rng.uniform(0.0, np.log(1e7), 4096)),
                             rng.uniform(0.0, 1.0, 512)])
        y_exps = (0.705 / 1.705, 0.5 / 1.5, 0.8 / 1.8, 0.41343963553530753)

        def first_match(cands, probe, binary):
            want = []
            for y in (y_exps if binary else (None,)):
                w = probe.copy()
                if binary:
                    np.power(w, y, out=w)  # the reference's call: in place, scalar exponent
                else:
                    np.exp(w, out=w)
                want.append((y, w))
            for label, thunk, fn in cands:
                if fn is None:
                    continue
                ok = True
                for y, w in want:
                    got = probe.copy()
                    self.apply(thunk, fn, got, y)
                    if not np.array_equal(got, w):
                        ok = False
                        break
                if ok:
                    return label, thunk, fn, True
            label, thunk, fn = cands[-1]  # the C library: the best default where nothing matches
            return label, thunk, fn, False

        e_label, e_thunk, e_fn, e_ok = first_match(exp_cands, xs, False)
        p_label, p_thunk, p_fn, p_ok = first_match(pow_cands, ys, True)
        self.exp = _Choice(e_label, e_ok)
        self.pow = _Choice(p_label, p_ok)
        self.lanes_exp = 8 if e_thunk == "map8" else 1
        self.lanes_pow = 8 if p_thunk == "map8p" else 1
        # what the kernels receive: thunk and routine addresses for exp, then for pow
        self.addresses = np.array([addr[e_thunk], e_fn, addr[p_thunk], p_fn], dtype=np.int64)
        # the C library's routines, the fallback where nothing matches numpy (tests run the engine on them too)
        self.c_library_addresses = np.array([addr["map1"], symbol(libm, "exp"), addr["map1p"], symbol(libm, "pow")],
                                            dtype=np.int64)

    def apply(self, thunk: str, fn: int, buf: np.ndarray, y=None) -> None:
        """Run a thunk in place on ``buf`` (float64, contiguous); pads to 8 lanes with copies of the last value."""
        n = buf.size
        if thunk in ("map8", "map8p") and n % 8:
            pad = np.full(n + (-n) % 8, 1.0)
            pad[:n] = buf
            self.apply(thunk, fn, pad, y)
            buf[:] = pad[:n]
            return
        if y is None:
            self._map[thunk](fn, buf.ctypes.data, n)
        else:
            self._map[thunk](fn, buf.ctypes.data, float(y), n)

    @property
    def exact(self) -> bool:
        """True when both routines give numpy's bits: the compiled engine then equals the reference exactly."""
        return self.exp.matches_numpy and self.pow.matches_numpy

    def describe(self) -> dict:
        return {"exp": self.exp.name, "exp_matches_numpy": self.exp.matches_numpy, "pow": self.pow.name,
                "pow_matches_numpy": self.pow.matches_numpy}


VECTOR_MATH = _VectorMath()


@intrinsic
def _vmap(typingctx, thunk, fn, buf, n):
    """In place: ``buf[:n] = f(buf[:n])`` through ``thunk`` (an address) calling ``fn`` (an address)."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.float64 and buf.ndim == 1):
        return None
    sig = types.void(types.int64, types.int64, buf, types.int64)

    def codegen(context, builder, signature, args):
        thunk_v, fn_v, buf_v, n_v = args
        data = context.make_array(signature.args[2])(context, builder, buf_v).data
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i64, data.type, i64])
        builder.call(builder.inttoptr(thunk_v, fnty.as_pointer()), [fn_v, data, n_v])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _vmap_pow(typingctx, thunk, fn, buf, y, n):
    """In place: ``buf[:n] = pow(buf[:n], y)`` through ``thunk`` calling ``fn``."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.float64 and buf.ndim == 1):
        return None
    sig = types.void(types.int64, types.int64, buf, types.float64, types.int64)

    def codegen(context, builder, signature, args):
        thunk_v, fn_v, buf_v, y_v, n_v = args
        data = context.make_array(signature.args[2])(context, builder, buf_v).data
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i64, data.type, ir.DoubleType(), i64])
        builder.call(builder.inttoptr(thunk_v, fnty.as_pointer()), [fn_v, data, y_v, n_v])
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------------------------------------------
# one step of one block of neurons
# ----------------------------------------------------------------------------------------------------------------
_JIT = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_JIT)
def _first_at_least(ind, a, b, lo):
    """First position in the sorted ``ind[a:b]`` whose value is >= lo (b if none)."""
    while a < b:
        m = (a + b) >> 1
        if ind[m] < lo:
            a = m + 1
        else:
            b = m
    return a


@njit(**_JIT)
def _block_steps(lo, hi, whole, s_from, s_to, opt, sc, st, r, pc, nref, alive, acc, counts,
                 wptr, wind, wdat, ev_ptr, ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev, n_prev,
                 mode_e, mode_i, scr, vm, spk):
    """Steps ``s_from .. s_to - 1`` of the chip's model for neurons ``[lo, hi)``; returns how many spiked in the
    last step (their indices go to ``spk[lo:]``, ascending).

    This is the model's arithmetic, for every backend. Every line is one numpy operation of the reference's step
    (``reference.cond_lif_step``, ``reference.dpi_step``, and ``ReferenceEngine.advance`` and ``_add_recurrent``
    for the input), in its order, so the rounding is the same. The loops are simple passes over the block, which
    the compiler vectorises, and everything is written out in this one function: a helper taking arrays in the
    step loop would cost reference-count updates (atomic) on every call, which for a 32-neuron chip is most of a
    step.

    Input: both pools share one source-major weight matrix (``wptr``, ``wind``, ``wdat``) whose inhibitory sources
    follow the excitatory ones and whose inhibitory targets are numbered from N, so ``raw`` is ``[2N]``: the
    excitatory sums, then the inhibitory ones. A target's sum builds up in ascending source order from 0.0, the
    order (and so the rounding) of the reference's sparse product (scipy's csr_matmat adds a row's terms in column
    order). Recurrent input (the previous step's chip spikes ``prev``, ascending) goes into ``rsum`` the same way;
    ``mode_e``/``mode_i`` say how it enters (``_recurrent_modes``).
    """
    n = st.shape[1]
    nse = opt[_O_NSRC_E]
    cond = opt[_O_MODEL] == 0
    # state, constants and buffers of the block (views made once per call, never in the step loop)
    x0, x1, x2 = st[0, lo:hi], st[1, lo:hi], st[2, lo:hi]  # cond_lif: V, ge, gi; dpi: Imem, Iampa, Igaba
    x3 = st[3, lo:hi]  # dpi: Ipre (Imem at the end of the previous step, before the reset); cond_lif: unused
    rb = r[lo:hi]
    d1, d2 = pc[0, lo:hi], pc[1, lo:hi]  # decay factors of the two synapses
    p2, p3, p4, p5, p6 = pc[2, lo:hi], pc[3, lo:hi], pc[4, lo:hi], pc[5, lo:hi], pc[6, lo:hi]
    je, ji, p9, p10 = pc[7, lo:hi], pc[8, lo:hi], pc[9, lo:hi], pc[10, lo:hi]
    nr, al, cnt = nref[lo:hi], alive[lo:hi], counts[lo:hi]
    a_e, a_i, a_s = acc[0, lo:hi], acc[1, lo:hi], acc[2, lo:hi]
    raw_e, raw_i = raw[lo:hi], raw[n + lo:n + hi]
    has_rec = n_prev > 0
    lo_r, hi_r = (lo, hi) if has_rec else (0, 0)
    rs_e, rs_i, tch_e, tch_i = rsum[0, lo_r:hi_r], rsum[1, lo_r:hi_r], touched[0, lo_r:hi_r], touched[1, lo_r:hi_r]
    EE, EI, I0, Idc, fb_exp = sc[0], sc[1], sc[2], sc[3], sc[4]
    has_ee = opt[_O_EE] != 0
    isyn = opt[_O_ISYN] != 0
    has_idc = opt[_O_IDC] != 0
    has_imax = opt[_O_IMAX] != 0
    m = hi - lo
    m8 = (m + 7) & ~7
    s0_, s1_, s2_ = scr[0, :m], scr[1, :m8], scr[2, :m8]
    n_spk = 0
    for s in range(s_from, s_to):
        # -- this step's input: source spikes through the weights, then the previous step's chip spikes
        for q in range(ev_ptr[s], ev_ptr[s + 1]):
            k = ev_src[q]
            off = n if k >= nse else 0
            a = wptr[k]
            b = wptr[k + 1]
            if not whole:
                a = _first_at_least(wind, a, b, lo + off)
            for t in range(a, b):
                j = wind[t] - off
                if j >= hi:
                    break
                raw[off + j] += wdat[t]
        for q in range(n_prev):
            p = prev[q]
            a = rptr[p]
            b = rptr[p + 1]
            if not whole:
                a = _first_at_least(rind, a, b, lo)
            kind = 0 if rexc[p] else 1
            for x in range(a, b):
                j = rind[x]
                if j >= hi:
                    break
                rsum[kind, j] += rdat[x]
                touched[kind, j] = 1
        # -- 1-2. decay, then input: g *= d; g += x with x = raw*jump (+ rsum*jump where recurrent input enters)
        if mode_e == 0:
            for k in range(m):
                x1[k] = x1[k] * d1[k] + raw_e[k] * je[k]
        else:
            for k in range(m):
                x = raw_e[k] * je[k]
                if mode_e == 2 or tch_e[k] != 0:
                    x = x + rs_e[k] * je[k]
                rs_e[k] = 0.0
                tch_e[k] = 0
                x1[k] = x1[k] * d1[k] + x
        if mode_i == 0:
            for k in range(m):
                x2[k] = x2[k] * d2[k] + raw_i[k] * ji[k]
        else:
            for k in range(m):
                x = raw_i[k] * ji[k]
                if mode_i == 2 or tch_i[k] != 0:
                    x = x + rs_i[k] * ji[k]
                rs_i[k] = 0.0
                tch_i[k] = 0
                x2[k] = x2[k] * d2[k] + x
        for q in range(ev_ptr[s], ev_ptr[s + 1]):  # the input buffer back to zero: only what was touched
            k = ev_src[q]
            off = n if k >= nse else 0
            a = wptr[k]
            b = wptr[k + 1]
            if not whole:
                a = _first_at_least(wind, a, b, lo + off)
            for t in range(a, b):
                j = wind[t] - off
                if j >= hi:
                    break
                raw[off + j] = 0.0
        n_spk = 0
        if cond:
            # cond_lif (MODEL.md 1): V, ge, gi = x0, x1, x2; gL gL*EL -dt/C Vth Vreset = p2 .. p6
            # 3. exponential Euler towards V_inf with the conductances held over the step
            for k in range(m):
                s0_[k] = (p2[k] + x1[k]) + x2[k]  # g = gL + ge + gi
            if has_ee:
                for k in range(m):
                    s1_[k] = (((x2[k] * EI) + p3[k]) + x1[k] * EE) / s0_[k]  # V_inf
            else:
                for k in range(m):
                    s1_[k] = ((x2[k] * EI) + p3[k]) / s0_[k]
            for k in range(m):
                s2_[k] = s0_[k] * p4[k]
            for k in range(m, m8):
                s2_[k] = 0.0
            _vmap(vm[0], vm[1], s2_, m8)  # exp(-dt*g/C), numpy's routine
            for k in range(m):  # V -= u; V *= t; V += u, then held at Vreset while refractory
                w = s1_[k]
                v = ((x0[k] - w) * s2_[k]) + w
                rk = rb[k]
                held = rk > 0
                x0[k] = p6[k] if held else v
                rb[k] = rk - 1 if held else rk
            if isyn:  # 4. ge*(EE - V) + gi*(EI - V) = ge*EE + gi*EI - (ge + gi)*V
                for k in range(m):
                    a_s[k] = ((a_s[k] - (s0_[k] - p2[k]) * x0[k]) + x1[k] * EE) + x2[k] * EI
            for k in range(m):  # 5. spike
                if x0[k] >= p5[k] and al[k]:
                    x0[k] = p6[k]
                    rb[k] = nr[k]
                    cnt[k] += 1
                    spk[lo + n_spk] = lo + k
                    n_spk += 1
        else:
            # dpi (MODEL.md 2, DynapSim's order): Imem, Iampa, Igaba, Ipre = x0 .. x3; Ileak Igain Igain/Itau
            # dt/tau(Ileak) Ispkthr = p2 .. p6, Imax = p9, 1 + Iahp/Itau = p10
            for k in range(m):  # numpy.maximum(x, I0): a NaN stays NaN
                x = x1[k]
                x1[k] = I0 if x < I0 else x
            for k in range(m):
                x = x2[k]
                x2[k] = I0 if x < I0 else x
            # I_in = max(Iampa - Igaba - Ileak + Idc, I0), I0 while refractory (DynapSim zeroes, then clips);
            # then (Igain/Itau)*(I_in - Ileak)
            for k in range(m):
                a = (x1[k] - x2[k]) - p2[k]
                if has_idc:
                    a = a + Idc
                a = I0 if a < I0 else a
                a = I0 if rb[k] > 0 else a
                s0_[k] = (a - p2[k]) * p4[k]
            for k in range(m):
                s2_[k] = x0[k] + p3[k]  # q = Imem + Igain
            for k in range(m):
                s1_[k] = x3[k] / I0
            for k in range(m, m8):
                s1_[k] = 1.0
            _vmap_pow(vm[2], vm[3], s1_, fb_exp, m8)  # (Ipre/I0)**fb_exp, numpy's routine
            # positive feedback Ifb/Ileak*(Imem + Igain); - Imem*(1 + Iahp/Itau);
            # dImem = dt*Imem/(tau(Ileak)*(Imem+Igain))*a
            for k in range(m):
                im = x0[k]
                q = s2_[k]
                b = ((s1_[k] * I0) / p2[k]) * q
                a = ((((s0_[k] + b) - im * p10[k]) * im) / q) * p5[k]
                im = im + a
                x0[k] = I0 if im < I0 else im
            if has_imax:  # a dead neuron's membrane saturates at its threshold instead of diverging
                for k in range(m):
                    x0[k] = p9[k] if p9[k] < x0[k] else x0[k]
            for k in range(m):  # the next step's feedback: this step's membrane, before the reset
                x3[k] = x0[k]
            for k in range(m):
                rk = rb[k]
                rb[k] = rk - 1 if rk > 0 else rk
            for k in range(m):
                if x0[k] > p6[k] and al[k]:
                    x0[k] = I0
                    rb[k] = nr[k]
                    cnt[k] += 1
                    spk[lo + n_spk] = lo + k
                    n_spk += 1
        for k in range(m):  # the proxy accumulators: ge, gi (cond_lif); Iampa, Igaba (dpi)
            a_e[k] += x1[k]
        for k in range(m):
            a_i[k] += x2[k]
    return n_spk


@njit(**_JIT)
def _recurrent_modes(prev, n_prev, rexc):
    """How the previous step's spikes enter (the reference's two paths, ``ReferenceEngine._add_recurrent``):
    0 none of that type; 1 a single spike (added to its targets only); 2 several spikes (added to every neuron,
    zero for non-targets)."""
    if n_prev == 0:
        return 0, 0
    if n_prev == 1:
        return (1, 0) if rexc[prev[0]] else (0, 1)
    has_e = False
    has_i = False
    for q in range(n_prev):
        if rexc[prev[q]]:
            has_e = True
        else:
            has_i = True
    return (2 if has_e else 0), (2 if has_i else 0)


@njit(**_JIT)
def _after_step(abs_step, n, nb, bw, opt, st, spk, cnt, prev2, io, ev_step, ev_id, samples, sample_steps):
    """Serial bookkeeping after every block has done a step: gather the spikes in ascending order (recurrent input
    of the next step, the recorder's events) and take the state sample when one is due."""
    has_rec = opt[_O_REC] != 0
    rec_spk = opt[_O_RECSPK] != 0
    row = io[_IO_PREVROW]
    nxt = 1 - row
    k = 0
    nev = io[_IO_NEV]
    for b in range(nb):
        lo = b * bw
        for q in range(cnt[b]):
            j = spk[lo + q]
            if has_rec:
                prev2[nxt, k] = j
            if rec_spk:
                ev_step[nev] = abs_step
                ev_id[nev] = j
                nev += 1
            k += 1
    io[_IO_NEV] = nev
    if has_rec:
        io[_IO_PREVROW] = nxt
        io[_IO_NPREV] = k
    every = opt[_O_SAMPLE]
    if every > 0 and abs_step % every == 0:
        row_s = io[_IO_NSMP]
        for c in range(3):
            for j in range(n):
                samples[row_s, c, j] = st[c, j]
        sample_steps[row_s] = abs_step
        io[_IO_NSMP] = row_s + 1


@njit(**_JIT)
def _room(abs_step, n, opt, io, ev_id, sample_steps):
    """Whether the recorder buffers can take one more step (else the kernel returns and the engine drains them)."""
    if opt[_O_RECSPK] != 0 and io[_IO_NEV] + n > ev_id.shape[0]:
        return False
    every = opt[_O_SAMPLE]
    if every > 0 and abs_step % every == 0 and io[_IO_NSMP] >= sample_steps.shape[0]:
        return False
    return True


def block_width(n: int, threads: int) -> int:
    """Neurons per block: BLOCK, or fewer so that every thread gets a few blocks (a multiple of 8, at least 64).
    Any width gives the same results."""
    if threads <= 1:
        return BLOCK
    w = -(-n // (4 * threads))
    w = (w + 7) & ~7
    return int(min(BLOCK, max(64, w)))


# ----------------------------------------------------------------------------------------------------------------
# the window: serial and parallel
# ----------------------------------------------------------------------------------------------------------------
# The two drivers below are the same loops; the parallel one runs the blocks with prange. They are two functions
# (not one compiled twice) because numba's disk cache keys an entry by function and signature, not by the
# ``parallel`` flag.
@njit(**_JIT)
def run_window_serial(s0, n_steps, opt, sc, st, r, pc, nref, alive, acc, counts, wptr, wind, wdat, ev_ptr,
                      ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev2, io, ev_step, ev_id, samples,
                      sample_steps, vm):
    """Run steps ``s0 .. n_steps - 1`` of a window (step ``s`` is absolute step ``opt[step0] + s``) on one thread.

    Returns with ``io[steps_done]`` short of ``n_steps`` only when the recorder buffers are full."""
    n = st.shape[1]
    bw = opt[_O_BLOCK]
    nb = (n + bw - 1) // bw
    spk = np.empty(n, dtype=np.int64)
    cnt = np.zeros(nb, dtype=np.int64)
    scr = np.empty((3, bw + 8))
    step0 = opt[_O_STEP0]
    stepwise = opt[_O_REC] != 0 or opt[_O_RECSPK] != 0 or opt[_O_SAMPLE] > 0
    nil = io[_IO_NEV] * 0  # a run-time zero: a literal 0 would make numba compile the callees once more
    if not stepwise:  # each block through the whole window: its state stays in cache
        for b in range(nb):
            lo = b * bw
            hi = min(n, lo + bw)
            _block_steps(lo, hi, nb == 1, s0, n_steps, opt, sc, st, r, pc, nref, alive, acc, counts, wptr, wind, wdat,
                         ev_ptr, ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev2[0], nil, nil, nil, scr, vm,
                         spk)
        io[_IO_DONE] = n_steps
        return
    for s in range(s0, n_steps):
        abs_step = step0 + s
        if not _room(abs_step, n, opt, io, ev_id, sample_steps):
            break
        prev = prev2[io[_IO_PREVROW]]
        n_prev = io[_IO_NPREV]
        mode_e, mode_i = _recurrent_modes(prev, n_prev, rexc)
        for b in range(nb):
            lo = b * bw
            hi = min(n, lo + bw)
            cnt[b] = _block_steps(lo, hi, nb == 1, s, s + 1, opt, sc, st, r, pc, nref, alive, acc, counts, wptr,
                                 wind, wdat, ev_ptr, ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev,
                                 n_prev, mode_e, mode_i, scr, vm, spk)
        _after_step(abs_step, n, nb, bw, opt, st, spk, cnt, prev2, io, ev_step, ev_id, samples, sample_steps)
        io[_IO_DONE] = s + 1


@njit(parallel=True, **_JIT)
def run_window_parallel(s0, n_steps, opt, sc, st, r, pc, nref, alive, acc, counts, wptr, wind, wdat, ev_ptr,
                        ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev2, io, ev_step, ev_id, samples,
                        sample_steps, vm):
    """``run_window_serial`` with the blocks spread over threads (``numba.set_num_threads``)."""
    n = st.shape[1]
    bw = opt[_O_BLOCK]
    nb = (n + bw - 1) // bw
    spk = np.empty(n, dtype=np.int64)
    cnt = np.zeros(nb, dtype=np.int64)
    step0 = opt[_O_STEP0]
    stepwise = opt[_O_REC] != 0 or opt[_O_RECSPK] != 0 or opt[_O_SAMPLE] > 0
    nil = io[_IO_NEV] * 0  # a run-time zero: a literal 0 would make numba compile the callees once more
    if not stepwise:
        for b in prange(nb):
            lo = b * bw
            hi = min(n, lo + bw)
            scr = np.empty((3, bw + 8))
            _block_steps(lo, hi, nb == 1, s0, n_steps, opt, sc, st, r, pc, nref, alive, acc, counts, wptr, wind, wdat,
                         ev_ptr, ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev2[0], nil, nil, nil, scr, vm,
                         spk)
        io[_IO_DONE] = n_steps
        return
    for s in range(s0, n_steps):
        abs_step = step0 + s
        if not _room(abs_step, n, opt, io, ev_id, sample_steps):
            break
        prev = prev2[io[_IO_PREVROW]]
        n_prev = io[_IO_NPREV]
        mode_e, mode_i = _recurrent_modes(prev, n_prev, rexc)
        for b in prange(nb):
            lo = b * bw
            hi = min(n, lo + bw)
            scr = np.empty((3, bw + 8))
            cnt[b] = _block_steps(lo, hi, nb == 1, s, s + 1, opt, sc, st, r, pc, nref, alive, acc, counts, wptr,
                                 wind, wdat, ev_ptr, ev_src, raw, rptr, rind, rdat, rexc, rsum, touched, prev,
                                 n_prev, mode_e, mode_i, scr, vm, spk)
        _after_step(abs_step, n, nb, bw, opt, st, spk, cnt, prev2, io, ev_step, ev_id, samples, sample_steps)
        io[_IO_DONE] = s + 1


# ----------------------------------------------------------------------------------------------------------------
# one step on plain arrays (tests, inspection)
# ----------------------------------------------------------------------------------------------------------------
def step_arrays(state, consts, xe: np.ndarray, xi: np.ndarray, isyn_acc=None) -> np.ndarray:
    """Advance ``state`` (a ``models.CondLifState`` or ``DpiState``) one step with the compiled step, given the
    per-neuron conductance (or current) jumps ``xe``/``xi``; return the indices that spiked. ``isyn_acc``
    (cond_lif) accumulates the true synaptic current as the engine's ``record_isyn`` does.

    The same call sequence as the engine's, on one window of one step without Poisson input: what the
    reference's ``cond_lif_step``/``dpi_step`` are to the numpy step loop. For tests and inspection."""
    from .models import CondLifConsts

    cond = isinstance(consts, CondLifConsts)
    n = xe.shape[0]
    st = np.stack([state.V, state.ge, state.gi, np.zeros(n)] if cond else
                  [state.Imem, state.Iampa, state.Igaba, state.Ipre]).astype(float)
    r = np.ascontiguousarray(state.r, dtype=np.int32).copy()
    pc = np.zeros((N_CONST_ROWS, n))
    ones = np.ones(n)
    sc = np.zeros(8)
    opt = np.zeros(len(OPT), dtype=np.int64)
    opt[_O_BLOCK] = BLOCK
    opt[_O_RECSPK] = 1
    if cond:
        c = consts
        for i, row in enumerate((c.de, c.di, c.gL, c.gLEL, c.neg_dt_over_C, c.Vth, c.Vreset, ones, ones)):
            pc[i] = row
        sc[:2] = (c.EE, c.EI)
        opt[_O_EE] = int(c.EE != 0.0)
        opt[_O_ISYN] = int(isyn_acc is not None)
    else:
        c = consts
        for i, row in enumerate((c.da, c.dg, c.Ileak, c.Igain, c.gain_over_tau, c.dt_over_tau_mem, c.Ispkthr, ones,
                                 ones, c.Imax if c.Imax is not None else np.full(n, np.inf), c.ahp)):
            pc[i] = row
        sc[2:5] = (c.I0, c.Idc, c.fb_exp)
        opt[_O_MODEL] = 1
        opt[_O_IDC] = int(bool(c.Idc))
        opt[_O_IMAX] = int(c.Imax is not None)
    alive = np.ones(n, dtype=bool) if c.alive is None else np.ascontiguousarray(c.alive, dtype=bool)
    acc = np.zeros((3, n))
    if isyn_acc is not None:
        acc[2] = isyn_acc
    counts = np.zeros(n, dtype=np.int64)
    no_ptr, no_src = np.zeros(2, dtype=np.int64), np.zeros(0, dtype=np.int64)
    w_ptr, w_ind, w_dat = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0)
    raw = np.concatenate([xe, xi]).astype(float)
    io = np.zeros(len(IO), dtype=np.int64)
    ev_step, ev_id = np.zeros(max(n, 1), dtype=np.int64), np.zeros(max(n, 1), dtype=np.int64)
    run_window_serial(0, 1, opt, sc, st, r, pc, np.ascontiguousarray(c.nref, dtype=np.int32), alive, acc, counts,
                      w_ptr, w_ind, w_dat, no_ptr, no_src, raw,
                      np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0), np.zeros(0, dtype=bool),
                      np.zeros((2, 0)), np.zeros((2, 0), dtype=np.uint8), np.zeros((2, 0), dtype=np.int64), io,
                      ev_step, ev_id, np.zeros((0, 3, 0)), np.zeros(0, dtype=np.int64), VECTOR_MATH.addresses)
    rows = (state.V, state.ge, state.gi) if cond else (state.Imem, state.Iampa, state.Igaba, state.Ipre)
    for dst, src in zip(rows, st):
        dst[:] = src
    state.r[:] = r
    if isyn_acc is not None:
        isyn_acc[:] = acc[2]
    return ev_id[:io[_IO_NEV]].copy()
