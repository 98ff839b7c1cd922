"""What "calibrated" means: the criteria a chip's true figures are judged by, in one place.

The pytest plugin (``calibrate.testing.assert_calibrated``) and yield studies (``calibrate.yield_study``) both judge
a replay's ``TrueFigures`` with ``judge``, so a chip that passes one passes the other.

Criteria, by the chip's knobs:

- per-neuron knobs: ``rate_cv`` (the deconvolved rate CV across live neurons), ``balance_p95`` (a quantile of the
  per-neuron balance index, 0.95 by default) and ``rate_err`` (``|mean rate / target - 1|``; on a recurrent chip
  with its own inhibitory target, the worse of the excitatory and the inhibitory population);
- shared knobs (per core or per chip, e.g. dynapse2): a knob group is calibrated as a whole, so ``rate_err`` is
  the worst group's ``|group mean rate / target - 1|`` ("every core within 3 %") and ``balance_p95`` the worst
  group's balance index ("core balance"); the spread of single neurons is not something such a chip can trim,
  and ``rate_cv`` does not apply.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["Criterion", "judge", "CRITERIA"]

CRITERIA = ("rate_cv", "balance_p95", "rate_err")


@dataclass(frozen=True)
class Criterion:
    """One criterion judged on one chip.

    name: ``rate_cv`` | ``balance_p95`` | ``rate_err``.
    figure: which true figure was judged (e.g. ``rate_cv_deconvolved``, ``group_rate_err_max``).
    value, limit: the figure and its bound (met when ``value <= limit``; a NaN value is not met).
    applies: False where the criterion has no meaning for this chip (``rate_cv`` on shared knobs); then ``met``.
    se: the figure's own uncertainty from the replay that measured it (NaN when not known).
    message: one line for a failure report.
    """

    name: str
    figure: str
    value: float
    limit: float
    applies: bool = True
    se: float = float("nan")
    message: str = ""

    @property
    def met(self) -> bool:
        return (not self.applies) or (math.isfinite(self.value) and self.value <= self.limit)

    @property
    def verdict_met(self) -> bool:
        """Met, and measured well enough to tell: a figure whose own uncertainty is unknown or over the limit itself
        is not met (the verdict's rule, docs/verdicts.md; a yield study counts a chip passed by the same rule)."""
        if not self.applies:
            return True
        return self.met and math.isfinite(self.se) and self.se <= self.limit


def _get(fig, key: str) -> Optional[float]:
    v = fig.get(key) if isinstance(fig, Mapping) else getattr(fig, key, None)
    return None if v is None else float(v)


def _balance_quantile(fig, q: float) -> float:
    # TrueFigures carries p95 and the median; other quantiles need the replay again, so only those two are offered
    if abs(q - 0.95) < 1e-9:
        return _get(fig, "balance_p95")
    if abs(q - 0.5) < 1e-9:
        return _get(fig, "balance_median")
    raise ValueError("balance_quantile must be 0.95 or 0.5")


def judge(fig, *, shared: bool, target_rate_hz: float, target_inh_hz: Optional[float] = None,
          rate_cv: float = 0.05, balance: float = 0.05, rate_err: float = 0.03, balance_quantile: float = 0.95,
          group_rate_err: Optional[float] = None, group_balance: Optional[float] = None,
          se: Optional[Mapping[str, float]] = None) -> list[Criterion]:
    """Judge true figures (a ``TrueFigures`` or its ``to_dict()``) against the limits; one ``Criterion`` per name
    in ``CRITERIA``, in that order. ``shared``: the chip's knobs are shared by groups of neurons. ``se`` maps a
    figure name to its uncertainty (``calibrate.yield_study.uncertainty``)."""
    se = dict(se or {})
    nan = float("nan")

    def crit(name, figure, value, limit, message, applies=True):
        v = nan if value is None else float(value)
        return Criterion(name=name, figure=figure, value=v, limit=float(limit), applies=applies,
                         se=float(se.get(figure, nan)), message=message)

    if shared:
        gre = rate_err if group_rate_err is None else group_rate_err
        gb = balance if group_balance is None else group_balance
        g_err, g_bal = _get(fig, "group_rate_err_max"), _get(fig, "group_balance_max")
        return [
            crit("rate_cv", "rate_cv_deconvolved", _get(fig, "rate_cv_deconvolved"), rate_cv,
                 "rate CV not judged: the knobs are shared by groups of neurons", applies=False),
            crit("balance_p95", "group_balance_max", g_bal, gb,
                 f"group balance index {_fmt(g_bal)} > {gb}"),
            crit("rate_err", "group_rate_err_max", g_err, gre, f"group rate error {_fmt(g_err)} > {gre}"),
        ]
    cv = _get(fig, "rate_cv_deconvolved")
    bq = _balance_quantile(fig, balance_quantile)
    bname = "balance_p95" if abs(balance_quantile - 0.95) < 1e-9 else "balance_median"
    out = [crit("rate_cv", "rate_cv_deconvolved", cv, rate_cv, f"rate CV {_fmt(cv)} > {rate_cv}"),
           crit("balance_p95", bname, bq, balance, f"balance index q{balance_quantile:g} {_fmt(bq)} > {balance}")]
    exc, inh = _get(fig, "rate_mean_exc_hz"), _get(fig, "rate_mean_inh_hz")
    if exc is not None and inh is not None and target_inh_hz is not None:
        errs = {"excitatory": (exc, target_rate_hz), "inhibitory": (inh, target_inh_hz)}
        worst = max(errs, key=lambda p: abs(errs[p][0] / errs[p][1] - 1))
        got, want = errs[worst]
        e = abs(got / want - 1)
        fig_name = "rate_err_exc" if worst == "excitatory" else "rate_err_inh"
        out.append(crit("rate_err", fig_name, e, rate_err,
                        f"{worst} population rate {got:.3f} Hz is {e:.1%} off {want} Hz"))
    else:
        mean = _get(fig, "rate_mean_hz")
        e = nan if mean is None else abs(mean / target_rate_hz - 1)
        out.append(crit("rate_err", "rate_err", e, rate_err, f"mean rate {_fmt(mean)} Hz is {e:.1%} off target"))
    return out


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"
