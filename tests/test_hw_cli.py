"""``eical simulate``, ``eical chip export`` and ``eical profiles`` through the real entry point."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw_models.emulator import NumpyDevice
from hw_models.table import GainTable

ROOT = Path(__file__).resolve().parent.parent


def test_simulate_json(eical):
    code, out, err = eical("simulate", "--profile", "devboard", "--seed", "3", "--duration", "0.5", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["profile"] == "devboard" and d["seed"] == 3 and d["chip_uid"] == "emu-devboard-3"
    assert d["codes"] == "nominal" and d["backend"] == "numpy" and d["duration_s"] == pytest.approx(0.5)
    n = d["n_neurons"]
    assert n == 32 and all(len(d[k]) == n for k in ("rates_hz", "ibal_mean_pa", "isyn_mean_pa"))
    # the same run gives the same true window means
    dev = NumpyDevice("devboard", 3, record_isyn=True)
    st = dev.run_true(500.0)
    np.testing.assert_allclose(d["rates_hz"], st.rates_hz, atol=1e-4)
    np.testing.assert_allclose(d["ibal_mean_pa"], st.ibal, atol=1e-3)
    np.testing.assert_allclose(d["isyn_mean_pa"], st.isyn, atol=1e-3)
    live = ~dev.chip.dead
    s = d["summary"]
    assert s["rate_cv"] == pytest.approx(st.rates_hz[live].std() / st.rates_hz[live].mean(), rel=1e-9)
    bi = np.abs(st.ibal[live]) / st.iexc[live]
    assert s["balance_index_median"] == pytest.approx(np.median(bi), rel=1e-9)
    assert s["balance_index_p95"] == pytest.approx(np.percentile(bi, 95), rel=1e-9)
    assert s["dead"] == int(dev.chip.dead.sum()) and s["live"] == n - s["dead"] and s["calibrated"] is False
    code2, out2, _ = eical("simulate", "--profile", "devboard", "--seed", "3", "--duration", "0.5", "--json")
    assert out2 == out  # reproducible to the byte


@pytest.mark.slow
def test_simulate_bss2_seed1_shows_the_uncalibrated_spread(eical):
    """The issue's acceptance run: at the profile's mismatch the uncalibrated rate CV is at least 0.3."""
    code, out, err = eical("simulate", "--profile", "bss2", "--seed", "1", "--duration", "10", "--json")
    assert code == 0, err
    s = json.loads(out)["summary"]
    assert s["rate_cv"] >= 0.3
    assert 0 < s["balance_index_median"] <= s["balance_index_p95"]
    assert s["dead"] == 5 and s["live"] == 507


def test_simulate_human_summary(eical):
    code, out, err = eical("simulate", "--profile", "dynapse2", "--seed", "2", "--duration", "0.2")
    assert code == 0, err
    assert "chip emu-dynapse2-2: dpi, 1024 neurons" in out and "uncalibrated" in out
    assert "CV across" in out and "balance index" in out


def _table_for(seed: int, codes_e) -> GainTable:
    dev = NumpyDevice("devboard", seed)
    return GainTable.from_codes(dev.identity, dev.knobs, {"gain_e": np.asarray(codes_e), "gain_i": np.full(32, 64)})


def test_simulate_with_a_table_applies_its_codes(eical, tmp_path):
    codes = np.arange(32) + 40
    f = tmp_path / "table.json"
    _table_for(4, codes).save(f)
    code, out, err = eical("simulate", "--profile", "devboard", "--seed", "4", "--duration", "0.3", "--table", f,
                           "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["codes"] == "table" and d["summary"]["calibrated"] is True
    dev = NumpyDevice("devboard", 4, record_isyn=True)
    dev.set_codes({"gain_e": codes, "gain_i": np.full(32, 64)})
    np.testing.assert_allclose(d["rates_hz"], dev.run_true(300.0).rates_hz, atol=1e-4)


def test_simulate_refuses_a_table_for_another_chip(eical, tmp_path):
    f = tmp_path / "table.json"
    _table_for(5, np.full(32, 64)).save(f)
    code, out, err = eical("simulate", "--profile", "devboard", "--seed", "6", "--duration", "0.1", "--table", f)
    assert code == 3
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "emu-devboard-5" in err and "emu-devboard-6" in err
    # and a table for another profile
    code, _, err = eical("simulate", "--profile", "bss2", "--seed", "5", "--duration", "0.1", "--table", f)
    assert code == 3 and len(err.strip().splitlines()) == 1


def test_simulate_bad_table_file_exit_2(eical, tmp_path):
    f = tmp_path / "table.json"
    f.write_text("{not json")
    code, _, err = eical("simulate", "--profile", "devboard", "--duration", "0.1", "--table", f)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not valid JSON" in err


@pytest.mark.parametrize("args,what", [
    (["--duration", "0"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--seed", "-3"], "--seed"),
    (["--backend", "gpu"], "--backend"),
    (["--temperature", "-1"], "--temperature"),
])
def test_simulate_bad_arguments_exit_2(eical, args, what):
    code, _, err = eical("simulate", "--profile", "devboard", *args)
    assert code == 2 and what in err and len(err.strip().splitlines()) == 1


def test_simulate_unknown_profile_exit_2(eical):
    code, _, err = eical("simulate", "--profile", "nosuchchip", "--duration", "0.1")
    assert code == 2 and "no such profile" in err and len(err.strip().splitlines()) == 1


def test_simulate_lava_unavailable_exit_7(eical):
    from calibrate.backends import lava_available

    if lava_available() is None:
        pytest.skip("Lava is installed here: --backend lava runs (see the Lava tests)")
    code, out, err = eical("simulate", "--profile", "devboard", "--duration", "0.1", "--backend", "lava")
    assert code == 7 and out == ""
    assert len(err.strip().splitlines()) == 1 and "backend unavailable" in err


def test_simulate_opens_its_chip_through_the_backend_opener(eical, monkeypatch):
    """The CLI opens every chip through ``calibrate.backends.open_device`` (the one place that knows the backends),
    with the temperature and ``record_isyn``; an unavailable backend exits 7 with one line."""
    from calibrate import backends

    calls = []

    def opener(backend, profile, seed, **kw):
        calls.append((backend, profile.name, seed, kw))
        if backend == "lava":
            raise backends.BackendUnavailable("no lava here")
        return NumpyDevice(profile, seed, **kw)

    monkeypatch.setattr(backends, "open_device", opener)
    code, out, err = eical("simulate", "--profile", "devboard", "--seed", "2", "--duration", "0.05", "--json",
                           "--temperature", "305")
    assert code == 0, err
    assert calls[-1] == ("numpy", "devboard", 2, {"temperature_k": 305.0, "record_isyn": True})
    code, out, err = eical("simulate", "--profile", "devboard", "--backend", "lava")
    assert code == 7 and out == "" and err.strip() == "eical: error: backend unavailable: no lava here"


def test_chip_export(eical, tmp_path):
    f = tmp_path / "chip.npz"
    code, out, err = eical("chip", "export", "--profile", "bss2", "--seed", "8", "--out", f)
    assert code == 0, err
    z = np.load(f)
    dev = NumpyDevice("bss2", 8)
    np.testing.assert_array_equal(z["gL"], dev.chip.params["gL"])
    np.testing.assert_array_equal(z["in_i_indices"], dev.chip.in_i.indices)
    code, out, err = eical("chip", "export", "--profile", "dynapse2", "--seed", "8", "--out", tmp_path / "d.npz")
    assert code == 0 and "1024 dpi neurons" in out  # dpi chips too (tests/test_chip_export.py)
    assert str(np.load(tmp_path / "d.npz")["model"]) == "dpi"
    code, out, err = eical("chip", "export", "--profile", "devboard", "--out", tmp_path / "noext")
    assert code == 0 and (tmp_path / "noext.npz").exists() and "noext.npz" in out


def test_profiles_list_and_show(eical):
    code, out, err = eical("profiles", "list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"bss2", "devboard", "dynapse2"} <= set(names)
    code, out, err = eical("profiles", "show", "dynapse2")
    assert code == 0 and "proxy_channels: one_per_core" in out and "# sha256 " in out
    code, out, err = eical("profiles", "show", "nosuch")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, out, err = eical("profiles", "validate", ROOT / "nope.yaml")
    assert code == 2 and "cannot read" in err


def test_hw_models_does_not_import_calibrate():
    code = ("import sys, hw_models, hw_models.emulator, hw_models.chip, hw_models.table, hw_models.recording\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('calibrate', 'firmware_bridge'))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_profile_that_cannot_be_drawn_exit_2(eical, tmp_path):
    """Valid by the schema, impossible to draw (a chip-level EL offset no neuron redraw can repair): one line, 2."""
    import yaml

    d = yaml.safe_load((ROOT / "device_profiles" / "devboard.yaml").read_text())
    d["mismatch"]["offsets_mV"]["EL"] = {"chip": 50.0}
    f = tmp_path / "wide.yaml"
    f.write_text(yaml.safe_dump(d))
    codes = []
    for seed in range(8):
        code, out, err = eical("chip", "export", "--profile", f, "--seed", seed, "--out", tmp_path / "c.npz")
        codes.append(code)
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and "potential offsets too wide" in err
            code, _, err = eical("simulate", "--profile", f, "--seed", seed, "--duration", "0.01")
            assert code == 2 and len(err.strip().splitlines()) == 1 and "potential offsets too wide" in err
    assert 2 in codes and 0 in codes


def test_threads_flag_changes_nothing_but_the_threads(eical, monkeypatch, tmp_path):
    """``--threads N`` on simulate (and calibrate, diagnose) sets the engines' thread count; the output is the same
    JSON; a bad count is one line and exit 2."""
    import yaml

    from hw_models import engine
    from hw_models.profile import load_profile

    monkeypatch.setattr(engine, "_default_threads", 1)  # the flag sets a process-wide default: restore it after
    data = load_profile("bss2").with_changes({"geometry.cores": 3, "geometry.neurons_per_core": 1024}).data
    path = tmp_path / "bss2x3.yaml"
    path.write_text(yaml.safe_dump(dict(data, name="bss2x3")))
    outs = []
    for extra in ((), ("--threads", "2")):
        code, out, err = eical("simulate", "--profile", path, "--seed", "2", "--duration", "0.05", "--json", *extra)
        assert code == 0, err
        outs.append(json.loads(out))
    assert engine.default_threads() == 2
    assert outs[0] == outs[1]
    for command in ("simulate", "calibrate", "diagnose"):
        code, out, err = eical(command, "--profile", "devboard", "--seed", "1", "--threads", "0")
        assert code == 2 and "--threads: expected a positive integer, got '0'" in err, (command, err)
