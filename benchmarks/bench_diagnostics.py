"""Cost of recording and diagnosing a 4096-neuron chip over 100 s of model time (issue 7).

``run()`` returns one row per measured stage; ``main()`` prints them as a table. The recording is synthetic
but shaped like a chip's: 4096 neurons (80 % excitatory), dt = 0.1 ms, about 10 Hz per neuron with lognormal
spread, a shared slow rate fluctuation and a weak 40 Hz rhythm, population series sampled every 1 ms, 64 trace
neurons, about 4.1 M spikes. The recorder rows feed 10 s of the same activity through :class:`Recorder` call by
call, as the emulator's step loop does, and extrapolate per-call costs to 100 s.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from calibrate.diagnostics import (
    branching_ratio_mr,
    diagnose,
    ei_cofluctuation,
    spike_count_fano,
    isi_cv,
    isi_cv2,
    population_counts,
    population_spectrum,
    sort_by_neuron,
)
from hw_models.recorder import Recorder
from hw_models.recording import NEURON_MEAN_KEYS, POPS, QUANTITIES, Recording

N_NEURONS = 4096
DURATION_MS = 100_000.0
DT_MS = 0.1
RATE_HZ = 10.0
SAMPLE_EVERY = 10
SEED = 7


def _rate_modulation(n_bins: int, bin_ms: float, rng: np.random.Generator) -> np.ndarray:
    """1 + a shared Ornstein-Uhlenbeck fluctuation (tau 50 ms, sd 0.15) + a 40 Hz rhythm of depth 0.1."""
    a = np.exp(-bin_ms / 50.0)
    z = rng.standard_normal(n_bins) * 0.15 * np.sqrt(1 - a * a)
    x = np.empty(n_bins)
    acc = 0.0
    for j in range(0, n_bins, 4096):  # blockwise recursion keeps the Python loop short
        seg = z[j : j + 4096]
        out = np.empty_like(seg)
        for q, v in enumerate(seg):
            acc = a * acc + v
            out[q] = acc
        x[j : j + seg.size] = out
    t = np.arange(n_bins) * bin_ms * 1e-3
    return np.clip(1.0 + x + 0.1 * np.sin(2 * np.pi * 40.0 * t), 0.0, None)


def synthetic_spikes(
    n_neurons: int = N_NEURONS, duration_ms: float = DURATION_MS, dt_ms: float = DT_MS, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spike steps and ids (sorted by step) of a modulated Poisson population, and the per-1-ms modulation."""
    rng = np.random.default_rng(seed)
    rates = RATE_HZ * np.exp(0.5 * rng.standard_normal(n_neurons) - 0.125)  # lognormal, mean RATE_HZ
    n_bins = int(duration_ms)  # 1 ms bins
    mod = _rate_modulation(n_bins, 1.0, rng)
    lam = rates.sum() * 1e-3 * mod
    per_bin = rng.poisson(lam)
    total = int(per_bin.sum())
    ids = rng.choice(n_neurons, size=total, p=rates / rates.sum()).astype(np.int32)
    steps_per_bin = int(round(1.0 / dt_ms))
    steps = np.repeat(np.arange(n_bins, dtype=np.int64) * steps_per_bin, per_bin)
    steps += rng.integers(0, steps_per_bin, size=total)
    order = np.argsort(steps, kind="stable")
    return steps[order], ids[order], mod


