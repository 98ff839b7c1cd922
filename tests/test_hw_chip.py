"""Chip instances: determinism across processes, mismatch statistics per level, redraws, defects, NPZ export."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hw_models.chip import draw_chip, export_npz
from hw_models.emulator import NumpyDevice
from hw_models.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent

# A script that draws a chip, runs it briefly with a spike recorder and prints one digest of everything.
_DIGEST = r"""
import hashlib, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from hw_models.emulator import NumpyDevice

class Spikes:
    sample_every_steps = 0
    def __init__(self): self.parts = []
    def on_spikes(self, step, idx): self.parts.append(np.concatenate([[step], idx]).astype(np.int64))

def digest(profile, seed, ms):
    rec = Spikes()
    dev = NumpyDevice(profile, seed, recorder=rec, record_isyn=True)
    c = dev.chip
    h = hashlib.sha256()
    for k in sorted(c.params):
        h.update(k.encode()); h.update(np.ascontiguousarray(c.params[k]).tobytes())
    for a in (c.dead, c.core_of, c.adc_offset_pa, c.in_e.indptr, c.in_e.indices, c.in_e.data, c.in_i.indptr,
              c.in_i.indices, c.in_i.data):
        h.update(np.ascontiguousarray(a).tobytes())
    st = dev.run_true(ms)
    m = dev.measure(ms / 2)
    for a in rec.parts + [st.spike_counts, st.iexc, st.iinh, st.isyn, m.proxy_pa, m.spike_counts]:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

