"""NVM image files on the host: open one only when it is one, create one only when asked, never destroy a file.

The board emulator keeps the board's flash in a file (``eical board-emulator --nvm FILE``). Such a file is an
*eical NVM image*: a 64-byte header (magic ``EICALNVM``, format version, flash, sector and bank sizes, header
CRC-32; ``firmware.nvm.pack_image_header``), then the flash bytes. docs/protocol.md, "NVM image files".

``open_image(path, new=False)`` is the one way in:

- an existing file is opened only when it is an image of this geometry and exactly as long as one;
- a path that does not exist is created as an erased image (its directory must exist);
- ``new=True`` creates a fresh erased image also where an image (of any geometry or format, or an old headerless
  one) or an empty file already is, replacing it atomically; it still refuses any other file;
- anything else raises ``NvmImageError`` (a usage error, exit 2) with one line naming the file and what was
  expected, and the file is left exactly as it was.

Images written before format 1 had no header (a bare 266,240-byte flash). They are recognised and refused with
a message saying how to migrate them: ``eical nvm migrate FILE`` (keeps the tables,
leaves a ``.bak`` copy), or ``new=True`` to start afresh.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Union

from .errors import NvmImageError
from .firmware import nvm

__all__ = ["open_image", "inspect_image", "is_legacy_image", "migrate_legacy_image", "MIGRATE_HINT"]

PathLike = Union[str, os.PathLike]
MIGRATE_HINT = "eical nvm migrate {path}"


def _geometry(bank_size: int, sector_size: int) -> int:
    if bank_size <= 0 or sector_size <= 0 or bank_size % sector_size:
        raise ValueError(f"bank size {bank_size} must be a positive multiple of the sector size {sector_size}")
    return nvm.flash_size(bank_size, sector_size)


def _stat(p: Path) -> Optional[os.stat_result]:
    try:
        return p.stat()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise NvmImageError(f"{p!s}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def _head(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise NvmImageError(f"{p}: cannot read: {e.strerror or e}") from None


def is_legacy_image(path: PathLike, *, bank_size: int = nvm.BANK_SIZE, sector_size: int = nvm.SECTOR_SIZE) -> bool:
    """True when ``path`` holds a headerless image of the layout before format 1: exactly one flash long, each
    bank starting with an erased or a valid-looking bank header, and a unary boot log (0x00 bytes, one partial
    byte, then 0xFF)."""
    p = Path(path)
    size = _geometry(bank_size, sector_size)
    st = _stat(p)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    data = _head(p, size)
    if len(data) != size:
        return False
    for bank in range(nvm.N_BANKS):
        head = data[bank * bank_size:bank * bank_size + nvm.HEADER_SIZE]
        if head != b"\xff" * nvm.HEADER_SIZE and head[:4] != nvm.MAGIC:
            return False
    log = data[nvm.N_BANKS * bank_size:]
    i = len(log) - len(log.lstrip(b"\x00"))
    rest = log[i:]
    if rest and rest[1:] != b"\xff" * (len(rest) - 1):
        return False
    return True


def inspect_image(path: PathLike, *, bank_size: int = nvm.BANK_SIZE,
                  sector_size: int = nvm.SECTOR_SIZE) -> None:
    """Raise ``NvmImageError`` (one line: the file and what is wrong) unless ``path`` is an image of this
    geometry. Reads the header only; never writes."""
    p = Path(path)
    size = _geometry(bank_size, sector_size)
    st = _stat(p)
    if st is None:
        raise NvmImageError(f"{p}: no such file; expected an eical NVM image")
    if stat.S_ISDIR(st.st_mode):
        raise NvmImageError(f"{p}: is a directory; expected an eical NVM image file")
    if not stat.S_ISREG(st.st_mode):
        raise NvmImageError(f"{p}: not a regular file; expected an eical NVM image file")
    if st.st_size == 0:
        raise NvmImageError(f"{p}: empty file, not an eical NVM image; the board emulator creates one at a path "
                            "that does not exist yet (or with --new)")
    why = nvm.image_problem(_head(p, nvm.IMAGE_HEADER_SIZE), st.st_size, size, sector_size, bank_size)
    if why is None:
        return
    if is_legacy_image(p, bank_size=bank_size, sector_size=sector_size):
        raise NvmImageError(f"{p}: an eical NVM image of the old layout without a header; migrate it (keeps its "
                            f"tables) with `{MIGRATE_HINT.format(path=p)}`, or start afresh with --new")
    if why.startswith("not an eical NVM image"):
        why += "; refusing to use it as NVM (it would be overwritten): give a path that does not exist yet"
    raise NvmImageError(f"{p}: {why}")


def _write_fresh(p: Path, payload_size: int, sector_size: int, bank_size: int, body: Optional[bytes] = None) -> None:
    """Write an image (erased, or holding ``body``) next to ``p`` and move it into place atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(nvm.pack_image_header(payload_size, sector_size, bank_size))
            f.write(body if body is not None else b"\xff" * payload_size)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def open_image(path: PathLike, *, bank_size: int = nvm.BANK_SIZE, sector_size: int = nvm.SECTOR_SIZE,
               new: bool = False) -> nvm.FileFlash:
    """The flash in NVM image ``path`` (module docstring for the rules). Raises ``NvmImageError``."""
    s = os.fspath(path)
    if not str(s).strip():
        raise NvmImageError("no NVM file given; expected a path for an eical NVM image")
    p = Path(s)
    size = _geometry(bank_size, sector_size)
    try:
        st = _stat(p)
        if st is None:
            if not p.parent.is_dir():
                raise NvmImageError(f"{p}: cannot create an NVM image: no such directory {p.parent}")
            # Claim the name first, so that a file appearing meanwhile is never replaced.
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise NvmImageError(f"{p}: appeared while being created; try again") from None
            os.close(fd)
            try:
                _write_fresh(p, size, sector_size, bank_size)
            except BaseException:
                p.unlink()
                raise
        elif new:
            try:
                inspect_image(p, bank_size=bank_size, sector_size=sector_size)
                ok = True
            except NvmImageError:
                ok = (st.st_size == 0 and stat.S_ISREG(st.st_mode)) or _any_image(p) or \
                    is_legacy_image(p, bank_size=bank_size, sector_size=sector_size)
            if not ok:
                raise NvmImageError(f"{p}: exists and is not an eical NVM image; a new image would destroy it: "
                                    "remove it yourself or give a path that does not exist yet")
            _write_fresh(p, size, sector_size, bank_size)
        else:
            inspect_image(p, bank_size=bank_size, sector_size=sector_size)
        return nvm.FileFlash(str(p), size, sector_size, bank_size)
    except NvmImageError:
        raise
    except (OSError, ValueError) as e:
        msg = getattr(e, "strerror", None) or str(e)
        raise NvmImageError(f"{p}: cannot open the NVM image: {msg}".replace("\n", " ")) from None


