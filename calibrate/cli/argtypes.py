"""The argparse value types of ``eical``: a bad value is an argparse error (one line naming it, exit 2)."""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional

__all__ = ["nonneg_int", "positive_int", "positive_float", "seconds", "temperature_ramp", "add_threads_argument",
           "add_seed_argument", "SEED_HELP"]

#: ``--seed`` means one thing in every command: which emulated chip of the profile (its mismatch draws)
SEED_HELP = "mismatch seed of the emulated chip (default 0): the same profile and seed give the same chip"


def nonneg_int(text: str) -> int:
    """A non-negative integer (seeds, counts)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """A positive integer (chip counts, workers)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A positive finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def seconds(lo: float, hi: float) -> Callable[[str], float]:
    """A number of seconds in ``[lo, hi]``."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
        if not (math.isfinite(v) and v >= lo):
            raise argparse.ArgumentTypeError(f"expected at least {lo:g} seconds, got {text!r}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"expected at most {hi:g} seconds, got {text!r}")
        return v

    return parse


def temperature_ramp(text: str) -> tuple[float, float, float]:
    """``T0:T1:SECONDS``: kelvin, kelvin, seconds."""
    parts = text.split(":")
    try:
        t0, t1, sec = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T0:T1:SECONDS (kelvin, kelvin, seconds), got {text!r}") from None
    if len(parts) != 3 or not (sec > 0 and 150 <= t0 <= 450 and 150 <= t1 <= 450):
        raise argparse.ArgumentTypeError(f"expected T0:T1:SECONDS with temperatures in [150, 450] K and SECONDS > 0, "
                                         f"got {text!r}")
    return t0, t1, sec


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` for commands that run emulated chips. ``calibrate.cli.main`` applies it to every engine the
    command creates (``hw_models.engine.set_default_threads``); results are the same for any N."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="threads for the emulator's neuron update (default 1); results do not depend on it")


def add_seed_argument(parser: argparse.ArgumentParser, default: Optional[int] = 0) -> None:
    """``--seed N`` with the same meaning, default (0) and help in every command. ``default=None`` lets a command
    tell an omitted seed from 0 (``calibrate --resume`` refuses one); it still means 0."""
    parser.add_argument("--seed", type=nonneg_int, default=default, metavar="N", help=SEED_HELP)
