"""``eical diagnose``: record an emulated chip and report its balance diagnostics (issue 7).

``eical diagnose --profile P --seed S [--table T] [--duration SEC] [--backend numpy|lava] --out DIR [--json]
[--require-healthy] [--save-recording]``

The chip runs at nominal codes, or at the codes of a gain table made for it (a table for another chip is
refused: exit 3, nothing written), for a short settle and then ``--duration`` seconds of model time recorded
on input stream 2 (inputs the calibration did not see). Written to ``DIR``:

- ``diagnostics.json``: ``Diagnostics.to_dict()`` (flags, healthy, every figure and per-scale curve) plus
  ``chip`` (uid, profile, hash, seed, neurons, model, backend), ``run`` (codes, table, duration, settle, input
  stream, temperature, wall times) and ``headline`` (the scalar figures, ``report_diagnostics.headline``);
- ``diagnose.html``: a standalone page with the figure table, flags, notes and the five plots;
- ``recording.npz`` with ``--save-recording`` (``hw_models.recording.Recording.load`` reads it back).

Exit codes: 0; 1 with ``--require-healthy`` when the chip is flagged; 2 bad arguments or input files; 3 a table
for another chip; 7 backend unavailable (``calibrate.cli``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

from hw_models.cli import add_threads_argument
from hw_models.cli import nonneg_int as _nonneg_int
from hw_models.table import json_default as _json_default

from .cli import EXIT_BACKEND, EXIT_FAILED, EXIT_OK, CliError

__all__ = ["add_subcommands", "run_diagnose"]

DEFAULT_DURATION_S = 10.0
MIN_DURATION_S = 0.5  # below this the population series are too short for the multiscale analysis


def _duration(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(v) and v >= MIN_DURATION_S):
        raise argparse.ArgumentTypeError(f"expected at least {MIN_DURATION_S:g} seconds, got {text!r}")
    if v > 3600:
        raise argparse.ArgumentTypeError(f"expected at most 3600 seconds, got {text!r}")
    return v


def run_diagnose(profile: Any, seed: int, *, table: Optional[Any] = None, duration_s: float = DEFAULT_DURATION_S,
                 backend: str = "numpy", out: Optional[Any] = None, save_recording: bool = False,
                 progress: Optional[Any] = None) -> Dict[str, Any]:
    """Record and diagnose chip ``(profile, seed)`` at nominal codes or at ``table`` (a loaded ``GainTable``).

    The table is checked against the chip (``check_identity``: raises ``IdentityMismatch``; ``check_knobs``:
    ``TableError``) before anything runs or is written. With ``out`` the files of the module docstring are
    written there. Returns the document of ``diagnostics.json``.
    """
    from hw_models.emulator import NumpyDevice
    from hw_models.profile import load_profile

    from . import report_diagnostics as rd
    from .diagnostics import diagnose

    prof = load_profile(profile)
    host = NumpyDevice(prof, seed)  # draws the chip: its identity for the table check, reused for the recording
    ident = host.identity
    codes = None
    if table is not None:
        table.check_identity(ident)
        table.check_knobs(host.knobs)
        codes = table.codes()
    t0 = time.perf_counter()
    rec = rd.record_chip(prof, seed, codes, duration_s, backend=backend, chip=host.chip, progress=progress)
    t1 = time.perf_counter()
    if progress is not None:
        progress("diagnosing")
    label = "table" if table is not None else "nominal codes"
    d = diagnose(rec, label=label)
    t2 = time.perf_counter()
    doc: Dict[str, Any] = dict(d.to_dict())
    doc["chip"] = {"uid": ident.uid, "profile": ident.profile, "profile_sha256": ident.profile_sha256,
                   "seed": ident.seed, "n_neurons": ident.n_neurons, "model": ident.model,
                   "backend": rec.meta.get("backend", backend)}
    doc["run"] = {"codes": "table" if table is not None else "nominal", "duration_s": duration_s,
                  "settle_s": rec.meta.get("settle_s"), "input_stream": rec.meta.get("input_stream"),
                  "temperature_k": rec.meta.get("temperature_k"),
                  "wall_s": {"record": t1 - t0, "diagnose": t2 - t1}}
    doc["headline"] = rd.headline(d, rec)
    if out is not None:
        if progress is not None:
            progress("plotting")
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        body, _ = rd.diagnostics_section(None, (d, rec), labels=("", label))
        t3 = time.perf_counter()
        doc["run"]["wall_s"]["figures"] = t3 - t2
        intro = (f"<p>Chip <b>{ident.uid}</b>: profile <b>{ident.profile}</b>, seed {ident.seed}, "
                 f"{ident.n_neurons} {ident.model} neurons, backend {doc['chip']['backend']}; "
                 f"{'codes of the given gain table' if table is not None else 'nominal codes (uncalibrated)'}; "
                 f"{duration_s:g} s of model time recorded after a {rec.meta.get('settle_s', 0):g} s settle, "
                 f"input stream {rec.meta.get('input_stream')}.</p>")
        (out_dir / "diagnose.html").write_text(rd.standalone_page(f"eical diagnose: {ident.uid}", intro, body))
        if save_recording:
            rec.save(out_dir / "recording.npz")
        (out_dir / "diagnostics.json").write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    return doc


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _print_human(doc: Dict[str, Any], out: Optional[str], saved: bool) -> None:
    h, c, r = doc["headline"], doc["chip"], doc["run"]
    codes = "gain table" if r["codes"] == "table" else "nominal codes"
    print(f"diagnosed {c['uid']} ({c['profile']}, {c['n_neurons']} {c['model']} neurons) at {codes}: "
          f"{r['duration_s']:g} s recorded, {r['wall_s']['record']:.1f} s wall")
    pops = ""
    if h.get("rate_inh_hz") is not None:
        pops = f" (E {_fmt(h['rate_exc_hz'], '.2f')} Hz, I {_fmt(h['rate_inh_hz'], '.2f')} Hz)"
    print(f"  rate {_fmt(h['rate_mean_hz'], '.2f')} Hz{pops}; ISI CV median {_fmt(h['cv_median'], '.2f')}, "
          f"fluctuation-driven {_fmt(h['fluctuation_driven_fraction'], '.0%')}")
    print(f"  balance index median {_fmt(h['balance_index_median'])} (p90 {_fmt(h['balance_index_p90'])}, signed "
          f"{_fmt(h['signed_balance_median'], '+.3f')}); <ge>/<gi> {_fmt(h['conductance_ratio_median'])} vs "
          f"{_fmt(h['conductance_ratio_theory'])} at balance")
    if "ei_current_imbalance_median" in h:
        print(f"  E/I currents across scales: distance from balance {_fmt(h['ei_current_imbalance_median'])}, "
              f"correlation {_fmt(h['ei_current_rho_median'])}")
    if "ei_rate_rho_median" in h:
        sig = h.get("ei_rate_rho_signal_median")
        judged = (f"noise-corrected {_fmt(sig)} over {h['ei_rate_shared_scales']} scales" if sig is not None
                  else "asynchronous (counting noise only): not judged")
        print(f"  E/I rates across scales: correlation {_fmt(h['ei_rate_rho_median'])}, {judged}")
    if "branching_m" in h:
        if h["branching_fit_ok"]:
            print(f"  branching ratio m {_fmt(h['branching_m'], '.4f')} [{_fmt(h['branching_ci_low'], '.4f')}, "
                  f"{_fmt(h['branching_ci_high'], '.4f')}] at {_fmt(h['branching_bin_ms'], 'g')} ms, "
                  f"tau {_fmt(h['branching_tau_ms'], '.1f')} ms")
        else:
            print(f"  branching ratio not meaningful (r_1 = {_fmt(h['branching_r1'])})")
    if h.get("mode_modulus") is not None:
        osc = f", {h['mode_freq_hz']:.0f} Hz oscillation" if (h.get("mode_freq_hz") or 0) > 0 else ", not oscillating"
        print(f"  dominant mode of the activity: |lambda| {h['mode_modulus']:.4f} per {h['mode_bin_ms']:g} ms "
              f"(decay {_fmt(h['mode_tau_ms'], '.1f')} ms{osc})")
    cc = h.get("count_corr_30ms")
    print(f"  synchrony: count correlation 30 ms {_fmt(cc)}, chi {_fmt(h['synchrony_chi'])}; gamma depth "
          f"{_fmt(h.get('gamma_modulation'))}")
    verdict = "healthy" if doc["healthy"] else "FLAGGED"
    print(f"  {verdict}: flags {', '.join(doc['flags']) if doc['flags'] else 'none'}")
    for note in doc["notes"]:
        print(f"  note: {note}")
    if out:
        extra = ", recording.npz" if saved else ""
        print(f"  wrote {Path(out) / 'diagnostics.json'}, diagnose.html{extra}")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from hw_models.table import GainTable

    from .backends import BackendUnavailable, lava_available
    from .progress import Progress

    if args.backend == "lava":
        why = lava_available()
        if why:
            raise CliError(why, EXIT_BACKEND)
    table = GainTable.load(args.table) if args.table else None  # TableError -> exit 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: exists and is not a directory")
    prog = Progress("diagnose")
    try:
        doc = run_diagnose(args.profile, args.seed, table=table, duration_s=args.duration, backend=args.backend,
                           out=out, save_recording=args.save_recording, progress=lambda s: prog.update(s, force=True))
    except BackendUnavailable as e:
        raise CliError(str(e), EXIT_BACKEND) from None
    finally:
        prog.close()
    if args.json:
        print(json.dumps(doc, indent=1, default=_json_default))
    else:
        _print_human(doc, args.out, args.save_recording)
    if args.require_healthy and not doc["healthy"]:
        return EXIT_FAILED
    return EXIT_OK


def add_subcommands(sub: Any) -> None:
    """Register ``eical diagnose`` on the main parser's subparsers."""
    p = sub.add_parser(
        "diagnose", help="record an emulated chip and report its E/I balance diagnostics",
        description="Run an emulated chip (nominal codes, or a gain table's) for DURATION seconds of model time "
                    "after a short settle, record every spike and the sampled currents, and report the balance "
                    "diagnostics (balance index, irregularity, multiscale E/I co-fluctuation, branching ratio, "
                    "spectrum, synchrony) with their flags. Writes diagnostics.json and diagnose.html to --out.")
    p.add_argument("--profile", required=True, help="device profile name or YAML path")
    p.add_argument("--seed", type=_nonneg_int, required=True, help="mismatch seed of the emulated chip")
    add_threads_argument(p)
    p.add_argument("--table", help="gain table (table.json) to apply; refused (exit 3) if made for another chip")
    p.add_argument("--duration", type=_duration, default=DEFAULT_DURATION_S, metavar="SEC",
                   help=f"model seconds recorded (default {DEFAULT_DURATION_S:g}; at least {MIN_DURATION_S:g})")
    p.add_argument("--backend", choices=("numpy", "lava"), default="numpy",
                   help="emulator backend (the same spikes either way; lava needs Python 3.10 and lava-nc)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--json", action="store_true", help="print diagnostics.json instead of the summary")
    p.add_argument("--require-healthy", action="store_true", help="exit 1 when the chip is flagged")
    p.add_argument("--save-recording", action="store_true", help="also write the recording as recording.npz")
    p.set_defaults(func=_cmd_diagnose)
