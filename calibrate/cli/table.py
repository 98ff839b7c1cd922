"""``eical table show T`` and ``eical table diff A B``: look into gain tables without a board.

``show`` prints who a table is for, where it came from (a calibration, or read back from a board), each knob's
codes (range, median, codes at the DAC's ends, the gains they give through the knob's DAC), the verdict and the
figures it carries. ``diff`` compares two tables of the same chip geometry knob by knob: how many codes changed,
by how much in code and in gain (through the DAC's nominal transfer: for a coarse/fine DAC such as dynapse2's
the code is not the gain, codes 127 and 128 differ by -5.5 %), and which neurons or knob groups moved most.

The DAC transfer comes from the table's profile when it is installed here with the same hash
(``hw_models.chip.make_knobs``); otherwise only codes are compared, and the output says so.
"""
from __future__ import annotations

import argparse
import json
import math
from typing import Any, Optional

import numpy as np

from .exits import CliError, ExitCode
from .output import fmt

__all__ = ["add_subcommands", "table_summary", "table_diff"]


def _knob_specs(table: Any) -> tuple[Optional[dict], str]:
    """The knobs' DAC descriptions from the table's profile (when installed here with the same hash), and a note
    when there are none."""
    try:
        from hw_models.chip import make_knobs
        from hw_models.profile import load_profile

        prof = load_profile(table.profile)
    except Exception:
        return None, f"profile {table.profile!r} is not installed here: codes only, no gains"
    if prof.sha256 != table.profile_sha256:
        return None, (f"profile {table.profile!r} installed here has another hash ({prof.sha256[:12]}... vs the "
                      f"table's {table.profile_sha256[:12]}...): codes only, no gains")
    specs = make_knobs(prof)
    for name, kt in table.knobs.items():
        s = specs.get(name)
        if s is None or s.bits != kt.bits or s.n_groups != len(kt.codes):
            return None, f"the table's knob {name!r} does not match profile {table.profile!r}: codes only"
    return specs, ""


