"""Loop 2's rate model: ``ln rate = alpha_g + beta_g ln s + gamma ln r`` per knob group (docs/controller.md).

``beta`` and ``gamma`` are shared by the population (a pooled within-group regression), each group's own slope
``beta_g`` is shrunk towards ``beta`` (empirical Bayes), and ``alpha_g`` is the information-weighted mean of the
residuals over the windows taken near the target. Weighting by spike count makes this the annealed (1/n)
stochastic-approximation estimate, which approaches the counting floor ``sqrt(F / (r T))``; a fixed loop gain would
stall at a multiple of it. Every loop window is one :class:`RateWindow`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["RateWindow", "RateFit", "RateModel"]


@dataclass(frozen=True)
class RateWindow:
    """One loop window as the rate model sees it, per knob group: the state the codes set, the spike count over
    the group's live neurons and their number, the window's length and the model time at its end."""

    ln_s: np.ndarray
    ln_r: np.ndarray
    counts: np.ndarray
    n_live: np.ndarray
    window_ms: float
    end_ms: float
    block_counts: Optional[np.ndarray] = None  # dithered windows: [blocks, groups] counts and applied offsets
    block_ds: Optional[np.ndarray] = None
    block_dr: Optional[np.ndarray] = None


@dataclass
class RateFit:
    """What one fit gives the loop: each group's intercept and slope, whether the group has information, and how
    much (``weight``: spike counts, prior included)."""

    alpha: np.ndarray
    beta_g: np.ndarray
    has: np.ndarray
    weight: np.ndarray


class RateModel:
    """The windows of a run and the model fitted to them.

    Parameters
    ----------
    beta0, gamma0: slopes until the data identify them. beta_sd: prior spread of the groups' own slopes.
    near: half-width (in ln rate) of the band around target within which a window informs the estimate fully.
    near_latest: calibration: half-width (in predicted ln rate) of the band around a group's latest state within
    which a window informs its intercept. near_latest_dithered: the same once the slopes come from dithered windows.
    halflife_ms: tracking: old windows lose weight with this half-life (None: none forgotten).
    prior_rate_se: warm start: the relative standard error of the start codes' rates (a pseudo-window at target).
    """

    def __init__(self, *, beta0: float, gamma0: float, beta_sd: float, near: float, halflife_ms: Optional[float],
                 prior_rate_se: Optional[float], start_ln_s: np.ndarray, start_ln_r: np.ndarray,
                 near_latest: float = 0.2, near_latest_dithered: float = 1.0):
        self.beta, self.gamma = beta0, gamma0
        self.beta_sd, self.near, self.near_latest = beta_sd, near, near_latest
        self.near_latest_dithered = near_latest_dithered
        self.band = near_latest
        self.kappa = 0.0  # the response's curvature d^2 ln rate / d(predicted ln rate)^2 (pooled; dithered runs)
        self.halflife_ms, self.prior_rate_se = halflife_ms, prior_rate_se
        self.start_ln_s, self.start_ln_r = start_ln_s.copy(), start_ln_r.copy()
        self.beta_g = np.full(start_ln_s.shape, beta0)
        self.alpha = np.full(start_ln_s.shape, np.nan)
        self.windows: list[RateWindow] = []

    def add(self, window: RateWindow) -> None:
        self.windows.append(window)

    def age_weights(self, end_ms: np.ndarray, now_ms: float) -> np.ndarray:
        """Weight of windows that ended at ``end_ms`` (1 without forgetting)."""
        if self.halflife_ms is None:
            return np.ones_like(end_ms)
        return 0.5 ** ((now_ms - end_ms) / self.halflife_ms)

    def fit(self, target_g: np.ndarray, fano: float, now_ms: float, next_ms: float) -> RateFit:
        """Fit the model over every window, at model time ``now_ms``; ``next_ms``: how long the next window is
        taken to be (tracking's trend is evaluated at its middle; the caller passes the last window's length)."""
        lt = np.log(target_g)
        lnS = np.array([w.ln_s for w in self.windows])
        lnR = np.array([w.ln_r for w in self.windows])
        C = np.array([w.counts for w in self.windows])
        Nl = np.array([w.n_live for w in self.windows])
        T = np.array([w.window_ms for w in self.windows])[:, None] * 1e-3
        usable = Nl > 0
        y = np.log((C + 0.5) / np.maximum(Nl, 1) / T)
        P = 0.0 if self.prior_rate_se is None else fano / max(self.prior_rate_se, 1e-6) ** 2
        if self.halflife_ms is None:
            return self._fit_calibration(lt, lnS, lnR, C, Nl, T, usable, y, fano, P)
        # information weight: spike count (var of ln rate ~ 1/count), times closeness to target, times age
        close = np.exp(-((y - lt) / self.near) ** 2)
        age = self.age_weights(np.array([w.end_ms for w in self.windows]), now_ms)[:, None]
        W = (C + 1.0) * close * age * usable
        if lnS.shape[0] >= 2:
            self._fit_slopes(y, lnS, lnR, W)
        wsum = W.sum(axis=0)
        has = wsum > 0
        self.beta_g = self._group_slopes(y, lnS, lnR, W, wsum, has, fano)
        resid = y - self.beta_g * lnS - self.gamma * lnR
        resid0 = lt - self.beta_g * self.start_ln_s - self.gamma * self.start_ln_r
        live_now = Nl[-1] > 0
        c0 = float(resid0[live_now].mean()) if live_now.any() else 0.0
        # tracking: drift (temperature) moves every neuron alike, so split alpha into a population part that follows
        # the recent windows (forgetting, pooled over all neurons: precise within one window) and each neuron's own
        # deviation from it, learnt from every window (it does not drift): alpha = pop + dev. Weights here are
        # *expected* counts (target rate x window), not observed ones: a neuron whose count came out high would weigh
        # more, which biases every average up by about F / count, 2.4 % for a 5 s window at 10 Hz
        W0 = target_g[None, :] * T * np.maximum(Nl, 1) * close * usable
        w_k = ((C + 1.0) * usable).sum(axis=1)  # a window's information: its total count over the neurons
        c_k = (W0 * resid).sum(axis=1) / np.maximum(W0.sum(axis=1), 1e-12)
        w0sum = W0.sum(axis=0)
        has = w0sum > 0
        dev = np.where(has | (P > 0), ((W0 * (resid - c_k[:, None])).sum(axis=0) + P * (resid0 - c0))
                       / np.maximum(w0sum + P, 1e-12), np.nan)
        # the line is fitted over four times the forgetting time: a line does not lag a steady drift however long
        # its memory, and a slope from a few windows is mostly their noise
        self.alpha = self._population_trend(c_k, age[:, 0] ** 0.25 * w_k, T[:, 0], now_ms, next_ms) + dev
        return RateFit(self.alpha, self.beta_g, has | (P > 0), w0sum + P)

    def closeness(self, lt, lnS, lnR, alpha) -> np.ndarray:
        """[windows, groups] how near each window's state is to the group's target state, in the rate the model
        predicts there: ``exp(-((alpha + beta_g ln s + gamma ln r - ln target) / near)^2)``: the windows the slopes
        are fitted on. The power law is local, so windows far from target inform the fit less. The distance is the
        model's prediction, not the window's observed rate: weighing by the observed rate selects windows whose noise
        happened to bring them near target, which flattens the fitted slope (selection on the response): devboard's
        slope came out 2.0 against 2.5, and a neuron whose slope was steeper than its fit oscillated about its target
        (docs/controller.md, "The rate model's estimates")."""
        pred = alpha + self.beta_g * lnS + self.gamma * lnR
        return np.exp(-((pred - lt) / self.near) ** 2)

    def nearness_to_latest(self, lnS, lnR) -> np.ndarray:
        """[windows, groups] how near each window's state is to the group's latest one, in the rate the model
        predicts between them: ``exp(-((beta_g d ln s + gamma d ln r) / near)^2)``: the windows the intercept is
        estimated from. Only windows taken where the group now is say what its rate is there; windows from before
        the ratio settled (on bss2 ``gamma`` is about 8 and a ratio moves by up to 1 in ``ln r`` during the first
        windows) are elsewhere, and any slope error carries them to the wrong rate. Centred on the target instead, a
        neuron far below its target everywhere kept the one early window that happened to count a target's worth of
        spikes (devboard seed 10)."""
        d = self.beta_g * (lnS - lnS[-1]) + self.gamma * (lnR - lnR[-1])
        return np.exp(-(d / self.band) ** 2)

    def _dither_exposure(self) -> np.ndarray:
        """[windows, groups] a window's exposure relative to its state: on dithered windows the mean over its
        blocks of ``exp(d + kappa d^2 / 2)``, ``d = beta_g ds + gamma dr`` the block's offset in predicted ln rate; 1
        on the others. Both terms are second order and they pull apart: the exponential's convexity raises a
        window's mean count by ``d^2 / 2``, the response's concavity lowers it by ``kappa d^2 / 2``. Without the
        second, devboard's chips ended +0.4 % above target (+0.9 % with excursions of 0.15)."""
        out = np.ones((len(self.windows), self.beta_g.size))
        for i, w in enumerate(self.windows):
            if w.block_counts is not None:
                d = self.beta_g * w.block_ds + self.gamma * w.block_dr
                out[i] = np.exp(d + self.kappa * d * d / 2).mean(axis=0)
        return out

    def _poisson_alpha(self, k, C, Nl, T, lnS, lnR, P: float, resid0, curv=1.0) -> np.ndarray:
        """Each group's intercept as the Poisson estimate ``ln(sum k C / sum k N T exp(beta_g ln s + gamma ln r))``
        (with the warm start's pseudo-window of P counts exactly at target; + 0.5 count so that a group that has not
        fired yet has a finite one)."""
        exposure = (np.maximum(Nl, 1) * T * np.exp(self.beta_g * lnS + self.gamma * lnR) * k
                    * self._dither_exposure() * curv).sum(axis=0)
        counts = (k * C).sum(axis=0) + P + 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(counts / (exposure + P * np.exp(-resid0)))

    def _fit_calibration(self, lt, lnS, lnR, C, Nl, T, usable, y, fano: float, P: float) -> RateFit:
        """A calibration's fit (no forgetting). The slopes come from the pooled and per-group regressions over the
        windows near target (:meth:`closeness`, which needs the fit itself: three fixed-point rounds from the last
        fit's intercepts). Each group's intercept is the Poisson estimate over the windows near its latest state
        (:meth:`nearness_to_latest`, :meth:`_poisson_alpha`): the rate of all the counts measured there. The
        count-weighted mean of per-window ``ln`` rates it replaces was biased up by about ``(F / 2 + 1 / 2) / count``
        per window (a high count weighs more; the log's curvature): chips ended 0.6 % (devboard, 100 chips) to 0.8 %
        (Poisson plant) below target (docs/controller.md, "The rate model's estimates")."""
        resid0 = lt - self.beta_g * self.start_ln_s - self.gamma * self.start_ln_r
        alpha = np.where(np.isfinite(self.alpha), self.alpha,
                         self._poisson_alpha(usable.astype(float), C, Nl, T, lnS, lnR, P, resid0))
        dither = self._dither_moments()
        # with slopes from deliberate excursions the intercept may take windows from farther away (the wider band)
        self.band = self.near_latest if dither is None else self.near_latest_dithered
        for _ in range(3):
            W = (C + 1.0) * self.closeness(lt, lnS, lnR, alpha) * usable
            if lnS.shape[0] >= 2:
                self._fit_slopes(y, lnS, lnR, W)
            if dither is None:
                self.beta_g = self._group_slopes(y, lnS, lnR, W, W.sum(axis=0), W.sum(axis=0) > 0, fano)
            else:
                self.beta_g = self._dither_slopes(dither, fano)
            resid0 = lt - self.beta_g * self.start_ln_s - self.gamma * self.start_ln_r
            k = self.nearness_to_latest(lnS, lnR) * usable
            alpha = self._poisson_alpha(k, C, Nl, T, lnS, lnR, P, resid0)
            if dither is not None:
                # slopes measured on purpose carry windows far enough that the response's curvature shows: fit it
                # (pooled) and carry with it (docs/controller.md, "Slopes from deliberate excursions")
                d = self.beta_g * (lnS - lnS[-1]) + self.gamma * (lnR - lnR[-1])
                self._fit_curvature(y - (alpha + self.beta_g * lnS + self.gamma * lnR), d, C, usable, fano)
                alpha = self._poisson_alpha(k, C, Nl, T, lnS, lnR, P, resid0, curv=np.exp(self.kappa * d * d / 2))
        has = usable.any(axis=0) | (P > 0)
        self.alpha = np.where(has, alpha, np.nan)
        return RateFit(self.alpha, self.beta_g, has, (k * (C + 1.0)).sum(axis=0) + P)

    def _fit_curvature(self, e: np.ndarray, d: np.ndarray, C: np.ndarray, usable: np.ndarray, fano: float) -> None:
        """The response's curvature ``kappa``, pooled over groups: each window's residual from the linear model
        against its distance ``d`` (predicted ln rate) from the group's latest state, as ``e = c + b d + kappa d^2 /
        2`` (``b`` takes up what is left of the slope's error), weighted by counts and by ``exp(-d^2)``, with a prior
        of sd 1 on ``kappa``. A neuron's rate is concave in its scale (the slope falls as the rate rises), so
        carrying a window's counts along a straight line sets the intercept low by ``kappa d^2 / 2``: devboard's
        chips ended +0.6 % above target with the wide band and no curvature; kappa came out -0.25 to -0.53 on 8
        chips."""
        ok = usable & np.isfinite(e) & np.isfinite(d)
        if ok.sum() < 8:
            return
        w = np.where(ok, (C + 1.0) * np.exp(-d * d), 0.0)
        e, d = np.where(ok, e, 0.0), np.where(ok, d, 0.0)
        X = np.stack([np.ones_like(d), d, d * d / 2], axis=-1)
        A = np.einsum("kg,kgi,kgj->ij", w, X, X) / fano + np.diag([0.0, 0.0, 1.0])
        b = np.einsum("kg,kgi,kg->i", w, X, e) / fano
        try:
            self.kappa = float(np.clip(np.linalg.solve(A, b)[2], -3.0, 1.0))
        except np.linalg.LinAlgError:
            pass

    def _dither_moments(self) -> Optional[dict]:
        """The dithered windows' within-window moments: each block's ``ln`` count against its applied offsets
        ``(ds, dr)``, weighted by the block's expected share of the window's count. Differences between blocks of one
        window share its intercept and its state, so no feedback of the loop enters them (docs/controller.md,
        "Slopes from deliberate excursions")."""
        rows = [w for w in self.windows if w.block_counts is not None]
        if not rows:
            return None
        G = rows[0].block_counts.shape[1]
        m = {k: np.zeros(G) for k in ("xx", "xr", "rr", "xy", "ry")}
        for w in rows:
            c = w.block_counts
            nb = c.shape[0]
            wt = c.sum(axis=0) / nb  # a block's information: its expected count (the window's over the blocks)
            y = np.log(c + 0.5)
            y = y - y.mean(axis=0)
            x = w.block_ds - w.block_ds.mean(axis=0)
            r = w.block_dr - w.block_dr.mean(axis=0)
            m["xx"] += (wt * x * x).sum(axis=0)
            m["xr"] += (wt * x * r).sum(axis=0)
            m["rr"] += (wt * r * r).sum(axis=0)
            m["xy"] += (wt * x * y).sum(axis=0)
            m["ry"] += (wt * r * y).sum(axis=0)
        return m

    def _dither_slopes(self, m: dict, fano: float) -> np.ndarray:
        """Population slopes from the dithered windows, combined with the closed-loop fit's (taken as 30 % uncertain:
        it came out 1.08-1.53x the true slope on devboard) by their precisions, and each group's slope shrunk towards
        the population's by its own dither moments (empirical Bayes, prior spread ``beta_sd``)."""
        S = np.array([[m["xx"].sum(), m["xr"].sum()], [m["xr"].sum(), m["rr"].sum()]])
        b = np.array([m["xy"].sum(), m["ry"].sum()])
        if np.linalg.det(S) > 1e-12 * max(S[0, 0] * S[1, 1], 1e-300):
            est = np.linalg.solve(S, b)
            cov = fano * np.linalg.inv(S)
            prior = np.array([self.beta, self.gamma])
            prior_var = (0.3 * np.abs(prior) + np.array([0.1, 0.3])) ** 2
            post = (est / np.diag(cov) + prior / prior_var) / (1 / np.diag(cov) + 1 / prior_var)
            if 0.3 <= post[0] <= 8.0 and -50 <= post[1] <= 50:
                self.beta, self.gamma = float(post[0]), float(post[1])
        sxx = m["xx"]
        sxy = m["xy"] - self.gamma * m["xr"]
        k = fano / max(self.beta_sd, 1e-6) ** 2
        return np.clip((sxy + k * self.beta) / (sxx + k), 0.3, 8.0)

    def _population_trend(self, c_k: np.ndarray, a_k: np.ndarray, T_s: np.ndarray, now_ms: float,
                          next_ms: float) -> float:
        """Tracking: the population intercept the next window will see, from the recent windows' intercepts ``c_k``
        (weights ``a_k``: information times age). A weighted line in time, evaluated at the middle of the next
        window. A weighted mean would lag a steady drift by about the forgetting time (on bss2, 300 -> 310 K over
        120 s, the mean rate ran 5 % high); the line follows it."""
        t_mid = np.array([w.end_ms for w in self.windows]) * 1e-3 - T_s / 2  # seconds, middle of each window
        wsum = max(float(a_k.sum()), 1e-12)
        mean_c = float((a_k * c_k).sum() / wsum)
        if (a_k > 1e-3 * a_k.max()).sum() < 3:
            return mean_c
        t_bar = float((a_k * t_mid).sum() / wsum)
        stt = float((a_k * (t_mid - t_bar) ** 2).sum())
        if stt <= 0:
            return mean_c
        slope = float((a_k * (t_mid - t_bar) * (c_k - mean_c)).sum()) / stt
        t_next = now_ms * 1e-3 + next_ms * 1e-3 / 2
        return mean_c + slope * (t_next - t_bar)

    def _group_slopes(self, y, lnS, lnR, W, wsum, has, fano: float) -> np.ndarray:
        """Each group's own slope d ln rate / d ln s, shrunk towards the population's ``beta``.

        Empirical Bayes: the group's within-group regression ``b_g`` has variance ``F / Sxx_g``; with a prior
        spread ``beta_sd`` of true slopes around ``beta`` the posterior mean is ``(Sxx_g b_g + k beta) / (Sxx_g +
        k)``, ``k = F / beta_sd**2``. Groups the data say little about keep ``beta``; groups whose scale moved a lot
        get their own, which removes the bias a shared slope leaves when windows far from target are averaged."""
        safe = np.where(has, wsum, 1.0)
        xm = (W * lnS).sum(axis=0) / safe
        ym = (W * (y - self.gamma * lnR)).sum(axis=0) / safe
        dx = lnS - xm
        Sxx = (W * dx * dx).sum(axis=0)
        Sxy = (W * dx * (y - self.gamma * lnR - ym)).sum(axis=0)
        k = fano / max(self.beta_sd, 1e-6) ** 2
        b = (Sxy + k * self.beta) / (Sxx + k)
        return np.clip(np.where(has, b, self.beta), 0.3, 8.0)

    def _fit_slopes(self, y, lnS, lnR, W) -> None:
        """Pooled within-group weighted regression for beta (and gamma when the ratio moved enough)."""
        wsum = W.sum(axis=0)
        ok = wsum > 0
        if ok.sum() < 1:
            return

        def demean(x):
            m = (W * x).sum(axis=0) / np.where(ok, wsum, 1)
            return (x - m)[:, ok]

        Wk = W[:, ok]
        ys, xs, us = demean(y), demean(lnS), demean(lnR)
        Sxx = (Wk * xs * xs).sum()
        Suu = (Wk * us * us).sum()
        Sxu = (Wk * xs * us).sum()
        Sxy = (Wk * xs * ys).sum()
        Suy = (Wk * us * ys).sum()
        if Sxx <= 1e-6 * Wk.sum() * 0.01 ** 2:
            return
        if Suu > 1e-6 * Wk.sum() * 0.01 ** 2:
            det = Sxx * Suu - Sxu * Sxu
            if det > 1e-12 * Sxx * Suu:
                beta = (Sxy * Suu - Sxu * Suy) / det
                gamma = (Suy * Sxx - Sxu * Sxy) / det
                if 0.3 <= beta <= 8.0 and -50 <= gamma <= 50:
                    self.beta, self.gamma = float(beta), float(gamma)
                    return
        beta = (Sxy - self.gamma * Sxu) / Sxx
        if 0.3 <= beta <= 8.0:
            self.beta = float(beta)
