"""One chip instance: every frozen mismatch draw, as a pure function of (profile, seed).

``draw_chip(profile, seed)`` follows MODEL.md section 3. All randomness comes from one
``numpy.random.SeedSequence(seed)``, spawned into these child streams, always in this order:

====  =====================================================================================================
 0    chip-level z, one per quantity, in the order of the profile's mismatch table
 1    core-level z, [cores] per quantity, same order
 2    neuron-level z, [N] per quantity, same order (lognormal quantities, then potential offsets)
 3    external input connectivity (which K_e of n_src_e and K_i of n_src_i sources) and synaptic weights
 4    recurrent connectivity and weights (recurrent profiles only)
 5    defects: dead neurons, stuck synapses
 6    the proxy ADC's per-neuron offsets
 7    potential redraws (neurons whose drawn potentials break Vreset < Vth or EI < EL < EE)
 8    run time: spawned again by the engine into (input spikes, ADC read noise)
====  =====================================================================================================

So the same chip (and, run with the same codes, the same spike trains) comes back on any machine, in any process
and from any backend.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.sparse as sp

from .device import KnobSpec
from .profile import Profile, load_profile

__all__ = ["Chip", "draw_chip", "make_knobs", "coarse_fine_transfer", "export_npz", "EXPORT_PARAMS", "N_STREAMS"]

N_STREAMS = 9

# Which physical quantity each lognormal mismatch entry scales, per model: (mismatch key, parameter name,
# nominal key in profile.neuron, unit conversion). ``eps_e``/``eps_i`` are the per-neuron gain factors of the two
# synaptic gain stages (nominal 1).
_COND_LIF_LOGNORMAL = [
    ("C", "C", "C_pF"), ("gL", "gL", "gL_nS"), ("tref", "tref", "tref_ms"),
    ("tau_e", "tau_e", "tau_e_ms"), ("tau_i", "tau_i", "tau_i_ms"), ("eps_e", "eps_e", None), ("eps_i", "eps_i", None),
]
_COND_LIF_OFFSETS = [("EL", "EL_mV"), ("Vth", "Vth_mV"), ("Vreset", "Vreset_mV")]

_DPI_LOGNORMAL = [
    ("C_mem", "C_mem", "C_mem_pF"), ("C_syn", "C_syn", "C_syn_pF"),
    ("Itau_mem", "Itau_mem", None), ("Itau_ampa", "Itau_ampa", None), ("Itau_gaba", "Itau_gaba", None),
    ("Igain_mem", "Igain_mem", None), ("Igain_syn", "Igain_syn", None), ("Ispkthr", "Ispkthr", "Ispkthr_nA"),
    ("tref", "tref", "tref_ms"), ("t_pulse", "t_pulse", "t_pulse_us"), ("eps_e", "eps_e", None), ("eps_i", "eps_i", None),
]


@dataclass
class Chip:
    """A drawn chip. Arrays are per neuron [N] unless said otherwise. Units as MODEL.md (ms, mV, nS, pF, pA).

    Attributes
    ----------
    profile: the profile it was drawn from.
    seed: the mismatch seed.
    params: per-neuron float arrays. cond_lif: C gL EL Vth Vreset tref tau_e tau_i eps_e eps_i.
        dpi (currents in pA, capacitances in pF, times in ms): C_mem C_syn Itau_mem Itau_ampa Itau_gaba Igain_mem
        Igain_syn Ispkthr tref t_pulse eps_e eps_i.
    scalars: model-wide constants (cond_lif: EE EI Vbal Ge0 Gi0; dpi: UT kappa I0 Iw_e Iw_i Idc).
    dead: bool [N], neurons that integrate but never spike.
    core_of: int [N], core index of each neuron.
    in_e, in_i: CSR [N x n_src_e], [N x n_src_i] of input weights w[i,k] (stuck synapses have weight 0).
    rec: CSR [N x N] recurrent weights (row = post, column = pre), or None; rec_is_exc: bool [N] (presynaptic type).
    adc_offset_pa: float [N], the proxy ADC's fixed per-neuron offset.
    redrawn: number of neurons whose potentials were redrawn to keep Vreset < Vth and EI < EL < EE.
    """

    profile: Profile
    seed: int
    params: dict[str, np.ndarray]
    scalars: dict[str, float]
    dead: np.ndarray
    core_of: np.ndarray
    in_e: sp.csr_matrix
    in_i: sp.csr_matrix
    adc_offset_pa: np.ndarray
    rec: Optional[sp.csr_matrix] = None
    rec_is_exc: Optional[np.ndarray] = None
    redrawn: int = 0
    stuck_synapses: int = 0
    knobs: dict[str, KnobSpec] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.dead.shape[0]

    @property
    def model(self) -> str:
        return self.profile.model

    @property
    def dt(self) -> float:
        return self.profile.dt_ms

    @property
    def uid(self) -> str:
        return f"emu-{self.profile.name}-{self.seed}"


def _lognormal(rng_chip, rng_core, rng_neuron, sig: dict, n: int, core_of: np.ndarray, n_cores: int) -> np.ndarray:
    """exp(s_chip*z_chip + s_core*z_core + s_neuron*z_neuron); always consumes the same number of draws."""
    zc = rng_chip.standard_normal()
    zk = rng_core.standard_normal(n_cores)
    zn = rng_neuron.standard_normal(n)
    return np.exp(sig["chip"] * zc + sig["core"] * zk[core_of] + sig["neuron"] * zn)


def _gaussian_offset(rng_chip, rng_core, rng_neuron, sd: dict, n: int, core_of: np.ndarray, n_cores: int):
    zc = rng_chip.standard_normal()
    zk = rng_core.standard_normal(n_cores)
    zn = rng_neuron.standard_normal(n)
    return sd["chip"] * zc + sd["core"] * zk[core_of], sd["neuron"], zn


_UNIFORMS_PER_CHUNK = 1 << 22  # 32 MiB of uniforms at a time: a million-neuron chip draws in bounded memory


def _fixed_indegree(rng, n_post: int, n_pre: int, k: int, exclude_self_offset: Optional[int] = None) -> np.ndarray:
    """[n_post, k] distinct presynaptic indices per row, drawn without replacement (argpartition of uniforms).

    The [n_post, n_pre] uniforms are drawn a block of rows at a time; the generator yields the same numbers in the
    same order however the rows are cut, so the chip does not depend on the block size."""
    if k == 0:
        return np.zeros((n_post, 0), dtype=np.int64)
    idx = np.empty((n_post, k), dtype=np.int64)
    rows_per = max(1, _UNIFORMS_PER_CHUNK // max(n_pre, 1))
    for a in range(0, n_post, rows_per):
        b = min(n_post, a + rows_per)
        u = rng.random((b - a, n_pre))
        if exclude_self_offset is not None:
            # no autapses: neuron i (global index) is presynaptic index i - offset in this pool
            rows = np.arange(a, b)
            cols = rows + exclude_self_offset
            ok = (cols >= 0) & (cols < n_pre)
            u[rows[ok] - a, cols[ok]] = 2.0
        part = np.argpartition(u, k - 1, axis=1)[:, :k]
        part.sort(axis=1)
        idx[a:b] = part
    return idx


def _csr_from_rows(idx: np.ndarray, w: np.ndarray, n_cols: int) -> sp.csr_matrix:
    n_rows, k = idx.shape
    indptr = np.arange(n_rows + 1, dtype=np.int64) * k  # k = 0 (no inputs of a kind) gives an empty matrix
    return sp.csr_matrix((w.ravel(), idx.ravel(), indptr), shape=(n_rows, n_cols))


def coarse_fine_transfer(cf: dict, bits: int) -> np.ndarray:
    """Nominal current (pA) of every code of a Dynap-SE2-like coarse/fine bias DAC; NaN for invalid codes.

    ``code = coarse*256 + fine``. Within a coarse range the fine DAC is binary weighted: its bits 5, 6 and 7 carry
    the relative weight errors ``msb_weight_error`` (the measured drops at multiples of 32 in
    notes/dynapse_mismatch.md section 3), so the transfer is not monotonic in ``fine``. Fine 0 gives the floor.
    """
    out = np.full(1 << bits, np.nan)
    fine = np.arange(256)
    weights = np.array([1, 2, 4, 8, 16, 32 * (1 + cf["msb_weight_error"][0]), 64 * (1 + cf["msb_weight_error"][1]),
                        128 * (1 + cf["msb_weight_error"][2])])
    bitsmat = (fine[:, None] >> np.arange(8)[None, :]) & 1
    eff = bitsmat @ weights  # effective fine count
    full = eff[255]
    for c, top_na in enumerate(cf["coarse_max_nA"]):
        out[c * 256: c * 256 + 256] = np.maximum(top_na * 1e3 * eff / full, cf["floor_pA"])
    return out


def make_knobs(profile: Profile) -> dict[str, KnobSpec]:
    """The two gain knobs of a chip of this profile, with their DACs and sharing."""
    kn = profile["knobs"]
    n = profile.n_neurons
    core_of = np.arange(n) // profile.neurons_per_core
    if kn["sharing"] == "neuron":
        group_of, n_groups = np.arange(n), n
    elif kn["sharing"] == "core":
        group_of, n_groups = core_of, profile.n_cores
    else:
        group_of, n_groups = np.zeros(n, dtype=np.int64), 1
    knobs = {}
    for name, ref_key in (("gain_e", "code_ref_e"), ("gain_i", "code_ref_i")):
        transfer = None
        if kn["dac"] == "coarse_fine":
            cur = coarse_fine_transfer(kn["coarse_fine"], kn["bits"])
            transfer = cur / cur[kn[ref_key]]
        knobs[name] = KnobSpec(name=name, sharing=kn["sharing"], bits=kn["bits"], code_ref=kn[ref_key],
                               n_groups=n_groups, group_of=group_of, dac=kn["dac"], transfer=transfer)
    if kn["dac"] == "coarse_fine":
        for name, spec in knobs.items():
            if not np.isfinite(spec.transfer[spec.code_ref]):
                raise ValueError(f"{profile.source}: knobs.code_ref of {name} is not a valid coarse/fine code")
    return knobs


def draw_chip(profile, seed: int) -> Chip:
    """Draw one chip instance of ``profile`` (a Profile, a name or a path) with mismatch seed ``seed``."""
    profile = load_profile(profile)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    streams = np.random.SeedSequence(seed).spawn(N_STREAMS)
    rng_chip, rng_core, rng_neuron, rng_in, rng_rec, rng_def, rng_adc, rng_redraw = (
        np.random.default_rng(s) for s in streams[:8])
    n, n_cores = profile.n_neurons, profile.n_cores
    core_of = np.arange(n) // profile.neurons_per_core
    nom = profile["neuron"]
    mm = profile["mismatch"]
    params: dict[str, np.ndarray] = {}
    redrawn = 0

    if profile.model == "cond_lif":
        for key, pname, nom_key in _COND_LIF_LOGNORMAL:
            base = 1.0 if nom_key is None else nom[nom_key]
            params[pname] = base * _lognormal(rng_chip, rng_core, rng_neuron, mm["lognormal"][key], n, core_of, n_cores)
        shared, sd_neuron, zn = {}, {}, {}
        for pname, nom_key in _COND_LIF_OFFSETS:
            shared[pname], sd_neuron[pname], zn[pname] = _gaussian_offset(
                rng_chip, rng_core, rng_neuron, mm["offsets_mV"][pname], n, core_of, n_cores)
        EE, EI = nom["EE_mV"], nom["EI_mV"]

        def potentials(z):
            return {p: nom[k] + shared[p][idx] + sd_neuron[p] * z[p] for p, k in _COND_LIF_OFFSETS}

        idx = np.arange(n)
        pot = potentials(zn)
        bad = ~((pot["Vreset"] < pot["Vth"]) & (EI < pot["EL"]) & (pot["EL"] < EE))
        tries = 0
        while bad.any():
            # redraw only the offending neurons' own offsets (stream 7), until every rule holds
            redrawn += int(bad.sum()) if tries == 0 else 0
            for p, _ in _COND_LIF_OFFSETS:
                zn[p][bad] = rng_redraw.standard_normal(int(bad.sum()))
            pot = potentials(zn)
            bad = ~((pot["Vreset"] < pot["Vth"]) & (EI < pot["EL"]) & (pot["EL"] < EE))
            tries += 1
            if tries > 1000:
                raise ValueError(f"{profile.source}: potential offsets too wide: cannot draw Vreset < Vth and EI < EL < EE")
        params.update(pot)
        if redrawn:
            warnings.warn(f"chip {profile.name} seed {seed}: redrew potentials of {redrawn} neuron(s) to keep "
                          f"Vreset < Vth and EI < EL < EE", stacklevel=2)
        scalars = {"EE": EE, "EI": EI, "Vbal": nom["Vbal_mV"], "Ge0": nom["Ge0_nS"], "Gi0": nom["Gi0_nS"]}
    else:
        UT, kappa = nom["UT_mV"], nom["kappa"]
        # bias currents that set the nominal time constants: tau = C*UT/(kappa*Itau)  (pF*mV/pA = ms)
        itau = {"Itau_mem": nom["C_mem_pF"] * UT / (kappa * nom["tau_mem_ms"]),
                "Itau_ampa": nom["C_syn_pF"] * UT / (kappa * nom["tau_ampa_ms"]),
                "Itau_gaba": nom["C_syn_pF"] * UT / (kappa * nom["tau_gaba_ms"])}
        nominal = {"C_mem": nom["C_mem_pF"], "C_syn": nom["C_syn_pF"], **itau,
                   "Igain_mem": nom["gain_ratio_mem"] * itau["Itau_mem"],
                   "Igain_syn": nom["gain_ratio_syn"],  # stored as a ratio Igain/Itau, mismatched on its own
                   "Ispkthr": nom["Ispkthr_nA"] * 1e3, "tref": nom["tref_ms"], "t_pulse": nom["t_pulse_us"] * 1e-3,
                   "eps_e": 1.0, "eps_i": 1.0}
        for key, pname, _ in _DPI_LOGNORMAL:
            params[pname] = nominal[pname] * _lognormal(rng_chip, rng_core, rng_neuron, mm["lognormal"][key], n,
                                                        core_of, n_cores)
        scalars = {"UT": UT, "kappa": kappa, "I0": nom["I0_pA"], "Iw_e": nom["Iw_e_nA"] * 1e3,
                   "Iw_i": nom["Iw_i_nA"] * 1e3, "Idc": nom["Idc_pA"]}

    # external inputs: fixed in-degree, lognormal per-synapse weights
    inp = profile["input"]
    sig_w = mm["synapse_sigma"]
    idx_e = _fixed_indegree(rng_in, n, inp["n_src_e"], inp["K_e"])
    idx_i = _fixed_indegree(rng_in, n, inp["n_src_i"], inp["K_i"])
    w_e = inp["w_e"] * np.exp(sig_w * rng_in.standard_normal(idx_e.shape))
    w_i = inp["w_i"] * np.exp(sig_w * rng_in.standard_normal(idx_i.shape))

    rec = rec_is_exc = None
    if profile["recurrent"] is not None:
        r = profile["recurrent"]
        ne = r["n_exc"]
        ni = n - ne
        rec_is_exc = np.arange(n) < ne
        post_e, post_i = np.arange(ne), np.arange(ne, n)
        blocks = []
        # (post population, pre population, K, J): weights J/sqrt(K) (van Vreeswijk & Sompolinsky scaling)
        for post, pre_off, n_pre, k, j in ((post_e, 0, ne, r["K_ee"], r["J_ee"]), (post_e, ne, ni, r["K_ei"], r["J_ei"]),
                                           (post_i, 0, ne, r["K_ie"], r["J_ie"]), (post_i, ne, ni, r["K_ii"], r["J_ii"])):
            self_off = (post[0] - pre_off) if (post[0] >= pre_off and post[0] < pre_off + n_pre) else None
            if self_off is not None and k > n_pre - 1:
                # within a population a neuron has n_pre - 1 others; K = n_pre would put every autapse back
                raise ValueError(f"{profile.source}: recurrent in-degree {k} within a population of {n_pre}: at most "
                                 f"{n_pre - 1} (no autapses)")
            idx = _fixed_indegree(rng_rec, len(post), n_pre, k, exclude_self_offset=self_off)
            wv = (j / np.sqrt(max(k, 1))) * np.exp(sig_w * rng_rec.standard_normal(idx.shape))
            rows = np.repeat(post, k)
            blocks.append((rows, (idx + pre_off).ravel(), wv.ravel()))
        rows = np.concatenate([b[0] for b in blocks])
        cols = np.concatenate([b[1] for b in blocks])
        vals = np.concatenate([b[2] for b in blocks])
        rec = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
        rec.sort_indices()

    # defects
    dfx = profile["defects"]
    n_dead = int(round(dfx["dead_fraction"] * n))
    dead = np.zeros(n, dtype=bool)
    if n_dead:
        dead[rng_def.choice(n, size=n_dead, replace=False)] = True
    stuck = 0
    if dfx["stuck_synapse_fraction"] > 0:
        for w in (w_e, w_i):
            m = rng_def.random(w.shape) < dfx["stuck_synapse_fraction"]
            w[m] = 0.0
            stuck += int(m.sum())

    adc_offset = profile["observe"]["proxy_offset_sd_pA"] * rng_adc.standard_normal(n)

    chip = Chip(profile=profile, seed=seed, params=params, scalars=scalars, dead=dead, core_of=core_of,
                in_e=_csr_from_rows(idx_e, w_e, inp["n_src_e"]), in_i=_csr_from_rows(idx_i, w_i, inp["n_src_i"]),
                adc_offset_pa=adc_offset, rec=rec, rec_is_exc=rec_is_exc, redrawn=redrawn, stuck_synapses=stuck)
    chip.knobs = make_knobs(profile)
    return chip


#: Per-neuron parameter arrays of each model in the export, in MODEL.md's units (docs/model.md section 10).
EXPORT_PARAMS = {
    "cond_lif": ("C", "gL", "EL", "Vth", "Vreset", "tref", "tau_e", "tau_i", "eps_e", "eps_i"),
    "dpi": ("C_mem", "C_syn", "Itau_mem", "Itau_ampa", "Itau_gaba", "Igain_mem", "Igain_syn", "Ispkthr", "tref",
            "t_pulse", "eps_e", "eps_i"),
}
EXPORT_FORMAT = "eical-chip"
EXPORT_VERSION = 2  # 2: the model's name, identity, knob groups and DAC transfers, temperature; dpi chips


def export_npz(chip: Chip, path) -> None:
    """Write a chip in the portable NPZ format of docs/model.md section 10, so that any simulator can replay the
    very same chip with numpy alone (no pickled objects). Units as MODEL.md.

    Every export holds: ``format``, ``format_version``, ``model``, ``profile``, ``profile_sha256``, ``seed``,
    ``n_neurons``, ``n_cores``; the model's per-neuron parameters (``EXPORT_PARAMS``), ``dead`` and ``core_of``;
    its scalars (cond_lif: ``EE EI Vbal Ge0 Gi0``; dpi: ``UT kappa I0 Iw_e Iw_i Idc``) and ``dt``; the inputs
    (``rate_e rate_i n_src_e n_src_i`` and the CSR arrays ``in_e_*``, ``in_i_*``, ``rec_*``, ``rec_is_exc``); the
    knobs: ``code_ref`` (gain_e's), ``code_ref_i``, ``knob_group`` (each neuron's knob group: itself, its core or
    0) and ``gain_e_transfer`` / ``gain_i_transfer`` (the DAC's nominal gain of every code, NaN where a code is
    not valid), so that ``gain_e = gain_e_transfer[code_e[knob_group]] * eps_e``; and the temperature model
    ``T0 temp_leak temp_exc temp_inh`` (docs/model.md section 6)."""
    if chip.model not in EXPORT_PARAMS:
        raise ValueError(f"chip export is defined for {', '.join(EXPORT_PARAMS)} chips; {chip.profile.name} is "
                         f"{chip.model}")
    p, s, prof = chip.params, chip.scalars, chip.profile
    inp = prof["input"]
    arrays = {k: p[k] for k in EXPORT_PARAMS[chip.model]}
    arrays.update(dead=chip.dead, core_of=chip.core_of.astype(np.int64), dt=chip.dt, **{k: v for k, v in s.items()})
    ke, ki = chip.knobs["gain_e"], chip.knobs["gain_i"]
    codes = np.arange(ke.max_code + 1)
    arrays.update(format=np.array(EXPORT_FORMAT), format_version=EXPORT_VERSION, model=np.array(chip.model),
                  profile=np.array(prof.name), profile_sha256=np.array(prof.sha256), seed=chip.seed,
                  n_neurons=chip.n, n_cores=prof.n_cores,
                  code_ref=ke.code_ref, code_ref_i=ki.code_ref, knob_group=np.asarray(ke.group_of, dtype=np.int64),
                  knob_sharing=np.array(ke.sharing), knob_dac=np.array(ke.dac), knob_bits=ke.bits,
                  gain_e_transfer=_transfer(ke, codes), gain_i_transfer=_transfer(ki, codes),
                  rate_e=inp["rate_e_hz"], rate_i=inp["rate_i_hz"], n_src_e=inp["n_src_e"], n_src_i=inp["n_src_i"])
    t = prof["temperature"]
    arrays.update(T0=t["T0_K"], temp_leak=t["coeff_per_K"]["leak"], temp_exc=t["coeff_per_K"]["exc"],
                  temp_inh=t["coeff_per_K"]["inh"])
    for name, m in (("in_e", chip.in_e), ("in_i", chip.in_i), ("rec", chip.rec)):
        if m is None:
            continue
        arrays[f"{name}_indptr"], arrays[f"{name}_indices"], arrays[f"{name}_weights"] = m.indptr, m.indices, m.data
    if chip.rec_is_exc is not None:
        arrays["rec_is_exc"] = chip.rec_is_exc
    np.savez(path, **arrays)


def _transfer(spec: KnobSpec, codes: np.ndarray) -> np.ndarray:
    """Nominal gain of every code of a knob's DAC (NaN for codes the DAC does not have)."""
    if spec.dac == "linear":
        return codes.astype(float) / float(spec.code_ref)
    return np.asarray(spec.transfer, dtype=float).copy()
