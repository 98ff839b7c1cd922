"""NVM image files: the board emulator opens a file only when it is an eical NVM image, creates one only when the
path does not exist or when asked (``new=True``), and refuses anything else with a usage error, leaving the file
exactly as it was. Old headerless images are refused with a migration hint, and migrate keeping their tables."""
from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import nvmimage
from calibrate.cli.exits import ExitCode, exit_code_for
from firmware_bridge.errors import NvmImageError, UsageError
from firmware_bridge.firmware import board as B
from firmware_bridge.firmware import nvm
from firmware_bridge.firmware.testchip import TestChip
from firmware_bridge.testing import REPO_ROOT

SIZE = nvm.flash_size()


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def refused(path, **kw) -> NvmImageError:
    with pytest.raises(NvmImageError) as e:
        nvmimage.open_image(path, **kw)
    line = e.value.line()
    assert "\n" not in line and exit_code_for(e.value) == ExitCode.USAGE
    return e.value


def commit_table(flash, chip, value):
    """Commit one table with the firmware's own store (as a flash would)."""
    b = B.Board(chip, flash)
    payload = nvm.encode_table([{"name": k["name"], "sharing": k["sharing"], "bits": k["bits"],
                                 "codes": [value] * k["n_groups"]} for k in b.knobs])
    bank = b.store.target()
    b.store.erase_for(bank, len(payload))
    b.store.write(bank, 0, payload)
    assert b.store.commit(bank, b.store.next_gen(), len(payload), nvm.crc32(payload))


def test_a_missing_path_becomes_an_erased_image_that_keeps_its_tables(tmp_path):
    p = tmp_path / "board.nvm"
    fl = nvmimage.open_image(p)
    raw = p.read_bytes()
    assert len(raw) == nvm.IMAGE_HEADER_SIZE + SIZE and raw[:8] == b"EICALNVM"
    assert raw[nvm.IMAGE_HEADER_SIZE:] == b"\xff" * SIZE
    chip = TestChip(16, "img-0001")
    commit_table(fl, chip, 77)
    fl.close()
    b = B.Board(chip, nvmimage.open_image(p))  # the same file again: the table is there
    assert b.store.active["gen"] == 1 and chip.codes["gain_e"] == [77] * 16


def test_image_header_layout():
    h = nvm.pack_image_header(SIZE, 4096, nvm.BANK_SIZE)
    assert len(h) == 64 and h[:8] == b"EICALNVM"
    assert struct.unpack_from("<HHIII", h, 8) == (1, 64, SIZE, 4096, nvm.BANK_SIZE)
    assert struct.unpack_from("<I", h, 60)[0] == nvm.crc32(h[:60])
    assert nvm.unpack_image_header(h) == (1, SIZE, 4096, nvm.BANK_SIZE)


def test_a_file_that_is_not_an_image_is_refused_and_left_alone(tmp_path):
    """The bug of issue 14: `board-emulator --nvm table.json` padded the table to 266,240 bytes of 0xFF."""
    p = tmp_path / "table.json"
    p.write_text('{"schema": {"name": "eical-gain-table", "version": 1}}\n')
    before = digest(p)
    e = refused(p)
    assert str(p) in e.line() and "not an eical NVM image" in e.line()
    e = refused(p, new=True)  # asking for a new image does not destroy someone's file either
    assert "would destroy it" in e.line()
    assert digest(p) == before
    with pytest.raises(ValueError):  # the firmware's own FileFlash refuses it too (MicroPython path)
        nvm.FileFlash(str(p), SIZE)
    assert digest(p) == before


def test_board_emulator_new_without_nvm_is_a_usage_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "calibrate.cli", "board-emulator", "--test-chip", "8", "--new"],
                       capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert r.returncode == 2 and "--new needs --nvm" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("mutate, text", [
    (lambda raw: raw[:1000], "truncated"),
    (lambda raw: raw + b"\xff", "padded"),
    (lambda raw: raw[:20] + bytes([raw[20] ^ 1]) + raw[21:], "header CRC"),
    (lambda raw: b"EICALNVM" + b"\x00" * 56 + raw[64:], "header CRC"),
])
def test_damaged_images_are_refused(tmp_path, mutate, text):
    p = tmp_path / "b.nvm"
    nvmimage.open_image(p).close()
    p.write_bytes(mutate(p.read_bytes()))
    before = digest(p)
    assert text in refused(p).line()
    assert digest(p) == before


def test_an_image_of_a_newer_format_or_other_geometry_is_refused(tmp_path):
    p = tmp_path / "b.nvm"
    body = struct.pack("<8sHHIII", b"EICALNVM", 2, 64, SIZE, 4096, nvm.BANK_SIZE).ljust(60, b"\x00")
    p.write_bytes(body + struct.pack("<I", nvm.crc32(body)) + b"\xff" * SIZE)
    assert "format 2" in refused(p).line()
    q = tmp_path / "small.nvm"
    nvmimage.open_image(q, bank_size=32 * 1024).close()
    assert "32768-byte banks" in refused(q).line()
    nvmimage.open_image(q, bank_size=32 * 1024).close()  # with its own geometry it opens


