"""calibrate: how a chip is calibrated. Controllers, the run loop, results, diagnostics, reports, the CLI.

A controller sees a chip only through ``hw_models.device.Device``.
"""
try:
    from importlib.metadata import version as _v

    __version__ = _v("eical")
except Exception:  # running from a source tree without an install
    __version__ = "0+unknown"
