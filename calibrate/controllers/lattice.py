"""The code lattice of the two gain knobs: from the dual loop's continuous state ``(ln s, ln r)`` to integer codes.

Codes follow ``gain_e = s sqrt(r)``, ``gain_i = s / sqrt(r)`` (docs/controller.md). A DAC sets only its lattice of
nominal gains, between its lowest non-zero gain and its highest: the state is clipped into that range (the ratio
first: balance wins), and the codes are chosen *jointly* among each knob's neighbouring codes in gain order.
The codes' own state (``applied_state``) is what the chip ran at, so that is what the rate model is fitted on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw_models.device import KnobSpec

__all__ = ["codes_in_gain_order", "neighbour_codes", "Clipped", "CodeLattice"]


def codes_in_gain_order(spec: KnobSpec) -> np.ndarray:
    """Every valid code of a knob, sorted by its nominal gain (stable). For a linear DAC that is 0..max_code; for
    a coarse/fine DAC (dynapse2) the code order is not the gain order."""
    valid = spec.valid_codes()
    return valid[np.argsort(spec.nominal_gain(valid), kind="stable")]


def neighbour_codes(spec: KnobSpec, codes: np.ndarray) -> np.ndarray:
    """[G, 3]: each code and its neighbours below and above in the DAC's gain order (clipped at the ends)."""
    if spec.dac == "linear":
        c = np.asarray(codes, dtype=np.int64)
        return np.stack([np.maximum(c - 1, 0), c, np.minimum(c + 1, spec.max_code)], axis=1)
    order = codes_in_gain_order(spec)
    pos = np.empty(spec.max_code + 1, dtype=np.int64)
    pos[order] = np.arange(order.size)
    p = pos[np.asarray(codes, dtype=np.int64)]
    return order[np.stack([np.maximum(p - 1, 0), p, np.minimum(p + 1, order.size - 1)], axis=1)]


@dataclass
class Clipped:
    """A state clipped into the DAC range: the new ``ln_s`` and ``ln_r``, which groups wanted a ratio beyond it,
    and where the scale sat against its limits (+1 at the top, -1 at the bottom, 0 inside)."""

    ln_s: np.ndarray
    ln_r: np.ndarray
    ratio_out_of_range: np.ndarray
    s_at_limit: np.ndarray


class CodeLattice:
    """The lattice of the two knobs ``gain_e`` and ``gain_i`` (same groups)."""

    def __init__(self, gain_e: KnobSpec, gain_i: KnobSpec):
        self.ke, self.ki = gain_e, gain_i
        self.lim_e = tuple(np.log(gain_e.gain_limits()))
        self.lim_i = tuple(np.log(gain_i.gain_limits()))

    def gains(self, codes: dict) -> tuple[np.ndarray, np.ndarray]:
        """Nominal gains per group of ``codes``."""
        return self.ke.nominal_gain(codes["gain_e"]), self.ki.nominal_gain(codes["gain_i"])

    def start_state(self, codes: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(ln s, ln r)`` of start codes, a zero code counted as the lowest non-zero gain."""
        ge, gi = self.gains(codes)
        ge = np.maximum(ge, self.ke.gain_limits()[0])
        gi = np.maximum(gi, self.ki.gain_limits()[0])
        return 0.5 * (np.log(ge) + np.log(gi)), np.log(ge) - np.log(gi)

    def clip(self, ln_s: np.ndarray, ln_r: np.ndarray) -> Clipped:
        """Keep ``(ln s, ln r)`` inside the DAC range: the ratio first (balance wins), then the scale."""
        lo_e, hi_e = self.lim_e
        lo_i, hi_i = self.lim_i
        r_hi = hi_e - lo_i
        r_lo = lo_e - hi_i
        out_of_range = (ln_r > r_hi) | (ln_r < r_lo)
        ln_r = np.clip(ln_r, r_lo, r_hi)
        s_hi = np.minimum(hi_e - ln_r / 2, hi_i + ln_r / 2)
        s_lo = np.maximum(lo_e - ln_r / 2, lo_i + ln_r / 2)
        at_limit = np.where(ln_s >= s_hi, 1, np.where(ln_s <= s_lo, -1, 0))
        return Clipped(np.clip(ln_s, s_lo, s_hi), ln_r, out_of_range, at_limit)

    def quantise(self, ln_s: np.ndarray, ln_r: np.ndarray, slope_s: np.ndarray, slope_r: float, rate_tol: float,
                 ratio_tol: float) -> dict[str, np.ndarray]:
        """Integer codes for a (clipped) ``(ln s, ln r)``, chosen jointly on the lattice.

        Rounding each knob on its own can miss by half a step in both, and one step of an 8-bit DAC near its
        code_ref moves a rate by several percent. So among the neighbouring code pairs (each knob's nearest code
        and the ones either side of it, in gain order) we take the pair whose predicted rate error (``slope_s`` per
        group and ``slope_r``: the rate model's d ln rate / d ln s and d ln r) and ratio error, each against its
        tolerance, are smallest."""
        want_e = ln_s + ln_r / 2
        want_i = ln_s - ln_r / 2
        ce = neighbour_codes(self.ke, self.ke.code_for_gain(np.exp(want_e)))  # [G, 3]
        ci = neighbour_codes(self.ki, self.ki.code_for_gain(np.exp(want_i)))
        with np.errstate(divide="ignore"):
            le = np.log(np.maximum(self.ke.nominal_gain(ce), 1e-300))
            li = np.log(np.maximum(self.ki.nominal_gain(ci), 1e-300))
        # all 9 pairs: [G, 3, 3]
        ls = 0.5 * (le[:, :, None] + li[:, None, :])
        lr = le[:, :, None] - li[:, None, :]
        d_rate = slope_s[:, None, None] * (ls - ln_s[:, None, None]) + slope_r * (lr - ln_r[:, None, None])
        d_ratio = lr - ln_r[:, None, None]
        # each error against the standard error its loop stops at: a ratio error also moves the rate through the
        # ratio slope, so rounding that spends the balance budget muddies the rate fit too
        cost = (d_rate / rate_tol) ** 2 + (d_ratio / ratio_tol) ** 2
        cost = np.where(np.isfinite(cost), cost, np.inf)
        best = np.argmin(cost.reshape(cost.shape[0], -1), axis=1)
        rows = np.arange(cost.shape[0])
        return {"gain_e": ce[rows, best // 3], "gain_i": ci[rows, best % 3]}

    def applied_state(self, codes: dict, ln_s: np.ndarray, ln_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ln s, ln r)`` the codes really set (``ln_s``, ``ln_r`` where a knob is at gain 0). The rate model is
        fitted on these, not on the wanted state: the lattice is coarse (an 8-bit step is 1-2 % of gain near
        code_ref), and the joint quantiser trades rate for ratio error, so the wanted state can be off the applied
        one by more than the counting noise of a long window."""
        ge, gi = self.gains(codes)
        ok = (ge > 0) & (gi > 0)
        with np.errstate(divide="ignore"):
            le, li = np.log(np.where(ok, ge, 1.0)), np.log(np.where(ok, gi, 1.0))
        return np.where(ok, 0.5 * (le + li), ln_s), np.where(ok, le - li, ln_r)
