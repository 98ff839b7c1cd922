"""Yield studies: how long the judging replay must be, and whether the replay's predicted uncertainties are right.

For each shipped profile: calibrate a chip with the dual loop (seed 1, 90 s), then replay it at its final codes
``REPEATS`` times on independent input streams (1, 2, ...), each ``T`` seconds. Printed per judged figure:

- ``sd over replays``: the spread of the figure across the repeated replays (the replay's real uncertainty);
- ``predicted se``: the mean of the standard errors ``calibrate.replay`` derives from one replay;
- ``T for se = limit/10``: the replay length at which that se would be a tenth of the default spec's limit.

``python -m benchmarks yield`` runs all profiles; ``EICAL_BENCH_YIELD=devboard,bss2`` picks some, and
``EICAL_BENCH_YIELD_REPEATS`` sets the number of replays (default 8). Takes about 10 minutes of CPU on the
default settings. docs/yield.md quotes its output.
"""
from __future__ import annotations

import os
import time

import numpy as np

# (profile, replay length T of each repeated replay, seconds of model time)
CASES = [("devboard", 120.0), ("bss2", 60.0), ("dynapse2", 40.0), ("balanced-net", 30.0)]
LIMITS = {"rate_cv": 0.05, "balance_p95": 0.05, "rate_err": 0.03}


def _calibrated_codes(profile: str, seed: int):
    from calibrate.yield_study.chip import _calibrate
    from hw_models.profile import load_profile

    result, _ = _calibrate(load_profile(profile), seed, controller="dual-loop", budget_s=None)
    return result.codes


def main() -> None:
    from calibrate.controllers import Targets
    from calibrate.criteria import judge
    from calibrate.replay import judging_replay, required_replay_s
    from hw_models.profile import load_profile

    pick = [p for p in os.environ.get("EICAL_BENCH_YIELD", "").split(",") if p]
    reps = int(os.environ.get("EICAL_BENCH_YIELD_REPEATS", "8"))
    for profile, T in CASES:
        if pick and profile not in pick:
            continue
        t0 = time.process_time()
        codes = _calibrated_codes(profile, 1)
        runs = [judging_replay(profile, 1, codes, replay_s=T, input_stream=1 + k) for k in range(reps)]
        shared = runs[0].figures.group_rate_err_max is not None
        tg = Targets.from_profile(load_profile(profile))
        crits = [{c.name: c for c in judge(r.figures, shared=shared, target_rate_hz=tg.rate_hz,
                                           target_inh_hz=tg.rate_inh_hz, se=r.se, **{
                                               "rate_cv": LIMITS["rate_cv"], "balance": LIMITS["balance_p95"],
                                               "rate_err": LIMITS["rate_err"]})} for r in runs]
        print(f"\n{profile} seed 1 (dual loop, default budget), {reps} replays of {T:g} s on input streams "
              f"1..{reps}; F {np.mean([r.figures.fano for r in runs]):.2f}, "
              f"F_pop {np.mean([r.stats['fano_pop'] for r in runs]):.1f}, {time.process_time() - t0:.0f} s CPU")
        print(f"  {'criterion (figure)':<40} {'mean':>8} {'sd over replays':>16} {'predicted se':>13} {'ratio':>6}")
        for name in LIMITS:
            cs = [c[name] for c in crits]
            if not cs[0].applies:
                continue
            vals = np.array([c.value for c in cs])
            pred = np.mean([c.se for c in cs])
            sd = vals.std(ddof=1)
            print(f"  {name + ' (' + cs[0].figure + ')':<40} {vals.mean():8.4f} {sd:16.4f} {pred:13.4f} "
                  f"{sd / pred:6.2f}")
        need = [required_replay_s(r, LIMITS, shared=shared) for r in runs]
        for crit in sorted(need[0]):
            v = np.array([x[crit] for x in need])
            print(f"  T for se({crit}) = limit/10: median {np.median(v):7.0f} s, max {v.max():7.0f} s")


if __name__ == "__main__":
    main()
