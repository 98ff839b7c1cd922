"""Loop 1's estimates: the ADC offsets and the balance least squares (docs/controller.md, "loop 1").

The net-current proxy is linear in the two gains: its window mean is ``y = gain_e a - gain_i b`` (per knob group;
for cond_lif ``a = <ge>(EE - Vbal)``, ``b = <gi>(Vbal - EI)`` at unit gain). Its zero is at the ratio
``r* = b / a``, which does not move when the common scale does. :class:`BalanceFit` estimates ``(a, b)`` per group
by weighted least squares over every reading (weights: window length, since input shot noise of a window mean falls
as 1/T), so noise averages out like an annealed integral controller. :class:`OffsetEstimate` holds each channel's
ADC offset, read in *null* windows (all codes 0: no synaptic drive) and subtracted from every later reading.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..figures import balance_index

__all__ = ["OffsetEstimate", "BalanceFit"]


class OffsetEstimate:
    """Per-neuron ADC offset: the mean of its null-window readings (its error is read noise / sqrt(reads),
    docs/controller.md "reference windows"); 0 for a channel never read (never used either)."""

    def __init__(self, n: int):
        self.offset_pa = np.full(n, np.nan)
        self.total = np.zeros(n)
        self.reads = np.zeros(n)

    def add(self, proxy_pa: np.ndarray, observed: np.ndarray) -> None:
        ok = observed & np.isfinite(proxy_pa)
        self.total[ok] += proxy_pa[ok]
        self.reads[ok] += 1

    def finish(self) -> Optional[float]:
        """Set the offsets from the readings; the spread of the offsets read (None when none was)."""
        seen = self.reads > 0
        self.offset_pa[seen] = self.total[seen] / self.reads[seen]
        self.offset_pa[~seen] = 0.0  # never monitored: no correction (and never used)
        return float(np.std(self.offset_pa[seen])) if seen.any() else None


class BalanceFit:
    """Weighted least squares of ``y = ge a - gi b`` per knob group, and the standard error of the balance index
    the fitted ratio gives.

    ``sums`` [G, 7] holds the normal equations' sums ``[w ge^2, w ge gi, w gi^2, w ge y, w gi y, w y^2, readings]``.
    With ``halflife_ms`` (tracking) old readings lose weight with that half-life. ``shared``: knob groups of many
    neurons (a core, the chip), whose own readings estimate their residual variance; per-neuron knobs pool it."""

    def __init__(self, group_of: np.ndarray, n_groups: int, *, shared: bool, halflife_ms: Optional[float] = None):
        self.group_of = group_of
        self.n_groups = n_groups
        self.shared = shared
        self.halflife_ms = halflife_ms
        self.sums = np.zeros((n_groups, 7))
        self.a = np.full(n_groups, np.nan)
        self.b = np.full(n_groups, np.nan)
        self.balance_se = np.full(n_groups, np.inf)
        self.measured_ms = 0.0  # model time of the windows read

    def add(self, ge: np.ndarray, gi: np.ndarray, proxy_pa: np.ndarray, observed: np.ndarray, offset_pa: np.ndarray,
            target_pa: float, window_ms: float) -> None:
        """One window's readings; ``ge``, ``gi``: the nominal gains per group of the window's codes."""
        ok = observed & np.isfinite(proxy_pa)
        if not ok.any():
            return
        idx = np.flatnonzero(ok)
        g = self.group_of[idx]
        y = proxy_pa[idx] - offset_pa[idx] - target_pa
        e, i = ge[g], gi[g]
        wt = window_ms  # input shot noise of a window mean falls as 1/T
        if self.halflife_ms is not None:
            self.sums *= 0.5 ** (window_ms / self.halflife_ms)
        for col, val in enumerate((e * e, e * i, i * i, e * y, i * y, y * y)):
            self.sums[:, col] += np.bincount(g, weights=wt * val, minlength=self.n_groups)
        self.sums[:, 6] += np.bincount(g, minlength=self.n_groups)
        self.measured_ms += window_ms

    def solve(self, ln_s: np.ndarray, ln_r: np.ndarray, max_step: float, frozen: bool) -> np.ndarray:
        """Update ``(a, b)`` and return the next ``ln r``: a step towards ``ln(b / a)`` of at most ``max_step``
        (unchanged when ``frozen`` or where ``(a, b)`` is not known yet). The balance index's standard error is
        then that of the new ratio at scale ``ln_s``."""
        Se2, Sei, Si2, Sey, Siy, Syy, nobs = self.sums.T
        det = Se2 * Si2 - Sei * Sei
        ok = det > 1e-12 * np.maximum(Se2 * Si2, 1e-300)
        # y = ge*a - gi*b  ->  [Se2, -Sei; Sei, -Si2] [a; b] = [Sey; Siy]
        a = np.where(ok, (Sey * Si2 - Sei * Siy) / np.where(ok, det, 1), np.nan)
        b = np.where(ok, (Sey * Sei - Se2 * Siy) / np.where(ok, det, 1), np.nan)
        good = ok & (a > 0) & (b > 0)
        self.a = np.where(good, a, self.a)
        self.b = np.where(good, b, self.b)
        have = np.isfinite(self.a) & np.isfinite(self.b) & (self.a > 0) & (self.b > 0)
        target = np.log(np.where(have, self.b, 1.0) / np.where(have, self.a, 1.0))
        step = np.clip(target - ln_r, -max_step, max_step)
        if not frozen:
            ln_r = np.where(have, ln_r + step, ln_r)
        self._uncertainty(ok & have, det, ln_s, ln_r)
        return ln_r

    def _uncertainty(self, ok: np.ndarray, det: np.ndarray, ln_s: np.ndarray, ln_r: np.ndarray) -> None:
        """Standard error of the balance index at ``(ln s, ln r)``, from the least-squares covariance.

        Residual variance per unit weight: RSS / (n - 2), with RSS = Syy - (a Sey - b Siy). On per-neuron knobs it
        is pooled over neurons (each has few readings); a shared knob's own readings estimate it."""
        Se2, Sei, Si2, Sey, Siy, Syy, nobs = self.sums.T
        a, b = self.a, self.b
        with np.errstate(invalid="ignore", divide="ignore"):
            rss = np.maximum(Syy - (a * Sey - b * Siy), 0.0)
            dof = nobs - 2
            s2 = np.where(dof > 0, rss / np.maximum(dof, 1), np.nan)
        if not self.shared:
            pooled = np.nanmedian(s2[ok]) if np.any(ok & np.isfinite(s2)) else np.nan
            s2 = np.full_like(s2, pooled)
        # inverse of X'WX with X = [ge, -gi]: [[Si2, Sei], [Sei, Se2]] / det
        with np.errstate(invalid="ignore", divide="ignore"):
            vaa, vbb, vab = s2 * Si2 / det, s2 * Se2 / det, s2 * Sei / det
            ge = np.exp(ln_s + ln_r / 2)
            gi = np.exp(ln_s - ln_r / 2)
            # B = 1 - gi b / (ge a): dB/da = gi b/(ge a^2), dB/db = -gi/(ge a)
            da = gi * b / (ge * a * a)
            db = -gi / (ge * a)
            var = da * da * vaa + db * db * vbb + 2 * da * db * vab
            self.balance_se = np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.inf)

    def measured_index(self, proxy_sum: np.ndarray, reads: np.ndarray, ge: np.ndarray) -> np.ndarray:
        """Balance index of each group as one loop window measured it: ``|mean proxy| / (gain_e a)``, from each
        neuron's summed offset-free readings and their number."""
        gy = np.bincount(self.group_of, weights=proxy_sum / np.maximum(reads, 1), minlength=self.n_groups)
        gn = np.bincount(self.group_of, weights=(reads > 0).astype(float), minlength=self.n_groups)
        mean = np.where(gn > 0, gy / np.maximum(gn, 1), np.nan)  # NaN: no reading of the group in this window
        return balance_index(mean, ge * self.a)
