"""Yield studies end to end on Dask: exactly once under faults, resume after the driver is killed, identity with
``eical calibrate``, and the CLI's argument checks.

Chips are tiny (a devboard with a 0.5 ms step, 2-3 s budgets and replays) so a chip costs well under a second.
Every process a test starts (a driver, a ``dask scheduler``, ``dask worker``s) binds to 127.0.0.1, is bounded by a
timeout, and is ended by its pid.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from calibrate.yield_study import Study, parse_sweep, run_study
from calibrate.yield_study.store import read_results
from hw_models.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """devboard at a 0.5 ms step: five times fewer steps; the figures are not the point here."""
    p = load_profile("devboard").with_changes({"dt_ms": 0.5})
    path = tmp_path_factory.mktemp("prof") / "tiny.yaml"
    path.write_text(p.to_yaml())
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a process this test started, by its pid: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _parts(out: Path) -> int:
    return len(list((out / "results").glob("part-*.parquet"))) if (out / "results").is_dir() else 0


DRIVER = textwrap.dedent("""
    import sys
    from hw_models.profile import load_profile
    from calibrate.yield_study import Study, run_study
    prof = load_profile(sys.argv[1])
    study = Study(profile=prof, chips=int(sys.argv[3]), budget_s=2.0, evaluate_s=15.0)
    # small batches so the dataset grows chip by chip and the kill lands between batches
    run_study(study, sys.argv[2], workers=1, batch_size=2, flush_s=0.5, report=False)
