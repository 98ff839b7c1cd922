"""The target rates a profile's chips can reach: a check made before a calibration starts.

The gain knobs scale a neuron's excitatory and inhibitory input together (MODEL.md 4), and a calibration keeps the
two in balance while it moves them; so the rates a neuron can reach run from its rate with both knobs at their
lowest non-zero code to its rate with both at their highest. :func:`reachable_rates` measures that range on the
profile's *nominal* chip (every mismatch sigma and offset zero, no defects: the profile's nominal operating point)
in a short replay of each end, on the compiled engine (a fraction of a second for the shipped profiles). On a
recurrent chip with its own inhibitory target, each population's range is measured separately.

Mismatch moves single neurons around this range by their gain mismatch (20 % on devboard), so a target near an end
leaves some neurons unreachable; a target outside it leaves the typical neuron unreachable, and the calibration is
refused (``eical calibrate --target-rate``, exit 2). A target above :func:`rate_ceiling_hz` (one spike per half a
refractory period) is refused without a replay. docs/verdicts.md, "Arguments refused".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["RateRange", "reachable_rates", "rate_ceiling_hz", "REPLAY_S"]

REPLAY_S = 2.0  # model seconds at each end (after a 0.2 s settle): a 10 % error at 10 Hz on 32 neurons, enough
SETTLE_S = 0.2


@dataclass(frozen=True)
class RateRange:
    """Mean rates (Hz) of the nominal chip at the knobs' lowest and highest codes (per population when E and I
    have their own targets: ``exc`` and ``inh`` ranges)."""

    low_hz: float
    high_hz: float
    inh_low_hz: Optional[float] = None
    inh_high_hz: Optional[float] = None

    def contains(self, rate_hz: float, inh: bool = False) -> bool:
        lo, hi = (self.inh_low_hz, self.inh_high_hz) if inh else (self.low_hz, self.high_hz)
        if lo is None or hi is None:
            return True
        return lo <= rate_hz <= hi


def _nominal(profile: Any) -> Any:
    mm = profile["mismatch"]
    changes: dict[str, Any] = {}
    for section in ("lognormal", "offsets_mV"):
        for name, levels in (mm.get(section) or {}).items():
            for level in levels:
                changes[f"mismatch.{section}.{name}.{level}"] = 0.0
    changes["mismatch.synapse_sigma"] = 0.0
    d = profile.data.get("defects") or {}
    for k in d:
        changes[f"defects.{k}"] = 0.0
    return profile.with_changes(changes)


_CACHE: dict[str, RateRange] = {}


def _measure(profile: Any) -> RateRange:
    from hw_models.emulator import NumpyDevice

    from .figures import exc_mask

    dev = NumpyDevice(_nominal(profile), 0)
    exc = exc_mask(profile)
    out = []
    for pick in (_lowest, _highest):
        codes = {k: np.full(s.n_groups, pick(s), dtype=np.int64) for k, s in dev.knobs.items()}
        dev.set_codes(codes)
        dev.run_true(SETTLE_S * 1e3)
        rates = dev.run_true(REPLAY_S * 1e3).rates_hz
        if exc is None:
            out.append((float(rates.mean()), None))
        else:
            out.append((float(rates[exc].mean()), float(rates[~exc].mean())))
    (lo, ilo), (hi, ihi) = out
    return RateRange(lo, hi, ilo, ihi)


def _lowest(spec: Any) -> int:
    valid = spec.valid_codes()
    g = spec.nominal_gain(valid)
    return int(valid[g > 0][np.argmin(g[g > 0])])


def _highest(spec: Any) -> int:
    valid = spec.valid_codes()
    return int(valid[np.argmax(spec.nominal_gain(valid))])


def rate_ceiling_hz(profile: Any) -> float:
    """A rate no neuron of the profile can fire at: one spike per half its nominal refractory period and step
    (half: a neuron's own refractory period may be shorter by its mismatch). Checked first, without a replay."""
    from hw_models.profile import load_profile

    prof = load_profile(profile)
    return 1000.0 / (0.5 * float(prof["neuron"]["tref_ms"]) + float(prof.dt_ms))


def reachable_rates(profile: Any) -> RateRange:
    """The rates the profile's nominal chip fires at with both knobs at their lowest and at their highest code
    (module docstring); cached per profile content."""
    from hw_models.profile import load_profile

    prof = load_profile(profile)
    if prof.sha256 not in _CACHE:
        _CACHE[prof.sha256] = _measure(prof)
    return _CACHE[prof.sha256]
