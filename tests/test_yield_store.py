"""Yield studies: the Parquet dataset (atomic batches, exactly once on read, compaction), yield.json and the
report, from synthetic records (no chip is simulated)."""
import json

import pyarrow.parquet as pq
import pytest

from calibrate.criteria import CRITERIA
from calibrate.yield_study import Study, parse_sweep
from calibrate.yield_study.report import write_report
from calibrate.yield_study.store import compact, existing_keys, read_results, record_schema, write_batch
from calibrate.yield_study.summary import summarise, write_summary
from calibrate.yield_study.sweep import point_key
from hw_models.profile import load_profile


def _record(point: int, pk: str, seed: int, values: dict, passed: bool, cv: float = 0.04, oracle: bool = False):
    r = {"point": point, "point_key": pk, "seed": seed, **{f"sweep.{k}": v for k, v in values.items()},
         "profile": "devboard", "controller": "dual-loop", "rate_cv_deconvolved": cv, "rate_err": -0.01,
         "balance_p95": 0.03, "model_time_s": 90.0, "wall_s": 12.0, "live": 32, "codes_e": [64] * 32,
         "codes_i": [64] * 32, "passed": passed, "error": None}
    for c, lim in (("rate_cv", 0.05), ("balance_p95", 0.05), ("rate_err", 0.03)):
        r.update({f"{c}.figure": c, f"{c}.value": cv if c == "rate_cv" else 0.01, f"{c}.limit": lim,
                  f"{c}.se": 0.002, f"{c}.met": passed or c != "rate_cv", f"{c}.applies": True})
    if oracle:
        r.update({"oracle.passed": True, "oracle.rate_cv_deconvolved": cv * 0.9, "oracle.rate_err": 0.0})
        for c in CRITERIA:
            r.update({f"oracle.{c}.met": True, f"oracle.{c}.applies": True, f"oracle.{c}.se": 0.001})
    return r


@pytest.fixture(scope="module")
def study2d():
    prof = load_profile("devboard")
    sweeps = [parse_sweep("knobs.bits=6,8", prof), parse_sweep("mismatch.scale=0.5,1,2", prof)]
    return Study(profile=prof, chips=4, sweeps=sweeps, evaluate_s=10.0, oracle=True)


def _rows(study):
    rows = []
    for i, (vals, _) in enumerate(study.points()):
        for s in study.seeds:
            rows.append(_record(i, point_key(vals), s, vals, passed=(s + i) % 3 != 0, cv=0.03 + 0.01 * (s % 3),
                                oracle=study.oracle))
    return rows


def test_batches_are_read_back_exactly_once(tmp_path, study2d):
    schema = record_schema(study2d.sweeps, True)
    rows = _rows(study2d)
    d = tmp_path / "results"
    write_batch(d, rows[:10], schema, run_id="a" * 32, seq=0)
    write_batch(d, rows[10:], schema, run_id="a" * 32, seq=1)
    # a second guard: the same chips written again by another run (e.g. two drivers) are dropped on read
    write_batch(d, rows[5:15], schema, run_id="b" * 32, seq=0)
    (d / ".part-x.parquet.1234.tmp").write_bytes(b"half a file")  # a driver killed mid-write leaves this
    res = read_results(d, schema)
    assert len(res.rows) == len(rows) == 24 and res.duplicates == 10
    assert len({(r["point_key"], r["seed"]) for r in res.rows}) == 24
    # the first-written row wins
    assert all(r["run_id"] == "a" * 32 for r in res.rows)
    assert existing_keys(d) == {(r["point_key"], r["seed"]) for r in rows}
    one = next(r for r in res.rows if r["seed"] == 2 and r["point"] == 3)
    assert one["sweep.knobs.bits"] == 8 and one["sweep.mismatch.scale"] == 0.5 and one["codes_e"] == [64] * 32
    merged = compact(d, schema, run_id="c" * 32)
    assert merged is not None and sorted(p.name for p in d.glob("part-*.parquet")) == [merged.name]
    assert pq.read_table(merged).num_rows == 24
    again = read_results(d, schema)
    assert again.duplicates == 0 and len(again.rows) == 24


def test_schema_types_follow_the_sweeps(study2d):
    schema = record_schema(study2d.sweeps, oracle=False)
    assert str(schema.field("sweep.knobs.bits").type) == "int64"
    assert str(schema.field("sweep.mismatch.scale").type) == "double"
    assert "oracle.passed" not in schema.names and "rate_cv.met" in schema.names
    prof = load_profile("devboard")
    s = record_schema([parse_sweep("observe.proxy_channels=all,one_per_core", prof)], oracle=True)
    assert str(s.field("sweep.observe.proxy_channels").type) == "string" and "oracle.passed" in s.names


def test_yield_json_and_report_from_a_2d_grid(tmp_path, study2d):
    rows = _rows(study2d)
    rows[0] = {**rows[0], "error": "ValueError: boom", "passed": False}
    del rows[-1]  # one chip missing
    info = {"run_id": "x", "computed": len(rows), "already_done": 0, "not_run": 0, "wall_s": 10.0, "workers": 2,
            "chips_per_hour_per_worker": 100.0, "duplicates_dropped": 0, "chips_in_dataset_not_requested": 0}
    summary = summarise(study2d, rows, info)
    write_summary(tmp_path, summary)
    doc = json.loads((tmp_path / "yield.json").read_text())
    assert len(doc["points"]) == 6 and not doc["complete"]
    p0 = doc["points"][0]
    assert p0["values"] == {"knobs.bits": 6, "mismatch.scale": 0.5}
    assert p0["errors"] == 1 and p0["chips"] == 3 and p0["error_examples"] == ["ValueError: boom"]
    assert doc["points"][-1]["missing"] == 1
    for p in doc["points"]:
        assert p["passed"] == sum(1 for r in rows if r["point"] == p["point"] and r["passed"] and not r["error"])
        lo, hi = p["ci95"]
        assert lo <= p["yield"] <= hi
        assert set(p["failures"]) == set(CRITERIA) and p["failures"]["rate_cv"] == p["chips"] - p["passed"]
        assert p["oracle"]["yield"] == 1.0
        assert p["medians"]["rate_cv_deconvolved"] > 0
    path = write_report(tmp_path, study2d, rows, summary)
    text = path.read_text()
    for name in ("yield_knobs_bits", "yield_mismatch_scale", "yield_heatmap", "failures", "distributions",
                 "controller_vs_oracle"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert f'src="{name}.png"' in text
    assert "Some chips are missing" in text and "raised an error" in text


def test_report_without_sweeps(tmp_path):
    prof = load_profile("devboard")
    st = Study(profile=prof, chips=5, evaluate_s=10.0)
    rows = [_record(0, point_key({}), s, {}, passed=s < 4) for s in st.seeds]
    info = {"run_id": "x", "computed": 5, "already_done": 0, "not_run": 0, "wall_s": 1.0, "workers": 1,
            "chips_per_hour_per_worker": None, "duplicates_dropped": 0, "chips_in_dataset_not_requested": 0}
    summary = summarise(st, rows, info)
    assert summary["total"]["passed"] == 3 and summary["complete"]
    write_report(tmp_path, st, rows, summary)
    assert (tmp_path / "yield.png").is_file() and (tmp_path / "yield.svg").is_file()