print(digest("bss2", 5, 300.0), digest("dynapse2", 5, 100.0), digest("devboard", 5, 300.0))
"""


def _digest_in_subprocess() -> str:
    out = subprocess.run([sys.executable, "-c", _DIGEST], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_same_seed_same_chip_and_spikes_in_two_processes():
    a = _digest_in_subprocess()
    b = _digest_in_subprocess()
    assert a == b and len(a.split()) == 3
    # and a different seed is a different chip
    c1 = draw_chip("bss2", 5)
    c2 = draw_chip("bss2", 6)
    assert not np.array_equal(c1.params["gL"], c2.params["gL"])


def test_window_cuts_do_not_change_spike_trains():
    """Inputs are drawn in fixed blocks, so two 150 ms windows give the same spikes as one 300 ms window."""
    d1 = NumpyDevice("devboard", 2)
    d2 = NumpyDevice("devboard", 2)
    one = d1.run_true(300.0)
    a, b = d2.run_true(150.0), d2.run_true(150.0)
    np.testing.assert_array_equal(one.spike_counts, a.spike_counts + b.spike_counts)


# ---------------------------------------------------------------------------------------------------------------
# mismatch statistics: a small profile (8 cores x 8 neurons, tiny input) so that many chips are cheap to draw
# ---------------------------------------------------------------------------------------------------------------
LOGNORMAL = ("C", "gL", "tref", "tau_e", "tau_i", "eps_e", "eps_i")
NOMINAL = {"C": "C_pF", "gL": "gL_nS", "tref": "tref_ms", "tau_e": "tau_e_ms", "tau_i": "tau_i_ms"}
OFFSETS = ("EL", "Vth", "Vreset")
SIGMA = {"chip": 0.3, "core": 0.25, "neuron": 0.2}
SD_MV = {"chip": 1.5, "core": 1.2, "neuron": 1.0}


def _small(level: str):
    base = load_profile("bss2")
    ch = {"geometry.cores": 8, "geometry.neurons_per_core": 8, "input.n_src_e": 4, "input.n_src_i": 4,
          "input.K_e": 2, "input.K_i": 2, "defects.dead_fraction": 0.0, "mismatch.synapse_sigma": 0.0}
    for k in LOGNORMAL:
        ch[f"mismatch.lognormal.{k}"] = {"chip": 0.0, "core": 0.0, "neuron": 0.0, level: SIGMA[level]}
    for k in OFFSETS:
        ch[f"mismatch.offsets_mV.{k}"] = {"chip": 0.0, "core": 0.0, "neuron": 0.0, level: SD_MV[level]}
    return base.with_changes(ch)


def _samples(level: str, n_chips: int) -> dict[str, np.ndarray]:
    """Standardised draws z of every quantity at one level: one per chip, per core or per neuron."""
    prof = _small(level)
    nom = prof["neuron"]
    out: dict[str, list] = {k: [] for k in LOGNORMAL + OFFSETS}
    for seed in range(n_chips):
        c = draw_chip(prof, seed)
        pick = {"chip": np.array([0]), "core": np.arange(8) * 8, "neuron": np.arange(64)}[level]
        for k in LOGNORMAL:
            base = nom[NOMINAL[k]] if k in NOMINAL else 1.0
            out[k].append(np.log(c.params[k][pick] / base) / SIGMA[level])
        for k in OFFSETS:
            out[k].append((c.params[k][pick] - nom[f"{k}_mV"]) / SD_MV[level])
        if level != "neuron":  # the level's draw is shared: every neuron of a chip (or a core) has the same value
            for k in LOGNORMAL:
                v = c.params[k].reshape(8, 8)
                assert np.allclose(v, v[:, :1]) if level == "core" else np.allclose(v, v.flat[0])
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("level,n_chips", [("chip", 400), ("core", 50), ("neuron", 8)])
def test_mismatch_draws_match_declared_sigmas(level, n_chips):
    z = _samples(level, n_chips)
    for k, v in z.items():
        assert v.size >= 400
        ks = stats.kstest(v, "norm")
        assert ks.pvalue > 1e-3, f"{level} {k}: KS p = {ks.pvalue:.2g}, sd {v.std():.3f}"
        assert abs(v.std() - 1.0) < 0.12, f"{level} {k}: standardised sd {v.std():.3f}"
    # draws of different quantities are independent streams, not one reused z
    assert abs(np.corrcoef(z["gL"], z["C"])[0, 1]) < 0.2


DPI_LOGNORMAL = ("C_mem", "C_syn", "Itau_mem", "Itau_ampa", "Itau_gaba", "Igain_mem", "Igain_syn", "Ispkthr", "tref",
                 "t_pulse", "eps_e", "eps_i")


@pytest.mark.parametrize("level,n_chips", [("chip", 400), ("core", 100), ("neuron", 1)])
def test_dpi_mismatch_draws_match_declared_sigmas(level, n_chips):
    base = load_profile("dynapse2").with_changes({
        "geometry.neurons_per_core": 128 if level == "neuron" else 2, "input.n_src_e": 4, "input.n_src_i": 4,
        "input.K_e": 2, "input.K_i": 2, "defects.dead_fraction": 0.0, "mismatch.synapse_sigma": 0.0})
    zero = {f"mismatch.lognormal.{k}": {"chip": 0.0, "core": 0.0, "neuron": 0.0} for k in DPI_LOGNORMAL}
    nominal = draw_chip(base.with_changes(zero), 0).params
    sig = SIGMA[level]
    prof = base.with_changes({k: {**v, level: sig} for k, v in zero.items()})
    z = {k: [] for k in DPI_LOGNORMAL}
    for seed in range(n_chips):
        c = draw_chip(prof, seed)
        pick = {"chip": np.array([0]), "core": np.arange(4) * 2, "neuron": np.arange(c.n)}[level]
        for k in DPI_LOGNORMAL:
            z[k].append(np.log(c.params[k][pick] / nominal[k][pick]) / sig)
    for k, v in z.items():
        v = np.concatenate(v)
        assert v.size >= 400
        assert stats.kstest(v, "norm").pvalue > 1e-3, f"{level} {k}"


def test_synapse_weights_match_their_sigma():
    prof = load_profile("bss2").with_changes({"mismatch.synapse_sigma": 0.3, "defects.dead_fraction": 0.0})
    c = draw_chip(prof, 3)
    for m, w0 in ((c.in_e, prof["input"]["w_e"]), (c.in_i, prof["input"]["w_i"])):
        z = np.log(m.data / w0) / 0.3
        assert stats.kstest(z, "norm").pvalue > 1e-3
        assert np.all(np.diff(m.indptr) == prof["input"]["K_e"])  # fixed in-degree
        for i in range(0, c.n, 97):  # distinct sources per neuron
            row = m.indices[m.indptr[i]:m.indptr[i + 1]]
            assert np.unique(row).size == row.size


def test_changing_one_sigma_leaves_every_other_draw_alone():
    """Draws are consumed whatever the sigma, so a profile edit moves only the quantity it touches."""
    a = draw_chip("bss2", 9)
    b = draw_chip(load_profile("bss2").with_changes({"mismatch.lognormal.gL.neuron": 0.4}), 9)
    assert not np.allclose(a.params["gL"], b.params["gL"])
    for k in ("C", "tau_e", "eps_i", "EL", "Vth"):
        np.testing.assert_array_equal(a.params[k], b.params[k])
    np.testing.assert_array_equal(a.in_e.data, b.in_e.data)
    np.testing.assert_array_equal(a.dead, b.dead)


def test_impossible_potentials_are_redrawn_and_reported():
    prof = load_profile("bss2").with_changes({
        "mismatch.offsets_mV.Vreset": {"chip": 0.0, "core": 0.0, "neuron": 6.0},
        "mismatch.offsets_mV.Vth": {"chip": 0.0, "core": 0.0, "neuron": 6.0},
        "mismatch.offsets_mV.EL": {"chip": 0.0, "core": 0.0, "neuron": 12.0},
    })
    with pytest.warns(UserWarning, match=r"redrew potentials of \d+ neuron"):
        c = draw_chip(prof, 4)
    assert c.redrawn > 0
    p = c.params
    assert np.all(p["Vreset"] < p["Vth"])
    assert np.all((c.scalars["EI"] < p["EL"]) & (p["EL"] < c.scalars["EE"]))
    # with the redraw off (narrow offsets) nothing is redrawn and no warning is given
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert draw_chip("bss2", 4).redrawn == 0


def test_offsets_too_wide_to_satisfy_fail_clearly():
    """A chip-level offset cannot be fixed by redrawing neurons: such a profile fails with a clear error."""
    prof = load_profile("devboard").with_changes({"mismatch.offsets_mV.EL": {"chip": 50.0, "core": 0.0, "neuron": 0.0}})
    failed = 0
    for seed in range(12):  # about half the seeds put the chip's EL outside (EI, EE)
        try:
            draw_chip(prof, seed)
        except ValueError as e:
            assert "potential offsets too wide" in str(e)
            failed += 1
    assert 0 < failed < 12


def test_defects_dead_neurons_and_stuck_synapses():
    prof = load_profile("bss2").with_changes({"defects.dead_fraction": 0.1, "defects.stuck_synapse_fraction": 0.05})
    c = draw_chip(prof, 2)
    assert c.dead.sum() == round(0.1 * c.n)
    n_syn = c.in_e.nnz + c.in_i.nnz
    assert c.stuck_synapses == int((c.in_e.data == 0).sum() + (c.in_i.data == 0).sum())
    assert 0.03 < c.stuck_synapses / n_syn < 0.07
    dev = NumpyDevice(prof, 2)
    st = dev.run_true(300.0)
    assert st.spike_counts[c.dead].sum() == 0  # dead neurons never spike ...
    assert np.all(st.iexc[c.dead] > 0)  # ... but integrate their input like the others
    assert st.spike_counts[~c.dead].sum() > 0


def test_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        draw_chip("bss2", -1)


def test_export_npz_holds_the_chip(tmp_path):
    c = draw_chip("devboard", 7)
    f = tmp_path / "chip.npz"
    export_npz(c, f)
    z = np.load(f)
    for k in ("C", "gL", "EL", "Vth", "Vreset", "tref", "tau_e", "tau_i", "eps_e", "eps_i"):
        np.testing.assert_array_equal(z[k], c.params[k])
    np.testing.assert_array_equal(z["dead"], c.dead)
    for k in ("EE", "EI", "Vbal", "Ge0", "Gi0", "dt", "code_ref", "rate_e", "rate_i", "n_src_e", "n_src_i"):
        assert z[k].shape == ()
    assert float(z["Ge0"]) == c.scalars["Ge0"] and int(z["code_ref"]) == c.knobs["gain_e"].code_ref
    import scipy.sparse as sp
    m = sp.csr_matrix((z["in_e_weights"], z["in_e_indices"], z["in_e_indptr"]), shape=c.in_e.shape)
    assert (m != c.in_e).nnz == 0
    assert str(z["model"]) == "cond_lif" and int(z["format_version"]) == 2


def test_recurrent_weights_scale_as_j_over_sqrt_k():
    prof = load_profile("devboard").with_changes({"recurrent": {
        "n_exc": 24, "K_ee": 8, "K_ei": 4, "K_ie": 8, "K_ii": 4, "J_ee": 2.0, "J_ei": 3.0, "J_ie": 2.0, "J_ii": 3.0},
        "mismatch.synapse_sigma": 0.0})
    c = draw_chip(prof, 1)
    rec = c.rec.toarray()
    assert np.all(np.diag(rec) == 0)  # no autapses
    exc = c.rec_is_exc
    assert np.allclose(rec[:24][:, exc][rec[:24][:, exc] > 0], 2.0 / np.sqrt(8))
    assert np.allclose(rec[:24][:, ~exc][rec[:24][:, ~exc] > 0], 3.0 / np.sqrt(4))
    assert np.all((rec[:, exc] > 0).sum(axis=1) == 8) and np.all((rec[:, ~exc] > 0).sum(axis=1) == 4)
    st = NumpyDevice(prof, 1).run_true(200.0)  # the recurrent path runs
    assert st.spike_counts.sum() > 0


def test_connectivity_draw_does_not_depend_on_its_memory_block(monkeypatch):
    """_fixed_indegree draws the uniforms a block of rows at a time (a million-neuron chip fits in memory); the
    chip is the same for any block size."""
    import hw_models.chip as chip_mod

    a = chip_mod.draw_chip("balanced-net", 4)
    monkeypatch.setattr(chip_mod, "_UNIFORMS_PER_CHUNK", 12345)
    b = chip_mod.draw_chip("balanced-net", 4)
    for m in ("in_e", "in_i", "rec"):
        x, y = getattr(a, m), getattr(b, m)
        assert np.array_equal(x.indptr, y.indptr) and np.array_equal(x.indices, y.indices)
        assert np.array_equal(x.data, y.data)
