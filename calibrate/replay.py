"""The judging replay: the true figures ``eical calibrate --evaluate`` and a yield study report, and the uncertainty
each figure owes to the replay's own finite length.

A chip is judged by ``calibrate.metrics.true_figures``: a replay of the emulated chip at its final codes on an input
stream the calibration never saw (stream 1), settled for 0.5 s and cut into sub-windows of about 1 s
(:func:`record_replay`). Two things make it cheaper than a plain long replay without weakening it (docs/yield.md,
"How long the judging replay is"):

- **Replicas.** A small chip is replayed as ``M`` independent copies in one engine (:func:`replicated_chip`): the
  same neurons, parameters and codes, each copy on its own input sources (the pools' sources are copied too), so the
  copies are independent replays of the same chip. The compiled step has a fixed cost per step that a 32-neuron
  chip does not amortise; devboard costs half as much per chip-second at 8 copies. A replay of ``T`` seconds is
  then ``M`` copies of ``T / M``: the same ``T`` seconds of observation.
- **The input drive as a control variate** (``calibrate.control_variate``). Every random number of a feed-forward
  emulated chip is an input spike, and the two parts of the balance proxy are linear in them, with expectations
  known exactly (:func:`expected_parts`). Each neuron's rate is read at its expected drive, which removes most of
  the replay noise of the mean rate (shared input pools), and the balance index is the exact ratio of those
  expectations. The replay checks the expectations against its own window means first and falls back to the plain
  estimates, with a warning, if they disagree (a model whose proxy is not linear in its inputs).

:func:`judging_replay` returns the figures and each judged figure's standard error (:func:`figure_uncertainties`);
:func:`required_replay_s` turns one replay's uncertainties into the length at which each criterion's se would be a
tenth of its limit; ``JUDGING_REPLAY_S`` holds the lengths measured that way for the shipped profiles.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
import scipy.sparse as sp

from .control_variate import MIN_SUB_WINDOWS, RateEstimate, estimate_rates

__all__ = ["JudgedReplay", "judging_replay", "figure_uncertainties", "required_replay_s", "JUDGING_REPLAY_S",
           "default_replay_s", "SUB_WINDOW_S", "ReplayRecord", "record_replay", "replicated_chip", "expected_parts",
           "replicas_for", "REPLICA_NEURONS"]

SUB_WINDOW_S = 1.0  # true_figures' sub-window (its default): long against every correlation time of the chips

# Judging replay length per shipped profile (seconds of model time, over all replicas), so that the replay's own
# standard error on each criterion of the default spec is under a tenth of its limit; measured by
# benchmarks/bench_yield.py (`python -m benchmarks yield`), derivation and figures in docs/yield.md.
JUDGING_REPLAY_S: dict[str, float] = {
    "devboard": 400.0,
    "bss2": 100.0,
    "dynapse2": 60.0,
    "balanced-net": 150.0,
}
# any other profile: as the smallest shipped chip; every record carries its se, and the study flags sweep points
# whose replay turned out too short (yield.json: replay_ok)
FALLBACK_REPLAY_S = 400.0

# Replicas fill a replay engine up to this many neurons: the compiled step's fixed cost per step is about that of
# 64 devboard neurons, and the cost per chip-second stops falling near 256 (docs/yield.md, "Replicas")
REPLICA_NEURONS = 256
MIN_SUB_WINDOWS_PER_REPLICA = 4  # each copy settles once: keep its settle a small part of its replay
EXPECTATION_Z = 5.0  # a neuron whose replayed proxy mean is further than this from its expectation (in se) ...
EXPECTATION_BAD_SHARE = 0.02  # ... on more than this share of neurons (and on 2 or more): expectations not trusted


def default_replay_s(profile_name: str) -> float:
    return JUDGING_REPLAY_S.get(profile_name, FALLBACK_REPLAY_S)


def replicas_for(n_neurons: int, replay_s: float, sub_window_s: float = SUB_WINDOW_S) -> int:
    """How many copies of an ``n_neurons`` chip a replay of ``replay_s`` runs in one engine (module docstring)."""
    by_size = max(1, REPLICA_NEURONS // max(int(n_neurons), 1))
    by_length = max(1, int(replay_s / (sub_window_s * MIN_SUB_WINDOWS_PER_REPLICA)))
    return int(min(by_size, by_length))


def replicated_chip(chip, m: int):
    """``chip`` as ``m`` independent copies in one chip: copy ``j`` of neuron ``i`` is neuron ``j N + i``, with the
    same parameters; every copy reads its own copy of the input pools (block-diagonal input weights, ``m`` times the
    sources), and on a recurrent chip its own copy of the network. Nothing couples two copies, so they are
    independent replays of ``chip``. ``m = 1`` returns ``chip``."""
    if m == 1:
        return chip
    prof = chip.profile
    inp = prof["input"]
    profile = prof.with_changes({"input.n_src_e": inp["n_src_e"] * m, "input.n_src_i": inp["n_src_i"] * m,
                                 "geometry.cores": prof.n_cores * m})

    def blocks(mat):
        return sp.block_diag([mat] * m, format="csr")

    return dataclasses.replace(
        chip, profile=profile, params={k: np.tile(v, m) for k, v in chip.params.items()}, dead=np.tile(chip.dead, m),
        core_of=np.concatenate([chip.core_of + j * prof.n_cores for j in range(m)]), in_e=blocks(chip.in_e),
        in_i=blocks(chip.in_i), adc_offset_pa=np.tile(chip.adc_offset_pa, m), knobs={},
        rec=None if chip.rec is None else blocks(chip.rec),
        rec_is_exc=None if chip.rec_is_exc is None else np.tile(chip.rec_is_exc, m))


def expected_parts(engine) -> tuple[np.ndarray, np.ndarray]:
    """Long-run means of the two parts of the balance proxy (``WindowStats.iexc``, ``.iinh``) per neuron of a
    feed-forward ``engine`` at its current gains and temperature (pA).

    The input sources are Bernoulli per step with ``p = rate dt``, and a synapse decays by ``d`` per step and jumps
    by ``jump w`` per input spike, so its stationary mean is ``jump p sum_k w_k / (1 - d)``: cond_lif's conductances
    times their driving forces at Vbal, dpi's AMPA current and minus its GABA current. The engine's own constants."""
    chip, c = engine.chip, engine.consts
    xe = engine.pool_e.p * np.asarray(chip.in_e.sum(axis=1)).ravel() * engine.jump_e
    xi = engine.pool_i.p * np.asarray(chip.in_i.sum(axis=1)).ravel() * engine.jump_i
    if chip.model == "cond_lif":
        s = chip.scalars
        return xe / (1 - c.de) * (s["EE"] - s["Vbal"]), xi / (1 - c.di) * (s["EI"] - s["Vbal"])
    return xe / (1 - c.da), -xi / (1 - c.dg)


@dataclass
class ReplayRecord:
    """The sub-windows of one judging replay, per neuron of the chip (the replicas' sub-windows stacked).

    counts, iexc, iinh: [S, N] spike counts and proxy-part window means of S sub-windows; sub_s: [S] their lengths
    (s); mu_e, mu_i: [N] the proxy parts' expectations (None on a recurrent chip, with fewer than
    ``MIN_SUB_WINDOWS`` sub-windows, or when the replay contradicted them); dead: [N]; replicas: copies run in one
    engine; replay_s: the model time observed (all copies); knobs: the chip's knob specs.
    """

    counts: np.ndarray
    iexc: np.ndarray
    iinh: np.ndarray
    sub_s: np.ndarray
    mu_e: Optional[np.ndarray]
    mu_i: Optional[np.ndarray]
    dead: np.ndarray
    replicas: int
    replay_s: float
    knobs: dict = field(default_factory=dict)

    @property
    def rates_hz(self) -> np.ndarray:
        return self.counts / self.sub_s[:, None]

    def rate_estimate(self) -> RateEstimate:
        """The neurons' long-run rates: with the drive as control variate where its expectations are known."""
        if self.mu_e is None or self.mu_i is None:
            return estimate_rates(self.rates_hz)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(self.mu_e != 0, self.iexc / self.mu_e - 1, 0.0)
            v = np.where(self.mu_i != 0, self.iinh / self.mu_i - 1, 0.0)
        return estimate_rates(self.rates_hz, u, v)


