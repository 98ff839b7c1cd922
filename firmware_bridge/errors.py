"""The exception family of ``firmware_bridge``: one class per kind of failure a user can see.

The class *is* the kind: ``UsageError``, ``IdentityError``, ``LinkLost``, ``VerifyFailed``, ``BoardError``. The
bridge defines no exit codes; the ``eical`` command line maps each kind to its one exit-code table
(``calibrate.cli.exits``, documented in docs/protocol.md). Every error carries, where it is known, ``board_table``:
a one-line description of the table the board runs *now*, which the CLI appends to every error line.
"""
from __future__ import annotations

from typing import Optional

from hw_models.device import DeviceError

from .firmware import wire

__all__ = ["VerifyChanged", "BridgeError", "UsageError", "PortError", "NoSuchPort", "NotASerialPort", "PortBusy", "NvmImageError",
           "IdentityError", "LinkLost", "VerifyFailed", "BoardError", "status_text"]


def status_text(status: int) -> str:
    """``"E_NAME (meaning)"`` for a board status code (the one status table lives in ``firmware.wire``)."""
    name, text = wire.STATUS_TEXT.get(status, (f"status {status}", "unknown status code"))
    return f"{name} ({text})"


class BridgeError(DeviceError):
    """Base of every error ``firmware_bridge`` reports to a user.

    Attributes
    ----------
    board_table
        What the board runs now ("gen 3, crc 0x1a2b3c4d, bank B"), or None when unknown.
    """

    def __init__(self, message: str, *, board_table: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.board_table = board_table

    def line(self) -> str:
        """The one error line the CLI prints."""
        if self.board_table:
            return f"{self.message}; the board runs {self.board_table}"
        return self.message


class UsageError(BridgeError):
    """Bad input from the user: unreadable table file, bad port URL, forbidden baud rate."""


class PortError(UsageError):
    """The port named cannot serve as a serial link: it does not exist, is not a serial port, or is busy.

    A usage error (exit 2): nothing was ever connected. Only a link that was up and then failed is ``LinkLost``
    (exit 4). docs/protocol.md, "Ports", has the rules.
    """


class NoSuchPort(PortError):
    """No port given, or nothing at that path / URL (a device that is not there, a refused socket)."""


class NotASerialPort(PortError):
    """The path exists but is not a serial port: a regular file, a directory, /dev/null."""


class PortBusy(PortError):
    """Another process holds the port (it is opened exclusively)."""


class NvmImageError(UsageError, ValueError):
    """A file given as NVM is not an eical NVM image of the right geometry (or cannot be created): refused and
    left as it was. Also a ValueError, like the library's other bad-file errors (ProfileError, TableError)."""


class IdentityError(BridgeError):
    """The table was made for another chip (UID, profile hash or knob geometry differ). Nothing was written."""


class LinkLost(BridgeError):
    """The board stopped answering, the port vanished, or the link is too noisy to use."""


class VerifyChanged(LinkLost):
    """The table on the board changed under a read (another host is flashing it)."""


class VerifyFailed(BridgeError):
    """The bytes on the board do not match the table (CRC or read-back)."""


class BoardError(BridgeError):
    """The board answered with an error status.

    Attributes
    ----------
    status
        The board's status code (``firmware.wire.E_*``).
    request
        Name of the request it refused.
    """

    def __init__(self, request: str, status: int, *, board_table: Optional[str] = None, detail: str = ""):
        msg = f"board refused {request}: {status_text(status)}"
        if detail:
            msg += f" {detail}"
        super().__init__(msg, board_table=board_table)
        self.status = status
        self.request = request
