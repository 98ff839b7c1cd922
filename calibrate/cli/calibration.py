"""``eical calibrate``, ``eical track``, ``eical report``: parse, call the library session, print.

The sessions are ``calibrate.session.run_calibration`` and ``calibrate.tracking.run_tracking``; the files they write
are described there.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .argtypes import add_threads_argument, nonneg_int, positive_float, temperature_ramp
from .exits import CliError, ExitCode
from .output import ProgressPrinter, fmt, print_json

__all__ = ["add_subcommands"]


def _open(args: argparse.Namespace) -> Any:
    from ..backends import open_device

    backend = args.backend
    if backend not in ("numpy", "lava") and not backend.startswith("serial:"):
        raise CliError(f"unknown backend {backend!r}; expected numpy, lava or serial:PORT")
    if not backend.startswith("serial:") and (args.profile is None or args.seed is None):
        raise CliError(f"--backend {backend} needs --profile and --seed")
    return open_device(backend, args.profile, args.seed)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from hw_models.table import GainTable

    from ..session import run_calibration

    device = _open(args)
    with device:
        start = None
        if args.start_table:
            t = GainTable.load(args.start_table)
            t.check_identity(device.identity)
            t.check_knobs(device.knobs)
            start = t.codes()
        pp = ProgressPrinter("calibrate")
        try:
            outcome = run_calibration(
                device, controller=args.controller, target_rate_hz=args.target_rate, budget_s=args.budget,
                max_iterations=args.max_iterations, start_codes=start, out=args.out, evaluate_s=args.evaluate,
                report=not args.no_report, progress=pp, verify_s=args.verify,
                diagnostics_s=0.0 if args.no_report else args.diagnostics)
        finally:
            pp.close()
    summary = outcome.to_dict()
    if args.json:
        print_json(summary)
    else:
        _print_calibration(summary, outcome, args)
    if args.require_converged and not outcome.converged:
        return ExitCode.FAILED
    return ExitCode.OK


def _print_calibration(summary: dict, outcome: Any, args: argparse.Namespace) -> None:
    n = summary["neurons"]
    b, a = summary["before"], summary["after"]
    print(f"calibrated {summary['chip']['uid']} ({summary['chip']['profile']}, {n['n']} neurons) with "
          f"{summary['controller']['name']}: {summary['iterations']} iterations, "
          f"{summary['model_time_s']:.1f} s model time ({summary['hardware_time_s']:.3g} s on hardware), "
          f"{summary['wall_time_s']:.1f} s wall; stopped: {summary['stopped']}")
    print(f"  neurons: {n['calibrated']} calibrated, {n['unreachable']} unreachable, {n['dead']} dead")
    print(f"  measured rate: {fmt(b.get('rate_mean_hz'), '.2f')} Hz (CV {fmt(b.get('rate_cv'))}) before -> "
          f"{fmt(a.get('rate_mean_hz'), '.2f')} Hz (CV {fmt(a.get('rate_cv'))}, of which counting noise "
          f"{fmt(a.get('counting_cv'))}) in the last window")
    if a.get("balance_p95") is not None:
        print(f"  measured balance index p95: {fmt(b.get('balance_p95'))} before -> {fmt(a.get('balance_p95'))}")
    t = outcome.true_after
    if t is not None:
        print(f"  true figures ({t.replay_s:.0f} s replay, independent inputs): rate {t.rate_mean_hz:.2f} Hz, "
              f"CV {t.rate_cv_deconvolved:.3f} (raw {t.rate_cv:.3f}, counting {t.counting_cv:.3f}), "
              f"balance index median {t.balance_median:.4f} p95 {t.balance_p95:.4f}")
        if t.group_rate_err_max is not None:
            print(f"  per-core: max |rate/target - 1| {t.group_rate_err_max:.4f}, "
                  f"max core balance index {t.group_balance_max:.4f}")
        if t.rate_mean_exc_hz is not None:
            print(f"  populations: E {t.rate_mean_exc_hz:.2f} Hz, I {t.rate_mean_inh_hz:.2f} Hz")
    if n["unreachable"]:
        bad = np.flatnonzero(outcome.result.status.unreachable)
        print(f"  calibration failed for {len(bad)} neurons (unreachable within the DAC range): {bad[:20].tolist()}"
              + (" ..." if len(bad) > 20 else ""))
    if args.out:
        print(f"  wrote {Path(args.out) / 'table.json'}, summary.json, history.npz"
              + ("" if args.no_report else f"; report: {Path(args.out) / 'report.html'}"))


def _cmd_track(args: argparse.Namespace) -> int:
    from hw_models.table import GainTable

    from ..tracking import Ramp, run_tracking

    if args.on_board is not None:
        if args.port is None:
            raise CliError("eical track --on-board needs --port P (the board whose tracker to start, stop or ask)")
        from .board import cmd_track_onboard

        return cmd_track_onboard(args)
    if args.port is not None:
        raise CliError("eical track --port P needs --on-board start|stop|status (host-side tracking runs an emulated "
                       "chip: --profile, --seed, --table, --temperature-ramp)")
    if args.revert:
        raise CliError("--revert goes with --on-board stop")
    missing = [f"--{k.replace('_', '-')}" for k in ("profile", "seed", "table", "temperature_ramp")
               if getattr(args, k) is None]
    if missing:
        raise CliError(f"eical track needs {', '.join(missing)} (or --port P --on-board start|stop|status)")
    if args.backend != "numpy":
        raise CliError("eical track runs the emulated chip's temperature ramp: only --backend numpy")
    table = GainTable.load(args.table)
    pp = ProgressPrinter("track")
    try:
        result = run_tracking(args.profile, args.seed, table, Ramp(*args.temperature_ramp),
                              checkpoints=args.checkpoints, replay_s=args.replay, progress=pp, out=args.out)
    finally:
        pp.close()
    if args.json:
        print_json(result.to_dict())
        return ExitCode.OK
    r = result.ramp
    print(f"tracked {args.profile} seed {args.seed} over {r.t0_k:.1f} -> {r.t1_k:.1f} K in {r.seconds:.0f} s")
    print("  t [s]    T [K]   tracked: rate  CV     bal p95 | static: rate  CV     bal p95")
    for c in result.checkpoints:
        a, s = c.tracked, c.static
        print(f"  {c.model_time_s:6.1f}  {c.temperature_k:6.1f}   {a.rate_mean_hz:12.2f}  {a.rate_cv_deconvolved:.3f}  "
              f"{a.balance_p95:.3f}  | {s.rate_mean_hz:11.2f}  {s.rate_cv_deconvolved:.3f}  {s.balance_p95:.3f}")
    tw, sw = result.worst("tracked"), result.worst("static")
    print(f"  worst tracked: CV {tw['rate_cv_deconvolved']:.3f}, |rate error| {tw['rate_err']:.3f}; "
          f"worst static: CV {sw['rate_cv_deconvolved']:.3f}, |rate error| {sw['rate_err']:.3f}")
    return ExitCode.OK


def _cmd_report(args: argparse.Namespace) -> int:
    from ..diagnostics.report import saved_section
    from ..report import write_report

    d = Path(args.dir)
    if not (d / "summary.json").is_file() or not (d / "history.npz").is_file():
        raise CliError(f"{d}: not a calibration output directory (needs summary.json and history.npz)")
    path = write_report(d, extra_sections=[s for s in [saved_section(d)] if s])
    print(f"wrote {path}")
    return ExitCode.OK


def add_subcommands(sub: Any) -> None:
    """Register ``calibrate``, ``track`` and ``report``."""
    from ..controllers import CONTROLLERS

    p = sub.add_parser("calibrate", help="calibrate a chip (emulated or a board) and write its gain table",
                       description="Run a calibration controller against a chip; write table.json, summary.json, "
                                   "history.npz and report.html to --out.")
    p.add_argument("--profile", help="device profile name or YAML path (emulated backends)")
    p.add_argument("--seed", type=nonneg_int, help="mismatch seed of the emulated chip")
    add_threads_argument(p)
    p.add_argument("--backend", default="numpy", help="numpy (default), lava, or serial:PORT")
    p.add_argument("--controller", default="dual-loop", choices=sorted(CONTROLLERS))
    p.add_argument("--target-rate", type=positive_float, help="target rate in Hz (default: the profile's)")
    p.add_argument("--budget", type=positive_float, help="model time the controller may spend, seconds (dual loop: 90)")
    p.add_argument("--max-iterations", type=nonneg_int, default=15)
    p.add_argument("--start-table", help="warm start from this table.json (same chip)")
    p.add_argument("--evaluate", type=float, default=30.0,
                   help="emulated chips: seconds of independent replay for the true figures (0: skip)")
    p.add_argument("--verify", type=float, default=0.0, help="seconds of a final verification window at the final codes")
    p.add_argument("--diagnostics", type=float, default=5.0,
                   help="emulated chips: seconds recorded before and after for the report's balance diagnostics "
                        "(0: skip)")
    p.add_argument("--out", help="output directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-report", action="store_true", help="do not render report.html")
    p.add_argument("--require-converged", action="store_true", help="exit 1 unless the controller converged")
    p.set_defaults(func=_cmd_calibrate)

    t = sub.add_parser("track", help="keep a chip calibrated through drift: an emulated chip from the host, or a "
                       "board's own tracker (--on-board)",
                       description="Host side: warm-start from TABLE and track a temperature ramp with the dual loop; "
                                   "compare with the same chip on its static table. --port P --on-board "
                                   "start|stop|status: the board's own tracker (RAM only; docs/protocol.md).")
    t.add_argument("--profile")
    t.add_argument("--seed", type=nonneg_int)
    t.add_argument("--table", help="the table.json to start from")
    t.add_argument("--temperature-ramp", type=temperature_ramp, metavar="T0:T1:SECONDS")
    t.add_argument("--on-board", choices=("start", "stop", "status"),
                   help="start, stop or ask the board's on-board tracker (with --port)")
    from .board import port_args

    port_args(t, required=False)
    t.add_argument("--revert", action="store_true", help="--on-board stop: put the flashed table's codes back in "
                   "RAM (default: keep the tracked ones)")
    t.add_argument("--backend", default="numpy")
    t.add_argument("--checkpoints", type=nonneg_int, default=6)
    t.add_argument("--replay", type=positive_float, default=40.0, help="seconds of replay per checkpoint")
    t.add_argument("--out", help="write track.json and the final table.json here")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_cmd_track)

    r = sub.add_parser("report", help="re-render report.html of a calibration output directory")
    r.add_argument("dir")
    r.set_defaults(func=_cmd_report)
