"""The step functions against MODEL.md sections 1 and 2, written out independently here.

Each check runs on both implementations: the compiled step every backend runs (``hw_models.kernels``) and the numpy
step of the reference engine (``hw_models.reference``), which the compiled one equals to the bit."""
from __future__ import annotations

import numpy as np
import pytest

from hw_models.chip import draw_chip
from hw_models.emulator import NumpyDevice
from hw_models.kernels import step_arrays
from hw_models.models import CondLifConsts, CondLifState, DpiConsts, DpiState, dpi_jumps
from hw_models.profile import load_profile
from hw_models.reference import cond_lif_step as numpy_cond_lif_step
from hw_models.reference import dpi_step as numpy_dpi_step

DT = 0.1
STEPS = pytest.mark.parametrize("step", [step_arrays, "numpy"], ids=["compiled", "numpy"])


def _cond(step):
    return numpy_cond_lif_step if step == "numpy" else step


def _dpi(step):
    return numpy_dpi_step if step == "numpy" else step


def _cond_params(n, rng):
    return {"C": rng.uniform(150, 250, n), "gL": rng.uniform(8, 12, n), "EL": rng.uniform(-68, -62, n),
            "Vth": rng.uniform(-52, -48, n), "Vreset": rng.uniform(-62, -58, n), "tref": rng.uniform(1, 3, n),
            "tau_e": rng.uniform(4, 6, n), "tau_i": rng.uniform(8, 12, n)}


def _reference_cond_lif(V, ge, gi, r, p, xe, xi, EE, EI):
    """MODEL.md 1, steps 1-5, one neuron at a time."""
    n = V.size
    V, ge, gi, r = V.copy(), ge.copy(), gi.copy(), r.copy()
    spikes, isyn = [], np.zeros(n)
    for i in range(n):
        ge[i] = ge[i] * np.exp(-DT / p["tau_e"][i]) + xe[i]
        gi[i] = gi[i] * np.exp(-DT / p["tau_i"][i]) + xi[i]
        gtot = p["gL"][i] + ge[i] + gi[i]
        vinf = (p["gL"][i] * p["EL"][i] + ge[i] * EE + gi[i] * EI) / gtot
        V[i] = vinf + (V[i] - vinf) * np.exp(-DT * gtot / p["C"][i])
        if r[i] > 0:
            V[i] = p["Vreset"][i]
            r[i] -= 1
        isyn[i] = ge[i] * (EE - V[i]) + gi[i] * (EI - V[i])
        if V[i] >= p["Vth"][i]:
            spikes.append(i)
            V[i] = p["Vreset"][i]
            r[i] = int(round(p["tref"][i] / DT))
    return V, ge, gi, r, np.array(spikes, dtype=int), isyn


