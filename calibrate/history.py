"""The record of a calibration run: every window (codes, spike counts, proxy readings, times), the controller's
per-iteration figures, the start codes, and the measured figures before and after with the estimates behind them.

``history.npz`` is :meth:`History.save`; it is enough to replay a run without the chip (``calibrate.run.replay``),
to resume an interrupted one (``calibrate.run.calibrate(resume=...)``), to plot it, and to re-render its report.

:meth:`History.load` is total: any file gives a ``History`` or one :class:`HistoryError` line naming the file, in
bounded time and memory. The file is at most ``HISTORY_MAX_BYTES``; every array's header is read before its data
(a zip member that would inflate past ``HISTORY_MAX_BYTES`` or holds objects is refused unread), and the arrays
must agree with each other (one row per window).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from hw_models.device import Measurement

from .controllers.base import Window, WindowKind

__all__ = ["History", "HistoryError", "HISTORY_MAX_BYTES"]

FIGURE_PREFIX = "figures_"
START_PREFIX = "start_"
# A history is a few KiB (devboard) to a few MiB (bss2, 512 neurons x 100 windows); a million-neuron chip's 100
# windows of three int32/float32 arrays are 1.2 GB. Bigger files, and zip members that would inflate past this, are
# refused before they are read.
HISTORY_MAX_BYTES = 2 * 1024 ** 3
_PER_WINDOW = ("kind", "iteration", "window_ms", "hardware_ms", "model_time_ms", "temperature_k")
_PER_WINDOW_ARRAYS = ("codes_e", "codes_i", "spike_counts", "proxy_pa")
_REQUIRED = _PER_WINDOW + _PER_WINDOW_ARRAYS + ("iterations",)
_KINDS = {k.value for k in WindowKind}


class HistoryError(ValueError):
    """A history file is unreadable or not an eical ``history.npz``; ``str(err)`` is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


