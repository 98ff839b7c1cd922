"""Loop 2 on a recurrent chip: one scale per population (E, I), from the measured closed-loop Jacobian.

On a recurrent chip a neuron's rate depends on every other neuron's codes, so per-neuron rate control is ill-posed;
what a balanced network defines is its population rates. Per window we have the population scales
``S = (S_E, S_I)`` and rates ``y = (ln r_E, ln r_I)``. Per population P we fit, by weighted least squares over the
windows (weights: the population's spike count), the local model ``y_P = c_P + J_PE S_E + J_PI S_I`` with a ridge
prior (``J = diag(beta0) +- jacobian_prior_sd``). The next S solves ``J S = target - c``, damped. The fitted J is the
*closed-loop* response: in an inhibition-stabilised network ``J_II`` can be negative, the paradoxical effect
(docs/controller.md, "recurrent chips and the paradoxical effect"); solving the full 2x2 system follows whichever
sign the chip shows instead of assuming the single-neuron one. The per-neuron ratios (loop 1) are untouched, and
frozen once loop 1 is within its tolerance (strict time-scale separation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .base import LoopRecord, PopulationLoopRecord, StopReason
from .fano import FanoEstimate, population_sample
from .lattice import CodeLattice
from .settings import DualLoopSettings
from .state import LoopObservation, LoopState, Schedule

__all__ = ["PopulationWindow", "PopulationRateLoop"]


@dataclass(frozen=True)
class PopulationWindow:
    """One loop window per population (E, I): the scales in force, the mean ratios, ln rates, spike counts, and
    the model time at its end."""

    scale: np.ndarray
    ratio: np.ndarray
    ln_rate: np.ndarray
    counts: np.ndarray
    end_ms: float


class PopulationRateLoop:
    """Loop 2 with one scale per population of a recurrent chip (``inh_mask``: the inhibitory neurons)."""

    def __init__(self, cfg: DualLoopSettings, *, inh_mask: np.ndarray, targets_hz: tuple[float, float],
                 state: LoopState):
        self.cfg = cfg
        self.pop_of = np.asarray(inh_mask, dtype=bool).astype(np.int64)  # 0: excitatory, 1: inhibitory
        self.scale = np.array([np.mean(state.ln_s[self.pop_of == 0]), np.mean(state.ln_s[self.pop_of == 1])])
        state.ln_s = self.scale[self.pop_of].copy()
        self.target = np.log(list(targets_hz))
        self.jacobian = np.diag([cfg.beta0, cfg.beta0])
        self.windows: list[PopulationWindow] = []
        self.last_step = np.inf
        self.pop_se = np.full(2, np.inf)
        self.rates_hz: list[float] = []
        self.ratios_frozen = False
        self.fano = FanoEstimate(1.0, 0.2, 20.0)
        n = self.pop_of.size
        self.slopes = (np.full(n, cfg.beta0), cfg.gamma0)  # the quantiser's slopes: the single-neuron prior
        self.rate_tol = cfg.rate_tol

    def fano_sample(self, sub_counts: Sequence[np.ndarray], live: np.ndarray) -> Optional[float]:
        return population_sample(sub_counts, [live & (self.pop_of == P) for P in (0, 1)])

    def _mean_ratios(self, ln_r: np.ndarray) -> np.ndarray:
        return np.array([np.mean(ln_r[self.pop_of == P]) for P in (0, 1)])

    @property
    def beta(self) -> float:
        return self.cfg.beta0

    @property
    def gamma(self) -> float:
        return self.cfg.gamma0

    def record(self, fields: dict) -> LoopRecord:
        return PopulationLoopRecord(**fields, pop_rates_hz=self.rates_hz, jacobian=self.jacobian.tolist())

    def step(self, state: LoopState, lattice: CodeLattice, obs: LoopObservation) -> None:
        """Add the window, refit the Jacobian, and set the next population scales (``state.ln_s``, clipped)."""
        counts, window_ms, live, now_ms = obs.counts, obs.window_ms, obs.live, obs.end_ms
        # once loop 1's estimate is within its tolerance the ratios are frozen, so loop 2 finishes on a network
        # that no longer changes under it (every ratio change moves the whole network)
        bse = obs.balance_se[live]
        if bse.size and 2.0 * float(np.sqrt(np.mean(np.minimum(bse, 10.0) ** 2))) <= self.cfg.balance_tol:
            self.ratios_frozen = True
        y, cnt = np.zeros(2), np.zeros(2)
        for P in (0, 1):
            sel = live & (self.pop_of == P)
            cnt[P] = counts[sel].sum()
            y[P] = math.log((cnt[P] + 0.5) / max(sel.sum(), 1) / (window_ms * 1e-3))
        self.rates_hz = [float(math.exp(v)) for v in y]
        self.windows.append(PopulationWindow(self.scale.copy(), self._mean_ratios(state.ln_r), y, cnt, now_ms))
        weight_counts = self._fit(state.ln_r, now_ms)
        step = self._next_step(y)
        self.scale = self.scale + step
        self.pop_se = np.sqrt(self.fano.value / np.maximum(weight_counts, 1.0))
        pop_err = np.abs(y - self.target)
        state.ln_s = self.scale[self.pop_of].copy()
        state.clip(lattice)
        # the scale actually in force after clipping (balance keeps priority): the population means
        self.scale = np.array([np.mean(state.ln_s[self.pop_of == P]) for P in (0, 1)])
        state.rate_se = self.pop_se[self.pop_of]
        state.rate_err = pop_err[self.pop_of]
        state.unreachable_rate = np.zeros(state.ln_s.size, dtype=bool)

    def _fit(self, ln_r: np.ndarray, now_ms: float) -> np.ndarray:
        """Refit ``y_P = c_P + J_P . S`` (sets ``jacobian`` and ``intercept``); the age-weighted counts per
        population (the information behind each rate estimate)."""
        Sx = np.array([w.scale for w in self.windows])
        Y = np.array([w.ln_rate for w in self.windows])
        Cn = np.array([w.counts for w in self.windows])
        ends = np.array([w.end_ms for w in self.windows])
        age = (np.ones_like(ends) if self.cfg.forget_halflife_ms is None
               else 0.5 ** ((now_ms - ends) / self.cfg.forget_halflife_ms))
        # windows taken while loop 1 had the ratios elsewhere saw another network: they fade out (the population
        # means of ln r move as loop 1 converges; 0.02 in ln r moves a population rate by a few percent)
        dR = np.max(np.abs(np.array([w.ratio for w in self.windows]) - self._mean_ratios(ln_r)), axis=1)
        age = age * np.exp(-(dR / 0.02) ** 2)
        lam = self.fano.value / max(self.cfg.jacobian_prior_sd, 1e-6) ** 2
        X = np.column_stack([np.ones(len(Sx)), Sx])
        J = np.zeros((2, 2))
        c = np.zeros(2)
        for P in (0, 1):
            close = np.exp(-((Y[:, P] - self.target[P]) / self.cfg.near) ** 2)
            w = (Cn[:, P] + 1.0) * close * age
            A = X.T @ (w[:, None] * X)
            b = X.T @ (w * Y[:, P])
            prior = np.zeros(3)
            prior[1 + P] = self.cfg.beta0
            L = np.diag([1e-9, lam, lam])
            theta = np.linalg.solve(A + L, b + L @ prior)
            c[P], J[P] = theta[0], theta[1:]
        self.jacobian, self.intercept = J, c
        return (Cn * age[:, None]).sum(axis=0)

    def _next_step(self, y: np.ndarray) -> np.ndarray:
        """The step in S: Newton on the fitted model, at most 0.5 in ln s; the first two loop windows are the
        identification design instead (S_E stepped, then S_I, each from the first point), so both columns of J are
        seen before the loop closes on it."""
        J, want = self.jacobian, self.target - self.intercept
        try:
            S_new = np.linalg.solve(J, want)
            ok = np.all(np.isfinite(S_new)) and abs(np.linalg.det(J)) > 1e-3
        except np.linalg.LinAlgError:
            ok = False
        if not ok:  # singular: diagonal Newton with the sign each population shows
            d = np.where(np.abs(np.diag(J)) > 0.1, np.diag(J), self.cfg.beta0)
            S_new = self.scale + (self.target - y) / d
        step = S_new - self.scale
        norm = float(np.max(np.abs(step)))
        if norm > 0.5:
            step *= 0.5 / norm
        self.last_step = float(np.max(np.abs(step)))
        k = len(self.windows)
        if k <= 2:
            step = np.zeros(2)
            step[k - 1] = self.cfg.probe_step
            step = self.windows[0].scale + step - self.scale
            self.last_step = np.inf
        return step

    def schedule(self, state: LoopState, obs: LoopObservation, balance_ms: float) -> Schedule:
        """Stop when both population rates are known within tolerance, the last correction was small and loop 1
        is within its tolerance; windows grow only once the corrections are small."""
        cfg = self.cfg
        tol = cfg.rate_tol_population
        bse = obs.balance_se[obs.live]
        bal_rms = float(np.sqrt(np.mean(np.minimum(bse, 10.0) ** 2))) if bse.size else 0.0
        bal_ok = 2.0 * bal_rms <= cfg.balance_tol
        # a recurrent network's population rate wanders from window to window more than its in-window counting
        # noise says (slow network fluctuations), so "close" is judged by the size of the last correction, in
        # units of the rate tolerance, rather than by the last window's error
        settled = self.last_step * float(np.max(np.abs(np.diag(self.jacobian)))) <= 2.0 * tol
        if float(self.pop_se.max()) <= tol and settled and bal_ok:
            return Schedule(0.0, StopReason.CONVERGED)
        far = self.last_step > 0.1
        T = obs.window_ms * (1.0 if far else cfg.max_growth)
        return Schedule(max(T, cfg.first_window_ms * 0.5))
