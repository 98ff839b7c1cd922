"""Where running board emulators say where they are, so that ``eical devices`` lists them beside real ports.

Each ``eical board-emulator`` writes one small JSON file, ``<runtime dir>/emulators/<pid>.json`` (its pty path, pid,
profile, seed, UID, NVM file and start time) once its pty is open, and removes it when it exits (normally, on
SIGTERM or Ctrl-C; a ``kill -9`` leaves it behind). The runtime directory is ``$EICAL_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/eical``, else ``<temp dir>/eical-<uid>``, created with mode 0700 (it is the user's alone).

:func:`running_emulators` lists the entries whose process is alive, and removes those whose process is gone (a
killed emulator's); the caller then asks each pty for HELLO, which also catches a pid that was reused by another
program (its file names a pty nobody answers on).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["runtime_dir", "register_emulator", "unregister_emulator", "running_emulators"]


def runtime_dir() -> Path:
    """The directory emulators register in (module docstring), created on demand."""
    base = os.environ.get("EICAL_RUNTIME_DIR")
    if base:
        d = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(os.environ["XDG_RUNTIME_DIR"]) / "eical"
    else:
        d = Path(tempfile.gettempdir()) / f"eical-{os.getuid()}"
    d = d / "emulators"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: not ours to list
        return False
    return True


def register_emulator(port: str, **info: Any) -> Path:
    """Write this process's entry (``port`` and ``info``: profile, seed, uid, nvm...); returns its path. Written
    to a temporary name and renamed, so that a reader never sees half a file."""
    d = runtime_dir()
    entry = {"port": port, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    path = d / f"{os.getpid()}.json"
    tmp = d / f".{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)
    return path


def unregister_emulator(path: Optional[Path] = None) -> None:
    """Remove this process's entry (or the one at ``path``); nothing when it is already gone."""
    try:
        (path or runtime_dir() / f"{os.getpid()}.json").unlink()
    except FileNotFoundError:
        pass


def running_emulators() -> list[dict]:
    """The entries of emulators whose process is alive (oldest first); stale entries are removed."""
    out = []
    d = runtime_dir()
    for f in sorted(d.glob("*.json")):
        try:
            entry = json.loads(f.read_text())
            pid = int(entry["pid"])
            port = str(entry["port"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours, or being written
        if not _alive(pid):
            unregister_emulator(f)
            continue
        if not Path(port).exists():
            continue
        out.append(entry)
    return sorted(out, key=lambda e: (e.get("started", ""), e["pid"]))
