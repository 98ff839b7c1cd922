"""``eical calibrate``, ``eical track``, ``eical report``: parse, check, call the library session, print.

The sessions are ``calibrate.session.run_calibration`` and ``calibrate.tracking.run_tracking``; the files they write
are described there. Every argument is checked before anything is measured (docs/verdicts.md, "Arguments
refused"): a value that makes no sense is exit 2 with one line. ``calibrate``'s last line is its verdict.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .argtypes import add_seed_argument, add_threads_argument, positive_float, positive_int, seconds, \
    temperature_ramp
from .exits import CliError, ExitCode
from .output import ProgressPrinter, fmt, note, print_json
from .outputs import clear_previous, default_output_dir, prepare_output_dir

__all__ = ["add_subcommands"]

#: the settings a calibration records (summary.json "run") and ``--resume`` takes back; their CLI defaults
RUN_DEFAULTS: dict[str, Any] = {"profile": None, "seed": 0, "backend": "numpy", "controller": "dual-loop",
                                "target_rate": None, "budget": None, "max_iterations": 15, "start_table": None,
                                "evaluate": None, "verify": None, "diagnostics": 5.0, "spec": None}


def _settings(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in RUN_DEFAULTS}


def _open(args: argparse.Namespace) -> Any:
    from ..backends import open_device

    backend = args.backend
    if backend not in ("numpy", "lava") and not backend.startswith("serial:"):
        raise CliError(f"unknown backend {backend!r}; expected numpy, lava or serial:PORT")
    if not backend.startswith("serial:") and args.profile is None:
        raise CliError(f"--backend {backend} needs --profile (an emulated chip is a profile and a seed)")
    return open_device(backend, args.profile, args.seed)


def _check_run_arguments(args: argparse.Namespace) -> Any:
    """Everything that can be judged without the chip; returns the spec."""
    from ..yield_study.spec import SpecError, parse_spec

    if args.require_converged:
        raise CliError("--require-converged was removed: 'converged' said only that the controller stopped planning, "
                       "not that the chip meets its spec; use --require-spec (exit 1 unless the verdict is met)")
    try:
        spec = parse_spec(args.spec)
    except SpecError as e:
        raise CliError(str(e)) from None
    if args.budget is not None:
        from ..controllers import make_controller

        ctrl = make_controller(args.controller, budget_ms=args.budget * 1e3)
        st = ctrl.settings()
        window_ms = st.get("first_window_ms", st.get("window_ms"))
        if window_ms is not None and args.budget * 1e3 < window_ms:
            raise CliError(f"--budget {args.budget:g}: less than one measurement window of the {args.controller} "
                           f"controller ({window_ms / 1e3:g} s); give at least that")
    return spec


def _check_target(args: argparse.Namespace, device: Any) -> None:
    """A ``--target-rate`` outside what the chip's profile can reach (``calibrate.reachable``) is refused."""
    if args.target_rate is None:
        return
    from ..backends import profile_of
    from ..reachable import rate_ceiling_hz, reachable_rates

    prof = profile_of(device)
    if prof is None:
        return
    ceiling = rate_ceiling_hz(prof)
    if args.target_rate > ceiling:
        raise CliError(f"--target-rate {args.target_rate:g}: no {prof.name} neuron fires that fast (at most "
                       f"{ceiling:.0f} Hz, one spike per half a refractory period)")
    rng = reachable_rates(prof)
    if not rng.contains(args.target_rate):
        raise CliError(f"--target-rate {args.target_rate:g}: outside what a {prof.name} chip can reach "
                       f"({rng.low_hz:.3g} to {rng.high_hz:.3g} Hz, the nominal neuron at the knobs' lowest and "
                       f"highest codes)")


