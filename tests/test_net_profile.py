"""The balanced-net profile (issue 7): what it is, the chip it draws, and its design conditions.

800 excitatory and 200 inhibitory cond_lif neurons, fixed in-degree recurrent connectivity with weights J/sqrt(K)
(times per-synapse lognormal mismatch), external excitatory Poisson drive, per-neuron 10-bit knobs, a proxy
channel on every neuron (docs/balanced_net.md).
"""
from __future__ import annotations

import numpy as np
import pytest

from hw_models.chip import draw_chip
from hw_models.emulator import NumpyDevice
from hw_models.profile import load_profile

PROFILE = "balanced-net"


@pytest.fixture(scope="module")
def prof():
    return load_profile(PROFILE)


@pytest.fixture(scope="module")
def chip(prof):
    return draw_chip(prof, 1)


def test_profile_is_the_issue_network(prof):
    assert prof.name == PROFILE and prof.model == "cond_lif"
    assert prof.n_cores == 1 and prof.neurons_per_core == 1000 and prof.dt_ms == 0.1
    rec = prof["recurrent"]
    assert rec["n_exc"] == 800
    kn = prof["knobs"]
    assert kn["sharing"] == "neuron" and kn["bits"] == 10 and kn["dac"] == "linear"
    assert prof["observe"]["proxy_channels"] == "all"
    inp = prof["input"]
    assert inp["rate_e_hz"] > 0 and inp["K_e"] > 0
    assert inp["rate_i_hz"] == 0.0  # external drive is excitatory only (van Vreeswijk & Sompolinsky)
    # the nominal operating point: E and I targets of the docs, Vbal a few mV below threshold
    nm = prof["neuron"]
    assert nm["EI_mV"] < nm["Vbal_mV"] < nm["Vth_mV"] - 3.0
    # per-population calibration targets (docs/controller.md, "The paradoxical effect"): E 5 Hz, I 14 Hz
    assert prof["targets"]["rate_hz"] == 5.0 and prof["targets"]["rate_inh_hz"] == 14.0


def test_recurrent_connectivity_has_fixed_in_degree_and_no_autapses(prof, chip):
    r = prof["recurrent"]
    ne = r["n_exc"]
    exc = chip.rec_is_exc
    assert exc.sum() == ne and np.all(exc[:ne]) and not exc[ne:].any()
    rec = chip.rec.tocsr()
    assert rec.diagonal().max() == 0.0
    nnz_from_e = np.diff(rec[:, exc].tocsr().indptr)
    nnz_from_i = np.diff(rec[:, ~exc].tocsr().indptr)
    assert np.all(nnz_from_e[:ne] == r["K_ee"]) and np.all(nnz_from_i[:ne] == r["K_ei"])
    assert np.all(nnz_from_e[ne:] == r["K_ie"]) and np.all(nnz_from_i[ne:] == r["K_ii"])


@pytest.mark.parametrize("block", ["ee", "ei", "ie", "ii"])
def test_recurrent_weights_are_j_over_sqrt_k_with_lognormal_mismatch(prof, chip, block):
    r = prof["recurrent"]
    ne = r["n_exc"]
    rows = slice(0, ne) if block[0] == "e" else slice(ne, None)
    cols = slice(0, ne) if block[1] == "e" else slice(ne, None)
    w = chip.rec[rows][:, cols].data
    sig = prof["mismatch"]["synapse_sigma"]
    nominal = r["J_" + block] / np.sqrt(r["K_" + block])
    # ln w = ln(J/sqrt(K)) + sigma*z: the mean of ln w is the nominal weight's log, its sd the synapse sigma
    assert np.log(w).mean() == pytest.approx(np.log(nominal), abs=4 * sig / np.sqrt(w.size))
    assert np.log(w).std() == pytest.approx(sig, rel=0.05)


def test_the_same_seed_draws_the_same_network_and_spikes(prof, chip):
    again = draw_chip(prof, 1)
    assert (again.rec != chip.rec).nnz == 0
    assert (draw_chip(prof, 2).rec != chip.rec).nnz > 0
    a = NumpyDevice(prof, 1).run_true(100.0)
    b = NumpyDevice(prof, 1).run_true(100.0)
    assert np.array_equal(a.spike_counts, b.spike_counts) and np.array_equal(a.mean_gi, b.mean_gi)


def test_nominal_couplings_satisfy_the_balance_conditions(prof):
    """From the profile's nominal values alone (no mismatch, V at Vbal): the effective current-based couplings
    c_YX = K_YX * (J_YX/sqrt(K_YX)) * G_X0 * tau_X * |E_X - Vbal| (pA per Hz) satisfy the conditions for a balanced
    state with positive rates, c_E0/c_I0 > c_EI/c_II > c_EE/c_IE, with margin (docs/balanced_net.md)."""
    nm, r, inp = prof["neuron"], prof["recurrent"], prof["input"]
    v = nm["Vbal_mV"]
    per_e = nm["Ge0_nS"] * nm["tau_e_ms"] * (nm["EE_mV"] - v) * 1e-3
    per_i = nm["Gi0_nS"] * nm["tau_i_ms"] * (v - nm["EI_mV"]) * 1e-3
    c = {yx: np.sqrt(r["K_" + yx]) * r["J_" + yx] * (per_e if yx[1] == "e" else per_i) for yx in ("ee", "ei", "ie", "ii")}
    c0 = inp["K_e"] * inp["w_e"] * per_e  # the same external pool and weights onto E and I neurons
    ext, inh, exc = c0 / c0, c["ei"] / c["ii"], c["ee"] / c["ie"]
    assert ext > inh + 0.3 and inh > exc + 0.15, (ext, inh, exc)  # 1 > 0.55 > 0.35
    # the predicted rates m = A m0 from the 2x2 balance equations are positive, I above E
    m = np.array([[c["ee"], -c["ei"]], [c["ie"], -c["ii"]]])
    a_e, a_i = np.linalg.solve(m, -np.array([c0, c0]))
    assert 0 < a_e < a_i
    # and inhibition-stabilised in the balanced limit: d ln r_I / d ln(gain_e of all I) = -c_EE c_II / D < 0
    d = c["ei"] * c["ie"] - c["ee"] * c["ii"]
    assert d > 0 and -c["ee"] * c["ii"] / d < -0.5


def test_no_external_inhibition_is_drawn(prof):
    dev = NumpyDevice(prof, 1)
    assert dev.chip.in_i.shape == (1000, 0) and dev.chip.in_i.nnz == 0


def test_an_in_degree_equal_to_its_own_population_is_refused(prof):
    # within a population a neuron has only n - 1 others: K = n would bring the autapses back
    bad = prof.with_changes({"recurrent.K_ii": 200})
    with pytest.raises(ValueError, match="no autapses"):
        draw_chip(bad, 1)
    ok = draw_chip(prof.with_changes({"recurrent.K_ii": 199}), 1)
    assert ok.rec.diagonal().max() == 0.0