@dataclass
class History:
    """Every window of a run, in order. Arrays are stacked per window."""

    kind: list[str] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)
    window_ms: list[float] = field(default_factory=list)
    hardware_ms: list[float] = field(default_factory=list)
    model_time_ms: list[float] = field(default_factory=list)  # cumulative, at the window's end
    codes_e: list[np.ndarray] = field(default_factory=list)
    codes_i: list[np.ndarray] = field(default_factory=list)
    spike_counts: list[np.ndarray] = field(default_factory=list)
    proxy_pa: list[np.ndarray] = field(default_factory=list)
    temperature_k: list[float] = field(default_factory=list)
    iterations: list[dict] = field(default_factory=list)  # the controller's records per iteration (to_dict())
    # the run's measured figures and the controller's estimates behind them, saved as ``figures_<name>``:
    # before_rates_hz, before_balance, after_rates_hz, after_balance (per neuron; balance per knob group for shared
    # knobs, NaN where not read), offset_pa (ADC offsets), exc_pa_per_gain (excitatory proxy part at unit gain)
    figures: dict[str, np.ndarray] = field(default_factory=dict)
    # the codes the run started from (saved as ``start_<knob>``), so that a resumed run starts where it did
    start_codes: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, it: int, w: Window, m: Measurement, t_ms: float) -> None:
        self.kind.append(WindowKind(w.kind).value)
        self.iteration.append(it)
        self.window_ms.append(float(m.window_ms))
        self.hardware_ms.append(float(m.hardware_ms))
        self.model_time_ms.append(t_ms)
        self.codes_e.append(np.asarray(w.codes["gain_e"], dtype=np.int32))
        self.codes_i.append(np.asarray(w.codes["gain_i"], dtype=np.int32))
        self.spike_counts.append(np.asarray(m.spike_counts, dtype=np.int32))
        self.proxy_pa.append(np.where(m.observed, m.proxy_pa, np.nan).astype(np.float32))
        self.temperature_k.append(float("nan") if m.temperature_k is None else float(m.temperature_k))

    def __len__(self) -> int:
        return len(self.kind)

    def truncate(self, n_windows: int) -> None:
        """Keep the first ``n_windows`` windows and the iteration records of whole iterations among them (what an
        interrupted run keeps; any list a ``KeyboardInterrupt`` left one entry longer is cut too)."""
        for name in _PER_WINDOW + _PER_WINDOW_ARRAYS:
            del getattr(self, name)[n_windows:]
        whole = {int(i) for i in self.iteration}
        self.iterations = [r for r in self.iterations if int(r.get("iteration", -1)) in whole]

    def whole_iterations_windows(self) -> int:
        """How many leading windows belong to iterations the controller completed (recorded in ``iterations``);
        a final verification's windows and those of an iteration cut short are not among them."""
        done = len(self.iterations)
        n = 0
        while n < len(self.iteration) and self.iteration[n] < done:
            n += 1
        return n

    def save(self, path) -> None:
        """Write ``history.npz`` atomically (a temporary file renamed over ``path``), so a kill never leaves half a
        file where a whole one was."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".history-", suffix=".npz.tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(
                    f, kind=np.array(self.kind, dtype="U16"), iteration=np.array(self.iteration, dtype=np.int64),
                    window_ms=np.array(self.window_ms, dtype=float),
                    hardware_ms=np.array(self.hardware_ms, dtype=float),
                    model_time_ms=np.array(self.model_time_ms, dtype=float), codes_e=np.array(self.codes_e),
                    codes_i=np.array(self.codes_i), spike_counts=np.array(self.spike_counts),
                    proxy_pa=np.array(self.proxy_pa), temperature_k=np.array(self.temperature_k, dtype=float),
                    iterations=np.array(json.dumps(self.iterations)),
                    **{FIGURE_PREFIX + k: np.asarray(v) for k, v in self.figures.items()},
                    **{START_PREFIX + k: np.asarray(v, dtype=np.int64) for k, v in self.start_codes.items()})
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @classmethod
    def load(cls, path) -> "History":
        """Read and check ``history.npz`` (module docstring): a ``History`` or one ``HistoryError`` line."""
        p = Path(path)
        arrays = _read_npz(p)
        return _from_arrays(p, arrays)

    def measurement(self, i: int) -> Measurement:
        """Window ``i`` as the controller measured it (for a replay)."""
        p = self.proxy_pa[i].astype(float)
        return Measurement(spike_counts=self.spike_counts[i].astype(np.int64), window_ms=self.window_ms[i], proxy_pa=p,
                           observed=np.isfinite(p), hardware_ms=self.hardware_ms[i])

    def equal(self, other: "History") -> bool:
        """Same windows, codes, counts and readings (NaN == NaN)."""
        if self.kind != other.kind or self.window_ms != other.window_ms:
            return False
        pairs = ((self.codes_e, other.codes_e), (self.codes_i, other.codes_i),
                 (self.spike_counts, other.spike_counts), (self.proxy_pa, other.proxy_pa))
        return all(len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))
                   for a, b in pairs)


# -- the total loader ---------------------------------------------------------------------------------------------
def _fail(p: Path, why: str) -> HistoryError:
    return HistoryError(f"{p}: not an eical history (history.npz): {why}")


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``p``, each header checked before its data is inflated."""
    try:
        size = p.stat().st_size
    except OSError as e:
        raise HistoryError(f"{p}: cannot read: {e.strerror or e}") from None
    if not p.is_file():
        raise HistoryError(f"{p}: cannot read: not a regular file")
    if size > HISTORY_MAX_BYTES:
        raise HistoryError(f"{p}: larger than {HISTORY_MAX_BYTES >> 30} GiB; expected an eical history "
                           f"(history.npz), which is at most that")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
            if len(infos) > 256:
                raise _fail(p, f"{len(infos)} members, expected a few dozen")
            budget = HISTORY_MAX_BYTES
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if not info.filename.endswith(".npy") or not _known_name(name):
                    raise _fail(p, f"unexpected member {info.filename[:60]!r}")
                if info.file_size > budget:
                    raise _fail(p, "its arrays would inflate past 2 GiB")
                budget -= info.file_size
                out[name] = _read_member(p, zf, info, name)
    except HistoryError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError, OverflowError, MemoryError) as e:
        raise _fail(p, f"not a readable npz archive ({type(e).__name__}: {str(e)[:80]})") from None
    return out


