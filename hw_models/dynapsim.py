"""A dpi chip for rockpool's DynapSim: the export, and a replay in DynapSim (docs/model.md, "DynapSim").

The dpi model follows DynapSim (rockpool 3.1, ``devices/dynapse/simulation/dynapsim.py``; MODEL.md 2), so a chip
drawn here (mismatch, stuck synapses, a calibrated table's per-core weight currents) can be taken into it:

- ``export_arrays(chip, codes)``: the per-neuron parameter arrays DynapSim's constructor takes, in its units
  (amperes, farads, seconds, volts), the input weight matrices (in units of ``Iscale``, as DynapSim multiplies its
  weighted input by ``Iscale``), the per-core weight currents the codes give, and what DynapSim cannot hold: the
  GABA synapse (DynapSim lumps one synapse per neuron, and it cannot subtract), the dead neurons, the provenance.
- ``record_window(chip, codes, ms)``: the emulator's own run of a window from rest, with the input spike trains it
  drew (``Engine.record_inputs``), to drive DynapSim with the same input realisation.
- ``replay(arrays, inputs)``: that run in DynapSim (needs the ``eical[rockpool]`` extra): DynapSim's module steps
  the neuron and its one synapse (AMPA); the GABA synapse is integrated beside it by DynapSim's own synapse
  equation and enters DynapSim's input current through ``Idc``, one step at a time.

Units inside eical are MODEL.md's (pA, pF, ms, mV); everything exported is SI. Nothing here imports rockpool or jax
at module level.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from .chip import Chip
from .emulator import gains_from_codes, nominal_codes
from .engine import Engine, InputSpikes
from .models import DYNAPSIM_C_REF_F, DYNAPSIM_VTH_V

__all__ = ["FORMAT", "DYNAPSIM_PARAMETERS", "DYNAPSIM_C_PULSE_F", "ISCALE_A", "export_arrays", "record_window",
           "write_npz", "load_npz", "input_spikes", "build_dynapsim", "replay", "rockpool_unavailable"]

FORMAT = "eical-dynapsim/1"
DYNAPSIM_C_PULSE_F = 0.5e-12  # DynapSim's default pulse-width capacitance (rockpool 3.1 lookup/defaults.py)
ISCALE_A = 1e-8  # DynapSim's default weight scale current: its weighted input times Iscale is a current
# the keyword arguments of DynapSim(...) the export holds, one value per neuron each
DYNAPSIM_PARAMETERS = ("Itau_mem", "Igain_mem", "Itau_syn", "Igain_syn", "Ipulse", "Iref", "Ispkthr", "Idc",
                       "C_mem", "C_syn", "C_pulse", "C_ref", "Io", "kappa_n", "kappa_p", "Ut", "Vth")
_PA, _PF, _MS, _MV = 1e-12, 1e-12, 1e-3, 1e-3
# DynapSim's state entries carried from one step to the next (rng_key is unused by its step)
_STATE_KEYS = ("iahp", "imem", "iampa", "spikes", "timer_ref", "vmem")


def export_arrays(chip: Chip, codes: Optional[Mapping[str, np.ndarray]] = None, *,
                  codes_source: str = "nominal") -> dict[str, np.ndarray]:
    """Everything DynapSim needs to run ``chip`` at ``codes`` (default: the nominal codes), in SI units.

    The chip is exported at its profile's T0. Keys (per neuron ``[N]`` unless said otherwise):

    - ``DYNAPSIM_PARAMETERS``: DynapSim's constructor arguments. The lumped synapse is the AMPA synapse
      (``Itau_syn = Itau_ampa``, ``Igain_syn = (Igain/Itau)_syn * Itau_ampa``); ``Ipulse = Vth*C_pulse/t_pulse``
      and ``Iref = Vth*C_ref/tref`` with DynapSim's default capacitances, so DynapSim recomputes this chip's
      t_pulse and tref (and holds a spike exactly ``models.dynapsim_refractory_steps`` steps); ``Idc`` is the
      profile's (DynapSim's own default is I0); ``kappa_n = kappa_p = kappa``.
    - ``Itau_gaba``, ``Igain_gaba``: the GABA synapse beside it (same ``C_syn`` and pulse width).
    - ``w_in_ampa [n_src_e x N]``, ``w_in_gaba [n_src_i x N]``: input weights in units of ``Iscale``: source k's
      spike adds ``w_in[k, i] * Iscale`` amperes to neuron i's weighted input (``Iw * DAC(code) * eps_i * w_ik``);
      stuck synapses are 0. ``Iscale`` (A) and ``dt`` (s) are scalars.
    - ``Iw_ampa``, ``Iw_gaba`` ``[groups]``: the weight currents (A) the codes give each knob group (a core on
      dynapse2), ``code_ampa``, ``code_gaba`` (and ``coarse_*``, ``fine_*`` for a coarse/fine DAC),
      ``knob_group_of [N]``, ``knob_sharing``; ``eps_ampa``, ``eps_gaba``: the per-neuron gain mismatch.
    - ``dead``, ``core_of``, ``rate_e_hz``, ``rate_i_hz``, ``n_src_e``, ``n_src_i``; ``format``, ``chip_uid``,
      ``profile``, ``profile_sha256``, ``seed``, ``codes_source``, ``temperature_k``, ``dynapsim_params``.
    """
    if chip.model != "dpi":
        raise ValueError(f"a DynapSim export is defined for dpi chips; {chip.profile.name} is {chip.model}")
    p, s, prof = chip.params, chip.scalars, chip.profile
    codes = nominal_codes(chip.knobs) if codes is None else {k: np.asarray(v) for k, v in codes.items()}
    n = chip.n
    full = lambda v: np.full(n, float(v))  # noqa: E731
    with np.errstate(divide="ignore"):  # tref = 0: Iref = inf, t_ref = 0 in DynapSim
        iref = DYNAPSIM_VTH_V * DYNAPSIM_C_REF_F / (p["tref"] * _MS)
    out: dict[str, np.ndarray] = {
        "Itau_mem": p["Itau_mem"] * _PA, "Igain_mem": p["Igain_mem"] * _PA,
        "Itau_syn": p["Itau_ampa"] * _PA, "Igain_syn": p["Igain_syn"] * p["Itau_ampa"] * _PA,
        "Ipulse": DYNAPSIM_VTH_V * DYNAPSIM_C_PULSE_F / (p["t_pulse"] * _MS), "Iref": iref,
        "Ispkthr": p["Ispkthr"] * _PA, "Idc": full(s["Idc"] * _PA),
        "C_mem": p["C_mem"] * _PF, "C_syn": p["C_syn"] * _PF, "C_pulse": full(DYNAPSIM_C_PULSE_F),
        "C_ref": full(DYNAPSIM_C_REF_F), "Io": full(s["I0"] * _PA), "kappa_n": full(s["kappa"]),
        "kappa_p": full(s["kappa"]), "Ut": full(s["UT"] * _MV), "Vth": full(DYNAPSIM_VTH_V),
        "Itau_gaba": p["Itau_gaba"] * _PA, "Igain_gaba": p["Igain_syn"] * p["Itau_gaba"] * _PA,
    }
    ge, gi = gains_from_codes(chip, codes)  # DAC(code of the neuron's group) * eps, per neuron
    for kind, m, iw, g in (("ampa", chip.in_e, s["Iw_e"], ge), ("gaba", chip.in_i, s["Iw_i"], gi)):
        w = m.multiply((iw * _PA / ISCALE_A) * g[:, None]).T  # [n_src x N]
        out[f"w_in_{kind}"] = np.asarray(w.todense())
    ke, ki = chip.knobs["gain_e"], chip.knobs["gain_i"]
    for kind, spec, iw in (("ampa", ke, s["Iw_e"]), ("gaba", ki, s["Iw_i"])):
        c = np.asarray(codes[spec.name], dtype=np.int64)
        out[f"Iw_{kind}"] = iw * _PA * spec.nominal_gain(c)
        out[f"code_{kind}"] = c
        if spec.dac == "coarse_fine":
            out[f"coarse_{kind}"], out[f"fine_{kind}"] = c // 256, c % 256
    out.update(eps_ampa=p["eps_e"].copy(), eps_gaba=p["eps_i"].copy(), knob_group_of=ke.group_of.copy(),
               knob_sharing=np.array(ke.sharing), dead=chip.dead.copy(), core_of=chip.core_of.copy())
    inp = prof["input"]
    out.update(Iscale=np.array(ISCALE_A), dt=np.array(chip.dt * _MS), rate_e_hz=np.array(float(inp["rate_e_hz"])),
               rate_i_hz=np.array(float(inp["rate_i_hz"])), n_src_e=np.array(int(inp["n_src_e"])),
               n_src_i=np.array(int(inp["n_src_i"])), format=np.array(FORMAT), chip_uid=np.array(chip.uid),
               profile=np.array(prof.name), profile_sha256=np.array(prof.sha256), seed=np.array(chip.seed),
               codes_source=np.array(codes_source), temperature_k=np.array(float(prof["temperature"]["T0_K"])),
               dynapsim_params=np.array(DYNAPSIM_PARAMETERS))
    return out


def record_window(chip: Chip, codes: Optional[Mapping[str, np.ndarray]], duration_ms: float, *,
                  input_stream: int = 0, threads: Optional[int] = None) -> tuple[InputSpikes, np.ndarray]:
    """Run ``chip`` at ``codes`` (default nominal) from rest for ``duration_ms`` on input realisation
    ``input_stream``; return the input spikes it drew and its spike counts ``[N]``. The same engine every backend
    runs; the first window of an emulated chip (``NumpyDevice(...).run_true``) sees the same inputs and spikes."""
    codes = nominal_codes(chip.knobs) if codes is None else codes
    engine = Engine(chip, input_stream=input_stream, threads=threads)
    engine.set_gains(*gains_from_codes(chip, codes))
    engine.record_inputs()
    n_steps = max(1, int(round(duration_ms / chip.dt)))
    stats = engine.run(n_steps)
    return engine.recorded_inputs(), stats.spike_counts


def write_npz(path, arrays: Mapping[str, np.ndarray], inputs: Optional[InputSpikes] = None,
              spike_counts: Optional[np.ndarray] = None) -> Path:
    """Write an export (and, if given, a recorded window: ``input_steps``, ``input_sources``, ``input_n_steps``,
    ``eical_spike_counts``) to ``path`` atomically: a reader never sees half a file."""
    path = Path(path)
    data = dict(arrays)
    if inputs is not None:
        data.update(input_steps=inputs.steps, input_sources=inputs.sources, input_n_steps=np.array(inputs.n_steps))
    if spike_counts is not None:
        data["eical_spike_counts"] = np.asarray(spike_counts)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **data)  # the dense input weights are mostly zeros (fixed in-degree)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a plain file's mode, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_npz(path) -> dict[str, np.ndarray]:
    """An export as a dict of arrays (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def input_spikes(arrays: Mapping[str, np.ndarray]) -> InputSpikes:
    """The recorded window of an export (``write_npz(..., inputs=...)``) as ``InputSpikes``."""
    if "input_steps" not in arrays:
        raise ValueError("this export holds no input spike trains (eical chip export --inputs SEC writes them)")
    return InputSpikes(first_step=0, n_steps=int(arrays["input_n_steps"]), n_src_e=int(arrays["n_src_e"]),
                       n_src_i=int(arrays["n_src_i"]), steps=np.asarray(arrays["input_steps"], dtype=np.int64),
                       sources=np.asarray(arrays["input_sources"], dtype=np.int64))


# -------------------------------------------------------------------------------------------------------------
# the replay in DynapSim (the eical[rockpool] extra)
# -------------------------------------------------------------------------------------------------------------
def _dynapsim_class():
    """rockpool's DynapSim, imported without the notes rockpool prints about hardware packages it does not need
    here (samna, torch)."""
    import logging
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from rockpool.devices.dynapse import DynapSim
    finally:
        root.setLevel(level)
    return DynapSim


def rockpool_unavailable() -> Optional[str]:
    """None when rockpool's DynapSim and jax import here, else the one-line reason."""
    try:
        import jax  # noqa: F401

        _dynapsim_class()
    except Exception as e:  # ImportError, or a broken jax install
        return f"rockpool's DynapSim is not available ({type(e).__name__}: {e}); pip install 'eical[rockpool]'"
    return None


def build_dynapsim(arrays: Mapping[str, np.ndarray]):
    """The exported chip's neurons as a rockpool ``DynapSim`` module (feed-forward, no rockpool mismatch)."""
    DynapSim = _dynapsim_class()

    n = int(np.asarray(arrays["dead"]).size)
    params = {k: np.asarray(arrays[k]) for k in np.asarray(arrays["dynapsim_params"]).tolist()}
    return DynapSim(n, dt=float(arrays["dt"]), Iscale=float(arrays["Iscale"]), **params)


def _weighted_inputs(arrays, inputs: InputSpikes, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps ``a .. b - 1`` of the input spikes through the input weights: DynapSim's weighted input (AMPA) and
    the GABA synapse's, ``[steps x N]`` float32 each, summed in the order the spikes are listed."""
    n = np.asarray(arrays["dead"]).size
    lo, hi = np.searchsorted(inputs.steps, [a, b])
    st, src = inputs.steps[lo:hi] - a, inputs.sources[lo:hi]
    exc = src < inputs.n_src_e
    xa = np.zeros((b - a, n), np.float32)
    xg = np.zeros((b - a, n), np.float32)
    np.add.at(xa, st[exc], np.asarray(arrays["w_in_ampa"], np.float32)[src[exc]])
    np.add.at(xg, st[~exc], np.asarray(arrays["w_in_gaba"], np.float32)[src[~exc] - inputs.n_src_e])
    return xa, xg


def replay(arrays: Mapping[str, np.ndarray], inputs: InputSpikes, *, chunk_steps: int = 10000) -> np.ndarray:
    """Run the exported chip in DynapSim on ``inputs`` from rest; return its spike counts ``[N]``.

    Each step: the GABA synapse advances by DynapSim's synapse equation (float32, as DynapSim computes its own),
    ``Idc`` is set to the chip's ``Idc - Igaba``, and DynapSim's module advances one step on the AMPA input (its
    lumped synapse, its membrane, its refractory timer). The steps run in ``jax.lax.scan``, ``chunk_steps`` at a
    time, the state carried across chunks. DynapSim's ``evolve`` returns its synapse state as ``isyn`` while the
    module keeps it as ``iampa`` (rockpool 3.1), so the carry renames it; otherwise the synapse would restart from
    ``Io`` at every call.
    """
    import jax
    import jax.numpy as jnp

    neurons = build_dynapsim(arrays)
    f32 = lambda k: jnp.asarray(np.asarray(arrays[k]), jnp.float32)  # noqa: E731
    kappa = (f32("kappa_n") + f32("kappa_p")) / 2
    io = f32("Io")
    tau_g = ((f32("Ut") / kappa) * f32("C_syn")) / jnp.clip(f32("Itau_gaba"), io)
    t_pulse = (f32("Vth") * f32("C_pulse")) / f32("Ipulse")
    charge_g = 1.0 - jnp.exp(-t_pulse / tau_g)
    decay_g = jnp.exp(-jnp.float32(float(arrays["dt"])) / tau_g)
    gain_g = jnp.clip(f32("Igain_gaba"), io) / jnp.clip(f32("Itau_gaba"), io)
    iscale = jnp.float32(float(arrays["Iscale"]))
    idc = f32("Idc")

    def step(carry, x):
        state, igaba, counts = carry
        xa, xg = x
        igaba = decay_g * igaba + charge_g * jnp.clip(gain_g * (xg * iscale), io)  # DynapSim's DPI update
        m = neurons.set_attributes(state).set_attributes({"Idc": idc - igaba})
        spikes, new, _ = m.evolve(xa[None, :], record=False)
        new["iampa"] = new.pop("isyn")
        return ({k: new[k][0] for k in _STATE_KEYS}, igaba, counts + spikes[0, 0]), None

    run = jax.jit(lambda c, xa, xg: jax.lax.scan(step, c, (xa, xg))[0])
    n = np.asarray(arrays["dead"]).size
    carry = ({k: neurons.state()[k] for k in _STATE_KEYS}, io, jnp.zeros(n, jnp.float32))  # Igaba starts at Io
    for a in range(0, inputs.n_steps, chunk_steps):
        b = min(inputs.n_steps, a + chunk_steps)
        xa, xg = _weighted_inputs(arrays, inputs, a, b)
        carry = run(carry, xa, xg)
    return np.rint(np.asarray(carry[2])).astype(np.int64)
