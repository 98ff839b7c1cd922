"""A yield study: its definition (``Study``), and the driver that runs its chips on Dask (``run_study``).

The driver
----------
- Reads ``DIR/results/`` first and submits only the chips not yet there, so a re-run of the same command after the
  driver was killed resumes (docs/yield.md, "Resume"). ``DIR/study.json`` records what the study is; a directory
  holding another study is refused (``StudyMismatch``), never mixed or overwritten.
- Runs chips on ``dask.distributed``: a ``LocalCluster`` of ``workers`` single-threaded worker processes bound to
  127.0.0.1 (default: one per core), or the running cluster at ``scheduler`` (``tcp://HOST:PORT``). One task per
  chip (``Client.submit``), results taken as they finish (``as_completed``). Dask re-runs the tasks of a worker
  that dies (up to ``distributed.scheduler.allowed-failures`` times, then the chip is reported as not run and a
  re-run retries it). Nothing of the scheduling or retrying is done here.
- Writes finished chips as they come, in batches of at most ``batch_size`` chips and at least every ``flush_s``
  seconds, each batch one atomically written Parquet file (``store.write_batch``). Killed at any instant, the
  driver loses at most the chips of its unwritten batch, and those are recomputed by the re-run; a chip that is
  in the dataset is never computed again. One driver at a time per directory (an advisory lock, released by the
  operating system when the driver dies).
- Finally merges the parts (``store.compact``) and writes ``DIR/yield.json`` and ``DIR/report.html`` from the
  whole dataset.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from hw_models.profile import Profile

from .chip import ChipTask, chip_key, run_chip
from ..replay import default_replay_s
from .spec import DEFAULT_SPEC, Spec
from .store import compact, existing_keys, read_results, record_schema, write_batch
from .sweep import Sweep, apply_point, grid, point_key

__all__ = ["Study", "run_study", "StudyOutcome", "StudyMismatch", "StudyBusy", "STUDY_SCHEMA"]

STUDY_SCHEMA = "eical-yield-study/1"


class StudyMismatch(ValueError):
    """``DIR`` holds results of a different study (one line)."""


class StudyBusy(RuntimeError):
    """Another driver is running a study in ``DIR`` (one line)."""


@dataclass
class Study:
    """What a yield study calibrates: ``chips`` seeds from ``first_seed`` at every point of the sweeps' grid.

    A seed draws the same random numbers at every sweep point (``hw_models.chip.draw_chip``), so the points of a
    sweep differ only in the swept values: common random numbers, which make a curve against a swept value
    smoother than independent chips would.
    """

    profile: Profile
    chips: int
    sweeps: Sequence[Sweep] = ()
    first_seed: int = 1
    spec: Spec = DEFAULT_SPEC
    controller: str = "dual-loop"
    budget_s: Optional[float] = None
    evaluate_s: Optional[float] = None  # None: the profile's judging replay length (replay.JUDGING_REPLAY_S)
    oracle: bool = False
    _points: Optional[list] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.chips, int) and self.chips >= 1):
            raise ValueError(f"chips: expected a positive integer, got {self.chips!r}")
        if not (isinstance(self.first_seed, int) and self.first_seed >= 0):
            raise ValueError(f"first seed: expected a non-negative integer, got {self.first_seed!r}")

    @property
    def replay_s(self) -> float:
        return float(self.evaluate_s) if self.evaluate_s is not None else default_replay_s(self.profile.name)

    def points(self) -> list[tuple[dict, Profile]]:
        """Every sweep point's values and its validated profile (``SweepError`` naming the key when invalid)."""
        if self._points is None:
            self._points = [(vals, apply_point(self.profile, vals)) for vals in grid(self.sweeps)]
        return self._points

    @property
    def seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.chips)

    def tasks(self) -> list[ChipTask]:
        out = []
        for i, (vals, prof) in enumerate(self.points()):
            pk = point_key(vals)
            for s in self.seeds:
                out.append(ChipTask(profile=prof, base_sha256=self.profile.sha256, point=i, point_key=pk,
                                    values=tuple(vals.items()), seed=s, controller=self.controller,
                                    budget_s=self.budget_s, evaluate_s=self.replay_s, spec=self.spec,
                                    oracle=self.oracle))
        return out

    def identity(self) -> dict:
        """What makes two runs the same study (``DIR/study.json``): everything a chip's result depends on. The
        number of chips and the first seed are not part of it: a re-run with more chips extends the study."""
        from calibrate import __version__

        return {"schema": STUDY_SCHEMA, "profile": self.profile.name, "profile_sha256": self.profile.sha256,
                "sweeps": [{"key": s.key, "values": list(s.values)} for s in self.sweeps],
                "spec": self.spec.as_dict(), "controller": self.controller, "budget_s": self.budget_s,
                "evaluate_s": self.replay_s, "reference": "oracle" if self.oracle else None,
                "eical_version": __version__}

    @property
    def study_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class StudyOutcome:
    """What a run of the driver did and found."""

    summary: dict  # the content of yield.json
    out_dir: Path
    requested: int
    already_done: int
    computed: list  # chip keys computed (and written) by this run
    not_run: list  # (chip key, reason) of chips Dask could not run (KilledWorker, ...): a re-run retries them
    errors: int  # chips whose task raised (recorded with their error)
    wall_s: float
    workers: int
    dashboard: Optional[str] = None


