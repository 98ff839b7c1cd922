"""A window of model time: its true statistics (``WindowStats``) and the calls every engine shares.

The compiled engine (``hw_models.engine``) and the numpy reference (``hw_models.reference``) are both driven the
same way: gains and temperature change between windows only, and a window is ``begin_window()``, ``advance(k)`` any
number of times (the Lava process model calls it once per model step), then ``end_window()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["WindowStats", "WindowedEngine"]


@dataclass
class WindowStats:
    """True statistics of one window (what an ideal observer would see; the ADC model is applied elsewhere).

    ``iexc``/``iinh`` are the two parts of the balance proxy: cond_lif ``ge*(EE-Vbal)`` and ``gi*(EI-Vbal)`` (so
    ``ibal = iexc + iinh``); dpi ``Iampa`` and ``-Igaba``. ``isyn`` (cond_lif, when requested) is the true net
    synaptic current ``ge*(EE-V) + gi*(EI-V)``; for dpi it equals ``ibal``. All window means in pA.
    """

    spike_counts: np.ndarray
    n_steps: int
    dt_ms: float
    iexc: np.ndarray
    iinh: np.ndarray
    isyn: Optional[np.ndarray] = None
    mean_ge: Optional[np.ndarray] = None
    mean_gi: Optional[np.ndarray] = None

    @property
    def window_ms(self) -> float:
        return self.n_steps * self.dt_ms

    @property
    def ibal(self) -> np.ndarray:
        return self.iexc + self.iinh

    @property
    def rates_hz(self) -> np.ndarray:
        return self.spike_counts / (self.window_ms * 1e-3)


class WindowedEngine:
    """What the compiled engine and the reference engine share: gains and temperature set between windows, and a
    window as ``begin_window()``, ``advance(k)`` any number of times, ``end_window()`` (``run(n)`` is all three).
    A subclass holds ``chip``, ``gain_e``, ``gain_i``, ``temperature_k`` and ``_win_steps`` (-1 outside a window),
    and defines ``_update_consts``, ``begin_window``, ``advance`` and ``end_window``."""

    def set_gains(self, gain_e: np.ndarray, gain_i: np.ndarray) -> None:
        """Effective per-neuron gains (DAC gain times the neuron's gain mismatch eps); apply from the next step."""
        self.gain_e = np.asarray(gain_e, dtype=float).copy()
        self.gain_i = np.asarray(gain_i, dtype=float).copy()
        self._update_consts()

    def set_temperature(self, kelvin: float) -> None:
        self.temperature_k = float(kelvin)
        self._update_consts()

    def _temperature_factors(self) -> tuple[float, float, float, float]:
        t = self.chip.profile["temperature"]
        dT = self.temperature_k - t["T0_K"]
        c = t["coeff_per_K"]
        return (1.0 + c["leak"] * dT, 1.0 + c["exc"] * dT, 1.0 + c["inh"] * dT, self.temperature_k / t["T0_K"])

    def step(self) -> None:
        """Advance one model step inside the open window."""
        self.advance(1)

    @property
    def in_window(self) -> bool:
        return self._win_steps >= 0

    def run(self, n_steps: int) -> WindowStats:
        """Advance ``n_steps`` steps as one window; return the window's true statistics."""
        if self.in_window:
            raise RuntimeError("run() inside an open window")
        self.begin_window()
        self.advance(n_steps)
        return self.end_window()
