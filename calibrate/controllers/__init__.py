"""Calibration controllers: the dual-loop homeostatic controller and three baselines, one interface.

- :mod:`.base`: the interface (:class:`Controller`, :class:`Window`, :class:`Targets`, the typed records
  ``update()`` returns, :class:`StopReason`, :class:`BalanceReference`);
- the dual loop (:mod:`.dual_loop`) and its parts, each testable without a chip: the code lattice
  (:mod:`.lattice`), loop 1's offsets and balance least squares (:mod:`.balance`), the Fano estimate (:mod:`.fano`),
  loop 2 per knob group (:mod:`.group_loop` on the rate model of :mod:`.rate_model`) or per population on a recurrent
  chip (:mod:`.population`);
- the baselines (:mod:`.baselines`).

docs/controller.md has the theory and the measured results.
"""
from __future__ import annotations

from .base import (BalanceReference, Controller, LoopRecord, NeuronCounts, Phase, Status, StopReason, Targets,
                   UpdateRecord, Window, WindowKind)
from .baselines import BinarySearch, CrossHomeostatic, RateOnly
from .dual_loop import DualLoop
from .settings import DualLoopSettings

__all__ = ["Window", "WindowKind", "Phase", "Targets", "Controller", "Status", "NeuronCounts", "StopReason",
           "BalanceReference", "UpdateRecord", "LoopRecord", "DualLoop", "DualLoopSettings", "RateOnly",
           "BinarySearch", "CrossHomeostatic", "CONTROLLERS", "make_controller"]

CONTROLLERS = {"dual-loop": DualLoop, "rate-only": RateOnly, "search": BinarySearch,
               "cross-homeostatic": CrossHomeostatic}


def make_controller(name: str, **settings) -> Controller:
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; expected one of {', '.join(CONTROLLERS)}")
    return CONTROLLERS[name](**settings)
