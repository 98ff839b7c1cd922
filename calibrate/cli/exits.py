"""The one exit-code table of ``eical``, its one error class, and how library errors map onto it.

The libraries define no exit codes. They raise their own exception classes, and the class is the kind of failure:
:func:`exit_code_for` maps each kind to a code here, and :func:`error_line` gives the one line printed for it.
Every subcommand handler returns an :class:`ExitCode`; only ``calibrate.cli.main`` turns it into the process status.
"""
from __future__ import annotations

import sys
from enum import IntEnum
from typing import Optional

__all__ = ["ExitCode", "MEANING", "CliError", "exit_code_for", "error_line"]


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    IDENTITY = 3
    LINK_LOST = 4
    VERIFY = 5
    BOARD = 6
    BACKEND = 7
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


#: What each code means (README "Exit codes", docs/protocol.md section 8).
MEANING = {
    ExitCode.OK: "success (including 'already up to date' and a dry run)",
    ExitCode.FAILED: "the command ran but its result failed a requirement (--require-spec, --require-healthy), or "
                     "flash refused a table whose verdict failed",
    ExitCode.USAGE: "usage error or bad input (profile, table, arguments, port): one line naming what is wrong",
    ExitCode.IDENTITY: "identity mismatch: the table was made for another chip or profile; nothing was written",
    ExitCode.LINK_LOST: "link lost: the board stopped answering (or the link is too noisy); the old table is intact "
                        "unless the error line says the commit may have gone through",
    ExitCode.VERIFY: "verify failed: what the board holds does not match the table; the old table is intact",
    ExitCode.BOARD: "board error: the board refused a request (status code in the message)",
    ExitCode.BACKEND: "backend unavailable here (e.g. --backend lava without Python 3.10 and lava-nc)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, or SIGTERM for calibrate); flash says whether a commit could have "
                          "happened, calibrate where it kept the iterations measured so far",
}


class CliError(Exception):
    """An error to print as one line (``eical: error: ...``) and exit with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE):
        super().__init__(message)
        self.code = code


def _kinds() -> list[tuple[type, ExitCode]]:
    """Library exception classes and their codes, most specific first."""
    from firmware_bridge import errors as fb
    from hw_models.device import CodeError, DeviceError
    from hw_models.profile import ProfileError
    from hw_models.table import IdentityMismatch, TableError

    from ..backends import BackendUnavailable
    from ..history import HistoryError
    from ..run import ResumeMismatch
    from ..yield_study.spec import SpecError

    kinds: list[tuple[type, ExitCode]] = [
        (IdentityMismatch, ExitCode.IDENTITY), (fb.IdentityError, ExitCode.IDENTITY),
        (fb.LinkLost, ExitCode.LINK_LOST), (fb.VerifyFailed, ExitCode.VERIFY), (fb.UsageError, ExitCode.USAGE),
        (fb.BoardError, ExitCode.BOARD), (fb.BridgeError, ExitCode.BOARD),
        (ProfileError, ExitCode.USAGE), (TableError, ExitCode.USAGE), (CodeError, ExitCode.USAGE),
        (HistoryError, ExitCode.USAGE), (ResumeMismatch, ExitCode.USAGE), (SpecError, ExitCode.USAGE),
        (BackendUnavailable, ExitCode.BACKEND), (DeviceError, ExitCode.BOARD),
    ]
    # the Lava backend may find out only when it starts (another multiprocessing start method); imported only if
    # something already loaded it, so a plain `eical` never starts Lava
    lava = sys.modules.get("hw_models.lava.device")
    unavailable = getattr(lava, "LavaUnavailable", None) if lava is not None else None
    if isinstance(unavailable, type):
        kinds.append((unavailable, ExitCode.BACKEND))
    return kinds


def exit_code_for(exc: BaseException) -> Optional[ExitCode]:
    """The exit code of a library error, or None for an exception that is no input or device error (a bug)."""
    if isinstance(exc, CliError):
        return exc.code
    for cls, code in _kinds():
        if isinstance(exc, cls):
            return code
    return None


def error_line(exc: BaseException, code: ExitCode) -> str:
    """The one line for ``exc``: what it says, and for a board the table it runs now."""
    text = exc.line() if hasattr(exc, "line") else str(exc)
    if code is ExitCode.IDENTITY and not hasattr(exc, "line"):
        return f"error: identity mismatch: {text}"
    if code is ExitCode.BACKEND:
        return f"error: backend unavailable: {text}"
    return f"error: {text}"