def _expectations_hold(rec: ReplayRecord) -> bool:
    """Whether the replay's own proxy means agree with the expectations (module docstring), per neuron in units of
    their standard error from the sub-windows."""
    live = ~rec.dead
    S = rec.counts.shape[0]
    for parts, mu in ((rec.iexc, rec.mu_e), (rec.iinh, rec.mu_i)):
        se = parts.std(axis=0, ddof=1) / math.sqrt(S)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, (parts.mean(axis=0) - mu) / se, np.where(parts.mean(axis=0) == mu, 0.0, np.inf))
        bad = int((np.abs(z[live]) > EXPECTATION_Z).sum())
        if bad >= 2 and bad > EXPECTATION_BAD_SHARE * live.sum():
            return False
    return True


def _own_device_engine(device):
    return getattr(device, "engine", None)


def record_replay(profile, seed: int, codes: Mapping[str, np.ndarray], *, replay_s: float,
                  sub_window_s: float = SUB_WINDOW_S, settle_s: float = 0.5, temperature_k: Optional[float] = None,
                  input_stream: int = 1, device=None, replicas: Optional[int] = None) -> ReplayRecord:
    """Replay emulated chip ``(profile, seed)`` at ``codes`` for ``replay_s`` seconds of model time (over all
    replicas) on input stream ``input_stream``, after ``settle_s``; ``replicas``: copies in one engine (default
    :func:`replicas_for`). With ``device`` (an emulator, which keeps its state) the replay runs on it, as one copy."""
    from hw_models.chip import draw_chip
    from hw_models.device import validate_codes
    from hw_models.emulator import gains_from_codes, nominal_codes
    from hw_models.engine import Engine
    from hw_models.profile import load_profile

    if device is not None:
        chip = device.chip
        device.set_codes(codes)
        m = 1

        def run(ms: float):
            return device.run_true(ms)

        engine = _own_device_engine(device)
    else:
        prof = load_profile(profile)
        chip = draw_chip(prof, seed)
        m = replicas if replicas is not None else replicas_for(chip.n, replay_s, sub_window_s)
        applied = nominal_codes(chip.knobs)  # as NumpyDevice.set_codes: knobs not given stay at code_ref
        applied.update(validate_codes(chip.knobs, codes))
        ge, gi = gains_from_codes(chip, applied)
        engine = Engine(replicated_chip(chip, m), temperature_k=temperature_k, input_stream=input_stream)
        engine.set_gains(np.tile(ge, m), np.tile(gi, m))
        steps_of = lambda ms: max(1, int(round(ms / chip.dt)))  # noqa: E731 (as NumpyDevice.steps_for)

        def run(ms: float):
            return engine.run(steps_of(ms))

    n = chip.n
    if settle_s > 0:
        run(settle_s * 1e3)
    k = max(2, int(round(replay_s / (m * sub_window_s))))
    sub_ms = replay_s * 1e3 / (m * k)
    counts, iexc, iinh, sub_s = (np.zeros((k, m, n)), np.zeros((k, m, n)), np.zeros((k, m, n)), np.zeros(k))
    for j in range(k):
        st = run(sub_ms)
        counts[j] = st.spike_counts.reshape(m, n)
        iexc[j] = st.iexc.reshape(m, n)
        iinh[j] = st.iinh.reshape(m, n)
        sub_s[j] = st.window_ms / 1e3
    mu_e = mu_i = None
    # the expectations are used (and checked) on a feed-forward chip with enough sub-windows to check them
    if chip.rec is None and engine is not None and k * m >= MIN_SUB_WINDOWS:
        mu_e, mu_i = (x[:n] for x in expected_parts(engine))
    rec = ReplayRecord(counts=counts.reshape(k * m, n), iexc=iexc.reshape(k * m, n), iinh=iinh.reshape(k * m, n),
                       sub_s=np.repeat(sub_s, m), mu_e=mu_e, mu_i=mu_i, dead=chip.dead.copy(), replicas=m,
                       replay_s=float(replay_s), knobs=dict(chip.knobs))
    if mu_e is not None and not _expectations_hold(rec):
        warnings.warn(f"{chip.uid}: the replay's proxy means contradict their expected values; its true figures use "
                      f"the plain estimates (no control variate)")
        rec.mu_e = rec.mu_i = None
    return rec


