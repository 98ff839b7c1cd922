"""Throughput of the emulator: the compiled engine beside the numpy step loop it replaced, measured in one run.

``python -m benchmarks emulator`` prints, in this order:

- ``speedup``: neuron-steps per CPU-second of the reference (``hw_models.reference``, today's numpy step loop) and
  of the compiled engine (``hw_models.kernels``, one thread) for the issue's chips: devboard (N = 32), bss2
  (N = 512), dynapse2 (N = 1024, dpi), and the N = 1024/4096/16384 networks with 100 + 100 inputs from pools of
  1000 sources at 10 Hz (bss2's cond_lif neuron, dynapse2's dpi neuron); the ratio and the issue's target; the
  same with two threads (per CPU-second and per wall-second) for the large networks;
- ``million``: a synthetic cond_lif chip of 1,000,000 neurons (benchmarks/million.yaml) run for 1 s of model time
  with two threads in a subprocess: neuron-steps per wall- and CPU-second, and the subprocess's peak memory;
- ``compile``: the cost of the first call after an install (an empty numba cache, in a subprocess) and with the
  cache warm (import and first call in a fresh subprocess), for the serial and the parallel kernel;
- ``bound``: what bounds the compiled step: per-neuron-step time against N (cache-resident to DRAM-sized), the
  cost of numpy's exp routine per element, the bytes a step moves through the cache, and the machine's memory
  bandwidth (a large copy);
- ``spread``: each profile's uncalibrated spread at its nominal codes (seed 1, 10 s model time).

Options: ``--reference`` runs only the reference loop's throughput, ``--compiled`` only the compiled engine's
(each on the ``speedup`` chips); ``--quick`` skips the million-neuron chip and the spread. docs/model.md
("Performance") discusses the figures. On a shared machine CPU time is what the code costs; wall time is shown
where threads make it the figure of interest.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from calibrate.figures import window_summary
from hw_models.emulator import NumpyDevice
from hw_models.profile import list_profiles, load_profile

ROOT = Path(__file__).resolve().parents[1]
MILLION = Path(__file__).resolve().parent / "million.yaml"
SEED = 1
SPREAD_MS = 10_000.0
REPEATS = 3
TARGET_CPU_S = 0.25  # each measured window costs about this much CPU time


def _bench_profile(base: str, n: int):
    """The issue's network: N neurons of ``base``'s model, 100 + 100 inputs from pools of 1000 at 10 Hz."""
    return load_profile(base).with_changes({
        "geometry.cores": 1, "geometry.neurons_per_core": n, "knobs.sharing": "chip",
        "input.n_src_e": 1000, "input.n_src_i": 1000, "input.K_e": 100, "input.K_i": 100,
        "input.rate_e_hz": 10.0, "input.rate_i_hz": 10.0,
    })


# (label, profile, neurons, target speed-up of the compiled engine over the reference, per CPU-second)
CASES = [
    ("devboard", "devboard", 32, 30.0),
    ("bss2", "bss2", 512, 5.0),
    ("dynapse2 (dpi)", "dynapse2", 1024, 3.0),
    ("cond_lif net", ("bss2", 1024), 1024, None),
    ("cond_lif net", ("bss2", 4096), 4096, 2.0),
    ("cond_lif net", ("bss2", 16384), 16384, None),
    ("dpi net", ("dynapse2", 1024), 1024, None),
    ("dpi net", ("dynapse2", 4096), 4096, None),
    ("dpi net", ("dynapse2", 16384), 16384, None),
]


def _profile(spec):
    return _bench_profile(*spec) if isinstance(spec, tuple) else spec


def _device(spec, **kw) -> NumpyDevice:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NumpyDevice(_profile(spec), SEED, **kw)


def _rate(dev: NumpyDevice, *, wall: bool = False) -> Dict[str, float]:
    """Best of REPEATS windows sized to about TARGET_CPU_S each: neuron-steps per CPU-second and per second."""
    dev.run_true(10.0)  # warm: the kernel loaded, the first input block drawn
    t, c = time.perf_counter(), time.process_time()
    probe = dev.run_true(20.0)
    per_step = max(time.process_time() - c, time.perf_counter() - t if wall else 0.0, 1e-7) / probe.n_steps
    steps = int(min(max(TARGET_CPU_S / per_step, 1000), 2_000_000))
    window_ms = steps * dev.profile.dt_ms
    best_cpu = best_wall = float("inf")
    for _ in range(REPEATS):
        t, c = time.perf_counter(), time.process_time()
        st = dev.run_true(window_ms)
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    ns = dev.chip.n * st.n_steps
    return {"per_cpu_s": ns / max(best_cpu, 1e-9), "per_wall_s": ns / best_wall, "window_ms": window_ms,
            "rate_hz": float(st.rates_hz.mean())}


def speedup(which: str = "both") -> List[Dict[str, Any]]:
    rows = []
    for label, spec, n, target in CASES:
        row: Dict[str, Any] = {"kind": "speedup", "label": label, "n": n, "target": target}
        if which in ("both", "reference"):
            row["reference"] = _rate(_device(spec, reference=True))["per_cpu_s"]
        if which in ("both", "compiled"):
            row["compiled"] = _rate(_device(spec))["per_cpu_s"]
            if n >= 4096:
                r2 = _rate(_device(spec, threads=2), wall=True)
                row["threads2_cpu"], row["threads2_wall"] = r2["per_cpu_s"], r2["per_wall_s"]
        rows.append(row)
    return rows


# -- the million-neuron chip, in a subprocess ----------------------------------------------------------------------
_MILLION_CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from hw_models.emulator import NumpyDevice
t = time.perf_counter()
dev = NumpyDevice(sys.argv[1], 1, threads=int(sys.argv[2]))
draw_s = time.perf_counter() - t
dev.run_true(1.0)  # the kernel loaded and the first input block drawn, before the clock starts
t, c = time.perf_counter(), time.process_time()
st = dev.run_true(1000.0)
wall, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"n": dev.chip.n, "steps": st.n_steps, "wall_s": wall, "cpu_s": cpu, "draw_s": draw_s,
                  "rate_hz": float(st.rates_hz.mean()), "threads": dev.engine.threads}))
"""


