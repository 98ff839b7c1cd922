# The on-board tracker's output side (tracker.py): from the wanted state of each group to codes (step limit, band,
# joint quantiser), freezing a neuron, and the STATUS figures. A mixin of tracker.Tracker, kept apart so that each
# firmware module stays readable; it uses the tracker's arrays and settings.
#
# MicroPython subset: no numpy, typing, dataclasses, f-strings.

import math

from .trend import quantile

# Per-group flags (TRACK_READ kind 1)
F_SILENT = 1  # frozen: a neuron of the group went silent
F_SATURATED = 2  # frozen: a neuron of the group saturated
F_NO_GAIN = 4  # frozen from the start: a flashed code of 0 (no gain to scale)
F_BAND_E = 16  # gain_e was clipped to the band in the last window
F_BAND_I = 32  # gain_i was clipped to the band in the last window
FROZEN = F_SILENT | F_SATURATED | F_NO_GAIN


class TrackerCodes:
    """tracker.Tracker's codes, freezing and STATUS."""

    def lnc(self, code, knob):
        """ln(code / code_ref) of knob 0 (gain_e) or 1 (gain_i): from a table when the DAC is narrow enough."""
        t = self.ln_code
        if t is not None:
            return t[code] - (self.ln_ref_e if knob == 0 else self.ln_ref_i)
        return math.log(code / (self.ref_e if knob == 0 else self.ref_i))

    def set_state(self, p_next, q_next, dev, live_n):
        """Wanted (ln s, ln r) per group -> step limit -> band (ratio first) -> joint quantiser -> codes."""
        G = self.G
        beta = self.beta
        gamma = self.gamma
        step = float(self.p["max_step"])
        tol_r = 1.0 / max(float(self.p["rate_se"]), 1e-3)
        tol_b = 1.0 / max(float(self.p["balance_se"]), 1e-3)
        ref_e, ref_i = self.ref_e, self.ref_i
        ln_s, ln_r, flags = self.ln_s, self.ln_r, self.flags
        lnc = self.lnc
        for g in range(G):
            if flags[g] & FROZEN or live_n[g] == 0:
                continue
            flags[g] &= ~(F_BAND_E | F_BAND_I)
            lr0 = ln_r[g]
            lr = q_next + self.esum[g] / self.ew[g]
            lr = min(lr0 + step, max(lr0 - step, lr))
            ls0 = ln_s[g]
            ls = (self.ln_rate - p_next - dev[g] - gamma * lr) / beta[g]
            ls = min(ls0 + step, max(ls0 - step, ls))
            # the band in ln gain: ratio first (balance wins), then the scale
            lo_e, hi_e, lo_i, hi_i = self.lo_e[g], self.hi_e[g], self.lo_i[g], self.hi_i[g]
            le_lo, le_hi, li_lo, li_hi = lnc(lo_e, 0), lnc(hi_e, 0), lnc(lo_i, 1), lnc(hi_i, 1)
            if lr < le_lo - li_hi or lr > le_hi - li_lo:
                lr = min(le_hi - li_lo, max(le_lo - li_hi, lr))
                flags[g] |= F_BAND_E | F_BAND_I
            half = 0.5 * lr
            s_lo = max(le_lo - half, li_lo + half)
            s_hi = min(le_hi - half, li_hi + half)
            if ls < s_lo or ls > s_hi:
                ls = min(s_hi, max(s_lo, ls))
                if ls + half <= le_lo + 1e-9 or ls + half >= le_hi - 1e-9:
                    flags[g] |= F_BAND_E
                if ls - half <= li_lo + 1e-9 or ls - half >= li_hi - 1e-9:
                    flags[g] |= F_BAND_I
            # joint quantiser: of the (floor, ceil) x (floor, ceil) code pairs, the one whose predicted rate error
            # and ratio error (each against the precision its loop works at) are smallest
            e0 = min(hi_e, max(lo_e, int(math.exp(ls + half) * ref_e)))
            i0 = min(hi_i, max(lo_i, int(math.exp(ls - half) * ref_i)))
            e1, i1 = min(hi_e, e0 + 1), min(hi_i, i0 + 1)
            le0, le1, li0, li1 = lnc(e0, 0), lnc(e1, 0), lnc(i0, 1), lnc(i1, 1)
            bg = beta[g]
            best = -1.0
            be, bi, ble, bli = e0, i0, le0, li0
            for k in range(4):
                ce, lce = (e0, le0) if k < 2 else (e1, le1)
                ci, lci = (i0, li0) if k % 2 == 0 else (i1, li1)
                dr = (lce - lci) - lr
                x = (bg * (0.5 * (lce + lci) - ls) + gamma * dr) * tol_r
                y = dr * tol_b
                cost = x * x + y * y
                if best < 0.0 or cost < best:
                    best, be, bi, ble, bli = cost, ce, ci, lce, lci
            self.code_e[g] = be
            self.code_i[g] = bi
            self.set_dinv(g)
            ln_s[g] = 0.5 * (ble + bli)
            ln_r[g] = ble - bli

    def set_dinv(self, g):
        d = 0.5 * (self.code_e[g] / self.ref_e * self.a[g] + self.code_i[g] / self.ref_i * self.b[g])
        self.dinv[g] = 1.0 / d if d > 0.0 else 0.0

    def freeze_neuron(self, n, why):
        """Neuron ``n`` went silent or saturated: it leaves every estimate for good. A per-neuron group is frozen at
        its flashed codes; a shared group (a core) only once all its neurons are out, since one neuron's knob
        cannot be moved alone."""
        if self.nfrozen[n]:
            return
        self.nfrozen[n] = why
        if why == F_SILENT:
            self.n_frozen_silent += 1
        else:
            self.n_frozen_sat += 1
        g = n // self.per
        self.flags[g] |= why if self.per == 1 else 0
        for m in range(g * self.per, (g + 1) * self.per):
            if not self.nfrozen[m]:
                return
        self.flags[g] = (self.flags[g] & ~(F_BAND_E | F_BAND_I)) | why
        self.code_e[g] = self.code0_e[g]
        self.code_i[g] = self.code0_i[g]
        self.set_dinv(g)

    # -- STATUS ----------------------------------------------------------------------------------------------------

    def figures(self):
        """A dict of what STATUS reports (messages.pack_track_status lays it out)."""
        G = self.G
        moved_e = moved_i = 0
        max_e = max_i = 0
        sum_e = sum_i = 0
        band = 0
        frozen = 0
        for g in range(G):
            de = self.code_e[g] - self.code0_e[g]
            di = self.code_i[g] - self.code0_i[g]
            if de:
                moved_e += 1
            if di:
                moved_i += 1
            max_e = max(max_e, abs(de))
            max_i = max(max_i, abs(di))
            sum_e += de
            sum_i += di
            if self.flags[g] & (F_BAND_E | F_BAND_I):
                band += 1
            if self.flags[g] & FROZEN:
                frozen += 1
        ub = []
        ul = []
        for g in range(G):
            if not self.flags[g] & FROZEN:
                ub.append(abs(self.ubar[g]))
                ul.append(abs(self.ulast[g]))
        return {
            "running": 1 if self.running else 0, "why": self.why, "windows": self.windows,
            "tracked_ms": self.model_ms, "fano": self.fano, "rate_last_hz": self.last_rate_hz,
            "rate_cv_last": self.last_rate_cv, "rate_pred_hz": self.pred_rate_hz,
            "balance_p95_last": quantile(ul, 0.95) if ul else 0.0, "balance_p95_smooth": quantile(ub, 0.95) if ub else 0.0,
            "rate_drift_per_s": self.trend_p.slope(self.p_noise),
            "ratio_drift_per_s": self.trend_q.slope(self.q_noise),
            "temperature_k": self.temperature_k, "n_groups": G,
            "moved_e": moved_e, "moved_i": moved_i, "max_move_e": max_e, "max_move_i": max_i,
            "mean_move_e": sum_e / G, "mean_move_i": sum_i / G, "at_band": band, "frozen": frozen,
            "frozen_silent": self.n_frozen_silent, "frozen_saturated": self.n_frozen_sat,  # neurons
            "band": float(self.p["band"]), "window_ms": float(self.p["window_ms"]), "splits": self.splits,
        }
