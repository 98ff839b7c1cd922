"""Host-side tracking (``eical track``; calibrate.tracking): the board estimator is the on-board tracker's own code,
so a host-side run and a board running alone give the same codes; a table without a tracker section tracks with
the dual loop, and asking it for the board estimator is one clear line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibrate.cli import main
from calibrate.tracking import Ramp, TrackerUnfit, run_tracking
from hw_models.table import GainTable

RAMP = Ramp(300.0, 302.0, 24.0)  # the bench's ramp (10 K in 120 s), its first checkpoint interval


@pytest.fixture(scope="module")
def table():
    from calibrate.session import calibrate_chip

    t = calibrate_chip("devboard", 2, evaluate_s=0.0).table
    assert t.tracker is not None
    return t


def _format_1(table: GainTable) -> GainTable:
    d = table.to_dict()
    d.pop("tracker")
    d["schema"]["version"] = 1
    return GainTable.from_dict(d)


def test_the_board_estimator_on_the_host_gives_the_boards_codes_bit_for_bit(table):
    from calibrate.onboard import run_onboard_tracking

    board = run_onboard_tracking("devboard", 2, table, RAMP, checkpoints=3, replay_s=4.0)
    host = run_tracking("devboard", 2, table, RAMP, checkpoints=3, replay_s=4.0)
    assert host.estimator == "board" and host.windows == board.status.windows == 9
    for b, h in zip(board.checkpoints, host.checkpoints):
        assert h.model_time_s == b.model_time_s
        # the same codes replayed on the same inputs: the same true figures, to the last bit
        assert h.tracked.rate_mean_hz == b.onboard.rate_mean_hz and h.tracked.balance_p95 == b.onboard.balance_p95
    for k, v in host.final_codes.items():
        assert list(v) == list(board.tracked_table.knobs[k].codes)
    assert not np.array_equal(host.final_codes["gain_e"], table.codes()["gain_e"])  # it did track


def test_a_format_1_table_tracks_with_the_dual_loop_and_cannot_ask_for_the_board_estimator(table):
    old = _format_1(table)
    res = run_tracking("devboard", 2, old, Ramp(300.0, 301.0, 10.0), checkpoints=2, replay_s=2.0)
    assert res.estimator == "dual-loop" and res.to_dict()["estimator"] == "dual-loop"
    assert not np.array_equal(res.final_codes["gain_e"], old.codes()["gain_e"])
    with pytest.raises(TrackerUnfit, match="no tracker section"):
        run_tracking("devboard", 2, old, Ramp(300.0, 301.0, 10.0), estimator="board")
    with pytest.raises(ValueError, match="unknown estimator"):
        run_tracking("devboard", 2, table, Ramp(300.0, 301.0, 10.0), estimator="kalman")


def test_track_names_its_estimator_and_refuses_a_board_estimator_without_a_section(table, tmp_path, capsys):
    table.save(tmp_path / "t2.json")
    _format_1(table).save(tmp_path / "t1.json")
    rc = main(["track", "--profile", "devboard", "--seed", "2", "--table", str(tmp_path / "t2.json"),
               "--temperature-ramp", "300:301:5", "--checkpoints", "2", "--replay", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "(board estimator, 2 windows)" in out
    rc = main(["track", "--profile", "devboard", "--seed", "2", "--table", str(tmp_path / "t2.json"),
               "--temperature-ramp", "300:301:5", "--checkpoints", "2", "--replay", "2", "--estimator",
               "dual-loop", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["estimator"] == "dual-loop"
    rc = main(["track", "--profile", "devboard", "--seed", "2", "--table", str(tmp_path / "t1.json"),
               "--temperature-ramp", "300:301:5", "--estimator", "board"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no tracker section" in err[0] and "t1.json" in err[0]
    rc = main(["track", "--port", "/dev/null", "--on-board", "status", "--estimator", "board"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--estimator" in err[0]
