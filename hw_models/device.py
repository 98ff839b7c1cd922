"""The one seam every chip backend implements: what a chip offers to the outside.

A controller (``calibrate``) and the serial host client (``firmware_bridge``) import these types from here;
``hw_models`` imports neither of them. A backend differs from another only in *where* the chip runs: the numpy
emulator, the Lava emulator, or a board behind a serial link.

What a controller may observe is fixed by MODEL.md section 5: spike counts per neuron, and the net-current proxy
as the chip's ADC reads it (offset, noise, quantisation, range, and only on the channels monitored in that
window). Nothing else: it never sees the mismatch draws.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = [
    "DeviceIdentity",
    "KnobSpec",
    "Measurement",
    "Device",
    "DeviceError",
    "CodeError",
    "validate_codes",
]


class DeviceError(RuntimeError):
    """A chip could not do what was asked (link lost, board error, backend crashed)."""


class CodeError(ValueError):
    """Codes handed to ``Device.set_codes`` are malformed: unknown knob, wrong length, out of range, not integer."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a chip is. A gain table records this and is refused by any other chip.

    Attributes
    ----------
    uid: unique id of the chip instance (emulated chips: ``"emu-<profile>-<seed>"``; boards: their hardware UID).
    profile: name of the device profile the chip follows.
    profile_sha256: hex SHA-256 of the canonical profile content (``Profile.sha256``).
    n_neurons, n_cores: geometry.
    model: neuron model, ``"cond_lif"`` or ``"dpi"``.
    dt_ms: the model's step.
    speedup: model time per hardware time (1000 for BrainScaleS-2, 1 for real-time chips).
    seed: the mismatch seed when the chip is emulated, else None.
    firmware: firmware version string of a board, else None.
    backend: which backend serves it (``"numpy"``, ``"lava"``, ``"serial"``).
    proxy_channels: how many proxy channels a window can read: ``"all"`` or ``"one_per_core"`` (MODEL.md 5).
    """

    uid: str
    profile: str
    profile_sha256: str
    n_neurons: int
    n_cores: int
    model: str
    dt_ms: float
    speedup: float = 1.0
    seed: Optional[int] = None
    firmware: Optional[str] = None
    backend: str = "numpy"
    proxy_channels: str = "all"

    @property
    def neurons_per_core(self) -> int:
        return self.n_neurons // self.n_cores


@dataclass(frozen=True)
class KnobSpec:
    """One gain knob (``gain_e`` or ``gain_i``) and its DAC.

    ``codes`` for a knob are integers in ``[0, max_code]``, one per *group*: per neuron, per core or one for the
    chip (``sharing``). ``group_of`` maps each neuron to its group. ``code_ref`` is the code of nominal gain.

    DAC kinds:
    - ``"linear"``: ``gain = code / code_ref`` (MODEL.md 4), ``max_code = 2**bits - 1``.
    - ``"coarse_fine"``: Dynap-SE2-like bias generator. ``code = coarse * 256 + fine`` (coarse 0..5, fine
      0..255); ``gain = I(coarse, fine) / I(code_ref)`` with the generator's nominal transfer, including its
      differential non-linearity, given by ``transfer`` (a table over all codes; codes that are not a valid
      coarse/fine pair are never used).

    The nominal transfer is datasheet knowledge a controller may use; the per-neuron gain mismatch ``eps`` that
    multiplies it on the chip is not.
    """

    name: str
    sharing: str  # "neuron" | "core" | "chip"
    bits: int
    code_ref: int
    n_groups: int
    group_of: np.ndarray = field(repr=False)  # int array [N]: group index of each neuron
    dac: str = "linear"
    transfer: Optional[np.ndarray] = field(default=None, repr=False)  # float [max_code+1], nominal gain per code

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def valid_codes(self) -> np.ndarray:
        """All codes the DAC accepts, ascending by code."""
        if self.dac == "linear":
            return np.arange(self.max_code + 1)
        assert self.transfer is not None
        return np.flatnonzero(np.isfinite(self.transfer))

    def nominal_gain(self, codes: np.ndarray) -> np.ndarray:
        """Gain the DAC gives for ``codes`` without mismatch (1.0 at ``code_ref``)."""
        codes = np.asarray(codes)
        if self.dac == "linear":
            return codes.astype(float) / float(self.code_ref)
        assert self.transfer is not None
        return self.transfer[codes]

    def code_for_gain(self, gain: np.ndarray) -> np.ndarray:
        """Nearest valid code (in log gain) to the nominal ``gain``; clipped to the DAC's range."""
        gain = np.asarray(gain, dtype=float)
        if self.dac == "linear":
            return np.clip(np.rint(gain * self.code_ref), 0, self.max_code).astype(np.int64)
        valid = self.valid_codes()
        g = self.transfer[valid]
        order = np.argsort(g, kind="stable")
        gs, cs = g[order], valid[order]
        lg = np.log(np.maximum(gs, 1e-300))
        x = np.log(np.maximum(gain, 1e-300))
        j = np.clip(np.searchsorted(lg, x), 1, len(lg) - 1)
        pick = np.where(np.abs(x - lg[j - 1]) <= np.abs(lg[j] - x), j - 1, j)
        return cs[pick].astype(np.int64)

    def gain_limits(self) -> tuple[float, float]:
        """Smallest non-zero and largest nominal gain the DAC can give."""
        g = self.nominal_gain(self.valid_codes())
        g = g[g > 0]
        return float(g.min()), float(g.max())


