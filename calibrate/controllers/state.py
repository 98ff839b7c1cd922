"""The dual loop's state per knob group, shared by its two loops and the code lattice."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

from .base import LoopRecord, StopReason
from .fano import FanoEstimate
from .lattice import CodeLattice

__all__ = ["LoopState", "LoopObservation", "Schedule", "RateLoop"]


@dataclass
class LoopState:
    """Per knob group: the wanted scale and ratio (``ln s``, ``ln r``), what is out of the DAC range, and loop 2's
    latest error and standard error (relative, in ln rate). ``off_target``: the latest window's rate is off target far
    beyond its counting noise (a group that ends so is not calibrated, docs/controller.md "Accounting")."""

    ln_s: np.ndarray
    ln_r: np.ndarray
    unreachable_ratio: np.ndarray
    unreachable_rate: np.ndarray
    s_at_limit: np.ndarray
    rate_se: np.ndarray
    rate_err: np.ndarray
    off_target: Optional[np.ndarray] = None

    @classmethod
    def start(cls, ln_s: np.ndarray, ln_r: np.ndarray) -> "LoopState":
        g = ln_s.size
        return cls(ln_s=ln_s, ln_r=ln_r, unreachable_ratio=np.zeros(g, dtype=bool),
                   unreachable_rate=np.zeros(g, dtype=bool), s_at_limit=np.zeros(g, dtype=np.int64),
                   rate_se=np.full(g, np.inf), rate_err=np.full(g, np.inf), off_target=np.zeros(g, dtype=bool))

    def clip(self, lattice: CodeLattice) -> None:
        """Keep the state inside the DAC range (the ratio first: balance wins); no wind-up beyond it."""
        c = lattice.clip(self.ln_s, self.ln_r)
        self.ln_s, self.ln_r = c.ln_s, c.ln_r
        self.unreachable_ratio, self.s_at_limit = c.ratio_out_of_range, c.s_at_limit


@dataclass(frozen=True)
class LoopObservation:
    """What one loop window showed loop 2: spike counts per neuron and which neurons are live, the same per knob
    group (count over its live neurons, and their number), the state the window's codes applied, its length, the
    model time at its end, and loop 1's standard error of each group's balance index after this window."""

    counts: np.ndarray
    live: np.ndarray
    group_counts: np.ndarray
    group_live: np.ndarray
    ln_s: np.ndarray
    ln_r: np.ndarray
    window_ms: float
    end_ms: float
    balance_se: np.ndarray
    # dithered windows (docs/controller.md, "Slopes from deliberate excursions"): per block, each group's count and
    # its applied state's offset from the window's state (``ln_s``, ``ln_r``, the blocks' mean); None otherwise
    block_counts: Optional[np.ndarray] = None
    block_ds: Optional[np.ndarray] = None
    block_dr: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Schedule:
    """What a rate loop decides after a window: the next window's length, or why it stops."""

    next_ms: float
    stop: Optional[StopReason] = None


class RateLoop(Protocol):
    """Loop 2 as the dual loop drives it: ``GroupRateLoop`` (one scale per knob group) or ``PopulationRateLoop``
    (one scale per population of a recurrent chip)."""

    fano: FanoEstimate  # the one Fano estimate of what this loop estimates
    ratios_frozen: bool  # loop 1 leaves the ratios alone from now on

    @property
    def rate_tol(self) -> float: ...

    @property
    def slopes(self) -> tuple[np.ndarray, float]: ...  # d ln rate / d ln s per group, d ln rate / d ln r

    @property
    def beta(self) -> float: ...

    @property
    def gamma(self) -> float: ...

    def fano_sample(self, sub_counts: Sequence[np.ndarray], live: np.ndarray) -> Optional[float]: ...

    def step(self, state: LoopState, lattice: CodeLattice, obs: LoopObservation) -> None: ...

    def schedule(self, state: LoopState, obs: LoopObservation, balance_ms: float) -> Schedule: ...

    def record(self, fields: dict) -> LoopRecord: ...
