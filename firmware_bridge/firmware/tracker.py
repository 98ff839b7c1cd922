# The on-board tracker: the two slow loops of the dual-loop controller, run by the firmware on the board's own
# spike counters and proxy readings, so that a deployed chip stays calibrated without a host.
#
# Theory of operation (docs/controller.md, "On-board tracking", has the derivations and the measured figures)
# --------------------------------------------------------------------------------------------------------------
# Each knob group g (a neuron, a core or the chip) has a common scale s and an E/I ratio r, with
#
#     gain_e = s * sqrt(r),    gain_i = s / sqrt(r)                              (as the host's DualLoop)
#
# and codes = gain * code_ref (linear DACs). The tracker starts from the flashed table and, per window of
# ``window_ms`` model time (measured as ``splits`` sub-windows, so that the count Fano factor can be estimated and
# a drifting chip is read often), moves ln s and ln r by multiplicative steps. It reuses what the host's
# calibration learnt, carried by the table's tracker section: each group's balance sensitivities a_g, b_g (pA per
# unit gain), rate slope beta_g = d ln rate / d ln s, the population's gamma = d ln rate / d ln r, the Fano
# factor, and each proxy channel's ADC offset. So it never has to take the chip off line (null windows, probes).
#
# Drift (temperature) moves every neuron alike, so each loop's unknown is split in two, as the host's tracking
# mode splits its rate intercept:
#
#   rate:     ln rate_g = p(t) + d_g + beta_g ln s_g + gamma ln r_g
#   balance:  ln r*_g   = Q(t) + e_g           (r* zeroes the proxy: y = gain_e A - gain_i B)
#
# - the population parts p(t), Q(t) are measured each window from all groups at once (precise within one
#   window) and followed by an exponentially weighted straight line in time (``Trend``), evaluated at the middle
#   of the next window: a line does not lag a steady drift however long its memory. Its weights halve every
#   4 x ``halflife_ms`` (the host's choice: a slope from a few windows is mostly their noise). The rate line's
#   slope is shrunk by a prior of RATE_SLOPE_SD (a posterior mean), the ratio line's by its signal-to-noise ratio;
#   both lines start from a point at the flashed table's population state (POP_RATE_SE, balance_se).
# - each group's own deviation d_g, e_g does not drift; it is learnt from every window (annealed: an average of
#   all windows, so each new window moves it by about 1/n), starting from a warm-start prior that the flashed table
#   is right to the precision its calibration stopped at (``rate_se``, ``balance_se``). Rate deviations are a
#   Poisson ratio estimator (counts over expected counts: no bias from the logarithm of a small count, and no
#   weighting by the observed count, which biased the host's first version by F/count); balance deviations are
#   inverse-variance weighted means of each window's Newton estimate q_g = ln r_g - y_g / (dy/d ln r).
#
# Safety, enforced here and tested: codes never leave ``band`` (relative gain) around the flashed codes (the
# ratio is clipped first, balance wins, then the scale; the final codes are clamped to the band's code range);
# a neuron that goes silent (no spike where ``silent_expected`` were expected) or saturates (a counter at its
# top, or a rate above ``sat_ratio`` x target) is frozen at its flashed codes and reported, never chased. The
# tracker only returns codes: the board writes them to RAM, never to the NVM.
#
# Bounded memory and time: state is a fixed set of typed arrays sized by the neurons and groups (about
# 4 x (splits + 4) bytes per neuron and 40 bytes per group); every sub-window and window costs O(neurons).
# No I/O: the board feeds it the chip's counts and proxies and gets codes back.
#
# MicroPython subset: no numpy, typing, dataclasses, f-strings; ``array`` for typed storage.

import math

try:
    from array import array
except ImportError:  # pragma: no cover - very old MicroPython ports
    from uarray import array

from .trend import Trend, quantile, zeros  # noqa: F401  (Trend and quantile are this module's as before)
from .tracker_codes import (F_BAND_E, F_BAND_I, F_NO_GAIN, F_SATURATED, F_SILENT, FROZEN,  # noqa: F401
                            TrackerCodes)

