"""The ``eical`` command line: the top layer, the only one that wires ``hw_models``, ``calibrate`` and
``firmware_bridge`` together (docs/architecture.md).

One module per command family, each with ``add_subcommands(subparsers)``:

- :mod:`.chip`: ``simulate``, ``chip export``, ``profiles list|show|validate``;
- :mod:`.calibration`: ``calibrate``, ``track``, ``report``;
- :mod:`.diagnose`: ``diagnose``;
- :mod:`.study`: ``yield`` (a yield study over many chips, on Dask);
- :mod:`.board`: ``flash``, ``info``, ``devices``, ``board-emulator``, ``nvm``.

:mod:`.exits` holds the one exit-code table (README "Exit codes") and the mapping of library errors onto it,
:mod:`.argtypes` the argparse value types, :mod:`.output` what the commands print with. Every handler returns an
exit code; :func:`main` alone turns errors into one line on stderr and the process status.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .exits import CliError, ExitCode, error_line, exit_code_for

__all__ = ["main", "build_parser", "CliError", "ExitCode"]

FAMILIES = ("chip", "calibration", "diagnose", "study", "board", "table")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's usage errors: one line, exit 2
        self.exit(ExitCode.USAGE, f"eical: error: {message} (see 'eical {self.prog.split(' ', 1)[-1]} --help')\n"
                  if " " in self.prog else f"eical: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``eical`` parser with every command family registered."""
    from importlib import import_module

    from .. import __version__

    parser = _Parser(prog="eical", description="Calibrate analog neuromorphic chips against device mismatch.")
    parser.add_argument("--version", action="version", version=f"eical {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for family in FAMILIES:
        import_module(f"{__name__}.{family}").add_subcommands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``eical ARGV``; returns the exit code (argparse's usage errors exit 2 through SystemExit)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:  # --threads: every engine the command creates uses it
        from hw_models.engine import set_default_threads

        set_default_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM turned into one (its args say so)
        print(f"eical: error: interrupted ({e.args[0] if e.args else 'Ctrl-C'})", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as e:  # a library error becomes one line and its code; anything else is a bug: re-raised
        code = exit_code_for(e)
        if code is None:
            raise
        print(f"eical: {error_line(e, code)}", file=sys.stderr)
        return code
