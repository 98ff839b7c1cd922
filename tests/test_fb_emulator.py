"""The board emulator behind a real pty, in a separate process: the serial Device against the numpy backend,
the CLI (flash, info, devices, exit codes), a foreign table refused before anything is written, kill -9 in the
middle of flashes, and flashing through the fault-injecting ``eicalfault://`` URL."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge import open_serial_device
from firmware_bridge.client import BoardClient
from firmware_bridge.errors import LinkLost
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.flash import TableImage, flash_table
from firmware_bridge.testing import REPO_ROOT, EmulatorProcess, eical_on_a_terminal
from firmware_bridge.transport import SerialTransport
from hw_models.table import GainTable, KnobTable

pytestmark = pytest.mark.board


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``eical ARGS`` in a child process (``python -m calibrate.cli``)."""
    return subprocess.run([sys.executable, "-m", "calibrate.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def save_table(path: Path, uid: str, profile: str, sha: str, n: int, value: int) -> Path:
    GainTable(chip_uid=uid, profile=profile, profile_sha256=sha,
              knobs={"gain_e": KnobTable("neuron", 8, [(value + i) % 256 for i in range(n)]),
                     "gain_i": KnobTable("neuron", 8, [(3 * value + 1) % 256] * n)}).save(path)
    return path


def chip_table(path: Path, n: int, value: int, uid: str) -> Path:
    info = TestChip(n, uid).info()
    return save_table(path, uid, info["profile"], info["profile_sha256"], n, value)


# -- the serial Device ----------------------------------------------------------------------------------------


def test_serial_device_matches_the_numpy_backend(tmp_path):
    """Same profile and seed: the board over the pty measures exactly what the numpy backend measures."""
    from hw_models.emulator import NumpyDevice

    with EmulatorProcess(["--profile", "devboard", "--seed", "3"], nvm=tmp_path / "b.nvm") as emu:
        local = NumpyDevice("devboard", 3)
        with open_serial_device(emu.path) as dev:
            for f in ("uid", "profile", "profile_sha256", "n_neurons", "n_cores", "model", "dt_ms", "speedup",
                      "proxy_channels"):
                assert getattr(dev.identity, f) == getattr(local.identity, f), f
            assert dev.identity.backend == "serial" and dev.identity.firmware
            for name, spec in local.knobs.items():
                got = dev.knobs[name]
                assert (got.sharing, got.bits, got.code_ref, got.n_groups, got.dac) == \
                    (spec.sharing, spec.bits, spec.code_ref, spec.n_groups, spec.dac)
            for window, codes, monitor in [(100.0, None, None), (250.0, {"gain_e": np.arange(32) + 50,
                                                                         "gain_i": np.full(32, 70)}, [1, 5])]:
                if codes:
                    dev.set_codes(codes)
                    local.set_codes(codes)
                a, b = dev.measure(window, monitor), local.measure(window, monitor)
                np.testing.assert_array_equal(a.spike_counts, b.spike_counts)
                np.testing.assert_array_equal(a.observed, b.observed)
                np.testing.assert_allclose(a.proxy_pa, b.proxy_pa, atol=1e-3, equal_nan=True)
                assert a.window_ms == b.window_ms and a.hardware_ms == pytest.approx(b.hardware_ms)
                assert a.temperature_k == pytest.approx(b.temperature_k)


def test_reset_over_the_pty(tmp_path):
    with EmulatorProcess(["--test-chip", "16"], nvm=tmp_path / "b.nvm") as emu:
        c = BoardClient(SerialTransport.open(emu.path))
        boots = c.hello().boot_count
        assert c.reset().boot_count == boots + 1
        c.close()


# -- CLI ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_flash_info_dry_run_up_to_date_json(tmp_path):
    from hw_models import load_profile

    prof = load_profile("devboard")
    with EmulatorProcess(["--profile", "devboard", "--seed", "5"], nvm=tmp_path / "b.nvm") as emu:
        t1 = save_table(tmp_path / "t1.json", "emu-devboard-5", "devboard", prof.sha256, prof.n_neurons, 60)
        t2 = save_table(tmp_path / "t2.json", "emu-devboard-5", "devboard", prof.sha256, prof.n_neurons, 61)
        r = cli("info", "--port", emu.path)
        assert r.returncode == 0 and "emu-devboard-5" in r.stdout and "no table" in r.stdout
        r = cli("flash", str(t1), "--port", emu.path)
        assert r.returncode == 0, r.stderr
        assert "flashed" in r.stdout and "gen 1" in r.stdout and r.stderr == ""  # no progress: not a TTY
        r = cli("flash", str(t1), "--port", emu.path)
        assert r.returncode == 0 and "already up to date" in r.stdout
        r = cli("flash", str(t2), "--port", emu.path, "--dry-run")
        assert r.returncode == 0 and "dry run" in r.stdout and "64 codes change" in r.stdout
        r = cli("flash", str(t2), "--port", emu.path, "--json")
        assert r.returncode == 0
        rep = json.loads(r.stdout)
        assert rep["ok"] and rep["outcome"] == "flashed" and rep["generation"] == 2 and rep["bank"] == "B"
        assert rep["previous"]["generation"] == 1 and rep["changed"] == {"gain_e": 32, "gain_i": 32}
        r = cli("info", "--port", emu.path, "--json")
        h = json.loads(r.stdout)
        assert h["generation"] == 2 and h["active_bank"] == "B" and h["uid"] == "emu-devboard-5"
    # The table survives the emulator: a new process on the same NVM file boots into it.
    with EmulatorProcess(["--profile", "devboard", "--seed", "5"], nvm=tmp_path / "b.nvm") as emu:
        h = json.loads(cli("info", "--port", emu.path, "--json").stdout)
        assert h["generation"] == 2 and h["table_crc"] == int(rep["crc"], 16)


@pytest.mark.slow
def test_foreign_table_refused_with_exit_3_before_anything_is_written(tmp_path):
    nvm_file = tmp_path / "b.nvm"
    with EmulatorProcess(["--test-chip", "64", "--uid", "board-A"], nvm=nvm_file) as emu:
        assert cli("flash", str(chip_table(tmp_path / "own.json", 64, 9, "board-A")), "--port",
                   emu.path).returncode == 0
        before = hashlib.sha256(nvm_file.read_bytes()).hexdigest()
        foreign = chip_table(tmp_path / "foreign.json", 64, 10, "board-B")
        r = cli("flash", str(foreign), "--port", emu.path)
        assert r.returncode == 3
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "board-B" in lines[0] and "nothing was written" in lines[0]
        assert "board runs table gen 1" in lines[0]
        # Another geometry (a table for a 32-neuron chip with this board's UID) is refused as well.
        r = cli("flash", str(chip_table(tmp_path / "small.json", 32, 10, "board-A")), "--port", emu.path)
        assert r.returncode == 3
        assert hashlib.sha256(nvm_file.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("args, code, text", [
    (["flash", "/nonexistent/table.json", "--port", "loop://"], 2, "cannot read"),
    (["info", "--port", "/dev/nonexistent-port"], 2, "no such port"),
    (["info", "--port", ""], 2, "no port given"),
    (["info", "--port", "/dev/null"], 2, "not a serial port"),
    (["info", "--port", "loop://", "--baud", "1200"], 2, "1200 baud"),
    (["info", "--port", "eicalfault://?ber=0.1"], 2, "invalid port"),
    (["info", "--port", "loop://"], 4, "looped back"),
    (["board-emulator", "--profile", "no-such-profile"], 2, "no such profile"),
])
def test_bad_input_gives_one_error_line_and_the_documented_exit_code(args, code, text):
    r = cli(*args)
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in r.stderr


def test_bad_table_file_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": {"name": "eical-gain-table", "version": 1}, "chip": 3}')
    r = cli("flash", str(bad), "--port", "loop://")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "chip" in r.stderr


def test_devices_lists_what_answers():
    r = cli("devices", "--json")
    assert r.returncode == 0
    found = json.loads(r.stdout)
    assert isinstance(found, list)  # ptys are not listed; a plugged-in board would be


# -- kill -9 in the middle of a flash -----------------------------------------------------------------------------

N_BIG = 4096  # 8 KiB table: 8 data frames of 1 KiB


def expected_counts(codes: dict) -> list:
    chip = TestChip(N_BIG, "kill-0001", 0)  # the emulator seeds its test chip with --seed (default 0)
    chip.set_codes(codes)
    return chip.measure(100.0, None)[0]


@pytest.mark.slow
@pytest.mark.parametrize("stage, at", [("begin", 0), ("data", 1), ("data", 4), ("data", 8), ("verify", 0),
                                       ("commit-send", 0), ("commit", 0)])
def test_kill_9_mid_flash_leaves_old_or_new_and_a_rerun_succeeds(tmp_path, stage, at):
    nvm_file = tmp_path / "b.nvm"
    args = ["--test-chip", str(N_BIG), "--uid", "kill-0001"]
    old = TableImage.load(chip_table(tmp_path / "old.json", N_BIG, 20, "kill-0001"))
    new = TableImage.load(chip_table(tmp_path / "new.json", N_BIG, 30, "kill-0001"))
    with EmulatorProcess(args, nvm=nvm_file) as emu:
        c = BoardClient(SerialTransport.open(emu.path))
        flash_table(c, old)
        c.close()
        c = BoardClient(SerialTransport.open(emu.path))
        seen = []

        def killer(st, done, total):
            if st == stage:
                seen.append(done)
                if len(seen) == at or at == 0:
                    emu.kill()

        with pytest.raises(LinkLost) as e:
            flash_table(c, new, chunk=1024, on_event=killer)
        c.close()
        assert "the board runs" in e.value.line()
    with EmulatorProcess(args, nvm=nvm_file) as emu:
        c = BoardClient(SerialTransport.open(emu.path))
        h = c.hello()
        _, gen, crc, data = c.read_table()
        assert nvm.crc32(data) == crc == h.table_crc
        table = {k["name"]: k["codes"] for k in nvm.decode_table(data)}
        runs = c.measure(100.0).counts  # the RAM codes the chip runs are the table's: counts = f(codes)
        if gen == 1:
            assert table == {k: list(v.codes) for k, v in old.knobs.items()}
        else:
            assert gen == 2 and table == {k: list(v.codes) for k, v in new.knobs.items()}
        assert runs == expected_counts(table)
        if stage in ("begin", "data", "verify"):
            assert gen == 1  # nothing could have been committed yet
        if stage == "commit":
            assert gen == 2
        rep = flash_table(c, new)
        assert rep.outcome in ("flashed", "up-to-date")
        assert c.hello().generation == 2
        c.close()


# -- a noisy link over the pty --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ber, seed, code", [("1e-4", 1, 0), ("1e-3", 1, 0), ("1e-3", 2, 0), ("1e-2", 1, 4),
                                             ("1e-2", 2, 4)])
def test_flash_through_a_fault_injecting_link(tmp_path, ber, seed, code):
    args = ["--test-chip", str(N_BIG), "--uid", "kill-0001"]
    old = chip_table(tmp_path / "old.json", N_BIG, 20, "kill-0001")
    new = chip_table(tmp_path / "new.json", N_BIG, 30, "kill-0001")
    with EmulatorProcess(args, nvm=tmp_path / "b.nvm") as emu:
        assert cli("flash", str(old), "--port", emu.path).returncode == 0
        r = cli("flash", str(new), "--port", f"eicalfault://{emu.path}?ber={ber}&seed={seed}", "--json")
        assert r.returncode == code, r.stderr
        rep = json.loads(r.stdout)
        h = json.loads(cli("info", "--port", emu.path, "--json").stdout)
        if code == 0:
            assert rep["outcome"] == "flashed" and h["generation"] == 2
        else:
            assert not rep["ok"] and "gen 1" in (rep["board_table"] or "") and h["generation"] == 1
            assert len(r.stderr.strip().splitlines()) == 1
            # The old table is intact and a clean link finishes the job.
            assert cli("flash", str(new), "--port", emu.path).returncode == 0


@pytest.mark.slow
def test_progress_only_when_stderr_is_a_terminal(tmp_path):
    with EmulatorProcess(["--test-chip", str(N_BIG), "--uid", "kill-0001"], nvm=tmp_path / "b.nvm") as emu:
        table = chip_table(tmp_path / "t.json", N_BIG, 5, "kill-0001")
        code, out, err = eical_on_a_terminal("flash", str(table), "--port", emu.path)
        assert code == 0 and b"flashed" in out
        assert b"writing" in err and b"KiB" in err and "━".encode() in err  # rich's bar went to the terminal


def test_backend_registry_opens_the_serial_device(tmp_path):
    """`eical calibrate --backend serial:PORT` goes through calibrate.backends.open_device."""
    backends = pytest.importorskip("calibrate.backends", reason="calibrate.backends is not there yet")
    with EmulatorProcess(["--profile", "devboard", "--seed", "2"], nvm=tmp_path / "b.nvm") as emu:
        dev = backends.open_device(f"serial:{emu.path}")
        try:
            assert dev.identity.backend == "serial" and dev.identity.uid == "emu-devboard-2"
            assert dev.measure(50.0).spike_counts.shape == (32,)
        finally:
            dev.close()


@pytest.mark.slow
def test_eical_calibrate_over_serial_reaches_the_numpy_result(tmp_path):
    """`eical calibrate --backend serial:PTY` against the board emulator: the same codes and the same measured
    figures as `--backend numpy` on the same profile and seed (the board's chip is that emulated chip)."""
    from calibrate.cli import main

    budget = "3"
    with EmulatorProcess(["--profile", "devboard", "--seed", "3"], nvm=tmp_path / "b.nvm") as emu:
        # --verify 0: a board verifies at the end by default (its verdict's windows); compared here are the runs
        rc = main(["calibrate", "--backend", f"serial:{emu.path}", "--budget", budget, "--no-report", "--verify", "0",
                   "--out", str(tmp_path / "serial")])
        assert rc == 0
    rc = main(["calibrate", "--backend", "numpy", "--profile", "devboard", "--seed", "3", "--budget", budget,
               "--evaluate", "0", "--diagnostics", "0", "--no-report", "--out", str(tmp_path / "numpy")])
    assert rc == 0
    ts, tn = GainTable.load(tmp_path / "serial" / "table.json"), GainTable.load(tmp_path / "numpy" / "table.json")
    assert (ts.chip_uid, ts.profile_sha256) == (tn.chip_uid, tn.profile_sha256)
    assert ts.codes().keys() == tn.codes().keys()
    for k in ts.codes():
        np.testing.assert_array_equal(ts.codes()[k], tn.codes()[k])
    ss = json.loads((tmp_path / "serial" / "summary.json").read_text())
    sn = json.loads((tmp_path / "numpy" / "summary.json").read_text())
    assert ss["chip"]["backend"] == "serial" and sn["chip"]["backend"] == "numpy"
    assert ss["iterations"] == sn["iterations"] and ss["neurons"] == sn["neurons"]
    assert ss["after"]["rate_mean_hz"] == pytest.approx(sn["after"]["rate_mean_hz"])