# Why the tracker is not running (STATUS ``why``)
WHY_NEVER = 0  # not started since boot (the table says off at boot, or there is no tracker section)
WHY_HOST = 1  # stopped by TRACK_STOP
WHY_FLASH = 2  # stopped by FLASH_BEGIN: a flash always stops the tracker first
WHY_CHIP = 3  # the chip failed a measurement
WHY_ALL_FROZEN = 4  # every group is frozen: nothing left to track
WHY_ROLLBACK = 5  # stopped by ROLLBACK: the board went back to its previous table
WHY_TEXT = ("not started since boot", "stopped by the host", "stopped by a flash", "the chip failed a measurement",
            "every group is frozen", "stopped by a rollback")

# Defaults of the table's tracker section (hw_models/table.py documents each; the host writes them all)
DEFAULTS = {
    "boot": 0, "band": 0.25, "window_ms": 2500, "splits": 4, "halflife_ms": 15000, "dev_halflife_ms": 0,
    "rate_hz": 10.0, "fano": 1.2, "rate_se": 0.035, "balance_se": 0.015, "gamma": 0.0, "sat_ratio": 4.0,
    "silent_expected": 20.0, "max_step": 0.1,
}

SHRINK_RATE = None  # the rate line's slope shrinkage when it has no prior (None: Trend.SHRINK)
SHRINK_RATIO = None  # the ratio line's
# The rate line's slope prior: the population rate drifts by at most about 1 %/s (a 10 K ramp in 120 s moves it
# 0.36 %/s), so a slope is shrunk by prior / (prior + its variance): hard from the first windows, hardly after 20 s
# (trend.Trend; docs/controller.md, "On-board tracking"). None: shrunk by its own signal-to-noise ratio instead.
RATE_SLOPE_SD = 0.01  # ln rate per second
# The warm start's point on the rate line: the flashed table put the population at target to about this standard
# error, tighter than one group's rate_se (all groups are averaged; the calibration's shared inputs are not).
# Measured: the population rate error of 26 tables at the start of the ramp has rms 1.5 %; 2.5 % weighs the point
# a little less than that, which did better on those chips than 1.6 % (a table off by 3 % then holds the line back).
POP_RATE_SE = 0.025
ANCHOR_MAX = 8.0  # the warm start's point on a drift line weighs at most this many windows


