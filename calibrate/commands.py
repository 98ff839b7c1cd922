"""``eical calibrate``, ``eical track``, ``eical report``: the calibration subcommands (thin: parse, call, print).

Output directory of a calibration (``--out DIR``):

- ``table.json``: the gain table (hw_models.table format), validated on load, refused by any other chip;
- ``summary.json``: figures before and after, neuron accounting, controller and settings, times;
- ``history.npz``: every window (codes, spike counts, proxy readings, times), enough to replay and re-plot;
- ``report.html``: the same as a page with plots (``eical report DIR`` re-renders it from the files).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from hw_models.cli import add_threads_argument
from hw_models.cli import nonneg_int as _nonneg_int
from hw_models.cli import positive_float as _positive
from hw_models.table import json_default as _json_default

from .cli import EXIT_BACKEND, EXIT_FAILED, EXIT_OK, CliError

__all__ = ["add_subcommands", "run_calibration", "run_tracking"]


def _ramp(text: str) -> tuple[float, float, float]:
    parts = text.split(":")
    try:
        t0, t1, sec = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T0:T1:SECONDS (kelvin, kelvin, seconds), got {text!r}") from None
    if len(parts) != 3 or not (sec > 0 and 150 <= t0 <= 450 and 150 <= t1 <= 450):
        raise argparse.ArgumentTypeError(f"expected T0:T1:SECONDS with temperatures in [150, 450] K and SECONDS > 0, "
                                         f"got {text!r}")
    return t0, t1, sec


def _open(args, temperature_k=None):
    from .backends import BackendUnavailable, open_device

    backend = args.backend
    if backend != "numpy" and not backend.startswith("serial:") and backend != "lava":
        raise CliError(f"unknown backend {backend!r}; expected numpy, lava or serial:PORT")
    if not backend.startswith("serial:") and (args.profile is None or args.seed is None):
        raise CliError(f"--backend {backend} needs --profile and --seed")
    try:
        return open_device(backend, args.profile, args.seed, temperature_k=temperature_k)
    except BackendUnavailable as e:
        raise CliError(str(e), EXIT_BACKEND) from None


def _emulated(device) -> bool:
    return getattr(device, "chip", None) is not None


class _ProgressPrinter:
    def __init__(self, label: str, enabled: Optional[bool] = None):
        from .progress import Progress

        self.p = Progress(label, enabled=enabled)

    def __call__(self, it: int, t_s: float, info: dict) -> None:
        parts = [f"iter {it:2d}", f"model {t_s:7.1f} s"]
        if info.get("rate_mean_hz") is not None:
            parts.append(f"rate {info['rate_mean_hz']:6.2f} Hz")
        if info.get("rate_cv") is not None:
            parts.append(f"CV {info['rate_cv']:.3f}")
        if info.get("balance_p95") is not None:
            parts.append(f"balance p95 {info['balance_p95']:.3f}")
        if info.get("phase") and info["phase"] != "loop":
            parts.append(str(info["phase"]))
        self.p.update("  ".join(parts), force=True)

    def close(self) -> None:
        self.p.close()


def run_calibration(device, *, controller: str = "dual-loop", target_rate_hz: Optional[float] = None,
                    budget_s: Optional[float] = None, max_iterations: int = 15, start_codes=None, out=None,
                    evaluate_s: float = 0.0, report: bool = True, progress=None, verify_s: float = 0.0,
                    diagnostics_s: float = 0.0):
    """Calibrate ``device`` and write the output directory. Returns (result, table, summary dict)."""
    from hw_models.table import GainTable

    from .controllers import Targets, make_controller
    from .run import calibrate

    prof = getattr(device, "profile", None)
    if prof is None and device.identity.profile:
        try:
            from hw_models.profile import load_profile

            prof = load_profile(device.identity.profile)  # a board's profile, when installed here
        except Exception:
            prof = None
    targets = (Targets.from_profile(prof, rate_hz=target_rate_hz) if prof is not None
               else Targets(rate_hz=target_rate_hz if target_rate_hz is not None else 10.0))
    rate = targets.rate_hz
    kw = {}
    if budget_s is not None:
        kw["budget_ms"] = budget_s * 1e3
    ctrl = make_controller(controller, **kw)
    result = calibrate(device, ctrl, targets=targets, start_codes=start_codes, max_iterations=max_iterations,
                       progress=progress, verify_ms=verify_s * 1e3)
    summary = result.summary()
    summary["code_ref"] = {k: int(spec.code_ref) for k, spec in device.knobs.items()}
    if evaluate_s > 0 and _emulated(device):
        from .metrics import counting_floor, true_figures

        tf = true_figures(device.profile, device.chip.seed, result.codes, replay_s=evaluate_s, target_rate_hz=rate)
        summary["true_after"] = tf.to_dict()
        floor = counting_floor(rate, result.model_ms / 1e3, tf.fano if np.isfinite(tf.fano) else 1.0)
        summary["counting_floor"] = floor
        summary["cv_over_floor"] = tf.rate_cv_deconvolved / floor if floor > 0 else None
    tdict = {"rate_hz": rate, "proxy_pa": 0.0}
    if targets.rate_inh_hz is not None:
        tdict["rate_inh_hz"] = targets.rate_inh_hz
    table = GainTable.from_codes(device.identity, device.knobs, result.codes, targets=tdict,
                                 metrics={"before": result.before, "after": result.after},
                                 controller={"name": result.controller, "settings": result.controller_settings})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        table.save(out / "table.json")
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
        result.history.save(out / "history.npz")
        if report:
            from .report import write_report

            sections = []
            if diagnostics_s > 0 and _emulated(device):
                # the balance diagnostics before (start codes) and after (final codes), each a fresh recording
                from .report_diagnostics import calibration_section

                sec = calibration_section(out, device, start_codes, result.codes, duration_s=diagnostics_s)
                if sec:
                    sections.append(sec)
                dj = out / "diagnostics.json"
                if dj.is_file():
                    summary["diagnostics"] = json.loads(dj.read_text())
                    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
            write_report(out, extra_sections=sections)
    return result, table, summary


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _cmd_calibrate(args) -> int:
    from hw_models.table import GainTable

    start = None
    device = _open(args)
    with device:
        if args.start_table:
            t = GainTable.load(args.start_table)
            t.check_identity(device.identity)
            t.check_knobs(device.knobs)
            start = t.codes()
        pp = _ProgressPrinter("calibrate")
        try:
            result, table, summary = run_calibration(
                device, controller=args.controller, target_rate_hz=args.target_rate, budget_s=args.budget,
                max_iterations=args.max_iterations, start_codes=start, out=args.out, evaluate_s=args.evaluate,
                report=not args.no_report, progress=pp, verify_s=args.verify, diagnostics_s=args.diagnostics)
        finally:
            pp.close()
    if args.json:
        print(json.dumps(summary, indent=1, default=_json_default))
    else:
        n = summary["neurons"]
        b, a = summary["before"], summary["after"]
        print(f"calibrated {summary['chip']['uid']} ({summary['chip']['profile']}, {n['n']} neurons) with "
              f"{summary['controller']['name']}: {summary['iterations']} iterations, "
              f"{summary['model_time_s']:.1f} s model time ({summary['hardware_time_s']:.3g} s on hardware), "
              f"{summary['wall_time_s']:.1f} s wall; stopped: {summary['stopped']}")
        print(f"  neurons: {n['calibrated']} calibrated, {n['unreachable']} unreachable, {n['dead']} dead")
        print(f"  measured rate: {_fmt(b.get('rate_mean_hz'), '.2f')} Hz (CV {_fmt(b.get('rate_cv'))}) before -> "
              f"{_fmt(a.get('rate_mean_hz'), '.2f')} Hz (CV {_fmt(a.get('rate_cv'))}, of which counting noise "
              f"{_fmt(a.get('counting_cv'))}) in the last window")
        if a.get("balance_p95") is not None:
            print(f"  measured balance index p95: {_fmt(b.get('balance_p95'))} before -> {_fmt(a.get('balance_p95'))}")
        if "true_after" in summary:
            t = summary["true_after"]
            print(f"  true figures ({t['replay_s']:.0f} s replay, independent inputs): rate {t['rate_mean_hz']:.2f} Hz, "
                  f"CV {t['rate_cv_deconvolved']:.3f} (raw {t['rate_cv']:.3f}, counting {t['counting_cv']:.3f}), "
                  f"balance index median {t['balance_median']:.4f} p95 {t['balance_p95']:.4f}")
            if t.get("group_rate_err_max") is not None:
                print(f"  per-core: max |rate/target - 1| {t['group_rate_err_max']:.4f}, "
                      f"max core balance index {t['group_balance_max']:.4f}")
        if n["unreachable"]:
            bad = np.flatnonzero(result.status.unreachable)
            print(f"  calibration failed for {len(bad)} neurons (unreachable within the DAC range): {bad[:20].tolist()}"
                  + (" ..." if len(bad) > 20 else ""))
        if args.out:
            print(f"  wrote {Path(args.out) / 'table.json'}, summary.json, history.npz"
                  + ("" if args.no_report else f"; report: {Path(args.out) / 'report.html'}"))
    if args.require_converged and summary["stopped"] != "converged":
        return EXIT_FAILED
    return EXIT_OK


def run_tracking(profile, seed: int, table, ramp: tuple[float, float, float], *, checkpoints: int = 6,
                 replay_s: float = 40.0, window_s: float = 5.0, halflife_s: float = 15.0, progress=None) -> dict:
    """Keep an emulated chip calibrated while its temperature ramps; compare with the same chip on its static table.

    The tracking controller is the dual loop with forgetting (old windows lose weight with ``halflife_s``) and
    fixed windows, warm-started from ``table``. At ``checkpoints`` instants the *true* figures of the chip at that
    temperature are read by a replay (independent inputs) with the codes in force then, and with the static table.
    """
    from hw_models.emulator import NumpyDevice

    from .controllers import DualLoop, DualLoopSettings, Targets
    from .metrics import true_figures
    from .run import calibrate

    t0, t1, sec = ramp
    dev = NumpyDevice(profile, seed, temperature_k=t0)
    table.check_identity(dev.identity)
    table.check_knobs(dev.knobs)
    rate = table.targets.get("rate_hz", dev.profile["targets"]["rate_hz"])
    static = table.codes()
    total_ms = sec * 1e3

    def temp_at(t_ms: float) -> float:
        return t0 + (t1 - t0) * min(max(t_ms / total_ms, 0.0), 1.0)

    marks = np.linspace(0.0, total_ms, checkpoints)
    rows = []
    next_mark = [0]
    # the table's rates are known to about the precision its calibration stopped at: a warm-start prior, so the
    # first few 5 s windows (counting noise ~0.15 each) do not undo the per-neuron calibration
    ctrl = DualLoop(budget_ms=total_ms, first_window_ms=window_s * 1e3, max_growth=1.0,
                    forget_halflife_ms=halflife_s * 1e3, rate_tol=1e-9, balance_tol=1e-9,
                    prior_rate_se=DualLoopSettings().rate_tol)

    def checkpoint(t_ms: float) -> None:
        T = temp_at(t_ms)
        tracked = true_figures(dev.profile, seed, ctrl.codes, replay_s=replay_s, target_rate_hz=rate, temperature_k=T)
        fixed = true_figures(dev.profile, seed, static, replay_s=replay_s, target_rate_hz=rate, temperature_k=T)
        rows.append({"model_time_s": t_ms / 1e3, "temperature_k": T,
                     "tracked": tracked.to_dict(), "static": fixed.to_dict()})
        if progress is not None:
            progress(len(rows), t_ms / 1e3, {"rate_mean_hz": tracked.rate_mean_hz, "rate_cv": tracked.rate_cv})

    def environment(t_ms: float) -> None:
        dev.set_temperature(temp_at(t_ms))
        while next_mark[0] < len(marks) and t_ms >= marks[next_mark[0]] - 1e-6:
            checkpoint(t_ms)
            next_mark[0] += 1

    result = calibrate(dev, ctrl, targets=Targets(rate_hz=rate), start_codes=static, max_iterations=10 ** 6,
                       environment=environment)
    while next_mark[0] < len(marks):
        checkpoint(total_ms)
        next_mark[0] += 1
    tr = [r["tracked"] for r in rows]
    st = [r["static"] for r in rows]
    return {
        "ramp": {"T0_K": t0, "T1_K": t1, "seconds": sec}, "checkpoints": rows,
        "tracked_worst": {"rate_cv_deconvolved": max(x["rate_cv_deconvolved"] for x in tr),
                          "rate_err": max(abs(x["rate_mean_hz"] / rate - 1) for x in tr),
                          "balance_p95": max(x["balance_p95"] for x in tr)},
        "static_worst": {"rate_cv_deconvolved": max(x["rate_cv_deconvolved"] for x in st),
                         "rate_err": max(abs(x["rate_mean_hz"] / rate - 1) for x in st),
                         "balance_p95": max(x["balance_p95"] for x in st)},
        "final_codes": {k: v.tolist() for k, v in result.codes.items()},
        "windows": len(result.history), "target_rate_hz": rate,
    }


def _cmd_track(args) -> int:
    from hw_models.table import GainTable

    if args.backend != "numpy":
        raise CliError("eical track runs the emulated chip's temperature ramp: only --backend numpy")
    table = GainTable.load(args.table)
    pp = _ProgressPrinter("track")
    try:
        out = run_tracking(args.profile, args.seed, table, args.temperature_ramp, checkpoints=args.checkpoints,
                           replay_s=args.replay, progress=pp)
    finally:
        pp.close()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "track.json").write_text(json.dumps(out, indent=1, default=_json_default) + "\n")
        new = GainTable.load(args.table)
        for k, v in out["final_codes"].items():
            new.knobs[k].codes = [int(c) for c in v]
        new.save(Path(args.out) / "table.json")
    if args.json:
        print(json.dumps(out, indent=1, default=_json_default))
    else:
        r = out["ramp"]
        print(f"tracked {args.profile} seed {args.seed} over {r['T0_K']:.1f} -> {r['T1_K']:.1f} K in {r['seconds']:.0f} s")
        print("  t [s]    T [K]   tracked: rate  CV     bal p95 | static: rate  CV     bal p95")
        for c in out["checkpoints"]:
            a, s = c["tracked"], c["static"]
            print(f"  {c['model_time_s']:6.1f}  {c['temperature_k']:6.1f}   {a['rate_mean_hz']:12.2f}  "
                  f"{a['rate_cv_deconvolved']:.3f}  {a['balance_p95']:.3f}  | {s['rate_mean_hz']:11.2f}  "
                  f"{s['rate_cv_deconvolved']:.3f}  {s['balance_p95']:.3f}")
        tw, sw = out["tracked_worst"], out["static_worst"]
        print(f"  worst tracked: CV {tw['rate_cv_deconvolved']:.3f}, |rate error| {tw['rate_err']:.3f}; "
              f"worst static: CV {sw['rate_cv_deconvolved']:.3f}, |rate error| {sw['rate_err']:.3f}")
    return EXIT_OK


def _cmd_report(args) -> int:
    from .report import write_report

    from .report_diagnostics import saved_section

    d = Path(args.dir)
    if not (d / "summary.json").is_file() or not (d / "history.npz").is_file():
        raise CliError(f"{d}: not a calibration output directory (needs summary.json and history.npz)")
    path = write_report(d, extra_sections=[s for s in [saved_section(d)] if s])
    print(f"wrote {path}")
    return EXIT_OK


def add_subcommands(sub) -> None:
    from .controllers import CONTROLLERS

    p = sub.add_parser("calibrate", help="calibrate a chip (emulated or a board) and write its gain table",
                       description="Run a calibration controller against a chip; write table.json, summary.json, "
                                   "history.npz and report.html to --out.")
    p.add_argument("--profile", help="device profile name or YAML path (emulated backends)")
    p.add_argument("--seed", type=_nonneg_int, help="mismatch seed of the emulated chip")
    add_threads_argument(p)
    p.add_argument("--backend", default="numpy", help="numpy (default), lava, or serial:PORT")
    p.add_argument("--controller", default="dual-loop", choices=sorted(CONTROLLERS))
    p.add_argument("--target-rate", type=_positive, help="target rate in Hz (default: the profile's)")
    p.add_argument("--budget", type=_positive, help="model time the controller may spend, seconds (dual loop: 90)")
    p.add_argument("--max-iterations", type=_nonneg_int, default=15)
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

    t = sub.add_parser("track", help="keep an emulated chip calibrated through a temperature ramp",
                       description="Warm-start from TABLE and track a temperature ramp with the dual loop; compare "
                                   "with the same chip on its static table.")
    t.add_argument("--profile", required=True)
    t.add_argument("--seed", type=_nonneg_int, required=True)
    t.add_argument("--table", required=True, help="the table.json to start from")
    t.add_argument("--temperature-ramp", type=_ramp, required=True, metavar="T0:T1:SECONDS")
    t.add_argument("--backend", default="numpy")
    t.add_argument("--checkpoints", type=_nonneg_int, default=6)
    t.add_argument("--replay", type=_positive, default=40.0, help="seconds of replay per checkpoint")
    t.add_argument("--out", help="write track.json and the final table.json here")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_cmd_track)

    r = sub.add_parser("report", help="re-render report.html of a calibration output directory")
    r.add_argument("dir")
    r.set_defaults(func=_cmd_report)
