"""The oracle: the best calibration that counting noise allows within a budget, as a reference for controllers.

Emulated chips only. The oracle reads the chip's hidden parameters, which no controller may do; it is a yardstick
(docs/yield.md, "The oracle"), not a controller, and it lives here rather than in ``controllers``.

1. **Start at the codes that are best for the hidden parameters.**
   - *Ratio, analytically.* The balance proxy is linear in the two gains, and the input trains do not depend on the
     neuron, so the long-run means are exact: per unit DAC gain, ``<g_e> = jump_e * E[x_e] / (1 - exp(-dt/tau_e))``
     with ``E[x_e] = p_e * sum_k w_ik`` (``p_e = rate_e * dt``, the Bernoulli rate of a source per step), and
     likewise for inhibition (dpi: the same for the AMPA and GABA currents). The proxy is zero at
     ``gain_e / gain_i = r* = B / A`` with ``A = <g_e>(E_E - V_bal)`` and ``B = <g_i>(V_bal - E_I)`` (per knob group:
     the sums over its neurons). No measurement is needed and none could do better.
   - *Scale, by replays with common random numbers.* Neurons of a feed-forward chip do not interact, so a chip
     whose every neuron is copied M times (same parameters, same input rows, so the same input spikes) measures
     each neuron's rate at M scales in one replay, at the cost of a little more than one replay on this engine
     (the step loop's overhead is per step, not per neuron). Gains are continuous (no DAC rounding). A coarse
     round (M = 9 scales over ``ln s`` in [-1, 1.2], ``COARSE_S``) brackets each group's target crossing; a fine round
     (5 scales within +-0.12 of it, plus 2 copies at ratio +-0.05 for the rate's slope in the ratio, ``FINE_S``)
     fits ``ln rate = a + beta (ln s - c) `` and solves it. Both rounds replay input stream ``SEARCH_STREAM``, one
     no calibration or judging replay uses. The start's own error is the counting noise of the fine round
     (``sqrt(F / (r T))``: about 5 % per neuron at 60 s); see 3 for why that is enough.
   - The pair of integer codes is then chosen jointly from the neighbours of the wanted gains (+-2 codes each),
     minimising the predicted ``(rate error)^2 + (ratio error)^2`` with the fitted slopes: the balance index of a
     ratio error ``d ln r`` is ``|1 - exp(-d ln r)| ~ |d ln r|``, so both errors are relative.
2. **Spend the same budget measuring**: the whole budget at the start codes (in windows of at most 10 s), on the
   chip's own ``Device`` (input stream 0, the stream a controller measures).
3. **Make one correction**: a Newton step in ``ln s`` per group with the slope found in 1,
   ``ln s += (ln target - ln measured rate) / beta``, and the codes chosen as in 1. The final rates then carry the
   counting noise of the budget window alone, ``sqrt(F / (r T_budget))``, whatever the start's error (it only
   enters through the step's linearisation, to second order), plus the DAC's rounding: the best any controller
   that must learn the rates by counting can do in that budget, with no approach phase. The ratio is kept at the
   analytic r*, so the oracle's balance is limited by the DAC's rounding alone.

Feed-forward chips only: on a recurrent chip rates depend on every other neuron's codes, and copies would not be
independent (``OracleUnavailable``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import scipy.sparse as sp

from hw_models.device import KnobSpec

__all__ = ["oracle_calibrate", "OracleResult", "OracleUnavailable", "balance_ratio", "SEARCH_STREAM"]

SEARCH_STREAM = 7  # input stream of the oracle's scale search (0: calibration, 1: judging replay, 2: diagnose)
COARSE_LN_S = np.linspace(-1.0, 1.2, 9)
COARSE_S = 10.0  # seconds of model time of the coarse round
FINE_OFFSETS = np.array([-0.12, -0.06, 0.0, 0.06, 0.12])
RATIO_STEP = 0.05
FINE_S = 60.0  # per-neuron knobs; shared knobs average many neurons and use FINE_S_SHARED
FINE_S_SHARED = 20.0
SETTLE_MS = 500.0
NEIGHBOURS = 2


class OracleUnavailable(ValueError):
    """The oracle cannot run on this chip (one line)."""


@dataclass
class OracleResult:
    """The oracle's calibration of one chip.

    codes: final codes (after the one correction); start_codes: the codes best for the hidden parameters.
    ratio: the analytic r* per knob group; beta, gamma: d ln rate / d ln s (per group) and / d ln r (population)
    found by the search; measured_rate_hz: group rates in the budget window; model_ms: the budget spent measuring;
    search_model_ms: model time of the scale search (on the copied chip, not charged to the budget);
    unreachable: groups whose wanted codes lie outside the DAC range.
    """

    codes: dict[str, np.ndarray]
    start_codes: dict[str, np.ndarray]
    ratio: np.ndarray
    beta: np.ndarray
    gamma: float
    measured_rate_hz: np.ndarray
    model_ms: float
    search_model_ms: float
    unreachable: int
    wall_s: float
    cpu_s: float = float("nan")  # CPU time of steps 1-3 (this process)
    search_cpu_s: float = float("nan")  # of step 1, the search on copies of the chip


def _groups(knobs: Mapping[str, KnobSpec]) -> tuple[np.ndarray, int]:
    ke = knobs["gain_e"]
    return ke.group_of, ke.n_groups


def _unit_means(chip, engine) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: long-run |excitatory| and |inhibitory| parts of the balance proxy at unit DAC gain (pA)."""
    from .replay import expected_parts

    # the engine's own constants (jumps, decays, driving forces), not re-derived formulas
    engine.set_gains(chip.params["eps_e"], chip.params["eps_i"])  # effective gain = DAC gain 1 x eps
    mu_e, mu_i = expected_parts(engine)
    return np.abs(mu_e), np.abs(mu_i)


