"""The library sessions as a script or a study over many chips calls them: in process, typed results, files only
when asked for."""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibrate.controllers import DualLoop, StopReason
from calibrate.diagnostics.session import run_diagnose
from calibrate.metrics import TrueFigures
from calibrate.session import CalibrationOutcome, calibrate_chip, run_calibration
from hw_models.emulator import NumpyDevice
from hw_models.profile import load_profile
from hw_models.table import GainTable

CHANGE = {"mismatch.lognormal.eps_e.neuron": 0.3}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> CalibrationOutcome:
    return calibrate_chip("devboard", 2, profile_changes=CHANGE, budget_s=3.0, evaluate_s=5.0)


def test_calibrate_chip_runs_in_process_and_writes_nothing(outcome, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    again = calibrate_chip("devboard", 2, profile_changes=CHANGE, budget_s=3.0, evaluate_s=0.0)
    assert list(tmp_path.iterdir()) == []
    assert again.true_after is None and again.diagnostics is None
    # the same chip, the same controller, the same budget: the same codes (seeded, in process)
    assert all(np.array_equal(again.result.codes[k], outcome.result.codes[k]) for k in outcome.result.codes)


def test_the_outcome_is_typed_and_carries_the_true_figures(outcome):
    assert isinstance(outcome.true_after, TrueFigures) and outcome.true_after.replay_s == 5.0
    assert outcome.result.stopped in (StopReason.BUDGET, StopReason.CONVERGED)
    assert outcome.result.model_ms <= 3000.0 + 1e-6
    assert outcome.counting_floor == pytest.approx(
        np.sqrt(outcome.true_after.fano / (10.0 * outcome.result.model_ms / 1e3)))
    # the profile change made another chip: its identity carries the changed profile's hash
    changed = load_profile("devboard").with_changes(CHANGE)
    assert outcome.result.identity.profile_sha256 == changed.sha256 != load_profile("devboard").sha256
    assert outcome.table.profile_sha256 == changed.sha256
    d = json.loads(json.dumps(outcome.to_dict(), default=float))
    assert d["true_after"]["replay_s"] == 5.0 and d["neurons"]["n"] == 32 and d["stopped"] == outcome.result.stopped


def test_out_writes_the_directory_once_and_summary_is_to_dict(tmp_path):
    with NumpyDevice("devboard", 5) as dev:
        oc = run_calibration(dev, budget_s=2.0, evaluate_s=3.0, out=tmp_path / "o", report=False)
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["history.npz", "summary.json", "table.json"]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(oc.to_dict(), default=float))
    assert GainTable.load(tmp_path / "o" / "table.json").codes()["gain_e"].tolist() == oc.result.codes["gain_e"].tolist()


def test_a_controller_object_carries_its_own_budget():
    with NumpyDevice("devboard", 1) as dev:
        with pytest.raises(ValueError, match="budget"):
            run_calibration(dev, controller=DualLoop(), budget_s=5.0)
        oc = run_calibration(dev, controller=DualLoop(budget_ms=1500.0))
    assert oc.result.controller == "dual-loop" and oc.result.model_ms <= 1500.0 + 1e-6


def test_run_diagnose_returns_a_typed_result_without_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_diagnose("devboard", 1, duration_s=1.0)
    assert list(tmp_path.iterdir()) == []
    assert r.codes == "nominal" and r.identity.uid == "emu-devboard-1"
    assert r.healthy == r.diagnostics.healthy and r.headline.flags == r.diagnostics.flags
    doc = r.to_dict()
    assert doc["headline"]["n_neurons"] == 32 and doc["run"]["duration_s"] == 1.0
