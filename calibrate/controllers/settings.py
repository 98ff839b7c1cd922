"""Settings of the dual loop, with the defaults ``eical calibrate`` uses (docs/controller.md, "settings")."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

__all__ = ["DualLoopSettings"]


@dataclass
class DualLoopSettings:
    """Settings of the dual loop, with the defaults used by ``eical calibrate``; see docs/controller.md.

    rate_tol: relative standard error of each group's rate estimate at which loop 2 stops (0.035: the final rate CV
        across neurons is then about that, under the 0.05 goal with room for quantisation and model error).
    rate_tol_shared: the same for knobs shared by a core or the chip (their group mean is over many neurons).
    balance_tol_shared: balance_tol for shared knobs (a group's balance is judged on its own, not as a quantile).
    rate_tol_population: the same for the population rates of a recurrent chip (population mode).
    balance_tol: tolerance on the estimated balance index of a group (|y| / (gain_e a)).
    first_window_ms, max_growth: loop window schedule: first window, and at most this factor longer each time.
    budget_ms: model time the calibration may spend measuring, reference windows included.
    beta0, gamma0: initial slopes d ln rate / d ln s and d ln rate / d ln r, until the data identify them.
    beta_sd: prior spread of the groups' own slopes around the population's (sets the shrinkage of each group's
        slope estimate; 0.3 is an assumption, of the order of the slope spread the rate model's fits show).
    null_ms, settle_ms, probe_ms: reference windows (ADC offsets, transients after large code changes, the
        excitation-only probe).
    null_reads: null windows read per channel: the offset is their mean, so its error is read noise / sqrt(reads)
        (docs/controller.md, "reference windows": 10 null windows take a 10 pA offset to ~2 pA).
    sub_window_ms: on one-channel-per-core chips, the length of one proxy sub-window of a loop window.
    fano_splits: a loop window is measured as this many sub-windows (all-channel chips), so the spike-count Fano
        factor, which sets the counting noise, is estimated from the data rather than assumed.
    prior_rate_se: warm start from a calibrated table (tracking): the relative standard error of the start codes'
        rates. The start then counts, in each group's own rate estimate, as a pseudo-window of ``F / se**2`` spikes
        exactly at target, so a few short noisy windows do not undo a per-neuron calibration they cannot match.
        None: no prior (a calibration from scratch).
    population_mode: recurrent chips: loop 2 sets one scale per population (E, I) from the measured closed-loop
        Jacobian d ln rate_P / d ln s_Q (calibrate.controllers.population); None switches it on when the targets give
        the inhibitory neurons their own rate.
    jacobian_prior_sd: prior spread of the Jacobian's entries around (beta0 on the diagonal, 0 off it).
    probe_step: population mode: the first loop windows step S_E, then S_I, by this much (in ln s), so the closed-
        loop Jacobian is measured, not assumed, before the loop relies on it.
    near: half-width (in ln rate) of the band around target within which a window informs the rate estimate fully
        (a band that narrows with the estimate's standard error was tried and was worse on devboard: it drops
        windows the estimate still needs). It selects the windows the slopes are fitted on, by the rate the model
        predicts there (not the observed one).
    dither_rate: calibration on per-neuron knobs: each loop window of at least ``dither_min_ms`` is measured in
        four blocks with the scale and the ratio moved around the window's state, each by what moves the rate by
        ``dither_rate`` in ln rate (``dither_rate / beta`` in ln s, ``dither_rate / |gamma|`` in ln r, from the
        current slopes, within ``dither_max``), in the orthogonal patterns (+, -, -, +) and (+, +, -, -) with a
        random sign per group and window. The blocks' count differences give the slopes d ln rate / d ln s and
        d ln r from moves made on purpose: the loop's own moves answer the noise of earlier windows, and slopes
        fitted on them came out 1.3x the true ones on devboard (docs/controller.md, "Slopes from deliberate
        excursions"). The window's mean is at its state to second order, and the rate model accounts for that
        term. 0.15: devboard seeds 1-1000 passed 910 (0.1: 179 + 361 of seeds 1-600 against 181 + 363; 0.2: 360 of
        seeds 201-600). 0 switches it off.
    near_latest_dithered: ``near_latest`` once the slopes come from dithered windows: with unbiased slopes and the
        response's curvature fitted, windows farther from the latest state can be carried to it (devboard seeds
        1-600: 544 passed, against 528 with the closed-loop slopes and the narrow band; 0.6 passed 544 as well).
    near_latest: half-width (in predicted ln rate) of the band around a group's latest state within which a window
        informs its rate intercept (the Poisson estimate at that state). Narrower leaves the translation of other
        windows' counts to the latest state less room for the response's curvature: on 100 devboard chips 0.5 left
        the mean rate 0.6 % high, 0.2 0.3 %, with the best rate CV of 0.5, 0.2 and 0.1 (docs/controller.md).
    """

    rate_tol: float = 0.035
    rate_tol_shared: float = 0.01
    balance_tol_shared: float = 0.02
    rate_tol_population: float = 0.01
    balance_tol: float = 0.03
    fano_splits: int = 4
    first_window_ms: float = 300.0
    max_growth: float = 2.0
    budget_ms: float = 90_000.0
    beta0: float = 1.5
    beta_sd: float = 0.3
    gamma0: float = 0.0
    null_ms: float = 20.0
    null_reads: int = 10
    settle_ms: float = 50.0
    probe_ms: float = 200.0
    sub_window_ms: float = 10.0
    near: float = 0.5
    near_latest: float = 0.2
    max_ratio_step: float = 1.0
    dither_rate: float = 0.15
    dither_max: float = 0.1
    dither_min_ms: float = 2000.0
    near_latest_dithered: float = 1.0
    forget_halflife_ms: Optional[float] = None  # tracking: old windows lose weight with this half-life
    prior_rate_se: Optional[float] = None  # warm start from a calibrated table: how well its rates were known
    population_mode: Optional[bool] = None  # None: on when the targets name E and I populations (recurrent chips)
    jacobian_prior_sd: float = 1.0
    probe_step: float = 0.15

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if v is None:
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"dual-loop setting {k}: expected a non-negative number, got {v!r}")
        if self.rate_tol <= 0 or self.first_window_ms <= 0 or self.max_growth < 1:
            raise ValueError("dual-loop settings: rate_tol and first_window_ms must be > 0, max_growth >= 1")
