"""Throughput of the numpy emulator, what bounds its step, and the uncalibrated spread of every profile (issue 3.7).

``run()`` returns rows (dicts with a ``kind``):

- ``throughput``: neuron-steps per second of ``Engine.run`` (the whole window loop: Poisson input blocks, the
  sparse input product, the step function, the proxy accumulators) for N = 1024, 4096 and 16384 neurons with 100
  excitatory and 100 inhibitory inputs each (pools of 1000 sources at 10 Hz), for ``cond_lif`` (the bss2 profile)
  and ``dpi`` (the dynapse2 profile), best of 5 windows of 0.3 s model time after a 0.1 s warm-up, by wall clock
  and by CPU time;
- ``op``: the cost of each vector operation of ``cond_lif_step`` and of the engine's per-step work at N = 4096,
  timed in isolation, with the bytes it moves;
- ``memory``: the machine's memory bandwidth (a 256 MiB ``numpy.copyto``) against the traffic a step implies;
- ``spread``: each profile's uncalibrated spread at its nominal codes (seed 1, 10 s model time): rate CV across
  live neurons, mean rate, balance index median and 95th percentile, silent and dead counts.

``main()`` prints them as tables. docs/model.md ("Performance") discusses the figures.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Dict, List

import numpy as np

from calibrate.figures import window_summary
from hw_models.emulator import NumpyDevice
from hw_models.profile import list_profiles, load_profile

SIZES = (1024, 4096, 16384)
MODELS = (("cond_lif", "bss2"), ("dpi", "dynapse2"))
WINDOW_MS = 300.0  # 3 input blocks exactly (the warm-up is one), so every window does the same work
WARMUP_MS = 100.0
REPEATS = 5
SPREAD_MS = 10_000.0
SEED = 1


def _bench_profile(base: str, n: int):
    return load_profile(base).with_changes({
        "geometry.cores": 1, "geometry.neurons_per_core": n, "knobs.sharing": "chip",
        "input.n_src_e": 1000, "input.n_src_i": 1000, "input.K_e": 100, "input.K_i": 100,
        "input.rate_e_hz": 10.0, "input.rate_i_hz": 10.0,
    })


def throughput() -> List[Dict[str, Any]]:
    """Best of REPEATS windows, by wall clock and by this process's CPU time (on a shared machine the CPU-time
    figure is what the code costs; the wall-clock one is what a user waits)."""
    rows = []
    for model, base in MODELS:
        for n in SIZES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dev = NumpyDevice(_bench_profile(base, n), SEED)
            dev.run_true(WARMUP_MS)
            best, best_cpu, rate = float("inf"), float("inf"), 0.0
            for _ in range(REPEATS):
                t, c = time.perf_counter(), time.process_time()
                st = dev.run_true(WINDOW_MS)
                dt, dc = time.perf_counter() - t, time.process_time() - c
                best_cpu = min(best_cpu, dc)
                if dt < best:
                    best, rate = dt, float(st.rates_hz.mean())
            steps = dev.steps_for(WINDOW_MS)
            rows.append({"kind": "throughput", "model": model, "profile": base, "n": n,
                         "neuron_steps_per_s": n * steps / best, "step_us": best / steps * 1e6,
                         "neuron_steps_per_cpu_s": n * steps / max(best_cpu, 1e-9), "rate_hz": rate})
    return rows


def _timeit(fn: Callable[[], Any], reps: int = 2000) -> float:
    """Best-of-5 mean seconds per call."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def op_profile(n: int = 4096) -> List[Dict[str, Any]]:
    """Each vector operation of one cond_lif step (models.cond_lif_step, in its order) plus the engine's per-step
    work, timed alone on arrays of ``n`` float64 (int32 for the refractory counter, bool for masks)."""
    rng = np.random.default_rng(0)
    f = lambda: rng.random(n)  # noqa: E731
    ge, gi, xe, xi, de, di, gL, gLEL, V, g, t, u, Vth, acc = (f() for _ in range(14))
    nC = -0.1 / (200.0 * (1.0 + f()))  # -dt/C: t stays in the exp's normal range
    r = np.zeros(n, dtype=np.int32)
    held = r > 0
    spk = np.zeros(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    row = rng.random((250, n))
    F, B, I = 8, 1, 4  # bytes per float64, bool, int32 element
    w = np.empty(n)  # every operation writes a scratch array, so repeating it cannot drift to 0 (denormals) or inf
    ops = [  # (operation, callable, bytes moved per element: reads + writes)
        ("ge *= de", lambda: np.multiply(ge, de, out=w), 3 * F),
        ("ge += xe", lambda: np.add(ge, xe, out=w), 3 * F),
        ("gi *= di", lambda: np.multiply(gi, di, out=w), 3 * F),
        ("gi += xi", lambda: np.add(gi, xi, out=w), 3 * F),
        ("g = gL + ge", lambda: np.add(gL, ge, out=g), 3 * F),
        ("g += gi", lambda: np.add(g, gi, out=w), 3 * F),
        ("u = gi*EI", lambda: np.multiply(gi, -80.0, out=u), 2 * F),
        ("u += gL*EL", lambda: np.add(u, gLEL, out=w), 3 * F),
        ("u /= g  (V_inf)", lambda: np.divide(u, g, out=w), 3 * F),
        ("t = g*(-dt/C)", lambda: np.multiply(g, nC, out=t), 3 * F),
        ("t = exp(t)", lambda: np.exp(t, out=w), 2 * F),
        ("V -= u", lambda: np.subtract(V, u, out=w), 3 * F),
        ("V *= t", lambda: np.multiply(V, t, out=w), 3 * F),
        ("V += u", lambda: np.add(V, u, out=w), 3 * F),
        ("held = r > 0", lambda: np.greater(r, 0, out=held), I + B),
        ("held.any()", lambda: held.any(), B),
        ("spk = V >= Vth", lambda: np.greater_equal(V, Vth, out=spk), 2 * F + B),
        ("spk &= alive", lambda: np.logical_and(spk, alive, out=spk), 3 * B),
        ("flatnonzero(spk)", lambda: np.flatnonzero(spk), B),
        ("engine: acc_e += ge", lambda: np.add(acc, ge, out=w), 3 * F),
        ("engine: acc_i += gi", lambda: np.add(acc, gi, out=w), 3 * F),
        ("engine: input row *= jump (1/step)", lambda: np.multiply(row[0], gL, out=w), 3 * F),
    ]
    rows = []
    for name, fn, bpe in ops:
        s = _timeit(fn)
        rows.append({"kind": "op", "n": n, "op": name, "us": s * 1e6, "bytes": bpe * n})
    empty = np.empty(0)
    rows.append({"kind": "op", "n": n, "op": "(numpy call overhead: add on 0 elements)",
                 "us": _timeit(lambda: np.add(empty, empty, out=empty)) * 1e6, "bytes": 0})
    return rows


def memory_bandwidth(mib: int = 256) -> float:
    """Bytes per second of a large ``numpy.copyto`` (read + write counted), best of 5."""
    a = np.ones(mib * (1 << 20) // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best


def spread(duration_ms: float = SPREAD_MS) -> List[Dict[str, Any]]:
    rows = []
    for name in sorted(list_profiles()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dev = NumpyDevice(name, SEED)
        t = time.perf_counter()
        st = dev.run_true(duration_ms)
        wall = time.perf_counter() - t
        s = window_summary(st.rates_hz, st.iexc, st.ibal, dev.chip.dead)
        rows.append({"kind": "spread", "profile": name, "model": dev.profile.model, "n": dev.chip.n, "seed": SEED,
                     "duration_s": duration_ms / 1e3, "wall_s": wall, **s})
    return rows


def run() -> List[Dict[str, Any]]:
    rows = throughput()
    ops = op_profile(4096)
    rows += ops
    bw = memory_bandwidth()
    step_bytes = sum(r["bytes"] for r in ops if not r["op"].startswith("("))
    step_us = next(r["step_us"] for r in rows if r["kind"] == "throughput" and r["model"] == "cond_lif"
                   and r["n"] == 4096)
    rows.append({"kind": "memory", "copy_bytes_per_s": bw, "n": 4096, "step_bytes": step_bytes, "step_us": step_us,
                 "implied_bytes_per_s": step_bytes / (step_us * 1e-6),
                 "ops_us_sum": sum(r["us"] for r in ops if not r["op"].startswith("("))})
    rows += spread()
    return rows


def main() -> None:
    rows = run()
    print(f"numpy emulator throughput (100 E + 100 I inputs per neuron, best of {REPEATS} x {WINDOW_MS / 1e3:g} s "
          f"model time)")
    print(f"{'model':9s} {'profile':9s} {'N':>6s} {'neuron-steps/s':>15s} {'us/step':>9s} {'per CPU-s':>10s} "
          f"{'rate Hz':>8s}")
    for r in rows:
        if r["kind"] == "throughput":
            print(f"{r['model']:9s} {r['profile']:9s} {r['n']:6d} {r['neuron_steps_per_s']:15.3g} "
                  f"{r['step_us']:9.1f} {r['neuron_steps_per_cpu_s']:10.3g} {r['rate_hz']:8.1f}")
    print()
    print("cond_lif step, one operation at a time (N = 4096)")
    print(f"{'operation':40s} {'us':>7s} {'KiB moved':>10s} {'GB/s':>7s}")
    for r in rows:
        if r["kind"] == "op":
            gbs = r["bytes"] / (r["us"] * 1e-6) / 1e9 if r["bytes"] else 0.0
            print(f"{r['op']:40s} {r['us']:7.2f} {r['bytes'] / 1024:10.0f} {gbs:7.1f}")
    m = next(r for r in rows if r["kind"] == "memory")
    print(f"sum of the operations: {m['ops_us_sum']:.1f} us; whole step in Engine.run: {m['step_us']:.1f} us")
    print(f"memory: numpy copy {m['copy_bytes_per_s'] / 1e9:.1f} GB/s; a 4096-neuron step moves "
          f"{m['step_bytes'] / 1024:.0f} KiB, i.e. {m['implied_bytes_per_s'] / 1e9:.1f} GB/s at the measured step "
          f"time ({100 * m['implied_bytes_per_s'] / m['copy_bytes_per_s']:.0f} % of the copy bandwidth)")
    print()
    print(f"uncalibrated spread at nominal codes (seed {SEED}, {SPREAD_MS / 1e3:g} s model time)")
    print(f"{'profile':9s} {'model':9s} {'N':>5s} {'rate CV':>8s} {'mean Hz':>8s} {'BI med':>7s} {'BI p95':>7s} "
          f"{'silent':>6s} {'dead':>5s} {'wall s':>7s}")
    for r in rows:
        if r["kind"] == "spread":
            print(f"{r['profile']:9s} {r['model']:9s} {r['n']:5d} {r['rate_cv']:8.3f} {r['rate_mean_hz']:8.2f} "
                  f"{r['balance_index_median']:7.3f} {r['balance_index_p95']:7.3f} {r['silent']:6d} {r['dead']:5d} "
                  f"{r['wall_s']:7.1f}")


if __name__ == "__main__":
    main()
