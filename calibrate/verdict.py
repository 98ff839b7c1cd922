"""The verdict of a calibration: did the chip meet its spec, judged by the one judge (``calibrate.criteria.judge``).

``summary.json`` and ``table.json`` carry it as::

    "verdict": {"met": bool, "complete": bool,
                "criteria": [{"name": "rate_cv", "value": 0.041, "limit": 0.05, "met": true,
                              "source": "true", "uncertainty": 0.0015}, ...]}

- ``source: "true"``: an emulated chip's true figure, from the judging replay (``calibrate.replay.judging_replay``:
  the chip replayed at its final codes on inputs the calibration never saw). Its length is the profile's judging
  length (``calibrate.replay.default_replay_s``), at which each figure's uncertainty is under a tenth of its limit.
- ``source: "measured"``: the figure as a board measures it, in the final verification windows (``--verify``), with
  the uncertainty its counting noise (and the proxy's read and shot noise) leaves. Without a verification, the
  controller's last loop windows. No emulator truth is used.
- ``uncertainty``: the figure's own standard error (null where it cannot be estimated, e.g. from one window).
- ``complete``: false for a run that was interrupted; such a verdict is never met and judges nothing.

A criterion is met when its figure is at most its limit (``calibrate.criteria.judge``) and the figure was measured
well enough to tell: its uncertainty is known and no larger than the limit itself (a verification of one window, or
of a fraction of a second, judges nothing). A criterion that has no meaning for the chip (``rate_cv`` where knobs are
shared by a core) is left out. A figure that could not be measured (no balance reference from the controller) is
listed with a null value and not met.
docs/verdicts.md has the definitions and the measured figures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from hw_models.table import VERDICT_SOURCES as SOURCES  # one list, where tables are checked

__all__ = ["Verdict", "true_verdict", "measured_verdict", "measured_figures", "final_windows", "incomplete_verdict",
           "SOURCES", "describe"]


@dataclass
class Verdict:
    met: bool
    complete: bool
    criteria: list[dict] = field(default_factory=list)
    how: dict = field(default_factory=dict)  # what judged it (replay length, windows, spec): summary "judged_by"

    def to_dict(self) -> dict:
        """The schema of the module docstring, exactly."""
        return {"met": self.met, "complete": self.complete, "criteria": [dict(c) for c in self.criteria]}

    def failed(self) -> list[dict]:
        return [c for c in self.criteria if not c["met"]]

    def failure_line(self) -> str:
        return failure_line(self)

    def line(self) -> str:
        """One line: ``spec met: rate_cv 0.041 <= 0.05 (+-0.002), ...`` or ``spec NOT met: ...``."""
        if not self.complete:
            return "verdict: incomplete run, not judged"
        src = {c["source"] for c in self.criteria}
        what = "true figures" if src == {"true"} else "measured figures" if src == {"measured"} else "figures"
        head = "spec met" if self.met else "spec NOT met"
        shown = self.criteria if self.met else self.failed()
        return f"verdict: {head} ({what}): " + "; ".join(describe(c) for c in shown)


def failure_line(v: "Verdict") -> str:
    """The one line ``--require-spec`` ends with: every failed criterion."""
    if not v.complete:
        return "spec not judged: the run is incomplete"
    return "spec not met: " + "; ".join(describe(c) for c in v.failed())


def describe(c: Mapping[str, Any]) -> str:
    """``rate_cv 0.147 > 0.05 (+-0.004)``."""
    v, u = c.get("value"), c.get("uncertainty")
    if v is None:
        return f"{c['name']} not measured (limit {c['limit']:g})"
    unc = f" (+-{u:.2g})" if u is not None else ""
    if v <= c["limit"] and not c["met"]:
        return f"{c['name']} {v:.3g}{unc}: too uncertain to judge against {c['limit']:g}"
    rel = "<=" if c["met"] else ">"
    return f"{c['name']} {v:.3g} {rel} {c['limit']:g}{unc}"


def _num(x: Any) -> Optional[float]:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _criteria(judged: list, source: str) -> list[dict]:
    out = []
    for c in judged:
        if not c.applies:
            continue
        u = _num(c.se)
        # judged by value <= limit (calibrate.criteria.judge); a figure measured too poorly to tell (its own
        # uncertainty unknown or over the limit itself) is not met either
        met = c.verdict_met
        out.append({"name": c.name, "value": _num(c.value), "limit": float(c.limit), "met": met, "source": source,
                    "uncertainty": u})
    return out


def _judge(fig: Mapping[str, Any], se: Mapping[str, float], spec: Any, shared: bool, targets: Any) -> list:
    from .criteria import judge

    return judge(fig, shared=shared, target_rate_hz=targets.rate_hz, target_inh_hz=targets.rate_inh_hz,
                 rate_cv=spec.rate_cv, balance=spec.balance_p95, rate_err=spec.rate_err, se=se)


def incomplete_verdict(reason: str = "") -> Verdict:
    return Verdict(met=False, complete=False, criteria=[], how={"interrupted": reason})


def true_verdict(judged: Any, spec: Any, *, shared: bool, targets: Any) -> Verdict:
    """The verdict of an emulated chip from its judging replay (``calibrate.replay.JudgedReplay``)."""
    crit = _criteria(_judge(judged.figures.to_dict(), judged.se, spec, shared, targets), "true")
    return Verdict(met=all(c["met"] for c in crit), complete=True, criteria=crit,
                   how={"source": "true", "replay_s": judged.replay_s, "spec": spec.as_dict(),
                        "replay_wall_s": judged.wall_s})


def final_windows(h: Any) -> list[int]:
    """The windows at a run's final codes: its verification windows, else its last loop iteration's."""
    from .controllers.base import WindowKind

    idx = [i for i, k in enumerate(h.kind) if k == WindowKind.VERIFY.value]
    if not idx:
        last = max((h.iteration[i] for i, k in enumerate(h.kind) if k == WindowKind.LOOP.value), default=None)
        idx = [i for i, k in enumerate(h.kind) if k == WindowKind.LOOP.value and h.iteration[i] == last]
    return idx


def measured_figures(result: Any) -> tuple[dict, dict, list[int]]:
    """A ``CalibrationResult``'s measured figures at its final codes (``final_windows``), their standard errors,
    and the windows they come from."""
    idx = final_windows(result.history)
    n = result.identity.n_neurons
    live = ~result.status.dead if result.status is not None else np.ones(n, dtype=bool)
    fig, se = measured_figures_with_se(result.history, idx, live, result.targets, result.knobs["gain_e"],
                                       result.balance_reference)
    return fig, se, idx


def measured_verdict(result: Any, spec: Any) -> Verdict:
    """The verdict from measurements only (a board): the run's final verification windows, else its last loop
    windows, with each figure's counting-noise uncertainty (module docstring)."""
    h = result.history
    fig, se, idx = measured_figures(result)
    knob = result.knobs["gain_e"]
    crit = _criteria(_judge(fig, se, spec, knob.sharing != "neuron", result.targets), "measured")
    return Verdict(met=bool(idx) and all(c["met"] for c in crit), complete=True, criteria=crit,
                   how={"source": "measured", "windows": len(idx),
                        "window_s": float(sum(h.window_ms[i] for i in idx)) / 1e3, "spec": spec.as_dict()})


