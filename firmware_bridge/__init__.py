"""firmware_bridge: how a board is reached.

- ``firmware/``: the board firmware (sans-IO wire framing, message layouts, NVM banks, the board state machine),
  MicroPython-compatible and imported by the host too;
- ``protocol``: the host's sans-IO half of the link; ``transport``: pyserial ports, an in-process board, fault
  injection; ``client``: requests with resends and timeouts;
- ``host.SerialDevice``: a board as a ``hw_models.Device``; ``flash``: safe flashing of gain tables;
- ``emulator``: the board emulator behind a pty. The commands ``eical flash|devices|info|board-emulator`` live in
  the CLI layer (``calibrate.cli.board``).

Importing this package registers the ``eicalfault://`` pyserial URL handler.
"""
from __future__ import annotations

__all__ = ["SerialDevice", "open_serial_device"]

try:
    import serial as _serial

    if "firmware_bridge.urlhandler" not in _serial.protocol_handler_packages:
        _serial.protocol_handler_packages.append("firmware_bridge.urlhandler")
except ImportError:  # pragma: no cover - pyserial is a dependency
    pass


def __getattr__(name):  # keep `import firmware_bridge` light (numpy and hw_models load on first use)
    if name in ("SerialDevice", "open_serial_device"):
        from . import host

        return getattr(host, name)
    raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
