"""The README's pytest example, as a user would run it (issue 13): written to a project of its own and run by pytest
with eical's plugin, on an emulated chip and against a board emulator (``--eical-backend serial:PTY``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_bridge.testing import REPO_ROOT, EmulatorProcess


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    m = re.search(r"```python\n(# test_my_controller\.py\n.*?)```", text, re.S)
    assert m, "the README's pytest example is gone"
    return m.group(1)


def _pytest(project: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_controller.py",
                        *extra], cwd=project, capture_output=True, text=True, timeout=600, env=env)
    return r, time.perf_counter() - t0


@pytest.fixture
def project(tmp_path):
    (tmp_path / "test_my_controller.py").write_text(readme_example())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a project of its own, not eical's test configuration
    return tmp_path


def test_readme_example_on_an_emulated_chip(project):
    r, wall = _pytest(project)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr


@pytest.mark.board
def test_readme_example_against_a_board_emulator(project):
    with EmulatorProcess(["--profile", "devboard", "--seed", "1"]) as board:
        r, wall = _pytest(project, "--eical-backend", f"serial:{board.path}")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr


@pytest.mark.board
def test_a_board_of_another_profile_fails_the_test_with_one_line(project):
    with EmulatorProcess(["--profile", "bss2", "--seed", "1"]) as board:
        r, _ = _pytest(project, "--eical-backend", f"serial:{board.path}")
    assert r.returncode == 1 and "the board runs profile 'bss2', the test calibrates 'devboard'" in r.stdout
