"""Fault simulation of the NVM commit, in the manner of a bootloader simulator (MCUboot's ``sim``).

The firmware core (``firmware.board.Board`` over ``firmware.nvm.Store``, the code MicroPython runs) runs in this
process on a simulated NOR flash, ``FaultyFlash``, that counts its operations (erases and programs; reads are
free) and breaks chosen ones. Fault kinds (docs/protocol.md, "Faults the NVM is tested against"):

- ``cut-torn``: the power goes *during* the operation. A torn erase leaves a random prefix of the sector erased
  and the rest partly erased (the old bits with random ones set); a torn program stores a random prefix of the
  data and part of the next byte's bits.
- ``cut-after``: the operation completes, then the power goes.
- ``fail``: the operation does part of its work (as a torn one) and reports failure (``OSError``: the board
  answers E_NVM).
- ``lost``: the same, but reported as success (a write the flash silently dropped).
- bit flips at a byte error rate (``ber``): every byte an operation stores has that chance of one flipped bit (a
  weak cell, a program disturb): a bit that should be cleared stays set, or one that should stay set is cleared.

A *trial* (``run_trial``) starts from a ``Scenario`` (the tables a board holds and the table to flash), plans
faults at global operation indices (counted from the trial's first boot, across reboots), and does what a user
or a script would: run ``flash_table``; after a power cut, power the board up again; re-run the flash while
planned faults lie ahead. Every boot is classified:

- ``old`` / ``new``: the board runs the complete old / new table (codes *and* generation);
- ``bricked``: it runs no table although it had one;
- ``mixed``: anything else (part old part new, a torn table, an older generation).

After the faults the board is power-cycled until a boot completes (it "settles"); then, with faults off, the
flash is re-run once more and must leave the new table, across another reboot ("a re-run finishes the job").

``every_single``, ``every_pair`` and ``random_campaign`` run the three test plans of issue 14 and return
``CampaignStats``; ``noisy_flash`` flashes over a link that damages frames (``transport.FaultInjector``: bit
errors, lost bytes, truncated and duplicated frames, garbage between frames) on a simulated clock; ``tests/test_fb_multifault.py`` asserts on them and ``benchmarks/bench_faults.py`` prints them.
Which firmware runs is a parameter (a ``Board`` class): the tests pass deliberately broken ones too
(``tests/fault_controls.py``), to show that these plans do catch a broken commit.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .client import BoardClient
from .errors import BridgeError, LinkLost
from .firmware import nvm
from .firmware.board import Board
from .firmware.testchip import TestChip
from .flash import TableImage, flash_table
from .protocol import ClientConnection, cobs_codec
from .transport import ALL_FAULTS, BoardTransport, FaultyTransport

__all__ = [
    "CUT_TORN", "CUT_AFTER", "FAIL", "LOST", "CUTS", "ALL_KINDS", "OUTCOMES",
    "FaultyFlash", "Scenario", "make_scenario", "standard_scenarios", "TrialResult", "CampaignStats",
    "run_trial", "count_ops", "every_single", "every_pair", "random_plan", "random_campaign",
    "NoiseResult", "noisy_flash", "noise_board",
]

CUT_TORN = "cut-torn"
CUT_AFTER = "cut-after"
FAIL = "fail"
LOST = "lost"
CUTS = (CUT_TORN, CUT_AFTER)
ALL_KINDS = (CUT_TORN, CUT_AFTER, FAIL, LOST)
OUTCOMES = ("old", "new", "bricked", "mixed")
_BAD = ("bricked", "mixed")

MAX_BOOTS = 16  # power-ups per settle: more would mean the plan keeps cutting the boot (it cannot: faults are few)


class FaultyFlash:
    """NOR flash in RAM that counts operations and injects the planned faults (see the module docstring).

    Parameters
    ----------
    mem
        The ``nvm.RamFlash`` holding the bytes (it survives power cuts, as flash does).
    plan
        Operation index -> fault kind. Indices count erases and programs from 0 over the flash's whole life
        here, across reboots.
    ber
        Byte error rate of the stored bytes (bit flips), 0 for none.
    seed
        Seeds torn-write shapes and bit flips.
    """

    def __init__(self, mem: nvm.RamFlash, plan: Optional[Mapping[int, str]] = None, ber: float = 0.0,
                 seed: int = 0):
        if not 0.0 <= ber < 1.0:
            raise ValueError(f"byte error rate must lie in [0, 1), got {ber!r}")
        bad = [k for k in (plan or {}).values() if k not in ALL_KINDS]
        if bad:
            raise ValueError(f"unknown fault kind {bad[0]!r}; expected one of {', '.join(ALL_KINDS)}")
        self.mem = mem
        self.size = mem.size
        self.sector_size = mem.sector_size
        self.plan = dict(plan or {})
        self.ber = ber
        self.rng = random.Random(seed)
        self.ops = 0
        self.fired: List[Tuple[int, str, str, int]] = []  # (op, kind, "erase"|"program", address)
        self.flips = 0
        self.powered = True
        self.injecting = True
        self._gap = self._draw()

    # -- what the firmware calls --

    def read(self, addr: int, n: int) -> bytes:
        if not self.powered:
            raise nvm.PowerLoss()
        return bytes(self.mem.mem[addr:addr + n])

    def erase(self, addr: int) -> None:
        self._store(addr, b"\xff" * self.sector_size, None)

    def program(self, addr: int, data: bytes) -> None:
        self._store(addr, None, bytes(data))

    # -- the harness --

    def power_on(self) -> None:
        self.powered = True

    def stop_faults(self) -> None:
        """From now on every operation works (the clean re-run)."""
        self.injecting = False

    def pending(self) -> bool:
        """Planned faults not reached yet."""
        return self.injecting and any(k >= self.ops for k in self.plan)

    def _draw(self) -> float:
        if self.ber == 0.0:
            return math.inf
        return math.floor(math.log1p(-self.rng.random()) / math.log1p(-self.ber))

    def _store(self, addr: int, erased: Optional[bytes], data: Optional[bytes]) -> None:
        if not self.powered:
            raise nvm.PowerLoss()
        k = self.ops
        self.ops += 1
        n = len(erased) if erased is not None else len(data)
        old = bytes(self.mem.mem[addr:addr + n])
        new = erased if erased is not None else nvm.and_bytes(old, data)
        kind = self.plan.get(k) if self.injecting else None
        if kind in (CUT_TORN, FAIL, LOST) and n:
            new = self._torn_erase(old) if erased is not None else self._torn_program(old, new, data)
        if self.injecting and self.ber:
            new = self._flip(new)
        self.mem.mem[addr:addr + n] = new
        if kind is not None:
            self.fired.append((k, kind, "erase" if erased is not None else "program", addr))
            if kind in CUTS:
                self.powered = False
                raise nvm.PowerLoss()
            if kind == FAIL:
                raise OSError("simulated NVM failure at operation %d (address 0x%x)" % (k, addr))

    def _torn_erase(self, old: bytes) -> bytes:
        """A random prefix erased; the rest partly erased (erasing sets bits: old OR random)."""
        n = len(old)
        k = self.rng.randrange(n)
        rest = int.from_bytes(old[k:], "little") | self.rng.getrandbits(8 * (n - k))
        return b"\xff" * k + rest.to_bytes(n - k, "little")

    def _torn_program(self, old: bytes, new: bytes, data: bytes) -> bytes:
        """A random prefix programmed, the next byte partly (some of its bits still set), the rest untouched."""
        k = self.rng.randrange(len(new))
        partial = old[k] & (data[k] | self.rng.getrandbits(8))
        return new[:k] + bytes([partial]) + old[k + 1:]

    def _flip(self, buf: bytes) -> bytes:
        n = len(buf)
        if self._gap >= n:
            self._gap -= n
            return buf
        out = bytearray(buf)
        pos = int(self._gap)
        while pos < n:
            out[pos] ^= 1 << self.rng.randrange(8)
            self.flips += 1
            pos += 1 + int(self._draw())
        self._gap = pos - n
        return bytes(out)


# -- scenarios ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What a board holds before a trial, and the table the trial flashes.

    Attributes
    ----------
    start
        The flash image before the trial (tables already committed by the firmware's own store).
    old
        (generation, codes) of the table the board runs before the trial; None on an empty board.
    new_gen, new_codes, image
        The table being flashed: its generation, its codes per knob and the host's ``TableImage``.
    older
        Generations still on the flash besides the old one (booting one of them is a roll-back: "mixed").
    """

    name: str
    chip: TestChip
    bank_size: int
    chunk: int
    start: bytes
    old: Optional[Tuple[int, Dict[str, List[int]]]]
    new_gen: int
    new_codes: Dict[str, List[int]]
    image: TableImage
    older: Tuple[int, ...] = ()

    def classify(self, board: Board) -> str:
        """``old`` | ``new`` | ``bricked`` | ``mixed`` for a freshly booted board (what its chip runs now)."""
        a = board.store.active
        ran = board.chip.codes
        if a is None:
            return "old" if self.old is None else "bricked"
        if a["gen"] == self.new_gen and ran == self.new_codes:
            return "new"
        if self.old is not None and a["gen"] == self.old[0] and ran == self.old[1]:
            return "old"
        return "mixed"