@dataclass
class Measurement:
    """What one measurement window returns (MODEL.md 5).

    Attributes
    ----------
    spike_counts: int [N], spikes per neuron in the window (saturated at the counter width).
    window_ms: model time of the window.
    proxy_pa: float [N], the net-current proxy as the ADC reads it (pA, window mean); NaN where not observed.
    observed: bool [N], which neurons' proxy was read this window.
    hardware_ms: wall time the hardware spent (window_ms / speed-up).
    temperature_k: chip temperature if the chip reports it, else None.
    """

    spike_counts: np.ndarray
    window_ms: float
    proxy_pa: np.ndarray
    observed: np.ndarray
    hardware_ms: float
    temperature_k: Optional[float] = None

    @property
    def rates_hz(self) -> np.ndarray:
        return self.spike_counts / (self.window_ms * 1e-3)


@runtime_checkable
class Device(Protocol):
    """A chip a controller can calibrate. Also a context manager (``close`` on exit)."""

    identity: DeviceIdentity
    knobs: Mapping[str, KnobSpec]

    def set_codes(self, codes: Mapping[str, np.ndarray]) -> None:
        """Set knob codes (one int per group); validated; takes effect from the next window. Raises CodeError."""
        ...

    def measure(self, window_ms: float, monitor: Optional[Sequence[int]] = None) -> Measurement:
        """Run the chip for one window and return what it observed.

        ``monitor`` picks the neurons whose proxy is read, within the profile's channel limit (e.g. one neuron per
        core on dynapse2); None lets the chip choose (round robin over each core's neurons).
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "Device": ...

    def __exit__(self, *exc: object) -> None: ...


def validate_codes(knobs: Mapping[str, KnobSpec], codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check codes against knob specs; return them as int64 arrays. Shared by every backend."""
    out: dict[str, np.ndarray] = {}
    for name, value in codes.items():
        if name not in knobs:
            raise CodeError(f"unknown knob {name!r}; this chip has {sorted(knobs)}")
        spec = knobs[name]
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = np.full(spec.n_groups, arr)
        if arr.shape != (spec.n_groups,):
            raise CodeError(f"knob {name!r} takes {spec.n_groups} codes (one per {spec.sharing}), got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr)):
                raise CodeError(f"knob {name!r}: codes must be integers")
        elif arr.dtype.kind not in "iu":
            raise CodeError(f"knob {name!r}: codes must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > spec.max_code:
            raise CodeError(f"knob {name!r}: codes must lie in [0, {spec.max_code}], got [{lo}, {hi}]")
        if spec.dac != "linear":
            bad = ~np.isfinite(spec.transfer[arr])
            if bad.any():
                raise CodeError(f"knob {name!r}: code {int(arr[bad][0])} is not a valid coarse/fine pair")
        out[name] = arr
    return out