def balance_ratio(chip) -> np.ndarray:
    """The analytic balancing ratio ``gain_e / gain_i`` (DAC gains) per knob group of ``chip``."""
    from hw_models.engine import Engine

    a, b = _unit_means(chip, Engine(chip))
    g, G = _groups(chip.knobs)
    return np.bincount(g, weights=b, minlength=G) / np.bincount(g, weights=a, minlength=G)


def _copied_chip(chip, m: int):
    """``chip`` with every neuron copied ``m`` times (copy j of neuron i is neuron ``j*N + i``), same input rows."""
    return dataclasses.replace(
        chip, params={k: np.tile(v, m) for k, v in chip.params.items()}, dead=np.tile(chip.dead, m),
        core_of=np.tile(chip.core_of, m), in_e=sp.vstack([chip.in_e] * m).tocsr(),
        in_i=sp.vstack([chip.in_i] * m).tocsr(), adc_offset_pa=np.tile(chip.adc_offset_pa, m), knobs={})


def _group_rates(chip, counts: np.ndarray, T_s: float, m: int) -> np.ndarray:
    """[m, G] mean rate over live neurons of each group in each copy (NaN where a group has none)."""
    g, G = _groups(chip.knobs)
    live = ~chip.dead
    n = np.bincount(g, weights=live.astype(float), minlength=G)
    c = counts.reshape(m, chip.n) * live[None, :]
    out = np.stack([np.bincount(g, weights=c[j], minlength=G) for j in range(m)]) / T_s
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, out / n, np.nan)


def _rates_at(chip, ln_s: np.ndarray, ln_r: np.ndarray, T_s: float) -> np.ndarray:
    """Group rates [m, G] with group scales ``ln_s`` [m, G] and ratios ``ln_r`` [m, G] (continuous DAC gains), one
    replay of the copied chip on the search stream."""
    from hw_models.engine import Engine

    m = ln_s.shape[0]
    g, _ = _groups(chip.knobs)
    big = _copied_chip(chip, m)
    eng = Engine(big, input_stream=SEARCH_STREAM)
    ge = np.exp(ln_s + ln_r / 2)[:, g].ravel() * big.params["eps_e"]
    gi = np.exp(ln_s - ln_r / 2)[:, g].ravel() * big.params["eps_i"]
    eng.set_gains(ge, gi)
    dt = chip.profile.dt_ms
    eng.run(max(1, int(round(SETTLE_MS / dt))))
    st = eng.run(max(1, int(round(T_s * 1e3 / dt))))
    return _group_rates(chip, st.spike_counts.astype(float), T_s, m)


