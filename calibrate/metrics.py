"""Ground-truth figures of an emulated chip at given codes: the yardstick for controllers (tests, benchmarks).

A controller only ever sees measurements; to judge it we replay the emulated chip at its final codes for a long
window and read the *true* window statistics (no ADC): rates, and the balance proxy's two parts. Definitions
(docs/model.md 1, docs/controller.md "verifying a calibration"):

- rate CV: std/mean across live neurons of the replay's rates. A replay of T seconds adds counting noise of
  variance F/(r T) to each rate; we report the raw CV, the counting CV ``sqrt(mean(F_i/(r_i T)))`` and the
  deconvolved ``sqrt(max(CV^2 - counting^2, 0))``.
- balance index of a neuron: :func:`calibrate.figures.balance_index` of its true current means.
- counting floor of a calibration that spent model time T at target rate r: :func:`calibrate.figures.counting_floor`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

import numpy as np

from .figures import balance_index, counting_floor, counting_noise_fano, exc_mask, target_rates

__all__ = ["TrueFigures", "true_figures", "counting_floor"]


@dataclass
class TrueFigures:
    replay_s: float
    rate_mean_hz: float
    rate_cv: float
    counting_cv: float
    rate_cv_deconvolved: float
    fano: float
    balance_median: float
    balance_p95: float
    frac_balanced_005: float
    live: int
    group_rate_err_max: Optional[float] = None  # shared knobs: max |group mean rate / target - 1|
    group_balance_max: Optional[float] = None  # shared knobs: max group balance index
    rate_mean_exc_hz: Optional[float] = None  # recurrent chips: the excitatory population's mean rate
    rate_mean_inh_hz: Optional[float] = None  # and the inhibitory one's

    def to_dict(self) -> dict:
        return {k: (None if v is None else float(v)) for k, v in asdict(self).items()}


def true_figures(profile, seed: int, codes: Mapping[str, np.ndarray], *, replay_s: float = 100.0,
                 target_rate_hz: Optional[float] = None, temperature_k: Optional[float] = None,
                 sub_window_s: float = 1.0, settle_s: float = 0.5, device=None, input_stream: int = 1) -> TrueFigures:
    """Replay an emulated chip at ``codes`` and return its true figures (see module docstring).

    ``device`` may be given to replay on an existing emulator (it keeps its state); otherwise a fresh
    ``NumpyDevice(profile, seed)`` is drawn, on input stream ``input_stream`` (1 by default: not the stream the
    calibration measured, so the replay does not re-live the input noise the controller fitted).
    """
    from hw_models.emulator import NumpyDevice

    dev = device if device is not None else NumpyDevice(profile, seed, temperature_k=temperature_k,
                                                        input_stream=input_stream)
    dev.set_codes(codes)
    if settle_s > 0:
        dev.run_true(settle_s * 1e3)
    n_sub = max(2, int(round(replay_s / sub_window_s)))
    sub_ms = replay_s * 1e3 / n_sub
    counts = np.zeros((n_sub, dev.chip.n))
    iexc = np.zeros(dev.chip.n)
    iinh = np.zeros(dev.chip.n)
    for k in range(n_sub):
        st = dev.run_true(sub_ms)
        counts[k] = st.spike_counts
        iexc += st.iexc
        iinh += st.iinh
    iexc /= n_sub
    iinh /= n_sub
    live = ~dev.chip.dead
    T = replay_s
    rates = counts.sum(axis=0) / T
    # the spread that matters is relative to each neuron's own target (E and I may differ)
    tgt = target_rates(dev.profile, target_rate_hz)
    r = (rates / tgt * float(np.mean(tgt[live])))[live]
    mean = float(r.mean())
    cv = float(r.std() / mean) if mean > 0 else float("inf")
    F = counting_noise_fano(counts[:, live])
    with np.errstate(divide="ignore", invalid="ignore"):
        counting_cv = float(math.sqrt(np.mean(F / np.maximum(r, 1e-9) / T)))  # rms relative sd per neuron
    bi_all = balance_index(iexc + iinh, iexc)[live]
    bi_live = bi_all[np.isfinite(bi_all)]  # a live neuron without excitatory drive has no balance index
    out = TrueFigures(replay_s=T, rate_mean_hz=mean, rate_cv=cv, counting_cv=counting_cv,
                      rate_cv_deconvolved=float(math.sqrt(max(cv ** 2 - counting_cv ** 2, 0.0))), fano=F,
                      balance_median=float(np.median(bi_live)), balance_p95=float(np.quantile(bi_live, 0.95)),
                      frac_balanced_005=float(np.mean(bi_all <= 0.05)), live=int(live.sum()))
    exc = exc_mask(dev.profile)
    if exc is not None:
        out.rate_mean_exc_hz = float(rates[live & exc].mean())
        out.rate_mean_inh_hz = float(rates[live & ~exc].mean())
    ke = dev.knobs["gain_e"]
    if ke.sharing != "neuron":
        g = ke.group_of
        c = np.bincount(g, weights=counts.sum(axis=0) * live, minlength=ke.n_groups)
        n = np.bincount(g, weights=live.astype(float), minlength=ke.n_groups)
        gr = c / np.maximum(n, 1) / T
        tgt = target_rate_hz if target_rate_hz is not None else dev.profile["targets"]["rate_hz"]
        out.group_rate_err_max = float(np.max(np.abs(gr / tgt - 1)))
        ge = np.bincount(g, weights=iexc, minlength=ke.n_groups)
        gb = np.bincount(g, weights=iexc + iinh, minlength=ke.n_groups)
        out.group_balance_max = float(np.max(balance_index(gb, ge)))
    return out