def _resume_settings(args: argparse.Namespace) -> tuple[Path, dict, Any]:
    """``--resume DIR``: the run's settings and history from DIR; any run-defining option besides is refused."""
    from ..history import History

    given = [k for k in RUN_DEFAULTS if getattr(args, k) is not None]
    if given or args.out is not None:
        names = ", ".join("--" + k.replace("_", "-") for k in given + (["out"] if args.out is not None else []))
        raise CliError(f"--resume takes the run's settings and directory from {args.resume}/summary.json; "
                       f"drop {names}")
    d = Path(args.resume)
    summary = _read_summary(d)
    run = summary.get("run")
    if not isinstance(run, dict) or set(run) != set(RUN_DEFAULTS):
        raise CliError(f"{d / 'summary.json'}: no run settings to resume (a calibration written by this eical "
                       f"records them)")
    if summary.get("complete") is True:
        raise CliError(f"{d}: that calibration is complete; nothing to resume")
    hist = History.load(d / "history.npz") if (d / "history.npz").exists() else None
    for k, v in run.items():
        setattr(args, k, v)
    _check_run_values(d, args)
    chip = summary.get("chip")
    args.resume_uid = chip.get("uid") if isinstance(chip, dict) else None
    prepare_output_dir(d, "calibration", option="--resume")
    return d, run, hist


def _check_run_values(d: Path, args: argparse.Namespace) -> None:
    """The recorded settings pass the same checks as the options they came from."""
    def bad(k: str) -> CliError:
        return CliError(f"{d / 'summary.json'}: run.{k}: not a value eical calibrate takes")

    for k in ("profile", "start_table", "spec"):
        if getattr(args, k) is not None and not isinstance(getattr(args, k), str):
            raise bad(k)
    if not isinstance(args.backend, str) or not isinstance(args.controller, str):
        raise bad("backend")
    for k in ("seed", "max_iterations"):
        v = getattr(args, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "seed" else 1):
            raise bad(k)
    for k in ("target_rate", "budget", "evaluate", "verify", "diagnostics"):
        v = getattr(args, k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0):
            raise bad(k)


def _read_summary(d: Path) -> dict:
    import json

    from hw_models.files import decode_utf8, read_limited

    p = d / "summary.json"
    if not d.is_dir() or not p.is_file():
        raise CliError(f"--resume {d}: not a calibration output directory (needs summary.json)")
    text = decode_utf8(p, read_limited(p, 64 * 1024 * 1024, "a calibration summary", CliError), "a calibration "
                       "summary", CliError)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise CliError(f"{p}: not valid JSON; expected a calibration summary") from None
    if not isinstance(doc, dict):
        raise CliError(f"{p}: expected a calibration summary (a JSON object)")
    return doc


def _cmd_calibrate(args: argparse.Namespace) -> int:
    resume = None
    if args.resume is not None:
        out, _, resume = _resume_settings(args)
    else:
        for k, v in RUN_DEFAULTS.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
        out = prepare_output_dir(args.out, "calibration", overwrite=args.overwrite) if args.out else None
    spec = _check_run_arguments(args)
    on_term = signal.signal(signal.SIGTERM, _sigterm) if _main_thread() else None
    try:
        return _calibrate_open_device(args, spec, out, resume)
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


def _sigterm(signum: int, frame: Any) -> None:  # a batch system ending the job: stop as Ctrl-C does, keep the record
    raise KeyboardInterrupt("SIGTERM")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _calibrate_open_device(args: argparse.Namespace, spec: Any, out: Optional[Path], resume: Any) -> int:
    from hw_models.profile import load_profile
    from hw_models.table import GainTable

    if args.profile is not None and not args.backend.startswith("serial:"):
        prof = load_profile(args.profile)  # ProfileError: exit 2 naming the file and key
        args.profile = str(prof.source) if Path(str(args.profile)).suffix in (".yaml", ".yml") else args.profile
    device = _open(args)
    with device:
        want = getattr(args, "resume_uid", None)
        if want is not None and want != device.identity.uid:
            raise CliError(f"--resume: the record is of chip {want!r}, this chip is {device.identity.uid!r}",
                           ExitCode.IDENTITY)
        _check_target(args, device)
        start = None
        if resume is not None and resume.start_codes:
            start = resume.start_codes
        elif args.start_table:
            t = GainTable.load(args.start_table)
            t.check_identity(device.identity)
            t.check_knobs(device.knobs)
            start = t.codes()
        if out is None:
            out = default_output_dir(device.identity.uid)
            prepare_output_dir(out, "calibration")
            note(f"no --out given: writing to {out}")
        from ..session import SessionInterrupted, run_calibration  # the analysis libraries: once the checks passed

        if resume is None:
            clear_previous(out, "calibration")  # an earlier calibration here is replaced, not mixed with this one
        pp = ProgressPrinter("measuring", max_iterations=args.max_iterations)
        try:
            outcome = run_calibration(
                device, controller=args.controller, target_rate_hz=args.target_rate, budget_s=args.budget,
                max_iterations=args.max_iterations, start_codes=start, out=out, evaluate_s=args.evaluate,
                report=not args.no_report, progress=pp, verify_s=args.verify, spec=spec, resume=resume,
                diagnostics_s=0.0 if args.no_report else args.diagnostics, settings=_settings(args))
        except SessionInterrupted as e:
            pp.close()
            return _interrupted(e, out)
        finally:
            pp.close()
    summary = outcome.to_dict()
    if args.json:
        print_json(summary)
    else:
        _print_calibration(summary, outcome, out, args)
    if args.require_spec and not outcome.verdict.met:
        raise CliError(outcome.verdict.failure_line() + " (--require-spec)", ExitCode.FAILED)
    return ExitCode.OK