""")


@pytest.mark.slow
def test_driver_killed_then_rerun_completes_without_recomputing(tiny, tmp_path):
    out = tmp_path / "study"
    n = 12
    drv = subprocess.Popen([sys.executable, "-c", DRIVER, str(tiny), str(out), str(n)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _parts(out) >= 2 or drv.poll() is not None, 180, "two result batches")
        assert drv.poll() is None, "the driver finished before it could be killed: chips too fast for this test"
        os.kill(drv.pid, signal.SIGKILL)
        drv.wait(timeout=30)
    finally:
        _stop(drv)
    first = read_results(out / "results")
    done1 = {(r["point_key"], r["seed"]) for r in first.rows}
    run1 = {r["run_id"] for r in first.rows}
    assert 2 <= len(done1) < n and len(run1) == 1 and first.duplicates == 0
    # the same command again, in this process: it submits only the missing chips
    prof = load_profile(tiny)
    outcome = run_study(Study(profile=prof, chips=n, budget_s=2.0, evaluate_s=15.0), out, workers=1, report=False)
    assert outcome.already_done == len(done1)
    assert set(outcome.computed).isdisjoint(done1) and len(outcome.computed) == n - len(done1)
    final = read_results(out / "results")
    assert final.duplicates == 0 and len(final.rows) == n
    assert {r["seed"] for r in final.rows} == set(range(1, n + 1))
    # which run computed which chip: the first run's chips kept its run id, the re-run wrote only the rest
    by_run = {}
    for r in final.rows:
        by_run.setdefault(r["run_id"], set()).add((r["point_key"], r["seed"]))
    assert by_run[run1.pop()] == done1 and len(by_run) == 2
    assert outcome.summary["complete"] and outcome.summary["points"][0]["chips"] == n
    # nothing to do on a third run: no cluster is even started
    again = run_study(Study(profile=prof, chips=n, budget_s=2.0, evaluate_s=15.0), out, workers=1, report=False)
    assert again.computed == [] and again.workers == 0 and again.already_done == n


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_no_chip(tiny, tmp_path):
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "20s"}
    procs = []
    try:
        sched = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard", "--no-show"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sched)
        workers = []
        for k in range(2):
            w = subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nthreads", "1", "--no-nanny",
                                  "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{k}"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(w)
            workers.append(w)
        from distributed import Client

        out = tmp_path / "study"
        n = 40
        study = Study(profile=load_profile(tiny), chips=n, budget_s=2.0, evaluate_s=6.0)
        box = {}

        def drive():
            try:
                box["outcome"] = run_study(study, out, scheduler=addr, batch_size=2, flush_s=0.5, report=False)
            except BaseException as e:  # surfaced in the test thread below
                box["error"] = e

        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=60)
            w0 = next(a for a, w in c.scheduler_info()["workers"].items() if w["name"] == "w0")
            t = threading.Thread(target=drive, daemon=True)
            t.start()
            # mid-run: some chips written, and w0 busy with one
            _wait_for(lambda: (_parts(out) >= 2 and c.processing().get(w0)) or not t.is_alive(), 240,
                      "results written and a chip running on w0")
            assert t.is_alive(), f"the study ended before a worker could be killed: {box}"
            running = list(c.processing()[w0])
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait(timeout=30)
        assert running
        t.join(timeout=300)
        assert not t.is_alive(), "the study did not finish within 300 s"
        assert "error" not in box, box.get("error")
        outcome = box["outcome"]
        assert outcome.not_run == [] and outcome.errors == 0
        res = read_results(out / "results")
        keys = [(r["point_key"], r["seed"]) for r in res.rows]
        assert res.duplicates == 0 and len(keys) == len(set(keys)) == n
        assert {r["seed"] for r in res.rows} == set(range(1, n + 1))
        assert len(outcome.computed) == n
        # the chips w0 was running when it died were run again on w1
        redone = {int(k.rsplit("-", 1)[1]) for k in running}
        assert redone and all(r["worker"] != f"{socket.gethostname()}:{workers[0].pid}" for r in res.rows
                               if r["seed"] in redone)
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:chip devboard seed 4. redrew potentials")  # mismatch.scale=1.5 on seed 4
def test_three_chips_equal_eical_calibrate(tmp_path):
    """A study's chips are exactly what `eical calibrate --profile P --seed S --budget B --evaluate E` gives for
    the same chip, changes included (the point's profile written out as YAML)."""
    from calibrate.cli import main

    prof = load_profile("devboard")
    sweeps = [parse_sweep("mismatch.scale=1.5", prof), parse_sweep("knobs.bits=7", prof)]
    study = Study(profile=prof, chips=3, first_seed=4, sweeps=sweeps, budget_s=3.0, evaluate_s=3.0)
    outcome = run_study(study, tmp_path / "study", workers=1, report=False)
    rows = {r["seed"]: r for r in read_results(tmp_path / "study" / "results").rows}
    assert sorted(rows) == [4, 5, 6] and outcome.errors == 0
    point_profile = study.points()[0][1]
    yaml_path = tmp_path / "point.yaml"
    yaml_path.write_text(point_profile.to_yaml())
    for seed, r in rows.items():
        d = tmp_path / f"cal{seed}"
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["calibrate", "--profile", str(yaml_path), "--seed", str(seed), "--budget", "3",
                       "--evaluate", "3", "--out", str(d), "--no-report", "--json"])
        assert rc == 0
        summ = json.loads(buf.getvalue())
        table = json.loads((d / "table.json").read_text())
        assert table["chip"]["profile_sha256"] == r["profile_sha256"] == point_profile.sha256
        assert table["knobs"]["gain_e"]["codes"] == r["codes_e"]
        assert table["knobs"]["gain_i"]["codes"] == r["codes_i"]
        for k, v in summ["true_after"].items():
            if v is None:
                assert r[k] is None, k
            else:
                assert r[k] == v, (k, r[k], v)  # bit for bit
        assert r["counting_floor"] == summ["counting_floor"] and r["cv_over_floor"] == summ["cv_over_floor"]
        n = summ["neurons"]
        assert (r["calibrated"], r["unreachable"], r["dead"]) == (n["calibrated"], n["unreachable"], n["dead"])
        assert (r["iterations"], r["model_time_s"], r["stopped"]) == (summ["iterations"], summ["model_time_s"],
                                                                      summ["stopped"])
        # judged alike: the study's pass is the verdict's, criterion by criterion (calibrate.verdict's rule)
        assert r["passed"] == summ["verdict"]["met"]
        for c in summ["verdict"]["criteria"]:
            assert r[c["name"] + ".met"] == c["met"] and r[c["name"] + ".value"] == c["value"], c


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only_and_the_dashboard(tiny, tmp_path):
    """The same command quiet in a pipe, then (one more chip) with a live bar and ETA on a terminal; --dashboard
    prints the local cluster's dashboard address."""
    import pty
    import select

    out = tmp_path / "study"
    base = [str(BIN / "eical"), "yield", "--profile", str(tiny), "--budget", "1", "--evaluate", "2", "--workers", "1",
            "--dashboard", "--out", str(out)]
    r = subprocess.run(base + ["--chips", "1"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "ETA" not in r.stderr and "Dask dashboard: http://127.0.0.1:" in r.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen(base + ["--chips", "2"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        assert p.wait(timeout=60) == 0
    finally:
        _stop(p)
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "ETA" in text and "1/1" in text and "chips" in text


def _cli(capsys, *args):
    """``eical yield ARGS`` in this process: (exit code, stderr)."""
    from calibrate.cli import main

    capsys.readouterr()
    try:
        rc = main(["yield", *args])
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--profile", "devboard", "--chips", "2", "--sweep", "knobs.bitz=6"], "knobs.bitz: unknown key"),
    (["--profile", "devboard", "--chips", "2", "--sweep", "knobs.bits=20"], "knobs.bits: expected an integer in [1, 16]"),
    (["--profile", "devboard", "--chips", "0"], "expected a positive integer"),
    (["--profile", "devboard", "--chips", "2", "--spec", "cv=0.1"], "unknown criterion"),
    (["--profile", "nosuch", "--chips", "2"], "no such profile"),
    (["--profile", "devboard", "--chips", "2", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
     "not allowed with argument"),
    (["--profile", "devboard", "--chips", "2", "--scheduler", "localhost"], "expected an address"),
    (["--profile", "balanced-net", "--chips", "2", "--reference", "oracle"], "feed-forward"),
    (["--profile", "devboard", "--chips", "2", "--evaluate", "0"], "expected a positive"),
])
def test_bad_arguments_exit_2_with_one_line_before_anything_runs(tmp_path, capsys, args, needle):
    out = tmp_path / "o"
    rc, err = _cli(capsys, *args, "--out", str(out))
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert not (out / "results").exists()


def test_out_must_be_writable_and_hold_this_study(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, err = _cli(capsys, "--profile", "devboard", "--chips", "1", "--out", str(f))
    assert rc == 2 and "exists and is not a directory" in err
    d = tmp_path / "other"
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"schema": "eical-yield-study/1", "profile": "bss2"}))
    rc, err = _cli(capsys, "--profile", "devboard", "--chips", "1", "--out", str(d))
    assert rc == 2 and "holds another study" in err and len(err.strip().splitlines()) == 1
    assert json.loads((d / "study.json").read_text())["profile"] == "bss2"  # untouched
