"""Fault simulation of ROLLBACK (issue 13, docs/protocol.md "Rollback under faults"), on ``faultsim``'s flash.

 ROLLBACK revokes the active bank's header (nvm Rule 4). Its trials do what a user does: run ``rollback``; after a
power cut, power the board up and run it again while planned faults lie ahead. Every boot is classified ``current``
(the complete table the board ran before), ``previous`` (the complete previous table: the rollback happened),
``bricked`` or ``mixed``. After the faults the board settles, a clean re-run of the rollback must leave the previous
table across a reboot, and a flash after it (of the generation the revoked table had) must work: the revoked bank is
an ordinary inactive bank again.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

from .client import BoardClient
from .errors import BridgeError
from .faultsim import (ALL_KINDS, BAD_OUTCOMES, CampaignStats, Firmware, FaultyFlash, Scenario, TrialResult,
                       boot_board, make_scenario, random_plan, stable_seed, test_codes)
from .firmware import nvm
from .firmware.board import Board
from .firmware.testchip import TestChip
from .flash import TableImage, flash_table
from .protocol import ClientConnection, cobs_codec
from .transport import BoardTransport

__all__ = ["RollbackScenario", "ROLLBACK_OUTCOMES", "make_rollback_scenario", "rollback_scenarios",
           "run_rollback_trial", "count_rollback_ops", "rollback_every_single", "rollback_every_pair",
           "after_rollback_scenario", "rollback_random_campaign"]


@dataclass(frozen=True)
class RollbackScenario:
    """A board holding two tables, about to roll back from ``current`` to ``previous`` ((generation, codes))."""

    name: str
    chip: TestChip
    bank_size: int
    start: bytes
    current: Tuple[int, Dict[str, List[int]]]
    previous: Tuple[int, Dict[str, List[int]]]
    after: TableImage  # the table flashed after the rollback (generation previous + 1)
    after_codes: Dict[str, List[int]]

    def classify(self, board: Board) -> str:
        a = board.store.active
        ran = board.chip.codes
        if a is None:
            return "bricked"
        for label, (gen, codes) in (("current", self.current), ("previous", self.previous)):
            if a["gen"] == gen and ran == codes:
                return label
        return "mixed"


ROLLBACK_OUTCOMES = ("current", "previous", "bricked", "mixed")


def make_rollback_scenario(name: str, gens: Sequence[int], **kw) -> RollbackScenario:
    """A board that committed generations ``gens`` (the last two stay on the flash), about to roll back."""
    scn = make_scenario(name, gens, **kw)
    n = scn.chip.n
    prev_gen = gens[-2] & 0xFFFFFFFF
    after_codes = test_codes(n, 99)
    image = TableImage.from_codes(scn.image.chip_uid, scn.image.profile_sha256, after_codes, profile="mp-testchip",
                                  source=f"<{name}: after the rollback>")
    return RollbackScenario(name=name, chip=scn.chip, bank_size=scn.bank_size, start=scn.start,
                            current=scn.old, previous=(prev_gen, test_codes(n, len(gens) - 2)), after=image,
                            after_codes=after_codes)


def rollback_scenarios(**kw) -> List[RollbackScenario]:
    """Rolling back from bank B to A (generations 1, 2), from A to B (1, 2, 3), and across the generation wrap
    (0xFFFFFFFF, 0)."""
    return [make_rollback_scenario("B to A", (1, 2), **kw), make_rollback_scenario("A to B", (1, 2, 3), **kw),
            make_rollback_scenario("generation wrap", (0xFFFFFFFF, 0), **kw)]


def _rollback(board: Board, seq: int):
    from .tables import rollback

    client = BoardClient(BoardTransport(lambda: board))
    client.conn = ClientConnection(first_seq=seq)
    return rollback(client)


def run_rollback_trial(scn: RollbackScenario, plan: Mapping[int, str], *, ber: float = 0.0, seed: int = 0,
                       firmware: Firmware = Board, max_attempts: int = 8) -> TrialResult:
    """One rollback trial (the comment above): faulty attempts, settle, classify, clean re-run, a flash after."""
    from .tables import NothingToRollBack

    codec = cobs_codec()
    ff = FaultyFlash(nvm.RamFlash(len(scn.start), image=scn.start), plan, ber, seed)
    boots: List[str] = []
    errors: List[str] = []
    board = boot_board(scn, ff, firmware, codec)  # type: ignore[arg-type]
    boots.append(scn.classify(board))
    attempts = 0
    while attempts < max_attempts and (attempts == 0 or ff.pending()):
        attempts += 1
        try:
            _rollback(board, attempts)
            break
        except NothingToRollBack:
            break  # an earlier attempt went through before its power cut: nothing left to do
        except BridgeError as e:
            errors.append(type(e).__name__)
        if not ff.powered:
            board = boot_board(scn, ff, firmware, codec)  # type: ignore[arg-type]
            boots.append(scn.classify(board))
    board = boot_board(scn, ff, firmware, codec)  # type: ignore[arg-type]
    boots.append(scn.classify(board))
    outcome = next((o for o in BAD_OUTCOMES if o in boots), boots[-1])
    ff.stop_faults()
    rerun_ok, detail = True, ""
    try:
        if scn.classify(board) == "current":
            _rollback(board, 200)
        after = scn.classify(boot_board(scn, ff, firmware, codec))  # type: ignore[arg-type]
        if after != "previous":
            rerun_ok, detail = False, f"after the re-run and a reboot the board runs {after}"
        else:
            board = boot_board(scn, ff, firmware, codec)  # type: ignore[arg-type]
            client = BoardClient(BoardTransport(lambda: board))
            client.conn = ClientConnection(first_seq=201)
            flash_table(client, scn.after, diff=False)
            b2 = boot_board(scn, ff, firmware, codec)  # type: ignore[arg-type]
            a = b2.store.active
            if a is None or a["gen"] != (scn.previous[0] + 1) & 0xFFFFFFFF or b2.chip.codes != scn.after_codes:
                rerun_ok, detail = False, "the flash after the rollback did not leave its table"
    except BridgeError as e:
        rerun_ok, detail = False, f"the re-run failed: {e.line()}"
    return TrialResult(outcome=outcome, boots=boots, fired=list(ff.fired), flips=ff.flips, attempts=attempts,
                       errors=errors, rerun_ok=rerun_ok, rerun_detail=detail)


def count_rollback_ops(scn: RollbackScenario, firmware: Firmware = Board) -> int:
    """NVM operations of a clean rollback: the boot (its boot-log write) and the revoke."""
    ff = FaultyFlash(nvm.RamFlash(len(scn.start), image=scn.start))
    board = boot_board(scn, ff, firmware, cobs_codec())  # type: ignore[arg-type]
    _rollback(board, 1)
    return ff.ops


def _rollback_stats(label: str, faults: str, ber: float) -> CampaignStats:
    st = CampaignStats(label, faults, ber)
    st.counts = {o: 0 for o in ROLLBACK_OUTCOMES}
    return st


def rollback_every_single(scenarios: Sequence[RollbackScenario], kinds: Sequence[str] = ALL_KINDS, *,
                          firmware: Firmware = Board, seed: int = 0) -> CampaignStats:
    """A fault of each kind at every operation of a clean rollback (boot included), for each scenario."""
    st = _rollback_stats("rollback: every single fault", "1", 0.0)
    for scn in scenarios:
        n = count_rollback_ops(scn, firmware)
        for i in range(n):
            for kind in kinds:
                r = run_rollback_trial(scn, {i: kind}, seed=stable_seed(seed, "rb", scn.name, i, kind), firmware=firmware)
                st.add(r, f"{scn.name}: {kind} at op {i}/{n}")
    return st


def rollback_every_pair(scenarios: Sequence[RollbackScenario], kinds: Sequence[str] = ALL_KINDS, *,
                        firmware: Firmware = Board, seed: int = 0) -> CampaignStats:
    """A fault at every operation i of a clean rollback, then a second one at every operation j of the recovery
    (i < j <= i + n + 2: the reboot and the re-run), every combination of kinds, for each scenario."""
    st = _rollback_stats("rollback: every pair of faults", "2", 0.0)
    for scn in scenarios:
        n = count_rollback_ops(scn, firmware)
        for i in range(n):
            for j in range(i + 1, i + n + 3):
                for ki in kinds:
                    for kj in kinds:
                        r = run_rollback_trial(scn, {i: ki, j: kj}, seed=stable_seed(seed, "rb", scn.name, i, j, ki, kj),
                                               firmware=firmware)
                        st.add(r, f"{scn.name}: {ki} at op {i}, {kj} at op {j} (n={n})")
    return st


def after_rollback_scenario(**kw) -> Scenario:
    """A flash scenario whose board rolled back (generations 1, 2, then a rollback to 1): bank B holds a revoked
    header over generation 2's payload, and the flash writes the next generation 2 there."""
    scn = make_scenario("after a rollback", (1, 2), **kw)
    mem = nvm.RamFlash(len(scn.start), image=scn.start)
    board = Board(scn.chip, mem, bank_size=scn.bank_size)
    if board.store.revoke_active() is None:
        raise RuntimeError("after_rollback_scenario: the rollback left no table")
    old = make_scenario("x", (1,), **kw).old  # generation 1's codes, as the "one table" board has them
    n = scn.chip.n
    new_codes = test_codes(n, 7)
    image = TableImage.from_codes(scn.image.chip_uid, scn.image.profile_sha256, new_codes, profile="mp-testchip",
                                  source="<after a rollback gen 2>")
    return Scenario(name="after a rollback", chip=scn.chip, bank_size=scn.bank_size, chunk=scn.chunk,
                    start=bytes(mem.mem), old=old, new_gen=2, new_codes=new_codes, image=image, older=())


def rollback_random_campaign(scenarios: Sequence[RollbackScenario], trials: int, *, faults: Sequence[int] = (1, 2, 3),
                             ber: float = 0.0, kinds: Sequence[str] = ALL_KINDS, firmware: Firmware = Board,
                             seed: int = 0) -> CampaignStats:
    """``trials`` seeded random rollback trials (as ``random_campaign``: 1-3 faults of any kind, each within the
    recovery from the previous one), with bit flips at ``ber``."""
    st = _rollback_stats("rollback: random", "-".join(str(f) for f in sorted(set(faults))), ber)
    n_ops = {scn.name: count_rollback_ops(scn, firmware) + 2 for scn in scenarios}  # + the recovery's boot and write
    for t in range(trials):
        rng = random.Random(stable_seed(seed, "rb-trial", t, ber))
        scn = rng.choice(list(scenarios))
        plan = random_plan(rng, n_ops[scn.name], rng.choice(list(faults)), kinds)
        r = run_rollback_trial(scn, plan, ber=ber, seed=rng.getrandbits(32), firmware=firmware)
        st.add(r, f"trial {t} ({scn.name}, plan {plan}, ber {ber:g})")
    return st