def measured_figures_with_se(h: Any, idx: list[int], live: np.ndarray, targets: Any, knob: Any,
                             ref: Any) -> tuple[dict, dict]:
    """The judged figures of windows ``idx`` of history ``h`` (all at the same codes) and their standard errors,
    under the names ``calibrate.criteria.judge`` reads."""
    from .figures import counting_noise_fano

    if not idx or not live.any():
        return {}, {}
    counts = np.stack([h.spike_counts[i] for i in idx]).astype(float)  # [K, N]
    dt = np.array([h.window_ms[i] for i in idx]) / 1e3
    K, T = len(idx), float(dt.sum())
    tgt = targets.per_neuron(counts.shape[1])
    se: dict = {}
    rates = counts.sum(axis=0) / T
    r = (rates / tgt * float(np.mean(tgt[live])))[live]
    mean = float(r.mean())
    cv = float(r.std() / mean) if mean > 0 else float("inf")
    F = counting_noise_fano(counts[:, live]) if K >= 2 else float("nan")
    F = F if math.isfinite(F) else 1.0  # one window, or no spike: Poisson assumed
    c2 = float(np.mean(F / np.maximum(r, 1e-9) / T))
    cvd = math.sqrt(max(cv ** 2 - c2, 0.0))
    fig: dict = dict(rate_mean_hz=mean, rate_cv=cv, counting_cv=math.sqrt(c2), rate_cv_deconvolved=cvd, fano=F)
    nl = int(live.sum())
    if nl > 1 and K >= 2:  # the deconvolved CV's error as calibrate.replay gives it (docs/yield.md)
        var = (4 * cvd ** 2 * c2 + 2 * c2 ** 2) / nl + c2 ** 2 * math.pi / (max(K - 1, 1) * nl)
        se["rate_cv_deconvolved"] = math.sqrt(var) / (2 * max(cvd, var ** 0.25))
    if K >= 2:  # the mean rate's error: the spread of the K windows' population rates
        se["rate_err"] = _sem(((counts[:, live] / dt[:, None]) / tgt[None, live]).mean(axis=1))
    if targets.rate_inh_hz is not None:
        inh = np.asarray(targets.inh_mask, dtype=bool)
        for pop, name, m in (("exc", "rate_err_exc", live & ~inh), ("inh", "rate_err_inh", live & inh)):
            fig[f"rate_mean_{pop}_hz"] = float(rates[m].mean()) if m.any() else float("nan")
            if m.any() and K >= 2:
                se[name] = _sem((counts[:, m] / dt[:, None] / tgt[None, m]).mean(axis=1))
    if ref is not None:
        _balance(h, idx, live, knob, ref, fig, se)
    if knob.sharing != "neuron":
        _group_rates(counts, dt, live, knob, float(targets.rate_hz), fig, se)
    return fig, se


