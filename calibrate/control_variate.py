"""Long-run rates of an emulated chip from a replay's sub-windows, with the input drive as a control variate.

A feed-forward emulated chip has no noise of its own: every random number it sees is an input spike. A replay
records, per neuron and sub-window, the window means of the two parts of the balance proxy, ``iexc`` and ``iinh``.
They are linear in the input spikes, so their long-run means are known exactly (``calibrate.replay.expected_parts``).
A sub-window whose inputs happened to deliver more excitation than their expectation also shows more spikes. So
each neuron's sub-window rates ``y_k`` are regressed on its relative drive deviations

    u_k = iexc_k / E[iexc] - 1,    v_k = iinh_k / E[iinh] - 1,    y_k = a + b u_k + c v_k + e_k,

and the fit is read at ``u = v = 0``: ``a`` is the rate the neuron would show under exactly its expected drive, i.e.
its long-run rate. This is the regression estimator of survey sampling, or a control variate in Monte Carlo terms
(docs/yield.md, "Variance reduction"):

- It is unbiased up to ``O(1/S)`` (S sub-windows) whatever the neuron's response: the covariates' expectations are
  exact, so ``a`` differs from the plain mean ``ybar`` only by ``b ubar + c vbar``, a term of mean zero for fixed
  slopes; estimating the slopes adds a bias of order ``cov(b, ubar)``, which falls as ``1/S``.
- Its variance is the residuals' ``var(e) [(X'X)^-1]_00``, about ``var(e) / S``: what the regression did not explain.
  The neurons of a chip share input pools, so the residuals of different neurons are correlated; the standard error
  of a mean over neurons comes from the sub-window series of the mean residual, which carries that correlation.
- Shared inputs are what make a chip's mean rate converge slowly (the population Fano factor is 4 on devboard and
  35 on bss2), and they are exactly what the covariates see: the mean rate's replay variance falls 8x on devboard
  and 40x on bss2 (docs/yield.md).

:func:`estimate_rates` with no covariates is the plain estimator (``a = ybar``), with the same residual-based
standard errors; recurrent chips use it, since there a neuron's excitatory conductance carries recurrent input whose
expectation is not known in advance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["RateEstimate", "estimate_rates", "MIN_SUB_WINDOWS"]

MIN_SUB_WINDOWS = 20  # fewer sub-windows than this: the plain estimator (three coefficients per neuron need data)


@dataclass
class RateEstimate:
    """Per-neuron long-run rates from ``S`` sub-windows, and what their standard errors are made of.

    rates: [N] Hz (the fit's intercepts; the plain means without covariates). resid: [S, N] the sub-window residuals
    (Hz). h: [N] ``S [(X'X)^-1]_00``, the intercept's variance per unit residual variance, times S (1 for the plain
    mean). params: coefficients fitted per neuron (1 plain, 3 with the covariates). plain: [S, N] the sub-window
    rates themselves (for the share of variance the covariates removed). method: ``control-variate`` or ``plain``.
    """

    rates: np.ndarray
    resid: np.ndarray
    h: np.ndarray
    params: int
    plain: np.ndarray
    method: str

    @property
    def sub_windows(self) -> int:
        return int(self.resid.shape[0])

    def _dof(self) -> int:
        return max(self.sub_windows - self.params, 1)

    def noise_var(self) -> np.ndarray:
        """[N] variance of each neuron's rate estimate (Hz^2): residual variance x h / S."""
        return (self.resid ** 2).sum(axis=0) / self._dof() * self.h / self.sub_windows

    def mean_se(self, mask: np.ndarray, scale: np.ndarray) -> float:
        """Standard error of ``mean over mask of rates * scale`` (``scale``: [N], e.g. 1 / target): from the
        sub-window series of the mean scaled residual, so the neurons' correlation (shared inputs) is in it."""
        if not mask.any():
            return float("nan")
        series = (self.resid[:, mask] * scale[mask]).mean(axis=1)
        h = float(np.mean(self.h[mask]))
        return math.sqrt(float((series ** 2).sum()) / self._dof() * h / self.sub_windows)

    def spread_noise(self, mask: np.ndarray, scale: np.ndarray) -> float:
        """How much the estimates' own noise adds to their variance across the neurons of ``mask`` (``np.var``,
        after ``* scale``): the mean of each one's noise variance less that of their common part, which shifts
        every neuron alike and spreads none (``E[var_i(x_i + e_i)] = var_i(x_i) + mean var(e_i) - var(mean e)``)."""
        if not mask.any():
            return float("nan")
        own = float(np.mean(self.noise_var()[mask] * scale[mask] ** 2))
        common = self.mean_se(mask, scale) ** 2
        return max(own - common, 0.0)

    def variance_left(self, mask: np.ndarray, scale: np.ndarray) -> float:
        """Share of the replay variance of the masked mean rate that the estimator leaves (1 for the plain mean)."""
        if not mask.any() or self.method == "plain":
            return 1.0
        plain = (self.plain[:, mask] * scale[mask]).mean(axis=1)
        v = float(plain.var(ddof=1)) / self.sub_windows
        return self.mean_se(mask, scale) ** 2 / v if v > 0 else float("nan")


def estimate_rates(rates_hz: np.ndarray, u: Optional[np.ndarray] = None,
                   v: Optional[np.ndarray] = None) -> RateEstimate:
    """Long-run rates of every neuron from ``rates_hz`` [S, N] (sub-window rates), with the relative drive
    deviations ``u``, ``v`` [S, N] as control variates (module docstring), or the plain means without them (or with
    fewer than ``MIN_SUB_WINDOWS`` sub-windows)."""
    y = np.asarray(rates_hz, dtype=float)
    S = y.shape[0]
    if u is None or v is None or S < MIN_SUB_WINDOWS:
        mean = y.mean(axis=0)
        return RateEstimate(rates=mean, resid=y - mean, h=np.ones(y.shape[1]), params=1, plain=y, method="plain")
    X = np.stack([np.ones_like(y), np.nan_to_num(u), np.nan_to_num(v)], axis=-1)  # [S, N, 3]
    xtx = np.einsum("kia,kib->iab", X, X)
    # a neuron without one kind of input (every synapse stuck) has a zero column: a ridge far below any real
    # covariate's spread keeps its system solvable and leaves every other neuron's fit as it is
    xtx[:, 1:, 1:] += np.eye(2) * 1e-12 * S
    xty = np.einsum("kia,ki->ia", X, y)
    coef = np.linalg.solve(xtx, xty[..., None])[..., 0]  # [N, 3]
    resid = y - np.einsum("kia,ia->ki", X, coef)
    h = np.linalg.inv(xtx)[:, 0, 0] * S
    return RateEstimate(rates=coef[:, 0], resid=resid, h=h, params=3, plain=y, method="control-variate")
