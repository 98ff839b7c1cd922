"""``eical simulate``, ``eical chip export``, ``eical profiles list|show|validate``: the chip itself."""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .argtypes import add_seed_argument, add_threads_argument, positive_float, seconds
from .exits import CliError, ExitCode
from .output import note
from .outputs import check_output_file

__all__ = ["add_subcommands"]


def _finite_or_none(x: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return x


def _floats(a: Optional[np.ndarray], digits: int) -> Optional[list]:
    if a is None:
        return None
    return [None if not math.isfinite(v) else round(float(v), digits) for v in np.asarray(a, dtype=float)]


def _undrawable(e: ValueError) -> CliError:
    """A profile that validates but cannot be drawn or run (offsets too wide for any redraw, an input rate above one
    spike per step): one line, exit 2. The library's own input errors pass through to the entry point."""
    from hw_models.device import CodeError
    from hw_models.profile import ProfileError
    from hw_models.table import TableError

    if isinstance(e, (ProfileError, TableError, CodeError)):
        raise e
    return CliError(str(e))


def _open_emulator(args: argparse.Namespace, profile: Any) -> Any:
    from .. import backends

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            device = backends.open_device(args.backend, profile, args.seed, temperature_k=args.temperature,
                                          record_isyn=True)
        except ValueError as e:
            raise _undrawable(e) from None
    for w in caught:
        note(str(w.message))
    return device


def _cmd_simulate(args: argparse.Namespace) -> int:
    from hw_models.profile import load_profile
    from hw_models.table import GainTable

    from ..figures import window_summary

    profile = load_profile(args.profile)
    table = GainTable.load(args.table) if args.table is not None else None  # TableError -> exit 2
    device = _open_emulator(args, profile)
    with device:
        if table is not None:
            table.check_identity(device.identity)  # IdentityMismatch -> exit 3
            table.check_knobs(device.knobs)
            device.set_codes(table.codes())
        if getattr(device, "run_true", None) is None:
            raise CliError(f"backend {args.backend!r} does not report true window statistics (simulate needs an "
                           f"emulated chip)", ExitCode.BACKEND)
        stats = device.run_true(args.duration * 1e3)
        chip = device.chip
        isyn = stats.isyn if stats.isyn is not None else stats.ibal
        summary = window_summary(stats.rates_hz, stats.iexc, stats.ibal, chip.dead)
        summary["calibrated"] = table is not None
        temperature = float(device.temperature_k)
    out = {
        "profile": profile.name, "profile_sha256": profile.sha256, "model": profile.model, "seed": args.seed,
        "chip_uid": device.identity.uid, "backend": args.backend, "duration_s": stats.window_ms * 1e-3,
        "temperature_k": temperature, "codes": "table" if table is not None else "nominal",
        "table": str(args.table) if args.table is not None else None, "n_neurons": int(chip.n),
        "dead_neurons": [int(i) for i in np.flatnonzero(chip.dead)], "summary": summary,
        "rates_hz": _floats(stats.rates_hz, 4), "ibal_mean_pa": _floats(stats.ibal, 4),
        "isyn_mean_pa": _floats(isyn, 4),
    }
    if args.json:
        json.dump(_finite_or_none(out), sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return ExitCode.OK
    s = summary
    what = "calibrated (table)" if table is not None else "uncalibrated (nominal codes)"
    print(f"chip {out['chip_uid']}: {profile.model}, {chip.n} neurons, {out['duration_s']:g} s at "
          f"{temperature:g} K, {what}, backend {args.backend}")
    print(f"  rate: mean {s['rate_mean_hz']:.2f} Hz, CV across {s['live']} live neurons {s['rate_cv']:.3f}, "
          f"{s['silent']} silent, {s['dead']} dead")
    print(f"  balance index |<Ibal>|/<Iexc>: median {s['balance_index_median']:.3f}, "
          f"p95 {s['balance_index_p95']:.3f}")
    print(f"  mean proxy {float(np.mean(stats.ibal)):.1f} pA, mean net synaptic current {float(np.mean(isyn)):.1f} pA")
    return ExitCode.OK


def _cmd_chip_export_dynapsim(args: argparse.Namespace) -> int:
    """``eical chip export --format dynapsim``: a dpi chip for rockpool's DynapSim (hw_models.dynapsim)."""
    from hw_models import dynapsim
    from hw_models.emulator import NumpyDevice
    from hw_models.profile import ProfileError, load_profile
    from hw_models.table import GainTable

    profile = load_profile(args.profile)
    if profile.model != "dpi":
        raise ProfileError(f"{profile.source}: model: expected 'dpi' for --format dynapsim (DynapSim simulates dpi "
                           f"neurons), got {profile.model!r}")
    check_output_file(args.out, "chip export", overwrite=args.overwrite)
    out = Path(args.out)
    if out.suffix != ".npz":  # numpy would append it silently; say where the file goes
        out = out.with_name(out.name + ".npz")
    check_output_file(out, "chip export", overwrite=args.overwrite)  # before anything is drawn
    table = GainTable.load(args.table) if args.table is not None else None  # TableError -> exit 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            device = NumpyDevice(profile, args.seed)
        except ValueError as e:
            raise _undrawable(e) from None
    for w in caught:
        note(str(w.message))
    if table is not None:
        table.check_identity(device.identity)  # IdentityMismatch -> exit 3
        table.check_knobs(device.knobs)
        device.set_codes(table.codes())  # validates every code (CodeError -> exit 2)
    chip = device.chip
    arrays = dynapsim.export_arrays(chip, device.codes,
                                    codes_source="nominal" if table is None else f"table {args.table}")
    inputs = counts = None
    if args.inputs:
        inputs, counts = dynapsim.record_window(chip, device.codes, args.inputs * 1e3)
    try:
        dynapsim.write_npz(out, arrays, inputs, counts)
    except OSError as e:
        raise CliError(f"{out}: cannot write: {e.strerror or e}") from None
    what = "nominal codes" if table is None else f"the codes of {args.table}"
    extra = f", and {args.inputs:g} s of input spikes with eical's spike counts" if args.inputs else ""
    print(f"wrote {out} (chip {chip.uid}, {chip.n} neurons, {what}{extra}; DynapSim format, docs/model.md)")
    return ExitCode.OK


def _cmd_chip_export(args: argparse.Namespace) -> int:
    if getattr(args, "format", "npz") == "dynapsim":
        return _cmd_chip_export_dynapsim(args)
    if getattr(args, "table", None) is not None or getattr(args, "inputs", 0):
        raise CliError("--table and --inputs go with --format dynapsim")
    from hw_models.chip import EXPORT_PARAMS, draw_chip, export_npz
    from hw_models.profile import ProfileError, load_profile

    check_output_file(args.out, "chip export", overwrite=args.overwrite)
    out = Path(args.out)
    if out.suffix != ".npz":  # numpy.savez would append it silently; say where the file went
        out = out.with_name(out.name + ".npz")
    check_output_file(out, "chip export", overwrite=args.overwrite)  # before anything is drawn
    profile = load_profile(args.profile)
    if profile.model not in EXPORT_PARAMS:
        raise ProfileError(f"{profile.source}: model: expected one of {', '.join(EXPORT_PARAMS)} for a chip export "
                           f"(the NPZ format of docs/model.md section 10), got {profile.model!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            chip = draw_chip(profile, args.seed)
        except ValueError as e:
            raise _undrawable(e) from None
    for w in caught:
        note(str(w.message))
    try:
        export_npz(chip, out)
    except OSError as e:
        raise CliError(f"{out}: cannot write: {e.strerror or e}") from None
    print(f"wrote {out} (chip {chip.uid}, {chip.n} {chip.model} neurons, profile sha256 {profile.sha256[:12]})")
    return ExitCode.OK


def _cmd_profiles_list(args: argparse.Namespace) -> int:
    from hw_models.profile import ProfileError, list_profiles, load_profile

    found = list_profiles()
    if not found:
        print("no profiles found (looked in: $EICAL_PROFILE_PATH and the repository's device_profiles/)")
        return ExitCode.OK
    width = max(len(k) for k in found)
    for name, path in found.items():
        try:
            p = load_profile(path)
            what = (f"{p.model:8s} {p.n_cores} x {p.neurons_per_core} neurons, knobs per {p['knobs']['sharing']}, "
                    f"{p['knobs']['bits']}-bit {p['knobs']['dac']}")
        except ProfileError as e:
            what = f"INVALID: {e}"
        print(f"{name:{width}s}  {what}  ({path})")
    return ExitCode.OK


def _cmd_profiles_show(args: argparse.Namespace) -> int:
    from hw_models.profile import load_profile

    p = load_profile(args.name)
    print(f"# {p.source}\n# sha256 {p.sha256}\n# validated content, defaults filled in")
    sys.stdout.write(p.to_yaml())
    return ExitCode.OK


def _cmd_profiles_validate(args: argparse.Namespace) -> int:
    from hw_models.profile import ProfileError, load_profile

    path = Path(args.file)
    if path.exists() and not path.is_file():
        raise ProfileError(f"{path}: cannot read: not a regular file")
    p = load_profile(args.file)  # a path, or a profile's name (as `profiles show` takes it)
    print(f"{p.source}: ok ({p.name}, {p.model}, {p.n_neurons} neurons, sha256 {p.sha256[:12]})")
    return ExitCode.OK


def add_subcommands(subparsers: Any) -> None:
    """Register ``simulate``, ``chip`` and ``profiles``."""
    p = subparsers.add_parser(
        "simulate", help="run the emulated mismatched chip and report rates and the balance proxy",
        description="Run an emulated chip (nominal codes, or a gain table's) for DURATION seconds of model time and "
                    "report per-neuron rates, the true window means of the balance proxy and of the net synaptic "
                    "current, and summary figures (rate CV across live neurons, balance index median and p95).")
    p.add_argument("--profile", required=True, help="profile name (see 'eical profiles list') or YAML path")
    add_seed_argument(p)
    add_threads_argument(p)
    p.add_argument("--duration", type=positive_float, default=10.0, metavar="SEC",
                   help="model time to simulate in seconds (default 10)")
    p.add_argument("--table", default=None, help="gain table (table.json) to apply; refused if made for another chip")
    p.add_argument("--temperature", type=positive_float, default=None, metavar="K",
                   help="chip temperature in kelvin (default: the profile's T0)")
    p.add_argument("--backend", choices=("numpy", "lava"), default="numpy", help="emulator backend (default numpy)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=_cmd_simulate)

    chip = subparsers.add_parser("chip", help="chip instances: export the mismatch draws",
                                 description="Chip instances of a profile.")
    chip_sub = chip.add_subparsers(dest="chip_command", metavar="ACTION")  # same parser class as the parent
    chip_sub.required = True
    ex = chip_sub.add_parser("export", help="write a chip's mismatch draws as NPZ for another simulator",
                             description="Draw the chip of PROFILE and SEED and write it in the NPZ format of "
                                         "docs/model.md section 10 (cond_lif and dpi chips): per-neuron parameters "
                                         "in the model's units, input and recurrent weights as CSR arrays, knob "
                                         "groups and DAC transfers, scalars; readable with numpy alone.")
    ex.add_argument("--profile", required=True, help="profile name or YAML path")
    add_seed_argument(ex)
    ex.add_argument("--out", required=True, help="output file (.npz): a new file or an earlier chip export "
                    "(README, 'Output paths')")
    ex.add_argument("--overwrite", action="store_true", help="replace --out even if it is not an eical chip export")
    ex.add_argument("--format", choices=("npz", "dynapsim"), default="npz",
                    help="npz: eical's portable chip file (default); dynapsim: a dpi chip as rockpool's DynapSim takes "
                         "it (docs/model.md, DynapSim)")
    ex.add_argument("--table", default=None,
                    help="with --format dynapsim: export at this gain table's codes (refused if made for another chip)")
    ex.add_argument("--inputs", type=seconds(0.0, 3600.0), default=0.0, metavar="SEC",
                    help="with --format dynapsim: also run the emulator SEC seconds from rest and store the input "
                         "spike trains it drew and its spike counts, to drive DynapSim with the same inputs")
    ex.set_defaults(func=_cmd_chip_export)

    prof = subparsers.add_parser("profiles", help="list, show or validate device profiles",
                                 description="Device profiles (device_profiles/*.yaml and $EICAL_PROFILE_PATH).")
    prof_sub = prof.add_subparsers(dest="profiles_command", metavar="ACTION")
    prof_sub.required = True
    prof_sub.add_parser("list", help="list the known profiles",
                        description="List the profiles found in device_profiles/ and $EICAL_PROFILE_PATH, each with "
                                    "its model, geometry and knobs (or why it is invalid).").set_defaults(
        func=_cmd_profiles_list)
    ps = prof_sub.add_parser("show", help="print a profile as validated (defaults filled in)",
                             description="Print a profile (a name or a YAML path) as validated, with every default "
                                         "filled in and its sha256.")
    ps.add_argument("name", help="profile name or YAML path")
    ps.set_defaults(func=_cmd_profiles_show)
    pv = prof_sub.add_parser("validate", help="check a profile file; one error line and exit 2 if invalid",
                             description="Load and check a profile (a YAML path or a profile's name, as 'profiles "
                                         "show' takes it); print one line, ok or what is wrong (exit 2).")
    pv.add_argument("file", metavar="PROFILE", help="YAML file or profile name")
    pv.set_defaults(func=_cmd_profiles_validate)