def _interrupted(e: Any, out: Path) -> int:
    from .exits import error_line, exit_code_for

    r = e.outcome.result
    kept = f"kept {r.iterations} iterations ({len(r.history)} windows) in {out}/history.npz, summary.json marked " \
           f"incomplete; continue with: eical calibrate --resume {out}"
    if e.cause is None or isinstance(e.cause, KeyboardInterrupt):
        print(f"eical: error: {e.reason}: {kept}", flush=True, file=sys.stderr)
        return ExitCode.INTERRUPTED
    code = exit_code_for(e.cause) or ExitCode.BOARD
    print(f"eical: {error_line(e.cause, code)}; {kept}", file=sys.stderr, flush=True)
    return code


def _print_calibration(summary: dict, outcome: Any, out: Path, args: argparse.Namespace) -> None:
    n = summary["neurons"]
    b, a = summary["before"], summary["after"]
    why = {"budget": "budget spent", "converged": "the controller's own tolerances met",
           "iterations": "iteration limit", "unreachable": "no group left within the DAC range"}
    print(f"calibrated {summary['chip']['uid']} ({summary['chip']['profile']}, {n['n']} neurons) with "
          f"{summary['controller']['name']}: {summary['iterations']} iterations, "
          f"{summary['model_time_s']:.1f} s model time ({summary['hardware_time_s']:.3g} s on hardware), "
          f"{summary['wall_time_s']:.1f} s wall; stopped: {why.get(summary['stopped'], summary['stopped'])}")
    print(f"  neurons: {n['calibrated']} calibrated, {n['unreachable']} unreachable, {n['dead']} dead")
    print(f"  measured rate: {fmt(b.get('rate_mean_hz'), '.2f')} Hz (CV {fmt(b.get('rate_cv'))}) before -> "
          f"{fmt(a.get('rate_mean_hz'), '.2f')} Hz (CV {fmt(a.get('rate_cv'))}; counting noise alone would give "
          f"{fmt(a.get('counting_cv'))}) in the final {fmt(a.get('window_s'), '.3g')} s")
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
        print(f"  {len(bad)} neurons unreachable within the DAC range: {bad[:20].tolist()}"
              + (" ..." if len(bad) > 20 else ""))
    loose = [c["name"] for c in outcome.verdict.criteria
             if c["uncertainty"] is not None and c["uncertainty"] > 0.1 * c["limit"]]
    if loose:
        print(f"  note: the uncertainty of {', '.join(loose)} is over a tenth of the limit; a longer "
              f"{'--evaluate' if outcome.true_after is not None else '--verify'} narrows it")
    print(f"  wrote {out / 'table.json'}, summary.json, history.npz"
          + ("" if args.no_report else f"; report: {out / 'report.html'}"))
    print(outcome.verdict.line())


