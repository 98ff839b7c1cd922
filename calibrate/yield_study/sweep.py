"""Sweeps of a yield study: which profile values vary, and the profile of each point of the grid.

``KEY=V1,V2,...`` or ``KEY=START:STOP:COUNT`` (COUNT evenly spaced values, both ends included). ``KEY`` is

- any profile key path, checked against the profile schema (``hw_models.profile.SCHEMA``): a section such as
  ``mismatch.lognormal.eps_e`` of chip/core/neuron levels takes one more part (``...eps_e.neuron``); values are
  parsed as the leaf's type (integers for ``knobs.bits``, numbers, or one of a choice's names);
- ``mismatch.scale``: a factor on every mismatch sigma and offset sd of the profile (``scale_mismatch``).

``knobs.bits`` keeps the DAC's full-scale range: the reference codes ``knobs.code_ref_e/_i`` are scaled by
``2**(bits - profile bits)`` with it (``with_dac_bits``), so a sweep of bits changes the resolution only. (Holding
code_ref instead would shrink the range with the bits until the profile is invalid: devboard's code_ref 64 does
not fit a 6-bit DAC.) An explicit ``knobs.code_ref_e`` sweep still wins.

Several sweeps make a grid (every combination, the first sweep varying slowest). Every point's profile is built
and validated when the sweep is parsed, so a value out of range fails before anything runs, naming the key.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hw_models.profile import Profile
from hw_models.profile_schema import SCHEMA, Leaf, Node, ProfileError

__all__ = ["Sweep", "SweepError", "parse_sweep", "grid", "point_key", "apply_point", "scale_mismatch",
           "with_dac_bits", "MISMATCH_SCALE"]

MISMATCH_SCALE = "mismatch.scale"
MAX_VALUES = 1000  # per sweep: a typo such as 0:1:10000 should not silently queue a million chips


class SweepError(ValueError):
    """A sweep or its values are wrong; ``str(err)`` is one line naming the key."""


@dataclass(frozen=True)
class Sweep:
    """One swept key and its values (typed: int, float, str or bool)."""

    key: str
    values: tuple

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)


def _leaf_for(key: str, profile: Profile) -> Leaf:
    """The schema leaf of a dotted key path (levels entries resolve to a number leaf); SweepError otherwise."""
    parts = key.split(".")
    node: Any = SCHEMA
    data: Any = profile.data
    for i, part in enumerate(parts):
        where = ".".join(parts[:i + 1])
        if isinstance(node, Leaf) and node.kind == "levels":
            if part not in ("chip", "core", "neuron") or i != len(parts) - 1:
                raise SweepError(f"--sweep {key}: {where}: unknown key; expected one of chip, core, neuron")
            return Leaf("number", 0.0, node.hi)
        if isinstance(node, Leaf):
            raise SweepError(f"--sweep {key}: {'.'.join(parts[:i])} is a value, it has no key {part!r}")
        children = node.children
        if part not in children:
            raise SweepError(f"--sweep {key}: {where}: unknown key; expected one of {', '.join(sorted(children))}")
        spec = children[part]
        if callable(spec) and not isinstance(spec, (Leaf, Node)):
            spec = spec(profile.data)
        if isinstance(spec, Node) and spec.optional and (not isinstance(data, dict) or data.get(part) is None):
            raise SweepError(f"--sweep {key}: {where}: this profile has no such section")
        node = spec
        data = data.get(part) if isinstance(data, dict) else None
    if isinstance(node, Node):
        raise SweepError(f"--sweep {key}: names a section, not a value; expected one of "
                         f"{', '.join(key + '.' + c for c in sorted(node.children))}")
    if node.kind == "levels":
        raise SweepError(f"--sweep {key}: takes a level; expected {key}.chip, {key}.core or {key}.neuron")
    if node.kind == "list_number":
        raise SweepError(f"--sweep {key}: a list of numbers cannot be swept")
    if key in ("schema", "name", "model"):
        raise SweepError(f"--sweep {key}: names the profile itself and cannot be swept")
    return node


def _typed(leaf: Leaf, text: str, key: str):
    t = text.strip()
    if leaf.kind == "int":
        try:
            f = float(t)
        except ValueError:
            raise SweepError(f"--sweep {key}: expected integers, got {t!r}") from None
        if not f.is_integer():
            raise SweepError(f"--sweep {key}: expected integers, got {t!r}")
        return int(f)
    if leaf.kind == "number":
        try:
            v = float(t)
        except ValueError:
            raise SweepError(f"--sweep {key}: expected numbers, got {t!r}") from None
        if not math.isfinite(v):
            raise SweepError(f"--sweep {key}: expected finite numbers, got {t!r}")
        return v
    if leaf.kind == "bool":
        if t.lower() not in ("true", "false"):
            raise SweepError(f"--sweep {key}: expected true or false, got {t!r}")
        return t.lower() == "true"
    if leaf.kind == "choice" and t not in leaf.choices:
        raise SweepError(f"--sweep {key}: expected {leaf.expected()}, got {t!r}")
    return t


def parse_sweep(text: str, profile: Profile) -> Sweep:
    """Parse ``KEY=V1,V2,...`` or ``KEY=START:STOP:COUNT`` for ``profile``; SweepError (one line) when wrong."""
    if "=" not in text:
        raise SweepError(f"--sweep {text!r}: expected KEY=V1,V2,... or KEY=START:STOP:COUNT")
    key, _, rhs = text.partition("=")
    key = key.strip()
    if not key or not rhs.strip():
        raise SweepError(f"--sweep {text!r}: expected KEY=V1,V2,... or KEY=START:STOP:COUNT")
    leaf = Leaf("number", 0.0, None, lo_open=True) if key == MISMATCH_SCALE else _leaf_for(key, profile)
    if rhs.count(":") == 2 and "," not in rhs:
        a, b, n = rhs.split(":")
        if leaf.kind not in ("number", "int"):
            raise SweepError(f"--sweep {key}: START:STOP:COUNT needs a numeric key; give the values as V1,V2,...")
        try:
            start, stop, count = float(a), float(b), int(n)
        except ValueError:
            raise SweepError(f"--sweep {key}: expected START:STOP:COUNT (numbers, a whole COUNT), got {rhs!r}") from None
        if not (1 <= count <= MAX_VALUES) or not (math.isfinite(start) and math.isfinite(stop)):
            raise SweepError(f"--sweep {key}: COUNT must be in [1, {MAX_VALUES}] and START, STOP finite, got {rhs!r}")
        xs = np.linspace(start, stop, count) if count > 1 else np.array([start])
        if leaf.kind == "int":
            if not all(float(x).is_integer() for x in np.round(xs, 9)):
                raise SweepError(f"--sweep {key}: {rhs} does not give integers; expected integers")
            values = tuple(int(round(x)) for x in xs)
        else:
            values = tuple(float(round(x, 12)) for x in xs)
    else:
        items = [v for v in rhs.split(",")]
        if any(not v.strip() for v in items):
            raise SweepError(f"--sweep {key}: an empty value in {rhs!r}")
        values = tuple(_typed(leaf, v, key) for v in items)
        if len(values) > MAX_VALUES:
            raise SweepError(f"--sweep {key}: at most {MAX_VALUES} values")
    if len(set(values)) != len(values):
        raise SweepError(f"--sweep {key}: a value is repeated in {rhs!r}")
    if key == MISMATCH_SCALE and any(v <= 0 for v in values):
        raise SweepError(f"--sweep {key}: expected factors > 0, got {rhs!r}")
    return Sweep(key=key, values=values)


def grid(sweeps: Sequence[Sweep]) -> list[dict[str, Any]]:
    """Every combination of the sweeps' values (the first sweep slowest); ``[{}]`` without sweeps."""
    keys = [s.key for s in sweeps]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SweepError(f"--sweep {dup}: given twice; give all its values in one --sweep")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(s.values for s in sweeps))]


