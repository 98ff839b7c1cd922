"""The judging replay: the true figures ``eical calibrate --evaluate`` and a yield study report, and the uncertainty
each figure owes to the replay's own finite length.

A chip is judged by ``calibrate.metrics.true_figures``: a replay of the emulated chip at its final codes, on an
input stream the calibration never saw (stream 1), cut into 1 s sub-windows. The replay keeps those sub-windows
(``_RecordingDevice``), and from them and the counting statistics every judged figure gets its standard error.
The derivations are in docs/yield.md ("How long the judging replay is"); in short, for a replay of T seconds with
K = T / 1 s sub-windows, N live neurons at rate r and count Fano factor F:

- deconvolved rate CV: the replay adds counting noise of relative variance ``c^2 = F / (r T)`` to each neuron.
  ``CV_obs^2 = CV^2 + c^2 + cross term``, so ``var(CV_d^2) = (4 CV^2 c^2 + 2 c^4) / N + c^4 pi / ((K - 1) N)``
  (the last term: F is a median of per-neuron variance ratios with K - 1 degrees of freedom) and
  ``se(CV_d) = sd(CV_d^2) / (2 CV_d)``;
- mean-rate error: the standard error of the mean of the K sub-window population rates, i.e.
  ``sqrt(F_pop / (N r T))`` with the population's own Fano factor F_pop (shared inputs make neurons fire together,
  so F_pop > F: the common fluctuation is *not* removed here, it is exactly what moves a mean);
- balance index of a neuron: its net-current mean over T has the standard error of the K sub-window means (input
  shot noise, Campbell's theorem: ``sum_k lambda_k q_k^2 / T``); the p95's se follows from the neurons' own se by a
  parametric bootstrap (neighbouring neurons swap ranks, so it is less than theirs);
- group figures (shared knobs: the worst core's rate error and balance), the same for the group's sums, taken at
  the group that sets the maximum.

``required_replay_s`` turns the uncertainties of one replay into the length at which each criterion's se would be
a tenth of its limit; ``JUDGING_REPLAY_S`` holds the lengths measured that way for the shipped profiles.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from hw_models.emulator import NumpyDevice

__all__ = ["JudgedReplay", "judging_replay", "figure_uncertainties", "required_replay_s", "JUDGING_REPLAY_S",
           "default_replay_s", "SUB_WINDOW_S"]

SUB_WINDOW_S = 1.0  # true_figures' sub-window (its default): long against every correlation time of the chips

# Judging replay length per shipped profile (seconds of model time), so that the replay's own standard error on
# each criterion of the default spec is under a tenth of its limit; measured by benchmarks/bench_yield.py
# (`python -m benchmarks yield`), derivation and figures in docs/yield.md.
# The mean-rate error sets every length: shared input pools make a chip's neurons fire together (population Fano
# factor 4 on devboard, 35 on bss2, 17 on dynapse2), so the chip's mean rate converges slowly.
JUDGING_REPLAY_S: dict[str, float] = {
    "devboard": 1800.0,
    "bss2": 900.0,
    "dynapse2": 300.0,
    "balanced-net": 150.0,
}
# any other profile: as the smallest shipped chip; every record carries its se, and the study flags sweep points
# whose replay turned out too short (yield.json: replay_ok)
FALLBACK_REPLAY_S = 1800.0


def default_replay_s(profile_name: str) -> float:
    return JUDGING_REPLAY_S.get(profile_name, FALLBACK_REPLAY_S)


class _RecordingDevice(NumpyDevice):
    """A ``NumpyDevice`` that keeps the true statistics of every window it runs (the replay's sub-windows), so the
    figures ``true_figures`` computes can be given their uncertainties without replaying again."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.windows: list = []

    def run_true(self, window_ms: float):
        st = super().run_true(window_ms)
        self.windows.append(st)
        return st


@dataclass
class JudgedReplay:
    """A replay's true figures (``TrueFigures``), each judged figure's standard error, and what it cost."""

    figures: object
    se: dict[str, float]
    replay_s: float
    sub_windows: int
    wall_s: float
    stats: dict = field(default_factory=dict)  # F_pop, per-neuron balance se at the p95, ... (for the docs/bench)


def judging_replay(profile, seed: int, codes: Mapping[str, np.ndarray], *, replay_s: float,
                   target_rate_hz: Optional[float] = None, input_stream: int = 1) -> JudgedReplay:
    """``true_figures(profile, seed, codes, replay_s=..., target_rate_hz=...)`` exactly as ``eical calibrate
    --evaluate`` calls it (fresh chip, input stream 1), plus the uncertainty of each figure."""
    from calibrate.metrics import true_figures

    t0 = time.perf_counter()
    dev = _RecordingDevice(profile, seed, input_stream=input_stream)
    fig = true_figures(dev.profile, seed, codes, replay_s=replay_s, target_rate_hz=target_rate_hz, device=dev)
    n_sub = max(2, int(round(replay_s / SUB_WINDOW_S)))  # as true_figures cuts it (after its settle window)
    subs = dev.windows[-n_sub:]
    se, stats = figure_uncertainties(dev, subs, fig, target_rate_hz=target_rate_hz)
    return JudgedReplay(figures=fig, se=se, replay_s=float(replay_s), sub_windows=n_sub,
                        wall_s=time.perf_counter() - t0, stats=stats)


def _sem(series: np.ndarray) -> np.ndarray:
    """Standard error of the mean over axis 0 (sub-windows)."""
    k = series.shape[0]
    return series.std(axis=0, ddof=1) / math.sqrt(k)


def _quantile_se(values: np.ndarray, se: np.ndarray, q: float, draws: int = 400) -> float:
    """se of ``np.quantile(|values|, q)`` from each value's own se: a parametric bootstrap (each value redrawn
    around itself with its se, folded at 0 as the balance index is, the quantile taken again; a fixed seed, so the
    figure is reproducible). The closed form for two interpolated order statistics ignores that neighbours swap
    ranks and overstated the spread by 1.4x on devboard (docs/yield.md)."""
    n = values.size
    if n == 0:
        return float("nan")
    rng = np.random.default_rng(0)
    sims = np.abs(values[None, :] + se[None, :] * rng.standard_normal((draws, n)))
    return float(np.quantile(sims, q, axis=1).std(ddof=1))


def figure_uncertainties(dev, subs, fig, *, target_rate_hz: Optional[float] = None) -> tuple[dict, dict]:
    """Standard errors of the judged figures of one replay (module docstring). ``subs``: the replay's sub-window
    ``WindowStats``; ``fig``: its ``TrueFigures``. Returns (se by figure name, supporting statistics)."""
    from calibrate.controllers import Targets

    chip, prof = dev.chip, dev.profile
    K = len(subs)
    dt_s = np.array([s.window_ms for s in subs]) / 1e3
    counts = np.stack([s.spike_counts for s in subs]).astype(float)  # [K, N]
    iexc = np.stack([s.iexc for s in subs])
    ibal = iexc + np.stack([s.iinh for s in subs])
    live = ~chip.dead
    n_live = int(live.sum())
    tg = Targets.from_profile(prof, rate_hz=target_rate_hz)
    tgt = tg.per_neuron(chip.n)
    se: dict[str, float] = {}
    stats: dict = {"sub_windows": K, "live": n_live}

    # deconvolved rate CV
    c2 = float(fig.counting_cv) ** 2
    cvd = float(fig.rate_cv_deconvolved)
    if n_live > 1 and math.isfinite(c2):
        var = (4 * cvd ** 2 * c2 + 2 * c2 ** 2) / n_live + c2 ** 2 * math.pi / (max(K - 1, 1) * n_live)
        se["rate_cv_deconvolved"] = math.sqrt(var) / (2 * max(cvd, var ** 0.25))
    # mean-rate error (relative): per sub-window, the live neurons' mean of rate / own target
    rel = counts[:, live] / dt_s[:, None] / tgt[None, live]
    pop = rel.mean(axis=1)
    se["rate_err"] = float(_sem(pop[:, None])[0])
    tot = counts[:, live].sum(axis=1)
    stats["fano_pop"] = float(tot.var(ddof=1) / tot.mean()) if tot.mean() > 0 else float("nan")
    if tg.inh_mask is not None:
        inh = np.asarray(tg.inh_mask, dtype=bool)
        for name, m in (("rate_err_exc", live & ~inh), ("rate_err_inh", live & inh)):
            if m.any():
                se[name] = float(_sem((counts[:, m] / dt_s[:, None] / tgt[None, m]).mean(axis=1)[:, None])[0])
    # per-neuron balance index and its quantiles
    mexc = np.abs(iexc.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        bi = np.abs(ibal.mean(axis=0)) / mexc
        bi_se = _sem(ibal) / mexc
    if n_live:
        se["balance_p95"] = _quantile_se(bi[live], bi_se[live], 0.95)
        se["balance_median"] = _quantile_se(bi[live], bi_se[live], 0.5)
        stats["balance_se_median_neuron"] = float(np.median(bi_se[live]))
    # shared knobs: the worst group's rate error and balance index
    ke = dev.knobs["gain_e"]
    if ke.sharing != "neuron":
        g = ke.group_of
        G = ke.n_groups
        tgt0 = float(target_rate_hz if target_rate_hz is not None else prof["targets"]["rate_hz"])
        n_g = np.bincount(g, weights=live.astype(float), minlength=G)
        grate = np.stack([np.bincount(g, weights=counts[k] * live, minlength=G) for k in range(K)])
        grate = grate / np.maximum(n_g, 1)[None, :] / dt_s[:, None] / tgt0  # [K, G] relative group rates
        err = np.abs(grate.mean(axis=0) - 1)
        se["group_rate_err_max"] = float(_sem(grate)[int(np.argmax(err))])
        gb = np.stack([np.bincount(g, weights=ibal[k], minlength=G) for k in range(K)])
        ge = np.abs(np.stack([np.bincount(g, weights=iexc[k], minlength=G) for k in range(K)]).mean(axis=0))
        gbi = np.abs(gb.mean(axis=0)) / ge
        se["group_balance_max"] = float((_sem(gb) / ge)[int(np.argmax(gbi))])
        stats["fano_pop_groups"] = [float(x) for x in
                                    (np.stack([np.bincount(g, weights=counts[k] * live, minlength=G)
                                               for k in range(K)]).var(axis=0, ddof=1)
                                     / np.maximum(np.bincount(g, weights=counts.sum(axis=0) * live,
                                                              minlength=G) / K, 1e-9))]
    return {k: float(v) for k, v in se.items()}, stats


def required_replay_s(judged: JudgedReplay, limits: Mapping[str, float], *, fraction: float = 0.1,
                      shared: bool = False) -> dict[str, float]:
    """Replay length (s) at which each criterion's standard error would be ``fraction`` of its limit, from one
    replay's figures and uncertainties.

    The balance and rate-error se fall as 1/sqrt(T). The deconvolved CV's se is judged at ``CV = limit`` (where the
    verdict is decided) and solved in closed form from its variance: with ``u = c^2 = F / (r T)``,
    ``(4 L^2 u + 2 u^2) / N = (2 L * fraction L)^2`` gives ``u = L^2 (sqrt(1 + 2 N fraction^2) - 1)``
    (the small term from the Fano estimate left out), so ``T = F / (r u)``."""
    fig, T = judged.figures, judged.replay_s
    out: dict[str, float] = {}
    L = limits.get("rate_cv")
    if L and not shared and math.isfinite(fig.fano) and fig.rate_mean_hz > 0:
        n = fig.live
        u = L ** 2 * (math.sqrt(1 + 2 * n * fraction ** 2) - 1)
        out["rate_cv"] = float(fig.fano / (fig.rate_mean_hz * u))
    pairs = (("balance_p95", "group_balance_max" if shared else "balance_p95"),
             ("rate_err", "group_rate_err_max" if shared else "rate_err"))
    for crit, figname in pairs:
        L = limits.get(crit)
        s = judged.se.get(figname)
        if figname == "rate_err" and "rate_err_exc" in judged.se:
            s = max(judged.se["rate_err_exc"], judged.se.get("rate_err_inh", 0.0))
        if L and s is not None and math.isfinite(s):
            out[crit] = float(T * (s / (fraction * L)) ** 2)
    return out
