"""A calibration against the Lava backend is the calibration against numpy: same gain table, same history.

This is the library path of ``eical calibrate --backend lava --profile devboard --seed 3``: the runner and the
controller see only ``Device``, so equal measurements must give equal decisions. The model-time budget is cut to
3 s (about 4 s of Lava wall time) to keep the Lava lane fast; docs/lava.md gives the full-budget comparison.
"""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

pytest.importorskip("lava")

from calibrate.controllers import DualLoop  # noqa: E402
from calibrate.session import run_calibration  # noqa: E402
from hw_models.emulator import NumpyDevice  # noqa: E402
from hw_models.lava import LavaDevice, open_sessions  # noqa: E402
from hw_models.table import GainTable  # noqa: E402

pytestmark = pytest.mark.lava

BUDGET_MS = 3000.0


def _calibrate(cls):
    with cls("devboard", 3) as dev:
        outcome = run_calibration(dev, controller=DualLoop(budget_ms=BUDGET_MS), verify_s=0.2)
    return outcome.result, outcome.table


def test_calibration_on_lava_equals_numpy():
    ref, ref_table = _calibrate(NumpyDevice)
    lav, lav_table = _calibrate(LavaDevice)
    assert lav.identity.backend == "lava" and ref.identity.backend == "numpy"

    # the gain table: every field but its creation time
    a, b = ref_table.to_dict(), lav_table.to_dict()
    a.pop("created"), b.pop("created")
    assert a == b

    # the history: every window's kind, length, codes, spike counts and proxy readings
    assert len(ref.history) == len(lav.history) > 5
    assert ref.history.equal(lav.history)
    for k in ("spike_counts", "proxy_pa", "codes_e", "codes_i"):
        for x, y in zip(getattr(ref.history, k), getattr(lav.history, k)):
            assert np.array_equal(x, y, equal_nan=True), k
    assert ref.history.iterations == lav.history.iterations

    # and the run's summary, but for where it ran and how long it took
    sa, sb = ref.to_dict(), lav.to_dict()
    for s in (sa, sb):
        s.pop("wall_time_s")
        s["chip"].pop("backend")
    assert sa == sb
    assert open_sessions() == 0 and multiprocessing.active_children() == []


def test_eical_calibrate_backend_lava_writes_the_numpy_table_and_history(tmp_path):
    """The command itself: `eical calibrate --backend lava --profile devboard --seed 3` against `--backend numpy`."""
    from calibrate.cli import main
    from calibrate.run import History

    outs = {}
    for backend in ("numpy", "lava"):
        out = tmp_path / backend
        rc = main(["calibrate", "--backend", backend, "--profile", "devboard", "--seed", "3", "--budget",
                   str(BUDGET_MS / 1e3), "--evaluate", "0", "--diagnostics", "0", "--no-report", "--out", str(out)])
        assert rc == 0
        outs[backend] = out
    a = GainTable.load(outs["numpy"] / "table.json").to_dict()
    b = GainTable.load(outs["lava"] / "table.json").to_dict()
    a.pop("created"), b.pop("created")
    assert a == b
    assert History.load(outs["numpy"] / "history.npz").equal(History.load(outs["lava"] / "history.npz"))
    assert open_sessions() == 0 and multiprocessing.active_children() == []
