r"""Neuron models (MODEL.md sections 1 and 2): their per-neuron constants, and the equations the engine integrates.

The arithmetic of one step lives in one place, the compiled step of ``hw_models.kernels`` (``_block_steps``): the
numpy emulator, the Lava process model and the board emulator's chip all run it, so their results are identical to
the bit. This module holds what those steps read: the per-neuron constants (``*Consts``,
precomputed once per gain or temperature change, with numpy, by every engine alike) and the state containers the
reference engine (``hw_models.reference``, today's numpy step loop kept for benchmarks and bit-identity tests)
updates in place.

``cond_lif`` (one step n, in this order, MODEL.md 1):

.. math::

    g_e &\leftarrow g_e e^{-dt/\tau_e} + x_e[n],\qquad g_i \leftarrow g_i e^{-dt/\tau_i} + x_i[n] \\
    g &= g_L + g_e + g_i,\quad V_\infty = (g_L E_L + g_e E_E + g_i E_I)/g \\
    V &\leftarrow V_\infty + (V - V_\infty)\, e^{-dt\, g / C}\quad(\text{held at } V_{reset}\text{ while } r > 0) \\
    &\text{spike if } V \ge V_{th}:\ V \leftarrow V_{reset},\ r \leftarrow \mathrm{round}(t_{ref}/dt)

where :math:`x_e[n] = G_{e0}\, gain_e \sum_k w_{ik} s_k[n]` (and likewise :math:`x_i`) is computed by the engine.

``dpi`` (DynapSim, currents in pA here; MODEL.md 2): DPI synapses
:math:`I_{syn} \leftarrow I_{syn} e^{-dt/\tau_{syn}} + x[n]`, and the current-mode neuron

.. math::

    I_{in} &= \max(I_{ampa} - I_{gaba} - I_{leak} + I_{dc}, I_0)\ (0 \text{ while refractory}),\quad I_{leak} = I_{\tau,mem} \\
    \frac{dI_{mem}}{dt} &= \frac{I_{mem}}{\tau_{mem}(I_{mem} + I_{g})}\Big(\frac{I_g}{I_{\tau}}(I_{in} - I_{leak})
        + \frac{I_{fb}}{I_{leak}}(I_{mem} + I_g) - I_{mem}\Big),\quad I_{fb} = I_0 (I_{mem}/I_0)^{\kappa/(\kappa+1)}

(``I_fb = I0 exp(kappa' V/U_T)`` with ``V = (U_T/kappa) ln(I_mem/I0)`` and ``kappa' = kappa^2/(kappa+1)``, written
as a power). The leak enters both ``I_in`` and the steady-state term, exactly as DynapSim
(synsense/rockpool, devices/dynapse/simulation/dynapsim.py) implements it; we keep that on purpose, so a chip
tuned in DynapSim behaves the same here. No adaptation current (``I_ahp = 0``). Forward Euler, clipped at ``I0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["CondLifConsts", "CondLifState", "DpiConsts", "DpiState", "dpi_jumps"]


@dataclass
class CondLifConsts:
    """Per-neuron constants of one cond_lif population at the current temperature."""

    de: np.ndarray  # exp(-dt/tau_e)
    di: np.ndarray  # exp(-dt/tau_i)
    gL: np.ndarray
    gLEL: np.ndarray  # gL*EL
    neg_dt_over_C: np.ndarray  # -dt/C
    Vth: np.ndarray
    Vreset: np.ndarray
    nref: np.ndarray  # int32: round(tref/dt)
    alive: Optional[np.ndarray]  # bool mask, None when no neuron is dead
    EE: float
    EI: float

    @classmethod
    def from_params(cls, p: dict, dt: float, EE: float, EI: float, dead: np.ndarray, leak_scale: float = 1.0):
        gL = p["gL"] * leak_scale
        return cls(de=np.exp(-dt / p["tau_e"]), di=np.exp(-dt / p["tau_i"]), gL=gL, gLEL=gL * p["EL"],
                   neg_dt_over_C=-dt / p["C"], Vth=p["Vth"].copy(), Vreset=p["Vreset"].copy(),
                   nref=np.rint(p["tref"] / dt).astype(np.int32), alive=None if not dead.any() else ~dead,
                   EE=float(EE), EI=float(EI))


class CondLifState:
    """State (V, ge, gi, refractory counter) plus scratch buffers reused every step."""

    __slots__ = ("V", "ge", "gi", "r", "_g", "_t", "_u")

    def __init__(self, V0: np.ndarray):
        n = V0.shape[0]
        self.V = V0.astype(np.float64).copy()
        self.ge = np.zeros(n)
        self.gi = np.zeros(n)
        self.r = np.zeros(n, dtype=np.int32)
        self._g = np.empty(n)
        self._t = np.empty(n)
        self._u = np.empty(n)


@dataclass
class DpiConsts:
    """Per-neuron constants of one dpi population at the current temperature (currents pA, times ms)."""

    da: np.ndarray  # exp(-dt/tau_ampa)
    dg: np.ndarray  # exp(-dt/tau_gaba)
    Ileak: np.ndarray  # Itau_mem
    Igain: np.ndarray  # Igain_mem
    gain_over_tau: np.ndarray  # Igain_mem/Itau_mem
    dt_over_tau_mem: np.ndarray  # dt/tau_mem
    Ispkthr: np.ndarray
    nref: np.ndarray
    alive: Optional[np.ndarray]
    I0: float
    Idc: float
    fb_exp: float  # kappa/(kappa+1): I_fb = I0*(Imem/I0)**fb_exp
    # ceiling of Imem: Ispkthr for dead neurons (which never spike, so their positive feedback would run Imem to
    # inf and NaN in finite time), inf for live ones; None when no neuron is dead
    Imax: Optional[np.ndarray] = None

    @classmethod
    def from_params(cls, p: dict, dt: float, UT: float, kappa: float, I0: float, Idc: float, dead: np.ndarray,
                    leak_scale: float = 1.0, ut_scale: float = 1.0):
        ut = UT * ut_scale
        itau_mem = p["Itau_mem"] * leak_scale
        tau_mem = p["C_mem"] * ut / (kappa * itau_mem)
        tau_a = p["C_syn"] * ut / (kappa * p["Itau_ampa"])
        tau_g = p["C_syn"] * ut / (kappa * p["Itau_gaba"])
        igain = p["Igain_mem"] * leak_scale
        return cls(da=np.exp(-dt / tau_a), dg=np.exp(-dt / tau_g), Ileak=itau_mem, Igain=igain,
                   gain_over_tau=igain / itau_mem, dt_over_tau_mem=dt / tau_mem, Ispkthr=p["Ispkthr"].copy(),
                   nref=np.rint(p["tref"] / dt).astype(np.int32), alive=None if not dead.any() else ~dead,
                   I0=float(I0), Idc=float(Idc), fb_exp=kappa / (kappa + 1.0),
                   Imax=np.where(dead, p["Ispkthr"], np.inf) if dead.any() else None)


def dpi_jumps(p: dict, dt: float, UT: float, kappa: float, Iw_e: float, Iw_i: float, ut_scale: float = 1.0):
    """Current added to the AMPA and GABA synapse per unit input weight, at gain 1 (pA):
    ``(Igain/Itau) * Iw * (1 - exp(-t_pulse/tau_syn))``."""
    ut = UT * ut_scale
    tau_a = p["C_syn"] * ut / (kappa * p["Itau_ampa"])
    tau_g = p["C_syn"] * ut / (kappa * p["Itau_gaba"])
    je = p["Igain_syn"] * Iw_e * (1.0 - np.exp(-p["t_pulse"] / tau_a))
    ji = p["Igain_syn"] * Iw_i * (1.0 - np.exp(-p["t_pulse"] / tau_g))
    return je, ji


class DpiState:
    __slots__ = ("Imem", "Iampa", "Igaba", "r", "_a", "_b", "_c")

    def __init__(self, n: int, I0: float):
        self.Imem = np.full(n, I0)
        self.Iampa = np.full(n, I0)
        self.Igaba = np.full(n, I0)
        self.r = np.zeros(n, dtype=np.int32)
        self._a = np.empty(n)
        self._b = np.empty(n)
        self._c = np.empty(n)