def million(threads: int = 2) -> Dict[str, Any]:
    """Draw the 1M-neuron chip and run 1 s of model time in a fresh subprocess; its peak RSS from getrusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run([sys.executable, "-c", _MILLION_CHILD, str(MILLION), str(threads)], capture_output=True,
                       text=True, cwd=ROOT, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"million-neuron run failed: {r.stderr.strip().splitlines()[-1:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = json.loads(r.stdout)
    out.update(kind="million", peak_rss_bytes=peak_kib * 1024, peak_is_this_child=peak_kib > before,
               per_wall_s=out["n"] * out["steps"] / out["wall_s"], per_cpu_s=out["n"] * out["steps"] / out["cpu_s"])
    return out


# -- compilation cost ------------------------------------------------------------------------------------------
_FIRST_CALL = """
import json, sys, time
t0 = time.perf_counter()
from hw_models.emulator import NumpyDevice
dev = NumpyDevice(sys.argv[1], 1, threads=int(sys.argv[2]))
t1 = time.perf_counter()
dev.run_true(10.0)
t2 = time.perf_counter()
dev.run_true(10.0)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2}))
"""


def _first_call(profile: str, threads: int, cache_dir: Optional[str]) -> Dict[str, float]:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _FIRST_CALL, profile, str(threads)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    out = json.loads(r.stdout)
    out["process_s"] = time.perf_counter() - t
    return out


def compile_cost() -> List[Dict[str, Any]]:
    """Cold: NUMBA_CACHE_DIR an empty directory (what the first call after an install pays). Warm: the same
    directory again (now filled), in a fresh process: import plus the first call load the cached machine code."""
    rows = []
    for threads, profile in ((1, "devboard"), (2, "bss2")):
        with tempfile.TemporaryDirectory(prefix="eical-numba-cache-") as d:
            cold = _first_call(profile, threads, d)
            warm = _first_call(profile, threads, d)
        rows.append({"kind": "compile", "threads": threads, "kernel": "serial" if threads == 1 else "parallel",
                     "cold": cold, "warm": warm})
    return rows


# -- what bounds the step ----------------------------------------------------------------------------------------
def memory_bandwidth(mib: float = 256, repeats: int = 5) -> float:
    """Bytes per second of a ``numpy.copyto`` of ``mib`` MiB (read + write counted), best of ``repeats``."""
    a = np.ones(int(mib * (1 << 20)) // 8)
    b = np.empty_like(a)
    best = float("inf")
    reps = max(1, int(64 / mib))
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            np.copyto(b, a)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * a.nbytes / best


# Bytes one cond_lif neuron-step moves through the cache in the compiled step's passes (kernels._block_steps):
# decay+input of ge and gi (read g, d, raw, jump; write g: 5 x 8 each), g (4 x 8), V_inf (4 x 8), exp argument
# (3 x 8), exp in place (2 x 8), membrane and refractory hold (V, u, t, Vreset read, V written, r read and written:
# 5 x 8 + 2 x 4), spike test (V, Vth: 2 x 8, alive: 1), two accumulators (3 x 8 each).
COND_LIF_STEP_BYTES = 2 * 40 + 32 + 32 + 24 + 16 + 48 + 17 + 2 * 24


class _NoRecorder:
    """Takes the spikes and ignores them: with a recorder attached the kernel synchronises its blocks every step
    (the mode recurrent chips run in), so the whole state streams through memory once per step."""

    sample_every_steps = 0

    def on_spike_block(self, steps, neurons):
        pass


def _exp_cost() -> float:
    """ns per element of numpy's exp routine as the compiled step calls it (through the thunk, 1024 at a time)."""
    from numba import njit

    from hw_models import vecmath

    @njit(cache=True)
    def loop(t, reps, vm):
        for _ in range(reps):
            vecmath.vmap(vm[0], vm[1], t, t.shape[0])
            for k in range(t.shape[0]):
                t[k] = -0.01 - t[k] * 1e-3
        return t[0]

    t = -np.linspace(0.001, 0.06, 1024)
    vm = vecmath.VECTOR_MATH.addresses
    loop(t, 10, vm)
    best = float("inf")
    for _ in range(5):
        c = time.process_time()
        loop(t, 5000, vm)
        best = min(best, (time.process_time() - c) / 5000)
    return best / t.size * 1e9


