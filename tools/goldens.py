"""Golden outputs of ``eical calibrate`` and ``eical diagnose``: record them once, compare a later run against them.

Used to prove a refactor keeps behaviour (issue 12): the table codes and ``history.npz`` arrays must be
bit-identical, ``summary.json`` and ``diagnostics.json`` equal figure by figure, wall-clock times and timestamps
excepted.

    python tools/goldens.py record DIR            # run the commands below into DIR/<case>/ (writes DIR/COMMANDS.txt)
    python tools/goldens.py run DIR [CASE ...]    # the same commands into DIR (a new run to compare)
    python tools/goldens.py compare GOLD NEW [CASE ...]   # one line per case and file; exit 1 on any difference

It drives the installed ``eical`` command (``python -m calibrate.cli``), so it records and compares across code
versions without importing them.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CASES = {
    "calibrate-bss2": ["calibrate", "--profile", "bss2", "--seed", "1"],
    "calibrate-devboard": ["calibrate", "--profile", "devboard", "--seed", "1"],
    "calibrate-dynapse2": ["calibrate", "--profile", "dynapse2", "--seed", "1"],
    "calibrate-balanced-net": ["calibrate", "--profile", "balanced-net", "--seed", "1"],
    "diagnose-balanced-net": ["diagnose", "--profile", "balanced-net", "--seed", "1"],
    # the Fano fix's effect over more chips (not bit-identical by design): figures only, no report
    "calibrate-balanced-net-s2": ["calibrate", "--profile", "balanced-net", "--seed", "2", "--no-report"],
    "calibrate-balanced-net-s3": ["calibrate", "--profile", "balanced-net", "--seed", "3", "--no-report"],
}
# keys whose values are wall-clock times or timestamps: never compared
IGNORED_KEYS = {"wall_time_s", "wall_s", "created", "eical_version"}
# a key the golden does not have is an addition, listed but not a difference: everything the golden holds must be
# there, bit for bit
ADDED = "added: "


def _command(case: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "calibrate.cli", *CASES[case], "--out", str(out / case)]


def run(out: Path, cases: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for case in cases:
        cmd = _command(case, out)
        t0, c0 = time.perf_counter(), time.process_time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        (out / f"{case}.stdout").write_text(p.stdout + p.stderr)
        line = f"{' '.join(cmd[2:])}   # exit {p.returncode}, {wall:.0f} s wall"
        print(line, flush=True)
        lines.append(line)
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
    with open(out / "COMMANDS.txt", "a") as f:
        f.write("\n".join(lines) + "\n")


def _diff(a, b, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED_KEYS:
                continue
            if k not in b:
                out.append(f"{path}.{k}: missing in the new run")
                continue
            if k not in a:
                out.append(f"{ADDED}{path}.{k}")
                continue
            _diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} -> {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b or type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        out.append(f"{path}: {a!r} -> {b!r}")


def _json(gold: Path, new: Path, name: str) -> list[str]:
    out: list[str] = []
    _diff(json.loads((gold / name).read_text()), json.loads((new / name).read_text()), name, out)
    return out


def _npz(gold: Path, new: Path, name: str) -> list[str]:
    out = []
    with np.load(gold / name, allow_pickle=False) as a, np.load(new / name, allow_pickle=False) as b:
        for k in sorted(set(a.files) | set(b.files)):
            if k not in b.files:
                out.append(f"{name}:{k}: missing in the new run")
                continue
            if k not in a.files:
                out.append(f"{ADDED}{name}:{k}")
                continue
            x, y = a[k], b[k]
            if k == "iterations":  # the controller's per-iteration figures, a JSON document
                _diff(json.loads(str(x)), json.loads(str(y)), f"{name}:iterations", out)
            elif x.dtype != y.dtype or x.shape != y.shape:
                out.append(f"{name}:{k}: {x.dtype}{x.shape} -> {y.dtype}{y.shape}")
            elif not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                out.append(f"{name}:{k}: {int(np.sum(x != y))} entries differ")
    return out


def compare(gold: Path, new: Path, cases: list[str]) -> int:
    bad = 0
    for case in cases:
        g, n = gold / case, new / case
        files = ["table.json", "summary.json", "history.npz", "diagnostics.json"]
        for name in files:
            if not (g / name).exists():
                continue
            if not (n / name).exists():
                diffs = [f"{name}: missing in the new run"]
            elif name.endswith(".npz"):
                diffs = _npz(g, n, name)
            else:
                diffs = _json(g, n, name)
            added = [d[len(ADDED):] for d in diffs if d.startswith(ADDED)]
            diffs = [d for d in diffs if not d.startswith(ADDED)]
            status = "identical" if not diffs else f"{len(diffs)} differences"
            print(f"{case:28s} {name:18s} {status}" + (f" (+{len(added)} added: {', '.join(added)})" if added else ""))
            for d in diffs[:12]:
                print(f"    {d}")
            if len(diffs) > 12:
                print(f"    ... {len(diffs) - 12} more")
            bad += bool(diffs)
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("record", "run"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("cases", nargs="*")
    c = sub.add_parser("compare")
    c.add_argument("gold")
    c.add_argument("new")
    c.add_argument("cases", nargs="*")
    a = ap.parse_args()
    cases = a.cases or list(CASES)
    if a.cmd in ("record", "run"):
        run(Path(a.dir), cases)
        return 0
    return compare(Path(a.gold), Path(a.new), cases)


if __name__ == "__main__":
    sys.exit(main())