@STEPS
def test_cond_lif_step_matches_model_md(step):
    cond_lif_step = _cond(step)
    rng = np.random.default_rng(0)
    n = 200
    p = _cond_params(n, rng)
    c = CondLifConsts.from_params(p, DT, 0.0, -80.0, np.zeros(n, bool))
    s = CondLifState(rng.uniform(-70, -45, n))  # some start above threshold
    s.ge[:] = rng.uniform(0, 20, n)
    s.gi[:] = rng.uniform(0, 30, n)
    s.r[:] = rng.integers(0, 3, n)
    for step in range(30):
        xe, xi = rng.exponential(2.0, n) * (rng.random(n) < 0.3), rng.exponential(2.0, n) * (rng.random(n) < 0.3)
        ref = _reference_cond_lif(s.V, s.ge, s.gi, s.r, p, xe, xi, 0.0, -80.0)
        acc = np.zeros(n)
        idx = cond_lif_step(s, c, xe, xi, acc)
        np.testing.assert_allclose(s.V, ref[0], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(s.ge, ref[1], rtol=1e-13)
        np.testing.assert_allclose(s.gi, ref[2], rtol=1e-13)
        np.testing.assert_array_equal(s.r, ref[3])
        np.testing.assert_array_equal(idx, ref[4])
        np.testing.assert_allclose(acc, ref[5], rtol=1e-9, atol=1e-9)


@STEPS
def test_refractory_timing(step):
    """A neuron sits at Vreset in its spike step and is held for round(tref/dt) more steps (MODEL.md 1.5)."""
    cond_lif_step = _cond(step)
    p = {k: np.array([v]) for k, v in dict(C=200.0, gL=10.0, EL=-65.0, Vth=-50.0, Vreset=-60.0, tref=2.0, tau_e=5.0,
                                             tau_i=10.0).items()}
    c = CondLifConsts.from_params(p, DT, 0.0, -80.0, np.zeros(1, bool))
    s = CondLifState(np.array([-49.0]))
    big = np.array([50.0])
    assert cond_lif_step(s, c, big, np.zeros(1)).tolist() == [0]
    assert s.V[0] == -60.0 and s.r[0] == 20
    for k in range(20):  # held, whatever the input
        assert cond_lif_step(s, c, big, np.zeros(1)).size == 0
        assert s.V[0] == -60.0
    assert s.r[0] == 0
    assert cond_lif_step(s, c, big, np.zeros(1)).tolist() == [0]  # integrates again: fires at once under this drive


@STEPS
def test_dead_cond_lif_neurons_integrate_but_never_spike(step):
    cond_lif_step = _cond(step)
    p = {k: np.full(2, v) for k, v in dict(C=200.0, gL=10.0, EL=-65.0, Vth=-50.0, Vreset=-60.0, tref=2.0, tau_e=5.0,
                                             tau_i=10.0).items()}
    c = CondLifConsts.from_params(p, DT, 0.0, -80.0, np.array([False, True]))
    s = CondLifState(np.full(2, -65.0))
    n_spk = np.zeros(2, int)
    for _ in range(200):
        n_spk[cond_lif_step(s, c, np.full(2, 5.0), np.zeros(2))] += 1
    assert n_spk[0] > 0 and n_spk[1] == 0
    assert s.V[1] > -50.0  # the dead one sits above threshold, bounded by EE
    assert s.V[1] < 0.0


def _reference_dpi(s, timer, p, xe, xi, I0, kappa, UT, Idc=0.0):
    """MODEL.md 2 as DynapSim computes it, one neuron at a time: Ifb = I0*exp(kappa'*V/UT) with V = (UT/kappa)*
    ln(Imem/I0) from the end of the previous step (before the reset), Ileak = Itau_mem + Iahp with Iahp at its
    floor I0, and the refractory period as DynapSim's float32 timer (set to t_ref = Vth*C_ref/Iref at a spike,
    counted down by dt after every step, holding the neuron while positive)."""
    Ia, Ig, Im, Ip, timer = s.Iampa.copy(), s.Igaba.copy(), s.Imem.copy(), s.Ipre.copy(), timer.copy()
    spikes = []
    kp = kappa ** 2 / (kappa + 1)
    vth, cref, dt32 = np.float32(0.7), np.float32(1.5e-12), np.float32(DT * 1e-3)
    for i in range(Ia.size):
        tau_a = p["C_syn"][i] * UT / (kappa * p["Itau_ampa"][i])
        tau_g = p["C_syn"][i] * UT / (kappa * p["Itau_gaba"][i])
        Ia[i] = max(Ia[i] * np.exp(-DT / tau_a) + xe[i], I0)
        Ig[i] = max(Ig[i] * np.exp(-DT / tau_g) + xi[i], I0)
        itau, igain, iahp = p["Itau_mem"][i], p["Igain_mem"][i], I0
        ileak = itau + iahp
        iin = Ia[i] - Ig[i] - ileak + Idc
        iin = max(iin * (0.0 if timer[i] > 0 else 1.0), I0)  # zeroed while refractory, then clipped
        V = (UT / kappa) * np.log(Ip[i] / I0)
        ifb = I0 * np.exp(kp * V / UT)
        tau = p["C_mem"][i] * UT / (kappa * ileak)
        d = Im[i] / (tau * (Im[i] + igain)) * (igain / itau * (iin - ileak) + ifb / ileak * (Im[i] + igain)
                                               - Im[i] * (1 + iahp / itau))
        Im[i] = max(Im[i] + DT * d, I0)
        Ip[i] = Im[i]
        timer[i] = max(np.float32(timer[i] - dt32), np.float32(0.0))
        if Im[i] > p["Ispkthr"][i]:
            spikes.append(i)
            Im[i] = I0
            iref = np.float32(0.7 * 1.5e-12 / (p["tref"][i] * 1e-3))
            timer[i] = (vth * cref) / iref
    return Ia, Ig, Im, Ip, timer, np.array(spikes, dtype=int)


@STEPS
def test_dpi_step_matches_model_md(step):
    dpi_step = _dpi(step)
    chip = draw_chip("dynapse2", 2)
    n = 64
    p = {k: v[:n] for k, v in chip.params.items()}
    sc = chip.scalars
    dead = np.zeros(n, bool)
    c = DpiConsts.from_params(p, DT, sc["UT"], sc["kappa"], sc["I0"], sc["Idc"], dead)
    rng = np.random.default_rng(1)
    s = DpiState(n, sc["I0"])
    s.Imem[:] = np.exp(rng.uniform(np.log(0.5), np.log(2e5), n))  # some above threshold
    s.Ipre[:] = s.Imem * np.exp(rng.uniform(-0.1, 0.1, n))
    s.Iampa[:] = rng.uniform(0, 600, n)
    s.Igaba[:] = rng.uniform(0, 600, n)
    timer = np.zeros(n, np.float32)
    held = 0
    for _ in range(40):
        xe, xi = rng.uniform(0, 200, n) * (rng.random(n) < 0.3), rng.uniform(0, 200, n) * (rng.random(n) < 0.3)
        ref = _reference_dpi(s, timer, p, xe, xi, sc["I0"], sc["kappa"], sc["UT"])
        idx = dpi_step(s, c, xe, xi)
        np.testing.assert_allclose(s.Iampa, ref[0], rtol=1e-12)
        np.testing.assert_allclose(s.Igaba, ref[1], rtol=1e-12)
        np.testing.assert_allclose(s.Imem, ref[2], rtol=1e-9)
        np.testing.assert_allclose(s.Ipre, ref[3], rtol=1e-9)
        timer = ref[4]
        np.testing.assert_array_equal(s.r > 0, timer > 0)  # held exactly while DynapSim's timer runs
        np.testing.assert_array_equal(idx, ref[5])
        held += int((s.r > 0).sum())
    assert held > 100


def test_refractory_count_is_dynapsims_float32_timer():
    """ceil(tref/dt) in exact arithmetic; DynapSim's float32 timer decides the boundary cases: its own default
    (1 ms at 0.1 ms) holds 10 steps, as its Iref = Vth*C_ref/1 ms gives t_ref = 0.0009999999 s in float32."""
    from hw_models.models import dynapsim_refractory_steps

    assert dynapsim_refractory_steps(np.array([1.0]), 0.1).tolist() == [10]
    assert dynapsim_refractory_steps(np.array([0.0, 0.05, 0.1, 0.11]), 0.1).tolist() == [0, 1, 1, 2]
    assert dynapsim_refractory_steps(np.array([1.0]), 1.0).tolist() == [1]
    rng = np.random.default_rng(3)
    tref = np.exp(rng.normal(0.0, 0.3, 20000))
    got = dynapsim_refractory_steps(tref, 0.1)
    exact = np.ceil(tref / 0.1)
    near = np.abs(tref / 0.1 - np.rint(tref / 0.1)) < 1e-5  # within float32 rounding of a multiple of dt
    assert np.array_equal(got[~near], exact[~near])
    assert np.all(np.abs(got - exact) <= 1)


def test_dpi_weight_jump():
    chip = draw_chip("dynapse2", 2)
    p, sc = chip.params, chip.scalars
    je, ji = dpi_jumps(p, DT, sc["UT"], sc["kappa"], sc["Iw_e"], sc["Iw_i"])
    tau_a = p["C_syn"] * sc["UT"] / (sc["kappa"] * p["Itau_ampa"])
    np.testing.assert_allclose(je, p["Igain_syn"] * sc["Iw_e"] * (1 - np.exp(-p["t_pulse"] / tau_a)))
    # nominal figures: Itau_mem = C*UT/(kappa*tau) = 5.32 pA, jump about 0.1 * Iw (100 * 10 us / 10 ms)
    nom = load_profile("dynapse2")["neuron"]
    assert nom["C_mem_pF"] * nom["UT_mV"] / (nom["kappa"] * nom["tau_mem_ms"]) == pytest.approx(5.32, abs=0.01)
    assert np.median(je / sc["Iw_e"]) == pytest.approx(0.1, rel=0.5)


def test_dead_dpi_neurons_stay_finite():
    """A dead dpi neuron's positive feedback would otherwise run Imem to inf and NaN; it saturates at threshold."""
    prof = load_profile("dynapse2").with_changes({"defects.dead_fraction": 0.2})
    dev = NumpyDevice(prof, 1)
    with np.errstate(all="raise"):
        st = dev.run_true(300.0)
    dead = dev.chip.dead
    assert st.spike_counts[dead].sum() == 0 and st.spike_counts[~dead].sum() > 0
    im = dev.engine.state.Imem
    assert np.all(np.isfinite(im))
    assert np.all(im[dead] <= dev.chip.params["Ispkthr"][dead])


def test_proxy_parts_are_window_means():
    """WindowStats: iexc = <ge>*(EE-Vbal), iinh = <gi>*(EI-Vbal) (cond_lif); <Iampa>, -<Igaba> (dpi)."""
    dev = NumpyDevice("devboard", 1, record_isyn=True)
    st = dev.run_true(100.0)
    s = dev.chip.scalars
    np.testing.assert_allclose(st.iexc, st.mean_ge * (s["EE"] - s["Vbal"]))
    np.testing.assert_allclose(st.iinh, st.mean_gi * (s["EI"] - s["Vbal"]))
    np.testing.assert_allclose(st.ibal, st.iexc + st.iinh)
    assert st.isyn is not None and np.all(np.isfinite(st.isyn))
    d2 = NumpyDevice("dynapse2", 1)
    st2 = d2.run_true(20.0)
    np.testing.assert_allclose(st2.isyn, st2.iexc + st2.iinh)
    assert np.all(st2.iinh < 0) and np.all(st2.iexc > 0)
