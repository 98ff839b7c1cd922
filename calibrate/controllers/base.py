"""The controller interface: what a controller plans, what it learns from, what it tells the run loop.

A controller never touches a chip. It *plans* the windows of its next iteration (``plan() -> list[Window]``) and
*learns* from what the run loop measured (``update(windows, measurements) -> UpdateRecord``). The run loop
(``calibrate.run``) owns the loop and the ``Device``; all it asks a controller besides that is
``stop_reason()`` (why ``plan`` returned no window), ``status()`` (every neuron's outcome) and
``balance_reference()`` (the ADC offsets and excitatory sensitivities it estimated, so that the run's measured
balance figures use the same reference as the controller). docs/controller.md describes the controllers.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from hw_models.device import DeviceIdentity, KnobSpec, Measurement

from ..figures import exc_mask

__all__ = ["Targets", "WindowKind", "Window", "Phase", "StopReason", "Status", "NeuronCounts", "BalanceReference",
           "UpdateRecord", "PhaseRecord", "OffsetRecord", "LoopRecord", "PopulationLoopRecord", "WindowRecord",
           "SearchRecord", "SearchDoneRecord", "Controller"]


@dataclass(frozen=True)
class Targets:
    """What a calibration aims for: a rate and a proxy value; on chips with excitatory and inhibitory neurons
    (recurrent profiles) the inhibitory ones may have their own rate (``rate_inh_hz``, with ``inh_mask`` [N])."""

    rate_hz: float = 10.0
    proxy_pa: float = 0.0
    rate_inh_hz: Optional[float] = None
    inh_mask: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("rate_hz",) + (("rate_inh_hz",) if self.rate_inh_hz is not None else ()):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"target {name}: expected a positive number of Hz, got {v!r}")
        if (self.rate_inh_hz is None) != (self.inh_mask is None):
            raise ValueError("targets: rate_inh_hz and inh_mask go together")

    @classmethod
    def from_profile(cls, profile: Any, rate_hz: Optional[float] = None,
                     rate_inh_hz: Optional[float] = None) -> "Targets":
        """The profile's targets (``targets.rate_hz``, and ``rate_inh_hz`` for its inhibitory neurons on a
        recurrent profile), optionally overridden."""
        t = profile["targets"]
        rate = float(rate_hz if rate_hz is not None else t["rate_hz"])
        inh = rate_inh_hz if rate_inh_hz is not None else t.get("rate_inh_hz")
        exc = exc_mask(profile)
        if inh is None or exc is None:
            return cls(rate_hz=rate)
        return cls(rate_hz=rate, rate_inh_hz=float(inh), inh_mask=~exc)

    def per_neuron(self, n: int) -> np.ndarray:
        """Target rate of every neuron (Hz)."""
        out = np.full(n, float(self.rate_hz))
        if self.rate_inh_hz is not None:
            out[np.asarray(self.inh_mask, dtype=bool)] = float(self.rate_inh_hz)
        return out

    def to_dict(self) -> dict:
        return {"rate_hz": self.rate_hz, "proxy_pa": self.proxy_pa,
                **({"rate_inh_hz": self.rate_inh_hz} if self.rate_inh_hz is not None else {})}


class WindowKind(str, Enum):
    """What a measurement window is for (its ``value`` is what ``history.npz`` records)."""

    SETTLE = "settle"  # discarded: transients after a large code change
    NULL = "null"  # all codes 0: the ADC reads its own offset
    EXC_PROBE = "exc_probe"  # gain_i 0: the proxy reads its excitatory part
    LOOP = "loop"  # closed-loop measurement at the current codes
    VERIFY = "verify"  # the run loop's final window at the final codes


@dataclass
class Window:
    """One measurement window a controller asks for: codes, length, kind, and which proxy channels to read
    (``monitor``: neuron indices, on chips that read one channel per core; None: the chip's default)."""

    codes: dict[str, np.ndarray]
    window_ms: float
    kind: WindowKind = WindowKind.LOOP
    monitor: Optional[np.ndarray] = None


class Phase(str, Enum):
    """Phase of a controller that measures references before it closes its loops."""

    NULL = "null"
    PROBE = "probe"
    LOOP = "loop"


class StopReason(str, Enum):
    """Why a calibration ended (``summary.json`` ``stopped``)."""

    CONVERGED = "converged"  # the controller's tolerances are met
    BUDGET = "budget"  # its model-time budget is spent
    ITERATIONS = "iterations"  # the run loop's iteration limit was reached
    UNREACHABLE = "unreachable"  # no live knob group left within the DAC range


@dataclass(frozen=True)
class NeuronCounts:
    calibrated: int
    unreachable: int
    dead: int
    n: int

    def to_dict(self) -> dict[str, int]:
        return {"calibrated": self.calibrated, "unreachable": self.unreachable, "dead": self.dead, "n": self.n}


@dataclass
class Status:
    """Per-neuron outcome. Every neuron is exactly one of calibrated, unreachable, dead (checked here)."""

    calibrated: np.ndarray
    unreachable: np.ndarray
    dead: np.ndarray

    def __post_init__(self) -> None:
        per_neuron = (self.calibrated.astype(int) + self.unreachable.astype(int) + self.dead.astype(int))
        if not np.all(per_neuron == 1):
            raise ValueError(f"status: {int(np.sum(per_neuron != 1))} neurons are in no category or in two")

    def counts(self) -> NeuronCounts:
        return NeuronCounts(calibrated=int(self.calibrated.sum()), unreachable=int(self.unreachable.sum()),
                            dead=int(self.dead.sum()), n=int(self.calibrated.size))


@dataclass(frozen=True)
class BalanceReference:
    """What a controller estimated to read the balance proxy: the ADC offset of every neuron (pA) and, per knob
    group, the excitatory part of the proxy at unit gain (``a``: the proxy reads ``gain_e * a`` under excitation
    alone). The balance index of a reading ``y`` is then ``|y - offset| / (gain_e a)``."""

    offset_pa: np.ndarray
    exc_pa_per_gain: np.ndarray


# -- what update() returns ------------------------------------------------------------------------------------------
class UpdateRecord:
    """Base of the typed records ``update()`` returns; ``to_dict()`` is the iteration's entry in ``history.npz``.

    The progress display reads ``phase``, ``rate_mean_hz``, ``rate_cv`` and ``balance_p95``: a record that has no
    such field answers None for it (and AttributeError for any other missing name)."""

    DISPLAYED = frozenset({"phase", "rate_mean_hz", "rate_cv", "balance_p95"})

    def __getattr__(self, name: str) -> Any:  # only called for names the record does not have
        if name in UpdateRecord.DISPLAYED:
            return None
        raise AttributeError(f"{type(self).__name__} has no {name!r}")

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


@dataclass
class PhaseRecord(UpdateRecord):
    phase: Phase


@dataclass
class OffsetRecord(UpdateRecord):
    """Null windows read: the spread of the ADC offsets (None when no channel was read)."""

    phase: Phase
    offset_sd_pa: Optional[float]


@dataclass
class LoopRecord(UpdateRecord):
    """One closed-loop iteration of the dual loop: the window, what it measured, and the loops' estimates."""

    phase: Phase
    window_ms: float
    rate_mean_hz: Optional[float]
    rate_cv: Optional[float]
    balance_p95: Optional[float]
    beta: float
    gamma: float
    fano: float
    rate_se_rms: Optional[float]
    balance_se_rms: Optional[float]


@dataclass
class PopulationLoopRecord(LoopRecord):
    """Population mode adds the population rates (E, I) and the measured closed-loop Jacobian."""

    pop_rates_hz: list = field(default_factory=list)
    jacobian: list = field(default_factory=list)


@dataclass
class WindowRecord(UpdateRecord):
    """A baseline's iteration: one fixed window."""

    window_ms: float
    rate_mean_hz: Optional[float]
    rate_cv: Optional[float]


@dataclass
class SearchRecord(UpdateRecord):
    window_ms: float
    stage: str
    rate_mean_hz: Optional[float]
    rate_cv: Optional[float]


@dataclass
class SearchDoneRecord(UpdateRecord):
    window_ms: float
    stage: str


class Controller(ABC):
    """The interface every controller implements (the dual loop and the baselines)."""

    name: str = "controller"

    def __init__(self) -> None:
        self.identity: Optional[DeviceIdentity] = None
        self.knobs: dict[str, KnobSpec] = {}
        self.targets = Targets()

    def begin(self, identity: DeviceIdentity, knobs: Mapping[str, KnobSpec], targets: Targets,
              start_codes: Mapping[str, np.ndarray]) -> None:
        self.identity = identity
        self.knobs = dict(knobs)
        self.targets = targets
        if set(self.knobs) != {"gain_e", "gain_i"}:
            raise ValueError(f"{self.name}: expected knobs gain_e and gain_i, chip has {sorted(self.knobs)}")
        ke, ki = self.knobs["gain_e"], self.knobs["gain_i"]
        if ke.n_groups != ki.n_groups or not np.array_equal(ke.group_of, ki.group_of):
            raise ValueError(f"{self.name}: gain_e and gain_i must share the same groups")
        self.group_of = ke.group_of
        self.n_groups = ke.n_groups
        self.n = identity.n_neurons
        self.codes = {k: np.asarray(v, dtype=np.int64).copy() for k, v in start_codes.items()}
        # each knob group's target: the mean of its neurons' targets (per-neuron knobs: the neuron's own)
        tgt = targets.per_neuron(self.n)
        self.target_g = np.bincount(self.group_of, weights=tgt, minlength=self.n_groups) / np.maximum(
            np.bincount(self.group_of, minlength=self.n_groups), 1)
        self._start()

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def plan(self) -> list[Window]:
        """The windows of the next iteration; an empty list when the controller has finished."""

    @abstractmethod
    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> UpdateRecord:
        """Learn from the measured windows; set ``self.codes``; return the iteration's record."""

    @abstractmethod
    def status(self) -> Status: ...

    @abstractmethod
    def stop_reason(self) -> StopReason:
        """Why ``plan()`` returned no window (asked once it has)."""

    def balance_reference(self) -> Optional[BalanceReference]:
        """The offsets and excitatory sensitivities this controller estimated, or None when it has none."""
        return None

    def settings(self) -> dict:
        return {}

    # -- helpers shared by controllers ---------------------------------------------------------------------------
    def group_counts(self, counts: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per group: spike count summed over live neurons, and the number of live neurons."""
        c = np.bincount(self.group_of, weights=counts * live, minlength=self.n_groups)
        n_live = np.bincount(self.group_of, weights=live.astype(float), minlength=self.n_groups)
        return c, n_live
