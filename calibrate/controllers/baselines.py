"""Baselines with the dual loop's interface: rate-only scaling, calix-style per-knob search, and the
cross-homeostatic population rule (docs/controller.md, "baselines"). Each runs fixed windows within a budget."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hw_models.device import Measurement

from .base import (Controller, Phase, PhaseRecord, SearchDoneRecord, SearchRecord, Status, StopReason, UpdateRecord,
                   Window, WindowKind, WindowRecord)
from .lattice import codes_in_gain_order

__all__ = ["RateOnly", "BinarySearch", "CrossHomeostatic"]


class _FixedWindowBaseline(Controller):
    """Shared plumbing for the baselines: fixed-length loop windows, dead detection from spikes, a budget."""

    def __init__(self, window_ms: float = 1000.0, budget_ms: float = 90_000.0, rate_tol: float = 0.04) -> None:
        super().__init__()
        self.window_ms = float(window_ms)
        self.budget_ms = float(budget_ms)
        self.rate_tol = float(rate_tol)

    def settings(self) -> dict:
        return {"window_ms": self.window_ms, "budget_ms": self.budget_ms, "rate_tol": self.rate_tol}

    def _start(self) -> None:
        self.model_ms = 0.0
        self.spikes_any = np.zeros(self.n, dtype=bool)
        self.windows_seen = 0
        self.done = False
        self.unreachable = np.zeros(self.n_groups, dtype=bool)
        self.out_of_budget = False
        self._init()

    def _init(self) -> None:
        pass

    def _loop_window(self) -> list[Window]:
        if self.done:
            return []
        if self.model_ms + self.window_ms > self.budget_ms + 1e-9:
            self.done = self.out_of_budget = True
            return []
        return [Window(self.codes, self.window_ms, WindowKind.LOOP)]

    def stop_reason(self) -> StopReason:
        return StopReason.BUDGET if self.out_of_budget else StopReason.CONVERGED

    def _measure(self, measurements) -> tuple[np.ndarray, np.ndarray, float]:
        counts = np.zeros(self.n)
        T = 0.0
        for m in measurements:
            counts += m.spike_counts
            T += m.window_ms
            self.model_ms += m.window_ms
        self.spikes_any |= counts > 0
        self.windows_seen += 1
        dead = ~self.spikes_any if self.windows_seen >= 3 else np.zeros(self.n, dtype=bool)
        c, n_live = self.group_counts(counts, ~dead)
        rate = c / np.maximum(n_live, 1) / (T * 1e-3)
        return rate, n_live, T

    def status(self) -> Status:
        dead = ~self.spikes_any
        unreach = self.unreachable[self.group_of] & ~dead
        return Status(calibrated=~dead & ~unreach, unreachable=unreach, dead=dead)


class RateOnly(_FixedWindowBaseline):
    """One loop: scale the excitatory gain alone to reach the target rate (multiplicative, log-domain Newton with
    the same slope prior as the dual loop, damped by 1/2). Inhibition stays at its start codes, so balance is left
    to chance: this is what most homeostatic rules do (docs/controller.md, "baselines")."""

    name = "rate-only"

    def plan(self) -> list[Window]:
        return self._loop_window()

    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> UpdateRecord:
        rate, n_live, T = self._measure(measurements)
        ke = self.knobs["gain_e"]
        err = np.log(self.target_g) - np.log(np.maximum(rate, 0.5 / (T * 1e-3)))
        g = np.maximum(ke.nominal_gain(self.codes["gain_e"]), ke.gain_limits()[0])
        new = np.exp(np.log(g) + 0.5 * np.clip(err / 1.5, -1, 1))
        lo, hi = ke.gain_limits()
        self.unreachable = ((new > hi) | (new < lo)) & (np.abs(err) > 0.1)
        self.codes = {"gain_e": ke.code_for_gain(np.clip(new, lo, hi)), "gain_i": self.codes["gain_i"]}
        cv = float(np.std(rate[n_live > 0]) / max(np.mean(rate[n_live > 0]), 1e-9))
        rel = rate[n_live > 0] / self.target_g[n_live > 0]
        if float(np.std(rel)) <= self.rate_tol and abs(float(np.mean(rel)) - 1) < self.rate_tol:
            self.done = True
        return WindowRecord(window_ms=T, rate_mean_hz=float(np.mean(rate[n_live > 0])), rate_cv=cv)


class BinarySearch(_FixedWindowBaseline):
    """calix-style per-knob open-loop search: one knob at a time, a binary search over its codes on the sign of
    its error, every group in parallel. Stage 1 searches ``gain_i`` for zero proxy (at the start ``gain_e``),
    stage 2 searches ``gain_e`` for the target rate (at the found ``gain_i``), and since stage 2 moves the balance,
    both stages run again (calix re-runs stages to undo coupling; docs/controller.md, "baselines"). ADC offsets are nulled first."""

    name = "search"

    def __init__(self, window_ms: float = 1000.0, budget_ms: float = 180_000.0, rate_tol: float = 0.04,
                 rounds: int = 2) -> None:
        super().__init__(window_ms, budget_ms, rate_tol)
        self.rounds = rounds

    def settings(self) -> dict:
        return {**super().settings(), "rounds": self.rounds}

    def _init(self) -> None:
        self.stage = -1  # -1: offsets
        self.round = 0
        self.offset = np.zeros(self.n)

    def _begin_stage(self, knob: str) -> None:
        self._sorted = codes_in_gain_order(self.knobs[knob])
        self.lo = np.zeros(self.n_groups, dtype=np.int64)
        self.hi = np.full(self.n_groups, len(self._sorted) - 1, dtype=np.int64)
        self.knob = knob
        self._set_mid()

    def _set_mid(self) -> None:
        mid = (self.lo + self.hi) // 2
        self.codes = dict(self.codes)
        self.codes[self.knob] = self._sorted[mid]

    def plan(self) -> list[Window]:
        if self.done:
            return []
        if self.stage == -1:
            zero = {k: np.zeros(s.n_groups, dtype=np.int64) for k, s in self.knobs.items()}
            return [Window(zero, 50.0, WindowKind.SETTLE), Window(zero, 20.0, WindowKind.NULL)]
        return self._loop_window()

    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> UpdateRecord:
        if self.stage == -1:
            for w, m in zip(windows, measurements):
                self.model_ms += m.window_ms
                if w.kind == WindowKind.NULL:
                    self.offset = np.where(np.isfinite(m.proxy_pa), m.proxy_pa, 0.0)
            self.stage = 0
            self._begin_stage("gain_i")
            return PhaseRecord(Phase.NULL)
        rate, n_live, T = self._measure(measurements)
        if self.knob == "gain_i":
            m = measurements[-1]
            y = np.where(m.observed, m.proxy_pa - self.offset, np.nan)
            yg = np.bincount(self.group_of, weights=np.nan_to_num(y), minlength=self.n_groups) / np.maximum(
                np.bincount(self.group_of, weights=np.isfinite(y).astype(float), minlength=self.n_groups), 1)
            too_high = yg < self.targets.proxy_pa  # net current below target: too much inhibition
        else:
            too_high = rate > self.target_g
        mid = (self.lo + self.hi) // 2
        self.hi = np.where(too_high, mid, self.hi)
        self.lo = np.where(too_high, self.lo, mid + 1)
        self.lo = np.minimum(self.lo, self.hi)
        if np.all(self.lo >= self.hi):
            self.codes = dict(self.codes)
            self.codes[self.knob] = self._sorted[self.lo]
            at_edge = (self.lo == 0) | (self.lo == len(self._sorted) - 1)
            if self.knob == "gain_e":
                self.unreachable = at_edge & (np.abs(rate / self.target_g - 1) > 0.2)
                self.round += 1
                if self.round >= self.rounds:
                    self.done = True
                    return SearchDoneRecord(window_ms=T, stage="done")
                self._begin_stage("gain_i")
            else:
                self._begin_stage("gain_e")
        else:
            self._set_mid()
        live = n_live > 0
        return SearchRecord(window_ms=T, stage=self.knob, rate_mean_hz=float(rate[live].mean()),
                            rate_cv=float(rate[live].std() / max(rate[live].mean(), 1e-9)))


class CrossHomeostatic(_FixedWindowBaseline):
    """The cross-homeostatic population rule of Maryada et al. 2025 (after Soldado-Magraner et al. 2022), as their
    code applies it on Dynap-SE2 (docs/controller.md, "baselines"): per iteration, population-mean rates over a
    fixed window; updates ``eta * max(1, r) * error`` in fine-code steps, stochastically rounded and clipped to
    +-5 steps. On a chip with excitatory and inhibitory chip neurons (a recurrent profile) each population's
    gains follow the *other* population's error (cross rule); on a feed-forward chip there is one population per
    knob group, and the rule reduces to its two same-population terms: excitatory gain up and inhibitory gain
    down while the rate is below target (our adaptation, stated as such)."""

    name = "cross-homeostatic"

    def __init__(self, window_ms: float = 1000.0, budget_ms: float = 400_000.0, rate_tol: float = 0.04,
                 eta: float = 0.005, max_steps: int = 5, seed: int = 0) -> None:
        super().__init__(window_ms, budget_ms, rate_tol)
        self.eta = eta
        self.max_steps = max_steps
        self.seed = seed

    def settings(self) -> dict:
        return {**super().settings(), "eta": self.eta, "max_steps": self.max_steps, "seed": self.seed}

    def _init(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        # codes ordered by gain, so "one fine step" is one position along the DAC's own code order
        self._order = {}
        self._pos = {}
        for k, spec in self.knobs.items():
            order = codes_in_gain_order(spec)
            self._order[k] = order
            where = {int(c): i for i, c in enumerate(order)}
            self._pos[k] = np.array([where[int(c)] for c in self.codes[k]], dtype=np.int64)

    def plan(self) -> list[Window]:
        return self._loop_window()

    def _steps(self, x: np.ndarray) -> np.ndarray:
        fl = np.floor(x)
        return np.clip(fl + (self.rng.random(x.shape) < (x - fl)), -self.max_steps, self.max_steps)

    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> UpdateRecord:
        rate, n_live, T = self._measure(measurements)
        live = n_live > 0
        err = self.target_g - rate
        drive = self.eta * np.maximum(1.0, rate) * err
        # integer code steps (Maryada: stochastically rounded fine-code steps, at most 5 per iteration)
        self.codes = dict(self.codes)
        for knob, sign in (("gain_e", +1.0), ("gain_i", -1.0)):
            steps = self._steps(sign * drive).astype(np.int64)
            order = self._order[knob]
            self._pos[knob] = np.clip(self._pos[knob] + steps, 0, len(order) - 1)
            self.codes[knob] = order[self._pos[knob]]
        mean = float(rate[live].mean()) if live.any() else 0.0
        cv = float(rate[live].std() / max(mean, 1e-9)) if live.any() else 0.0
        rel = rate[live] / self.target_g[live] if live.any() else np.ones(1)
        if abs(float(rel.mean()) - 1) < 0.01 and (float(rel.std()) <= self.rate_tol or self.knobs["gain_e"].sharing != "neuron"):
            self.done = True
        return WindowRecord(window_ms=T, rate_mean_hz=mean, rate_cv=cv)