def bound() -> List[Dict[str, Any]]:
    from hw_models import kernels

    rows = []
    for n in (8, 256, 4096, 65536, 262144):
        dev = _device(("bss2", n))
        r = _rate(dev)
        rows.append({"kind": "bound_n", "n": n, "ns_per_neuron_step": 1e9 / r["per_cpu_s"], "mode": "window"})
    for n in (4096, 262144):
        r = _rate(_device(("bss2", n), recorder=_NoRecorder()))
        rows.append({"kind": "bound_n", "n": n, "ns_per_neuron_step": 1e9 / r["per_cpu_s"], "mode": "stepwise"})
    rows.append({"kind": "bound_exp", "ns_per_element": _exp_cost(), "routine": kernels.VECTOR_MATH.exp.name})
    rows.append({"kind": "bound_mem", "dram_copy_bytes_per_s": memory_bandwidth(256),
                 "l2_copy_bytes_per_s": memory_bandwidth(0.25, repeats=20), "step_bytes": COND_LIF_STEP_BYTES})
    return rows


def spread(duration_ms: float = SPREAD_MS) -> List[Dict[str, Any]]:
    rows = []
    for name in sorted(list_profiles()):
        dev = _device(name)
        t = time.perf_counter()
        st = dev.run_true(duration_ms)
        wall = time.perf_counter() - t
        s = window_summary(st.rates_hz, st.iexc, st.ibal, dev.chip.dead)
        rows.append({"kind": "spread", "profile": name, "model": dev.profile.model, "n": dev.chip.n, "seed": SEED,
                     "duration_s": duration_ms / 1e3, "wall_s": wall, **s})
    return rows


def run(which: str = "both", quick: bool = False) -> List[Dict[str, Any]]:
    rows = speedup(which)
    if which != "both":
        return rows
    if not quick:
        rows.append(million())
    rows += compile_cost()
    rows += bound()
    if not quick:
        rows += spread()
    return rows


def _g(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.3g}"


