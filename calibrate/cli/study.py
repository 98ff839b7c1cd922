"""``eical yield``: a yield study of many emulated chips on Dask (docs/yield.md).

``eical yield --profile P --chips N [--first-seed S] [--sweep KEY=V1,V2,... | KEY=START:STOP:COUNT]...
[--spec rate_cv=0.05,balance_p95=0.05,rate_err=0.03] [--controller dual-loop] [--budget SECONDS]
[--evaluate SECONDS] [--reference oracle] [--workers K | --scheduler ADDRESS] [--dashboard] --out DIR [--json]``

Every chip ``(sweep point, seed)`` is calibrated and judged as ``eical calibrate --profile P --seed S
--controller C --budget B --evaluate E`` would (with the point's changes to the profile). Written to ``DIR``:
``results/`` (a Parquet dataset, one row per chip), ``study.json`` (what the study is), ``yield.json`` (per sweep
point: chips, passed, yield with its 95 % Wilson interval, failures per criterion, medians, the oracle's yield),
``report.html`` and its figures as PNG and SVG. Re-running the same command resumes: only chips not yet in
``results/`` are computed.

Exit codes: 0 every requested chip is in the results; 1 some chips could not be run or raised an error (listed;
a re-run retries the missing ones); 2 bad arguments, a profile or sweep value that is invalid, an ``--out`` that
is not writable or holds another study (one line, before anything runs); 130 interrupted (what finished is kept).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

from hw_models.table import json_default as _json_default

from .argtypes import nonneg_int, positive_float, positive_int
from .exits import CliError, ExitCode
from .outputs import prepare_output_dir

__all__ = ["add_subcommands"]

_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://[^\s/]+:\d{1,5}$")


def _writable_dir(path: Path, overwrite: bool) -> None:
    """``--out``: the rule of every output path (``calibrate.cli.outputs``), checked before any chip runs."""
    prepare_output_dir(path, "yield study", overwrite=overwrite)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"--out {path}: not writable ({e.strerror or e})") from None


def _build_study(args: argparse.Namespace):
    from hw_models.profile import load_profile

    from ..yield_study import SpecError, Study, SweepError, parse_spec, parse_sweep

    prof = load_profile(args.profile)  # ProfileError: exit 2 with the file, key path and expectation
    try:
        sweeps = [parse_sweep(s, prof) for s in args.sweep]
        spec = parse_spec(args.spec)
        study = Study(profile=prof, chips=args.chips, sweeps=sweeps, first_seed=args.first_seed, spec=spec,
                      controller=args.controller, budget_s=args.budget, evaluate_s=args.evaluate,
                      oracle=args.reference == "oracle")
        points = study.points()  # every point's profile built and validated now, before anything runs
    except (SweepError, SpecError) as e:
        raise CliError(str(e)) from None
    n_chips = len(points) * args.chips
    if n_chips > 1_000_000:
        raise CliError(f"{n_chips} chips ({len(points)} sweep points x {args.chips}): at most 1000000 per study")
    if study.oracle:
        for vals, p in points:
            if p["recurrent"] is not None:
                raise CliError(f"--reference oracle: {p.name} is a recurrent chip; the oracle needs a feed-forward "
                               f"one (docs/yield.md)")
    return study


def _print_human(outcome, out: Path) -> None:
    s = outcome.summary
    ident = s["study"]
    print(f"yield of {ident['profile']} ({ident['controller']}, spec "
          + ", ".join(f"{k} <= {v:g}" for k, v in ident["spec"].items())
          + f"; judged by a {s['replay_s']:g} s replay): {s['chips_per_point']} chips per point")
    for p in s["points"]:
        label = ", ".join(f"{k}={v}" for k, v in p["values"].items()) or "all chips"
        if p["yield"] is None:
            print(f"  {label}: no chips yet")
            continue
        lo, hi = p["ci95"]
        line = f"  {label}: {p['passed']}/{p['chips']} = {p['yield']:.1%} [{lo:.1%}, {hi:.1%}]"
        if "oracle" in p and p["oracle"]["yield"] is not None:
            o = p["oracle"]
            line += f"; oracle {o['passed']}/{o['chips']} = {o['yield']:.1%} [{o['ci95'][0]:.1%}, {o['ci95'][1]:.1%}]"
        fails = ", ".join(f"{k} {v}" for k, v in p["failures"].items() if v)
        line += f"; failing: {fails or 'none'}"
        if not p["replay_ok"]:
            line += " (replay too short for its limits: use a longer --evaluate)"
        print(line)
    r = s["run"]
    rate = r.get("chips_per_hour_per_worker")
    print(f"  this run: {r['computed']} chips computed, {r['already_done']} already done, on {r['workers']} "
          f"workers in {r['wall_s']:.0f} s" + (f" ({rate:.1f} chips per hour per worker)" if rate else ""))
    print(f"  wrote {out / 'yield.json'}, {out / 'report.html'} and {out / 'results'}/")


def _cmd_yield(args: argparse.Namespace) -> int:
    from ..yield_study import StudyBusy, StudyMismatch, run_study

    if args.scheduler and not _ADDRESS.match(args.scheduler):
        raise CliError(f"--scheduler {args.scheduler!r}: expected an address such as tcp://HOST:PORT")
    if args.dashboard and not args.scheduler and importlib.util.find_spec("bokeh") is None:
        raise CliError("--dashboard: Dask's dashboard needs bokeh on this machine (pip install 'eical[dashboard]')")
    study = _build_study(args)
    out = Path(args.out)
    _writable_dir(out, args.overwrite)

    def log(msg: str) -> None:
        print(f"eical: note: {msg}", file=sys.stderr, flush=True)

    def on_term(signum, frame):  # SIGTERM (a batch system ending the job): stop like Ctrl-C, keep what finished
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        outcome = run_study(study, out, workers=args.workers, scheduler=args.scheduler, dashboard=args.dashboard,
                            log=log)
    except (StudyMismatch, StudyBusy) as e:
        raise CliError(str(e)) from None
    finally:
        signal.signal(signal.SIGTERM, old)
    if args.json:
        print(json.dumps(json.loads((out / "yield.json").read_text()), indent=1, default=_json_default))
    else:
        _print_human(outcome, out)
    missing = sum(p["missing"] for p in outcome.summary["points"])
    if outcome.errors or missing:
        print(f"eical: error: {outcome.errors} chips raised an error and {missing} were not run; re-run the same command "
              f"to retry the missing ones (yield.json lists examples)", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def add_subcommands(sub: Any) -> None:
    """Register ``eical yield`` on the main parser's subparsers."""
    from ..controllers import CONTROLLERS

    p = sub.add_parser(
        "yield", help="yield study: calibrate many emulated chips on Dask and report the fraction within spec",
        description="Calibrate CHIPS emulated chips at every point of the sweeps' grid, judge each by an "
                    "independent replay against the spec, and report the yield with 95 %% Wilson intervals. Runs "
                    "on a local Dask cluster or any running one; resumable (re-run the same command).")
    p.add_argument("--profile", required=True, help="device profile name or YAML path")
    p.add_argument("--chips", type=positive_int, required=True, help="chips (seeds) per sweep point")
    p.add_argument("--first-seed", type=nonneg_int, default=1, help="first mismatch seed (default 1)")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...|KEY=START:STOP:COUNT",
                   help="a profile key path (e.g. knobs.bits=5,6,7,8) or mismatch.scale; repeat for a grid")
    p.add_argument("--spec", metavar="rate_cv=0.05,balance_p95=0.05,rate_err=0.03",
                   help="limits of the criteria (default: those; per core on shared knobs)")
    p.add_argument("--controller", default="dual-loop", choices=sorted(CONTROLLERS),
                   help="the calibration controller (default dual-loop)")
    p.add_argument("--budget", type=positive_float, help="model time the controller may spend, seconds")
    p.add_argument("--evaluate", type=positive_float,
                   help="seconds of the judging replay (default: the profile's length, docs/yield.md)")
    p.add_argument("--reference", choices=("oracle",), help="also run the oracle on every chip")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=positive_int, help="local Dask workers, one thread each (default: one per core)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--dashboard", action="store_true", help="print the address of Dask's dashboard")
    p.add_argument("--out", required=True, metavar="DIR", help="study directory (results, yield.json, report): a new, "
                   "empty or earlier study directory (README, 'Output paths')")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even if it holds files that are not an eical yield study")
    p.add_argument("--json", action="store_true", help="print yield.json instead of the summary")
    p.set_defaults(func=_cmd_yield)