@pytest.mark.parametrize("what", ["empty path", "directory", "dev null", "missing directory", "nul byte"])
def test_paths_that_cannot_hold_an_image(tmp_path, what):
    path = {"empty path": "", "directory": tmp_path, "dev null": "/dev/null",
            "missing directory": tmp_path / "no" / "b.nvm", "nul byte": "a\x00b"}[what]
    e = refused(path)
    if what in ("directory", "dev null", "missing directory"):
        assert str(path) in e.line()


def test_an_empty_file_needs_new(tmp_path):
    p = tmp_path / "made-by-mktemp"
    p.touch()
    assert "empty file" in refused(p).line()
    nvmimage.open_image(p, new=True).close()
    assert p.stat().st_size == nvm.IMAGE_HEADER_SIZE + SIZE


def test_new_replaces_an_existing_image_with_an_erased_one(tmp_path):
    p = tmp_path / "b.nvm"
    fl = nvmimage.open_image(p)
    commit_table(fl, TestChip(16, "img-0002"), 5)
    fl.close()
    b = B.Board(TestChip(16, "img-0002"), nvmimage.open_image(p, new=True))
    assert b.store.active is None
    # so does --new on an image of another geometry
    nvmimage.open_image(p, bank_size=32 * 1024, new=True).close()
    nvmimage.open_image(p, bank_size=32 * 1024).close()


def legacy_image(tmp_path: Path, value: int) -> tuple[Path, TestChip]:
    ram = nvm.RamFlash(SIZE)
    chip = TestChip(16, "legacy-0001")
    commit_table(ram, chip, value)
    p = tmp_path / "old.nvm"
    p.write_bytes(bytes(ram.mem))
    return p, chip


def test_old_headerless_images_are_refused_with_a_migration_hint_and_migrate(tmp_path):
    p, chip = legacy_image(tmp_path, 42)
    before = digest(p)
    assert nvmimage.is_legacy_image(p)
    e = refused(p)
    assert "without a header" in e.line() and f"eical nvm migrate {p}" in e.line()
    assert digest(p) == before
    backup = nvmimage.migrate_legacy_image(p)
    assert digest(backup) == before and backup.name == "old.nvm.bak"
    b = B.Board(chip, nvmimage.open_image(p))
    assert b.store.active["gen"] == 1 and chip.codes["gain_i"] == [42] * 16  # the table came along
    with pytest.raises(NvmImageError, match="already an eical NVM image"):
        nvmimage.migrate_legacy_image(p)


def test_migrate_refuses_what_is_not_an_old_image(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(NvmImageError, match="nothing to migrate"):
        nvmimage.migrate_legacy_image(p)
    assert p.read_text() == "hello" and not (tmp_path / "notes.txt.bak").exists()
    # a file of the legacy size whose content is not an NVM layout is not taken for one
    q = tmp_path / "random.bin"
    q.write_bytes(bytes(range(256)) * (SIZE // 256))
    assert not nvmimage.is_legacy_image(q)
    assert "not an eical NVM image" in refused(q).line()


def test_nvm_command_checks_and_migrates(tmp_path):
    p, _ = legacy_image(tmp_path, 3)
    run = lambda *a: subprocess.run([sys.executable, "-m", "calibrate.cli", "nvm", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    r = run("check", str(p))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "migrate" in r.stderr
    r = run("migrate", str(p))
    assert r.returncode == 0 and "migrated" in r.stdout
    assert run("check", str(p)).returncode == 0
    assert run("frobnicate").returncode == 2


def test_board_emulator_refuses_a_non_image_with_exit_2(tmp_path):
    """`board-emulator --nvm` on a file that is not an image: exit 2, one line, the file untouched."""
    p = tmp_path / "copy-of-table.json"
    p.write_text('{"chip": 1}\n' * 100)
    before = digest(p)
    r = subprocess.run([sys.executable, "-m", "calibrate.cli", "board-emulator", "--test-chip", "8", "--nvm",
                        str(p)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert r.returncode == 2 and r.stdout == ""  # refused before any pty path is printed
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "Traceback" not in r.stderr
    assert digest(p) == before


def test_nvm_image_error_is_a_usage_error_and_a_value_error():
    e = NvmImageError("x")
    assert isinstance(e, UsageError) and isinstance(e, ValueError)


# -- property: any bytes as an NVM image ---------------------------------------------------------------------------

N_EXAMPLES = 300


def _valid_image() -> bytes:
    return nvm.pack_image_header(SIZE, nvm.SECTOR_SIZE, nvm.BANK_SIZE) + b"\xff" * SIZE


@st.composite
def image_bytes(draw):
    """Random bytes, or a valid image header (with or without a body) with some bytes changed or cut."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=4096))
    raw = bytearray(_valid_image()[:draw(st.sampled_from([64, 100, nvm.IMAGE_HEADER_SIZE + SIZE]))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, 63))
        raw[i] = draw(st.integers(0, 255))
    return bytes(raw[:draw(st.integers(0, len(raw)))])


@settings(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=image_bytes())
def test_any_bytes_as_an_nvm_image_give_one_usage_error_line(tmp_path, data):
    p = tmp_path / "any.nvm"
    p.write_bytes(data)
    try:
        nvmimage.open_image(p).close()
    except NvmImageError as e:
        line = e.line()
        assert "\n" not in line and str(p) in line
        assert p.read_bytes() == data  # left exactly as it was
    else:
        assert data == _valid_image()  # only a whole, valid image opens
