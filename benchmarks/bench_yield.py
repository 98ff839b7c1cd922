"""Yield studies: how long the judging replay must be, whether its estimates are unbiased and its standard errors
right, and what replicas save.

For each shipped profile: calibrate a chip with the dual loop (seed 1, 90 s), then replay it at its final codes
``REPEATS`` times on independent input streams (1, 2, ...), each ``T`` seconds. Every replay is judged twice from the
same sub-windows: with the estimator the judging replay uses (the input drive as a control variate, on feed-forward
chips) and with the plain means. Printed per judged figure:

- ``mean``: over the replays; ``paired diff``: the mean of (estimate - plain estimate) over the replays, with its
  standard error, in units of the figure. The plain mean rate is unbiased, so a paired difference within a few
  standard errors of 0 says the control variate adds no bias that the replays could see;
- ``sd over replays``: the spread of the figure across the repeated replays (the replay's real uncertainty), and
  ``predicted se``: the mean of the standard errors ``calibrate.replay`` derives from one replay (their ratio should
  be 1 within the sd's own uncertainty, about +-25 % (one sigma) with 8 replays and +-13 % with 32);
- ``T for se = limit/10``: the replay length at which that se would be a tenth of the default spec's limit.

Then the cost of one replay second per chip, CPU, with 1 copy and with the replicas the judging replay uses.

``python -m benchmarks yield`` runs all profiles; ``EICAL_BENCH_YIELD=devboard,bss2`` picks some, and
``EICAL_BENCH_YIELD_REPEATS`` sets the number of replays (default 16). docs/yield.md quotes its output.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

# (profile, replay length T of each repeated replay, seconds of model time)
CASES = [("devboard", 400.0), ("bss2", 100.0), ("dynapse2", 60.0), ("balanced-net", 30.0)]
LIMITS = {"rate_cv": 0.05, "balance_p95": 0.05, "rate_err": 0.03}


def _calibrated_codes(profile: str, seed: int):
    from calibrate.yield_study.chip import _calibrate
    from hw_models.profile import load_profile

    result, _ = _calibrate(load_profile(profile), seed, controller="dual-loop", budget_s=None)
    return result.codes


def _judged_both(prof, codes, T: float, stream: int):
    """One replay judged by the estimator in use and by the plain means: (JudgedReplay, plain JudgedReplay)."""
    from calibrate.control_variate import estimate_rates
    from calibrate.metrics import figures_from_record
    from calibrate.replay import JudgedReplay, figure_uncertainties, record_replay

    rec = record_replay(prof, 1, codes, replay_s=T, input_stream=stream)
    plain = dataclasses.replace(rec, mu_e=None, mu_i=None)  # measured balance, plain means
    out = []
    for r, est in ((rec, rec.rate_estimate()), (plain, estimate_rates(rec.rates_hz))):
        fig = figures_from_record(prof, r, est)
        se, stats = figure_uncertainties(prof, r, est, fig)
        out.append(JudgedReplay(figures=fig, se=se, replay_s=T, sub_windows=est.sub_windows, wall_s=0.0,
                                stats=stats))
    return out[0], out[1]


def _criteria(runs, prof, shared):
    from calibrate.controllers import Targets
    from calibrate.criteria import judge

    tg = Targets.from_profile(prof)
    return [{c.name: c for c in judge(r.figures, shared=shared, target_rate_hz=tg.rate_hz,
                                      target_inh_hz=tg.rate_inh_hz, se=r.se, rate_cv=LIMITS["rate_cv"],
                                      balance=LIMITS["balance_p95"], rate_err=LIMITS["rate_err"])} for r in runs]


def _signed(c, fig, tg_rate: float) -> float:
    """The criterion's figure with its sign, where it has one (the mean rate's error), for paired differences."""
    if c.figure == "rate_err":
        return fig.rate_mean_hz / tg_rate - 1
    return c.value


def _cost(profile: str, codes, T: float) -> str:
    from calibrate.replay import record_replay, replicas_for
    from hw_models.profile import load_profile

    prof = load_profile(profile)
    m = replicas_for(prof.n_neurons, T)
    parts = []
    for reps in sorted({1, m}):
        c0 = time.process_time()
        record_replay(prof, 1, codes, replay_s=T, replicas=reps, input_stream=99)
        parts.append(f"{reps} cop{'y' if reps == 1 else 'ies'}: {(time.process_time() - c0) / T * 1e3:.2f} ms")
    return "CPU per replay second: " + ", ".join(parts)


def _profile(profile: str, T: float, reps: int) -> None:
    from calibrate.controllers import Targets
    from calibrate.replay import required_replay_s
    from hw_models.profile import load_profile

    prof = load_profile(profile)
    t0 = time.process_time()
    codes = _calibrated_codes(profile, 1)
    pairs = [_judged_both(prof, codes, T, 1 + k) for k in range(reps)]
    runs, plain = [p[0] for p in pairs], [p[1] for p in pairs]
    shared = runs[0].figures.group_rate_err_max is not None
    tg = Targets.from_profile(prof).rate_hz
    crits, crits_p = _criteria(runs, prof, shared), _criteria(plain, prof, shared)
    st = runs[0].stats
    print(f"\n{profile} seed 1 (dual loop, default budget), {reps} replays of {T:g} s on input streams 1..{reps} "
          f"({st['replicas']} copies, {st['estimator']}); F {np.mean([r.figures.fano for r in runs]):.2f}, "
          f"F_pop {np.mean([r.stats['fano_pop'] for r in runs]):.1f}, mean-rate variance left "
          f"{np.mean([r.stats['variance_left'] for r in runs]):.3f}; {time.process_time() - t0:.0f} s CPU")
    print(f"  {'criterion (figure)':<36} {'mean':>8} {'paired diff (se)':>19} {'sd over replays':>16} "
          f"{'predicted se':>13} {'ratio':>6} {'plain sd':>9}")
    for name in LIMITS:
        cs, ps = [c[name] for c in crits], [c[name] for c in crits_p]
        if not cs[0].applies:
            continue
        vals = np.array([_signed(c, r.figures, tg) for c, r in zip(cs, runs)])
        pvals = np.array([_signed(c, r.figures, tg) for c, r in zip(ps, plain)])
        d = vals - pvals
        pred = np.mean([c.se for c in cs])
        sd = vals.std(ddof=1)
        print(f"  {name + ' (' + cs[0].figure + ')':<36} {vals.mean():8.4f} {d.mean():+9.5f} ({d.std(ddof=1) / np.sqrt(reps):.5f})"
              f" {sd:16.4f} {pred:13.4f} {sd / pred if pred > 0 else float('nan'):6.2f} {pvals.std(ddof=1):9.4f}")
    need = [required_replay_s(r, LIMITS, shared=shared) for r in runs]
    for crit in sorted(need[0]):
        v = np.array([x[crit] for x in need])
        print(f"  T for se({crit}) = limit/10: median {np.median(v):7.0f} s, max {v.max():7.0f} s")
    print("  " + _cost(profile, codes, T))


def main() -> None:
    pick = [p for p in os.environ.get("EICAL_BENCH_YIELD", "").split(",") if p]
    reps = int(os.environ.get("EICAL_BENCH_YIELD_REPEATS", "16"))
    for profile, T in CASES:
        if not pick or profile in pick:
            _profile(profile, T, reps)


if __name__ == "__main__":
    main()
