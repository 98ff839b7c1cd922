"""`eical calibrate`, `eical report`, `eical track` end to end (small budgets: behaviour, not quality)."""
import json
import sys

import numpy as np
import pytest

from calibrate.cli import main
from hw_models.emulator import NumpyDevice
from hw_models.table import GainTable


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal")
    rc = main(["calibrate", "--profile", "devboard", "--seed", "3", "--budget", "6", "--evaluate", "5",
               "--out", str(out), "--json"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_calibrate_writes_every_file_and_accounts_for_every_neuron(run_dir, capsys):
    for name in ("table.json", "summary.json", "history.npz", "report.html"):
        assert (run_dir / name).is_file()
    s = json.loads((run_dir / "summary.json").read_text())
    n = s["neurons"]
    # counted against the chip, not against the controller's own arrays: N from the profile, the dead neurons from
    # the chip's defects, the unreachable ones from the table's codes pinned at a DAC end
    chip = NumpyDevice("devboard", 3).chip
    assert n["n"] == 32 and n["calibrated"] + n["unreachable"] + n["dead"] == 32
    assert n["dead"] == int(chip.dead.sum())
    codes = GainTable.load(run_dir / "table.json").codes()
    at_end = (codes["gain_e"] == 0) | (codes["gain_e"] == 255) | (codes["gain_i"] == 0) | (codes["gain_i"] == 255)
    assert n["unreachable"] <= int((at_end & ~chip.dead).sum())
    assert s["model_time_s"] <= 6.0 + 1e-6
    assert "true_after" in s and s["true_after"]["replay_s"] == 5.0
    t = GainTable.load(run_dir / "table.json")
    assert t.chip_uid == "emu-devboard-3" and len(t.knobs["gain_e"].codes) == 32
    html = (run_dir / "report.html").read_text()
    # the figures are files beside the page (report/NAME.png and .svg), and the page shows them
    assert html.count("<img src='report/") >= 3 and len(list((run_dir / "report").glob("*.svg"))) >= 3


def test_calibrate_prints_json_summary(tmp_path, capsys):
    rc = main(["calibrate", "--profile", "devboard", "--seed", "1", "--budget", "2", "--evaluate", "0",
               "--out", str(tmp_path), "--json", "--no-report"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["chip"]["uid"] == "emu-devboard-1" and s["controller"]["name"] == "dual-loop"
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_report_rerenders_from_files(run_dir, capsys):
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()


def test_report_of_a_non_calibration_directory_is_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a calibration output directory" in err[0]


@pytest.mark.slow
def test_a_table_of_another_chip_is_refused_as_start(run_dir, tmp_path, capsys):
    rc = main(["calibrate", "--profile", "devboard", "--seed", "4", "--start-table", str(run_dir / "table.json"),
               "--budget", "1", "--out", str(tmp_path)])
    assert rc == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "emu-devboard-3" in err[0] and "emu-devboard-4" in err[0]


@pytest.mark.parametrize("argv", [
    ["calibrate", "--profile", "devboard", "--seed", "1", "--target-rate", "-3"],
    ["calibrate", "--profile", "devboard", "--seed", "x"],
    ["calibrate", "--profile", "devboard", "--seed", "1", "--controller", "pid"],
    ["calibrate", "--profile", "devboard", "--seed", "1", "--backend", "fpga"],
    ["calibrate", "--profile", "no-such-profile", "--seed", "1"],
    ["track", "--profile", "devboard", "--seed", "1", "--table", "t.json", "--temperature-ramp", "300:310"],
])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        rc = main(argv)
        raise SystemExit(rc)
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("eical")]
    assert len(err) == 1


@pytest.mark.skipif(sys.version_info[:2] == (3, 10), reason="on Python 3.10 the Lava backend may be installed")
def test_lava_backend_on_newer_python_exits_7_with_one_line(tmp_path, capsys):
    rc = main(["calibrate", "--profile", "devboard", "--seed", "1", "--backend", "lava", "--out", str(tmp_path)])
    assert rc == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Python 3.10" in err[0]


@pytest.mark.slow
def test_track_reports_tracked_and_static_figures(run_dir, tmp_path, capsys):
    rc = main(["track", "--profile", "devboard", "--seed", "3", "--table", str(run_dir / "table.json"),
               "--temperature-ramp", "300:306:12", "--checkpoints", "2", "--replay", "4", "--out", str(tmp_path),
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["checkpoints"]) == 2
    assert out["checkpoints"][-1]["temperature_k"] == pytest.approx(306.0)
    # the static table runs hotter chips faster (devboard: excitatory bias drifts +2 %/K)
    assert out["checkpoints"][-1]["static"]["rate_mean_hz"] > out["checkpoints"][0]["static"]["rate_mean_hz"]
    t = GainTable.load(tmp_path / "table.json")
    assert t.chip_uid == "emu-devboard-3"
    assert not np.array_equal(t.codes()["gain_e"], GainTable.load(run_dir / "table.json").codes()["gain_e"])


def test_the_command_line_starts_without_the_analysis_libraries():
    """Building the `eical` parser (every `eical ...` and `--help`) loads no scipy or matplotlib: those come with
    the command that needs them, so a flash or a profile check starts in a fraction of a second."""
    import subprocess

    code = ("import sys\nfrom calibrate.cli import build_parser\nbuild_parser()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'matplotlib'))\n"
            "assert not heavy, heavy[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