@dataclass
class JudgedReplay:
    """A replay's true figures (``TrueFigures``), each judged figure's standard error, and what it cost."""

    figures: object
    se: dict[str, float]
    replay_s: float
    sub_windows: int
    wall_s: float
    stats: dict = field(default_factory=dict)  # F_pop, replicas, variance left, ... (for the docs and the bench)
    cpu_s: float = float("nan")  # CPU time of the replay (this process): what it costs on a shared machine


def judging_replay(profile, seed: int, codes: Mapping[str, np.ndarray], *, replay_s: float,
                   target_rate_hz: Optional[float] = None, input_stream: int = 1,
                   replicas: Optional[int] = None) -> JudgedReplay:
    """``true_figures(profile, seed, codes, replay_s=..., target_rate_hz=...)`` exactly as ``eical calibrate
    --evaluate`` calls it (fresh chip, input stream 1), plus the uncertainty of each figure, from the same replay."""
    from calibrate.truth import figures_from_record
    from hw_models.profile import load_profile

    t0, c0 = time.perf_counter(), time.process_time()
    prof = load_profile(profile)
    rec = record_replay(prof, seed, codes, replay_s=replay_s, input_stream=input_stream, replicas=replicas)
    est = rec.rate_estimate()
    fig = figures_from_record(prof, rec, est, target_rate_hz=target_rate_hz)
    se, stats = figure_uncertainties(prof, rec, est, fig, target_rate_hz=target_rate_hz)
    return JudgedReplay(figures=fig, se=se, replay_s=float(replay_s), sub_windows=int(rec.counts.shape[0]),
                        wall_s=time.perf_counter() - t0, stats=stats, cpu_s=time.process_time() - c0)


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


