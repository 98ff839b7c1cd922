"""The numpy emulator: a drawn chip behind the ``Device`` protocol, plus the ADC observation model.

``NumpyDevice(profile, seed)`` is what ``eical`` calibrates by default. Codes become per-neuron gains exactly as
MODEL.md 4 says (``gain = DAC(code) * eps``); a window runs the shared ``Engine``; the net-current proxy is then
read through the profile's ADC (``observe_proxy``): a fixed per-neuron offset, read noise, quantisation, a range,
and only on the channels monitored in that window. Everything an emulated chip offers beyond ``Device`` (the true
window statistics, temperature) is here for tests, ``eical simulate`` and drift experiments; a controller never
uses it.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .chip import Chip, draw_chip
from .device import CodeError, DeviceIdentity, KnobSpec, Measurement, validate_codes
from .engine import Engine, WindowStats
from .profile import Profile, load_profile

__all__ = ["NumpyDevice", "observe_proxy", "gains_from_codes", "nominal_codes", "Monitor"]


def nominal_codes(knobs: Mapping[str, KnobSpec]) -> dict[str, np.ndarray]:
    """Every group at its knob's ``code_ref`` (nominal gain)."""
    return {name: np.full(spec.n_groups, spec.code_ref, dtype=np.int64) for name, spec in knobs.items()}


