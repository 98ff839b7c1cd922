"""``eical`` subcommands for the chip itself: ``simulate``, ``chip export``, ``profiles list|show|validate``.

``calibrate.cli`` (the ``eical`` entry point) calls :func:`add_subcommands`; every handler returns an int exit code
and raises ``ProfileError``/``TableError``/``CodeError`` for bad input (the entry point prints those as one line and
exits 2; ``IdentityMismatch`` exits 3). Two exit codes are decided here:

- 7 when the requested backend cannot run here (``--backend lava`` without lava-nc or on the wrong Python): one
  line on stderr;
- 2 for a chip export of a profile that has no NPZ format (dpi), as a ``ProfileError``.

Which backend runs the chip. ``hw_models`` never imports ``calibrate`` (DESIGN.md: data flows one way), and this
module keeps that rule at import time: the function that turns ``--backend`` into a ``Device`` is a parameter of
:func:`add_subcommands` (``open_device``, with the exception class it raises for an unavailable backend). When the
caller passes none, the handler looks up ``calibrate.backends.open_device`` *when it runs*, the one place that
knows every backend (numpy, lava, serial), so ``--backend lava`` works as soon as that backend is installed and
nothing here has to know how Lava is started. A library user who never runs the CLI never imports ``calibrate``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .profile import ProfileError, list_profiles, load_profile

__all__ = ["add_subcommands", "simulate_summary", "balance_index", "nonneg_int", "positive_float", "positive_int",
           "add_threads_argument"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BACKEND = 7

OpenDevice = Callable[..., Any]


# --------------------------------------------------------------------------------------------------------------
# argument types: a bad value is an argparse error (one line, exit 2)
# --------------------------------------------------------------------------------------------------------------
def nonneg_int(text: str) -> int:
    """argparse type: a non-negative integer (seeds, counts)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: a positive integer (thread counts)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` for commands that run emulated chips. The CLI entry point applies it to every engine the
    command creates (``hw_models.engine.set_default_threads``); results are the same for any N."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="threads for the emulator's neuron update (default 1); results do not depend on it")


def positive_float(text: str) -> float:
    """argparse type: a positive finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


# --------------------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------------------
def balance_index(iexc: np.ndarray, ibal: np.ndarray) -> np.ndarray:
    """Per-neuron balance index (MODEL.md 1): ``|<Ibal>| / <ge*(EE-Vbal)>``; for dpi ``|<Iampa-Igaba>| / <Iampa>``.

    ``iexc`` is the window mean of the excitatory part of the proxy (``WindowStats.iexc``), ``ibal`` the proxy's
    window mean. NaN where the excitatory part is zero (a neuron without excitatory input)."""
    iexc = np.asarray(iexc, dtype=float)
    out = np.full(iexc.shape, np.nan)
    np.divide(np.abs(ibal), iexc, out=out, where=iexc > 0)
    return out


def simulate_summary(rates_hz: np.ndarray, iexc: np.ndarray, ibal: np.ndarray, dead: np.ndarray) -> dict:
    """Summary figures of one window: rate CV across live neurons, mean rate, balance index median and p95."""
    live = ~np.asarray(dead, dtype=bool)
    r = np.asarray(rates_hz, dtype=float)[live]
    bi = balance_index(iexc, ibal)[live]
    bi = bi[np.isfinite(bi)]
    mean = float(r.mean()) if r.size else float("nan")
    return {
        "live": int(live.sum()),
        "dead": int((~live).sum()),
        "silent": int((r == 0).sum()),
        "rate_mean_hz": mean,
        "rate_cv": float(r.std() / mean) if r.size and mean > 0 else float("nan"),
        "balance_index_median": float(np.median(bi)) if bi.size else float("nan"),
        "balance_index_p95": float(np.percentile(bi, 95)) if bi.size else float("nan"),
    }


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


# --------------------------------------------------------------------------------------------------------------
# backend selection
# --------------------------------------------------------------------------------------------------------------
def _default_opener() -> tuple[OpenDevice, tuple[type, ...]]:
    """``calibrate.backends.open_device`` and the exception it raises for an unavailable backend, looked up when a
    command runs (never at import: hw_models does not import calibrate)."""
    from calibrate.backends import BackendUnavailable, open_device  # the CLI layer may; the library never does

    return open_device, (BackendUnavailable,)


def _unavailable_classes(base: tuple[type, ...]) -> tuple[type, ...]:
    # The Lava backend may also find out only when it starts (another multiprocessing start method): same exit code.
    lava = sys.modules.get("hw_models.lava.device")
    extra = getattr(lava, "LavaUnavailable", None) if lava is not None else None
    return base + ((extra,) if isinstance(extra, type) else ())


# --------------------------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------------------------
def _note(msg: str) -> None:
    print(f"eical: note: {msg}", file=sys.stderr)


def _chip_error(e: ValueError) -> int:
    """A profile that validates but cannot be drawn or run (offsets too wide for any redraw, an input rate above one
    spike per step): one line, exit 2. The library's own input errors pass through to the entry point."""
    from .device import CodeError
    from .table import TableError

    if isinstance(e, (ProfileError, TableError, CodeError)):
        raise e
    print(f"eical: error: {e}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_simulate(args: argparse.Namespace, opener: Optional[tuple[OpenDevice, tuple[type, ...]]]) -> int:
    if getattr(args, "threads", None) is not None:
        from .engine import set_default_threads

        set_default_threads(args.threads)
    profile = load_profile(args.profile)
    table = None
    if args.table is not None:
        from .table import GainTable

        table = GainTable.load(args.table)  # TableError -> exit 2
    open_device, unavailable = opener if opener is not None else _default_opener()
    unavailable = _unavailable_classes(tuple(unavailable))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            device = open_device(args.backend, profile, args.seed, temperature_k=args.temperature, record_isyn=True)
        except unavailable as e:
            print(f"eical: backend unavailable: {e}", file=sys.stderr)
            return EXIT_BACKEND
        except ValueError as e:
            return _chip_error(e)
    for w in caught:
        _note(str(w.message))
    with device:
        if table is not None:
            table.check_identity(device.identity)  # IdentityMismatch -> exit 3
            table.check_knobs(device.knobs)
            device.set_codes(table.codes())
        run_true = getattr(device, "run_true", None)
        if run_true is None:
            print(f"eical: backend unavailable: backend {args.backend!r} does not report true window statistics "
                  f"(simulate needs an emulated chip)", file=sys.stderr)
            return EXIT_BACKEND
        stats = run_true(args.duration * 1e3)
        chip = device.chip
        isyn = stats.isyn if stats.isyn is not None else stats.ibal
        summary = simulate_summary(stats.rates_hz, stats.iexc, stats.ibal, chip.dead)
        summary["calibrated"] = table is not None
        temperature = float(device.temperature_k)
    out = {
        "profile": profile.name,
        "profile_sha256": profile.sha256,
        "model": profile.model,
        "seed": args.seed,
        "chip_uid": device.identity.uid,
        "backend": args.backend,
        "duration_s": stats.window_ms * 1e-3,
        "temperature_k": temperature,
        "codes": "table" if table is not None else "nominal",
        "table": str(args.table) if args.table is not None else None,
        "n_neurons": int(chip.n),
        "dead_neurons": [int(i) for i in np.flatnonzero(chip.dead)],
        "summary": summary,
        "rates_hz": _floats(stats.rates_hz, 4),
        "ibal_mean_pa": _floats(stats.ibal, 4),
        "isyn_mean_pa": _floats(isyn, 4),
    }
    if args.json:
        json.dump(_finite_or_none(out), sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return EXIT_OK
    s = summary
    what = "calibrated (table)" if table is not None else "uncalibrated (nominal codes)"
    print(f"chip {out['chip_uid']}: {profile.model}, {chip.n} neurons, {out['duration_s']:g} s at "
          f"{temperature:g} K, {what}, backend {args.backend}")
    print(f"  rate: mean {s['rate_mean_hz']:.2f} Hz, CV across {s['live']} live neurons {s['rate_cv']:.3f}, "
          f"{s['silent']} silent, {s['dead']} dead")
    print(f"  balance index |<Ibal>|/<Iexc>: median {s['balance_index_median']:.3f}, "
          f"p95 {s['balance_index_p95']:.3f}")
    print(f"  mean proxy {float(np.mean(stats.ibal)):.1f} pA, mean net synaptic current {float(np.mean(isyn)):.1f} pA")
    return EXIT_OK


def _cmd_chip_export(args: argparse.Namespace) -> int:
    from .chip import draw_chip, export_npz

    profile = load_profile(args.profile)
    if profile.model != "cond_lif":
        raise ProfileError(f"{profile.source}: model: expected 'cond_lif' for a chip export (the NPZ format of "
                           f"docs/model.md holds cond_lif chips), got {profile.model!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            chip = draw_chip(profile, args.seed)
        except ValueError as e:
            return _chip_error(e)
    for w in caught:
        _note(str(w.message))
    out = Path(args.out)
    if out.suffix != ".npz":  # numpy.savez would append it silently; say where the file went
        out = out.with_name(out.name + ".npz")
    try:
        export_npz(chip, out)
    except OSError as e:
        print(f"eical: error: {out}: cannot write: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out} (chip {chip.uid}, {chip.n} neurons, profile sha256 {profile.sha256[:12]})")
    return EXIT_OK


def _cmd_profiles_list(args: argparse.Namespace) -> int:
    found = list_profiles()
    if not found:
        print("no profiles found (looked in: $EICAL_PROFILE_PATH and the repository's device_profiles/)")
        return EXIT_OK
    width = max(len(k) for k in found)
    for name, path in found.items():
        try:
            p = load_profile(path)
            what = (f"{p.model:8s} {p.n_cores} x {p.neurons_per_core} neurons, knobs per {p['knobs']['sharing']}, "
                    f"{p['knobs']['bits']}-bit {p['knobs']['dac']}")
        except ProfileError as e:
            what = f"INVALID: {e}"
        print(f"{name:{width}s}  {what}  ({path})")
    return EXIT_OK


def _cmd_profiles_show(args: argparse.Namespace) -> int:
    p = load_profile(args.name)
    print(f"# {p.source}\n# sha256 {p.sha256}\n# validated content, defaults filled in")
    sys.stdout.write(p.to_yaml())
    return EXIT_OK


def _cmd_profiles_validate(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise ProfileError(f"{path}: cannot read: no such file")
    p = load_profile(path)
    print(f"{path}: ok ({p.name}, {p.model}, {p.n_neurons} neurons, sha256 {p.sha256[:12]})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------------------
def add_subcommands(subparsers, *, open_device: Optional[OpenDevice] = None,
                    backend_unavailable: tuple[type, ...] = ()) -> None:
    """Register ``simulate``, ``chip`` and ``profiles`` on the ``eical`` parser's subparsers.

    ``open_device(backend, profile, seed, temperature_k=..., record_isyn=True) -> Device`` opens the chip, and
    raises one of ``backend_unavailable`` when the backend cannot run here (exit 7). Left out, the handlers use
    ``calibrate.backends.open_device`` (looked up when the command runs, see the module docstring).
    """
    opener = (open_device, tuple(backend_unavailable)) if open_device is not None else None

    p = subparsers.add_parser(
        "simulate", help="run the emulated mismatched chip and report rates and the balance proxy",
        description="Run an emulated chip (nominal codes, or a gain table's) for DURATION seconds of model time and "
                    "report per-neuron rates, the true window means of the balance proxy and of the net synaptic "
                    "current, and summary figures (rate CV across live neurons, balance index median and p95).")
    p.add_argument("--profile", required=True, help="profile name (see 'eical profiles list') or YAML path")
    p.add_argument("--seed", type=nonneg_int, default=0, help="mismatch seed (default 0)")
    p.add_argument("--duration", type=positive_float, default=10.0, metavar="SEC",
                   help="model time to simulate in seconds (default 10)")
    p.add_argument("--table", default=None, help="gain table (table.json) to apply; refused if made for another chip")
    p.add_argument("--temperature", type=positive_float, default=None, metavar="K",
                   help="chip temperature in kelvin (default: the profile's T0)")
    p.add_argument("--backend", choices=("numpy", "lava"), default="numpy", help="emulator backend (default numpy)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    add_threads_argument(p)
    p.set_defaults(func=lambda a: _cmd_simulate(a, opener))

    chip = subparsers.add_parser("chip", help="chip instances: export the mismatch draws",
                                 description="Chip instances of a profile.")
    chip_sub = chip.add_subparsers(dest="chip_command", metavar="ACTION")  # same parser class as the parent
    chip_sub.required = True
    ex = chip_sub.add_parser("export", help="write a chip (cond_lif) as NPZ for another simulator",
                             description="Draw the chip of PROFILE and SEED and write it in the NPZ format of "
                                         "docs/model.md (cond_lif profiles).")
    ex.add_argument("--profile", required=True, help="profile name or YAML path")
    ex.add_argument("--seed", type=nonneg_int, default=0, help="mismatch seed (default 0)")
    ex.add_argument("--out", required=True, help="output file (.npz)")
    ex.set_defaults(func=_cmd_chip_export)

    prof = subparsers.add_parser("profiles", help="list, show or validate device profiles",
                                 description="Device profiles (device_profiles/*.yaml and $EICAL_PROFILE_PATH).")
    prof_sub = prof.add_subparsers(dest="profiles_command", metavar="ACTION")
    prof_sub.required = True
    pl = prof_sub.add_parser("list", help="list the known profiles")
    pl.set_defaults(func=_cmd_profiles_list)
    ps = prof_sub.add_parser("show", help="print a profile as validated (defaults filled in)")
    ps.add_argument("name", help="profile name or YAML path")
    ps.set_defaults(func=_cmd_profiles_show)
    pv = prof_sub.add_parser("validate", help="check a profile file; one error line and exit 2 if invalid")
    pv.add_argument("file", help="YAML file")
    pv.set_defaults(func=_cmd_profiles_validate)
