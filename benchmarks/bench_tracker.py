"""The on-board tracker (issue 16): what it costs a microcontroller per window, and what it holds through a drift.

1. Per-window cost of ``firmware_bridge/firmware/tracker.py`` under the MicroPython unix port for 32 and 512 neurons
   (time with the garbage collector at work, the tracker's state, the bytes a window allocates and the heap's peak
   above the state), with CPython running the same code as the reference in the same run.
2. A 300 -> 310 K ramp over 120 s of model time on bss2 and devboard chips (seeds 1-3): each chip is calibrated
   (``calibrate_chip``, 90 s budget; its table carries the tracker section), flashed to an in-process board with the
   emulated chip behind it, the tracker started, and the host silent until the ramp's end (checked by the board's
   frame count). The true figures at 6 checkpoints (independent replays of ``EICAL_BENCH_TRACKER_REPLAY`` s,
   default 180: the replay's own noise in the mean rate is then under 1 %) of the on-board tracker, of the static
   table, and of host-side tracking by the dual loop (``eical track --estimator dual-loop``) on the same chip and
   ramp (``eical track``'s default for these tables, the board estimator, gives the on-board column bit for bit).
   Worst |mean rate / target - 1| and worst balance p95 over the checkpoints.

Environment: ``EICAL_BENCH_TRACKER_PROFILES`` (default ``bss2,devboard``), ``EICAL_BENCH_TRACKER_SEEDS`` (``1,2,3``),
``EICAL_BENCH_TRACKER_REPLAY`` (180), ``EICAL_BENCH_TRACKER_HOST`` (1: include the host-side dual loop), and
``EICAL_BENCH_TRACKER_RAMP`` (0 skips part 2: about 5 min of CPU with the compiled engine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COST_SCRIPT = Path(__file__).resolve().parent / "tracker_cost_mp.py"


def _cost(cmd: list[str], n: int, windows: int, mode: str) -> dict:
    out = subprocess.run(cmd + [str(COST_SCRIPT), str(ROOT / "firmware_bridge"), str(n), str(windows), mode],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "cost script failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cost_table() -> list[dict]:
    from firmware_bridge.emulator import find_micropython

    mp = find_micropython()
    rows = []
    for n in (32, 512):
        row = {"n": n}
        if mp is not None:
            t = _cost([mp], n, 12, "time")
            a = _cost([mp, "-X", "heapsize=96M"], n, 4, "alloc")
            row.update(mp_window_ms=t["window_us"] / 1e3, mp_window_min_ms=t["window_min_us"] / 1e3,
                       mp_subwindow_ms=t["subwindow_us"] / 1e3,
                       mp_end_ms=t["window_end_us"] / 1e3, state_kib=t["state_bytes"] / 1024,
                       alloc_kib=a["alloc_bytes_per_window"] / 1024)
        c = _cost([sys.executable], n, 12, "time")
        row["cpython_window_ms"] = c["window_us"] / 1e3
        row["cpython_window_min_ms"] = c["window_min_us"] / 1e3
        rows.append(row)
    return rows


def print_cost(rows: list[dict]) -> None:
    print("Per-window cost of the tracker (2.5 s window read as 4 sub-windows; wall time, median and best of 12 "
          "windows, garbage collection included; x86-64 unix port: a float is a 32-byte heap object here, 16 on a "
          "32-bit MCU)")
    print(f"{'neurons':>8} {'MicroPython window':>22} {'sub-window':>11} {'window end':>11} {'state':>9} "
          f"{'allocated/window':>17} {'CPython (ref.)':>18}")
    for r in rows:
        cp = f"{r['cpython_window_ms']:>7.2f} ({r['cpython_window_min_ms']:.2f}) ms"
        if "mp_window_ms" in r:
            print(f"{r['n']:>8} {r['mp_window_ms']:>9.2f} ({r['mp_window_min_ms']:.2f}) ms "
                  f"{r['mp_subwindow_ms']:>8.3f} ms {r['mp_end_ms']:>8.2f} ms {r['state_kib']:>5.1f} KiB "
                  f"{r['alloc_kib']:>13.0f} KiB {cp:>18}")
        else:
            print(f"{r['n']:>8} {'(no micropython)':>22} {'':>11} {'':>11} {'':>9} {'':>17} {cp:>18}")


def ramp_row(profile: str, seed: int, replay_s: float, host: bool) -> dict:
    from calibrate.onboard import run_onboard_tracking
    from calibrate.session import calibrate_chip
    from calibrate.tracking import Ramp

    t0 = time.process_time()
    outcome = calibrate_chip(profile, seed, evaluate_s=0.0)
    if outcome.table.tracker is None:
        raise RuntimeError(f"{profile} seed {seed}: the calibration's table has no tracker section")
    res = run_onboard_tracking(profile, seed, outcome.table, Ramp(300.0, 310.0, 120.0), replay_s=replay_s,
                               host=host)
    row = {"profile": profile, "seed": seed, "onboard": res.worst("onboard"), "static": res.worst("static"),
           "host": res.host.worst("tracked") if res.host is not None else None, "silent": res.host_silent,
           "nvm_unchanged": res.nvm_unchanged, "windows": res.status.windows, "frozen": res.status.frozen,
           "at_band": res.status.at_band, "cpu_s": time.process_time() - t0,
           "checkpoints": [c.to_dict() for c in res.checkpoints]}
    return row


def print_ramp(rows: list[dict], replay_s: float) -> None:
    print(f"\n300 -> 310 K over 120 s of model time; worst over 6 checkpoints (true figures, {replay_s:.0f} s replays on "
          "independent inputs); goal: |rate error| <= 5 %, balance p95 <= 0.05")
    print(f"{'chip':<12} {'on-board rate':>13} {'bal p95':>8} {'static rate':>12} {'bal p95':>8} {'dual loop':>10} "
          f"{'bal p95':>8} {'silent':>7} {'NVM same':>9} {'frozen':>7} {'CPU':>6}")
    for r in rows:
        o, s, h = r["onboard"], r["static"], r["host"]
        hs = (f"{h['rate_err'] * 100:>9.1f}% {h['balance_p95']:>8.3f}" if h else f"{'-':>10} {'-':>8}")
        print(f"{r['profile'] + ' ' + str(r['seed']):<12} {o['rate_err_signed'] * 100:>+12.1f}% {o['balance_p95']:>8.3f} "
              f"{s['rate_err_signed'] * 100:>+11.1f}% {s['balance_p95']:>8.3f} {hs} {str(r['silent']):>7} "
              f"{str(r['nvm_unchanged']):>9} {r['frozen']:>7} {r['cpu_s']:>5.0f}s")


def main() -> None:
    print_cost(cost_table())
    if os.environ.get("EICAL_BENCH_TRACKER_RAMP", "1") == "0":
        print("\n(ramp part skipped: EICAL_BENCH_TRACKER_RAMP=0)")
        return
    profiles = os.environ.get("EICAL_BENCH_TRACKER_PROFILES", "bss2,devboard").split(",")
    seeds = [int(s) for s in os.environ.get("EICAL_BENCH_TRACKER_SEEDS", "1,2,3").split(",")]
    replay = float(os.environ.get("EICAL_BENCH_TRACKER_REPLAY", "180"))
    host = os.environ.get("EICAL_BENCH_TRACKER_HOST", "1") != "0"
    rows = [ramp_row(p, s, replay, host) for p in profiles for s in seeds]
    print_ramp(rows, replay)
    out = os.environ.get("EICAL_BENCH_TRACKER_JSON")
    if out:
        Path(out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