def synthetic_recording(seed: int = SEED) -> Recording:
    """The 4096-neuron, 100 s recording described in the module docstring, built directly (no Recorder)."""
    rng = np.random.default_rng(seed + 1)
    steps, ids, mod = synthetic_spikes(seed=seed)
    n, n_steps = N_NEURONS, int(round(DURATION_MS / DT_MS))
    is_exc = np.arange(n) < int(0.8 * n)
    ns = n_steps // SAMPLE_EVERY
    m = mod[: ns] if mod.size >= ns else np.resize(mod, ns)
    vbal, ee, ei = -55.0, 0.0, -80.0
    ge = 8.0 * m
    gi = ge * (ee - vbal) / (vbal - ei) * (1.0 + 0.02 * rng.standard_normal(ns))
    pop = np.empty((ns, len(POPS), len(QUANTITIES)), np.float32)
    for p in range(len(POPS)):
        pop[:, p, 0] = ge
        pop[:, p, 1] = gi
        pop[:, p, 2] = -58.0 + 1.5 * (m - 1.0)
        pop[:, p, 3] = ge * (ee - vbal)
        pop[:, p, 4] = gi * (ei - vbal)
    ge_n = 8.0 * np.exp(0.2 * rng.standard_normal(n))
    gi_n = ge_n * (ee - vbal) / (vbal - ei) * np.exp(0.05 * rng.standard_normal(n))
    means = {k: np.zeros(n) for k in NEURON_MEAN_KEYS}
    means.update(ge=ge_n, gi=gi_n, v=np.full(n, -58.0), iexc=ge_n * (ee - vbal), iinh=gi_n * (ei - vbal))
    trace_neurons = np.linspace(0, n - 1, 64).round().astype(np.int64)
    traces = (-58.0 + 3.0 * rng.standard_normal((ns, 3, 64))).astype(np.float32)
    return Recording(
        n_neurons=n, dt_ms=DT_MS, t_start_step=0, n_steps=n_steps, is_exc=is_exc, spike_steps=steps,
        spike_ids=ids, spike_counts=np.bincount(ids, minlength=n).astype(np.int64), spikes_complete_from_step=0,
        sample_every_steps=SAMPLE_EVERY, sample_steps=np.arange(ns, dtype=np.int64) * SAMPLE_EVERY,
        pop_series=pop, trace_neurons=trace_neurons, trace_steps=np.arange(ns, dtype=np.int64) * SAMPLE_EVERY,
        traces=traces, neuron_means=means, n_samples=ns,
        meta={"model": "cond_lif", "vbal_mv": vbal, "ee_mv": ee, "ei_mv": ei},
    )


def _bench_recorder(model_ms: float = 10_000.0) -> List[Dict[str, Any]]:
    """Feed ``model_ms`` of synthetic activity through a Recorder, call by call; extrapolate to 100 s."""
    steps, ids, _ = synthetic_spikes(duration_ms=model_ms, seed=SEED + 2)
    n = N_NEURONS
    n_steps = int(round(model_ms / DT_MS))
    bounds = np.searchsorted(steps, np.arange(n_steps + 1))
    rng = np.random.default_rng(SEED + 3)
    base = [rng.random(n) for _ in range(5)]
    rec = Recorder(n, DT_MS, is_exc=np.arange(n) < int(0.8 * n), sample_every_steps=SAMPLE_EVERY)
    t_spk = t_smp = 0.0
    n_spk_calls = n_smp_calls = 0
    pc = time.perf_counter
    for s in range(n_steps):
        a, b = bounds[s], bounds[s + 1]
        if b > a:
            t0 = pc()
            rec.on_spikes(s, ids[a:b])
            t_spk += pc() - t0
            n_spk_calls += 1
        if s % SAMPLE_EVERY == 0:
            t0 = pc()
            rec.on_sample(s, *base)
            t_smp += pc() - t0
            n_smp_calls += 1
    t0 = pc()
    out = rec.finish(end_step=n_steps)
    t_fin = pc() - t0
    assert int(out.spike_counts.sum()) == steps.size
    scale = DURATION_MS / model_ms
    per_spk = t_spk / max(n_spk_calls, 1)
    per_smp = t_smp / max(n_smp_calls, 1)
    return [
        {"stage": "Recorder.on_spikes", "per_call_us": per_spk * 1e6, "seconds_100s": t_spk * scale,
         "calls_100s": int(n_spk_calls * scale)},
        {"stage": "Recorder.on_sample (N=4096)", "per_call_us": per_smp * 1e6, "seconds_100s": t_smp * scale,
         "calls_100s": int(n_smp_calls * scale)},
        {"stage": "Recorder.finish", "per_call_us": t_fin * 1e6, "seconds_100s": t_fin * scale, "calls_100s": 1},
    ]


