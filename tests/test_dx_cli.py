"""``eical diagnose`` through ``calibrate.cli.main``: files, JSON fields, exit codes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibrate.cli import main
from calibrate.diagnostics.recording import record_chip
from hw_models.emulator import NumpyDevice, nominal_codes
from hw_models.recording import Recording
from hw_models.table import GainTable

PROFILE = "devboard"  # 32 neurons: a 2 s recording costs about half a second


@pytest.fixture(scope="module")
def nominal_run(tmp_path_factory):
    """One ``--json --save-recording`` run, shared by the tests that only read its output."""
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("dx") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["diagnose", "--profile", PROFILE, "--seed", "1", "--duration", "2", "--out", str(out_dir),
                     "--json", "--save-recording"])
    return code, buf.getvalue(), out_dir


def test_json_output_and_files(nominal_run):
    code, out, out_dir = nominal_run
    assert code == 0
    doc = json.loads(out)
    # the Diagnostics figures, the verdict, and the chip it came from
    for key in ("flags", "notes", "healthy", "mean_rate_hz", "balance_index_median", "cv_median", "branching",
                "spectrum", "cofluct_currents", "count_corr", "synchrony_chi", "thresholds"):
        assert key in doc, key
    assert doc["chip"]["uid"] == "emu-devboard-1" and doc["chip"]["seed"] == 1
    assert doc["chip"]["profile"] == PROFILE and doc["chip"]["n_neurons"] == 32 and doc["chip"]["backend"] == "numpy"
    assert doc["run"]["codes"] == "nominal" and doc["run"]["duration_s"] == 2.0 and doc["run"]["input_stream"] == 2
    assert doc["duration_ms"] == pytest.approx(2000.0)
    h = doc["headline"]
    assert h["flags"] == doc["flags"] and h["healthy"] == doc["healthy"]
    assert h["rate_mean_hz"] == pytest.approx(doc["mean_rate_hz"])
    # files: the same document, the page, the recording
    assert json.loads((out_dir / "diagnostics.json").read_text()) == doc
    page = (out_dir / "diagnose.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 6  # 5 + dominant mode
    for name in ("raster", "isi_cv", "ei_scales", "branching", "spectrum", "mode"):
        assert f"eical-diag-{name}" in page
    rec = Recording.load(out_dir / "recording.npz")
    assert rec.n_neurons == 32 and rec.duration_ms == pytest.approx(2000.0)
    assert rec.rates_hz().mean() == pytest.approx(doc["mean_rate_hz"])
    assert rec.meta["vbal_mv"] == pytest.approx(-52.0) and rec.meta["model"] == "cond_lif"


def test_recording_is_the_chip_after_the_settle():
    """record_chip keeps exactly the steps after the settle: the spike counts equal a plain run of the same chip."""
    rec = record_chip(PROFILE, 4, None, 0.6, settle_s=0.3)
    dev = NumpyDevice(PROFILE, 4, input_stream=2)
    dev.run_true(300.0)
    st = dev.run_true(600.0)
    np.testing.assert_array_equal(rec.spike_counts, st.spike_counts)
    assert rec.t_start_step == 3000 and rec.n_steps == 6000 and rec.spike_steps.min() >= 3000
    # per-neuron sample means of the currents agree with the window's true means (samples every 10 steps)
    np.testing.assert_allclose(rec.neuron_means["iexc"], st.iexc, rtol=0.05)


def test_human_summary_and_table(eical, tmp_path):
    dev = NumpyDevice(PROFILE, 1)
    codes = nominal_codes(dev.knobs)
    codes["gain_i"] = codes["gain_i"] // 3  # a seizure-like table: inhibition cut to a third
    t = GainTable.from_codes(dev.identity, dev.knobs, codes)
    t.save(tmp_path / "table.json")
    code, out, err = eical("diagnose", "--profile", PROFILE, "--seed", "1", "--table", tmp_path / "table.json",
                           "--duration", "1", "--out", tmp_path / "o")
    assert code == 0, err
    assert "diagnosed emu-devboard-1" in out and "at gain table" in out and "FLAGGED" in out and "imbalanced" in out
    doc = json.loads((tmp_path / "o" / "diagnostics.json").read_text())
    assert doc["run"]["codes"] == "table" and "imbalanced" in doc["flags"] and not doc["healthy"]
    assert not (tmp_path / "o" / "recording.npz").exists()
    # --require-healthy: exit 1 on a flagged chip, the files written all the same
    code, out, err = eical("diagnose", "--profile", PROFILE, "--seed", "1", "--table", tmp_path / "table.json",
                           "--duration", "1", "--out", tmp_path / "o2", "--require-healthy")
    assert code == 1 and (tmp_path / "o2" / "diagnose.html").is_file()


def test_table_for_another_chip_is_refused_with_exit_3(eical, tmp_path):
    other = NumpyDevice(PROFILE, 2)
    GainTable.from_codes(other.identity, other.knobs, nominal_codes(other.knobs)).save(tmp_path / "t.json")
    code, out, err = eical("diagnose", "--profile", PROFILE, "--seed", "1", "--table", tmp_path / "t.json",
                           "--out", tmp_path / "o")
    assert code == 3
    assert err.startswith("eical: error: identity mismatch:") and "emu-devboard-2" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize("argv, needle", [
    (["--seed", "1", "--out", "X"], "--profile"),
    (["--profile", PROFILE, "--seed", "1"], "--out"),
    (["--profile", PROFILE, "--seed", "-1", "--out", "X"], "non-negative"),
    (["--profile", PROFILE, "--seed", "1", "--duration", "0.1", "--out", "X"], "at least"),
    (["--profile", PROFILE, "--seed", "1", "--duration", "abc", "--out", "X"], "seconds"),
    (["--profile", PROFILE, "--seed", "1", "--backend", "serial:/dev/x", "--out", "X"], "invalid choice"),
    (["--profile", "no-such-profile", "--seed", "1", "--out", "X"], "no-such-profile"),
    (["--profile", PROFILE, "--seed", "1", "--table", "missing.json", "--out", "X"], "cannot read"),
])
def test_bad_arguments_exit_2_with_one_line(eical, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = eical("diagnose", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and err.startswith("eical: error:")
    assert not (tmp_path / "X").exists()


def test_table_with_other_knobs_exits_2(eical, tmp_path):
    dev = NumpyDevice(PROFILE, 1)
    t = GainTable.from_codes(dev.identity, dev.knobs, nominal_codes(dev.knobs))
    t.knobs["gain_e"].codes = t.knobs["gain_e"].codes[:-1]
    t.save(tmp_path / "t.json")
    code, out, err = eical("diagnose", "--profile", PROFILE, "--seed", "1", "--table", tmp_path / "t.json",
                           "--out", tmp_path / "o")
    assert code == 2 and "gain_e" in err and not (tmp_path / "o").exists()


def test_out_must_be_a_directory(eical, tmp_path):
    (tmp_path / "f").write_text("x")
    code, out, err = eical("diagnose", "--profile", PROFILE, "--seed", "1", "--out", tmp_path / "f")
    assert code == 2 and "not a directory" in err


def test_lava_backend_unavailable_exits_7(eical, tmp_path, monkeypatch):
    from calibrate import backends

    monkeypatch.setattr(backends, "lava_available", lambda: "no Lava here (test)")
    code, out, err = eical("diagnose", "--profile", PROFILE, "--seed", "1", "--backend", "lava", "--out",
                           tmp_path / "o")
    assert code == 7 and "no Lava here" in err and not (tmp_path / "o").exists()


def test_help_lists_the_options(eical):
    code, out, err = eical("diagnose", "--help")
    assert code == 0
    for opt in ("--profile", "--seed", "--table", "--duration", "--backend", "--out", "--json", "--require-healthy",
                "--save-recording"):
        assert opt in out