def report(rows: List[Dict[str, Any]]) -> None:
    sp = [r for r in rows if r["kind"] == "speedup"]
    if sp:
        print("neuron-steps per CPU-second: the numpy step loop (reference) and the compiled engine, same chips, "
              "same run")
        print(f"{'chip':16s} {'N':>6s} {'reference':>10s} {'compiled':>10s} {'speed-up':>9s} {'target':>7s} "
              f"{'':6s} {'2 thr/CPU-s':>11s} {'2 thr/wall-s':>12s}")
        for r in sp:
            ratio = r["compiled"] / r["reference"] if "compiled" in r and "reference" in r else None
            ok = "" if ratio is None or r["target"] is None else ("ok" if ratio >= r["target"] else "MISSED")
            tgt = f">={r['target']:g}x" if r["target"] else ""
            print(f"{r['label']:16s} {r['n']:6d} {_g(r.get('reference')):>10s} {_g(r.get('compiled')):>10s} "
                  f"{(f'{ratio:.1f}x' if ratio else ''):>9s} {tgt:>7s} {ok:6s} {_g(r.get('threads2_cpu')):>11s} "
                  f"{_g(r.get('threads2_wall')):>12s}")
        print()
    for r in rows:
        if r["kind"] == "million":
            print(f"million-neuron chip ({MILLION.name}): N = {r['n']}, {r['steps']} steps (1 s model time), "
                  f"{r['threads']} threads")
            print(f"  {r['per_wall_s']:.3g} neuron-steps per wall-second ({r['wall_s']:.1f} s), "
                  f"{r['per_cpu_s']:.3g} per CPU-second; drawing the chip {r['draw_s']:.1f} s; mean rate "
                  f"{r['rate_hz']:.1f} Hz")
            gib = r["peak_rss_bytes"] / 2 ** 30
            print(f"  peak memory of the subprocess: {gib:.2f} GiB ({'fits' if gib < 4 else 'DOES NOT FIT'} in 4 GiB)"
                  + ("" if r["peak_is_this_child"] else " (an upper bound: an earlier child peaked higher)"))
            print()
    comp = [r for r in rows if r["kind"] == "compile"]
    if comp:
        print("first call: compilation with an empty numba cache (cold) and loading the cached code (warm), "
              "each in a fresh process")
        print(f"{'kernel':9s} {'cold import s':>13s} {'cold 1st call s':>15s} {'warm import s':>13s} "
              f"{'warm 1st call s':>15s} {'warm process s':>14s}")
        for r in comp:
            c, w = r["cold"], r["warm"]
            print(f"{r['kernel']:9s} {c['import_s']:13.2f} {c['first_call_s']:15.2f} {w['import_s']:13.2f} "
                  f"{w['first_call_s']:15.2f} {w['process_s']:14.2f}")
        print()
    bn = [r for r in rows if r["kind"] == "bound_n"]
    if bn:
        print("what bounds the compiled cond_lif step (one thread; 'window': each block of neurons runs the whole "
              "window in cache, 'stepwise': all blocks every step, as recurrent chips and recordings run)")
        for r in bn:
            print(f"  N = {r['n']:6d} {r['mode']:8s}: {r['ns_per_neuron_step']:.2f} ns per neuron-step "
                  f"({r['ns_per_neuron_step'] * r['n']:.0f} ns per step)")
        e = next(r for r in rows if r["kind"] == "bound_exp")
        m = next(r for r in rows if r["kind"] == "bound_mem")
        mid = next(r for r in bn if r["n"] == 4096 and r["mode"] == "window")["ns_per_neuron_step"]
        print(f"  exp ({e['routine']}): {e['ns_per_element']:.2f} ns per element")
        print(f"  a step moves {m['step_bytes']} bytes per neuron through the cache: {m['step_bytes'] / mid:.1f} GB/s "
              f"at N = 4096; copy bandwidth: L2-resident {m['l2_copy_bytes_per_s'] / 1e9:.1f} GB/s, "
              f"DRAM {m['dram_copy_bytes_per_s'] / 1e9:.1f} GB/s (so from DRAM a step could not beat "
              f"{m['step_bytes'] / m['dram_copy_bytes_per_s'] * 1e9:.1f} ns per neuron)")
        print()
    spr = [r for r in rows if r["kind"] == "spread"]
    if spr:
        print(f"uncalibrated spread at nominal codes (seed {SEED}, {SPREAD_MS / 1e3:g} s model time)")
        print(f"{'profile':13s} {'model':9s} {'N':>5s} {'rate CV':>8s} {'mean Hz':>8s} {'BI med':>7s} {'BI p95':>7s} "
              f"{'silent':>6s} {'dead':>5s} {'wall s':>7s}")
        for r in spr:
            print(f"{r['profile']:13s} {r['model']:9s} {r['n']:5d} {r['rate_cv']:8.3f} {r['rate_mean_hz']:8.2f} "
                  f"{r['balance_index_median']:7.3f} {r['balance_index_p95']:7.3f} {r['silent']:6d} {r['dead']:5d} "
                  f"{r['wall_s']:7.1f}")


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(argv or [])
    unknown = [a for a in argv if a not in ("--reference", "--compiled", "--quick")]
    if unknown:
        raise SystemExit(f"bench emulator: unknown option(s) {' '.join(unknown)}; known: --reference --compiled "
                         f"--quick")
    which = "reference" if "--reference" in argv else "compiled" if "--compiled" in argv else "both"
    report(run(which, quick="--quick" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
