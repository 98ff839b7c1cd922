"""The ``eical`` command line. A thin layer: it parses arguments, calls the libraries, maps errors to exit codes.

Exit codes (also in the README):

====  ==============================================================================================
 0    success (including "already up to date")
 1    the command ran but its result failed a requirement (e.g. ``calibrate --require-converged``)
 2    usage error or bad input file (bad profile, bad table, bad arguments); one line on stderr
 3    identity mismatch: a table for another chip or profile (nothing was written)
 4    link lost (the board keeps the table it ran before; the message says which)
 5    verify failed (the board keeps the table it ran before)
 6    board error
 7    backend unavailable (e.g. ``--backend lava`` without lava-nc / Python 3.10)
====  ==============================================================================================

Every subcommand handler returns an int; only this module turns that into the process exit status, and only
this module catches the library's error classes to print them as one line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_IDENTITY = 3
EXIT_LINK = 4
EXIT_VERIFY = 5
EXIT_BOARD = 6
EXIT_BACKEND = 7


class CliError(Exception):
    """An error to print as one line and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors: one line, exit 2
        self.exit(EXIT_USAGE, f"eical: error: {message} (see 'eical {self.prog.split(' ', 1)[-1]} --help')\n"
                  if " " in self.prog else f"eical: error: {message}\n")


def _registrars() -> list[Callable]:
    """Subcommand groups, each ``add_subcommands(subparsers)``; imported lazily so `eical --help` stays fast."""
    regs = []
    from hw_models import cli as hw_cli
    regs.append(hw_cli.add_subcommands)
    from calibrate import commands
    regs.append(commands.add_subcommands)
    from calibrate import diagnose_cmd
    regs.append(diagnose_cmd.add_subcommands)
    try:
        from firmware_bridge import cli as fb_cli
    except ImportError:
        fb_cli = None
    if fb_cli is not None and hasattr(fb_cli, "add_subcommands"):
        regs.append(fb_cli.add_subcommands)
    return regs


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="eical", description="Calibrate analog neuromorphic chips against device mismatch.")
    from calibrate import __version__
    parser.add_argument("--version", action="version", version=f"eical {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for reg in _registrars():
        reg(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hw_models.device import CodeError, DeviceError
    from hw_models.profile import ProfileError
    from hw_models.table import IdentityMismatch, TableError

    if getattr(args, "threads", None) is not None:  # --threads: every engine the command creates uses it
        from hw_models.engine import set_default_threads

        set_default_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"eical: error: {e}", file=sys.stderr)
        return e.code
    except IdentityMismatch as e:
        print(f"eical: identity mismatch: {e}", file=sys.stderr)
        return EXIT_IDENTITY
    except (ProfileError, TableError, CodeError) as e:
        print(f"eical: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DeviceError as e:
        # the bridge's errors carry their own exit code (4 link lost, 5 verify, 6 board) and the table the board runs
        code = getattr(e, "exit_code", EXIT_BOARD)
        line = e.line() if hasattr(e, "line") else str(e)
        print(f"eical: error: {line}", file=sys.stderr)
        return int(code)
    except KeyboardInterrupt:
        print("eical: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