def _any_image(p: Path) -> bool:
    """An image of any geometry or format (its header magic is there): --new may replace it."""
    return _head(p, 8) == nvm.IMAGE_MAGIC


def migrate_legacy_image(path: PathLike, *, bank_size: int = nvm.BANK_SIZE,
                         sector_size: int = nvm.SECTOR_SIZE) -> Path:
    """Give a headerless image (before format 1) its header, keeping its tables; returns the backup's path
    (``FILE.bak``, the file as it was). Refuses anything that is not such an image, and an existing backup."""
    p = Path(path)
    size = _geometry(bank_size, sector_size)
    if not is_legacy_image(p, bank_size=bank_size, sector_size=sector_size):
        try:
            inspect_image(p, bank_size=bank_size, sector_size=sector_size)
        except NvmImageError as e:
            raise NvmImageError(f"{e.message.split(';')[0]}; nothing to migrate") from None
        raise NvmImageError(f"{p}: already an eical NVM image of format {nvm.IMAGE_VERSION}; nothing to migrate")
    backup = p.with_name(p.name + ".bak")
    if backup.exists():
        raise NvmImageError(f"{p}: the backup {backup} exists already; move it away first")
    body = _head(p, size)
    try:
        os.link(p, backup)  # the original stays reachable under the backup name
    except OSError:
        backup.write_bytes(body)
    _write_fresh(p, size, sector_size, bank_size, body)
    return backup
