"""``eical chip export`` of dpi (and cond_lif) chips: the NPZ of docs/model.md section 10 is readable with numpy
alone and holds the whole chip. A chip rebuilt from nothing but the file's arrays gives the same gains and the very
same spike trains as the chip drawn from (profile, seed)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from hw_models.chip import EXPORT_PARAMS, Chip, draw_chip, export_npz, make_knobs
from hw_models.emulator import NumpyDevice, gains_from_codes, nominal_codes
from hw_models.models import dpi_jumps
from hw_models.profile import load_profile


def rebuild(path, profile) -> Chip:
    """A Chip from the exported arrays alone (the profile only as the carrier of settings the file also holds,
    which are checked equal)."""
    z = np.load(path, allow_pickle=False)
    model = str(z["model"])
    assert model == profile.model and str(z["profile_sha256"]) == profile.sha256
    inp = profile["input"]
    assert float(z["dt"]) == profile.dt_ms and float(z["rate_e"]) == inp["rate_e_hz"]
    assert int(z["n_src_e"]) == inp["n_src_e"] and int(z["n_src_i"]) == inp["n_src_i"]
    n = int(z["n_neurons"])

    def csr(name, cols):
        return sp.csr_matrix((z[f"{name}_weights"], z[f"{name}_indices"], z[f"{name}_indptr"]), shape=(n, cols))

    scalars = {"cond_lif": ("EE", "EI", "Vbal", "Ge0", "Gi0"), "dpi": ("UT", "kappa", "I0", "Iw_e", "Iw_i", "Idc")}
    rec = csr("rec", n) if "rec_indptr" in z.files else None
    chip = Chip(profile=profile, seed=int(z["seed"]), params={k: z[k] for k in EXPORT_PARAMS[model]},
                scalars={k: float(z[k]) for k in scalars[model]}, dead=z["dead"], core_of=z["core_of"],
                in_e=csr("in_e", int(z["n_src_e"])), in_i=csr("in_i", int(z["n_src_i"])),
                adc_offset_pa=np.zeros(n), rec=rec, rec_is_exc=z["rec_is_exc"] if rec is not None else None)
    chip.knobs = make_knobs(profile)
    return chip


@pytest.mark.parametrize("name,seed", [("dynapse2", 3), ("devboard", 2), ("balanced-net", 1)])
def test_export_round_trips_the_chip(tmp_path, name, seed):
    profile = load_profile(name)
    chip = draw_chip(profile, seed)
    path = tmp_path / "chip.npz"
    export_npz(chip, path)
    z = np.load(path, allow_pickle=False)  # numpy alone: no pickled objects anywhere
    assert str(z["format"]) == "eical-chip" and int(z["format_version"]) == 2
    for k in EXPORT_PARAMS[chip.model]:
        np.testing.assert_array_equal(z[k], chip.params[k])
    np.testing.assert_array_equal(z["knob_group"], chip.knobs["gain_e"].group_of)
    # the replay recipe of docs/model.md: gain = transfer[code of the neuron's group] * eps
    k = chip.knobs["gain_e"]
    rng = np.random.default_rng(0)
    valid = np.flatnonzero(np.isfinite(z["gain_e_transfer"]))
    codes = {"gain_e": rng.choice(valid, k.n_groups), "gain_i": rng.choice(valid, k.n_groups)}
    ge, gi = gains_from_codes(chip, codes)
    np.testing.assert_allclose(z["gain_e_transfer"][codes["gain_e"][z["knob_group"]]] * z["eps_e"], ge)
    np.testing.assert_allclose(z["gain_i_transfer"][codes["gain_i"][z["knob_group"]]] * z["eps_i"], gi)
    # a chip made of the file's arrays runs the very same spikes
    back = rebuild(path, profile)
    for c in (nominal_codes(chip.knobs), codes):
        a = NumpyDevice(profile, seed, chip=chip)
        b = NumpyDevice(profile, seed, chip=back)
        a.set_codes(c)
        b.set_codes(c)
        np.testing.assert_array_equal(a.run_true(300.0).spike_counts, b.run_true(300.0).spike_counts)


def test_dpi_export_in_model_units(tmp_path):
    """dpi arrays are in pA, pF and ms (docs/model.md section 2): the time constants and synaptic jumps computed from
    the file agree with the model's."""
    chip = draw_chip("dynapse2", 5)
    export_npz(chip, tmp_path / "d.npz")
    z = np.load(tmp_path / "d.npz")
    tau_mem = z["C_mem"] * z["UT"] / (z["kappa"] * z["Itau_mem"])  # pF mV / pA = ms
    nom = load_profile("dynapse2")["neuron"]
    assert np.median(tau_mem) == pytest.approx(nom["tau_mem_ms"], rel=0.15)
    je, ji = dpi_jumps({k: z[k] for k in EXPORT_PARAMS["dpi"]}, float(z["dt"]), float(z["UT"]), float(z["kappa"]),
                       float(z["Iw_e"]), float(z["Iw_i"]))
    je0, ji0 = dpi_jumps(chip.params, chip.dt, chip.scalars["UT"], chip.scalars["kappa"], chip.scalars["Iw_e"],
                         chip.scalars["Iw_i"])
    np.testing.assert_array_equal(je, je0)
    np.testing.assert_array_equal(ji, ji0)
    assert str(z["knob_dac"]) == "coarse_fine" and str(z["knob_sharing"]) == "core" and int(z["n_cores"]) == 4
    t = z["gain_e_transfer"]
    assert t[int(z["code_ref"])] == 1.0 and np.isnan(t).any()  # invalid coarse values are NaN
    assert t[128] / t[127] - 1 == pytest.approx(-0.0545, abs=0.001)  # the coarse/fine DAC's known drop


def test_the_export_is_read_by_a_plain_numpy_process(tmp_path):
    export_npz(draw_chip("dynapse2", 1), tmp_path / "d.npz")
    code = ("import numpy as np; z = np.load(%r); print(str(z['model']), z['Itau_mem'].shape[0], "
            "int(z['in_e_indptr'][-1]))" % str(tmp_path / "d.npz"))
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    model, n, nnz = r.stdout.split()
    assert model == "dpi" and int(n) == 1024 and int(nnz) == 1024 * load_profile("dynapse2")["input"]["K_e"]