def _sem(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


def _balance(h: Any, idx: list[int], live: np.ndarray, knob: Any, ref: Any, fig: dict, se: dict) -> None:
    """Measured balance index, offset-free readings over the controller's excitatory sensitivity: per neuron (its
    p95 and median, their error by a parametric bootstrap, as the replay's) or, for shared knobs, per group (the
    worst group's, with the error of that group's mean reading)."""
    y = np.stack([h.proxy_pa[i].astype(float) for i in idx]) - ref.offset_pa[None, :]  # [K, N], NaN: not read
    g = knob.group_of
    exc_g = knob.nominal_gain(h.codes_e[idx[0]].astype(np.int64)) * ref.exc_pa_per_gain  # per group
    read = np.isfinite(y) & live[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        if knob.sharing != "neuron":
            G = knob.n_groups
            cnt = np.bincount(np.broadcast_to(g, y.shape)[read], minlength=G).astype(float)
            s1 = np.bincount(np.broadcast_to(g, y.shape)[read], weights=y[read], minlength=G)
            s2 = np.bincount(np.broadcast_to(g, y.shape)[read], weights=y[read] ** 2, minlength=G)
            m = np.where(cnt > 0, s1 / np.maximum(cnt, 1), np.nan)
            sd = np.sqrt(np.maximum(s2 / np.maximum(cnt, 1) - m ** 2, 0) * cnt / np.maximum(cnt - 1, 1))
            gbi = np.abs(m) / exc_g
            if np.isfinite(gbi).any():
                j = int(np.nanargmax(gbi))
                fig["group_balance_max"] = float(gbi[j])
                if cnt[j] >= 2:
                    se["group_balance_max"] = float(sd[j] / math.sqrt(cnt[j]) / exc_g[j])
            return
        n_read = read.sum(axis=0)
        yz = np.where(read, y, 0.0)
        mean = np.where(n_read > 0, yz.sum(axis=0) / np.maximum(n_read, 1), np.nan)
        var = np.where(read, (y - mean[None, :]) ** 2, 0.0).sum(axis=0) / np.maximum(n_read - 1, 1)
        bi = np.abs(mean) / exc_g[g]
        bi_se = np.where(n_read >= 2, np.sqrt(var / np.maximum(n_read, 1)) / exc_g[g], np.nan)
    ok = live & np.isfinite(bi)
    if not ok.any():
        return
    fig["balance_p95"] = float(np.quantile(bi[ok], 0.95))
    fig["balance_median"] = float(np.median(bi[ok]))
    if np.all(np.isfinite(bi_se[ok])):
        rng = np.random.default_rng(0)  # fixed: the same record gives the same verdict
        sims = np.abs(bi[ok][None, :] + bi_se[ok][None, :] * rng.standard_normal((400, int(ok.sum()))))
        se["balance_p95"] = float(np.quantile(sims, 0.95, axis=1).std(ddof=1))
        se["balance_median"] = float(np.quantile(sims, 0.5, axis=1).std(ddof=1))


def _group_rates(counts: np.ndarray, dt: np.ndarray, live: np.ndarray, knob: Any, target: float, fig: dict,
                 se: dict) -> None:
    """Shared knobs: the worst group's |mean rate / target - 1|, with the error at that group."""
    g, G = knob.group_of, knob.n_groups
    K = counts.shape[0]
    n_g = np.bincount(g, weights=live.astype(float), minlength=G)
    per_k = np.stack([np.bincount(g, weights=counts[k] * live, minlength=G) for k in range(K)])
    rel_k = per_k / np.maximum(n_g, 1)[None, :] / dt[:, None] / target  # [K, G]
    rel = per_k.sum(axis=0) / np.maximum(n_g, 1) / dt.sum() / target
    err = np.where(n_g > 0, np.abs(rel - 1), -1.0)
    j = int(np.argmax(err))
    fig["group_rate_err_max"] = float(err[j])
    if K >= 2:
        se["group_rate_err_max"] = _sem(rel_k[:, j])