def _bench_stages(rec: Recording) -> List[Dict[str, Any]]:
    """Time the main diagnostics one by one, with the parameters :func:`diagnose` uses."""
    pc = time.perf_counter
    rows: List[Dict[str, Any]] = []
    n, dt = rec.n_neurons, rec.dt_ms

    def timed(stage: str, fn: Any) -> Any:
        t0 = pc()
        out = fn()
        rows.append({"stage": f"  {stage}", "seconds_100s": pc() - t0})
        return out

    t, ids = timed("sort spikes by neuron", lambda: sort_by_neuron(rec.spike_times_ms(), rec.spike_ids))
    timed("ISI CV + CV2", lambda: (isi_cv(t, ids, n), isi_cv2(t, ids, n)))
    timed("Fano factor, 5 windows", lambda: spike_count_fano(t, ids, n, 0.0, rec.duration_ms))
    exc = rec.exc_mask()
    k = int(round(1.0 / dt))
    ce = timed(
        "population rates E, I (1 ms)", lambda: (population_counts(rec, k, exc), population_counts(rec, k, ~exc))
    )
    timed(
        "E/I co-fluctuation of rates, 32 scales",
        lambda: ei_cofluctuation(ce[0] * 1.0, ce[1] * 1.0, 1.0, n_cells_e=int(exc.sum()), n_cells_i=int((~exc).sum())),
    )
    timed(
        "E/I co-fluctuation of currents, 32 scales",
        lambda: ei_cofluctuation(rec.series("iexc"), -rec.series("iinh"), rec.sample_dt_ms, signal="currents"),
    )
    act = population_counts(rec, int(round(4.0 / dt))).astype(float)
    timed("MR branching ratio, k_max 250, 100 bootstraps", lambda: branching_ratio_mr(act, 4.0, k_max=250, n_boot=100))
    timed("population spectrum", lambda: population_spectrum((ce[0] + ce[1]) * 1.0, 1.0, n_cells=n))
    return rows


def run() -> List[Dict[str, Any]]:
    """Measure recorder and diagnostics costs; one dict per stage (seconds for 100 s of a 4096-neuron chip)."""
    rows: List[Dict[str, Any]] = []
    rows.extend(_bench_recorder())
    t0 = time.perf_counter()
    rec = synthetic_recording()
    t_build = time.perf_counter() - t0
    n_spikes = int(rec.spike_steps.size)
    rows.append({"stage": "synthesize recording (not diagnostics)", "seconds_100s": t_build, "spikes": n_spikes})
    t0 = time.perf_counter()
    d = diagnose(rec, n_boot=100)
    t_diag = time.perf_counter() - t0
    rows.append(
        {
            "stage": "diagnose (all diagnostics)",
            "seconds_100s": t_diag,
            "spikes": n_spikes,
            "mean_rate_hz": round(d.mean_rate_hz, 2),
            "flags": ",".join(d.flags) or "-",
        }
    )
    rows.extend(_bench_stages(rec))
    return rows


def main() -> None:
    """Print the rows of :func:`run` as a table."""
    rows = run()
    print(f"diagnostics: {N_NEURONS} neurons, {DURATION_MS / 1000:.0f} s model time, dt {DT_MS} ms")
    print(f"{'stage':48s} {'seconds/100s':>12s} {'per call us':>12s}  extra")
    for r in rows:
        extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("stage", "seconds_100s", "per_call_us"))
        pcu = f"{r['per_call_us']:.2f}" if "per_call_us" in r else ""
        print(f"{r['stage']:48s} {r['seconds_100s']:12.2f} {pcu:>12s}  {extra}".rstrip())


if __name__ == "__main__":
    main()
