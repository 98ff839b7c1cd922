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
:math:`I_{syn} \leftarrow \max(I_{syn} e^{-dt/\tau_{syn}} + x[n], I_0)`, and the current-mode neuron

.. math::

    I_{leak} &= I_{\tau,mem} + I_{ahp},\quad I_{ahp} = I_0 \\
    I_{in} &= \max(I_{ampa} - I_{gaba} - I_{leak} + I_{dc}, I_0)\ (I_0 \text{ while refractory}) \\
    \frac{dI_{mem}}{dt} &= \frac{I_{mem}}{\tau_{mem}(I_{leak})(I_{mem} + I_{g})}\Big(\frac{I_g}{I_{\tau}}(I_{in} - I_{leak})
        + \frac{I_{fb}}{I_{leak}}(I_{mem} + I_g) - I_{mem}\big(1 + \frac{I_{ahp}}{I_\tau}\big)\Big),\quad
        I_{fb} = I_0 (I^{pre}_{mem}/I_0)^{\kappa/(\kappa+1)}

with ``tau_mem(Ileak) = C_mem*UT/(kappa*Ileak)``. ``I_fb = I0 exp(kappa' V/U_T)`` with ``V = (U_T/kappa)
ln(I_mem/I0)`` and ``kappa' = kappa^2/(kappa+1)``, written as a power; ``I^pre_mem`` is the membrane current at the
end of the previous step before the spike reset (DynapSim keeps that step's ``vmem``). The leak enters both
``I_in`` and the steady-state term, exactly as DynapSim (synsense/rockpool 3.1,
devices/dynapse/simulation/dynapsim.py) implements it; we keep that on purpose, so a chip tuned in DynapSim behaves
the same here. There is no adaptation, but DynapSim clips its adaptation current at ``I0`` like every current (and
its default adaptation weight is ``I0``), so ``I_ahp`` stays at ``I0`` and adds to the leak (MODEL.md 2). Forward
Euler, clipped at ``I0``. A spike holds the neuron ``dynapsim_refractory_steps(tref, dt)`` steps: the count of
DynapSim's float32 timer (docs/model.md section 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["CondLifConsts", "CondLifState", "DpiConsts", "DpiState", "dpi_jumps", "dynapsim_refractory_steps",
           "DYNAPSIM_VTH_V", "DYNAPSIM_C_REF_F"]

# DynapSim sets a refractory period through a bias current, t_ref = Vth*C_ref/Iref (rockpool 3.1,
# devices/dynapse/lookup/defaults.py: Vth 0.7 V, C_ref 1.5 pF). A chip exported to DynapSim carries its tref as
# Iref = Vth*C_ref/tref with these two values (hw_models.dynapsim), and the dpi step holds a neuron for as many
# steps as DynapSim's timer then runs.
DYNAPSIM_VTH_V = 0.7
DYNAPSIM_C_REF_F = 1.5e-12


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


def dynapsim_refractory_steps(tref_ms: np.ndarray, dt_ms: float) -> np.ndarray:
    """Steps a spike holds a dpi neuron: the count of DynapSim's refractory timer, reproduced to the step.

    DynapSim (rockpool 3.1) computes ``t_ref = (Vth*C_ref)/Iref`` in float32, sets its timer to ``t_ref`` at a
    spike, and in every later step holds the neuron while the timer is positive, then subtracts ``dt`` and clips at
    0 (float32 throughout). In exact arithmetic that is ``ceil(tref/dt)`` steps; in float32 the count depends on the
    last bits of ``t_ref``, and that is what is reproduced here: ``tref`` enters as the ``Iref`` an export gives
    DynapSim (``Vth*C_ref/tref`` with DynapSim's default Vth and C_ref), rounded to float32 as DynapSim stores it,
    and the timer is counted down exactly as DynapSim does. So 1 ms at dt = 0.1 ms is 10 steps (DynapSim's own
    default t_ref, 0.0009999999 s in float32), whereas a float32 timer started at float32(1e-3) would run 11.
    """
    tref_s = np.asarray(tref_ms, dtype=np.float64) * 1e-3
    with np.errstate(divide="ignore", over="ignore"):
        iref = (DYNAPSIM_VTH_V * DYNAPSIM_C_REF_F / tref_s).astype(np.float32)  # what DynapSim stores (float32)
        t = (np.float32(DYNAPSIM_VTH_V) * np.float32(DYNAPSIM_C_REF_F)) / iref  # DynapSim's t_ref (float32)
    t = np.where(tref_s > 0, t, np.float32(0.0)).astype(np.float32)
    dt = np.float32(dt_ms * 1e-3)
    count = np.zeros(t.shape, dtype=np.int64)
    live = t > 0
    while live.any():  # one pass per held step (about 10 at the defaults)
        count += live
        t = np.maximum(t - dt, np.float32(0.0))
        live = t > 0
    return count.astype(np.int32)


@dataclass
class DpiConsts:
    """Per-neuron constants of one dpi population at the current temperature (currents pA, times ms)."""

    da: np.ndarray  # exp(-dt/tau_ampa)
    dg: np.ndarray  # exp(-dt/tau_gaba)
    Ileak: np.ndarray  # Itau_mem + Iahp, Iahp = I0 (DynapSim's adaptation current at its floor)
    Igain: np.ndarray  # Igain_mem
    gain_over_tau: np.ndarray  # Igain_mem/Itau_mem
    dt_over_tau_mem: np.ndarray  # dt/tau_mem(Ileak), tau_mem(Ileak) = C_mem*UT/(kappa*Ileak)
    ahp: np.ndarray  # 1 + Iahp/Itau_mem: the factor of -Imem in the membrane equation
    Ispkthr: np.ndarray
    nref: np.ndarray  # int32: dynapsim_refractory_steps(tref, dt)
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
        iahp = I0  # no adaptation: DynapSim's Iahp sits at its clip floor I0 (MODEL.md 2)
        ileak = itau_mem + iahp
        tau_mem = p["C_mem"] * ut / (kappa * ileak)
        tau_a = p["C_syn"] * ut / (kappa * p["Itau_ampa"])
        tau_g = p["C_syn"] * ut / (kappa * p["Itau_gaba"])
        igain = p["Igain_mem"] * leak_scale
        return cls(da=np.exp(-dt / tau_a), dg=np.exp(-dt / tau_g), Ileak=ileak, Igain=igain,
                   gain_over_tau=igain / itau_mem, dt_over_tau_mem=dt / tau_mem, ahp=1.0 + iahp / itau_mem,
                   Ispkthr=p["Ispkthr"].copy(), nref=dynapsim_refractory_steps(p["tref"], dt),
                   alive=None if not dead.any() else ~dead, I0=float(I0), Idc=float(Idc), fb_exp=kappa / (kappa + 1.0),
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
    """State (Imem, Iampa, Igaba, refractory counter, and Ipre: Imem at the end of the previous step before the
    spike reset, which sets the feedback current as DynapSim's vmem does) plus scratch buffers."""

    __slots__ = ("Imem", "Iampa", "Igaba", "Ipre", "r", "_a", "_b", "_c")

    def __init__(self, n: int, I0: float):
        self.Imem = np.full(n, I0)
        self.Ipre = np.full(n, I0)
        self.Iampa = np.full(n, I0)
        self.Igaba = np.full(n, I0)
        self.r = np.zeros(n, dtype=np.int32)
        self._a = np.empty(n)
        self._b = np.empty(n)
        self._c = np.empty(n)