class Tracker(TrackerCodes):
    """The slow loops of one board (see the module comment).

    Parameters
    ----------
    params
        The table's tracker section as ``nvm.decode_payload`` returns it: a dict of the scalars in DEFAULTS and
        the arrays ``beta``, ``a``, ``b`` (per group) and ``offset`` (per neuron, pA).
    codes_e, codes_i
        The flashed codes (one per group): the tracker starts there and never leaves the band around them.
    ref_e, ref_i, bits_e, bits_i
        Each knob's code of nominal gain and bit width (linear DACs).
    n_neurons, n_cores
        Geometry; groups cover contiguous blocks of ``n_neurons // n_groups`` neurons.
    one_per_core
        The chip reads one proxy channel per core per window: sub-windows monitor the next neuron of each core.
    counter_max
        Largest spike count the chip's counters hold (a count there is saturated).
    """

    def __init__(self, params, codes_e, codes_i, ref_e, ref_i, bits_e, bits_i, n_neurons, n_cores=1,
                 one_per_core=False, counter_max=65535):
        p = {}
        for k in DEFAULTS:
            p[k] = params.get(k, DEFAULTS[k])
        self.p = p
        G = len(codes_e)
        N = n_neurons
        if len(codes_i) != G or G == 0 or N % G:
            raise ValueError("knob groups do not fit the neurons")
        if len(params["beta"]) != G or len(params["a"]) != G or len(params["b"]) != G or len(params["offset"]) != N:
            raise ValueError("tracker section does not fit this board")
        self.G = G
        self.N = N
        self.per = N // G
        self.n_cores = max(1, n_cores)
        self.per_core = N // self.n_cores
        self.one_per_core = bool(one_per_core) and self.per_core > 1
        self.counter_max = counter_max
        self.ref_e = float(ref_e)
        self.ref_i = float(ref_i)
        self.top_e = (1 << bits_e) - 1
        self.top_i = (1 << bits_i) - 1
        # ln(code) of every code of DACs up to 12 bits (at most 16 KiB): the quantiser's logarithms become lookups
        self.ln_code = None
        top = max(self.top_e, self.top_i)
        if top < 4096:
            self.ln_code = array("f", [0.0])
            for c in range(1, top + 1):
                self.ln_code.append(math.log(c))
        self.ln_ref_e = math.log(self.ref_e)
        self.ln_ref_i = math.log(self.ref_i)
        self.beta = params["beta"]
        self.a = params["a"]
        self.b = params["b"]
        self.offset = params["offset"]
        self.code0_e = array("H", codes_e)
        self.code0_i = array("H", codes_i)
        self.code_e = array("H", codes_e)
        self.code_i = array("H", codes_i)
        self.splits = max(1, int(p["splits"]))
        self.sub_ms = float(p["window_ms"]) / self.splits
        self.rate_hz = float(p["rate_hz"])
        self.ln_rate = math.log(max(self.rate_hz, 1e-9))
        self.gamma = float(p["gamma"])
        self.fano = min(5.0, max(0.5, float(p["fano"])))
        self.fano_w = 4.0 * float(p["window_ms"])  # the table's F counts as four windows of evidence
        # per group: band in codes and in ln gain, applied state, deviations, flags
        band = min(0.9, max(0.0, float(p["band"])))
        self.lo_e = zeros("H", G)
        self.hi_e = zeros("H", G)
        self.lo_i = zeros("H", G)
        self.hi_i = zeros("H", G)
        self.ln_s = zeros("f", G)
        self.ln_r = zeros("f", G)
        self.dnum = zeros("f", G)
        self.dden = zeros("f", G)
        self.esum = zeros("f", G)
        self.ew = zeros("f", G)
        self.ubar = zeros("f", G)  # smoothed measured balance index per group (STATUS)
        self.ulast = zeros("f", G)  # the last window's measured balance index per group (STATUS)
        self.dinv = zeros("f", G)  # 1 / (d y / d ln r) at the codes in force (a sub-window's imbalance, cheaply)
        self.flags = bytearray(G)
        # per neuron: sub-window counts of the current window, proxy sums, frozen
        self.cnt = zeros("I", N * self.splits)
        self.ysum = zeros("f", N)
        self.ycnt = zeros("H", N)
        self.nfrozen = bytearray(N)
        self.sub = 0
        self.sub_c = [0.0] * self.splits  # per sub-window: the live neurons' total count
        self.sub_u = [0.0] * self.splits  # and their mean relative imbalance y / (dy/d ln r), None: none observed
        self.sat_sub = bytearray(N)  # a counter reached its top in this window
        self.rr = 0  # round robin of the monitored neuron within each core
        # the warm-start prior: the flashed table is at target, as well as its calibration could tell
        prior_counts = self.fano / max(float(p["rate_se"]), 1e-3) ** 2
        prior_bal = 1.0 / max(float(p["balance_se"]), 1e-3) ** 2
        live = 0
        mean_r0 = 0.0
        mean_res = 0.0
        for g in range(G):
            ce, ci = codes_e[g], codes_i[g]
            self.lo_e[g] = max(1, int(math.ceil(ce * (1.0 - band) - 1e-9)))
            self.hi_e[g] = min(self.top_e, int(math.floor(ce * (1.0 + band) + 1e-9)))
            self.lo_i[g] = max(1, int(math.ceil(ci * (1.0 - band) - 1e-9)))
            self.hi_i[g] = min(self.top_i, int(math.floor(ci * (1.0 + band) + 1e-9)))
            if ce == 0 or ci == 0 or self.beta[g] <= 0.0:
                self.flags[g] = F_NO_GAIN
                continue
            le = math.log(ce / self.ref_e)
            li = math.log(ci / self.ref_i)
            self.ln_s[g] = 0.5 * (le + li)
            self.ln_r[g] = le - li
            live += 1
            mean_r0 += self.ln_r[g]
            mean_res += self.ln_rate - self.beta[g] * self.ln_s[g] - self.gamma * self.ln_r[g]
        if live == 0:
            raise ValueError("no group has a gain to track")
        mean_r0 /= live
        mean_res /= live
        for g in range(G):
            if self.flags[g] & FROZEN:
                for n in range(g * self.per, (g + 1) * self.per):
                    self.nfrozen[n] = 1
                continue
            d0 = self.ln_rate - self.beta[g] * self.ln_s[g] - self.gamma * self.ln_r[g] - mean_res
            self.dnum[g] = prior_counts
            self.dden[g] = prior_counts * math.exp(-d0)
            self.esum[g] = prior_bal * (self.ln_r[g] - mean_r0)
            self.ew[g] = prior_bal
        self.p0 = mean_res  # the table's population intercept: what the line says before any window
        for g in range(G):
            self.set_dinv(g)
        self.q0 = mean_r0
        self.trend_p = Trend(SHRINK_RATE, None if RATE_SLOPE_SD is None else RATE_SLOPE_SD * RATE_SLOPE_SD)
        self.trend_q = Trend(SHRINK_RATIO)
        self.p_noise = -1.0  # variance of one window's population intercept (sub-window scatter)
        self.q_noise = -1.0  # and of its balance estimate
        self.q_var = -1.0  # per-window variance of a group's Newton ratio estimate (learnt from the first window)
        # figures for STATUS
        self.windows = 0
        self.model_ms = 0.0
        self.last_rate_hz = 0.0
        self.last_rate_cv = 0.0
        self.pred_rate_hz = self.rate_hz
        self.temperature_k = 0.0
        self.n_frozen_silent = 0
        self.n_frozen_sat = 0
        self.running = True
        self.why = WHY_NEVER

    # -- the board's side ------------------------------------------------------------------------------------------

    def codes(self):
        """[codes_e, codes_i] as lists (what the board writes to RAM and hands to the chip)."""
        return [list(self.code_e), list(self.code_i)]

    def next_subwindow(self):
        """(window_ms, monitor list or None) of the next sub-window to measure."""
        if not self.one_per_core:
            return self.sub_ms, None
        pc = self.per_core
        j = self.rr % pc
        return self.sub_ms, [c * pc + j for c in range(self.n_cores)]

    def stop(self, why):
        self.running = False
        self.why = why

    def add_subwindow(self, counts, proxies, window_ms, temperature_k=None):
        """Take one sub-window's counts (N ints) and proxies (N floats in pA, None where not observed). Returns
        the new codes [codes_e, codes_i] when this sub-window completed a window, else None."""
        N = self.N
        base = self.sub * N
        cnt = self.cnt
        top = self.counter_max
        sat = self.sat_sub
        nfrozen = self.nfrozen
        ctot = 0
        for n in range(N):
            c = counts[n]
            if c >= top:
                sat[n] = 1
            cnt[base + n] = c
            if not nfrozen[n]:
                ctot += c
        ysum, ycnt, off = self.ysum, self.ycnt, self.offset
        per = self.per
        us = 0.0
        un = 0
        if proxies is not None:
            dinv = self.dinv
            for n in range(N):
                y = proxies[n]
                if y is not None and y == y:
                    y -= off[n]
                    ysum[n] += y
                    ycnt[n] += 1
                    if not nfrozen[n]:
                        us += y * dinv[n // per]
                        un += 1
        self.sub_c[self.sub] = ctot
        self.sub_u[self.sub] = us / un if un else None
        if self.one_per_core:
            self.rr += 1
        if temperature_k is not None:
            self.temperature_k = temperature_k
        self.sub += 1
        self.model_ms += window_ms
        if self.sub < self.splits:
            return None
        self.window_end(self.sub_ms * self.splits)
        self.sub = 0
        for n in range(N):
            ysum[n] = 0.0
            ycnt[n] = 0
            sat[n] = 0
        return self.codes()

    # -- one window ------------------------------------------------------------------------------------------------

    def window_end(self, T_ms):
        p = self.p
        N, G, per, K = self.N, self.G, self.per, self.splits
        Ts = T_ms * 1e-3
        cnt = self.cnt
        nfrozen = self.nfrozen
        flags = self.flags
        expected = self.rate_hz * Ts
        sat_counts = float(p["sat_ratio"]) * expected
        silent_min = float(p["silent_expected"])
        # 1. per neuron: totals, freeze rules
        tot = [0] * K
        for n in range(N):
            if nfrozen[n]:
                continue
            c = 0
            for k in range(K):
                c += cnt[k * N + n]
            why = 0
            if self.sat_sub[n] or c >= sat_counts:
                why = F_SATURATED
            elif c == 0 and expected >= silent_min:
                why = F_SILENT
            if why:
                self.freeze_neuron(n, why)
                continue
            for k in range(K):
                tot[k] += cnt[k * N + n]
        # 2. the Fano factor (per-neuron knobs): each neuron's count across sub-windows, the population's common
        # fluctuation removed (shared inputs make every neuron fire more in the same sub-window), unbiased mean
        # of var/mean over neurons (docs/controller.md, "Fano factor"). Written to box few floats (MicroPython).
        all_tot = 0
        for k in range(K):
            all_tot += tot[k]
        if per == 1 and K >= 2 and all_tot > 0:
            acc = 0.0
            nf = 0
            for n in range(N):
                if nfrozen[n]:
                    continue
                S = 0
                for k in range(K):
                    S += cnt[k * N + n]
                if 2 * S <= K:  # mean count at most 0.5
                    continue
                f = S / all_tot  # this neuron's share of each sub-window's total
                v = 0.0
                for k in range(K):
                    r = cnt[k * N + n] - f * tot[k]
                    v += r * r
                acc += v * K / ((K - 1) * S)
                nf += 1
            if nf >= 3:
                f = acc / nf
                self.fano = min(5.0, max(0.5, (self.fano * self.fano_w + f * T_ms) / (self.fano_w + T_ms)))
                self.fano_w += T_ms
        # 3. per group: counts, live neurons, proxy means
        beta, a, b = self.beta, self.a, self.b
        ln_s, ln_r = self.ln_s, self.ln_r
        gamma = self.gamma
        C = [0] * G
        live_n = [0] * G
        ybar = [None] * G
        ysum, ycnt = self.ysum, self.ycnt
        for g in range(G):
            if flags[g] & FROZEN:
                continue
            c = 0
            nl = 0
            ys = 0.0
            yn = 0
            for n in range(g * per, (g + 1) * per):
                if nfrozen[n]:
                    continue
                nl += 1
                for k in range(K):
                    c += cnt[k * N + n]
                if ycnt[n]:
                    ys += ysum[n] / ycnt[n]
                    yn += 1
            C[g] = c
            live_n[g] = nl
            if yn:
                ybar[g] = ys / yn
        # 4. rate: the population intercept of this window (all groups pooled), then each group's deviation
        num = 0.0
        den = 0.0
        model = [0.0] * G  # exp(beta ln s + gamma ln r) per group at this window's codes
        dev = [0.0] * G
        ng = 0
        for g in range(G):
            if live_n[g] == 0:
                continue
            x = math.exp(beta[g] * ln_s[g] + gamma * ln_r[g])
            model[g] = x
            dev[g] = math.log(self.dnum[g] / self.dden[g])
            num += C[g]
            den += live_n[g] * Ts * x * math.exp(dev[g])
            ng += 1
        if ng == 0:
            self.stop(WHY_ALL_FROZEN)
            return
        hl = float(p["halflife_ms"])
        line_decay = 0.5 ** (T_ms / (4.0 * hl)) if hl > 0 else 1.0
        # the line's times are seconds relative to the end of this window; this window's middle is -Ts/2
        self.trend_p.shift(Ts, line_decay)
        self.trend_q.shift(Ts, line_decay)
        p_hat = math.log(num / den) if num > 0.0 else None
        self.window_noise()
        if self.windows == 0:
            # the warm start's population part: the flashed table put the population at target and in balance
            # when the tracker started (as well as its calibration could tell, rate_se and balance_se): a point of
            # each line at the start, weighted against one window's noise, so that the first noisy windows do
            # not move the whole population by their noise, and the first slopes have an anchor
            if self.p_noise > 0.0:
                se = max(min(POP_RATE_SE, float(p["rate_se"])), 1e-3)
                self.trend_p.add(-Ts, self.p0, min(ANCHOR_MAX, self.p_noise / (se * se)))
            if self.q_noise > 0.0:
                self.trend_q.add(-Ts, self.q0, min(ANCHOR_MAX, self.q_noise / max(float(p["balance_se"]), 1e-3) ** 2))
        dhl = float(p["dev_halflife_ms"])
        ddecay = 0.5 ** (T_ms / dhl) if dhl > 0 else 1.0
        if p_hat is not None:
            ep = math.exp(p_hat)
            dsum = 0.0
            for g in range(G):
                if live_n[g] == 0:
                    continue
                self.dnum[g] = self.dnum[g] * ddecay + C[g]
                self.dden[g] = self.dden[g] * ddecay + live_n[g] * Ts * ep * model[g]
                dev[g] = math.log(self.dnum[g] / self.dden[g])
                dsum += dev[g]
            # keep the deviations centred: their mean belongs to the population part
            shift = dsum / ng
            es = math.exp(shift)
            for g in range(G):
                if live_n[g]:
                    self.dden[g] *= es
                    dev[g] -= shift
        # 5. balance: each group's Newton estimate of its balanced ratio, split the same way
        q = [0.0] * G
        qn = 0
        qsum = 0.0
        ulast = self.ulast
        for g in range(G):
            ulast[g] = 0.0
        for g in range(G):
            y = ybar[g]
            if y is None or live_n[g] == 0:
                continue
            ge = self.code_e[g] / self.ref_e
            gi = self.code_i[g] / self.ref_i
            ea = ge * a[g]
            slope = 0.5 * (ea + gi * b[g])  # d y / d ln r at fixed s
            if ea <= 0.0 or slope <= 0.0:
                continue
            u = y / ea
            ulast[g] = u
            self.ubar[g] = u if self.windows == 0 else self.ubar[g] + (1.0 - line_decay ** 4) * (u - self.ubar[g])
            qg = ln_r[g] - y / slope
            q[g] = qg
            qsum += qg - self.esum[g] / self.ew[g]
            qn += 1
        if qn:
            q_hat = qsum / qn
            self.trend_q.add(-0.5 * Ts, q_hat, 1.0)
            v = 0.0
            for g in range(G):
                if live_n[g] and ybar[g] is not None and self.ew[g] > 0.0:
                    r = q[g] - q_hat - self.esum[g] / self.ew[g]
                    v += r * r
            v = max(v / qn, 2.5e-5)
            self.q_var = v if self.q_var < 0 else self.q_var + (1.0 - line_decay ** 4) * (v - self.q_var)
            w = 1.0 / self.q_var
            esh = 0.0
            for g in range(G):
                if live_n[g] and ybar[g] is not None and self.ew[g] > 0.0:
                    self.esum[g] += w * (q[g] - q_hat)
                    self.ew[g] += w
                    esh += self.esum[g] / self.ew[g]
            esh /= qn
            for g in range(G):
                if live_n[g] and self.ew[g] > 0.0:
                    self.esum[g] -= esh * self.ew[g]
        if p_hat is not None:
            self.trend_p.add(-0.5 * Ts, p_hat, 1.0)
        # 6. the next state: the lines at the middle of the next window, plus each group's deviation
        t_next = 0.5 * Ts
        p_next = self.trend_p.predict(t_next, self.p0, self.p_noise)
        q_next = self.trend_q.predict(t_next, self.q0, self.q_noise)
        self.set_state(p_next, q_next, dev, live_n)
        # 7. figures for STATUS
        self.windows += 1
        rs = 0.0
        rs2 = 0.0
        nr = 0
        for g in range(G):
            if live_n[g]:
                r = C[g] / (live_n[g] * Ts)
                rs += r
                rs2 += r * r
                nr += 1
        self.last_rate_hz = rs / nr if nr else 0.0
        var = rs2 / nr - self.last_rate_hz ** 2 if nr else 0.0
        self.last_rate_cv = math.sqrt(max(var, 0.0)) / self.last_rate_hz if self.last_rate_hz > 0 else 0.0
        pr = 0.0
        for g in range(G):
            if live_n[g]:
                pr += math.exp(p_next + dev[g] + beta[g] * ln_s[g] + gamma * ln_r[g])
        self.pred_rate_hz = pr / ng

    def window_noise(self):
        """The variance of one window's population intercept and balance estimate, from the scatter of its
        sub-windows (same codes; the inputs fluctuate on time scales of milliseconds, so sub-windows are
        independent), smoothed over windows. It sets how far a drift line's slope is trusted (``Trend.slope``)."""
        K = self.splits
        c, u = self.sub_c, self.sub_u
        if K < 2:
            return
        lc = 0.0
        um = 0.0
        for k in range(K):
            if c[k] <= 0 or u[k] is None:
                return
            lc += math.log(c[k])
            um += u[k]
        lc /= K
        um /= K
        vp = vu = 0.0
        for k in range(K):
            dz = u[k] - um
            dp = math.log(c[k]) - lc
            vp += dp * dp
            vu += dz * dz
        vp = vp / (K - 1) / K
        vu = vu / (K - 1) / K
        if self.p_noise < 0.0:
            self.p_noise, self.q_noise = vp, vu
        else:
            self.p_noise += 0.2 * (vp - self.p_noise)
            self.q_noise += 0.2 * (vu - self.q_noise)
