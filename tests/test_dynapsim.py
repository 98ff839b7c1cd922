"""A dpi chip for rockpool's DynapSim (issue 17, docs/model.md section 13): the export against the emulator's own
parameters, the recorded input realisation, ``eical chip export --format dynapsim``, and, where the
``eical[rockpool]`` extra is installed (tests marked ``rockpool``), DynapSim itself: its refractory count, a replay
on the emulator's own inputs, and the recipe of docs/model.md run as written."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from hw_models import dynapsim
from hw_models.chip import draw_chip
from hw_models.emulator import NumpyDevice, gains_from_codes, nominal_codes
from hw_models.engine import Engine
from hw_models.models import DpiConsts
from hw_models.profile import load_profile
from hw_models.table import GainTable

ROOT = Path(__file__).resolve().parent.parent
# rockpool's import notes about packages it does not need here (torch)
pytestmark = [pytest.mark.filterwarnings("ignore:Could not import dependencies for ctc_loss_torch"),
              pytest.mark.filterwarnings("ignore:The 'warn' function is deprecated")]
HAVE_ROCKPOOL = all(importlib.util.find_spec(m) is not None for m in ("rockpool", "jax"))
needs_rockpool = pytest.mark.skipif(not HAVE_ROCKPOOL, reason="rockpool and jax are not installed: pip install "
                                                               "'eical[rockpool]' to compare with DynapSim")


@pytest.fixture(scope="module")
def small():
    """A dynapse2 chip of 2 cores x 48 neurons, with dead neurons and stuck synapses."""
    prof = load_profile("dynapse2").with_changes({"geometry.cores": 2, "geometry.neurons_per_core": 48,
                                                  "defects.dead_fraction": 0.05,
                                                  "defects.stuck_synapse_fraction": 0.05})
    return draw_chip(prof, 3)


def _dynapsim_t_ref_steps(arrays, dt_s: float) -> np.ndarray:
    """DynapSim's refractory timer written out (rockpool 3.1): t_ref = (Vth*C_ref)/Iref in float32, held while
    positive, dt subtracted and clipped at 0 after every step."""
    f = np.float32
    t = (arrays["Vth"].astype(f) * arrays["C_ref"].astype(f)) / arrays["Iref"].astype(f)
    n = np.zeros(t.shape, int)
    while (t > 0).any():
        n += t > 0
        t = np.maximum(t - f(dt_s), f(0))
    return n


def test_export_holds_the_emulators_parameters_in_dynapsims_units(small):
    chip = small
    codes = nominal_codes(chip.knobs)
    codes["gain_e"] = np.array([748, 700])  # another code on core 1
    a = dynapsim.export_arrays(chip, codes)
    p, s = chip.params, chip.scalars
    assert a["format"] == dynapsim.FORMAT and a["chip_uid"] == chip.uid and int(a["seed"]) == 3
    assert set(a["dynapsim_params"].tolist()) == set(dynapsim.DYNAPSIM_PARAMETERS)
    for k in dynapsim.DYNAPSIM_PARAMETERS:
        assert a[k].shape == (chip.n,) and np.all(np.isfinite(a[k])), k
    # SI units: currents in A, capacitances in F, potentials in V, time in s
    np.testing.assert_allclose(a["Itau_mem"], p["Itau_mem"] * 1e-12)
    np.testing.assert_allclose(a["C_mem"], p["C_mem"] * 1e-12)
    np.testing.assert_allclose(a["Ispkthr"], p["Ispkthr"] * 1e-12)
    assert np.all(a["Ut"] == 0.025) and np.all(a["Io"] == 0.5e-12) and np.all(a["Idc"] == 0.0)
    assert float(a["dt"]) == pytest.approx(1e-4)
    # DynapSim's own formulas on the exported arrays give the emulator's constants (its leak: Itau_mem + Iahp,
    # Iahp at its floor Io)
    c = DpiConsts.from_params(p, chip.dt, s["UT"], s["kappa"], s["I0"], s["Idc"], chip.dead)
    dt = float(a["dt"])
    kappa = (a["kappa_n"] + a["kappa_p"]) / 2
    tau = lambda itau, cap: (a["Ut"] / kappa) * cap / itau  # noqa: E731
    np.testing.assert_allclose(dt / tau(a["Itau_mem"] + a["Io"], a["C_mem"]), c.dt_over_tau_mem, rtol=1e-12)
    np.testing.assert_allclose(a["Igain_mem"] / a["Itau_mem"], c.gain_over_tau, rtol=1e-12)
    np.testing.assert_allclose(np.exp(-dt / tau(a["Itau_syn"], a["C_syn"])), c.da, rtol=1e-12)
    np.testing.assert_allclose(np.exp(-dt / tau(a["Itau_gaba"], a["C_syn"])), c.dg, rtol=1e-12)
    assert np.array_equal(_dynapsim_t_ref_steps(a, dt), c.nref)
    # the charge of one input spike: (1 - exp(-t_pulse/tau)) * (Igain/Itau) * w_in * Iscale = the emulator's jump
    eng = Engine(chip)
    eng.set_gains(*gains_from_codes(chip, codes))
    t_pulse = a["Vth"] * a["C_pulse"] / a["Ipulse"]
    for kind, m, jump, itau, igain in (("ampa", chip.in_e, eng.jump_e, "Itau_syn", "Igain_syn"),
                                       ("gaba", chip.in_i, eng.jump_i, "Itau_gaba", "Igain_gaba")):
        charge = (1 - np.exp(-t_pulse / tau(a[itau], a["C_syn"]))) * a[igain] / a[itau]
        got = a[f"w_in_{kind}"] * float(a["Iscale"]) * charge[None, :]  # [n_src x N], A
        want = (m.multiply(jump[:, None]).T.toarray()) * 1e-12
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
        # stuck synapses stay zero; every other connection carries its weight
        assert (a[f"w_in_{kind}"] != 0).sum() == (m.data != 0).sum()
    # per-core weight currents of the codes: Iw * DAC(code)
    spec = chip.knobs["gain_e"]
    np.testing.assert_allclose(a["Iw_ampa"], s["Iw_e"] * 1e-12 * spec.nominal_gain(codes["gain_e"]))
    assert a["Iw_ampa"][1] < a["Iw_ampa"][0] and a["code_ampa"].tolist() == [748, 700]
    assert a["coarse_ampa"].tolist() == [2, 2] and a["fine_ampa"].tolist() == [236, 188]
    np.testing.assert_allclose(a["Iw_gaba"], np.full(2, s["Iw_i"] * 1e-12))
    assert np.array_equal(a["dead"], chip.dead) and chip.dead.any()
    assert np.array_equal(a["knob_group_of"], chip.core_of) and str(a["knob_sharing"]) == "core"


def test_export_refuses_a_cond_lif_chip():
    with pytest.raises(ValueError, match="dpi chips; devboard is cond_lif"):
        dynapsim.export_arrays(draw_chip("devboard", 1))


def test_recorded_inputs_are_the_ones_the_emulator_ran_on(small):
    chip = small
    inputs, counts = dynapsim.record_window(chip, None, 300.0)
    dev = NumpyDevice(chip.profile, chip.seed, chip=chip)
    assert np.array_equal(dev.run_true(300.0).spike_counts, counts)  # recording changes nothing
    assert inputs.n_steps == 3000 and inputs.first_step == 0
    assert np.all(np.diff(inputs.steps) >= 0) and inputs.steps.max() < 3000
    n_e, n_i = chip.profile["input"]["n_src_e"], chip.profile["input"]["n_src_i"]
    expect = (n_e + n_i) * 10.0 * 0.3  # sources x rate x seconds
    assert abs(inputs.steps.size - expect) < 5 * np.sqrt(expect)
    re, ri = inputs.rasters()
    assert re.shape == (3000, n_e) and ri.shape == (3000, n_i) and re.sum() + ri.sum() == inputs.steps.size
    # the same realisation however the window is cut, and recording from a later step counts from there
    eng = Engine(chip)
    eng.run(500)
    eng.record_inputs()
    eng.run(1000)
    eng.run(1500)
    later = eng.recorded_inputs()
    assert later.first_step == 500 and later.n_steps == 2500
    whole = inputs.steps >= 500
    assert np.array_equal(later.steps, inputs.steps[whole] - 500)
    assert np.array_equal(later.sources, inputs.sources[whole])
    with pytest.raises(RuntimeError, match="without record_inputs"):
        eng.recorded_inputs()


def test_cli_export_writes_the_dynapsim_format(eical, tmp_path):
    out = tmp_path / "chip.npz"
    code, text, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "4", "--format", "dynapsim",
                            "--out", out, "--inputs", "0.2")
    assert code == 0, err
    assert "wrote" in text and "DynapSim format" in text
    a = dynapsim.load_npz(out)
    chip = draw_chip("dynapse2", 4)
    want = dynapsim.export_arrays(chip)
    for k in want:
        assert np.array_equal(a[k], want[k]), k
    inputs, counts = dynapsim.record_window(chip, None, 200.0)
    got = dynapsim.input_spikes(a)
    assert np.array_equal(got.steps, inputs.steps) and np.array_equal(got.sources, inputs.sources)
    assert np.array_equal(a["eical_spike_counts"], counts) and int(a["input_n_steps"]) == 2000
    # the output-path rule (README, "Output paths"): an earlier export is replaced, a user's file never
    code, _, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "4", "--format", "dynapsim",
                         "--out", out)
    assert code == 0, err
    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"my own data")
    code, _, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "4", "--format", "dynapsim",
                         "--out", mine)
    assert code == 2 and "exists and is not an eical chip export" in err and mine.read_bytes() == b"my own data"
    # a cond_lif profile has no DynapSim form; --table belongs to --format dynapsim
    code, _, err = eical("chip", "export", "--profile", "bss2", "--format", "dynapsim", "--out", tmp_path / "b")
    assert code == 2 and "expected 'dpi' for --format dynapsim" in err
    code, _, err = eical("chip", "export", "--profile", "bss2", "--out", tmp_path / "b", "--table", "t.json")
    assert code == 2 and "--format dynapsim" in err


def test_cli_export_takes_a_tables_codes(eical, tmp_path):
    dev = NumpyDevice("dynapse2", 5)
    codes = {"gain_e": np.array([748, 760, 740, 700]), "gain_i": np.array([748, 748, 755, 1000])}
    GainTable.from_codes(dev.identity, dev.knobs, codes).save(tmp_path / "table.json")
    out = tmp_path / "cal.npz"
    code, _, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "5", "--format", "dynapsim",
                         "--table", tmp_path / "table.json", "--out", out)
    assert code == 0, err
    a = dynapsim.load_npz(out)
    assert a["code_ampa"].tolist() == codes["gain_e"].tolist() and a["code_gaba"].tolist() == codes["gain_i"].tolist()
    want = dynapsim.export_arrays(draw_chip("dynapse2", 5), codes)
    np.testing.assert_array_equal(a["w_in_gaba"], want["w_in_gaba"])
    np.testing.assert_array_equal(a["Iw_ampa"], want["Iw_ampa"])
    assert str(a["codes_source"]).startswith("table ")
    code, _, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "6", "--format", "dynapsim",
                         "--table", tmp_path / "table.json", "--out", tmp_path / "other.npz")
    assert code == 3 and "emu-dynapse2-5" in err
    assert not (tmp_path / "other.npz").exists()


# ---------------------------------------------------------------------------------------------------------------
# DynapSim itself (the eical[rockpool] extra)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.rockpool
@needs_rockpool
def test_dynapsim_holds_a_spike_as_long_as_the_emulator(small):
    """DynapSim's own timer on the exported Iref, for this chip's mismatched trefs and for boundary values."""
    import jax
    import jax.numpy as jnp

    DynapSim = dynapsim._dynapsim_class()
    tref = np.concatenate([small.params["tref"], [1.0, 2.0, 0.5, 0.3, 0.2, 1.05, 0.95, 0.1, 3.0]])
    n = tref.size
    p = {k: np.resize(v, n) for k, v in small.params.items()}
    p["tref"] = tref
    s = small.scalars
    c = DpiConsts.from_params(p, 0.1, s["UT"], s["kappa"], s["I0"], 0.0, np.zeros(n, bool))
    iref = 0.7 * 1.5e-12 / (tref * 1e-3)  # what the export gives DynapSim (Vth*C_ref/tref, its defaults)
    mod = DynapSim(n, dt=1e-4, Iref=iref, Idc=np.full(n, 3e-9))  # a strong DC drive: every neuron fires soon
    keys = ("iahp", "imem", "iampa", "spikes", "timer_ref", "vmem")

    def step(st, _):
        spikes, new, _r = mod.set_attributes(st).evolve(jnp.zeros((1, n), jnp.float32), record=False)
        new["iampa"] = new.pop("isyn")
        new = {k: new[k][0] for k in keys}
        return new, (spikes[0, 0], new["timer_ref"])

    _, (spk, timer) = jax.jit(lambda st: jax.lax.scan(step, st, None, length=400))({k: mod.state()[k] for k in keys})
    spk, timer = np.asarray(spk), np.asarray(timer)
    for i in range(n):
        first = np.flatnonzero(spk[:, i])
        assert first.size >= 1, i
        k = first[0]
        held = 0
        while timer[k + held, i] > 0:  # the timer at the end of step k + j holds step k + j + 1
            held += 1
        assert held == c.nref[i], (i, tref[i], held, c.nref[i])
    assert c.nref[n - 9] == 10  # 1 ms at 0.1 ms: DynapSim's own default


@pytest.mark.rockpool
@needs_rockpool
def test_dynapsim_replays_the_emulator_on_its_own_inputs():
    """dynapse2 seed 1, 2 s, the same input realisation: the issue's 1 % and r >= 0.99, and in fact nearly every
    neuron's count is the same (float32 against float64 is the remaining difference)."""
    chip = draw_chip("dynapse2", 1)
    inputs, counts = dynapsim.record_window(chip, None, 2000.0)
    got = dynapsim.replay(dynapsim.export_arrays(chip), inputs, chunk_steps=7000)  # chunks change nothing
    live = ~chip.dead
    a, b = counts[live], got[live]
    assert abs(b.mean() / a.mean() - 1) <= 0.01
    assert np.corrcoef(a, b)[0, 1] >= 0.99
    assert (a == b).mean() >= 0.95


def _recipe() -> str:
    text = (ROOT / "docs" / "model.md").read_text()
    m = re.search(r"<!-- recipe: dynapsim -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/model.md lost its DynapSim recipe block"
    return m.group(1)


@pytest.mark.rockpool
@needs_rockpool
def test_the_docs_recipe_runs_and_agrees(eical, tmp_path, monkeypatch):
    code, _, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "2", "--format", "dynapsim",
                         "--out", tmp_path / "chip.npz", "--inputs", "0.5")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_recipe(), "docs/model.md (DynapSim recipe)", "exec"), ns)  # noqa: S102 - our own docs
    a = dynapsim.load_npz(tmp_path / "chip.npz")
    assert np.array_equal(ns["counts"], dynapsim.replay(a, dynapsim.input_spikes(a)))  # the library's replay
    live = ~a["dead"]
    assert np.corrcoef(ns["counts"][live], a["eical_spike_counts"][live])[0, 1] >= 0.99
