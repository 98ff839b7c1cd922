"""``eical diagnose``: record an emulated chip and report its balance diagnostics.

``eical diagnose --profile P --seed S [--table T] [--duration SEC] [--backend numpy|lava] --out DIR [--json]
[--require-healthy] [--save-recording]``: the session is ``calibrate.diagnostics.session.run_diagnose`` (its
docstring lists the files). Exit codes: 0; 1 with ``--require-healthy`` when the chip is flagged; 2 bad arguments or
input files; 3 a table for another chip (nothing written); 7 backend unavailable.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from .argtypes import add_seed_argument, add_threads_argument, seconds
from .exits import ExitCode
from .output import fmt, print_json
from .outputs import prepare_output_dir

__all__ = ["add_subcommands"]


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from hw_models.table import GainTable

    from ..backends import BackendUnavailable, lava_available
    from ..progress import PhaseProgress

    if args.backend == "lava":
        why = lava_available()
        if why:
            raise BackendUnavailable(why)
    out = prepare_output_dir(args.out, "diagnosis", overwrite=args.overwrite)  # before anything runs
    table = GainTable.load(args.table) if args.table else None  # TableError -> exit 2
    from ..diagnostics.session import run_diagnose  # the analysis libraries, once the arguments passed
    with PhaseProgress() as prog:
        def progress(phase: str, done: Optional[float], total: Optional[float]) -> None:
            if phase != prog.phase_name:
                # diagnosing and plotting report no count: a forecast from the recording's own length
                prog.phase(phase, total=total, unit="s") if total is not None else \
                    prog.phase(phase, estimate_s=max(2.0, 0.5 * args.duration))
            if done is not None:
                prog.update(completed=done)

        result = run_diagnose(args.profile, args.seed, table=table, duration_s=args.duration, backend=args.backend,
                              out=out, save_recording=args.save_recording, progress=progress)
    if args.json:
        print_json(result.to_dict())
    else:
        _print_human(result, args.out, args.save_recording)
    if args.require_healthy and not result.healthy:
        return ExitCode.FAILED
    return ExitCode.OK


def _print_human(result: Any, out: Optional[str], saved: bool) -> None:
    h, ident, d = result.headline, result.identity, result.diagnostics
    codes = "gain table" if result.codes == "table" else "nominal codes"
    print(f"diagnosed {ident.uid} ({ident.profile}, {ident.n_neurons} {ident.model} neurons) at {codes}: "
          f"{result.duration_s:g} s recorded, {result.wall_s['record']:.1f} s wall")
    pops = "" if h.rate_inh_hz is None else f" (E {fmt(h.rate_exc_hz, '.2f')} Hz, I {fmt(h.rate_inh_hz, '.2f')} Hz)"
    print(f"  rate {fmt(h.rate_mean_hz, '.2f')} Hz{pops}; ISI CV median {fmt(h.cv_median, '.2f')}, "
          f"fluctuation-driven {fmt(h.fluctuation_driven_fraction, '.0%')}")
    print(f"  balance index median {fmt(h.balance_index_median)} (p90 {fmt(h.balance_index_p90)}, signed "
          f"{fmt(h.signed_balance_median, '+.3f')}); <ge>/<gi> {fmt(h.conductance_ratio_median)} vs "
          f"{fmt(h.conductance_ratio_theory)} at balance")
    if h.ei_currents is not None:
        print(f"  E/I currents across scales: distance from balance {fmt(h.ei_currents.ei_current_imbalance_median)}, "
              f"correlation {fmt(h.ei_currents.ei_current_rho_median)}")
    if h.ei_rates is not None:
        er = h.ei_rates
        judged = (f"noise-corrected {fmt(er.ei_rate_rho_signal_median)} over {er.ei_rate_shared_scales} scales"
                  if er.ei_rate_rho_signal_median is not None else "asynchronous (counting noise only): not judged")
        print(f"  E/I rates across scales: correlation {fmt(er.ei_rate_rho_median)}, {judged}")
    b = h.branching
    if b is not None and b.branching_fit_ok:
        print(f"  branching ratio m {fmt(b.branching_m, '.4f')} [{fmt(b.branching_ci_low, '.4f')}, "
              f"{fmt(b.branching_ci_high, '.4f')}] at {fmt(b.branching_bin_ms, 'g')} ms, "
              f"tau {fmt(b.branching_tau_ms, '.1f')} ms")
    elif b is not None:
        print(f"  branching ratio not meaningful (r_1 = {fmt(b.branching_r1)})")
    m = h.mode
    if m is not None and m.mode_modulus is not None:
        osc = f", {m.mode_freq_hz:.0f} Hz oscillation" if (m.mode_freq_hz or 0) > 0 else ", not oscillating"
        print(f"  dominant mode of the activity: |lambda| {m.mode_modulus:.4f} per {m.mode_bin_ms:g} ms "
              f"(decay {fmt(m.mode_tau_ms, '.1f')} ms{osc})")
    print(f"  synchrony: count correlation 30 ms {fmt(h.count_corr_by_window_ms.get(30.0))}, chi "
          f"{fmt(h.synchrony_chi)}; gamma depth {fmt(h.gamma.gamma_modulation if h.gamma else None)}")
    print(f"  {'healthy' if d.healthy else 'FLAGGED'}: flags {', '.join(d.flags) if d.flags else 'none'}")
    for n in d.notes:
        print(f"  note: {n}")
    if out:
        print(f"  wrote {Path(out) / 'diagnostics.json'}, diagnose.html{', recording.npz' if saved else ''}")


def add_subcommands(sub: Any) -> None:
    """Register ``diagnose``."""
    from ..diagnostics.defaults import DEFAULT_DURATION_S, MIN_DURATION_S

    p = sub.add_parser(
        "diagnose", help="record an emulated chip and report its E/I balance diagnostics",
        description="Run an emulated chip (nominal codes, or a gain table's) for DURATION seconds of model time "
                    "after a short settle, record every spike and the sampled currents, and report the balance "
                    "diagnostics (balance index, irregularity, multiscale E/I co-fluctuation, branching ratio, "
                    "spectrum, synchrony) with their flags. Writes diagnostics.json and diagnose.html to --out.")
    p.add_argument("--profile", required=True, help="device profile name or YAML path")
    add_seed_argument(p)
    add_threads_argument(p)
    p.add_argument("--table", help="gain table (table.json) to apply; refused (exit 3) if made for another chip")
    p.add_argument("--duration", type=seconds(MIN_DURATION_S, 3600.0), default=DEFAULT_DURATION_S, metavar="SEC",
                   help=f"model seconds recorded (default {DEFAULT_DURATION_S:g}; at least {MIN_DURATION_S:g})")
    p.add_argument("--backend", choices=("numpy", "lava"), default="numpy",
                   help="emulator backend (the same spikes either way; lava needs Python 3.10 and lava-nc)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory: a new, empty or earlier diagnosis "
                   "directory (README, 'Output paths')")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even if it holds files that are not an eical diagnosis")
    p.add_argument("--json", action="store_true", help="print diagnostics.json instead of the summary")
    p.add_argument("--require-healthy", action="store_true", help="exit 1 when the chip is flagged")
    p.add_argument("--save-recording", action="store_true", help="also write the recording as recording.npz")
    p.set_defaults(func=_cmd_diagnose)
