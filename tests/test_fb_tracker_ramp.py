"""The issue's experiment, once, on one chip (the benchmark runs bss2 and devboard seeds 1-3 with host-side tracking
beside it: ``make bench``, "tracker"). A devboard chip is calibrated (its table carries the tracker section), flashed
to an in-process board with the emulated chip behind it, its tracker started, and the board left alone through a
300 -> 310 K ramp over 120 s of model time."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_devboard_holds_rate_and_balance_through_a_10_kelvin_ramp_while_the_static_table_drifts_out():
    from calibrate.onboard import run_onboard_tracking
    from calibrate.session import calibrate_chip
    from calibrate.tracking import Ramp
    from firmware_bridge.flash import TableImage

    outcome = calibrate_chip("devboard", 1, evaluate_s=0.0)
    table = outcome.table
    assert table.tracker is not None and table.to_dict()["schema"]["version"] == 2
    res = run_onboard_tracking("devboard", 1, table, Ramp(300.0, 310.0, 120.0), checkpoints=6, replay_s=180.0)
    assert res.host_silent and res.frames_at_status == res.frames_at_start + 1
    assert res.nvm_unchanged and res.status.windows == 48 and res.status.frozen == 0
    on, static = res.worst("onboard"), res.worst("static")
    # measured (180 s replays, checkpoints every 24 s): on board 3.2 % and 0.039 at worst; static +48 % and 0.096.
    # The benchmark's chips show where the goal is missed (early in the ramp): docs/controller.md, "Measured"
    assert static["rate_err"] > 0.35 and static["balance_p95"] > 0.08
    assert on["rate_err"] < 0.05 and on["balance_p95"] < 0.05
    # the tracked codes are a table the user may flash
    assert TableImage.from_gain_table(res.tracked_table).tracker is not None
    assert res.tracked_table.knobs["gain_e"].codes != table.knobs["gain_e"].codes