def _codes(n: int, k: int) -> Dict[str, List[int]]:
    """The k-th distinct table of an n-neuron test chip (no two tables share a code vector)."""
    return {"gain_e": [(37 * k + 5 + i) % 256 for i in range(n)],
            "gain_i": [(11 * k + 3 + 3 * i) % 256 for i in range(n)]}


def make_scenario(name: str, gens: Sequence[int], *, n_neurons: int = 2048, bank_size: int = 16 * 1024,
                  chunk: int = 1024, uid: str = "faultsim-0001") -> Scenario:
    """A board that has committed tables of generations ``gens`` (in that order; the last is active), about to
    be flashed with the next generation. The default table (2048 neurons, two 8-bit knobs: 4128 B of payload)
    spans two sectors and five 1 KiB data frames."""
    chip = TestChip(n_neurons, uid)
    mem = nvm.RamFlash(nvm.flash_size(bank_size))
    store = Board(chip, mem, bank_size=bank_size).store
    specs = store.knob_specs
    tables = []
    for i, gen in enumerate(gens):
        codes = _codes(n_neurons, i)
        payload = nvm.encode_table([{"name": s["name"], "sharing": s["sharing"], "bits": s["bits"],
                                     "codes": codes[s["name"]]} for s in specs])
        bank = store.target()
        store.erase_for(bank, len(payload))
        store.write(bank, 0, payload)
        if store.commit(bank, gen & 0xFFFFFFFF, len(payload), nvm.crc32(payload)) is None:
            raise RuntimeError("scenario %s: committing generation %d failed" % (name, gen))
        tables.append((gen & 0xFFFFFFFF, codes))
    new_codes = _codes(n_neurons, len(gens))
    new_gen = 1 if not gens else (gens[-1] + 1) & 0xFFFFFFFF
    image = TableImage.from_codes(uid, chip.info()["profile_sha256"], new_codes, profile="mp-testchip",
                                  source=f"<{name} gen {new_gen}>")
    return Scenario(name=name, chip=chip, bank_size=bank_size, chunk=chunk, start=bytes(mem.mem),
                    old=tables[-1] if tables else None, new_gen=new_gen, new_codes=new_codes, image=image,
                    older=tuple(g for g, _ in tables[:-1]))


