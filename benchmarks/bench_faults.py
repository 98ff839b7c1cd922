"""Faults: multi-fault flash trials against the firmware core, the serial link under noise, hostile files.

``python -m benchmarks faults`` (part of ``make bench``) prints four tables (docs/protocol.md, section 11):

0. **ROLLBACK under faults**: every single fault of each kind at every NVM operation of a rollback, every pair,
   random trials with bit flips, and the flash plans on a board that rolled back (``rollback_rows``).

1. **NVM multi-fault table** (``firmware_bridge.faultsim``): every single power cut (torn and after) and every
   single failed or dropped write at every NVM operation of a clean flash, every pair of cuts (the second during
   the recovery from the first), and 10,008 seeded random trials (1-3 faults each: cuts, failed and dropped
   writes; bit flips at byte error rates 0 to 1e-3), over four start states (empty board, one table, two
   tables, two tables at the generation wrap). Then the same plans against three deliberately broken firmwares
   (tests/fault_controls.py): they must show bricked boards or mixed tables, or the plans prove nothing.
2. **Noisy link**: an 8 KiB flash through ``eicalfault://...&faults=all`` (bit errors, lost and inserted bytes,
   truncated and duplicated frames, garbage between frames) to the board emulator behind a pty, at byte error
   rates 0 (the reference), 1e-4, 1e-3 and 1e-2; and the same in one process on a simulated clock over 200 seeds
   per rate, for the proportions (Wilson 95 % intervals).
3. **Hostile files**: how fast and in how much memory the loaders refuse an alias bomb, /dev/zero, a binary
   file, against loading a real profile and table in the same run.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

from calibrate.cli.exits import exit_code_for
from firmware_bridge import faultsim as F
from firmware_bridge.firmware.board import Board
from firmware_bridge.testing import REPO_ROOT, pty_noisy_flash

RANDOM_BERS = (0.0, 1e-5, 1e-4, 1e-3)
RANDOM_PER_ROW = 834  # x 3 fault counts x 4 rates = 10,008 trials
NOISE_RATES = (0.0, 1e-4, 1e-3, 1e-2)
PTY_SEEDS = 5
SIM_SEEDS = 200


def _controls() -> Dict[str, Any]:
    """The broken firmwares live in the test suite only (tests/fault_controls.py); load them from there."""
    path = REPO_ROOT / "tests" / "fault_controls.py"
    spec = importlib.util.spec_from_file_location("fault_controls", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CONTROLS


def _timed(fn, *a, **kw):
    t = time.process_time()
    out = fn(*a, **kw)
    return out, time.process_time() - t


def nvm_rows(firmware=Board, name: str = "real firmware", per_row: bool = True) -> List[Dict[str, Any]]:
    sc = F.standard_scenarios()
    rows = []
    for st, cpu in (_timed(F.every_single, sc, F.CUTS, firmware=firmware, label="every single cut"),
                    _timed(F.every_single, sc, (F.FAIL, F.LOST), firmware=firmware,
                           label="every single failed/dropped write"),
                    _timed(F.every_pair, sc, firmware=firmware)):
        rows.append(dict(st.row(), firmware=name, cpu_s=cpu))
    total = F.CampaignStats("random, all rows", "1-3", float("nan"))
    t_all = 0.0
    for ber in RANDOM_BERS:
        for k in (1, 2, 3):
            st, cpu = _timed(F.random_campaign, sc, RANDOM_PER_ROW, faults=(k,), ber=ber, firmware=firmware,
                             seed=2024, label="random")
            t_all += cpu
            total.merge(st)
            if per_row:
                rows.append(dict(st.row(), firmware=name, cpu_s=cpu))
    rows.append(dict(total.row(), firmware=name, cpu_s=t_all))
    return rows


def print_nvm(rows: List[Dict[str, Any]]) -> None:
    print(f"{'firmware':22s} {'plan':34s} {'trials':>7s} {'faults':>6s} {'byte err':>8s} {'old':>6s} {'new':>6s} "
          f"{'bricked':>7s} {'mixed':>6s} {'re-run':>6s} {'CPU s':>6s}")
    for r in rows:
        ber = r["byte error rate"]
        ber_s = "0-1e-3" if isinstance(ber, float) and math.isnan(ber) else f"{ber:g}"
        print(f"{r['firmware']:22s} {r['plan']:34s} {r['trials']:7d} {r['faults/trial']:>6s} {ber_s:>8s} "
              f"{r['old']:6d} {r['new']:6d} {r['bricked']:7d} {r['mixed']:6d} {r['re-run failed']:6d} "
              f"{r['cpu_s']:6.1f}")


def wilson(k: int, n: int, z: float = 1.96) -> tuple:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def noise_rows() -> List[Dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in NOISE_RATES:
            rs = [pty_noisy_flash(Path(tmp), rate, seed) for seed in range(PTY_SEEDS)]
            ok = [r for r in rs if r.outcome == "flashed"]
            rows.append({
                "where": "pty", "rate": rate, "runs": len(rs), "flashed": len(ok),
                "old": sum(r.outcome == "gave up, old table" for r in rs),
                "new": sum(r.outcome == "gave up, new table" for r in rs),
                "wrong": sum(r.outcome == "wrong" or not r.rerun_ok for r in rs),
                "codes": sorted({0 if r.error is None else int(exit_code_for(r.error)) for r in rs}),
                "wall_s": statistics.median(r.wall_s for r in rs),
                "kib_s": statistics.median(r.table_bytes / 1024 / r.wall_s for r in ok) if ok else float("nan"),
                "resends": statistics.median(r.resends for r in rs),
                "timeouts": statistics.median(r.timeouts for r in rs),
                "att_per_req": sum(r.attempts for r in rs) / max(1, sum(r.requests for r in rs)),
                "faults": statistics.median(sum(r.faults.values()) for r in rs),
            })
    for rate in NOISE_RATES:
        rs = [F.noisy_flash(rate, seed) for seed in range(SIM_SEEDS)]
        ok = sum(r.outcome == "flashed" for r in rs)
        rows.append({
            "where": "sim", "rate": rate, "runs": len(rs), "flashed": ok,
            "old": sum(r.outcome == "gave up, old table" for r in rs),
            "new": sum(r.outcome == "gave up, new table" for r in rs),
            "wrong": sum(r.outcome == "wrong" or not r.rerun_ok or not r.line_names_table for r in rs),
            "codes": sorted({0 if r.error is None else int(exit_code_for(r.error)) for r in rs}),
            "ci": wilson(ok, len(rs)),
            "resends": statistics.mean(r.resends for r in rs), "timeouts": statistics.mean(r.timeouts for r in rs),
            "att_per_req": sum(r.attempts for r in rs) / max(1, sum(r.requests for r in rs)),
            "faults": statistics.mean(sum(r.faults.values()) for r in rs),
            "sim_s": statistics.mean(r.sim_seconds for r in rs),
        })
    return rows


def print_noise(rows: List[Dict[str, Any]]) -> None:
    print("8 KiB table (4096-neuron test chip), faults=all; pty rows: medians over "
          f"{PTY_SEEDS} seeds, real time; sim rows: {SIM_SEEDS} seeds in one process, simulated clock")
    print(f"{'link':5s} {'ber':>6s} {'runs':>5s} {'flashed':>8s} {'95% CI':>13s} {'old':>4s} {'new*':>4s} "
          f"{'wrong':>5s} {'exit':>6s} {'time':>8s} {'KiB/s':>7s} {'resends':>8s} {'timeouts':>8s} "
          f"{'att/req':>7s} {'faults':>7s}")
    for r in rows:
        ci = r.get("ci")
        ci_s = f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-"
        t = f"{r['wall_s']:.3f} s" if r["where"] == "pty" else f"{r['sim_s']:.2f} s*"
        kib = f"{r['kib_s']:7.1f}" if r["where"] == "pty" else f"{'-':>7s}"
        print(f"{r['where']:5s} {r['rate']:6g} {r['runs']:5d} {r['flashed']:8d} {ci_s:>13s} {r['old']:4d} "
              f"{r['new']:4d} {r['wrong']:5d} {','.join(map(str, r['codes'])):>6s} {t:>8s} {kib} "
              f"{r['resends']:8.1f} {r['timeouts']:8.1f} {r['att_per_req']:7.2f} {r['faults']:7.1f}")
    print("old: gave up with exit 4, the board runs the complete old table; new*: gave up with exit 4 after the "
          "commit (the read-back was cut), the board runs the new table and the line says so; wrong: anything "
          "else, or a clean re-run that did not finish the job; time*: simulated seconds (timeouts)")


HOSTILE = textwrap.dedent("""
    import json, resource, sys, time, tempfile, pathlib, random
    sys.path.insert(0, sys.argv[1])
    from hw_models.profile import load_profile, ProfileError, list_profiles
    from hw_models.table import GainTable, TableError
    case = sys.argv[2]
    tmp = pathlib.Path(tempfile.mkdtemp())
    if case == "profile devboard (reference)":
        path, load, err = list_profiles()["devboard"], load_profile, ProfileError
    elif case == "table, 2 x 4096 codes (reference)":
        from hw_models.table import KnobTable
        path = tmp / "t.json"
        GainTable(chip_uid="u", profile="p", profile_sha256="ab" * 32,
                  knobs={k: KnobTable("neuron", 8, [i % 256 for i in range(4096)]) for k in ("gain_e", "gain_i")}
                  ).save(path)
        load, err = GainTable.load, TableError
    elif case.startswith("alias bomb"):
        from test_loaders_total import nested_bomb_profile
        path = tmp / "bomb.yaml"
        path.write_text(nested_bomb_profile())
        load, err = load_profile, ProfileError
    elif case == "flow list, 60,000 nodes (250 KiB)":
        path = tmp / "list.yaml"
        path.write_text("description: [" + "0," * 60000 + "0]")
        load, err = load_profile, ProfileError
    elif case == "/dev/zero as a profile":
        path, load, err = "/dev/zero", load_profile, ProfileError
    elif case == "/dev/zero as a table":
        path, load, err = "/dev/zero", GainTable.load, TableError
    elif case == "10 MiB random binary as a table":
        path = tmp / "bin.json"
        path.write_bytes(random.Random(1).randbytes(10 << 20))
        load, err = GainTable.load, TableError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, c = time.perf_counter(), time.process_time()
    try:
        load(path)
        what = "loaded"
    except err as e:
        what = str(e).split(": ", 1)[1][:60]
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_growth_mb": grew, "result": what}))
""")
HOSTILE_CASES = ("profile devboard (reference)", "table, 2 x 4096 codes (reference)",
                 "alias bomb under description: (9 levels x 9)", "flow list, 60,000 nodes (250 KiB)",
                 "/dev/zero as a profile", "/dev/zero as a table", "10 MiB random binary as a table")


def hostile_rows() -> List[Dict[str, Any]]:
    rows = []
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for case in HOSTILE_CASES:
        r = subprocess.run([sys.executable, "-c", HOSTILE, str(REPO_ROOT / "tests"), case], capture_output=True,
                           text=True, timeout=300, env=env)
        if r.returncode != 0:
            rows.append({"case": case, "wall_s": float("nan"), "cpu_s": float("nan"), "rss_growth_mb": float("nan"),
                         "result": f"FAILED: {r.stderr.strip().splitlines()[-1:]}"})
            continue
        rows.append(dict(json.loads(r.stdout), case=case))
    return rows


def print_hostile(rows: List[Dict[str, Any]]) -> None:
    print("each case in a fresh process; RSS growth = peak RSS after minus before the load")
    print(f"{'file':46s} {'wall ms':>8s} {'CPU ms':>7s} {'RSS +MB':>8s} result")
    for r in rows:
        print(f"{r['case']:46s} {r['wall_s'] * 1e3:8.1f} {r['cpu_s'] * 1e3:7.1f} {r['rss_growth_mb']:8.1f} "
              f"{r['result']}")


ROLLBACK_RANDOM = 1000  # trials per byte error rate


def rollback_rows() -> List[Dict[str, Any]]:
    """ROLLBACK under faults (docs/protocol.md "Rollback"): every single fault of each kind, every pair, random
    trials at byte error rates 0 to 1e-3, over three boards (B to A, A to B, across the generation wrap); then
    the flash plans on a board that rolled back (its revoked bank is written next)."""
    sc = F.rollback_scenarios()
    rows = []
    for st, cpu in (_timed(F.rollback_every_single, sc), _timed(F.rollback_every_pair, sc)):
        rows.append(dict(st.row(), cpu_s=cpu))
    for ber in RANDOM_BERS:
        st, cpu = _timed(F.rollback_random_campaign, sc, ROLLBACK_RANDOM, ber=ber, seed=2024)
        rows.append(dict(st.row(), cpu_s=cpu))
    after = [F.after_rollback_scenario()]
    for st, cpu in (_timed(F.every_single, after, F.ALL_KINDS, label="flash after a rollback: every single"),
                    _timed(F.every_pair, after, label="flash after a rollback: every pair of cuts")):
        r = st.row()
        rows.append({"plan": r["plan"], "trials": r["trials"], "faults/trial": r["faults/trial"],
                     "byte error rate": r["byte error rate"], "current": r["old"], "previous": r["new"],
                     "bricked": r["bricked"], "mixed": r["mixed"], "re-run failed": r["re-run failed"],
                     "cpu_s": cpu, "flash": True})
    return rows


def print_rollback(rows: List[Dict[str, Any]]) -> None:
    print(f"{'plan':44s} {'trials':>7s} {'faults':>6s} {'byte err':>8s} {'current':>7s} {'previous':>8s} "
          f"{'bricked':>7s} {'mixed':>6s} {'re-run':>6s} {'CPU s':>6s}")
    for r in rows:
        cur, prev = ("old", "new") if r.get("flash") else ("current", "previous")
        print(f"{r['plan']:44s} {r['trials']:7d} {r['faults/trial']:>6s} {r['byte error rate']:8g} "
              f"{r['current']:7d} {r['previous']:8d} {r['bricked']:7d} {r['mixed']:6d} {r['re-run failed']:6d} "
              f"{r['cpu_s']:6.1f}" + (f"   (columns: {cur} / {prev} table)" if r.get("flash") else ""))


def main() -> None:
    print("ROLLBACK under faults (tests assert 0 bricked, 0 mixed, 0 failed re-runs)")
    print_rollback(rollback_rows())
    print()
    print("NVM multi-fault table: the real firmware (tests assert 0 bricked, 0 mixed, 0 failed re-runs)")
    rows = nvm_rows()
    print_nvm(rows)
    print("\nthe same plans against deliberately broken firmware (tests/fault_controls.py): must not be clean")
    crow = []
    for name, fw in _controls().items():
        crow += nvm_rows(fw, name, per_row=False)
    print_nvm(crow)
    print("\nnoisy link")
    print_noise(noise_rows())
    print("\nhostile files")
    print_hostile(hostile_rows())


if __name__ == "__main__":
    main()