def _cmd_track(args: argparse.Namespace) -> int:
    from hw_models.table import GainTable

    from ..tracking import Ramp, TrackerUnfit, run_tracking

    if args.on_board is not None and args.estimator is not None:
        raise CliError("--estimator chooses the host side's estimator; the board runs its own")
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
    if args.out is not None:
        prepare_output_dir(args.out, "tracking run", overwrite=args.overwrite)
    table = GainTable.load(args.table)
    pp = ProgressPrinter("tracking", max_iterations=args.checkpoints, counter="checkpoint")
    try:
        pp.phase("tracking", total=args.temperature_ramp[2], unit="s")
        result = run_tracking(args.profile, args.seed, table, Ramp(*args.temperature_ramp),
                              checkpoints=args.checkpoints, replay_s=args.replay, estimator=args.estimator,
                              progress=pp, out=args.out)
    except TrackerUnfit as e:
        raise CliError(f"{args.table}: {e}") from None
    finally:
        pp.close()
    if args.json:
        print_json(result.to_dict())
        return ExitCode.OK
    r = result.ramp
    print(f"tracked {args.profile} seed {args.seed} over {r.t0_k:.1f} -> {r.t1_k:.1f} K in {r.seconds:.0f} s "
          f"({result.estimator} estimator, {result.windows} windows"
          + (f", {result.frozen_groups} groups frozen" if result.frozen_groups else "") + ")")
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
    from hw_models.table import GainTable

    from ..diagnostics.report import saved_section
    from ..history import History
    from ..report import write_report

    d = Path(args.dir)
    if not all((d / f).is_file() for f in ("summary.json", "history.npz", "table.json")):
        raise CliError(f"{d}: not a calibration output directory (needs summary.json, history.npz and table.json)")
    summary = _read_summary(d)
    if summary.get("complete") is False:
        raise CliError(f"{d}: an incomplete calibration (interrupted); finish it with eical calibrate --resume {d}")
    if not isinstance(summary.get("chip"), dict) or not isinstance(summary.get("neurons"), dict):
        raise CliError(f"{d / 'summary.json'}: not a calibration summary")
    GainTable.load(d / "table.json")  # TableError: exit 2 naming the file
    History.load(d / "history.npz")  # HistoryError: exit 2 naming the file, before the report reads it
    try:
        path = write_report(d, extra_sections=[s for s in [saved_section(d)] if s])
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a summary.json edited by hand, not by eical
        raise CliError(f"{d / 'summary.json'}: not a calibration summary this eical can render "
                       f"({type(e).__name__}: {str(e)[:80]})") from None
    print(f"wrote {path}")
    return ExitCode.OK


def _calibrate_arguments(p: argparse.ArgumentParser) -> None:
    from ..controllers import CONTROLLERS

    p.add_argument("--profile", help="device profile name or YAML path (emulated backends)")
    add_seed_argument(p, default=None)
    add_threads_argument(p)
    p.add_argument("--backend", help="numpy (default), lava, or serial:PORT (a board)")
    p.add_argument("--controller", choices=sorted(CONTROLLERS),
                   help="the calibration controller (default dual-loop; docs/controller.md)")
    p.add_argument("--target-rate", type=positive_float, metavar="HZ",
                   help="target rate in Hz (default: the profile's); refused outside what the profile can reach")
    p.add_argument("--budget", type=positive_float, metavar="SECONDS",
                   help="model time the controller may spend measuring, seconds (dual loop: 90); at least one window")
    p.add_argument("--max-iterations", type=positive_int, metavar="N",
                   help="most loop iterations the controller may run (default 15)")
    p.add_argument("--start-table", metavar="TABLE", help="warm start from this table.json (same chip)")
    p.add_argument("--spec", metavar="rate_cv=0.05,balance_p95=0.05,rate_err=0.03",
                   help="the limits the verdict judges (default: those; per core on shared knobs)")
    p.add_argument("--evaluate", type=seconds(0.0, 1e6), metavar="SECONDS",
                   help="emulated chips: seconds of the judging replay on independent inputs (default: the profile's "
                        "judging length, docs/yield.md; 0: no replay, the measured figures judge)")
    p.add_argument("--verify", type=seconds(0.0, 1e6), metavar="SECONDS",
                   help="seconds of a final verification at the final codes, whose measured figures judge a board "
                        "(default: boards, the profile's judging length but at most 60 s of the board's time; "
                        "emulated chips 0)")
    p.add_argument("--diagnostics", type=seconds(0.0, 3600.0), metavar="SECONDS",
                   help="emulated chips: seconds recorded before and after for the report's balance diagnostics "
                        "(default 5; 0: skip)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: eical-<chip>-<date-time> here); a new, "
                   "empty or earlier calibration directory (README, 'Output paths')")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even if it holds files that are not an eical calibration")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted calibration in DIR with its own "
                   "settings (on an emulated chip it ends with the table of an uninterrupted run)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-report", action="store_true", help="do not render report.html (nor record diagnostics)")
    p.add_argument("--require-spec", action="store_true",
                   help="exit 1, with one line naming every failed criterion, unless the verdict is met")
    p.add_argument("--require-converged", action="store_true",
                   help="removed (it did not say the chip met its spec): use --require-spec")


