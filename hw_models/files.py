"""Reading user files with bounds: at most so many bytes, UTF-8 or a one-line error naming the file.

The loaders of profiles (``profile.load_profile``) and gain tables (``table.GainTable.load``) read through these,
so that any file, /dev/zero or a binary included, costs bounded time and memory and gives one clear line.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["read_limited", "decode_utf8", "human_size", "value_problem"]


def read_limited(path: Path, limit: int, what: str, error: type) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them: ``error`` (one line) for an unreadable or bigger file.
    Reads at most ``limit + 1`` bytes, so /dev/zero or a huge file costs no more than that."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, ValueError) as e:
        raise error(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {human_size(limit)}; expected {what}, which is at most {human_size(limit)}")
    return data


def human_size(n: int) -> str:
    """``256 KiB``, ``16 MiB``."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def decode_utf8(path: Path, data: bytes, what: str, error: type) -> str:
    """``data`` as text (UTF-8, an optional BOM): ``error`` naming the first bad byte otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); expected {what}") \
            from None


def value_problem(e: BaseException) -> str:
    """What a parser's ValueError / RecursionError means for the person whose file it is, on one line."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    text = str(e)
    if "integer string conversion" in text:
        return "a number with more digits than can be read (over 4300)"
    return text.replace("\n", " ")
