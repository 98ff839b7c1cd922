"""hw_models: what a chip is. Profiles, mismatch draws, neuron models, DACs, observation, emulators.

Nothing here imports ``calibrate`` or ``firmware_bridge``; both import the ``Device`` protocol from here.
"""
from .device import CodeError, Device, DeviceError, DeviceIdentity, KnobSpec, Measurement, validate_codes
from .profile import Profile, ProfileError, list_profiles, load_profile

__all__ = [
    "CodeError", "Device", "DeviceError", "DeviceIdentity", "KnobSpec", "Measurement", "validate_codes",
    "Profile", "ProfileError", "list_profiles", "load_profile", "draw_chip", "NumpyDevice",
]


def __getattr__(name):  # keep `import hw_models` light: scipy.sparse and the engine load on first use
    if name == "draw_chip":
        from .chip import draw_chip
        return draw_chip
    if name == "NumpyDevice":
        from .emulator import NumpyDevice
        return NumpyDevice
    raise AttributeError(f"module 'hw_models' has no attribute {name!r}")
