"""Throughput of the Lava backend beside the numpy emulator (issue 5).

The issue's network: a bss2 cond_lif chip of N neurons (N = 1024, 4096), each with 100 excitatory and 100
inhibitory inputs drawn from pools of 1000 Poisson sources at 10 Hz, dt = 0.1 ms, nominal codes. Both backends
run the same chip (same seed) for the same windows through ``run_true`` (the engine alone, no ADC model), after
one warm-up window; the Lava figures exclude compiling and starting the process, which are reported apart.

``run()`` returns one row per N; ``main()`` prints them as a table. Needs Python 3.10 with lava-nc (``make test``
builds ``.venv310``: ``.venv310/bin/python -m benchmarks.bench_lava``); elsewhere ``run()`` returns no rows and
``main()`` says why in one line.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

SIZES = (1024, 4096)
WINDOW_MS = 100.0  # 1000 steps per window (one RunSteps each on Lava)
WINDOWS = 5
SEED = 1


def unavailable() -> Optional[str]:
    """None when the Lava backend can run here, else the one-line reason."""
    from calibrate.backends import lava_available

    return lava_available()


def _steps_per_s(dev, n_windows: int, window_ms: float) -> float:
    dev.run_true(window_ms)  # warm-up: first input blocks, first Lava run
    t0 = time.perf_counter()
    for _ in range(n_windows):
        dev.run_true(window_ms)
    return n_windows * dev.steps_for(window_ms) / (time.perf_counter() - t0)


def _window_round_trip_ms(dev, n_windows: int = 20) -> float:
    """Wall time of one 1-step window (set codes, run, read back): the per-window fixed cost."""
    codes = {k: v.copy() for k, v in dev.codes.items()}
    dev.measure(dev.profile.dt_ms)
    t0 = time.perf_counter()
    for _ in range(n_windows):
        dev.set_codes(codes)
        dev.measure(dev.profile.dt_ms)
    return (time.perf_counter() - t0) / n_windows * 1e3


def run(sizes: Sequence[int] = SIZES, windows: int = WINDOWS, window_ms: float = WINDOW_MS) -> List[Dict[str, Any]]:
    """One row per N: steps/s and neuron-steps/s of both backends, their ratio, and Lava's fixed costs."""
    if unavailable():
        return []
    from hw_models.emulator import NumpyDevice
    from hw_models.lava import LavaDevice
    from hw_models.profile import load_profile

    rows: List[Dict[str, Any]] = []
    for n in sizes:
        profile = load_profile("bss2").with_changes({"geometry.neurons_per_core": int(n)})
        with NumpyDevice(profile, SEED) as dev:
            np_sps = _steps_per_s(dev, windows, window_ms)
            np_rt = _window_round_trip_ms(dev)
        t0 = time.perf_counter()
        dev = LavaDevice(profile, SEED)
        start_s = time.perf_counter() - t0
        try:
            lava_sps = _steps_per_s(dev, windows, window_ms)
            lava_rt = _window_round_trip_ms(dev)
        finally:
            t0 = time.perf_counter()
            dev.close()
            close_s = time.perf_counter() - t0
        rows.append({"N": int(n), "numpy_steps_per_s": np_sps, "lava_steps_per_s": lava_sps,
                     "numpy_neuron_steps_per_s": np_sps * n, "lava_neuron_steps_per_s": lava_sps * n,
                     "lava_over_numpy": lava_sps / np_sps, "lava_us_per_step": 1e6 / lava_sps,
                     "numpy_us_per_step": 1e6 / np_sps, "numpy_window_ms": np_rt, "lava_window_ms": lava_rt,
                     "lava_start_s": start_s, "lava_close_s": close_s})
    return rows


def main() -> None:
    """Print the rows of :func:`run` as a table."""
    why = unavailable()
    if why:
        print(f"bench_lava: skipped: {why}")
        return
    rows = run()
    print(f"Lava backend vs numpy: bss2 cond_lif, 100+100 inputs from pools of 1000 at 10 Hz, dt 0.1 ms, "
          f"{WINDOWS} windows of {WINDOW_MS:g} ms after a warm-up")
    print(f"{'N':>5s} {'numpy steps/s':>13s} {'lava steps/s':>12s} {'lava/numpy':>10s} {'numpy n-steps/s':>15s} "
          f"{'lava n-steps/s':>14s} {'us/step np|lava':>16s} {'1-step window ms np|lava':>24s} "
          f"{'lava start s':>12s} {'close s':>7s}")
    for r in rows:
        print(f"{r['N']:5d} {r['numpy_steps_per_s']:13.0f} {r['lava_steps_per_s']:12.0f} {r['lava_over_numpy']:10.3f} "
              f"{r['numpy_neuron_steps_per_s']:15.3g} {r['lava_neuron_steps_per_s']:14.3g} "
              f"{r['numpy_us_per_step']:7.0f} |{r['lava_us_per_step']:7.0f} "
              f"{r['numpy_window_ms']:11.2f} |{r['lava_window_ms']:11.2f} {r['lava_start_s']:12.2f} "
              f"{r['lava_close_s']:7.3f}")


if __name__ == "__main__":
    main()
