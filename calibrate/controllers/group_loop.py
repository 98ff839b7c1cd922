"""Loop 2 per knob group: each neuron (or core, or chip) set to its own target rate (feed-forward chips).

Per window the group's rate model (:mod:`.rate_model`) is refitted and each group's next scale solves it for the
target; with little information near the target the step is a damped Newton step from the latest window instead.
The window schedule grows windows only while the rate is within its counting noise of target, and sizes the last one
to what the tolerances still need (docs/controller.md, "windows").
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .base import LoopRecord, StopReason
from .fano import FanoEstimate, group_sample, neuron_sample
from .lattice import CodeLattice
from .rate_model import RateModel, RateWindow
from .settings import DualLoopSettings
from .state import LoopObservation, LoopState, Schedule

__all__ = ["GroupRateLoop"]


class GroupRateLoop:
    """Loop 2 with one scale per knob group."""

    ratios_frozen = False  # loop 1 keeps moving the ratios to the end

    def __init__(self, cfg: DualLoopSettings, *, group_of: np.ndarray, n_groups: int, shared: bool,
                 target_g: np.ndarray, start_ln_s: np.ndarray, start_ln_r: np.ndarray):
        self.cfg = cfg
        self.group_of, self.n_groups, self.shared = group_of, n_groups, shared
        self.target_g = target_g
        self.model = RateModel(beta0=cfg.beta0, gamma0=cfg.gamma0, beta_sd=cfg.beta_sd, near=cfg.near,
                               near_latest=cfg.near_latest, near_latest_dithered=cfg.near_latest_dithered,
                               halflife_ms=cfg.forget_halflife_ms, prior_rate_se=cfg.prior_rate_se,
                               start_ln_s=start_ln_s, start_ln_r=start_ln_r)
        self.fano = FanoEstimate(1.0, 0.2, 5.0)

    @property
    def rate_tol(self) -> float:
        return self.cfg.rate_tol_shared if self.shared else self.cfg.rate_tol

    @property
    def slopes(self) -> tuple[np.ndarray, float]:
        """d ln rate / d ln s per group and d ln rate / d ln r: the quantiser's cost of a rounding."""
        return self.model.beta_g, self.model.gamma

    def fano_sample(self, sub_counts: Sequence[np.ndarray], live: np.ndarray) -> Optional[float]:
        if self.shared:
            return group_sample(sub_counts, self.group_of, self.n_groups, live)
        return neuron_sample(sub_counts, live)

    @property
    def beta(self) -> float:
        return self.model.beta

    @property
    def gamma(self) -> float:
        return self.model.gamma

    def record(self, fields: dict) -> LoopRecord:
        return LoopRecord(**fields)

    def step(self, state: LoopState, lattice: CodeLattice, obs: LoopObservation) -> None:
        """Add the window, refit, and set each group's next scale (``state.ln_s``, clipped)."""
        window = RateWindow(obs.ln_s, obs.ln_r, obs.group_counts, obs.group_live, obs.window_ms, obs.end_ms,
                            obs.block_counts, obs.block_ds, obs.block_dr)
        self.model.add(window)

        lt = np.log(self.target_g)
        fit = self.model.fit(self.target_g, self.fano.value, obs.end_ms, window.window_ms)
        c_now, n_now = window.counts, window.n_live
        # far from target with no near window: a damped Newton step from the latest window
        y_now = np.log((c_now + 0.5) / np.maximum(n_now, 1) / (window.window_ms * 1e-3))
        newton = state.ln_s + np.clip((lt - y_now) / fit.beta_g, -1.0, 1.0)
        model = (lt - fit.alpha - self.model.gamma * state.ln_r) / fit.beta_g
        nearness = fit.weight / np.maximum(fit.weight + 2.0, 1e-9)  # few near counts: trust the model little
        target_s = np.where(fit.has, nearness * model + (1 - nearness) * newton, newton)
        # one step moves a group's scale by at most e (the Newton step's own limit): an intercept from a window of
        # few counts far from target is a rough guide
        target_s = np.clip(target_s, state.ln_s - 1.0, state.ln_s + 1.0)
        # count-information: standard error of the rate estimate per group (Poisson; F ~ 1)
        state.rate_se = np.where(fit.has, np.sqrt(self.fano.value / np.maximum(fit.weight, 1e-9)), np.inf)
        state.rate_err = np.abs(y_now - lt)
        live = n_now > 0
        state.ln_s = np.where(live, target_s, np.median(target_s[live]) if live.any() else state.ln_s)
        state.clip(lattice)
        # unreachable: wants to go beyond the DAC range and the rate is still off by more than the noise allows
        wants_out = (state.s_at_limit != 0) & (np.abs(target_s - state.ln_s) > 1e-9)
        noise = np.sqrt(self.fano.value / np.maximum(c_now + 1, 1))
        off = state.rate_err > 3.0 * noise + 0.05
        state.unreachable_rate = wants_out & off & live
        # far off target whatever the noise (5 sd and 10 %): a neuron's count over one window wanders by 3 sd once in
        # a few hundred windows (devboard's F is 1.5 over 13 s windows), a stuck neuron is off by a factor
        state.off_target = (state.rate_err > 5.0 * noise + 0.10) & live

    def schedule(self, state: LoopState, obs: LoopObservation, balance_ms: float) -> Schedule:
        """Next loop window: long enough for what the tolerances still need, at most ``max_growth`` times the last
        one, and not growing while the rate is still far from target (beyond its counting noise)."""
        cfg = self.cfg
        last = self.model.windows[-1]
        active = (last.n_live > 0) & ~state.unreachable_rate & ~state.unreachable_ratio
        if not active.any():
            return Schedule(0.0, StopReason.UNREACHABLE)
        tol = self.rate_tol
        fano = self.fano.value
        rms_se = float(np.sqrt(np.mean(np.minimum(state.rate_se[active], 10.0) ** 2)))
        noise = np.sqrt(fano / np.maximum(last.counts[active] + 1, 1))
        far = float(np.median(state.rate_err[active] / noise))
        bse = obs.balance_se[active]
        bal_rms = float(np.sqrt(np.mean(np.minimum(bse, 10.0) ** 2)))
        # |balance| of a group is ~ its standard error; 2 se covers ~95 % of groups. A shared knob's few groups
        # must each be within the goal, so their worst one is judged against a tighter tolerance
        bal_tol = cfg.balance_tol_shared if self.shared else cfg.balance_tol
        if self.shared:
            bal_rms = float(np.max(np.minimum(bse, 10.0)))
        bal_ok = 2.0 * bal_rms <= bal_tol
        if rms_se <= tol and bal_ok and far < 3.0:
            return Schedule(0.0, StopReason.CONVERGED)
        growth = cfg.max_growth if far < 3.0 else 1.0
        T = obs.window_ms * growth
        need = []
        if np.isfinite(rms_se):
            n_per_group = np.maximum(last.n_live[active], 1)
            have = fano / np.maximum(rms_se, 1e-9) ** 2
            need_counts = max(fano / tol ** 2 - have, 0.0)
            need.append(need_counts / (float(np.median(self.target_g[active])) * float(np.median(n_per_group)))
                        * 1e3 * 1.1)
        if np.isfinite(bal_rms) and not bal_ok:
            need.append(balance_ms * ((2.0 * bal_rms / bal_tol) ** 2 - 1.0) * 1.1)
        if need and far < 3.0:
            T = min(T, max(max(need), cfg.first_window_ms))
        return Schedule(max(T, cfg.first_window_ms * 0.5))
