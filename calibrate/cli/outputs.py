"""Where ``eical`` writes: one rule for every output path of every command (README "Output paths").

A command writes to a path only when one of these holds, checked before anything runs:

- the path does not exist (it is created; its parent must be writable);
- it is an empty directory (for a directory output);
- it is an eical output of the same kind, which the command then replaces: a calibration directory (its
  ``summary.json``), a diagnosis (``diagnostics.json``), a tracking run (``track.json``), a yield study
  (``study.json``), a chip export (an NPZ holding a chip's arrays);
- ``--overwrite`` was given: a directory holding other files is written into (only the command's own file names
  are replaced; nothing else is removed), an existing file of another kind is replaced.

Never: a directory output where a file is, or a file output where a directory is. Anything else is exit 2 with one
line naming the path and the way out, and nothing is written. A path that cannot be written (read-only, no such
parent, no permission) is exit 2 as well, found by writing a probe file, so a read-only mount is found even by root.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional

from .exits import CliError

__all__ = ["OUTPUT_KINDS", "prepare_output_dir", "check_output_file", "is_output_of", "default_output_dir",
           "clear_previous"]

#: the files a calibration writes, removed from an earlier calibration's directory before a new one is written there
#: (so a new run without a report does not sit beside the old run's report)
CALIBRATION_FILES = ("table.json", "report.html", "diagnostics.json", "diagnostics_section.html")

#: directory kinds: the file that marks one, and the keys its JSON object has
OUTPUT_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "calibration": ("summary.json", ("verdict", "stopped")),
    "diagnosis": ("diagnostics.json", ("flags", "healthy", "identity", "headline")),
    "tracking run": ("track.json", ("checkpoints",)),
    "yield study": ("study.json", ()),
}
_MARKER_MAX_BYTES = 64 * 1024 * 1024
_CHIP_EXPORT_MEMBERS = {"dead.npy", "dt.npy", "code_ref.npy"}
_DYNAPSIM_EXPORT_MEMBERS = {"format.npy", "chip_uid.npy", "Io.npy"}  # chip export --format dynapsim


def _marker_ok(path: Path, keys: tuple[str, ...]) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > _MARKER_MAX_BYTES:
            return False
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and (not keys or any(k in doc for k in keys))


def is_output_of(path: Path, kind: str) -> bool:
    """``path`` is an eical output of ``kind`` (a key of ``OUTPUT_KINDS``, or "chip export" for a file)."""
    if kind == "chip export":
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                return _CHIP_EXPORT_MEMBERS <= names or _DYNAPSIM_EXPORT_MEMBERS <= names
        except (OSError, zipfile.BadZipFile, ValueError):
            return False
    name, keys = OUTPUT_KINDS[kind]
    return _marker_ok(path / name, keys)


def _probe(directory: Path, what: str, path: Path) -> None:
    """Write and remove a probe file in ``directory``: the one test that finds read-only mounts for root too."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".eical-probe-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        where = "" if directory == path else f" in {directory}"
        raise CliError(f"{what} {path}: cannot write{where} ({e.strerror or e})") from None


def _existing_parent(p: Path) -> Path:
    q = p.absolute().parent
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def prepare_output_dir(path: Any, kind: str, *, overwrite: bool = False, option: str = "--out") -> Path:
    """Check the rule of the module docstring for directory output ``path`` of ``kind``; nothing is created here
    (the command creates it when it first writes). Returns the path."""
    p = Path(path)
    if str(path) == "":
        raise CliError(f"{option}: expected a directory path, got ''")
    if p.exists() and not p.is_dir():
        raise CliError(f"{option} {p}: exists and is not a directory; give a directory path")
    if p.is_dir():
        try:
            entries = sorted(e.name for e in p.iterdir() if not e.name.startswith(".eical-probe-"))
        except OSError as e:
            raise CliError(f"{option} {p}: cannot read ({e.strerror or e})") from None
        if entries and not overwrite and not is_output_of(p, kind):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise CliError(f"{option} {p}: holds files that are not an eical {kind} ({shown}); choose a new or empty "
                           f"directory, or add --overwrite to write into it")
        _probe(p, option, p)
    else:
        parent = _existing_parent(p)
        if not parent.is_dir():
            raise CliError(f"{option} {p}: {parent} is not a directory")
        _probe(parent, option, p)
    return p


def check_output_file(path: Any, kind: str, *, overwrite: bool = False, option: str = "--out") -> Path:
    """The rule for a file output ``path`` of ``kind``: a new file, or one of the same kind, or ``--overwrite``."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise CliError(f"{option} {str(path)!r}: expected a file path")
    if p.is_dir():
        raise CliError(f"{option} {p}: is a directory; give a file path")
    if p.exists() and not overwrite and not is_output_of(p, kind):
        raise CliError(f"{option} {p}: exists and is not an eical {kind}; choose another path, or add --overwrite "
                       f"to replace it")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise CliError(f"{option} {p}: no such directory {parent}")
    _probe(parent, option, p)
    return p


def default_output_dir(uid: str, when: Optional[float] = None) -> Path:
    """``eical-<chip uid>-<YYYYmmdd-HHMMSS>`` in the working directory (a second suffix if that exists)."""
    import re
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    base = "eical-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", uid)[:64] + "-" + stamp
    p = Path(base)
    k = 2
    while p.exists():
        p = Path(f"{base}-{k}")
        k += 1
    return p


def clear_previous(path: Path, kind: str) -> None:
    """Before a new output of ``kind`` is written into ``path``: when it holds an earlier one, remove that one's
    files (only the names the kind writes; nothing when the directory is not of the kind, e.g. with --overwrite)."""
    if kind != "calibration" or not path.is_dir() or not is_output_of(path, kind):
        return
    for name in CALIBRATION_FILES:
        f = path / name
        if f.is_file():
            f.unlink()
