"""The on-board tracker over a population of chips, with and without drift (docs/controller.md, "Forty chips").

Each chip is calibrated (``calibrate_chip``; its table carries the tracker section), then tracked by ``eical
track``'s board estimator (the on-board tracker's code on the host, the board's codes bit for bit) through a
300 -> 300 + K kelvin ramp over 120 s of model time, for each K in ``EICAL_BENCH_TRACKPOP_RAMPS`` (default ``10,0``:
the issue's ramp, and a chip that does not drift). Six checkpoints are replayed for ``EICAL_BENCH_TRACKPOP_REPLAY``
seconds (180) on independent inputs. Printed per profile and ramp: how many chips meet the goal (|rate error| <= 5 %
and balance p95 <= 0.05 at every checkpoint) with a Wilson 95 % interval, the mean worst rate error, and the rms
rate error at each checkpoint. Chips: ``EICAL_BENCH_TRACKPOP_CHIPS`` (default ``bss2:1-10,devboard:1-30``); worker
processes: ``EICAL_BENCH_TRACKPOP_WORKERS`` (default: the CPU count). About 10 min on two cores with the defaults.
Not in ``make bench``: ``python -m benchmarks tracker_population``.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

GOAL_RATE = 0.05
GOAL_BALANCE = 0.05


def parse_chips(text: str) -> list[tuple[str, int]]:
    """``"bss2:1-10,devboard:1-30"`` -> [(profile, seed), ...]."""
    out = []
    for part in text.split(","):
        profile, seeds = part.split(":")
        lo, _, hi = seeds.partition("-")
        out += [(profile, s) for s in range(int(lo), int(hi or lo) + 1)]
    return out


def track_chip(job: tuple[str, int, float, float]) -> dict:
    """Calibrate chip (profile, seed) and track it through a ramp of ``rise_k`` kelvin; the checkpoints' signed
    rate errors and balance p95."""
    from calibrate.session import calibrate_chip
    from calibrate.tracking import Ramp, run_tracking

    profile, seed, rise_k, replay_s = job
    table = calibrate_chip(profile, seed, evaluate_s=0.0).table
    res = run_tracking(profile, seed, table, Ramp(300.0, 300.0 + rise_k, 120.0), checkpoints=6, replay_s=replay_s,
                       estimator="board")
    return {"profile": profile, "seed": seed, "rise_k": rise_k,
            "rate_err": [c.tracked.rate_mean_hz / res.target_rate_hz - 1 for c in res.checkpoints],
            "balance_p95": [c.tracked.balance_p95 for c in res.checkpoints]}


def summarise(rows: list[dict]) -> list[dict]:
    from calibrate.yield_study.summary import wilson_interval

    out = []
    for key in sorted({(r["rise_k"], r["profile"]) for r in rows}, key=lambda k: (-k[0], k[1])):
        sel = [r for r in rows if (r["rise_k"], r["profile"]) == key]
        err = np.abs(np.array([r["rate_err"] for r in sel]))
        bal = np.array([r["balance_p95"] for r in sel])
        met = int(((err.max(axis=1) <= GOAL_RATE) & (bal.max(axis=1) <= GOAL_BALANCE)).sum())
        out.append({"rise_k": key[0], "profile": key[1], "chips": len(sel), "met": met,
                    "interval": wilson_interval(met, len(sel)), "worst_mean": float(err.max(axis=1).mean()),
                    "rms": np.sqrt((err ** 2).mean(axis=0)).tolist(),
                    "over_rate": int((err.max(axis=1) > GOAL_RATE).sum()),
                    "over_balance": int((bal.max(axis=1) > GOAL_BALANCE).sum())})
    return out


def main() -> None:
    chips = parse_chips(os.environ.get("EICAL_BENCH_TRACKPOP_CHIPS", "bss2:1-10,devboard:1-30"))
    ramps = [float(k) for k in os.environ.get("EICAL_BENCH_TRACKPOP_RAMPS", "10,0").split(",")]
    replay_s = float(os.environ.get("EICAL_BENCH_TRACKPOP_REPLAY", "180"))
    workers = int(os.environ.get("EICAL_BENCH_TRACKPOP_WORKERS", "0")) or os.cpu_count() or 1
    jobs = [(p, s, k, replay_s) for k in ramps for p, s in chips]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(track_chip, jobs))
    print(f"On-board tracker (host-side, bit for bit), 300 -> 300 + K kelvin over 120 s, 6 checkpoints replayed for "
          f"{replay_s:.0f} s; goal: |rate error| <= 5 % and balance p95 <= 0.05 at every checkpoint")
    print(f"{'K':>4} {'profile':<9} {'goal met':>9} {'95 % interval':>14} {'over 5 %':>9} {'bal > .05':>9} "
          f"{'mean worst':>10}   rms rate error at 0, 24, ..., 120 s")
    for s in summarise(rows):
        lo, hi = s["interval"]
        print(f"{s['rise_k']:>4.0f} {s['profile']:<9} {s['met']:>4} / {s['chips']:<3} {lo * 100:>6.0f} - {hi * 100:<4.0f}% "
              f"{s['over_rate']:>9} {s['over_balance']:>9} {s['worst_mean'] * 100:>9.2f}%   "
              + " ".join(f"{x * 100:.1f}" for x in s["rms"]))


if __name__ == "__main__":
    main()