@contextmanager
def _locked(out: Path):
    fh = open(out / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StudyBusy(f"{out}: another eical yield is running on this directory") from None
        yield
    finally:
        fh.close()


def _check_identity(out: Path, ident: dict) -> None:
    path = out / "study.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise StudyMismatch(f"{path}: unreadable; not a yield study directory") from None
        if old != ident:
            diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
            raise StudyMismatch(f"{out} holds another study (differs in {', '.join(diff)}); use another --out")
        return
    if (out / "results").exists() and any((out / "results").iterdir()):
        raise StudyMismatch(f"{out}/results exists without study.json; use another --out")
    tmp = out / ".study.json.tmp"
    tmp.write_text(json.dumps(ident, indent=1) + "\n")
    os.replace(tmp, path)


@contextmanager
def _client(workers: Optional[int], scheduler: Optional[str]):
    """A Dask client: on the cluster at ``scheduler``, or on a LocalCluster of single-threaded workers."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    n = workers if workers else (os.cpu_count() or 1)
    # the scheduler's HTTP server (health, metrics; the dashboard when bokeh is installed) always starts: on a free
    # port of 127.0.0.1, so it never collides with another cluster's 8787; its address is printed on --dashboard
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


class _Writer:
    """Buffers finished chips and writes them in atomic batches (size- and time-bounded)."""

    def __init__(self, results_dir: Path, schema, run_id: str, batch_size: int, flush_s: float):
        self.dir, self.schema, self.run_id = results_dir, schema, run_id
        self.batch_size, self.flush_s = max(1, batch_size), flush_s
        self.buf: list[dict] = []
        self.first_t = 0.0
        self.seq = 0
        self.written: list = []

    def add(self, rec: dict) -> None:
        if not self.buf:
            self.first_t = time.monotonic()
        self.buf.append(rec)
        if len(self.buf) >= self.batch_size:
            self.flush()

    def tick(self) -> None:
        if self.buf and time.monotonic() - self.first_t >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        write_batch(self.dir, self.buf, self.schema, run_id=self.run_id, seq=self.seq)
        self.seq += 1
        self.written += [chip_key(r["point_key"], r["seed"]) for r in self.buf]
        self.buf = []


def run_study(study: Study, out_dir, *, workers: Optional[int] = None, scheduler: Optional[str] = None,
              dashboard: bool = False, progress: Optional[bool] = None, batch_size: int = 16, flush_s: float = 3.0,
              log: Callable[[str], None] = lambda s: None, report: bool = True) -> StudyOutcome:
    """Run (or resume) ``study`` with results under ``out_dir``; see the module docstring.

    progress: show a progress bar with ETA on stderr (None: only when stderr is a terminal). log: called with
    one-line messages (the dashboard's address, chips Dask could not run)."""
    from .summary import summarise, write_summary

    t0, load_start = time.perf_counter(), _load()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    schema = record_schema(study.sweeps, study.oracle)
    tasks = study.tasks()  # builds and validates every point's profile before anything runs
    results_dir = out / "results"
    run_id = uuid.uuid4().hex
    not_run: list = []
    n_workers = 0
    dash = None
    with _locked(out):
        _check_identity(out, study.identity())
        done = existing_keys(results_dir)
        todo = [t for t in tasks if t.key not in done]
        writer = _Writer(results_dir, schema, run_id, batch_size, flush_s)
        if todo:
            with _client(workers, scheduler) as client:
                n_workers = len(client.scheduler_info().get("workers", {}))
                if dashboard:
                    dash = client.dashboard_link
                    log(f"Dask dashboard: {dash}")
                try:
                    not_run = _run_tasks(client, todo, writer, study.study_id, progress)
                finally:
                    writer.flush()  # whatever finished is kept, even when the run is interrupted
        compact(results_dir, schema, run_id=run_id)
        res = read_results(results_dir, schema)
        wanted = {t.key for t in tasks}
        rows = [r for r in res.rows if (r["point_key"], int(r["seed"])) in wanted]
        wall = time.perf_counter() - t0
        run_info = {"run_id": run_id, "computed": len(writer.written), "already_done": len(tasks) - len(todo),
                    "not_run": len(not_run), "wall_s": wall, "workers": n_workers,
                    "chips_per_hour_per_worker": (len(writer.written) / wall * 3600 / n_workers
                                                  if writer.written and n_workers else None),
                    "duplicates_dropped": res.duplicates,
                    **_cpu_and_load(rows, run_id, load_start),
                    "chips_in_dataset_not_requested": len(res.rows) - len(rows)}
        summary = summarise(study, rows, run_info)
        write_summary(out, summary)
        if report:
            from .report import write_report

            write_report(out, study, rows, summary)
    errors = sum(1 for r in rows if r.get("error"))
    for key, why in not_run:
        log(f"chip {key} not run: {why}")
    return StudyOutcome(summary=summary, out_dir=out, requested=len(tasks), already_done=len(tasks) - len(todo),
                        computed=list(writer.written), not_run=not_run, errors=errors, wall_s=wall,
                        workers=n_workers, dashboard=dash)


def _cpu_and_load(rows: list, run_id: str, load_start: tuple) -> dict:
    """What this run's chips cost in CPU (the figure that holds on a shared machine, where wall time depends on the
    others' load) and the load average it ran under (1-minute, at its start and end)."""
    cpu = [float(r["cpu_s"]) for r in rows if r.get("run_id") == run_id and r.get("cpu_s") is not None]
    mean = sum(cpu) / len(cpu) if cpu else None
    return {"cpu_s_per_chip": mean, "chips_per_cpu_hour": 3600.0 / mean if mean else None,
            "load_average": {"start": load_start[0], "end": _load()[0]}}


def _load() -> tuple:
    try:
        return os.getloadavg()
    except OSError:  # not on every platform
        return (None, None, None)


def _run_tasks(client, todo: list[ChipTask], writer: _Writer, study_id: str, progress: Optional[bool]) -> list:
    """Submit one task per chip and write results as they finish; returns the chips Dask could not run."""
    from distributed import as_completed

    from .progress import StudyProgress

    futures = {}
    for t in todo:
        f = client.submit(run_chip, t, key=f"eical-chip-{study_id}-{t.point}-{t.seed}", pure=False)
        futures[f.key] = (f, t)
    not_run = []
    ac = as_completed([f for f, _ in futures.values()])
    with StudyProgress(len(todo), enabled=progress) as bar:
        while not ac.is_empty():
            batch = ac.next_batch(block=False) if ac.has_ready() else []
            if not batch:
                time.sleep(0.25)
            for f in batch:
                if f.status not in ("finished", "error", "cancelled"):
                    # a worker died holding it, or after it finished ("lost", back to "pending"): the scheduler
                    # recomputes it, so wait for it again (it once came back as "not run: NoneType: None")
                    ac.add(f)
                    continue
                task = futures.pop(f.key)[1]
                if f.status == "finished":
                    writer.add(f.result())
                else:
                    try:
                        exc = f.exception()
                        why = f"{type(exc).__name__}: {exc}"
                    except Exception as e:  # cancelled futures have no exception to give
                        why = f"{f.status} ({type(e).__name__})"
                    not_run.append((task.key, why.splitlines()[0][:300]))
                f.release()
                bar.advance()
            writer.tick()
    return not_run
