"""The true figures of one judging replay (``TrueFigures``) and how a replay record gives them
(``figures_from_record``): definitions in ``calibrate.metrics``. A module of its own so that ``calibrate.metrics``
(which runs replays) and ``calibrate.replay`` (which judges them) both use it without importing each other."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from .figures import balance_index, counting_noise_fano, exc_mask, target_rates

__all__ = ["TrueFigures", "figures_from_record"]


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
    replicas: Optional[int] = None  # copies of the chip the replay ran in one engine
    control_variate: Optional[bool] = None  # rates read at the expected input drive (else the plain means)

    def to_dict(self) -> dict:
        return {k: (None if v is None else float(v)) for k, v in asdict(self).items()}


def figures_from_record(profile, rec, est, *, target_rate_hz: Optional[float] = None) -> TrueFigures:
    """The true figures of one replay (``calibrate.replay.ReplayRecord``) with its rate estimate ``est``."""
    live = ~rec.dead
    T = rec.replay_s
    # the spread that matters is relative to each neuron's own target (E and I may differ)
    tgt = target_rates(profile, target_rate_hz)
    scale = float(np.mean(tgt[live])) / tgt
    rates = est.rates
    r = (rates * scale)[live]
    mean = float(r.mean())
    cv = float(r.std() / mean) if mean > 0 else float("inf")
    counting_cv = math.sqrt(est.spread_noise(live, scale)) / mean if mean > 0 else float("nan")
    F = counting_noise_fano(rec.counts[:, live])
    iexc, iinh = ((rec.mu_e, rec.mu_i) if rec.mu_e is not None else (rec.iexc.mean(axis=0), rec.iinh.mean(axis=0)))
    bi_all = balance_index(iexc + iinh, iexc)[live]
    bi_live = bi_all[np.isfinite(bi_all)]  # a live neuron without excitatory drive has no balance index
    out = TrueFigures(replay_s=T, rate_mean_hz=mean, rate_cv=cv, counting_cv=counting_cv,
                      rate_cv_deconvolved=float(math.sqrt(max(cv ** 2 - counting_cv ** 2, 0.0))), fano=F,
                      balance_median=float(np.median(bi_live)), balance_p95=float(np.quantile(bi_live, 0.95)),
                      frac_balanced_005=float(np.mean(bi_all <= 0.05)), live=int(live.sum()),
                      replicas=int(rec.replicas), control_variate=est.method == "control-variate")
    exc = exc_mask(profile)
    if exc is not None:
        out.rate_mean_exc_hz = float(rates[live & exc].mean())
        out.rate_mean_inh_hz = float(rates[live & ~exc].mean())
    ke = rec.knobs["gain_e"]
    if ke.sharing != "neuron":
        g = ke.group_of
        n = np.bincount(g, weights=live.astype(float), minlength=ke.n_groups)
        gr = np.bincount(g, weights=np.where(live, rates, 0.0), minlength=ke.n_groups) / np.maximum(n, 1)
        tgt0 = target_rate_hz if target_rate_hz is not None else profile["targets"]["rate_hz"]
        out.group_rate_err_max = float(np.max(np.abs(gr / tgt0 - 1)))
        ge = np.bincount(g, weights=iexc, minlength=ke.n_groups)
        gb = np.bincount(g, weights=iexc + iinh, minlength=ke.n_groups)
        out.group_balance_max = float(np.max(balance_index(gb, ge)))
    return out
