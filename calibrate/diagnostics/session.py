"""A diagnose run as a library function: record an emulated chip and diagnose its balance (``eical diagnose``).

:func:`run_diagnose` runs the chip ``(profile, seed)`` at nominal codes, or at the codes of a gain table made for
it (a table for another chip is refused before anything runs: ``IdentityMismatch``), for a short settle and then
``duration_s`` seconds of model time recorded on input stream 2 (inputs a calibration did not see). It returns a
:class:`DiagnoseResult`; with ``out`` it also writes:

- ``diagnostics.json``: :meth:`DiagnoseResult.to_dict` (``Diagnostics.to_dict()`` with flags, healthy, every
  figure and per-scale curve, plus ``chip``, ``run`` and ``headline``);
- ``diagnose.html``: a standalone page with the figure table, flags, notes and the plots;
- ``recording.npz`` with ``save_recording`` (``hw_models.recording.Recording.load`` reads it back).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from hw_models.device import DeviceIdentity
from hw_models.recording import Recording
from hw_models.table import json_default

from .defaults import DEFAULT_DURATION_S, MIN_DURATION_S
from .pipeline import diagnose
from .headlines import Headline, headline
from .recording import record_chip
from .render import diagnostics_section, standalone_page
from .result import Diagnostics

__all__ = ["DEFAULT_DURATION_S", "MIN_DURATION_S", "DiagnoseResult", "run_diagnose"]



@dataclass
class DiagnoseResult:
    """One diagnose run: the chip, how it ran, its diagnosis and headline, and the recording itself."""

    identity: DeviceIdentity
    backend: str
    codes: str  # "table" or "nominal"
    duration_s: float
    diagnostics: Diagnostics
    headline: Headline
    recording: Recording = field(repr=False)
    wall_s: Dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.diagnostics.healthy

    def to_dict(self) -> Dict[str, Any]:
        """The document of ``diagnostics.json``."""
        ident, meta = self.identity, self.recording.meta
        doc: Dict[str, Any] = dict(self.diagnostics.to_dict())
        doc["chip"] = {"uid": ident.uid, "profile": ident.profile, "profile_sha256": ident.profile_sha256,
                       "seed": ident.seed, "n_neurons": ident.n_neurons, "model": ident.model,
                       "backend": self.backend}
        doc["run"] = {"codes": self.codes, "duration_s": self.duration_s, "settle_s": meta.get("settle_s"),
                      "input_stream": meta.get("input_stream"), "temperature_k": meta.get("temperature_k"),
                      "wall_s": dict(self.wall_s)}
        doc["headline"] = self.headline.to_dict()
        return doc

    def write(self, out: Any, *, save_recording: bool = False) -> None:
        """Write ``diagnose.html``, ``diagnostics.json`` (and ``recording.npz``) into directory ``out``."""
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        body, _ = diagnostics_section(None, (self.diagnostics, self.recording), labels=("", self.diagnostics.label))
        self.wall_s["figures"] = time.perf_counter() - t0
        ident, meta = self.identity, self.recording.meta
        what = "codes of the given gain table" if self.codes == "table" else "nominal codes (uncalibrated)"
        intro = (f"<p>Chip <b>{ident.uid}</b>: profile <b>{ident.profile}</b>, seed {ident.seed}, "
                 f"{ident.n_neurons} {ident.model} neurons, backend {self.backend}; {what}; "
                 f"{self.duration_s:g} s of model time recorded after a {meta.get('settle_s', 0):g} s settle, "
                 f"input stream {meta.get('input_stream')}.</p>")
        (out_dir / "diagnose.html").write_text(standalone_page(f"eical diagnose: {ident.uid}", intro, body))
        if save_recording:
            self.recording.save(out_dir / "recording.npz")
        (out_dir / "diagnostics.json").write_text(json.dumps(self.to_dict(), indent=1, default=json_default) + "\n")


def run_diagnose(profile: Any, seed: int, *, table: Optional[Any] = None, duration_s: float = DEFAULT_DURATION_S,
                 backend: str = "numpy", out: Optional[Any] = None, save_recording: bool = False,
                 progress: Optional[Callable[[str, Optional[float], Optional[float]], None]] = None) -> DiagnoseResult:
    """Record and diagnose chip ``(profile, seed)`` at nominal codes or at ``table`` (a loaded ``GainTable``).

    The table is checked against the chip (``check_identity``: raises ``IdentityMismatch``; ``check_knobs``:
    ``TableError``) before anything runs or is written. With ``out`` the files of the module docstring are written
    there. ``progress`` is called with (phase, model seconds done, model seconds in the phase) at each chunk of the
    recording, and with (phase, None, None) when the diagnosing and plotting begin."""
    from hw_models.emulator import NumpyDevice
    from hw_models.profile import load_profile

    prof = load_profile(profile)
    host = NumpyDevice(prof, seed)  # draws the chip: its identity for the table check, reused for the recording
    codes = None
    if table is not None:
        table.check_identity(host.identity)
        table.check_knobs(host.knobs)
        codes = table.codes()
    t0 = time.perf_counter()
    rec = record_chip(prof, seed, codes, duration_s, backend=backend, chip=host.chip, progress=progress)
    t1 = time.perf_counter()
    if progress is not None:
        progress("diagnosing", None, None)
    d = diagnose(rec, label="table" if table is not None else "nominal codes")
    t2 = time.perf_counter()
    result = DiagnoseResult(identity=host.identity, backend=rec.meta.get("backend", backend),
                            codes="table" if table is not None else "nominal", duration_s=duration_s, diagnostics=d,
                            headline=headline(d, rec), recording=rec, wall_s={"record": t1 - t0, "diagnose": t2 - t1})
    if out is not None:
        if progress is not None:
            progress("plotting", None, None)
        result.write(out, save_recording=save_recording)
    return result
