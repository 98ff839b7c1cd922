"""What the board emulator gives the on-board tracker: a temperature ramp over model time, a model clock that runs
free or paced, a log of every code change; and the whole path through a pty and the command line: flash a format-2
table, ``eical track --on-board start``, the board tracking alone while the host is silent, ``status``,
``read-table --tracked``, ``stop``."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from firmware_bridge.emulator import ModelClock, NumpyChipPort, TemperatureRamp
from firmware_bridge.testing import REPO_ROOT, EmulatorProcess
from hw_models.emulator import NumpyDevice
from hw_models.table import TRACKER_DEFAULTS, GainTable, KnobTable


def test_temperature_ramp_parses_and_interpolates():
    r = TemperatureRamp.parse("300:310:120")
    assert (r.at(0.0), r.at(60e3), r.at(120e3), r.at(500e3)) == (300.0, 305.0, 310.0, 310.0)
    assert r.end_ms == 120e3
    for bad in ("300:310", "300:x:1", "300:310:0", "100:310:10", "300:310:-5"):
        with pytest.raises(ValueError, match="temperature ramp"):
            TemperatureRamp.parse(bad)


class FakeWall:
    def __init__(self):
        self.t = 0.0
        self.slept = 0.0

    def __call__(self):
        return self.t


def test_model_clock_free_running_and_paced(monkeypatch):
    free = ModelClock(None)
    s = free.begin(1000.0)
    free.end(s, 1000.0)
    assert (s, free.now_ms(), free.wait_s(5000.0)) == (0.0, 1000.0, 0.0)  # model time only while the chip runs
    wall = FakeWall()
    paced = ModelClock(10.0, wall=wall)  # 10 model seconds per wall second
    assert paced.wait_s(1000.0) == pytest.approx(0.1)  # a 1 s window is read 0.1 s of wall time after it starts
    wall.t = 2.0  # idle wall time passes as model time when paced
    assert paced.now_ms() == pytest.approx(20000.0)

    def sleep(dt):
        wall.t += dt

    monkeypatch.setattr("firmware_bridge.emulator.time.sleep", sleep)
    start = paced.begin(1000.0)
    paced.end(start, 1000.0)
    assert start == pytest.approx(20000.0) and wall.t == pytest.approx(2.1) and paced.behind_ms == 0.0
    paced.begin(1000.0)
    wall.t += 1.0  # the simulation took 10 model seconds of wall time: behind
    paced.end(21000.0, 1000.0)
    assert paced.behind_ms == pytest.approx(32000.0 - 22000.0)  # wall 3.2 s is model 32 s; the window ended at 22 s
    with pytest.raises(ValueError):
        ModelClock(0.0)


def test_chip_port_drifts_the_chip_at_each_window_middle_and_logs_codes():
    dev = NumpyDevice("devboard", 1, temperature_k=300.0)
    port = NumpyChipPort(dev, ramp=TemperatureRamp(300, 310, 10))
    port.set_codes({"gain_e": [64] * 32, "gain_i": [64] * 32})
    _, _, _, t1 = port.measure(1000.0, None)
    port.set_codes({"gain_e": [70] * 32, "gain_i": [60] * 32})
    _, _, _, t2 = port.measure(2000.0, None)
    assert t1 == pytest.approx(300.5) and t2 == pytest.approx(302.0)  # ramp at the windows' middles
    assert port.codes_at(500.0)["gain_e"][0] == 64 and port.codes_at(1500.0)["gain_e"][0] == 70
    assert port.codes_at(-1.0) is None and [e[1] for e in port.code_log] == [300.0, 300.5]


def _devboard_tracker_table(path):
    """The devboard chip at its reference codes with a plain tracker section (no calibration behind it: this
    test checks the path through the pty and the command line, not the figures)."""
    from hw_models import load_profile

    prof = load_profile("devboard")
    n = prof.n_neurons
    tracker = dict(TRACKER_DEFAULTS, window_s=1.0, halflife_s=3.0, beta=[2.0] * n, a_pa=[200.0] * n,
                   b_pa=[200.0] * n, adc_offset_pa=[0.0] * n)
    GainTable(chip_uid="emu-devboard-1", profile="devboard", profile_sha256=prof.sha256,
              knobs={k: KnobTable("neuron", 8, [64] * n) for k in ("gain_e", "gain_i")},
              targets={"rate_hz": 10.0}, tracker=tracker).save(path)
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibrate.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)


@pytest.mark.board
@pytest.mark.slow
def test_the_board_tracks_alone_behind_a_pty_driven_by_the_command_line(tmp_path):
    table = _devboard_tracker_table(tmp_path / "table.json")
    log = tmp_path / "codes.jsonl"
    args = ["--profile", "devboard", "--seed", "1", "--temperature-ramp", "300:302:6", "--code-log", str(log)]
    with EmulatorProcess(args, nvm=tmp_path / "b.nvm") as emu:
        r = cli("flash", str(table), "--port", emu.path, "--json")
        assert r.returncode == 0, r.stderr
        r = cli("track", "--port", emu.path, "--on-board", "start", "--json")
        assert r.returncode == 0, r.stderr
        start = json.loads(r.stdout)
        assert start["running"] and start["section"] == "off at boot"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the host is silent; the board's own code log says how far it got
            lines = log.read_text().splitlines() if log.exists() else []
            if lines and json.loads(lines[-1])["model_s"] >= 6.0:
                break
            time.sleep(0.2)
        entries = [json.loads(x) for x in log.read_text().splitlines()]
        assert entries[-1]["model_s"] >= 6.0 and entries[-1]["temperature_k"] > 301.5
        r = cli("track", "--port", emu.path, "--on-board", "status", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["running"] and st["windows"] >= 6
        assert st["frames"] == start["frames"] + 2  # this command's HELLO and STATUS: nothing came in between
        assert st["temperature_k"] > 301.5 and len(st["moves"]["gain_e"]) == 32
        r = cli("read-table", "--port", emu.path, "--tracked", "--out", str(tmp_path / "tracked.json"))
        assert r.returncode == 0, r.stderr
        tracked = GainTable.load(tmp_path / "tracked.json")
        assert tracked.controller["name"] == "on-board-tracker" and tracked.tracker is not None
        r = cli("read-table", "--port", emu.path, "--tracked", "--out", str(tmp_path / "tracked.json"))
        assert r.returncode == 2 and "exists" in r.stderr  # a user's file is never overwritten by surprise
        r = cli("track", "--port", emu.path, "--on-board", "stop", "--json")
        assert r.returncode == 0 and not json.loads(r.stdout)["running"]
        r = cli("flash", str(tmp_path / "tracked.json"), "--port", emu.path, "--dry-run")
        assert r.returncode == 0, r.stderr
        r = cli("track", "--port", emu.path)
        assert r.returncode == 2 and "--on-board" in r.stderr


@pytest.mark.board
def test_track_on_board_without_a_tracker_section_is_a_board_error(tmp_path):
    from hw_models import load_profile

    prof = load_profile("devboard")
    t = tmp_path / "v1.json"
    GainTable(chip_uid="emu-devboard-2", profile="devboard", profile_sha256=prof.sha256,
              knobs={k: KnobTable("neuron", 8, [64] * 32) for k in ("gain_e", "gain_i")}).save(t)
    with EmulatorProcess(["--profile", "devboard", "--seed", "2"]) as emu:
        assert cli("flash", str(t), "--port", emu.path).returncode == 0
        r = cli("track", "--port", emu.path, "--on-board", "start")
        assert r.returncode == 6 and "E_TABLE" in r.stderr and "tracker section" in r.stderr
        assert r.stderr.count("\n") == 1