def point_key(values: Mapping[str, Any]) -> str:
    """A sweep point's identity in the results (canonical JSON of its values, keys in sweep order)."""
    return json.dumps(list(values.items()), separators=(",", ":"))


def scale_mismatch(profile: Profile, factor: float) -> Profile:
    """``profile`` with every mismatch sigma and offset sd multiplied by ``factor``: the lognormal sigmas at chip,
    core and neuron level, the potential offsets' sds (cond_lif) and the per-synapse weight sigma. (The readout's
    ``observe.proxy_offset_sd_pA`` belongs to the ADC, not to the neurons: sweep it on its own.)"""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
        raise SweepError(f"mismatch.scale: expected a factor >= 0, got {factor!r}")
    mm = profile["mismatch"]
    changes: dict[str, float] = {}
    for section in ("lognormal", "offsets_mV"):
        for name, lv in (mm.get(section) or {}).items():
            for level, sigma in lv.items():
                changes[f"mismatch.{section}.{name}.{level}"] = float(sigma) * factor
    changes["mismatch.synapse_sigma"] = float(mm["synapse_sigma"]) * factor
    return _changed(profile, changes, f"mismatch.scale={factor:g}")


def with_dac_bits(profile: Profile, bits: int) -> Profile:
    """``profile`` with ``bits``-bit linear gain DACs of the same full-scale range: ``code_ref`` scales with
    ``2**(bits - profile bits)`` (at least 1), so nominal gain stays at the same fraction of full scale."""
    kn = profile["knobs"]
    if kn["dac"] != "linear":
        return _changed(profile, {"knobs.bits": bits}, f"knobs.bits={bits}")  # validation names the problem
    f = 2.0 ** (int(bits) - kn["bits"])
    return _changed(profile, {"knobs.bits": int(bits),
                              "knobs.code_ref_e": max(1, int(round(kn["code_ref_e"] * f))),
                              "knobs.code_ref_i": max(1, int(round(kn["code_ref_i"] * f)))}, f"knobs.bits={bits}")


def _changed(profile: Profile, changes: Mapping[str, Any], what: str) -> Profile:
    try:
        return profile.with_changes(changes)
    except ProfileError as e:
        # Profile's message names the file and key; say which sweep value made it
        raise SweepError(f"--sweep {what}: {e}") from None


def apply_point(profile: Profile, values: Mapping[str, Any]) -> Profile:
    """The profile of one sweep point: ``mismatch.scale`` first, then ``knobs.bits`` (with its code_ref), then
    every other key as a plain override; validated (SweepError naming the key when the result is invalid)."""
    p = profile
    if MISMATCH_SCALE in values:
        p = scale_mismatch(p, values[MISMATCH_SCALE])
    if "knobs.bits" in values:
        p = with_dac_bits(p, values["knobs.bits"])
    rest = {k: v for k, v in values.items() if k not in (MISMATCH_SCALE, "knobs.bits")}
    if rest:
        p = _changed(p, rest, ",".join(f"{k}={v}" for k, v in rest.items()))
    return p