def gains_from_codes(chip: Chip, codes: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron effective gains ``DAC(code of the neuron's group) * eps`` for both knobs (MODEL.md 4)."""
    out = []
    for name, eps in (("gain_e", chip.params["eps_e"]), ("gain_i", chip.params["eps_i"])):
        spec = chip.knobs[name]
        out.append(spec.nominal_gain(np.asarray(codes[name]))[spec.group_of] * eps)
    return out[0], out[1]


class Monitor:
    """Which neurons' proxy channels are read in a window (MODEL.md 5: the profile's channel limit).

    ``all``: every neuron, every window. ``one_per_core``: one neuron per core; by default a round robin over
    each core's neurons, or the caller's choice (at most one per core).
    """

    def __init__(self, profile: Profile, core_of: np.ndarray):
        self.mode = profile["observe"]["proxy_channels"]
        self.core_of = core_of
        self.n_cores = profile.n_cores
        self.per_core = profile.neurons_per_core
        self._rr = 0

    def mask(self, monitor: Optional[Sequence[int]]) -> np.ndarray:
        n = self.core_of.shape[0]
        if self.mode == "all":
            m = np.ones(n, dtype=bool)
            if monitor is not None:
                m[:] = False
                m[self._checked(monitor)] = True
            return m
        m = np.zeros(n, dtype=bool)
        if monitor is None:
            m[np.arange(self.n_cores) * self.per_core + (self._rr % self.per_core)] = True
            self._rr += 1
            return m
        idx = self._checked(monitor)
        cores = self.core_of[idx]
        if np.unique(cores).size != cores.size:
            raise CodeError("monitor: this chip reads one neuron per core per window; got two in one core")
        m[idx] = True
        return m

    def _checked(self, monitor: Sequence[int]) -> np.ndarray:
        idx = np.asarray(monitor, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self.core_of.shape[0]):
            raise CodeError(f"monitor: neuron indices must lie in [0, {self.core_of.shape[0] - 1}]")
        return idx


def observe_proxy(profile: Profile, true_mean_pa: np.ndarray, offset_pa: np.ndarray, observed: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """The proxy as the ADC reads it: ``clip(q(true + offset + noise), +-range)``, NaN where not observed.

    Noise is drawn for every neuron every window (observed or not) so the read-noise stream, and with it every
    later reading, does not depend on which channels were monitored.
    """
    ob = profile["observe"]
    noise = rng.standard_normal(true_mean_pa.shape[0]) * ob["proxy_noise_sd_pA"]
    x = true_mean_pa + offset_pa + noise
    if ob["proxy_lsb_pA"] > 0:
        x = np.rint(x / ob["proxy_lsb_pA"]) * ob["proxy_lsb_pA"]
    x = np.clip(x, -ob["proxy_range_pA"], ob["proxy_range_pA"])
    return np.where(observed, x, np.nan)


class NumpyDevice:
    """An emulated chip of ``profile`` with mismatch ``seed``, implementing ``hw_models.device.Device``.

    Parameters
    ----------
    profile: a Profile, a profile name or a path.
    seed: the mismatch seed (the same seed gives the same chip and, with the same codes, the same spikes).
    temperature_k: chip temperature (default: the profile's T0).
    recorder: optional ``hw_models.recorder.Recorder`` fed with spikes and samples.
    record_isyn: also compute the true net synaptic current (diagnostic; slower).
    input_stream: independent realisation of the inputs and read noise (see ``Engine``); 0 by default.
    threads: threads for the engine (default ``hw_models.engine.default_threads()``, i.e. 1 unless the process set
        another); results are the same for any count.
    reference: run today's numpy step loop (``hw_models.reference.ReferenceEngine``) instead of the compiled engine:
        the same results, 10 to 100 times slower; for benchmarks and bit-identity checks.
    """

    backend = "numpy"

    def __init__(self, profile, seed: int, *, temperature_k: Optional[float] = None, recorder=None,
                 record_isyn: bool = False, chip: Optional[Chip] = None, input_stream: int = 0,
                 threads: Optional[int] = None, reference: bool = False):
        self.profile = load_profile(profile)
        self.chip = chip if chip is not None else draw_chip(self.profile, seed)
        self.knobs: dict[str, KnobSpec] = dict(self.chip.knobs)
        self.identity = DeviceIdentity(
            uid=self.chip.uid, profile=self.profile.name, profile_sha256=self.profile.sha256,
            n_neurons=self.chip.n, n_cores=self.profile.n_cores, model=self.profile.model, dt_ms=self.profile.dt_ms,
            speedup=self.profile.speedup, seed=self.chip.seed, backend=self.backend,
            proxy_channels=self.profile["observe"]["proxy_channels"])
        if reference:
            from .reference import ReferenceEngine

            self.engine = ReferenceEngine(self.chip, temperature_k=temperature_k, recorder=recorder,
                                          record_isyn=record_isyn, input_stream=input_stream)
        else:
            self.engine = Engine(self.chip, temperature_k=temperature_k, recorder=recorder, record_isyn=record_isyn,
                                 input_stream=input_stream, threads=threads)
        self._monitor = Monitor(self.profile, self.chip.core_of)
        self._counter_max = (1 << self.profile["observe"]["counter_bits"]) - 1
        self.codes = nominal_codes(self.knobs)
        self.engine.set_gains(*gains_from_codes(self.chip, self.codes))
        self.last_stats: Optional[WindowStats] = None
        self._closed = False

    # -- Device --------------------------------------------------------------------------------------------------
    def set_codes(self, codes: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        new = dict(self.codes)
        new.update(validate_codes(self.knobs, codes))
        self.codes = new
        self.engine.set_gains(*gains_from_codes(self.chip, new))

    def measure(self, window_ms: float, monitor: Optional[Sequence[int]] = None) -> Measurement:
        self._check_open()
        n_steps = self.steps_for(window_ms)
        observed = self._monitor.mask(monitor)
        stats = self.engine.run(n_steps)
        self.last_stats = stats
        proxy = observe_proxy(self.profile, stats.ibal, self.chip.adc_offset_pa, observed, self.engine.rng_read)
        return Measurement(spike_counts=np.minimum(stats.spike_counts, self._counter_max), window_ms=stats.window_ms,
                           proxy_pa=proxy, observed=observed, hardware_ms=stats.window_ms / self.profile.speedup,
                           temperature_k=self.engine.temperature_k)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "NumpyDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- emulator extras -----------------------------------------------------------------------------------------
    def steps_for(self, window_ms: float) -> int:
        if not (isinstance(window_ms, (int, float, np.floating)) and window_ms > 0 and np.isfinite(window_ms)):
            raise ValueError(f"window_ms must be a positive number, got {window_ms!r}")
        return max(1, int(round(window_ms / self.profile.dt_ms)))

    def run_true(self, window_ms: float) -> WindowStats:
        """Run a window and return its true statistics (no ADC); for tests, replays and ``eical simulate``."""
        self._check_open()
        stats = self.engine.run(self.steps_for(window_ms))
        self.last_stats = stats
        return stats

    def set_temperature(self, kelvin: float) -> None:
        self.engine.set_temperature(kelvin)

    @property
    def temperature_k(self) -> float:
        return self.engine.temperature_k

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("device is closed")
