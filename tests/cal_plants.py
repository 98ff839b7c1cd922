"""Synthetic plants for controller tests: tiny ``Device`` fakes whose answer is known in closed form.

``PowerLawPlant``: neuron i fires at ``r_t * exp(beta_i (ln s - ln s*_i) + gamma (ln r - ln r*_i))`` (Poisson counts),
where ``s, r`` are its effective scale and ratio (DAC gain times the neuron's hidden gain factors), and its proxy is
``ge a_i - gi b_i`` plus a fixed ADC offset and read noise, with ``r*_i = b_i / a_i``. So the right codes are known
exactly, and a controller can be judged without simulating a neuron.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from hw_models.device import DeviceIdentity, KnobSpec, Measurement, validate_codes


class PowerLawPlant:
    def __init__(self, n: int = 64, *, seed: int = 0, bits: int = 8, code_ref: int = 64, sharing: str = "neuron",
                 n_cores: int = 1, sigma: float = 0.2, beta: float = 2.0, beta_sd: float = 0.3, gamma: float = 3.0,
                 target_hz: float = 10.0, offset_sd: float = 15.0, noise_sd: float = 3.0, dead: Sequence[int] = (),
                 proxy_channels: str = "all", s_star_scale: float = 1.0):
        rng = np.random.default_rng(seed)
        self.n = n
        self.rng = np.random.default_rng(seed + 1)
        self.eps_e = np.exp(sigma * rng.standard_normal(n))
        self.eps_i = np.exp(sigma * rng.standard_normal(n))
        self.a = 300.0 * np.exp(0.1 * rng.standard_normal(n))
        self.b = self.a * np.exp(0.2 * rng.standard_normal(n))
        self.ln_s_star = np.log(s_star_scale) + 0.2 * rng.standard_normal(n)
        self.beta = np.clip(beta + beta_sd * rng.standard_normal(n), 0.8, 5)
        self.gamma = gamma
        self.target = target_hz
        self.offset = offset_sd * rng.standard_normal(n)
        self.noise_sd = noise_sd
        self.dead = np.zeros(n, dtype=bool)
        self.dead[list(dead)] = True
        per_core = n // n_cores
        core_of = np.arange(n) // per_core
        if sharing == "neuron":
            group_of, ng = np.arange(n), n
        elif sharing == "core":
            group_of, ng = core_of, n_cores
        else:
            group_of, ng = np.zeros(n, dtype=np.int64), 1
        self.knobs = {k: KnobSpec(k, sharing, bits, code_ref, ng, group_of) for k in ("gain_e", "gain_i")}
        self.identity = DeviceIdentity(uid=f"plant-{seed}", profile="plant", profile_sha256="0" * 64, n_neurons=n,
                                       n_cores=n_cores, model="cond_lif", dt_ms=0.1, seed=seed, backend="fake",
                                       proxy_channels=proxy_channels)
        self.codes = {k: np.full(ng, code_ref) for k in self.knobs}
        self.model_ms = 0.0
        self._rr = 0

    def gains(self):
        ke = self.knobs["gain_e"]
        ge = ke.nominal_gain(self.codes["gain_e"])[ke.group_of] * self.eps_e
        gi = ke.nominal_gain(self.codes["gain_i"])[ke.group_of] * self.eps_i
        return ge, gi

    def true_rates(self):
        ge, gi = self.gains()
        with np.errstate(divide="ignore", invalid="ignore"):
            ln_s = 0.5 * (np.log(ge) + np.log(gi))
            ln_r = np.log(ge) - np.log(gi)
            lr = np.log(self.target) + self.beta * (ln_s - self.ln_s_star) + self.gamma * (ln_r - np.log(self.b / self.a))
            r = np.where(np.isfinite(lr), np.exp(np.minimum(lr, 8)), 0.0)
            # excitation only: a live neuron fires hard
            r = np.where(gi == 0, np.exp(np.minimum(np.log(self.target) + 3 + self.beta * np.log(np.maximum(ge, 1e-9)), 8)), r)
        return np.where(self.dead, 0.0, r)

    def true_balance(self):
        ge, gi = self.gains()
        return np.abs(ge * self.a - gi * self.b) / (ge * self.a)

    def set_codes(self, codes):
        self.codes.update(validate_codes(self.knobs, codes))

    def measure(self, window_ms: float, monitor: Optional[Sequence[int]] = None) -> Measurement:
        self.model_ms += window_ms
        ge, gi = self.gains()
        counts = self.rng.poisson(self.true_rates() * window_ms * 1e-3)
        y = ge * self.a - gi * self.b + self.offset + self.noise_sd * self.rng.standard_normal(self.n)
        if self.identity.proxy_channels == "all":
            observed = np.ones(self.n, dtype=bool)
        else:
            per = self.n // self.identity.n_cores
            observed = np.zeros(self.n, dtype=bool)
            if monitor is None:
                observed[np.arange(self.identity.n_cores) * per + self._rr % per] = True
                self._rr += 1
            else:
                observed[np.asarray(monitor)] = True
        return Measurement(spike_counts=counts, window_ms=window_ms, proxy_pa=np.where(observed, y, np.nan),
                           observed=observed, hardware_ms=window_ms)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