def _cross(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """Where the piecewise-linear curve (x, y) first reaches ``target`` (extrapolated from the end segments)."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return float("nan")
    above = np.flatnonzero(y >= target)
    if above.size == 0:
        j = x.size - 1
    elif above[0] == 0:
        j = 1
    else:
        j = int(above[0])
    dy = y[j] - y[j - 1]
    slope = dy / (x[j] - x[j - 1]) if dy > 0 else 1.0
    return float(x[j - 1] + (target - y[j - 1]) / slope)


def _neighbours(spec: KnobSpec, gain: np.ndarray, k: int) -> np.ndarray:
    """[G, 2k+1] codes around the nearest code to ``gain``, in the DAC's gain order (clipped at its ends)."""
    valid = spec.valid_codes()
    order = valid[np.argsort(spec.nominal_gain(valid), kind="stable")]
    pos = np.empty(spec.max_code + 1, dtype=np.int64)
    pos[order] = np.arange(order.size)
    p = pos[spec.code_for_gain(gain)]
    steps = np.arange(-k, k + 1)
    return order[np.clip(p[:, None] + steps[None, :], 0, order.size - 1)]


def _choose_codes(knobs, ln_s_want, ln_r_want, predict) -> dict[str, np.ndarray]:
    """Jointly rounded codes: among +-NEIGHBOURS codes of each knob, the pair with the smallest predicted
    (ln rate error)^2 + (ratio error)^2; ``predict(ln_s, ln_r)`` gives the ln rate error of applied gains."""
    ke, ki = knobs["gain_e"], knobs["gain_i"]
    ce = _neighbours(ke, np.exp(ln_s_want + ln_r_want / 2), NEIGHBOURS)
    ci = _neighbours(ki, np.exp(ln_s_want - ln_r_want / 2), NEIGHBOURS)
    with np.errstate(divide="ignore"):
        le = np.log(np.maximum(ke.nominal_gain(ce), 1e-300))
        li = np.log(np.maximum(ki.nominal_gain(ci), 1e-300))
    ls = 0.5 * (le[:, :, None] + li[:, None, :])
    lr = le[:, :, None] - li[:, None, :]
    cost = predict(ls, lr) ** 2 + (lr - ln_r_want[:, None, None]) ** 2
    cost = np.where(np.isfinite(cost), cost, np.inf)
    k = ce.shape[1]
    best = np.argmin(cost.reshape(cost.shape[0], -1), axis=1)
    rows = np.arange(cost.shape[0])
    return {"gain_e": ce[rows, best // k], "gain_i": ci[rows, best % k]}


def _applied(knobs, codes) -> tuple[np.ndarray, np.ndarray]:
    ge = knobs["gain_e"].nominal_gain(codes["gain_e"])
    gi = knobs["gain_i"].nominal_gain(codes["gain_i"])
    with np.errstate(divide="ignore"):
        le, li = np.log(np.maximum(ge, 1e-300)), np.log(np.maximum(gi, 1e-300))
    return 0.5 * (le + li), le - li


def _scale_limits(knobs, ln_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo_e, hi_e = np.log(knobs["gain_e"].gain_limits())
    lo_i, hi_i = np.log(knobs["gain_i"].gain_limits())
    return np.maximum(lo_e - ln_r / 2, lo_i + ln_r / 2), np.minimum(hi_e - ln_r / 2, hi_i + ln_r / 2)


@dataclass
class _StartSearch:
    """What the search on copies of the chip found, per group: the start state and the local rate model."""

    ln_s: np.ndarray  # start log-scale
    beta: np.ndarray  # d ln rate / d ln s
    gamma: float  # d ln rate / d ln r (population)
    unreachable: np.ndarray
    model_ms: float


def _search_start(chip, knobs, ln_r: np.ndarray, ln_tgt: float, lo, hi) -> _StartSearch:
    """Step 1: the scale that meets the target, on copies of the chip fed common random numbers (stream
    SEARCH_STREAM): a coarse sweep, then a fine line fit for each group's slope and the population's ratio slope."""
    G = ln_r.shape[0]
    coarse = np.repeat(COARSE_LN_S[:, None], G, axis=1)
    y1 = np.log(np.maximum(_rates_at(chip, coarse, np.repeat(ln_r[None, :], len(COARSE_LN_S), 0), COARSE_S), 1e-300))
    y1[~np.isfinite(y1) | (y1 < -100)] = np.nan
    c = np.array([_cross(COARSE_LN_S, y1[:, j], ln_tgt) for j in range(G)])
    c = np.where(np.isfinite(c), c, 0.0)
    c = np.clip(c, lo, hi)
    fine = c[None, :] + FINE_OFFSETS[:, None]
    fine_r = np.repeat(ln_r[None, :], len(FINE_OFFSETS), 0)
    both_s = np.vstack([fine, c[None, :], c[None, :]])
    both_r = np.vstack([fine_r, (ln_r + RATIO_STEP)[None, :], (ln_r - RATIO_STEP)[None, :]])
    fine_s = FINE_S_SHARED if knobs["gain_e"].sharing != "neuron" else FINE_S
    rates = _rates_at(chip, both_s, both_r, fine_s)
    with np.errstate(divide="ignore"):
        y2 = np.log(rates)
    y2[~np.isfinite(y2)] = np.nan
    beta = np.full(G, np.nan)
    a = np.full(G, np.nan)
    for j in range(G):
        ok = np.isfinite(y2[:len(FINE_OFFSETS), j])
        if ok.sum() >= 2:
            beta[j], a[j] = np.polyfit(FINE_OFFSETS[ok], y2[:len(FINE_OFFSETS), j][ok], 1)
    good = np.isfinite(beta) & (beta > 0)
    beta_med = float(np.median(beta[good])) if good.any() else 1.5
    beta = np.where(good, np.clip(beta, 0.3 * beta_med, 3 * beta_med), beta_med)
    with np.errstate(invalid="ignore"):
        gam = (y2[-2] - y2[-1]) / (2 * RATIO_STEP)
    gamma = float(np.median(gam[np.isfinite(gam)])) if np.isfinite(gam).any() else 0.0
    ln_s = np.where(np.isfinite(a), c + (ln_tgt - a) / beta, c)
    unreachable = (ln_s > hi) | (ln_s < lo)
    return _StartSearch(ln_s=np.clip(ln_s, lo, hi), beta=beta, gamma=gamma, unreachable=unreachable,
                        model_ms=(COARSE_S + fine_s) * 1e3 + 2 * SETTLE_MS)


def _measure_budget(dev, g: np.ndarray, G: int, budget_s: float) -> tuple[np.ndarray, float]:
    """Step 2: spend the budget measuring at the codes set, on the chip's own stream; per-group rate and the model
    time spent. In windows of at most 10 s, so a chip's spike counters (16 bit on devboard) never saturate."""
    chip = dev.chip
    n_win = max(1, math.ceil(budget_s / 10.0))
    counts = np.zeros(chip.n)
    spent_ms = 0.0
    for _ in range(n_win):
        m = dev.measure(budget_s * 1e3 / n_win)
        counts += m.spike_counts
        spent_ms += m.window_ms
    live = ~chip.dead
    n_live = np.bincount(g, weights=live.astype(float), minlength=G)
    cnt = np.bincount(g, weights=counts * live, minlength=G)
    return np.where(n_live > 0, cnt / np.maximum(n_live, 1) / (spent_ms / 1e3), np.nan), float(spent_ms)


def oracle_calibrate(profile, seed: int, *, budget_s: float = 90.0, target_rate_hz: Optional[float] = None,
                     device=None) -> OracleResult:
    """Calibrate emulated chip ``(profile, seed)`` as the oracle (module docstring). ``device``: the chip's
    ``NumpyDevice`` to spend the budget on (default: a fresh one on input stream 0)."""
    from hw_models.emulator import NumpyDevice

    t0, c0 = time.perf_counter(), time.process_time()
    dev = device if device is not None else NumpyDevice(profile, seed)
    chip, prof = dev.chip, dev.profile
    if chip.rec is not None:
        raise OracleUnavailable(f"{prof.name}: the oracle needs a feed-forward chip; on a recurrent chip every "
                                f"neuron's rate depends on the others' codes")
    if not (budget_s > 0):
        raise OracleUnavailable(f"the oracle needs a positive budget, got {budget_s!r}")
    knobs = dev.knobs
    g, G = _groups(knobs)
    target = float(target_rate_hz if target_rate_hz is not None else prof["targets"]["rate_hz"])
    ln_tgt = math.log(target)
    ln_r = np.log(balance_ratio(chip))
    lo, hi = _scale_limits(knobs, ln_r)

    found = _search_start(chip, knobs, ln_r, ln_tgt, lo, hi)
    search_cpu_s = time.process_time() - c0
    beta, gamma, ln_s_start = found.beta, found.gamma, found.ln_s
    start = _choose_codes(knobs, ln_s_start, ln_r,
                          lambda ls, lr: beta[:, None, None] * (ls - ln_s_start[:, None, None])
                          + gamma * (lr - ln_r[:, None, None]))
    dev.set_codes(start)
    rate, spent_ms = _measure_budget(dev, g, G, budget_s)

    # 3. one Newton correction from the applied start state
    ls0, lr0 = _applied(knobs, start)
    with np.errstate(divide="ignore"):
        ln_meas = np.log(rate)
    ok = np.isfinite(ln_meas)
    ln_s_new = np.where(ok, ls0 + (ln_tgt - np.where(ok, ln_meas, ln_tgt) - gamma * (ln_r - lr0)) / beta, ls0)
    unreachable = found.unreachable | (ln_s_new > hi) | (ln_s_new < lo)
    ln_s_new = np.clip(ln_s_new, lo, hi)
    base = np.where(ok, ln_meas, ln_tgt)
    final = _choose_codes(knobs, ln_s_new, ln_r,
                          lambda ls, lr: base[:, None, None] - ln_tgt + beta[:, None, None] * (ls - ls0[:, None, None])
                          + gamma * (lr - lr0[:, None, None]))
    return OracleResult(codes=final, start_codes=start, ratio=np.exp(ln_r), beta=beta, gamma=gamma,
                        measured_rate_hz=rate, model_ms=spent_ms, search_model_ms=float(found.model_ms),
                        unreachable=int(unreachable.sum()), wall_s=time.perf_counter() - t0,
                        cpu_s=time.process_time() - c0, search_cpu_s=search_cpu_s)
