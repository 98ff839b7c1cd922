"""The serial link under noise: bit errors, lost and inserted bytes, truncated and duplicated frames, garbage
between frames, at byte error rates 1e-4, 1e-3 and 1e-2 (``transport.FaultInjector``, seeded).

A flash either completes with the new table verified (read back byte for byte), or stops with exit code 4 and a
line naming the table the board really runs: the complete old one (or, when only the read-back was cut, the
committed new one). A clean re-run then finishes the job. In one process on a simulated clock (many seeds), and
through the board emulator behind a pty with the ``eicalfault://`` URL (real time, a few seeds).
"""
from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from calibrate.cli.exits import ExitCode
from firmware_bridge.errors import LinkLost
from firmware_bridge.linksim import noisy_flash
from firmware_bridge.testing import REPO_ROOT, EmulatorProcess, pty_noisy_flash
from firmware_bridge.transport import ALL_FAULTS, FaultInjector, parse_faults
from firmware_bridge.transport import parse_fault_url

GOOD_ENDINGS = {"flashed", "gave up, old table", "gave up, new table"}


# -- the noise model --------------------------------------------------------------------------------------------------


def frames(n=200, size=40):
    return [b"\x00" + bytes(range(1, size + 1)) + b"\x00" for _ in range(n)]


def test_truncate_cuts_the_rest_of_the_write():
    inj = FaultInjector(0.05, 1, ("truncate",))
    outs = [inj.apply(f) for f in frames()]
    assert inj.faults > 0
    assert all(f.startswith(o) for f, o in zip(frames(), outs))  # only ever a prefix
    assert sum(len(o) < 42 for o in outs) == inj.faults


def test_duplicate_repeats_the_whole_write():
    inj = FaultInjector(0.01, 2, ("duplicate",))
    outs = [inj.apply(f) for f in frames()]
    f = frames()[0]
    assert {o for o in outs} == {f, f + f} and 0 < sum(o == f + f for o in outs) <= inj.faults


def test_garbage_arrives_between_frames():
    inj = FaultInjector(0.01, 3, ("garbage",))
    f = frames()[0]
    outs = [inj.apply(x) for x in frames()]
    assert inj.faults > 0
    for o in outs:
        assert o.endswith(f) and 0 <= len(o) - len(f) <= 32 * inj.faults


def test_all_kinds_fire_at_the_given_rate_and_reproducibly():
    data = bytes(range(256)) * 400
    a = FaultInjector(1e-2, 9, "all")
    out = b"".join(a.apply(data[i:i + 512]) for i in range(0, len(data), 512))
    assert set(a.by_kind) == set(ALL_FAULTS) and all(v > 0 for v in a.by_kind.values())
    b = FaultInjector(1e-2, 9, "all")
    assert b"".join(b.apply(data[i:i + 512]) for i in range(0, len(data), 512)) == out


def test_fault_kinds_and_urls():
    assert parse_faults("all") == ALL_FAULTS and parse_faults("bytes") == ("drop", "flip", "insert")
    assert parse_faults("truncate,garbage") == ("truncate", "garbage")
    with pytest.raises(ValueError, match="unknown fault kind 'meteor'"):
        parse_faults("flip,meteor")
    assert parse_fault_url("eicalfault:///dev/pts/3?ber=1e-3&seed=4&faults=frames") == \
        ("/dev/pts/3", 1e-3, 4, ("truncate", "duplicate", "garbage"))
    assert parse_fault_url("eicalfault:///dev/pts/3?ber=0.1")[3] == ("drop", "flip", "insert")  # as before
    with pytest.raises(ValueError, match="faults=all"):
        parse_fault_url("eicalfault:///dev/pts/3?faults=nope")


# -- in one process, many seeds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, seeds", [(1e-4, 10), (1e-3, 25)])
def test_flash_completes_and_verifies(rate, seeds):
    kinds = collections.Counter()
    for seed in range(seeds):
        r = noisy_flash(rate, seed)
        assert r.outcome == "flashed" and r.error is None and r.rerun_ok, (seed, r)
        kinds.update(r.faults)
    if rate == 1e-3:
        assert all(kinds[k] > 0 for k in ALL_FAULTS), kinds  # every kind of damage was survived


def test_flash_at_1e_2_completes_or_gives_up_cleanly():
    endings = collections.Counter()
    for seed in range(25):
        r = noisy_flash(1e-2, seed)
        assert r.outcome in GOOD_ENDINGS, (seed, r)
        if r.outcome != "flashed":
            assert isinstance(r.error, LinkLost) and r.line_names_table and "\n" not in r.line, (seed, r.line)
        assert r.rerun_ok, seed
        endings[r.outcome] += 1
    assert endings["gave up, old table"] > 0  # the noise does bite at this rate


# -- through the board emulator, a real pty -------------------------------------------------------------------------


@pytest.mark.board
@pytest.mark.parametrize("seed", [1, 2])
def test_pty_flash_at_1e_3_completes_and_verifies(tmp_path, seed):
    r = pty_noisy_flash(tmp_path, 1e-3, seed)
    assert r.outcome == "flashed" and r.error is None and r.rerun_ok, r
    assert r.resends > 0  # the faults did bite


@pytest.mark.board
@pytest.mark.parametrize("seed", [1, 2])
def test_pty_flash_at_1e_2_completes_or_fails_cleanly(tmp_path, seed):
    r = pty_noisy_flash(tmp_path, 1e-2, seed)
    assert r.outcome in GOOD_ENDINGS and r.rerun_ok, r
    if r.outcome != "flashed":
        assert isinstance(r.error, LinkLost) and ("gen 1" in r.line or "gen 2" in r.line), r.line


@pytest.mark.board
def test_cli_flash_at_1e_2_with_every_kind_of_damage(tmp_path):
    from test_fb_emulator import chip_table

    args = ["--test-chip", "4096", "--uid", "kill-0001"]
    old = chip_table(tmp_path / "old.json", 4096, 20, "kill-0001")
    new = chip_table(tmp_path / "new.json", 4096, 30, "kill-0001")
    run = lambda *a: subprocess.run([sys.executable, "-m", "calibrate.cli", *a], capture_output=True,  # noqa
                                    text=True, timeout=300, cwd=REPO_ROOT)
    with EmulatorProcess(args, nvm=tmp_path / "b.nvm") as emu:
        assert run("flash", str(old), "--port", emu.path).returncode == 0
        r = run("flash", str(new), "--port", f"eicalfault://{emu.path}?ber=1e-2&seed=3&faults=all", "--json")
        assert r.returncode in (0, ExitCode.LINK_LOST), r.stderr
        gen = json.loads(run("info", "--port", emu.path, "--json").stdout)["generation"]
        if r.returncode:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and f"gen {gen}" in lines[0]
        else:
            assert gen == 2
        assert run("flash", str(new), "--port", emu.path).returncode == 0
