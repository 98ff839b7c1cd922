"""numpy's own ``exp`` and ``pow``, for compiled code: the routines the compiled engine's step calls.

numpy's ``exp`` and ``power`` are not the C library's on every machine: numpy links Intel's SVML for AVX-512 CPUs
and uses it for contiguous float64 arrays, which differs from glibc in the last bit for 5 to 45 % of arguments,
depending on the numpy version (measured: docs/model.md). A compiled ``math.exp`` would call glibc. To keep the
reference's bits, the step calls the very routine numpy calls: at import, ``_VectorMath`` tries the candidates
(numpy's own exported SVML routines ``__svml_exp8_ha`` and ``__svml_exp8``, then the C library's ``exp``) on a probe
of arguments and keeps the one whose results equal ``numpy.exp`` on every probe (likewise for ``pow``). The compiled
step reaches it through a tiny LLVM thunk (a loop over 8-lane blocks, built here with llvmlite at import) whose
address it gets as an argument, so nothing machine- or process-specific is baked into the cached machine code.
``VECTOR_MATH`` says which routines were chosen and whether they match numpy.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = ["VECTOR_MATH", "vmap", "vmap_pow"]


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
    raise OSError("hw_models.vecmath: cannot find the C math library (exp, pow)")


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
def vmap(typingctx, thunk, fn, buf, n):
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
def vmap_pow(typingctx, thunk, fn, buf, y, n):
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
