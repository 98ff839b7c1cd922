"""Every loader and every argument of the command line is total (issue 14): random and mutated files (profiles,
tables, NVM images, history files, summaries) and random argument vectors, fed to ``calibrate.cli.main`` in
process. Whatever comes in: no traceback, an exit code from the documented table (README "Exit codes"), and a
failure says so in exactly one line on stderr ("eical: error: ..."), beside at most the notes of what the run did
on its own ("eical: note: ..."); a success writes only notes there.

``N_EXAMPLES`` examples per property in CI, ``N_SLOW`` under ``slow``. Commands that would run for long on a valid
vector are kept short by the value pools (model seconds of at most a few seconds, the devboard profile) and the
ones that serve or spawn forever (``board-emulator``, ``yield``) are left to their own tests.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrate.cli import main
from calibrate.cli.exits import ExitCode
from hw_models.profile import list_profiles

N_EXAMPLES = 150
N_SLOW = 600
CODES = {int(c) for c in ExitCode}
fast = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
slow = settings(fast, max_examples=N_SLOW)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``eical ARGV`` in process: (exit code, stdout, stderr); any exception but SystemExit fails the test."""
    from hw_models.engine import set_default_threads

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse: usage errors (2), --help and --version (0)
                code = e.code if isinstance(e.code, int) else 2
    finally:
        set_default_threads(1)  # --threads sets a process-wide default
    return code, out.getvalue(), err.getvalue()


