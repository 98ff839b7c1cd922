# Entry point of the firmware on MicroPython: the link is the board's stdin/stdout (USB CDC on a board, a pipe or
# pty under the unix port). The only I/O in the firmware lives here; everything it calls is sans-IO.
#
# On a board, main.py would do something like:
#
#     import firmware.mp_main as m
#     m.serve(lambda: Board(MyChipPort(), MyFlash()))
#
# where MyChipPort drives the real chip and MyFlash wraps the board's flash (sector erase, program, read).
# Under the unix port, tests start it as
#
#     micropython -c "import sys; sys.path.insert(0, '<dir holding firmware/>'); \
#                     import firmware.mp_main as m; m.main_testchip(64, 'mp-testchip-0001', '<nvm file>')"
#
# MicroPython subset: no typing, dataclasses, f-strings, numpy.

import sys

from . import nvm
from .board import Board
from .testchip import TestChip

READ_MAX = 4096  # bytes gathered before handing them to the board


def serve(make_board):
    """Run a board on stdin/stdout until stdin closes. ``make_board()`` boots a board (again after a RESET).

    While the board's tracker runs, a sub-window runs whenever no byte is waiting on stdin."""
    import select

    try:
        import micropython

        # A 0x03 byte in a frame must not raise KeyboardInterrupt.
        micropython.kbd_intr(-1)
    except (ImportError, AttributeError):
        pass
    rd = sys.stdin.buffer
    rd = getattr(rd, "raw", rd)  # CPython: unbuffered, so that poll() sees every byte not yet read
    wr = sys.stdout.buffer
    poll = select.poll()
    poll.register(rd, select.POLLIN)
    board = make_board()
    while True:
        if board.wants_tick() and not poll.poll(0):
            # the on-board tracker runs a sub-window whenever no request is waiting (requests go first)
            board.tick()
            continue
        first = rd.read(1)  # blocks until the host sends something
        if not first:
            return
        buf = bytearray(first)
        # Gather what is already there, one byte at a time: read(n) would block until n bytes arrived.
        while len(buf) < READ_MAX and poll.poll(0):
            b = rd.read(1)
            if not b:
                break
            buf += b
        out = board.receive(buf)
        if out:
            wr.write(out)
            try:
                wr.flush()
            except AttributeError:
                pass
        if board.reset_requested:
            board = make_board()


def main_testchip(n_neurons=64, uid="mp-testchip-0001", nvm_path=None, seed=1, bank_size=nvm.BANK_SIZE):
    """Serve the MicroPython test chip; NVM in ``nvm_path`` (kept across runs) or in RAM when None."""
    chip = TestChip(n_neurons, uid, seed)
    size = nvm.flash_size(bank_size)
    if nvm_path:
        flash = nvm.FileFlash(nvm_path, size, bank_size=bank_size)
    else:
        flash = nvm.RamFlash(size)
    serve(lambda: Board(chip, flash, bank_size=bank_size))
