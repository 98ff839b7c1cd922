"""Where a chip runs: turn ``--backend numpy|lava|serial:PORT`` into a ``Device``.

This is the only place that knows the concrete backends; everything after it sees ``Device``. Backends that need
optional software (Lava) are imported only when asked for, and say in one line what is missing.
"""
from __future__ import annotations

import sys
from typing import Optional

from hw_models.device import Device

__all__ = ["open_device", "BackendUnavailable", "BACKENDS", "profile_of"]

BACKENDS = ("numpy", "lava", "serial:PORT")


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (missing optional dependency, wrong Python)."""


def lava_available() -> Optional[str]:
    """None when the Lava backend can run here, else the one-line reason."""
    if sys.version_info[:2] != (3, 10):
        return (f"the Lava backend needs Python 3.10 (lava-nc 0.10.0 supports only 3.10), this is "
                f"{sys.version_info.major}.{sys.version_info.minor}; use `make test` (it builds .venv310 with "
                f"`pip install -e '.[lava]'`) or `python3.10 -m venv v && v/bin/pip install -e '.[lava]'`")
    try:
        import importlib.util

        if importlib.util.find_spec("lava") is None:
            raise ImportError
    except ImportError:
        return "the Lava backend needs lava-nc: pip install -e '.[lava]' (Python 3.10)"
    return None


def open_device(backend: str, profile=None, seed: Optional[int] = None, *, temperature_k: Optional[float] = None,
                **kwargs) -> Device:
    """Open a chip. ``backend`` is ``numpy``, ``lava`` or ``serial:URL`` (any pyserial URL, e.g.
    ``serial:/dev/ttyACM0``); emulated backends need ``profile`` and ``seed``."""
    if backend == "numpy":
        from hw_models.emulator import NumpyDevice

        return NumpyDevice(profile, seed, temperature_k=temperature_k, **kwargs)
    if backend == "lava":
        why = lava_available()
        if why:
            raise BackendUnavailable(why)
        from hw_models.lava import LavaDevice, LavaUnavailable

        try:
            return LavaDevice(profile, seed, temperature_k=temperature_k, **kwargs)
        except LavaUnavailable as e:
            raise BackendUnavailable(str(e)) from e
    if backend.startswith("serial:"):
        from firmware_bridge import open_serial_device

        # An empty or missing port is the bridge's NoSuchPort (a usage error, exit 2), as any port that is not there.
        return open_serial_device(backend[len("serial:"):])
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def profile_of(device: Device):
    """The chip's profile: an emulator's own, or a board's when that profile is installed here (else None)."""
    prof = getattr(device, "profile", None)
    if prof is None and device.identity.profile:
        try:
            from hw_models.profile import load_profile

            prof = load_profile(device.identity.profile)
        except Exception:  # a board whose profile is not installed here
            prof = None
    return prof
