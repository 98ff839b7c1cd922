"""The results of a yield study: a Parquet dataset under ``DIR/results/``, one row per chip, written exactly once.

- The driver appends finished chips in small batches, each batch one file ``part-<UTC time>-<run>-<n>.parquet``,
  written atomically: to a hidden temporary name in the same directory, flushed and fsync'ed, then renamed with
  ``os.replace`` (atomic on POSIX). A reader, or a driver killed at any instant, sees whole files or nothing;
  Parquet readers skip the hidden temporaries.
- Every row carries its chip key ``(point_key, seed)`` and the ``run_id`` of the driver run that wrote it.
  ``read_results`` keeps the first row of every key in file order (files are named by time) and reports any
  later duplicate: the second guard after the driver's own rule of submitting only chips not yet in the dataset.
- ``compact`` merges the parts into one file (written atomically before the parts are removed; a crash in
  between leaves duplicates, which reading drops).

The columns are fixed per study (``record_schema``): docs/yield.md lists them.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from calibrate.criteria import CRITERIA

from .chip import FIGURES, SE_FIGURES
from .sweep import Sweep

__all__ = ["record_schema", "write_batch", "read_results", "existing_keys", "compact", "Results", "PART_GLOB"]

PART_GLOB = "part-*.parquet"

_F = pa.float64()
_I = pa.int64()
_S = pa.string()
_B = pa.bool_()
_CODES = pa.list_(pa.int32())


def _figure_fields(prefix: str) -> list[tuple[str, pa.DataType]]:
    kinds = {"live": _I, "replicas": _I, "control_variate": _B}
    out = [(prefix + k, kinds.get(k, _F)) for k in FIGURES]
    out.append((prefix + "rate_err", _F))
    out += [(f"{prefix}se.{k}", _F) for k in SE_FIGURES]
    out.append((prefix + "replay_variance_left", _F))
    for c in CRITERIA:
        out += [(f"{prefix}{c}.figure", _S), (f"{prefix}{c}.value", _F), (f"{prefix}{c}.limit", _F),
                (f"{prefix}{c}.se", _F), (f"{prefix}{c}.met", _B), (f"{prefix}{c}.applies", _B)]
    out.append((prefix + "passed", _B))
    return out


def _sweep_type(sw: Sweep) -> pa.DataType:
    if all(isinstance(v, bool) for v in sw.values):
        return _B
    if all(isinstance(v, int) and not isinstance(v, bool) for v in sw.values):
        return _I
    if sw.numeric:
        return _F
    return _S


def record_schema(sweeps: Sequence[Sweep], oracle: bool) -> pa.Schema:
    """The columns of a study's results (``calibrate.yield_study.chip.run_chip`` records, plus ``run_id``)."""
    fields = [("point", _I), ("point_key", _S), ("seed", _I)]
    fields += [(f"sweep.{sw.key}", _sweep_type(sw)) for sw in sweeps]
    fields += [("profile", _S), ("profile_sha256", _S), ("base_profile_sha256", _S), ("eical_version", _S),
               ("controller", _S), ("budget_s", _F), ("evaluate_s", _F), ("worker", _S), ("error", _S),
               ("chip_uid", _S), ("n_neurons", _I), ("shared_knobs", _B), ("target_rate_hz", _F),
               ("stopped", _S), ("iterations", _I), ("windows", _I), ("model_time_s", _F),
               ("hardware_time_s", _F), ("calibrated", _I), ("unreachable", _I), ("dead", _I),
               ("calibration_wall_s", _F), ("replay_s", _F), ("replay_wall_s", _F), ("calibration_cpu_s", _F),
               ("replay_cpu_s", _F), ("counting_floor", _F),
               ("cv_over_floor", _F), ("codes_e", _CODES), ("codes_i", _CODES)]
    fields += _figure_fields("")
    if oracle:
        fields += [("oracle.model_time_s", _F), ("oracle.search_model_s", _F), ("oracle.unreachable", _I),
                   ("oracle.calibration_wall_s", _F), ("oracle.replay_wall_s", _F), ("oracle.counting_floor", _F),
                   ("oracle.beta_median", _F), ("oracle.gamma", _F), ("oracle.codes_e", _CODES),
                   ("oracle.codes_i", _CODES), ("oracle.cpu_s", _F), ("oracle.search_cpu_s", _F),
                   ("oracle.calibration_cpu_s", _F), ("oracle.replay_cpu_s", _F)]
        fields += _figure_fields("oracle.")
    fields += [("wall_s", _F), ("cpu_s", _F), ("warnings", _S), ("finished_utc", _S), ("run_id", _S)]
    return pa.schema(fields)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(table: pa.Table, final: Path) -> None:
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(final.parent)


def _part_name(run_id: str, tag: str) -> str:
    ts = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"part-{ts}-{run_id[:8]}-{tag}.parquet"


def write_batch(results_dir: Path, records: Sequence[dict], schema: pa.Schema, *, run_id: str, seq: int) -> Path:
    """Write finished chips as one new Parquet file, atomically; returns its path."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = [{**{n: r.get(n) for n in schema.names}, "run_id": run_id} for r in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    final = results_dir / _part_name(run_id, f"{seq:05d}")
    _write_atomic(table, final)
    return final


@dataclass
class Results:
    """The rows of a study's dataset, one per chip (``rows``), and what reading found."""

    rows: list[dict]
    files: list[Path]
    duplicates: int = 0  # rows dropped because their chip key was already read from an earlier file
    keys: set = field(default_factory=set)


def _files(results_dir: Path) -> list[Path]:
    return sorted(Path(results_dir).glob(PART_GLOB))


def read_results(results_dir: Path, schema: Optional[pa.Schema] = None) -> Results:
    """Every chip in the dataset exactly once (the first row of each ``(point_key, seed)`` in file order)."""
    files = _files(results_dir)
    rows: list[dict] = []
    keys: set = set()
    dups = 0
    for f in files:
        t = pq.read_table(f)
        if schema is not None:
            t = t.select([n for n in schema.names if n in t.column_names])
        for r in t.to_pylist():
            k = (r["point_key"], int(r["seed"]))
            if k in keys:
                dups += 1
                continue
            keys.add(k)
            rows.append(r)
    return Results(rows=rows, files=files, duplicates=dups, keys=keys)


def compact(results_dir: Path, schema: pa.Schema, *, run_id: str) -> Optional[Path]:
    """Merge the dataset's parts into one file (duplicates dropped); None when there is at most one part."""
    files = _files(results_dir)
    if len(files) <= 1:
        return None
    res = read_results(results_dir, schema)
    rows = [{n: r.get(n) for n in schema.names} for r in res.rows]
    table = pa.Table.from_pylist(rows, schema=schema)
    # A crash between this write and the removals below leaves each chip twice; read_results keeps the row of
    # the earlier file, which holds the same chip's same result.
    final = Path(results_dir) / _part_name(run_id, "compact")
    _write_atomic(table, final)
    for f in files:
        f.unlink()
    _fsync_dir(Path(results_dir))
    return final


def existing_keys(results_dir: Path) -> set:
    """Chip keys already in the dataset (only the two key columns are read)."""
    keys: set = set()
    for f in _files(results_dir):
        t = pq.read_table(f, columns=["point_key", "seed"])
        keys.update(zip(t.column("point_key").to_pylist(), (int(s) for s in t.column("seed").to_pylist())))
    return keys