def check(argv: list[str]) -> int:
    code, out, err = run_cli(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code in CODES, (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    notes = [ln for ln in lines if ln.startswith("eical: note: ")]  # what the run did on its own (a default --out)
    said = [ln for ln in lines if ln not in notes]
    if code != 0:
        assert len(said) == 1 and said[0].startswith("eical"), (argv, code, err)
    else:
        assert not said, (argv, err)
    return code


# -- files ----------------------------------------------------------------------------------------------------------
@st.composite
def mutated(draw, base: bytes, span: int = 0):
    """``base`` with 1-8 edits (a byte replaced, bytes inserted, a run deleted or duplicated, a cut), within the
    first ``span`` bytes when given (an NVM image's header)."""
    data = bytearray(base)
    top = span or len(data)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "duplicate", "truncate"]))
        i = draw(st.integers(0, max(0, min(top, len(data)) - 1)))
        if op == "replace" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "duplicate":
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
        elif draw(st.booleans()):
            del data[i:]
    return bytes(data)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Real files to mutate: a profile, a calibration directory (table, summary, history), an NVM image, and a
    partial calibration (for --resume)."""
    from firmware_bridge import nvmimage

    d = tmp_path_factory.mktemp("real")
    assert run_cli(["calibrate", "--profile", "devboard", "--seed", "1", "--budget", "1", "--evaluate", "0",
                    "--no-report", "--out", str(d / "cal")])[0] == 0
    nvmimage.open_image(d / "board.nvm")
    cal = d / "cal"
    return {"profile": list_profiles()["devboard"].read_bytes(), "table": (cal / "table.json").read_bytes(),
            "summary": (cal / "summary.json").read_bytes(), "history": (cal / "history.npz").read_bytes(),
            "nvm": (d / "board.nvm").read_bytes()}


def _file_cases(real: dict):
    kinds = st.sampled_from(["profile", "table", "nvm", "history", "summary"])

    @st.composite
    def case(draw):
        kind = draw(kinds)
        how = draw(st.sampled_from(["mutated", "mutated", "random", "empty"]))
        base = real[kind]
        if how == "mutated":
            data = draw(mutated(base, span=4096 if kind == "nvm" else 0))
        elif how == "random":
            data = draw(st.binary(max_size=2048))
        else:
            data = b""
        return kind, data

    return case()


def _commands_for(kind: str, f: Path, work: Path) -> list[list[str]]:
    """The commands that read a file of ``kind``."""
    if kind == "profile":
        return [["profiles", "validate", str(f)], ["profiles", "show", str(f)]]
    if kind == "table":
        return [["simulate", "--profile", "devboard", "--seed", "1", "--table", str(f), "--duration", "0.05"],
                ["flash", str(f), "--port", str(work / "no-such-tty")],
                ["calibrate", "--profile", "devboard", "--seed", "1", "--start-table", str(f), "--budget", "0.5",
                 "--evaluate", "0", "--no-report", "--out", str(work / "o"), "--overwrite"]]
    if kind == "nvm":
        return [["nvm", "check", str(f)]]
    d = work / "dir"
    return [["report", str(d)], ["calibrate", "--resume", str(d)]]


def _place(kind: str, data: bytes, real: dict, work: Path) -> Path:
    if kind in ("history", "summary"):
        d = work / "dir"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        summary = json.loads(real["summary"])
        partial = dict(summary, complete=False)  # resumable: the run's settings, not finished
        (d / "history.npz").write_bytes(data if kind == "history" else real["history"])
        (d / "summary.json").write_bytes(data if kind == "summary" else json.dumps(partial).encode())
        return d / ("history.npz" if kind == "history" else "summary.json")
    f = work / f"input.{kind}"
    f.write_bytes(data)
    return f


def _files_property(real, tmp_path_factory, data_strategy):
    work = tmp_path_factory.mktemp("files")
    seen: dict[int, int] = {}

    @given(case=data_strategy, pick=st.integers(0, 2))
    def prop(case, pick):
        kind, data = case
        f = _place(kind, data, real, work)
        cmds = _commands_for(kind, f, work)
        code = check(cmds[pick % len(cmds)])
        seen[code] = seen.get(code, 0) + 1

    return prop, seen


def test_random_and_mutated_files(real, tmp_path_factory):
    prop, seen = _files_property(real, tmp_path_factory, _file_cases(real))
    fast(prop)()
    print("exit codes of the files:", dict(sorted(seen.items())))
    assert seen.get(2, 0) > 0  # the loaders refuse, one line


@pytest.mark.slow
def test_random_and_mutated_files_many(real, tmp_path_factory):
    prop, seen = _files_property(real, tmp_path_factory, _file_cases(real))
    slow(prop)()
    print("exit codes of the files:", dict(sorted(seen.items())))


# -- argument vectors ------------------------------------------------------------------------------------------------
NUMBERS = ["0", "-1", "1", "2", "0.5", "0.001", "nan", "inf", "-inf", "1e309", "abc", "", "1e9", "3", "0x10", "1_0"]
SECONDS = ["0", "-1", "0.05", "0.3", "1", "nan", "inf", "x", "", "1e-9"]
TEXT = ["", "x", "-", "--", "devboard", "bss2", "no-such", "\x00", "é", "a" * 300, "../..", "/", "serial:",
        "serial:/dev/null", "numpy", "lava", "fpga", "rate_cv=0.01", "rate_cv=x", "rate_cv=0.05,rate_cv=0.05",
        "300:310:1", "300:310", "1:2:3", "dual-loop", "pid"]


def _value_pool(work: Path) -> dict[str, list[str]]:
    paths = [str(work / "none"), str(work), "/dev/null", str(work / "file.txt"), "/proc/eical-x", "",
             str(work / "new-dir"), "/nonexistent/dir/x"]
    return {"number": NUMBERS, "seconds": SECONDS, "text": TEXT, "path": paths}


# option -> pool; anything not listed draws from "text". Pools keep a valid run short.
KIND = {"--seed": "number", "--first-seed": "number", "--chips": "number", "--threads": "number",
        "--max-iterations": "number", "--checkpoints": "number", "--baud": "number", "--target-rate": "number",
        "--temperature": "number", "--budget": "seconds", "--evaluate": "seconds", "--verify": "seconds",
        "--diagnostics": "seconds", "--duration": "seconds", "--replay": "seconds", "--out": "path",
        "--table": "path", "--start-table": "path", "--resume": "path", "--nvm": "path", "--port": "path",
        "-p": "path", "file": "path", "dir": "path", "table": "path", "name": "text"}
SKIP = {"board-emulator", "yield", "devices"}  # they serve, spawn a cluster or probe the machine's ports


def _parsers():
    import argparse

    from calibrate.cli import build_parser

    out = {}

    def walk(p, name):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, sp in a.choices.items():
                    walk(sp, name + [n])
        if name and name[0] not in SKIP:
            out[tuple(name)] = p
    walk(build_parser(), [])
    return out


@st.composite
def argv_vectors(draw, parsers: dict, pool: dict):
    import argparse

    cmd = draw(st.sampled_from(sorted(parsers)))
    p = parsers[cmd]
    argv = list(cmd)
    actions = [a for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    chosen = draw(st.lists(st.sampled_from(actions), max_size=8)) if actions else []
    for a in chosen:
        name = draw(st.sampled_from(a.option_strings)) if a.option_strings else None
        key = name or a.dest
        if name is not None and a.nargs == 0:
            argv.append(name)
            continue
        value = draw(st.sampled_from(pool[KIND.get(key, "text")]))
        argv += [name, value] if name is not None else [value]
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--bogus", "-x", "--help", "--version"])))
    if cmd[0] in ("calibrate", "simulate", "diagnose", "track"):  # keep a valid run short (the pools decide first)
        extra = {"calibrate": ["--profile", "devboard"], "simulate": ["--profile", "devboard"],
                 "diagnose": ["--profile", "devboard"], "track": ["--profile", "devboard"]}[cmd[0]]
        argv = argv[:1] + extra + argv[1:]
    return argv


def _argv_property(tmp_path_factory):
    work = tmp_path_factory.mktemp("argv")
    (work / "file.txt").write_text("not anything eical reads")
    parsers, pool = _parsers(), _value_pool(work)
    seen: dict[int, int] = {}

    @given(argv=argv_vectors(parsers, pool))
    def prop(argv):
        code = check(argv)
        seen[code] = seen.get(code, 0) + 1

    return prop, seen


def test_random_argument_vectors(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # a calibration without --out writes here
    prop, seen = _argv_property(tmp_path_factory)
    fast(prop)()
    print("exit codes of the argument vectors:", dict(sorted(seen.items())))
    assert seen.get(2, 0) > N_EXAMPLES // 4


@pytest.mark.slow
def test_random_argument_vectors_many(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    prop, seen = _argv_property(tmp_path_factory)
    slow(prop)()
    print("exit codes of the argument vectors:", dict(sorted(seen.items())))


def test_history_loader_bounds_what_it_inflates(tmp_path):
    """A zip member that claims more than the cap is refused from its header, unread (a zip bomb)."""
    import zipfile

    from calibrate import history as H

    p = tmp_path / "bomb.npz"
    big = np.zeros(1 << 22, dtype=np.uint8)  # 4 MiB of zeros: a few KiB compressed
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("kind.npy", "w") as f:
            np.lib.format.write_array(f, big)
    old = H.HISTORY_MAX_BYTES
    H.HISTORY_MAX_BYTES = 1 << 20
    try:
        with pytest.raises(H.HistoryError, match="inflate"):
            H.History.load(p)
    finally:
        H.HISTORY_MAX_BYTES = old