def add_subcommands(sub: Any) -> None:
    """Register ``calibrate``, ``track`` and ``report``."""
    p = sub.add_parser("calibrate", help="calibrate a chip (emulated or a board) and write its gain table",
                       description="Run a calibration controller against a chip, judge the result against a spec, "
                                   "and write table.json (with the verdict), summary.json, history.npz and "
                                   "report.html to --out. The last line printed is the verdict. Ctrl-C keeps the "
                                   "iterations measured so far; --resume DIR continues them.")
    _calibrate_arguments(p)
    p.set_defaults(func=_cmd_calibrate)

    t = sub.add_parser("track", help="keep a chip calibrated through drift: an emulated chip from the host, or a "
                       "board's own tracker (--on-board)",
                       description="Host side: warm-start from TABLE and track a temperature ramp of an emulated "
                                   "chip, with the on-board tracker's estimator (a table with a tracker section) or "
                                   "the dual loop with forgetting; compare with the same chip on its static table. "
                                   "--port P --on-board "
                                   "start|stop|status: the board's own tracker (RAM only; docs/protocol.md section 12).")
    t.add_argument("--profile", help="device profile name or YAML path (host side)")
    add_seed_argument(t)
    t.add_argument("--table", help="the table.json to start from (host side)")
    t.add_argument("--temperature-ramp", type=temperature_ramp, metavar="T0:T1:SECONDS",
                   help="from T0 to T1 kelvin over SECONDS of model time (host side)")
    t.add_argument("--on-board", choices=("start", "stop", "status"),
                   help="start, stop or ask the board's on-board tracker (with --port)")
    from .board import port_args

    port_args(t, required=False)
    t.add_argument("--revert", action="store_true", help="--on-board stop: put the flashed table's codes back in "
                   "RAM (default: keep the tracked ones)")
    t.add_argument("--estimator", choices=("board", "dual-loop"),
                   help="host side: 'board' runs the on-board tracker's code and settings from the table's tracker "
                   "section (the default when it has one: the figures a board would give), 'dual-loop' the dual loop "
                   "with forgetting (the default for a table without a tracker section)")
    t.add_argument("--backend", default="numpy", help="emulator backend (only numpy runs a temperature ramp)")
    t.add_argument("--checkpoints", type=positive_int, default=6, metavar="N",
                   help="true-figure checkpoints along the ramp (default 6)")
    t.add_argument("--replay", type=positive_float, default=40.0, metavar="SECONDS",
                   help="seconds of replay per checkpoint (default 40)")
    t.add_argument("--out", metavar="DIR", help="write track.json and the final table.json here")
    t.add_argument("--overwrite", action="store_true",
                   help="write into --out even if it holds files that are not an eical tracking run")
    t.add_argument("--json", action="store_true", help="print track.json instead of the table")
    t.set_defaults(func=_cmd_track)

    r = sub.add_parser("report", help="re-render report.html of a calibration output directory",
                       description="Render report.html again from the files of a calibration output directory "
                                   "(summary.json, history.npz, and the diagnostics when recorded).")
    r.add_argument("dir", metavar="DIR", help="a calibration output directory")
    r.set_defaults(func=_cmd_report)
