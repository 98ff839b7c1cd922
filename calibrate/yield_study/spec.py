"""The spec a yield study judges every chip by: ``rate_cv=0.05,balance_p95=0.05,rate_err=0.03``.

Defaults (``DEFAULT_SPEC``), the goals eical's controllers are held to (README, docs/controller.md):

- ``rate_cv`` 0.05: true rate CV across live neurons, the replay's counting noise removed;
- ``balance_p95`` 0.05: 95th percentile of the per-neuron balance index ``|<I_net>| / <I_exc>``;
- ``rate_err`` 0.03: ``|mean rate / target - 1|``.

On chips whose knobs are shared by a core or the chip (dynapse2) the criteria are per group, as
``calibrate.criteria.judge`` defines them for the pytest plugin too: every core within ``rate_err`` of target and
every core's balance index under ``balance_p95``; ``rate_cv`` does not apply there. A spec string may name only some
criteria; the others keep their defaults.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

from calibrate.criteria import CRITERIA, Criterion, judge

__all__ = ["Spec", "SpecError", "parse_spec", "DEFAULT_SPEC", "judge_chip"]


class SpecError(ValueError):
    """A spec string is wrong; one line."""


@dataclass(frozen=True)
class Spec:
    rate_cv: float = 0.05
    balance_p95: float = 0.05
    rate_err: float = 0.03

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.as_dict().items())


DEFAULT_SPEC = Spec()


def parse_spec(text: Optional[str]) -> Spec:
    """``NAME=LIMIT,...`` with NAME in rate_cv, balance_p95, rate_err and LIMIT > 0; SpecError when wrong."""
    if text is None or not text.strip():
        return DEFAULT_SPEC
    vals = DEFAULT_SPEC.as_dict()
    seen = set()
    for item in text.split(","):
        name, eq, v = item.partition("=")
        name = name.strip()
        if not eq:
            raise SpecError(f"--spec {text!r}: expected NAME=LIMIT,... (names: {', '.join(CRITERIA)})")
        if name not in vals:
            raise SpecError(f"--spec {name}: unknown criterion; expected one of {', '.join(CRITERIA)}")
        if name in seen:
            raise SpecError(f"--spec {name}: given twice")
        seen.add(name)
        try:
            x = float(v)
        except ValueError:
            raise SpecError(f"--spec {name}: expected a number > 0, got {v.strip()!r}") from None
        if not (math.isfinite(x) and 0 < x < 10):
            raise SpecError(f"--spec {name}: expected a number in (0, 10), got {v.strip()!r}")
        vals[name] = x
    return Spec(**vals)


def judge_chip(figures, spec: Spec, *, shared: bool, target_rate_hz: float, target_inh_hz: Optional[float] = None,
               se: Optional[Mapping[str, float]] = None) -> list[Criterion]:
    """Judge a chip's true figures by ``spec`` (``calibrate.criteria.judge``, the plugin's judge)."""
    return judge(figures, shared=shared, target_rate_hz=target_rate_hz, target_inh_hz=target_inh_hz,
                 rate_cv=spec.rate_cv, balance=spec.balance_p95, rate_err=spec.rate_err, se=se)
