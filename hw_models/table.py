"""The gain table (``table.json``): the codes a calibration found for one chip, readable, diffable, validated.

Format (DESIGN.md "Files")::

    {
      "schema": {"name": "eical-gain-table", "version": 1},
      "chip": {"uid": ..., "profile": ..., "profile_sha256": ..., "seed": 1 | null},
      "knobs": {"gain_e": {"sharing": "neuron", "bits": 10, "codes": [...]}, "gain_i": {...}},
      "targets": {"rate_hz": 10.0, "proxy_pa": 0.0},
      "metrics": {"before": {...}, "after": {...}},
      "controller": {"name": "dual-loop", "settings": {...}},
      "verdict": {"met": true, "complete": true, "criteria": [{"name": "rate_cv", "value": 0.041, "limit": 0.05,
                  "met": true, "source": "true", "uncertainty": 0.0015}, ...]},
      "created": "2026-11-23T05:00:00Z",
      "eical_version": "0.1.0"
    }

A table is tied to one chip: ``check_identity`` refuses a chip with another uid or profile hash, and
``check_knobs`` refuses codes that do not fit the chip's knobs. Both raise ``TableError`` subclasses with one
clear line.

``verdict`` (optional; tables made before it have none and still load) is the calibration's verdict against its spec
(``calibrate.verdict``); ``eical flash`` refuses a table whose verdict failed unless forced.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .device import DeviceIdentity, KnobSpec
from .files import decode_utf8, read_limited, value_problem

__all__ = ["GainTable", "KnobTable", "TableError", "IdentityMismatch", "SCHEMA_NAME", "SCHEMA_VERSION",
           "TABLE_MAX_BYTES", "VERDICT_SOURCES", "check_verdict"]

SCHEMA_NAME = "eical-gain-table"
SCHEMA_VERSION = 1
VERDICT_SOURCES = ("true", "measured")  # a figure judged on emulator truth, or as a board measured it


class TableError(ValueError):
    """A gain table file is unreadable or malformed, or does not fit the chip it is applied to. ``str(err)`` is
    one line (naming the file when there is one), whatever the file holds."""

    def __init__(self, message: str):
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


# A table is a few KiB to a few MiB of JSON (two knobs of a million-neuron chip: about 8 MiB); a bigger file is
# refused before it is read (docs/profiles.md, "Files").
TABLE_MAX_BYTES = 16 * 1024 * 1024


class IdentityMismatch(TableError):
    """The table was made for another chip (uid) or another profile (hash)."""


@dataclass
class KnobTable:
    sharing: str
    bits: int
    codes: list[int]

    def to_dict(self) -> dict:
        return {"sharing": self.sharing, "bits": self.bits, "codes": [int(c) for c in self.codes]}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("eical")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


@dataclass
class GainTable:
    chip_uid: str
    profile: str
    profile_sha256: str
    knobs: dict[str, KnobTable]
    seed: Optional[int] = None
    targets: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    controller: dict = field(default_factory=dict)
    created: str = ""
    eical_version: str = ""
    verdict: Optional[dict] = None

    @property
    def verdict_failed(self) -> bool:
        """The table carries a verdict, and it is not met."""
        return self.verdict is not None and not self.verdict["met"]

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, identity: DeviceIdentity, knobs: Mapping[str, KnobSpec], codes: Mapping[str, np.ndarray], *,
                   targets: Optional[dict] = None, metrics: Optional[dict] = None,
                   controller: Optional[dict] = None, verdict: Optional[dict] = None) -> "GainTable":
        return cls(chip_uid=identity.uid, profile=identity.profile, profile_sha256=identity.profile_sha256,
                   verdict=dict(verdict) if verdict is not None else None,
                   seed=identity.seed,
                   knobs={k: KnobTable(knobs[k].sharing, knobs[k].bits, [int(c) for c in np.asarray(codes[k])])
                          for k in sorted(codes)},
                   targets=dict(targets or {}), metrics=dict(metrics or {}), controller=dict(controller or {}),
                   created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   eical_version=_version())

    def codes(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v.codes, dtype=np.int64) for k, v in self.knobs.items()}

    # -- files ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "schema": {"name": SCHEMA_NAME, "version": SCHEMA_VERSION},
            "chip": {"uid": self.chip_uid, "profile": self.profile, "profile_sha256": self.profile_sha256,
                     "seed": self.seed},
            "knobs": {k: v.to_dict() for k, v in self.knobs.items()},
            "targets": self.targets,
            "metrics": self.metrics,
            "controller": self.controller,
            "created": self.created,
            "eical_version": self.eical_version,
        }
        if self.verdict is not None:
            d["verdict"] = self.verdict
        return d

    def to_json(self) -> str:
        """Indented JSON with each knob's code list on one line: short, and a diff shows which knob changed."""
        d = self.to_dict()
        placeholders = {}
        for k, kv in d["knobs"].items():
            token = f"@@codes:{k}@@"
            placeholders[json.dumps(token)] = json.dumps(kv["codes"], separators=(",", ":"))
            kv["codes"] = token
        text = json.dumps(d, indent=1, default=json_default)
        for token, compact in placeholders.items():
            text = text.replace(token, compact)
        return text

    def save(self, path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Any, where: str = "<dict>") -> "GainTable":
        def fail(path: str, expected: str, got: Any) -> TableError:
            return TableError(f"{where}: {path}: expected {expected}, got {_short(got)}")

        if not isinstance(d, dict):
            raise fail("<top>", "a JSON object", type(d).__name__)
        allowed = {"schema", "chip", "knobs", "targets", "metrics", "controller", "created", "eical_version",
                   "verdict"}
        for k in d:
            if k not in allowed:
                raise TableError(f"{where}: {_short(k, 60)}: unknown key; expected one of {', '.join(sorted(allowed))}")
        sch = d.get("schema")
        if not isinstance(sch, dict) or sch.get("name") != SCHEMA_NAME:
            raise fail("schema.name", repr(SCHEMA_NAME), (sch or {}).get("name") if isinstance(sch, dict) else sch)
        if sch.get("version") != SCHEMA_VERSION:
            raise fail("schema.version", str(SCHEMA_VERSION), sch.get("version"))
        chip = d.get("chip")
        if not isinstance(chip, dict):
            raise fail("chip", "an object", chip)
        for k in ("uid", "profile", "profile_sha256"):
            if not isinstance(chip.get(k), str) or not chip.get(k):
                raise fail(f"chip.{k}", "a non-empty string", chip.get(k))
        seed = chip.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise fail("chip.seed", "a non-negative integer or null", seed)
        knobs_d = d.get("knobs")
        if not isinstance(knobs_d, dict) or not knobs_d:
            raise fail("knobs", "a non-empty object", knobs_d)
        knobs = {}
        for name, kv in knobs_d.items():
            if not isinstance(kv, dict):
                raise fail(f"knobs.{name}", "an object", kv)
            if kv.get("sharing") not in ("neuron", "core", "chip"):
                raise fail(f"knobs.{name}.sharing", "one of 'neuron', 'core', 'chip'", kv.get("sharing"))
            bits = kv.get("bits")
            if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
                raise fail(f"knobs.{name}.bits", "an integer in [1, 16]", bits)
            codes = kv.get("codes")
            if not isinstance(codes, list) or not codes:
                raise fail(f"knobs.{name}.codes", "a non-empty list of integers", codes)
            for i, c in enumerate(codes):
                if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < (1 << bits):
                    raise fail(f"knobs.{name}.codes[{i}]", f"an integer in [0, {(1 << bits) - 1}]", c)
            knobs[name] = KnobTable(kv["sharing"], bits, list(codes))
        for k in ("targets", "metrics", "controller"):
            if k in d and not isinstance(d[k], dict):
                raise fail(k, "an object", d[k])
        verdict = check_verdict(d["verdict"], fail) if d.get("verdict") is not None else None
        return cls(chip_uid=chip["uid"], profile=chip["profile"], profile_sha256=chip["profile_sha256"], seed=seed,
                   knobs=knobs, targets=d.get("targets", {}), metrics=d.get("metrics", {}),
                   controller=d.get("controller", {}), created=str(d.get("created", "")),
                   eical_version=str(d.get("eical_version", "")), verdict=verdict)

    @classmethod
    def load(cls, path) -> "GainTable":
        """Read and validate ``table.json``. Any file gives a table or one ``TableError`` line naming it, in
        bounded time and memory: at most ``TABLE_MAX_BYTES`` are read, and the text must be UTF-8 JSON."""
        p = Path(path)
        what = "a gain table (table.json)"
        text = decode_utf8(p, read_limited(p, TABLE_MAX_BYTES, what, TableError), what, TableError)
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise TableError(f"{p}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise TableError(f"{p}: not a gain table: JSON nested too deeply") from None
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            raise TableError(f"{p}: not a usable gain table: {value_problem(e)}") from None
        return cls.from_dict(d, where=str(p))

    # -- checks against a chip --------------------------------------------------------------------------------
    def check_identity(self, identity: DeviceIdentity) -> None:
        """Refuse a chip this table was not made for (another uid, or another profile hash)."""
        if identity.uid != self.chip_uid:
            raise IdentityMismatch(f"table is for chip {self.chip_uid!r} but this chip is {identity.uid!r}")
        if identity.profile_sha256 != self.profile_sha256:
            raise IdentityMismatch(
                f"table is for profile {self.profile!r} sha256 {self.profile_sha256[:12]}..., but chip {identity.uid!r} "
                f"runs profile {identity.profile!r} sha256 {identity.profile_sha256[:12]}...")

    def check_knobs(self, knobs: Mapping[str, KnobSpec]) -> None:
        """Refuse codes that do not fit the chip's knobs (names, sharing, bits, group count)."""
        if set(self.knobs) != set(knobs):
            raise TableError(f"table has knobs {sorted(self.knobs)} but the chip has {sorted(knobs)}")
        for k, kt in self.knobs.items():
            spec = knobs[k]
            if kt.sharing != spec.sharing or kt.bits != spec.bits or len(kt.codes) != spec.n_groups:
                raise TableError(f"knob {k!r}: table has {len(kt.codes)} {kt.bits}-bit codes per {kt.sharing}, "
                                 f"chip has {spec.n_groups} {spec.bits}-bit codes per {spec.sharing}")


def check_verdict(v: Any, fail: Any) -> dict:
    """A table's ``verdict`` as the module docstring shows it; ``fail(path, expected, got)`` makes the error."""
    if not isinstance(v, dict):
        raise fail("verdict", "an object", v)
    for k in v:
        if k not in ("met", "complete", "criteria"):
            raise fail(f"verdict.{str(k)[:40]}", "only the keys met, complete and criteria", k)
    for k in ("met", "complete"):
        if not isinstance(v.get(k), bool):
            raise fail(f"verdict.{k}", "true or false", v.get(k))
    crit = v.get("criteria")
    if not isinstance(crit, list) or len(crit) > 64:
        raise fail("verdict.criteria", "a list of at most 64 criteria", crit)
    keys = {"name", "value", "limit", "met", "source", "uncertainty"}
    for i, c in enumerate(crit):
        at = f"verdict.criteria[{i}]"
        if not isinstance(c, dict) or set(c) != keys:
            raise fail(at, "an object with name, value, limit, met, source, uncertainty", c)
        if not isinstance(c["name"], str) or not 0 < len(c["name"]) <= 64:
            raise fail(f"{at}.name", "a criterion name", c["name"])
        for k, nullable in (("value", True), ("limit", False), ("uncertainty", True)):
            x = c[k]
            bad = isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
            if (x is None and not nullable) or (x is not None and bad):
                raise fail(f"{at}.{k}", "a finite number" + (" or null" if nullable else ""), x)
        if not isinstance(c["met"], bool):
            raise fail(f"{at}.met", "true or false", c["met"])
        if c["source"] not in VERDICT_SOURCES:
            raise fail(f"{at}.source", "'true' or 'measured'", c["source"])
    if v["met"] and (not v["complete"] or not all(c["met"] for c in crit)):
        raise fail("verdict.met", "false, as the run is incomplete or a criterion failed", v["met"])
    return {"met": v["met"], "complete": v["complete"], "criteria": [dict(c) for c in crit]}


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` cut to ``limit`` characters: error lines stay short whatever a file holds."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 4] + " ..."


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays (non-finite floats become null)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        v = float(o)
        return v if np.isfinite(v) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