def standard_scenarios(**kw) -> List[Scenario]:
    """The four start states the tests and benchmarks use: an empty board, one table, two tables (the new one
    overwrites the older), and two tables at the generation wrap (0xFFFFFFFE, 0xFFFFFFFF -> 0)."""
    return [make_scenario("empty", (), **kw), make_scenario("one table", (1,), **kw),
            make_scenario("two tables", (1, 2), **kw),
            make_scenario("generation wrap", (0xFFFFFFFE, 0xFFFFFFFF), **kw)]


# -- one trial ------------------------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    """What one trial did.

    Attributes
    ----------
    outcome
        ``bricked`` or ``mixed`` if any boot of the trial was; else the settled boot's ``old`` or ``new``.
    boots
        The classification of every boot, in order (the settled one last, before the clean re-run).
    fired
        The faults that fired: (operation, kind, "erase"|"program", address).
    rerun_ok, rerun_detail
        Whether the clean re-run of the flash left the new table across a reboot; what went wrong if not.
    """

    outcome: str
    boots: List[str]
    fired: List[Tuple[int, str, str, int]]
    flips: int
    attempts: int
    errors: List[str]
    rerun_ok: bool
    rerun_detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome not in _BAD and self.rerun_ok


Firmware = Callable[..., Board]


def _boot(scn: Scenario, ff: FaultyFlash, firmware: Firmware, codec) -> Board:
    """Power up until a boot completes (a planned cut may hit the boot-log write)."""
    for _ in range(MAX_BOOTS):
        ff.power_on()
        try:
            return firmware(scn.chip, ff, bank_size=scn.bank_size, encode=codec[0], decode=codec[1])
        except nvm.PowerLoss:
            continue
    raise RuntimeError("the board did not finish booting in %d power-ups" % MAX_BOOTS)


def _flash(scn: Scenario, board: Board, seq: int, diff: bool) -> None:
    client = BoardClient(BoardTransport(lambda: board))
    client.conn = ClientConnection(first_seq=seq)  # reproducible frames
    flash_table(client, scn.image, chunk=scn.chunk, min_chunk=scn.chunk, diff=diff)


def run_trial(scn: Scenario, plan: Mapping[int, str], *, ber: float = 0.0, seed: int = 0,
              firmware: Firmware = Board, max_attempts: int = 8) -> TrialResult:
    """One trial (module docstring): faulty flash attempts, settle, classify, clean re-run."""
    codec = cobs_codec()
    ff = FaultyFlash(nvm.RamFlash(len(scn.start), image=scn.start), plan, ber, seed)
    boots: List[str] = []
    errors: List[str] = []
    board = _boot(scn, ff, firmware, codec)
    boots.append(scn.classify(board))
    attempts = 0
    while attempts < max_attempts and (attempts == 0 or ff.pending()):
        attempts += 1
        try:
            _flash(scn, board, attempts, diff=False)
            break  # flashed: faults planned further on can only hit the settling boots
        except BridgeError as e:
            errors.append(type(e).__name__)
        if not ff.powered:
            board = _boot(scn, ff, firmware, codec)
            boots.append(scn.classify(board))
    # Settle: power-cycle until a boot completes, and look at what the board runs.
    board = _boot(scn, ff, firmware, codec)
    boots.append(scn.classify(board))
    outcome = next((o for o in _BAD if o in boots), boots[-1])
    # The clean re-run must finish the job, and the new table must survive a reboot.
    ff.stop_faults()
    rerun_ok, detail = True, ""
    try:
        _flash(scn, board, 200, diff=False)  # the diff read touches no NVM; skipping it halves the re-run
        after = scn.classify(_boot(scn, ff, firmware, codec))
        if after != "new":
            rerun_ok, detail = False, f"after the re-run and a reboot the board runs {after}"
    except BridgeError as e:
        rerun_ok, detail = False, f"the re-run failed: {e.line()}"
    return TrialResult(outcome=outcome, boots=boots, fired=list(ff.fired), flips=ff.flips, attempts=attempts,
                       errors=errors, rerun_ok=rerun_ok, rerun_detail=detail)


def count_ops(scn: Scenario, firmware: Firmware = Board) -> int:
    """NVM operations of a clean flash: the boot (its boot-log write) and one flash session."""
    ff = FaultyFlash(nvm.RamFlash(len(scn.start), image=scn.start))
    board = _boot(scn, ff, firmware, cobs_codec())
    _flash(scn, board, 1, diff=False)
    return ff.ops


# -- campaigns ------------------------------------------------------------------------------------------------------


@dataclass
class CampaignStats:
    """Counts over many trials (one row of the fault table)."""

    label: str
    faults_per_trial: str
    ber: float
    trials: int = 0
    counts: Dict[str, int] = field(default_factory=lambda: {o: 0 for o in OUTCOMES})
    rerun_failed: int = 0
    faults_fired: int = 0
    flips: int = 0
    failures: List[str] = field(default_factory=list)  # the first few failing trials, for messages

    def add(self, r: TrialResult, what: str) -> None:
        self.trials += 1
        self.counts[r.outcome] += 1
        self.faults_fired += len(r.fired)
        self.flips += r.flips
        if not r.rerun_ok:
            self.rerun_failed += 1
        if not r.ok and len(self.failures) < 5:
            self.failures.append(f"{what}: boots {r.boots}, fired {r.fired}, {r.rerun_detail}".rstrip(", "))

    @property
    def bad(self) -> int:
        """Trials where a boot bricked or ran a mixed table, or the re-run did not finish the job."""
        return self.counts["bricked"] + self.counts["mixed"] + self.rerun_failed

    def merge(self, other: "CampaignStats") -> None:
        self.trials += other.trials
        for o in OUTCOMES:
            self.counts[o] += other.counts[o]
        self.rerun_failed += other.rerun_failed
        self.faults_fired += other.faults_fired
        self.flips += other.flips
        self.failures += other.failures[:max(0, 5 - len(self.failures))]

    def row(self) -> dict:
        return {"plan": self.label, "trials": self.trials, "faults/trial": self.faults_per_trial,
                "byte error rate": self.ber, **self.counts, "re-run failed": self.rerun_failed}


def every_single(scenarios: Sequence[Scenario], kinds: Sequence[str] = CUTS, *, firmware: Firmware = Board,
                 seed: int = 0, label: str = "every single cut") -> CampaignStats:
    """A fault of each kind at every operation of a clean flash (boot included), for each scenario."""
    st = CampaignStats(label, "1", 0.0)
    for scn in scenarios:
        n = count_ops(scn, firmware)
        for i in range(n):
            for kind in kinds:
                r = run_trial(scn, {i: kind}, seed=_seed(seed, scn.name, i, kind), firmware=firmware)
                st.add(r, f"{scn.name}: {kind} at op {i}/{n}")
    return st


def every_pair(scenarios: Sequence[Scenario], kinds: Sequence[str] = CUTS, *, firmware: Firmware = Board,
               seed: int = 0, label: str = "every pair of cuts") -> CampaignStats:
    """A cut at every operation i of a clean flash, then a second one at every operation j of the recovery
    (the reboot and the re-run of the flash: i < j <= i + n), every combination of kinds, for each scenario."""
    st = CampaignStats(label, "2", 0.0)
    for scn in scenarios:
        n = count_ops(scn, firmware)
        for i in range(n):
            for j in range(i + 1, i + n + 1):
                for ki in kinds:
                    for kj in kinds:
                        r = run_trial(scn, {i: ki, j: kj}, seed=_seed(seed, scn.name, i, j, ki, kj),
                                      firmware=firmware)
                        st.add(r, f"{scn.name}: {ki} at op {i}, {kj} at op {j} (n={n})")
    return st


def random_plan(rng: random.Random, n_ops: int, k: int, kinds: Sequence[str] = ALL_KINDS) -> Dict[int, str]:
    """``k`` faults: the first within a clean flash's ``n_ops`` operations, each next one within the ``n_ops``
    operations after the previous (so it lands in the recovery from it)."""
    plan = {}
    at = rng.randrange(n_ops)
    for _ in range(k):
        plan[at] = rng.choice(list(kinds))
        at += 1 + rng.randrange(n_ops)
    return plan


def random_campaign(scenarios: Sequence[Scenario], trials: int, *, faults: Sequence[int] = (1, 2, 3),
                    ber: float = 0.0, kinds: Sequence[str] = ALL_KINDS, firmware: Firmware = Board,
                    seed: int = 0, label: str = "random") -> CampaignStats:
    """``trials`` random trials: each picks a scenario and a number of faults from ``faults`` at random (seeded:
    trial i of seed s is the same in every run), mixing ``kinds``, with bit flips at ``ber``."""
    st = CampaignStats(label, "-".join(str(f) for f in sorted(set(faults))) if len(set(faults)) > 1
                       else str(faults[0]), ber)
    n_ops = {scn.name: count_ops(scn, firmware) for scn in scenarios}
    for t in range(trials):
        rng = random.Random(_seed(seed, "trial", t, ber))
        scn = rng.choice(list(scenarios))
        k = rng.choice(list(faults))
        plan = random_plan(rng, n_ops[scn.name], k, kinds)
        r = run_trial(scn, plan, ber=ber, seed=rng.getrandbits(32), firmware=firmware)
        st.add(r, f"trial {t} ({scn.name}, plan {plan}, ber {ber:g})")
    return st


def _seed(*parts) -> int:
    """A seed from a tuple of parts, the same in every process (str hashing is randomised; Random(str) is not)."""
    return random.Random(":".join(str(p) for p in parts)).getrandbits(64)


# -- the link under noise ---------------------------------------------------------------------------------------------


@dataclass
class NoiseResult:
    """One flash over a noisy link.

    Attributes
    ----------
    outcome
        ``flashed`` (the board runs the new table and the host read it back), ``gave up, old table`` (the board
        runs the complete old table), ``gave up, new table`` (the commit went through, the read-back was cut) or
        ``wrong`` (anything else: what the tests must never see).
    error, line
        The bridge error the flash stopped with (None when flashed; its class is the kind of failure, which
        ``eical`` maps to an exit code) and its one line ("" when flashed).
    line_names_table
        The error line names the table the board really runs.
    """

    outcome: str
    error: Optional[BridgeError]
    line: str
    line_names_table: bool
    resends: int
    timeouts: int
    attempts: int
    requests: int
    sim_seconds: float
    faults: Dict[str, int]
    rerun_ok: bool


def noise_board(n_neurons: int = 4096, uid: str = "noisy-0001", bank_size: int = 32 * 1024):
    """(flash, make_board, image(value)) for a test-chip board holding table 1 (8 KiB at 4096 neurons)."""
    chip = TestChip(n_neurons, uid)
    sha = chip.info()["profile_sha256"]
    mem = nvm.RamFlash(nvm.flash_size(bank_size))
    codec = cobs_codec()
    make = lambda: Board(chip, mem, bank_size=bank_size, encode=codec[0], decode=codec[1])  # noqa: E731

    def image(value: int) -> TableImage:
        return TableImage.from_codes(uid, sha, {"gain_e": [(value + i) % 256 for i in range(n_neurons)],
                                                "gain_i": [(3 * value + i // 5) % 256 for i in range(n_neurons)]})

    flash_table(BoardClient(BoardTransport(make)), image(1))
    return mem, make, image


def noisy_flash(rate: float, seed: int, *, kinds: Sequence[str] = ALL_FAULTS, n_neurons: int = 4096) -> NoiseResult:
    """Flash table 2 over a link damaged at byte error rate ``rate`` (both directions, seeded) on a simulated
    clock; then look at what the board runs, and re-run the flash on a clean link (it must finish the job)."""
    mem, make, image = noise_board(n_neurons)
    inner = BoardTransport(make)
    link = FaultyTransport(inner, rate, seed, kinds)
    client = BoardClient(link)
    client.conn = ClientConnection(first_seq=seed)
    error, line = None, ""
    try:
        flash_table(client, image(2))
    except BridgeError as e:
        error, line = e, e.line()
    gen = make().store.active["gen"]
    if error is None:
        outcome, names = ("flashed" if gen == 2 else "wrong"), True
    else:
        outcome = {1: "gave up, old table", 2: "gave up, new table"}.get(gen, "wrong")
        names = f"gen {gen} " in line or (gen == 1 and "nothing was written" in line)
    rerun = flash_table(BoardClient(BoardTransport(make)), image(2))
    st = client.stats
    faults = {k: link.tx.by_kind[k] + link.rx.by_kind[k] for k in link.tx.by_kind}
    return NoiseResult(outcome=outcome, error=error, line=line, line_names_table=names,
                       resends=st.resends_nak + st.resends_damaged + st.timeouts, timeouts=st.timeouts,
                       attempts=st.attempts, requests=st.requests, sim_seconds=inner.now, faults=faults,
                       rerun_ok=rerun.outcome in ("flashed", "up-to-date") and make().store.active["gen"] == 2)



# -- rollback under faults ----------------------------------------------------------------------------------------------
#
# ROLLBACK revokes the active bank's header (nvm Rule 4). Its trials do what a user does: run ``rollback``; after a
# power cut, power the board up and run it again while planned faults lie ahead. Every boot is classified
# ``current`` (the complete table the board ran before), ``previous`` (the complete previous table: the rollback
# happened), ``bricked`` or ``mixed``. After the faults the board settles, a clean re-run of the rollback must
# leave the previous table across a reboot, and a flash after it (of the generation the revoked table had) must
# work: the revoked bank is an ordinary inactive bank again.


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
    after_codes = _codes(n, 99)
    image = TableImage.from_codes(scn.image.chip_uid, scn.image.profile_sha256, after_codes, profile="mp-testchip",
                                  source=f"<{name}: after the rollback>")
    return RollbackScenario(name=name, chip=scn.chip, bank_size=scn.bank_size, start=scn.start,
                            current=scn.old, previous=(prev_gen, _codes(n, len(gens) - 2)), after=image,
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
    board = _boot(scn, ff, firmware, codec)  # type: ignore[arg-type]
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
            board = _boot(scn, ff, firmware, codec)  # type: ignore[arg-type]
            boots.append(scn.classify(board))
    board = _boot(scn, ff, firmware, codec)  # type: ignore[arg-type]
    boots.append(scn.classify(board))
    outcome = next((o for o in _BAD if o in boots), boots[-1])
    ff.stop_faults()
    rerun_ok, detail = True, ""
    try:
        if scn.classify(board) == "current":
            _rollback(board, 200)
        after = scn.classify(_boot(scn, ff, firmware, codec))  # type: ignore[arg-type]
        if after != "previous":
            rerun_ok, detail = False, f"after the re-run and a reboot the board runs {after}"
        else:
            board = _boot(scn, ff, firmware, codec)  # type: ignore[arg-type]
            client = BoardClient(BoardTransport(lambda: board))
            client.conn = ClientConnection(first_seq=201)
            flash_table(client, scn.after, diff=False)
            b2 = _boot(scn, ff, firmware, codec)  # type: ignore[arg-type]
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
    board = _boot(scn, ff, firmware, cobs_codec())  # type: ignore[arg-type]
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
                r = run_rollback_trial(scn, {i: kind}, seed=_seed(seed, "rb", scn.name, i, kind), firmware=firmware)
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
                        r = run_rollback_trial(scn, {i: ki, j: kj}, seed=_seed(seed, "rb", scn.name, i, j, ki, kj),
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
    new_codes = _codes(n, 7)
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
        rng = random.Random(_seed(seed, "rb-trial", t, ber))
        scn = rng.choice(list(scenarios))
        plan = random_plan(rng, n_ops[scn.name], rng.choice(list(faults)), kinds)
        r = run_rollback_trial(scn, plan, ber=ber, seed=rng.getrandbits(32), firmware=firmware)
        st.add(r, f"trial {t} ({scn.name}, plan {plan}, ber {ber:g})")
    return st