def _sem(series: np.ndarray) -> np.ndarray:
    """Standard error of the mean over axis 0 (sub-windows)."""
    return series.std(axis=0, ddof=1) / math.sqrt(series.shape[0])


def _balance_se(rec: ReplayRecord, live: np.ndarray, se: dict, stats: dict) -> None:
    """Balance figures' se: 0 where they are the exact expectations; else from the sub-windows (input shot noise,
    Campbell's theorem), the quantiles' by a parametric bootstrap."""
    exact = rec.mu_e is not None
    mexc = np.abs(rec.iexc.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        bi = np.abs((rec.iexc + rec.iinh).mean(axis=0)) / mexc
        bi_se = _sem(rec.iexc + rec.iinh) / mexc
    if live.any():
        se["balance_p95"] = 0.0 if exact else _quantile_se(bi[live], bi_se[live], 0.95)
        se["balance_median"] = 0.0 if exact else _quantile_se(bi[live], bi_se[live], 0.5)
        stats["balance_se_median_neuron"] = 0.0 if exact else float(np.median(bi_se[live]))


def figure_uncertainties(profile, rec: ReplayRecord, est: RateEstimate, fig, *,
                         target_rate_hz: Optional[float] = None) -> tuple[dict, dict]:
    """Standard errors of the judged figures of one replay (docs/yield.md): ``rec`` its sub-windows, ``est`` the
    neurons' rate estimate, ``fig`` its ``TrueFigures``. Returns (se by figure name, supporting statistics)."""
    from calibrate.controllers import Targets

    live = ~rec.dead
    n_live = int(live.sum())
    tg = Targets.from_profile(profile, rate_hz=target_rate_hz)
    inv_t = 1.0 / tg.per_neuron(rec.dead.size)
    S = est.sub_windows
    se: dict[str, float] = {}
    tot = rec.counts[:, live].sum(axis=1)
    stats: dict = {"sub_windows": S, "live": n_live, "replicas": rec.replicas, "estimator": est.method,
                   "fano_pop": float(tot.var(ddof=1) / tot.mean()) if tot.mean() > 0 else float("nan"),
                   "variance_left": est.variance_left(live, inv_t)}
    # deconvolved rate CV: var(CV_d^2) = (4 CV^2 c^2 + 2 c^4) / N, plus the noise of c^2's own estimate (the mean of
    # N residual variances with S - p degrees of freedom each); se(CV_d) = sd(CV_d^2) / (2 CV_d)
    c2 = float(fig.counting_cv) ** 2
    cvd = float(fig.rate_cv_deconvolved)
    if n_live > 1 and math.isfinite(c2):
        var = (4 * cvd ** 2 * c2 + 2 * c2 ** 2) / n_live + 2 * c2 ** 2 / (max(S - est.params, 1) * n_live)
        se["rate_cv_deconvolved"] = math.sqrt(var) / (2 * max(cvd, var ** 0.25))
    se["rate_err"] = est.mean_se(live, inv_t)
    if tg.inh_mask is not None:
        inh = np.asarray(tg.inh_mask, dtype=bool)
        for name, mask in (("rate_err_exc", live & ~inh), ("rate_err_inh", live & inh)):
            if mask.any():
                se[name] = est.mean_se(mask, inv_t)
    _balance_se(rec, live, se, stats)
    ke = rec.knobs.get("gain_e")
    if ke is not None and ke.sharing != "neuron":
        _group_se(rec, est, ke, live, inv_t, se, stats)
    return {k: float(v) for k, v in se.items()}, stats


def _group_se(rec: ReplayRecord, est: RateEstimate, ke, live: np.ndarray, inv_t: np.ndarray, se: dict,
              stats: dict) -> None:
    """Shared knobs: the se of the worst group's rate error and balance index (taken at the group that sets it)."""
    g, G = ke.group_of, ke.n_groups
    errs = np.full(G, -1.0)
    ses = np.full(G, np.nan)
    for j in range(G):
        m = live & (g == j)
        if m.any():
            errs[j] = abs(float(np.mean(est.rates[m] * inv_t[m])) - 1)
            ses[j] = est.mean_se(m, inv_t)
    se["group_rate_err_max"] = float(ses[int(np.argmax(errs))])
    stats["variance_left_groups"] = [est.variance_left(live & (g == j), inv_t) for j in range(G)]
    if rec.mu_e is not None:
        se["group_balance_max"] = 0.0
        return
    ibal = rec.iexc + rec.iinh
    gb = np.stack([np.bincount(g, weights=row, minlength=G) for row in ibal])
    ge = np.abs(np.stack([np.bincount(g, weights=row, minlength=G) for row in rec.iexc]).mean(axis=0))
    gbi = np.abs(gb.mean(axis=0)) / ge
    se["group_balance_max"] = float((_sem(gb) / ge)[int(np.argmax(gbi))])


def required_replay_s(judged: JudgedReplay, limits: Mapping[str, float], *, fraction: float = 0.1,
                      shared: bool = False) -> dict[str, float]:
    """Replay length (s) at which each criterion's standard error would be ``fraction`` of its limit, from one
    replay's figures and uncertainties.

    The balance and rate-error se fall as 1/sqrt(T). The deconvolved CV's se is judged at ``CV = limit`` (where the
    verdict is decided) and solved in closed form from its variance: with ``u = c^2`` (the estimates' noise
    variance, which falls as 1/T), ``(4 L^2 u + 2 u^2) / N = (2 L * fraction L)^2`` gives
    ``u = L^2 (sqrt(1 + 2 N fraction^2) - 1)`` (the small term from c^2's own estimate left out), so
    ``T = T_replay c^2 / u``."""
    fig, T = judged.figures, judged.replay_s
    out: dict[str, float] = {}
    L = limits.get("rate_cv")
    if L and not shared and math.isfinite(fig.counting_cv) and fig.counting_cv > 0:
        u = L ** 2 * (math.sqrt(1 + 2 * fig.live * fraction ** 2) - 1)
        out["rate_cv"] = float(T * fig.counting_cv ** 2 / u)
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
