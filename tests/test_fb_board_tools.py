"""The board tools against the board emulator in its own process, through the real command line: read-table gives
the flashed codes and identity and flashes back "already up to date", rollback switches banks and info shows it,
running emulators are listed by `eical devices` (and not once they are gone), and the flash progress bar."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.testing import REPO_ROOT, EmulatorProcess, eical_on_a_terminal
from hw_models.table import GainTable, KnobTable

pytestmark = pytest.mark.board

N = 64
UID = "tools-0001"


@pytest.fixture(autouse=True)
def own_runtime_dir(tmp_path, monkeypatch):
    """Emulators of this test register in a directory of their own (others may run on the machine)."""
    monkeypatch.setenv("EICAL_RUNTIME_DIR", str(tmp_path / "run"))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibrate.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def table(path, value):
    info = TestChip(N, UID).info()
    GainTable(chip_uid=UID, profile=info["profile"], profile_sha256=info["profile_sha256"], seed=None,
              knobs={"gain_e": KnobTable("neuron", 8, [(value + i) % 256 for i in range(N)]),
                     "gain_i": KnobTable("neuron", 8, [(3 * value + 1) % 256] * N)}).save(path)
    return path


@pytest.mark.slow
def test_read_table_rollback_info_round_trip(tmp_path):
    with EmulatorProcess(["--test-chip", str(N), "--uid", UID], nvm=tmp_path / "b.nvm") as emu:
        p = emu.path
        t1, t2 = table(tmp_path / "t1.json", 10), table(tmp_path / "t2.json", 20)
        assert cli("flash", str(t1), "--port", p).returncode == 0
        assert cli("flash", str(t2), "--port", p).returncode == 0
        # read-table: the flashed codes and the chip's identity, in table.json's format
        r = cli("read-table", "--port", p, "--out", str(tmp_path / "back.json"))
        assert r.returncode == 0, r.stderr
        assert "gen 2" in r.stdout and "bank B" in r.stdout and "(active)" in r.stdout
        back, sent = GainTable.load(tmp_path / "back.json"), GainTable.load(t2)
        assert (back.chip_uid, back.profile, back.profile_sha256) == (sent.chip_uid, sent.profile,
                                                                      sent.profile_sha256)
        assert back.codes().keys() == sent.codes().keys()
        for k in sent.knobs:
            assert back.knobs[k].codes == sent.knobs[k].codes and back.knobs[k].bits == sent.knobs[k].bits
        assert back.metrics == {} and back.controller["name"] == "read-back"
        assert back.controller["settings"]["generation"] == 2 and back.controller["settings"]["port"] == p
        # flashing it back changes nothing
        r = cli("flash", str(tmp_path / "back.json"), "--port", p)
        assert r.returncode == 0 and r.stdout.startswith("already up to date"), r.stdout
        # a user's file is not overwritten by surprise
        r = cli("read-table", "--port", p, "--out", str(tmp_path / "back.json"))
        assert r.returncode == 2 and "exists; pass --force" in r.stderr
        # the previous table, from bank A
        r = cli("read-table", "--port", p, "--bank", "A", "--out", str(tmp_path / "a.json"), "--json")
        doc = json.loads(r.stdout)
        assert r.returncode == 0 and doc["generation"] == 1 and doc["bank"] == "A" and not doc["active"]
        assert GainTable.load(tmp_path / "a.json").knobs["gain_e"].codes == GainTable.load(t1).knobs["gain_e"].codes
        # info says what a rollback would do; rollback switches banks; info shows the active bank after it
        info = json.loads(cli("info", "--port", p, "--json").stdout)
        assert info["active_bank"] == "B" and info["generation"] == 2 and info["rollback"]["possible"]
        r = cli("rollback", "--port", p)
        assert r.returncode == 0 and "rolled back" in r.stdout, r.stderr
        info = json.loads(cli("info", "--port", p, "--json").stdout)
        assert info["active_bank"] == "A" and info["generation"] == 1 and not info["rollback"]["possible"]
        r = cli("info", "--port", p)
        assert "table gen 1" in r.stdout and "bank A" in r.stdout and "rollback   not possible" in r.stdout
        # a second rollback has nothing to go back to: one line, exit 6, the table the board runs
        r = cli("rollback", "--port", p)
        assert r.returncode == 6 and r.stderr.count("\n") == 1 and "nothing to roll back to" in r.stderr
        assert "the board runs table gen 1" in r.stderr
    # the rollback lasts: a new emulator process on the same NVM boots into table 1
    with EmulatorProcess(["--test-chip", str(N), "--uid", UID], nvm=tmp_path / "b.nvm") as emu:
        info = json.loads(cli("info", "--port", emu.path, "--json").stdout)
        assert info["active_bank"] == "A" and info["generation"] == 1


@pytest.mark.slow
def test_devices_lists_running_emulators_and_forgets_them_when_they_stop(tmp_path):
    emu1 = EmulatorProcess(["--test-chip", "16", "--uid", "dev-one"])
    emu2 = EmulatorProcess(["--test-chip", "16", "--uid", "dev-two"])
    try:
        found = json.loads(cli("devices", "--json").stdout)
        by_uid = {d["uid"]: d for d in found}
        assert by_uid["dev-one"]["port"] == emu1.path and by_uid["dev-two"]["port"] == emu2.path
        assert by_uid["dev-one"]["emulator"]["pid"] == emu1.pid and by_uid["dev-one"]["firmware"]
        r = cli("devices")
        assert f"{emu1.path}  dev-one" in r.stdout and f"pid {emu1.pid}" in r.stdout
        emu1.close()  # SIGTERM: the emulator removes its entry
        assert list((tmp_path / "run" / "emulators").glob(f"{emu1.pid}.json")) == []
        emu2.kill()  # kill -9 leaves its entry behind: devices sees the process is gone and drops it
        assert list((tmp_path / "run" / "emulators").glob(f"{emu2.pid}.json"))
        r = cli("devices", "--json")
        assert json.loads(r.stdout) == [] and r.returncode == 0
        assert list((tmp_path / "run" / "emulators").glob("*.json")) == []
    finally:
        emu1.close()
        emu2.close()


def test_flash_progress_bar_only_on_a_terminal(tmp_path):
    n = 4096
    with EmulatorProcess(["--test-chip", str(n), "--uid", "bar-0001"], nvm=tmp_path / "b.nvm") as emu:
        info = TestChip(n, "bar-0001").info()
        t = tmp_path / "t.json"
        GainTable(chip_uid="bar-0001", profile=info["profile"], profile_sha256=info["profile_sha256"],
                  knobs={"gain_e": KnobTable("neuron", 8, [i % 256 for i in range(n)]),
                         "gain_i": KnobTable("neuron", 8, [7] * n)}).save(t)
        code, out, err = eical_on_a_terminal("flash", str(t), "--port", emu.path)
        assert code == 0 and b"flashed" in out
        assert b"writing" in err and b"KiB" in err and "━".encode() in err
        # not a terminal: nothing on stderr
        t2 = tmp_path / "t2.json"
        GainTable(chip_uid="bar-0001", profile=info["profile"], profile_sha256=info["profile_sha256"],
                  knobs={"gain_e": KnobTable("neuron", 8, [3] * n), "gain_i": KnobTable("neuron", 8, [7] * n)}).save(t2)
        r = cli("flash", str(t2), "--port", emu.path)
        assert r.returncode == 0 and r.stderr == ""