def _known_name(name: str) -> bool:
    if name in _REQUIRED:
        return True
    for prefix in (FIGURE_PREFIX, START_PREFIX):
        if name.startswith(prefix) and 0 < len(name) - len(prefix) <= 40 and name[len(prefix):].isidentifier():
            return True
    return False


def _read_member(p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=4096)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=4096)
        else:
            raise _fail(p, f"{name}: unsupported npy version {version}")
        if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields is not None:
            raise _fail(p, f"{name}: arrays of {dtype} are not part of a history")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size or len(shape) > 2:
            raise _fail(p, f"{name}: its header does not match its data")
    with zf.open(info) as f:
        return fmt.read_array(f, allow_pickle=False, max_header_size=4096)


def _from_arrays(p: Path, a: dict[str, np.ndarray]) -> History:
    missing = [k for k in _REQUIRED if k not in a]
    if missing:
        raise _fail(p, f"missing {', '.join(missing)}")
    n = a["kind"].shape[0] if a["kind"].ndim == 1 else -1
    for k in _PER_WINDOW:
        if a[k].ndim != 1 or a[k].shape[0] != n:
            raise _fail(p, f"{k}: expected one value per window ({n})")
    for k in _PER_WINDOW_ARRAYS:
        if n == 0 and a[k].size == 0:  # a run interrupted in its first iteration
            a[k] = np.zeros((0, 1), dtype=np.int32 if k != "proxy_pa" else np.float32)
        elif a[k].ndim != 2 or a[k].shape[0] != n or a[k].shape[1] == 0:
            raise _fail(p, f"{k}: expected one row per window ({n})")
    if n == 0:
        a["iteration"] = a["iteration"].astype(np.int64)
    if (n and a["kind"].dtype.kind != "U") or any(str(k) not in _KINDS for k in a["kind"]):
        raise _fail(p, f"kind: expected window kinds ({', '.join(sorted(_KINDS))})")
    for k in ("iteration", "codes_e", "codes_i", "spike_counts"):
        if a[k].dtype.kind not in "iu":
            raise _fail(p, f"{k}: expected integers")
    for k in ("window_ms", "hardware_ms", "model_time_ms", "temperature_k", "proxy_pa"):
        if a[k].dtype.kind not in "iuf":
            raise _fail(p, f"{k}: expected numbers")
    if n and not (np.all(np.isfinite(a["window_ms"])) and np.all(a["window_ms"] > 0)):
        raise _fail(p, "window_ms: expected positive window lengths")
    if a["spike_counts"].shape[1:] != a["proxy_pa"].shape[1:] or a["codes_e"].shape != a["codes_i"].shape:
        raise _fail(p, "spike_counts, proxy_pa, codes_e and codes_i disagree in size")
    it = a["iterations"]
    if it.dtype.kind != "U" or it.ndim != 0:
        raise _fail(p, "iterations: expected the controller's records as JSON text")
    try:
        records = json.loads(str(it))
    except (ValueError, RecursionError):
        raise _fail(p, "iterations: not valid JSON") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _fail(p, "iterations: expected a list of records")
    n_it = len(records)
    if any(r.get("iteration") != i for i, r in enumerate(records)) or \
            (n and not np.all((a["iteration"] >= 0) & (a["iteration"] <= n_it))):
        raise _fail(p, "iterations: the records do not number the windows' iterations")
    return History(kind=[str(k) for k in a["kind"]], iteration=[int(i) for i in a["iteration"]],
                   window_ms=[float(x) for x in a["window_ms"]], hardware_ms=[float(x) for x in a["hardware_ms"]],
                   model_time_ms=[float(x) for x in a["model_time_ms"]], codes_e=list(a["codes_e"]),
                   codes_i=list(a["codes_i"]), spike_counts=list(a["spike_counts"]),
                   proxy_pa=list(a["proxy_pa"].astype(np.float32)),
                   temperature_k=[float(x) for x in a["temperature_k"]], iterations=records,
                   figures={k[len(FIGURE_PREFIX):]: v for k, v in a.items() if k.startswith(FIGURE_PREFIX)},
                   start_codes={k[len(START_PREFIX):]: v.astype(np.int64) for k, v in a.items()
                                if k.startswith(START_PREFIX)})

