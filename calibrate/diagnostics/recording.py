"""Recordings of an emulated chip at given codes, for diagnostics (``eical diagnose`` and calibration reports).

An emulated chip (``NumpyDevice``, or ``LavaDevice`` with the same spikes) is set to the codes, run for a short
settle, then recorded through a :class:`hw_models.recorder.Recorder`. The recording uses input stream 2
(``DIAGNOSTICS_INPUT_STREAM``): stream 0 is what a calibration itself saw and stream 1 is the ``true_figures``
replay, so the diagnosis judges the codes on inputs neither has seen.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from hw_models.profile import Profile, load_profile
from hw_models.recorder import Recorder
from hw_models.recording import Recording

from ..figures import exc_mask
from .defaults import DEFAULT_REPORT_DURATION_S, DEFAULT_SETTLE_S, DIAGNOSTICS_INPUT_STREAM
from .pipeline import diagnose
from .flags import FlagThresholds
from .result import Diagnostics

__all__ = ["DEFAULT_REPORT_DURATION_S", "DEFAULT_SETTLE_S", "DIAGNOSTICS_INPUT_STREAM", "profile_meta",
           "record_chip", "diagnose_codes", "Pair"]

Pair = Tuple[Diagnostics, Recording]

def profile_meta(profile: Profile) -> Dict[str, Any]:
    """``meta`` for a recording of ``profile``: the model and, for cond_lif, ``Vbal, EE, EI`` (mV), from which
    :meth:`calibrate.diagnostics.balance.Theory.from_meta` builds the balanced conductance ratio."""
    neu = profile["neuron"]
    if profile.model == "cond_lif":
        return {"model": "cond_lif", "vbal_mv": float(neu["Vbal_mV"]), "ee_mv": float(neu["EE_mV"]),
                "ei_mv": float(neu["EI_mV"])}
    return {"model": profile.model, "vbal_mv": None, "ee_mv": None, "ei_mv": None}


class _Gate:
    """Forwards the engine's recorder calls once opened (the settle is run with it closed).

    The recorder has to be given to the device at construction (the Lava device forwards it into its process),
    so the settle cannot simply run without one.
    """

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.sample_every_steps = recorder.sample_every_steps
        self.open = False

    def on_spikes(self, step: int, neurons: np.ndarray) -> None:
        if self.open:
            self.recorder.on_spikes(step, neurons)

    def on_spike_block(self, steps: np.ndarray, neurons: np.ndarray) -> None:
        # the compiled engine hands over a window's spikes in one call (hw_models.recorder.Recorder)
        if self.open:
            self.recorder.on_spike_block(steps, neurons)

    def on_sample(self, step: int, *state: np.ndarray) -> None:
        if self.open:
            self.recorder.on_sample(step, *state)


def record_chip(
    profile: Any,
    seed: int,
    codes: Optional[Mapping[str, np.ndarray]] = None,
    duration_s: float = DEFAULT_REPORT_DURATION_S,
    *,
    input_stream: int = DIAGNOSTICS_INPUT_STREAM,
    temperature_k: Optional[float] = None,
    backend: str = "numpy",
    settle_s: float = DEFAULT_SETTLE_S,
    sample_every_steps: int = 10,
    path: Optional[Any] = None,
    max_memory_mb: float = 256.0,
    chip: Any = None,
    progress: Optional[Callable[[str, Optional[float], Optional[float]], None]] = None,
    chunk_s: float = 1.0,
) -> Recording:
    """Record an emulated chip of ``profile`` with mismatch ``seed`` at ``codes``.

    Parameters
    ----------
    profile : Profile, name or path
    seed : int
        Mismatch seed (the chip; the same seed and codes give the same spikes).
    codes : mapping knob -> codes, optional
        Codes to set (validated by the device); knobs left out, or all when None, stay nominal (``code_ref``).
    duration_s : float
        Model seconds recorded, after ``settle_s`` unrecorded seconds.
    input_stream : int
        Realisation of the Poisson inputs (2 by default: not the calibration's 0 nor the replay's 1).
    temperature_k : float, optional
        Chip temperature (default: the profile's T0).
    backend : str
        ``"numpy"`` or ``"lava"`` (bit-identical spikes; Lava needs Python 3.10 and lava-nc and raises
        :class:`calibrate.backends.BackendUnavailable` otherwise).
    sample_every_steps, path, max_memory_mb
        Passed to :class:`~hw_models.recorder.Recorder` (``path``: write the recording there, memory-mapped).
    chip : hw_models.chip.Chip, optional
        An already drawn chip of this profile and seed (saves drawing it again).
    progress : callable(phase, done_s, total_s), optional
        Called with ("settling" or "recording", model seconds done, of the phase's) at each chunk.
    chunk_s : float
        The recording runs in windows of this many model seconds (only for ``progress``: how time is cut into
        windows changes no value, docs/model.md).

    Returns
    -------
    Recording
        With ``is_exc`` from ``recurrent.n_exc`` (None for a feed-forward chip) and ``meta`` holding the model,
        ``vbal_mv, ee_mv, ei_mv`` (cond_lif) and the run: profile, seed, chip uid, codes, input stream,
        temperature, settle, backend.
    """
    from ..backends import open_device

    _check_times(duration_s, settle_s)
    prof = load_profile(profile)
    dt = prof.dt_ms
    settle_steps = int(round(settle_s * 1e3 / dt))
    recorder = Recorder(prof.n_neurons, dt, is_exc=exc_mask(prof), sample_every_steps=sample_every_steps,
                        path=path, max_memory_mb=max_memory_mb, start_step=settle_steps, meta=profile_meta(prof))
    gate = _Gate(recorder)
    kw: Dict[str, Any] = {"recorder": gate, "input_stream": int(input_stream)}
    if chip is not None:
        kw["chip"] = chip
    device = open_device(backend, prof, seed, temperature_k=temperature_k, **kw)
    total = max(1, int(round(duration_s * 1e3 / dt)))
    try:
        if codes is not None:
            device.set_codes({k: np.asarray(v) for k, v in codes.items()})
        _run(device, gate, dt, settle_steps, total, max(1, int(round(chunk_s * 1e3 / dt))), progress)
        rec = recorder.finish(end_step=settle_steps + total)
        rec.meta.update({
            "profile": prof.name, "seed": int(seed), "chip_uid": device.identity.uid,
            "codes": "nominal" if codes is None else "given", "input_stream": int(input_stream),
            "temperature_k": float(device.temperature_k), "settle_s": settle_steps * dt / 1e3,
            "backend": getattr(device, "backend", backend),
        })
    finally:
        device.close()
    return rec


def _check_times(duration_s: Any, settle_s: Any) -> None:
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    if not (math.isfinite(settle_s) and settle_s >= 0):
        raise ValueError(f"settle_s must be a non-negative number of seconds, got {settle_s!r}")


def _run(device: Any, gate: _Gate, dt: float, settle_steps: int, total: int, chunk: int,
         progress: Optional[Callable[[str, Optional[float], Optional[float]], None]]) -> None:
    """The settle with the recorder closed, then ``total`` recorded steps in chunks (for ``progress``)."""
    if settle_steps:
        if progress is not None:
            progress("settling", 0.0, settle_steps * dt / 1e3)
        device.run_true(settle_steps * dt)
    gate.open = True
    done = 0
    while done < total:
        k = min(chunk, total - done)
        device.run_true(k * dt)
        done += k
        if progress is not None:
            progress("recording", done * dt / 1e3, total * dt / 1e3)


def diagnose_codes(
    profile: Any,
    seed: int,
    codes: Optional[Mapping[str, np.ndarray]] = None,
    duration_s: float = DEFAULT_REPORT_DURATION_S,
    *,
    label: str = "",
    thresholds: Optional[FlagThresholds] = None,
    n_boot: int = 100,
    diagnose_seed: int = 0,
    **record_kw: Any,
) -> Pair:
    """Record the chip at ``codes`` (:func:`record_chip`, same keywords) and diagnose the recording.

    Returns
    -------
    (Diagnostics, Recording)
    """
    rec = record_chip(profile, seed, codes, duration_s, **record_kw)
    d = diagnose(rec, thresholds=thresholds, n_boot=n_boot, seed=diagnose_seed, label=label)
    return d, rec
