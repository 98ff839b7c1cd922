"""eical's dpi step against rockpool's DynapSim on exported dynapse2 chips (issue 17; docs/model.md section 13).

For each seed the chip is exported (``hw_models.dynapsim.export_arrays``, nominal codes) and replayed in DynapSim
(``hw_models.dynapsim.replay``: rockpool 3.1's module for the neuron and its lumped AMPA synapse, the GABA synapse
beside it by DynapSim's own synapse equation):

- same realisation: DynapSim on the very input spike trains the emulator drew (input stream 0, recorded by the
  engine), against the emulator's spike counts of that window;
- independent realisation: DynapSim on input stream 1, against the emulator on stream 0, over longer windows.
  The emulator against itself on streams 0 and 1 is printed beside it: that is what the realisation alone does.
  The population mean of a dynapse2 chip moves from one input realisation to another by about 2 % over 10 s
  (its neurons share a pool of 256 sources: the population Fano factor is about 17, docs/yield.md), so 10 s
  windows cannot tell a 2 % model difference from the inputs; 60 s bring that spread down to about 0.75 %.

The figures are the population mean difference (DynapSim's mean rate over eical's, minus 1, over live neurons)
and the per-neuron rate correlation. Targets (issue 17): same realisation within 1 % and r >= 0.99, independent
within 2 % and r >= 0.95. Needs the ``eical[rockpool]`` extra; without it ``main()`` says so in one line.
``--quick``: 2 s and 10 s windows instead of 10 s and 60 s.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

SEEDS = (1, 2, 3)
SAME_MS, INDEPENDENT_MS = 10_000.0, 60_000.0
QUICK_MS = (2_000.0, 10_000.0)
PROFILE = "dynapse2"
TARGETS = {"same": (0.01, 0.99), "independent": (0.02, 0.95)}


def _compare(ref: np.ndarray, other: np.ndarray, live: np.ndarray) -> Dict[str, float]:
    a, b = ref[live].astype(float), other[live].astype(float)
    return {"mean_diff": float(b.mean() / a.mean() - 1.0), "r": float(np.corrcoef(a, b)[0, 1]),
            "identical": int((ref[live] == other[live]).sum())}


def run(seeds: Sequence[int] = SEEDS, same_ms: float = SAME_MS,
        independent_ms: float = INDEPENDENT_MS) -> List[Dict[str, Any]]:
    """One row per seed and realisation."""
    from hw_models import dynapsim
    from hw_models.chip import draw_chip

    rows = []
    for seed in seeds:
        chip = draw_chip(PROFILE, seed)
        arrays = dynapsim.export_arrays(chip)
        live = ~chip.dead
        t = time.process_time()
        inputs, eical = dynapsim.record_window(chip, None, same_ms, input_stream=0)
        cpu_eical = time.process_time() - t
        t = time.process_time()
        dyn = dynapsim.replay(arrays, inputs)
        cpu_dyn = time.process_time() - t
        sec = same_ms / 1e3
        rows.append({"seed": seed, "realisation": "same", "duration_s": sec, "live": int(live.sum()),
                     "eical_rate_hz": float(eical[live].mean() / sec), "dynapsim_rate_hz": float(dyn[live].mean() / sec),
                     **_compare(eical, dyn, live), "cpu_eical_s": cpu_eical, "cpu_dynapsim_s": cpu_dyn})
        _, eical_a = dynapsim.record_window(chip, None, independent_ms, input_stream=0)
        inputs_b, eical_b = dynapsim.record_window(chip, None, independent_ms, input_stream=1)
        dyn_b = dynapsim.replay(arrays, inputs_b)
        sec = independent_ms / 1e3
        floor = _compare(eical_a, eical_b, live)
        rows.append({"seed": seed, "realisation": "independent", "duration_s": sec, "live": int(live.sum()),
                     "eical_rate_hz": float(eical_a[live].mean() / sec),
                     "dynapsim_rate_hz": float(dyn_b[live].mean() / sec), **_compare(eical_a, dyn_b, live),
                     "eical_vs_eical_r": floor["r"], "eical_vs_eical_mean_diff": floor["mean_diff"]})
    return rows


def passes(row: Dict[str, Any]) -> bool:
    tol, r_min = TARGETS[row["realisation"]]
    return abs(row["mean_diff"]) <= tol and row["r"] >= r_min


def report(rows: List[Dict[str, Any]]) -> None:
    print(f"{PROFILE}, nominal codes, from rest; DynapSim (rockpool) against eical on live neurons. 'eical vs eical': "
          f"the emulator on input streams 0 and 1, what the realisation alone does")
    print(f"{'seed':>4s} {'realisation':12s} {'window':>6s} {'eical Hz':>9s} {'DynapSim Hz':>11s} {'mean diff':>10s} "
          f"{'r':>8s} {'identical':>10s} {'eical vs eical':>21s}  target")
    for r in rows:
        tol, r_min = TARGETS[r["realisation"]]
        floor = (f"{100 * r['eical_vs_eical_mean_diff']:+.3f}%, r {r['eical_vs_eical_r']:.4f}"
                 if "eical_vs_eical_r" in r else "")
        print(f"{r['seed']:4d} {r['realisation']:12s} {r['duration_s']:5g}s {r['eical_rate_hz']:9.3f} "
              f"{r['dynapsim_rate_hz']:11.3f} {100 * r['mean_diff']:+9.3f}% {r['r']:8.5f} {r['identical']:5d}/"
              f"{r['live']:<4d} {floor:>21s}  |diff| <= {100 * tol:g} %, r >= {r_min}: "
              f"{'ok' if passes(r) else 'MISSED'}")
    same = [r for r in rows if r["realisation"] == "same"]
    print(f"CPU per {same[0]['duration_s']:g} s window: eical {np.mean([r['cpu_eical_s'] for r in same]):.2f} s, "
          f"DynapSim {np.mean([r['cpu_dynapsim_s'] for r in same]):.2f} s (jax, one evolve per step)")


def main(options: Optional[Sequence[str]] = None) -> None:
    from hw_models.dynapsim import rockpool_unavailable

    why = rockpool_unavailable()
    if why is not None:
        print(f"SKIPPED: {why}")
        return
    same_ms, independent_ms = QUICK_MS if "--quick" in (options or ()) else (SAME_MS, INDEPENDENT_MS)
    report(run(same_ms=same_ms, independent_ms=independent_ms))


if __name__ == "__main__":
    main()
