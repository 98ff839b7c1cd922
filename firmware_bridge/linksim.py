"""A gain-table flash over a link that damages frames, on a simulated clock (issue 14, docs/protocol.md section 10).

``noisy_flash`` flashes a test-chip board (the firmware core in this process, over ``transport.FaultInjector``:
bit errors, lost bytes, truncated and duplicated frames, garbage between frames, in both directions, seeded), then
looks at what the board runs and re-runs the flash on a clean link, which must finish the job.
``tests/test_fb_noise.py`` asserts on it and ``benchmarks/bench_faults.py`` prints its table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from .client import BoardClient
from .errors import BridgeError
from .firmware import nvm
from .firmware.board import Board
from .firmware.testchip import TestChip
from .flash import TableImage, flash_table
from .protocol import ClientConnection, cobs_codec
from .transport import ALL_FAULTS, BoardTransport, FaultyTransport

__all__ = ["NoiseResult", "noisy_flash", "noise_board"]


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
