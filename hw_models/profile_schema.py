"""The schema a device profile is checked against (``hw_models.profile`` loads and holds profiles).

A spec is either a ``Leaf`` (a typed value with its range and default) or a ``Node`` (a mapping of named child
specs; a child may be a function of the whole profile, for sections that depend on the neuron model).
``validate`` checks a profile's data against ``SCHEMA`` and its cross-field rules, filling in defaults; anything wrong
raises one ``ProfileError`` whose message is a single line naming the file, the key path and what was expected.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

__all__ = ["ProfileError", "Leaf", "Node", "SCHEMA", "validate"]


class ProfileError(ValueError):
    """A profile file is missing, unreadable or invalid. ``str(err)`` is one line: file, key path, expectation."""

    def __init__(self, message: str):
        # One line whatever the file's keys or path contain (a key with a newline in it must not break it).
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` cut to ``limit`` characters: error lines stay short whatever a file holds."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 5] + " ...]" if r[:1] in "[{(" else r[:limit - 4] + " ..."


def _as_float(v: Any) -> float:
    """``float(v)``; NaN for an integer too large for a float (so that the range check refuses it)."""
    try:
        return float(v)
    except OverflowError:
        return float("nan")


# --------------------------------------------------------------------------------------------------------------
# Schema. A spec is either a leaf ``Leaf`` or a ``Node`` (a mapping of named child specs). Leaves know their type,
# range and default; ``required`` leaves have no default. Quantities carry their unit in the key name (``C_pF``).
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    kind: str  # "number" | "int" | "str" | "bool" | "choice" | "levels" | "list_number"
    lo: Optional[float] = None
    hi: Optional[float] = None
    default: Any = ...  # Ellipsis = required
    choices: tuple = ()
    lo_open: bool = False  # lo excluded (strictly positive quantities)

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "levels":
            return "a mapping {chip, core, neuron} of numbers in [0, %g]" % self.hi
        if self.kind in ("number", "int", "list_number"):
            what = {"number": "a number", "int": "an integer", "list_number": "a list of numbers"}[self.kind]
            # integer bounds in full (an 'integer in [1, 1.04858e+06]' would name the wrong bound)
            fmt = (lambda x: f"{int(x)}") if self.kind == "int" else (lambda x: f"{x:g}")
            if self.lo is not None and self.hi is not None:
                return f"{what} in {'(' if self.lo_open else '['}{fmt(self.lo)}, {fmt(self.hi)}]"
            if self.lo is not None:
                return f"{what} {'>' if self.lo_open else '>='} {fmt(self.lo)}"
            return what
        return {"str": "a string", "bool": "true or false"}[self.kind]


@dataclass(frozen=True)
class Node:
    children: Mapping[str, Union["Node", Leaf, Callable[[dict], Union["Node", Leaf]]]]
    optional: bool = False  # the whole section may be absent (then it is None)


def num(lo=None, hi=None, default=..., lo_open=False) -> Leaf:
    return Leaf("number", lo, hi, default, lo_open=lo_open)


def pos(hi=None, default=...) -> Leaf:
    """A strictly positive physical quantity."""
    return Leaf("number", 0.0, hi, default, lo_open=True)


def integer(lo=None, hi=None, default=...) -> Leaf:
    return Leaf("int", lo, hi, default)


def levels(hi: float = 2.0) -> Leaf:
    return Leaf("levels", 0.0, hi, default={"chip": 0.0, "core": 0.0, "neuron": 0.0})


COND_LIF_NEURON = Node({
    "C_pF": pos(1e5), "gL_nS": pos(1e4), "EL_mV": num(-120, 0), "Vth_mV": num(-120, 0), "Vreset_mV": num(-120, 0),
    "tref_ms": num(0, 100), "tau_e_ms": pos(1e3), "tau_i_ms": pos(1e3), "EE_mV": num(-50, 100),
    "EI_mV": num(-150, 0), "Vbal_mV": num(-120, 0),
    "Ge0_nS": pos(1e3), "Gi0_nS": pos(1e3),
})

DPI_NEURON = Node({
    "UT_mV": pos(100, default=25.0), "kappa": num(0.1, 1.0, default=0.705), "I0_pA": pos(100, default=0.5),
    "C_mem_pF": pos(1e3, default=3.0), "C_syn_pF": pos(1e3, default=24.5),
    "tau_mem_ms": pos(1e4, default=20.0), "tau_ampa_ms": pos(1e4, default=10.0), "tau_gaba_ms": pos(1e4, default=10.0),
    "gain_ratio_syn": pos(1e6, default=100.0), "gain_ratio_mem": pos(1e6, default=4.0),
    "t_pulse_us": pos(1e4, default=10.0), "tref_ms": num(0, 100, default=1.0), "Ispkthr_nA": pos(1e4, default=100.0),
    "Iw_e_nA": pos(1e4), "Iw_i_nA": pos(1e4), "Idc_pA": num(0, 1e6, default=0.0),
    "Vbal_mV": num(-1e3, 1e3, default=0.0),  # unused by dpi (its proxy needs no holding potential); kept for export
})

MISMATCH_COND_LIF = Node({
    "lognormal": Node({k: levels() for k in ("C", "gL", "tref", "tau_e", "tau_i", "eps_e", "eps_i")}),
    "offsets_mV": Node({k: levels(hi=50.0) for k in ("EL", "Vth", "Vreset")}),
    "synapse_sigma": num(0, 2, default=0.0),
})

MISMATCH_DPI = Node({
    "lognormal": Node({k: levels() for k in (
        "C_mem", "C_syn", "Itau_mem", "Itau_ampa", "Itau_gaba", "Igain_mem", "Igain_syn", "Ispkthr", "tref",
        "t_pulse", "eps_e", "eps_i")}),
    "synapse_sigma": num(0, 2, default=0.0),
})


def _neuron_spec(profile: dict) -> Node:
    return DPI_NEURON if profile.get("model") == "dpi" else COND_LIF_NEURON


def _mismatch_spec(profile: dict) -> Node:
    return MISMATCH_DPI if profile.get("model") == "dpi" else MISMATCH_COND_LIF


SCHEMA = Node({
    "schema": integer(1, 1),
    "name": Leaf("str"),
    "description": Leaf("str", default=""),
    "model": Leaf("choice", choices=("cond_lif", "dpi")),
    "geometry": Node({"cores": integer(1, 4096), "neurons_per_core": integer(1, 1 << 20)}),
    "dt_ms": num(0.001, 1.0, default=0.1),
    "speedup": pos(1e9, default=1.0),
    "neuron": _neuron_spec,
    "input": Node({
        "n_src_e": integer(0, 1 << 20), "n_src_i": integer(0, 1 << 20),
        "rate_e_hz": num(0, 1e4), "rate_i_hz": num(0, 1e4),
        "K_e": integer(0, 1 << 20), "K_i": integer(0, 1 << 20),
        "w_e": pos(1e3, default=1.0), "w_i": pos(1e3, default=1.0),
    }),
    "recurrent": Node({
        "n_exc": integer(1, 1 << 20),  # the first n_exc neurons are excitatory, the rest inhibitory
        "K_ee": integer(0, 1 << 16), "K_ei": integer(0, 1 << 16), "K_ie": integer(0, 1 << 16), "K_ii": integer(0, 1 << 16),
        "J_ee": num(0, 1e4), "J_ei": num(0, 1e4), "J_ie": num(0, 1e4), "J_ii": num(0, 1e4),
    }, optional=True),
    "mismatch": _mismatch_spec,
    "defects": Node({"dead_fraction": num(0, 0.5, default=0.0), "stuck_synapse_fraction": num(0, 0.5, default=0.0)}),
    "temperature": Node({
        "T0_K": num(200, 400, default=300.0),
        "coeff_per_K": Node({  # relative change per kelvin of bias-derived conductances or currents
            "leak": num(-0.2, 0.2, default=0.0), "exc": num(-0.2, 0.2, default=0.0), "inh": num(-0.2, 0.2, default=0.0),
        }),
    }),
    "knobs": Node({
        "sharing": Leaf("choice", choices=("neuron", "core", "chip")),
        "dac": Leaf("choice", choices=("linear", "coarse_fine"), default="linear"),
        "bits": integer(1, 16),
        "code_ref_e": integer(1, 65535),
        "code_ref_i": integer(1, 65535),
        "coarse_fine": Node({
            # top of each coarse range (fine = 255), nA, before the parameter's scale factor
            "coarse_max_nA": Leaf("list_number", 0.0, 1e5, lo_open=True),
            "floor_pA": num(0, 1e3, default=0.5),
            # relative error of the fine DAC's binary-weighted bits 5, 6, 7 (the drops at multiples of 32)
            "msb_weight_error": Leaf("list_number", -0.5, 0.5, default=[0.0, 0.0, 0.0]),
        }, optional=True),
    }),
    "observe": Node({
        "counter_bits": integer(1, 32, default=16),
        "proxy_channels": Leaf("choice", choices=("all", "one_per_core"), default="all"),
        "proxy_offset_sd_pA": num(0, 1e6, default=0.0),
        "proxy_noise_sd_pA": num(0, 1e6, default=0.0),
        "proxy_lsb_pA": num(0, 1e6, default=0.0),  # 0: no quantisation
        "proxy_range_pA": num(0, 1e9, default=1e9, lo_open=True),  # symmetric: readings clip to +-range
    }),
    # rate_inh_hz: recurrent profiles only, the inhibitory neurons' own target (default: rate_hz)
    "targets": Node({"rate_hz": pos(1e4, default=10.0), "rate_inh_hz": Leaf("number", 0.0, 1e4, None, lo_open=True)}),
})


def _type_ok(leaf: Leaf, v: Any) -> bool:
    if leaf.kind in ("number",):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if leaf.kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if leaf.kind in ("str", "choice"):
        return isinstance(v, str)
    if leaf.kind == "bool":
        return isinstance(v, bool)
    return True


def _in_range(leaf: Leaf, v: float) -> bool:
    if v != v:  # NaN
        return False
    if leaf.lo is not None and (v <= leaf.lo if leaf.lo_open else v < leaf.lo):
        return False
    if leaf.hi is not None and v > leaf.hi:
        return False
    return True


def _check_leaf(leaf: Leaf, v: Any, where: str, path: str) -> Any:
    def fail() -> ProfileError:
        return ProfileError(f"{where}: {path}: expected {leaf.expected()}, got {_short(v)}")

    if leaf.kind == "levels":
        if not isinstance(v, dict):
            raise fail()
        out = {"chip": 0.0, "core": 0.0, "neuron": 0.0}
        for k, x in v.items():
            if k not in out:
                raise ProfileError(f"{where}: {path}.{k}: unknown key; expected one of chip, core, neuron")
            if not _type_ok(num(), x) or not _in_range(leaf, _as_float(x)):
                raise ProfileError(f"{where}: {path}.{k}: expected a number in [0, {leaf.hi:g}], got {_short(x)}")
            out[k] = float(x)
        return out
    if leaf.kind == "list_number":
        if not isinstance(v, list) or not v:
            raise fail()
        for i, x in enumerate(v):
            if not _type_ok(num(), x) or not _in_range(leaf, _as_float(x)):
                raise ProfileError(f"{where}: {path}[{i}]: expected {leaf.expected()[len('a list of '):]}, "
                                   f"got {_short(x)}")
        return [float(x) for x in v]
    if not _type_ok(leaf, v):
        raise fail()
    if leaf.kind == "choice" and v not in leaf.choices:
        raise fail()
    if leaf.kind in ("number", "int") and not _in_range(leaf, _as_float(v)):
        raise fail()
    return float(v) if leaf.kind == "number" else v


def _check_node(node: Node, data: Any, where: str, path: str, root: dict) -> dict:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: {path or '<top>'}: expected a mapping, got {_short(data)}")
    out: dict = {}
    for key in data:
        if key not in node.children:
            near = ", ".join(sorted(node.children))
            raise ProfileError(f"{where}: {path + '.' if path else ''}{_key(key)}: unknown key; expected one of {near}")
    for key, spec in node.children.items():
        sub = f"{path}.{key}" if path else key
        if callable(spec) and not isinstance(spec, (Leaf, Node)):
            spec = spec(root)
        if key not in data or data[key] is None:
            if isinstance(spec, Leaf):
                if spec.default is ...:
                    raise ProfileError(f"{where}: {sub}: missing; expected {spec.expected()}")
                out[key] = copy.deepcopy(spec.default)
            elif spec.optional:
                out[key] = None
            else:
                if not _all_default(spec):
                    raise ProfileError(f"{where}: {sub}: missing; expected a mapping")
                out[key] = _check_node(spec, {}, where, sub, root)
            continue
        if isinstance(spec, Leaf):
            out[key] = _check_leaf(spec, data[key], where, sub)
        else:
            out[key] = _check_node(spec, data[key], where, sub, root)
    return out


def _key(key: Any) -> str:
    """A key as it appears in an error line: strings as written, anything else (a number, a date) as repr."""
    return _short(key, 60)[1:-1] if isinstance(key, str) and len(repr(key)) <= 60 else _short(key, 60)


def _all_default(node: Node) -> bool:
    for spec in node.children.values():
        if callable(spec) and not isinstance(spec, (Leaf, Node)):
            return False
        if isinstance(spec, Leaf) and spec.default is ...:
            return False
        if isinstance(spec, Node) and not spec.optional and not _all_default(spec):
            return False
    return True


def _check_consistency(d: dict, where: str) -> None:
    """Cross-field rules a single leaf cannot express."""
    n = d["neuron"]
    if d["model"] == "cond_lif":
        if not n["EI_mV"] < n["EL_mV"] < n["EE_mV"]:
            raise ProfileError(f"{where}: neuron: expected EI_mV < EL_mV < EE_mV, got {n['EI_mV']}, {n['EL_mV']}, {n['EE_mV']}")
        if not n["Vreset_mV"] < n["Vth_mV"]:
            raise ProfileError(f"{where}: neuron: expected Vreset_mV < Vth_mV, got {n['Vreset_mV']} >= {n['Vth_mV']}")
        if not n["EI_mV"] < n["Vbal_mV"] < n["EE_mV"]:
            raise ProfileError(f"{where}: neuron.Vbal_mV: expected a value between EI_mV and EE_mV, got {n['Vbal_mV']}")
    inp = d["input"]
    for k, src in (("K_e", "n_src_e"), ("K_i", "n_src_i")):
        if inp[k] > inp[src]:
            raise ProfileError(f"{where}: input.{k}: expected at most input.{src} = {inp[src]}, got {inp[k]}")
    kn = d["knobs"]
    top = (1 << kn["bits"]) - 1
    for k in ("code_ref_e", "code_ref_i"):
        if kn[k] > top:
            raise ProfileError(f"{where}: knobs.{k}: expected an integer in [1, {top}] for a {kn['bits']}-bit DAC, got {kn[k]}")
    if kn["dac"] == "coarse_fine":
        if kn["coarse_fine"] is None:
            raise ProfileError(f"{where}: knobs.coarse_fine: missing; expected a mapping for dac: coarse_fine")
        if kn["bits"] != 11:
            raise ProfileError(f"{where}: knobs.bits: expected 11 for a coarse/fine DAC (code = coarse*256 + fine), got {kn['bits']}")
        if len(kn["coarse_fine"]["coarse_max_nA"]) > 8:
            raise ProfileError(f"{where}: knobs.coarse_fine.coarse_max_nA: expected at most 8 coarse ranges")
        if len(kn["coarse_fine"]["msb_weight_error"]) != 3:
            raise ProfileError(f"{where}: knobs.coarse_fine.msb_weight_error: expected 3 numbers (bits 5, 6, 7)")
    rec = d["recurrent"]
    if d["targets"]["rate_inh_hz"] is not None and rec is None:
        raise ProfileError(f"{where}: targets.rate_inh_hz: only a recurrent profile (with inhibitory chip neurons) "
                           f"can have a separate inhibitory target")
    if rec is not None:
        n_all = d["geometry"]["cores"] * d["geometry"]["neurons_per_core"]
        if rec["n_exc"] >= n_all:
            raise ProfileError(f"{where}: recurrent.n_exc: expected fewer than the chip's {n_all} neurons, got {rec['n_exc']}")
        n_inh = n_all - rec["n_exc"]
        for k, pool in (("K_ee", rec["n_exc"]), ("K_ie", rec["n_exc"]), ("K_ei", n_inh), ("K_ii", n_inh)):
            if rec[k] > pool:
                raise ProfileError(f"{where}: recurrent.{k}: expected at most {pool} (the presynaptic population), got {rec[k]}")


def validate(data: Any, source: str) -> dict:
    """``data`` checked against ``SCHEMA`` (defaults filled in) and against the rules across fields; raises
    ``ProfileError`` naming ``source``."""
    out = _check_node(SCHEMA, data, source, "", data)
    _check_consistency(out, source)
    return out
