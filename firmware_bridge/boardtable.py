"""A board's tables as ``table.json``: the flashed one (from its NVM), or the codes it runs now (RAM, e.g. what
its on-board tracker found) as a table the user may flash.

``read_board_table(client)`` is what ``eical read-table --port P`` saves; ``read_board_table(client, tracked=True)``
is ``eical read-table --port P --tracked``: the same table (identity, knobs, tracker section) with the codes from
the board's RAM. Both are ordinary format-1/2 gain tables (hw_models/table.py) that ``eical flash`` accepts; the
board stores no targets, metrics or calibration settings, so those fields say where the table came from instead.
"""
from __future__ import annotations

import datetime as _dt
from typing import Optional

from hw_models.table import GainTable, KnobTable, check_tracker

from .client import BoardClient, TrackerStatus
from .errors import BridgeError
from .flash import tracker_from_firmware

__all__ = ["read_board_table"]


def read_board_table(client: BoardClient, *, tracked: bool = False) -> tuple[GainTable, Optional[TrackerStatus]]:
    """The board's flashed table as a ``GainTable``, or with ``tracked`` the codes it runs now in its place; and
    the tracker's status when ``tracked`` (None otherwise).

    With ``tracked`` the board must have a table with a tracker section and its tracker must have run since boot
    (else there is nothing tracked to save: BridgeError)."""
    h = client.hello()
    codes, tracker, where = client.active_table()
    status = None
    source = {"read_from": "board NVM", "board_uid": h.uid, "active": where}
    if tracked:
        status = client.track_status()
        if tracker is None:
            raise BridgeError(f"board {h.uid}'s active table has no tracker section: nothing was tracked",
                              board_table=h.table_desc())
        if status.windows == 0:
            raise BridgeError(f"the tracker of board {h.uid} has not run since boot ({status.why}): its RAM codes "
                              "are the flashed table's", board_table=h.table_desc())
        codes = client.read_ram_codes()
        source = {"read_from": "board RAM (on-board tracker)", "board_uid": h.uid, "flashed": where,
                  "tracker": {"running": status.running, "windows": status.windows, "tracked_s": status.tracked_s,
                              "temperature_k": status.temperature_k, "frozen_groups": status.frozen,
                              "at_band": status.at_band}}
    knobs = {k.name: KnobTable(k.sharing, k.bits, [int(c) for c in codes[k.name]]) for k in h.knobs}
    section = None
    if tracker is not None:
        section = check_tracker(tracker_from_firmware(tracker), knobs, f"board {h.uid}")
    targets = {"rate_hz": section["rate_hz"], "proxy_pa": 0.0} if section else {}
    table = GainTable(chip_uid=h.uid, profile=h.profile, profile_sha256=h.profile_sha256, knobs=knobs, seed=None,
                      targets=targets, metrics={},
                      controller={"name": "on-board-tracker" if tracked else "board-nvm", "settings": source},
                      created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      eical_version=_eical_version(), tracker=section)
    return table, status


def _eical_version() -> str:
    try:
        from importlib.metadata import version

        return version("eical")
    except Exception:
        return "0+unknown"