def _gains(spec: Any, codes: np.ndarray) -> np.ndarray:
    """Nominal gains of ``codes`` (1.0 at code_ref); NaN for codes the DAC does not have."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.full(codes.shape, np.nan)
    ok = (codes >= 0) & (codes <= spec.max_code)
    out[ok] = spec.nominal_gain(codes[ok])
    return out


def _verdict_of(table: Any) -> Any:
    v = getattr(table, "verdict", None)
    if v is not None and hasattr(v, "to_dict"):
        v = v.to_dict()
    return v


def table_summary(table: Any, source: str = "") -> dict:
    """What ``table show`` prints, as a dict (the ``--json`` output)."""
    specs, note = _knob_specs(table)
    knobs = {}
    for name, kt in table.knobs.items():
        c = np.asarray(kt.codes, dtype=np.int64)
        top = (1 << kt.bits) - 1
        k = {"sharing": kt.sharing, "bits": kt.bits, "groups": int(c.size), "min": int(c.min()),
             "median": float(np.median(c)), "max": int(c.max()), "mean": float(c.mean()),
             "at_zero": int((c == 0).sum()), "at_top": int((c == top).sum())}
        if specs is not None:
            s = specs[name]
            g = _gains(s, c)
            k.update(dac=s.dac, code_ref=int(s.code_ref), gain_min=float(np.nanmin(g)),
                     gain_median=float(np.nanmedian(g)), gain_max=float(np.nanmax(g)))
        knobs[name] = k
    return {"source": source, "chip": {"uid": table.chip_uid, "profile": table.profile,
                                       "profile_sha256": table.profile_sha256, "seed": table.seed},
            "created": table.created, "eical_version": table.eical_version, "controller": table.controller,
            "targets": table.targets, "knobs": knobs, "gains_note": note, "verdict": _verdict_of(table),
            "metrics": table.metrics}


def _print_summary(d: dict) -> None:
    from ..report import verdict_line

    chip = d["chip"]
    seed = f", seed {chip['seed']}" if chip.get("seed") is not None else ""
    print(f"table      {d['source']}")
    print(f"chip       {chip['uid']} (profile {chip['profile']}, sha256 {chip['profile_sha256'][:16]}...{seed})")
    ctrl = d.get("controller") or {}
    if ctrl.get("name") == "read-back":
        st = ctrl.get("settings") or {}
        made = (f"read back from board at {st.get('port') or '?'} (bank {st.get('bank')}, gen {st.get('generation')},"
                f" crc {st.get('crc')}, {'active' if st.get('active') else 'inactive'}) on {d['created'] or '?'}")
    else:
        made = f"{d['created'] or '?'} by eical {d['eical_version'] or '?'}"
        if ctrl.get("name"):
            budget = (ctrl.get("settings") or {}).get("budget_ms")
            made += f", controller {ctrl['name']}" + (f" (budget {budget / 1e3:g} s)" if budget else "")
    print(f"made       {made}")
    for j, (name, k) in enumerate(d["knobs"].items()):
        top = (1 << k["bits"]) - 1
        dac = f" {k['dac']}" if k.get("dac") else ""
        line = (f"{name}: {k['bits']}-bit{dac} per {k['sharing']}, {k['groups']} codes: min {k['min']}, median "
                f"{k['median']:g}, max {k['max']}; {k['at_zero']} at 0, {k['at_top']} at {top}")
        if "gain_median" in k:
            line += (f"; gain (code_ref {k['code_ref']} = 1) median {k['gain_median']:.3f}, range "
                     f"{k['gain_min']:.3f}-{k['gain_max']:.3f}")
        print(f"{'knobs' if j == 0 else '':10s} {line}")
    if d["gains_note"]:
        print(f"{'':10s} ({d['gains_note']})")
    t = d.get("targets") or {}
    if t:
        print("targets    " + ", ".join(_target(k, v) for k, v in t.items()))
    print(f"verdict    {verdict_line(d.get('verdict'))}")
    m = d.get("metrics") or {}
    if not m:
        why = " (read back from a board: the board stores codes only)" if ctrl.get("name") == "read-back" else ""
        print(f"metrics    none{why}")
    for side in ("before", "after"):
        f = m.get(side) or {}
        if f:
            print(f"{'metrics' if side == 'before' or not m.get('before') else '':10s} {side}: rate "
                  f"{fmt(f.get('rate_mean_hz'), '.2f')} Hz, CV {fmt(f.get('rate_cv'))}, balance p95 "
                  f"{fmt(f.get('balance_p95'))} (measured, {fmt(f.get('window_s'), 'g')} s window)")


def _target(key: str, value: Any) -> str:
    """``rate_hz 10.0`` -> ``rate 10 Hz``."""
    for suffix, unit in (("_hz", "Hz"), ("_pa", "pA")):
        if key.endswith(suffix) and isinstance(value, (int, float)):
            return f"{key[:-len(suffix)].replace('_', ' ')} {value:g} {unit}"
    return f"{key} {value}"


def _group_name(sharing: str, i: int) -> str:
    return {"neuron": f"neuron {i}", "core": f"core {i}", "chip": "chip"}.get(sharing, f"group {i}")


def table_diff(a: Any, b: Any, top: int = 5) -> dict:
    """Knob by knob, what changed from table ``a`` to table ``b``; raises CliError when their knobs differ."""
    if set(a.knobs) != set(b.knobs):
        raise CliError(f"cannot diff: the tables have knobs {sorted(a.knobs)} and {sorted(b.knobs)}")
    for name in a.knobs:
        ka, kb = a.knobs[name], b.knobs[name]
        if (ka.sharing, ka.bits, len(ka.codes)) != (kb.sharing, kb.bits, len(kb.codes)):
            raise CliError(f"cannot diff knob {name!r}: {len(ka.codes)} {ka.bits}-bit codes per {ka.sharing} "
                           f"against {len(kb.codes)} {kb.bits}-bit codes per {kb.sharing}")
    notes = []
    if a.chip_uid != b.chip_uid:
        notes.append(f"the tables are for different chips ({a.chip_uid} and {b.chip_uid}): codes are compared "
                     "group by group all the same")
    if a.profile_sha256 != b.profile_sha256:
        notes.append(f"the tables are for different profiles ({a.profile} {a.profile_sha256[:12]}... and "
                     f"{b.profile} {b.profile_sha256[:12]}...)")
    specs, gains_note = _knob_specs(a)
    if gains_note:
        notes.append(gains_note)
    knobs = {}
    moves = []  # per knob: relative gain change per group (or code change without gains)
    for name in sorted(a.knobs):
        ca = np.asarray(a.knobs[name].codes, dtype=np.int64)
        cb = np.asarray(b.knobs[name].codes, dtype=np.int64)
        dc = cb - ca
        changed = dc != 0
        k = {"groups": int(ca.size), "sharing": a.knobs[name].sharing, "changed": int(changed.sum()),
             "code_change_mean": float(dc.mean()), "code_change_max_abs": int(np.abs(dc).max()),
             "up": int((dc > 0).sum()), "down": int((dc < 0).sum())}
        if specs is not None:
            ga, gb = _gains(specs[name], ca), _gains(specs[name], cb)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(ga > 0, gb / ga - 1.0, np.where(gb > 0, np.inf, 0.0))
            k["dac"] = specs[name].dac
            ch = rel[changed & np.isfinite(rel)]
            k["gain_change_median_pct"] = float(np.median(np.abs(ch)) * 100) if ch.size else 0.0
            k["gain_change_max_pct"] = float(np.max(np.abs(ch)) * 100) if ch.size else 0.0
            # codes whose step and gain step disagree in sign: the DAC is not monotonic there (coarse/fine)
            k["gain_against_code"] = int(((np.sign(dc) * np.sign(gb - ga)) < 0).sum())
            moves.append((name, ca, cb, rel, ga, gb))
        else:
            moves.append((name, ca, cb, None, None, None))
        knobs[name] = k
    # which groups moved most: the largest relative gain change over the knobs (codes when there are no gains)
    n = len(next(iter(a.knobs.values())).codes)
    same_groups = all(len(kt.codes) == n for kt in a.knobs.values())
    movers = []
    if same_groups:
        if specs is not None:
            score = np.max([np.abs(np.nan_to_num(m[3], nan=0.0, posinf=1e9)) for m in moves], axis=0)
        else:
            score = np.max([np.abs(m[2] - m[1]).astype(float) for m in moves], axis=0)
        order = [int(i) for i in np.argsort(-score, kind="stable") if score[i] > 0][:top]
        sharing = next(iter(a.knobs.values())).sharing
        for i in order:
            entry = {"group": i, "name": _group_name(sharing, i), "knobs": {}}
            for name, ca, cb, rel, ga, gb in moves:
                e = {"from": int(ca[i]), "to": int(cb[i])}
                if rel is not None:
                    e["gain_change_pct"] = None if not math.isfinite(rel[i]) else float(rel[i] * 100)
                entry["knobs"][name] = e
            movers.append(entry)
    return {"a": {"uid": a.chip_uid, "profile": a.profile}, "b": {"uid": b.chip_uid, "profile": b.profile},
            "knobs": knobs, "moved_most": movers, "notes": notes, "gains": specs is not None}


def _print_diff(d: dict, a_name: str, b_name: str) -> None:
    print(f"A  {a_name}  ({d['a']['uid']}, {d['a']['profile']})")
    print(f"B  {b_name}  ({d['b']['uid']}, {d['b']['profile']})")
    for note in d["notes"]:
        print(f"note: {note}")
    total = sum(k["changed"] for k in d["knobs"].values())
    if total == 0:
        print("no code differs: the tables hold the same codes")
        return
    for name, k in d["knobs"].items():
        unit = {"neuron": "neurons", "core": "cores", "chip": "chip"}.get(k["sharing"], "groups")
        line = (f"{name}: {k['changed']} of {k['groups']} {unit} changed ({k['up']} up, {k['down']} down); code "
                f"change mean {k['code_change_mean']:+.2f}, largest {k['code_change_max_abs']}")
        if "gain_change_median_pct" in k:
            line += (f"; gain change ({k['dac']} DAC) median {k['gain_change_median_pct']:.1f} %, largest "
                     f"{k['gain_change_max_pct']:.1f} %")
            if k["gain_against_code"]:
                line += f"; {k['gain_against_code']} moved their gain against their code (non-monotonic DAC)"
        print(line)
    if d["moved_most"]:
        print("moved most:")
        for m in d["moved_most"]:
            parts = []
            for name, e in m["knobs"].items():
                p = f"{name} {e['from']} -> {e['to']}"
                if "gain_change_pct" in e:
                    p += " (gain from 0)" if e["gain_change_pct"] is None else f" ({e['gain_change_pct']:+.1f} %)"
                parts.append(p)
            print(f"  {m['name']:>10s}: " + ", ".join(parts))


def _load(path: str) -> Any:
    from hw_models.table import GainTable

    return GainTable.load(path)  # TableError -> exit 2, one line naming the file


def _cmd_show(args: argparse.Namespace) -> int:
    d = table_summary(_load(args.table), source=args.table)
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    else:
        _print_summary(d)
    return ExitCode.OK


def _cmd_diff(args: argparse.Namespace) -> int:
    d = table_diff(_load(args.a), _load(args.b), top=args.top)
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        _print_diff(d, args.a, args.b)
    return ExitCode.OK


def _top(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


def add_subcommands(subparsers: Any) -> None:
    """Register ``table show`` and ``table diff``."""
    t = subparsers.add_parser("table", help="inspect and compare gain tables (table.json)",
                              description="Gain tables without a board: show one, or diff two.")
    sub = t.add_subparsers(dest="table_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("show", help="who a table is for, its codes and gains per knob, verdict and figures",
                       description="Identity, origin (calibration or read back from a board), each knob's codes and "
                                   "the gains they give through the knob's DAC, the verdict and the figures.")
    p.add_argument("table", help="a table.json")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser("diff", help="per-knob code and gain changes from table A to B, and what moved most",
                       description="Compares two tables of the same knob geometry: per knob, how many codes changed, "
                                   "by how much in code and in gain (through the DAC's nominal transfer, which for a "
                                   "coarse/fine DAC is not the code), and the neurons or groups that moved most.")
    p.add_argument("a", help="table A (before)")
    p.add_argument("b", help="table B (after)")
    p.add_argument("--top", type=_top, default=5, help="how many of the groups that moved most to list (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=_cmd_diff)
