"""The science of balance as diagnostics: pure functions of a chip recording (issue 7).

Every function here is a pure function of plain arrays or of a :class:`hw_models.recording.Recording`; nothing
reads a chip, a controller or a file. :func:`diagnose` runs them all on one recording and returns a
:class:`Diagnostics` with the figures, the ``flags`` raised by a documented rule set (:class:`FlagThresholds`)
and ``healthy``. ``docs/diagnostics.md`` gives the same formulas with the reasons for the thresholds.

Contents (formula and source in each docstring):

- per-neuron balance: :func:`balance_index`, :func:`signed_balance`, :func:`conductance_ratio` (MODEL.md 1);
- irregularity: :func:`isi_cv`, :func:`isi_cv2`, :func:`fano_factor`, :func:`classify_regime`;
- multiscale E/I co-fluctuation after Dehghani et al. 2016: :func:`log_scales`, :func:`ei_cofluctuation`;
- branching ratio with the multistep-regression estimator of Wilting and Priesemann 2018:
  :func:`mr_coefficients`, :func:`branching_ratio_mr`;
- population spectrum and its gamma (PING) peak: :func:`population_spectrum`;
- synchrony of the sampled membrane potentials: :func:`synchrony_chi` (Golomb 2007);
- all of it: :func:`diagnose`.

Time is in ms, rates in Hz, currents in pA, conductances in nS (MODEL.md). Everything random takes a seed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import fft as sfft
from scipy import signal as ssignal

from hw_models.recording import Recording

__all__ = [
    "Theory",
    "FlagThresholds",
    "CoFluctuation",
    "BranchingFit",
    "Spectrum",
    "Diagnostics",
    "FLUCTUATION_DRIVEN",
    "MEAN_DRIVEN",
    "UNCLASSIFIED",
    "sort_by_neuron",
    "isi_cv",
    "isi_cv2",
    "fano_factor",
    "mean_count_correlation",
    "classify_regime",
    "balance_index",
    "signed_balance",
    "conductance_ratio",
    "log_scales",
    "ei_cofluctuation",
    "mr_coefficients",
    "branching_ratio_mr",
    "population_spectrum",
    "synchrony_chi",
    "population_counts",
    "diagnose",
]

FLUCTUATION_DRIVEN = 1
MEAN_DRIVEN = 0
UNCLASSIFIED = -1


# ====================================================================================================== config
@dataclass(frozen=True)
class Theory:
    """What MODEL.md predicts for a balanced neuron.

    Attributes
    ----------
    model : str
        ``"cond_lif"`` or ``"dpi"``.
    vbal_mv : float or None
        Balance potential of the proxy ``Ibal = ge*(EE - Vbal) + gi*(EI - Vbal)`` (cond_lif only).
    ee_mv, ei_mv : float
        Excitatory and inhibitory reversal potentials (cond_lif only).
    """

    model: str = "cond_lif"
    vbal_mv: Optional[float] = None
    ee_mv: float = 0.0
    ei_mv: float = -80.0

    @property
    def conductance_ratio(self) -> Optional[float]:
        """``<ge>/<gi> = (Vbal - EI)/(EE - Vbal)`` at zero mean proxy (MODEL.md 1); None without Vbal or for dpi."""
        if self.model != "cond_lif" or self.vbal_mv is None:
            return None
        return (self.vbal_mv - self.ei_mv) / (self.ee_mv - self.vbal_mv)

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> Optional["Theory"]:
        """From a recording's ``meta`` (keys ``model``, ``vbal_mv``/``Vbal``, ``ee_mv``/``EE``, ``ei_mv``/``EI``)."""

        def get(*keys: str) -> Any:
            for k in keys:
                if k in meta and meta[k] is not None:
                    return meta[k]
            return None

        model = get("model")
        vbal = get("vbal_mv", "Vbal", "vbal")
        if model is None and vbal is None:
            return None
        ee, ei = get("ee_mv", "EE"), get("ei_mv", "EI")
        return cls(
            model=str(model or "cond_lif"),
            vbal_mv=None if vbal is None else float(vbal),
            ee_mv=0.0 if ee is None else float(ee),
            ei_mv=-80.0 if ei is None else float(ei),
        )


@dataclass(frozen=True)
class FlagThresholds:
    """The rule set of :func:`diagnose`. Each flag names what it catches; docs/diagnostics.md says why.

    Attributes
    ----------
    balance_index_max : float
        ``imbalanced`` when the median per-neuron balance index ``|<Ibal>|/<Iexc>`` exceeds it. A calibrated
        chip sits near 0; inhibition cut to a third of balance gives 2/3; 0.2 is a fifth of the excitatory drive
        left uncancelled (our choice).
    balance_fraction_max : float
        ``imbalanced`` also when more than this fraction of active neurons exceed ``balance_index_neuron``.
    balance_index_neuron : float
        Per-neuron balance index counted by ``balance_fraction_max``.
    rho_min : float
        ``ei_decorrelated`` when the E and I population rates fluctuate beyond counting noise but not together:
        over the scales at or above ``rho_scale_min_ms`` whose population Fano factors (E and I) are both at
        least ``fano_shared_min``, the median noise-corrected correlation ``rho_signal`` is below ``rho_min``
        (at least ``rho_min_scales`` such scales needed). Dehghani et al. 2016: E and I ensembles co-fluctuate
        at zero lag in all normal states; the E-I temporal correlation is disrupted in seizures.
    rho_scale_min_ms : float
        Finest scale counted by ``rho_min``.
    fano_shared_min : float
        Population Fano factor from which the E and I rates are judged to carry shared fluctuations (2: the
        shared variance at least equals the counting noise). Below it the state is asynchronous and the
        co-fluctuation is not judged (a note says so).
    rho_min_scales : int
        Scales needed for a verdict on ``rho_min``.
    current_imbalance_max : float
        ``ei_current_imbalance`` when the median over scales of the relative rms distance of the population
        excitatory and inhibitory input currents from the balance line, ``rms(E_s - I_s)/mean((E_s + I_s)/2)``
        with ``E = <iexc>`` and ``I = -<iinh>``, exceeds it.
    m_near_critical : float
        ``near_critical`` when the MR branching ratio ``m`` (at ``mr_bin_ms``) is at or above it.
    m_supercritical : float
        ``supercritical`` when the lower end of the confidence interval of ``m`` is at or above it.
    m_min_r1 : float
        The MR fit is trusted only when the lag-1 regression ``r_1`` is at least this (else m is noise).
    cv_threshold : float
        ISI CV at or above which a neuron counts as fluctuation-driven (:func:`classify_regime`).
    mean_driven_fraction_max : float
        ``mean_driven`` when more than this fraction of classified neurons are mean-driven.
    gamma_modulation_max : float
        ``gamma_oscillation`` when the population rate is modulated in the gamma band (30-80 Hz) by more than
        this fraction of its mean (``Spectrum.gamma_modulation``): PING-like synchrony.
    chi_max : float
        ``synchronous`` when the synchrony measure chi of the sampled membrane potentials exceeds it (about
        1/sqrt(M) for M asynchronous neurons: 0.125 for the 64 default trace neurons; 1 for full synchrony).
        0.5 means a quarter of the potential variance is common to all neurons; shared Poisson inputs alone
        (12.5 % of the sources shared, as in the bss2, devboard and dynapse2 profiles) gave 0.28 on a
        calibrated bss2 chip.
    rsc_max : float
        ``synchronous`` also when the mean pairwise spike-count correlation (:func:`mean_count_correlation`)
        in windows of ``rsc_window_ms`` exceeds it. Asynchronous balanced networks: ~0.01 (Renart et al.
        2010); 0.1 is ten times that.
    rsc_window_ms : float
        Window of that correlation (30 ms, our choice: a few synaptic and membrane time constants).
    min_rate_hz : float
        ``silent`` when the mean rate is below it (most other figures are then meaningless).
    advisory : tuple of str
        Flags that are reported but do not make a chip unhealthy. Default ``("gamma_oscillation",)``: a gamma
        rhythm is physiological (PING, seeds/002) and not by itself a failure of balance.
    """

    balance_index_max: float = 0.2
    balance_fraction_max: float = 0.5
    balance_index_neuron: float = 0.3
    rho_min: float = 0.5
    rho_scale_min_ms: float = 10.0
    fano_shared_min: float = 2.0
    rho_min_scales: int = 3
    current_imbalance_max: float = 0.35
    m_near_critical: float = 0.99
    m_supercritical: float = 1.0
    m_min_r1: float = 0.05
    cv_threshold: float = 0.5
    mean_driven_fraction_max: float = 0.5
    gamma_modulation_max: float = 0.3
    chi_max: float = 0.5
    rsc_max: float = 0.1
    rsc_window_ms: float = 30.0
    min_rate_hz: float = 0.1
    advisory: Tuple[str, ...] = ("gamma_oscillation",)


# ====================================================================================================== spikes
def sort_by_neuron(times_ms: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Spikes ordered by neuron, then by time within each neuron.

    Parameters
    ----------
    times_ms : array of float, shape [S]
    ids : array of int, shape [S]

    Returns
    -------
    times_ms, ids : ndarray
        Sorted copies (float64, int64). Already-sorted input is returned after an O(S) check.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    i = np.asarray(ids, dtype=np.int64)
    if t.size < 2:
        return t, i
    di = np.diff(i)
    if np.all(di >= 0) and np.all(np.diff(t)[di == 0] >= 0):
        return t, i
    if np.all(np.diff(t) >= 0):  # time-sorted (a recording): a stable sort by neuron keeps time order
        key = i.astype(np.uint16) if 0 <= i.min() and i.max() < 2**16 else i  # 16-bit keys: radix sort
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((t, i))
    return t[order], i[order]


def _isis(times_ms: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inter-spike intervals and their neuron, from neuron-sorted spikes."""
    same = ids[1:] == ids[:-1]
    return np.diff(times_ms)[same], ids[1:][same]


def isi_cv(
    times_ms: np.ndarray, ids: np.ndarray, n_neurons: int, *, min_isis: int = 10
) -> np.ndarray:
    """Coefficient of variation of the inter-spike intervals, per neuron.

    ``CV = std(ISI) / mean(ISI)`` with the unbiased (ddof = 1) standard deviation over the neuron's ISIs.
    A Poisson train has CV = 1 (exponential ISIs), a periodic one CV = 0; fluctuation-driven neurons in the
    balanced state fire with CV near 1, mean-driven (suprathreshold) neurons regularly (CV well below 1);
    seeds/002 (CV ~ sigma/sqrt(dV*mu)), Softky and Koch 1993, van Vreeswijk and Sompolinsky 1996.

    Parameters
    ----------
    times_ms, ids : array, shape [S]
        Spike times (ms) and neurons, in any order.
    n_neurons : int
    min_isis : int
        Neurons with fewer ISIs get NaN.

    Returns
    -------
    ndarray of float64, shape [N]
    """
    t, i = sort_by_neuron(times_ms, ids)
    isi, owner = _isis(t, i)
    cnt = np.bincount(owner, minlength=n_neurons).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(owner, isi, minlength=n_neurons) / cnt
        dev = isi - mean[owner]
        var = np.bincount(owner, dev * dev, minlength=n_neurons) / (cnt - 1.0)
        cv = np.sqrt(var) / mean
    cv[cnt < max(min_isis, 2)] = np.nan
    return cv


def isi_cv2(
    times_ms: np.ndarray, ids: np.ndarray, n_neurons: int, *, min_isis: int = 10
) -> np.ndarray:
    """Local irregularity CV2 of Holt, Softky, Koch and Douglas (J Neurophysiol 75:1806, 1996), per neuron.

    ``CV2 = mean_k 2 |I_{k+1} - I_k| / (I_{k+1} + I_k)`` over consecutive ISI pairs. It is 1 for Poisson and 0
    for periodic trains like the CV, but insensitive to slow rate changes (which inflate the CV).

    Returns
    -------
    ndarray of float64, shape [N]; NaN for neurons with fewer than ``min_isis`` ISIs.
    """
    t, i = sort_by_neuron(times_ms, ids)
    isi, owner = _isis(t, i)
    pair = owner[1:] == owner[:-1]
    a, b = isi[:-1][pair], isi[1:][pair]
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(a + b > 0, 2.0 * np.abs(b - a) / (a + b), 0.0)
        cnt = np.bincount(owner[1:][pair], minlength=n_neurons).astype(np.float64)
        out = np.bincount(owner[1:][pair], v, minlength=n_neurons) / cnt
    out[cnt + 1 < max(min_isis, 2)] = np.nan
    return out


def fano_factor(
    times_ms: np.ndarray,
    ids: np.ndarray,
    n_neurons: int,
    t_start_ms: float,
    t_stop_ms: float,
    *,
    windows_ms: Sequence[float] = (10.0, 30.0, 100.0, 300.0, 1000.0),
    min_windows: int = 10,
) -> np.ndarray:
    """Fano factor of the spike counts per neuron, at several counting windows.

    ``F(w) = Var(n_w) / E(n_w)``, ``n_w`` the neuron's spike count in consecutive non-overlapping windows of
    width ``w`` over ``[t_start, t_stop)`` (an incomplete last window is left out), unbiased variance.
    Poisson: F = 1 at every window; a periodic train: F -> 0 as w grows; slow rate fluctuations or bursts make
    F grow with w (Teich 1989; Churchland et al. 2010 for cortex). Cost O(S) per window: counts are
    run-lengths of ``neuron * n_bins + bin`` over the neuron-sorted spikes, never a dense N x n_bins matrix.

    Parameters
    ----------
    times_ms, ids : array, shape [S]
    n_neurons : int
    t_start_ms, t_stop_ms : float
        The span counted.
    windows_ms : sequence of float
    min_windows : int
        Windows with fewer complete bins than this give NaN for every neuron.

    Returns
    -------
    ndarray of float64, shape [len(windows_ms), N]; NaN where a neuron has no spike or too few windows.
    """
    t, i = sort_by_neuron(times_ms, ids)
    out = np.full((len(windows_ms), n_neurons), np.nan)
    for w_idx, w in enumerate(windows_ms):
        mom = _count_moments(t, i, n_neurons, t_start_ms, t_stop_ms, w, min_windows)
        if mom is None:
            continue
        mean, var, _ = mom
        with np.errstate(invalid="ignore", divide="ignore"):
            out[w_idx] = np.where(mean > 0, var / mean, np.nan)
    return out


def _count_moments(
    t: np.ndarray, i: np.ndarray, n_neurons: int, t_start_ms: float, t_stop_ms: float, w: float, min_windows: int
) -> Optional[Tuple[np.ndarray, np.ndarray, float]]:
    """Per-neuron mean and unbiased variance of counts in windows ``w``, and the variance of their sum.

    ``t, i`` must be neuron-sorted. Returns None with fewer than ``max(2, min_windows)`` complete windows.
    """
    nb = int(math.floor((float(t_stop_ms) - float(t_start_ms)) / w + 1e-9))
    if nb < max(2, min_windows):
        return None
    b = np.floor((t - t_start_ms) / w).astype(np.int64)
    ok = (b >= 0) & (b < nb)
    key = i[ok] * nb + b[ok]  # non-decreasing: neuron-sorted, time-sorted within neuron
    if key.size == 0:
        z = np.zeros(n_neurons)
        return z, z.copy(), 0.0
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    c = np.diff(np.append(starts, key.size)).astype(np.float64)
    who = key[starts] // nb
    s1 = np.bincount(who, c, minlength=n_neurons)
    s2 = np.bincount(who, c * c, minlength=n_neurons)
    mean = s1 / nb
    var = (s2 - nb * mean * mean) / (nb - 1)
    pop = np.bincount(b[ok], minlength=nb).astype(np.float64)
    return mean, var, float(pop.var(ddof=1))


def mean_count_correlation(
    times_ms: np.ndarray,
    ids: np.ndarray,
    n_neurons: int,
    t_start_ms: float,
    t_stop_ms: float,
    *,
    windows_ms: Sequence[float] = (10.0, 30.0, 100.0),
    min_windows: int = 10,
) -> np.ndarray:
    """Mean pairwise correlation of spike counts, from the population count (no N^2 pair loop).

    ``r = sum_{i != j} Cov(n_i, n_j) / sum_{i != j} sd_i sd_j
        = (Var(sum_i n_i) - sum_i Var n_i) / ((sum_i sd_i)^2 - sum_i Var n_i)``,
    the standard-deviation-weighted mean of the pairwise count correlations in windows ``w`` (exact identity;
    weighting by sd is our choice, it makes the estimate O(S) and lets silent neurons drop out). An
    asynchronous balanced network has r of order 0.01 (Renart et al., Science 327:587, 2010; Ecker et al.
    2010 measured 0.01 in cortex); synchronous or oscillating networks tens of percent. Unlike the
    population Fano factor it does not grow with N, so one threshold fits every chip size.

    Returns
    -------
    ndarray of float64, shape [len(windows_ms)]; NaN without enough windows or spikes.
    """
    t, i = sort_by_neuron(times_ms, ids)
    out = np.full(len(windows_ms), np.nan)
    for w_idx, w in enumerate(windows_ms):
        mom = _count_moments(t, i, n_neurons, t_start_ms, t_stop_ms, w, min_windows)
        if mom is None:
            continue
        _, var, var_pop = mom
        var = np.clip(var, 0.0, None)
        den = float(np.sqrt(var).sum() ** 2 - var.sum())
        if den > 0:
            out[w_idx] = (var_pop - float(var.sum())) / den
    return out


def classify_regime(
    cv: np.ndarray,
    *,
    cv_threshold: float = 0.5,
    fano: Optional[np.ndarray] = None,
    fano_threshold: Optional[float] = None,
) -> np.ndarray:
    """Label each neuron fluctuation-driven (1), mean-driven (0) or unclassified (-1).

    Rule (our choice; the regimes are those of the balanced-state theory, seeds/002 and
    Shadlen and Newsome 1998, Renart et al. 2007): a neuron whose mean input sits below threshold fires only
    when fluctuations carry it over, so its ISIs are irregular (CV ~ 1); a neuron driven above threshold by its
    mean input fires like a relaxation oscillator, regularly (CV << 1). ``CV >= cv_threshold`` -> fluctuation-
    driven. With ``fano`` and ``fano_threshold`` a neuron is mean-driven only if its Fano factor is also below
    ``fano_threshold`` (both statistics agree it is regular). NaN CV (too few spikes) -> unclassified.

    Parameters
    ----------
    cv : array of float, shape [N]
    cv_threshold : float
        0.5 by default: halfway between a periodic (0) and a Poisson (1) train.
    fano : array of float, shape [N], optional
    fano_threshold : float, optional

    Returns
    -------
    ndarray of int8, shape [N]
    """
    cv = np.asarray(cv, dtype=np.float64)
    out = np.full(cv.shape, UNCLASSIFIED, dtype=np.int8)
    ok = np.isfinite(cv)
    out[ok] = np.where(cv[ok] >= cv_threshold, FLUCTUATION_DRIVEN, MEAN_DRIVEN)
    if fano is not None and fano_threshold is not None:
        f = np.asarray(fano, dtype=np.float64)
        irregular_count = np.isfinite(f) & (f >= fano_threshold)
        out[(out == MEAN_DRIVEN) & irregular_count] = FLUCTUATION_DRIVEN
    return out


# ====================================================================================================== balance
def signed_balance(iexc_mean: np.ndarray, iinh_mean: np.ndarray) -> np.ndarray:
    """Signed balance ``(<Iexc> + <Iinh>) / <Iexc>`` per neuron: > 0 excitation dominates, < 0 inhibition.

    ``Iexc = ge*(EE - Vbal)`` (> 0) and ``Iinh = gi*(EI - Vbal)`` (< 0) for cond_lif, so the numerator is the
    mean balance proxy ``<Ibal>`` of MODEL.md 1; for dpi ``Iexc = Iampa`` and ``Iinh = -Igaba``. NaN where
    ``<Iexc> <= 0`` (no excitation: undefined).
    """
    e = np.asarray(iexc_mean, dtype=np.float64)
    i = np.asarray(iinh_mean, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(e > 0, (e + i) / e, np.nan)


def balance_index(iexc_mean: np.ndarray, iinh_mean: np.ndarray) -> np.ndarray:
    """Balance index per neuron, MODEL.md 1: ``|<Ibal>| / <ge*(EE - Vbal)> = |<Iexc> + <Iinh>| / <Iexc>``.

    0 at perfect mean balance, 1 with no inhibition; inhibition cut to a third of the balanced value gives 2/3.
    For dpi, ``|<Iampa - Igaba>| / <Iampa>`` (pass ``Iampa`` and ``-Igaba``). NaN where ``<Iexc> <= 0``.
    """
    return np.abs(signed_balance(iexc_mean, iinh_mean))


def conductance_ratio(
    ge_mean: np.ndarray, gi_mean: np.ndarray, *, vbal_mv: float, ee_mv: float = 0.0, ei_mv: float = -80.0
) -> Tuple[np.ndarray, float]:
    """Per-neuron ``<ge>/<gi>`` and its balanced value ``(Vbal - EI)/(EE - Vbal)`` (MODEL.md 1).

    The mean proxy ``<ge>(EE - Vbal) + <gi>(EI - Vbal)`` is zero exactly when the ratio equals the theory, so
    ``balance_index = |1 - theory / ratio|``: the two say the same for cond_lif, in different units.

    Returns
    -------
    ratio : ndarray of float64, shape [N] (NaN where ``<gi> <= 0``)
    theory : float
    """
    ge = np.asarray(ge_mean, dtype=np.float64)
    gi = np.asarray(gi_mean, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(gi > 0, ge / gi, np.nan)
    return ratio, (vbal_mv - ei_mv) / (ee_mv - vbal_mv)


# ====================================================================================================== E/I scales
@dataclass
class CoFluctuation:
    """E/I co-fluctuation over time scales (:func:`ei_cofluctuation`). Arrays have one entry per scale.

    Attributes
    ----------
    bin_ms : ndarray
        Bin widths (ms), log-spaced.
    rho : ndarray
        Zero-lag Pearson correlation of the coarse-grained E and I series (non-overlapping bins).
    peak_lag_ms : ndarray
        Lag of the maximum of the cross-correlation at that scale (> 0: I follows E), resolution ``dt_ms``;
        NaN when the maximum lies on the edge of the lag window (no peak).
    peak_corr : ndarray
        The cross-correlation at its peak.
    deviation : ndarray
        ``std(z_E - z_I)/sqrt(2)`` of the z-scored coarse series: 0 for perfect co-fluctuation, 1 for
        independent series (equals ``sqrt(1 - rho)``).
    imbalance : ndarray
        ``rms(E - I) / mean((E + I)/2)``: relative distance from the balance line ``E = I``, counting both a
        static offset and uncorrelated fluctuations.
    ratio : ndarray
        ``mean(E) / mean(I)``.
    n_bins : ndarray of int
        Bins at that scale.
    fano_e, fano_i : ndarray
        Population Fano factor of the E and I spike counts at that scale: ``Var(E_Delta) / noise``, with the
        Poisson counting noise ``noise = mean(E_Delta) / (n_cells * Delta)``. 1 for independent Poisson
        neurons (asynchronous state), > 1 with shared fluctuations. NaN unless cell counts were given.
    rho_signal : ndarray
        Correlation of the fluctuations left after removing the counting noise:
        ``Cov(E, I) / sqrt((Var E - noise_E)(Var I - noise_I))`` (independent neurons make the noise of E and I
        independent, so the covariance needs no correction), clipped to [-1, 1]; NaN where either excess
        variance is not positive or no cell counts were given.
    dt_ms : float
        Resolution of the input series.
    signal : str
        What E and I are (``"rates"``: per-cell population rates in Hz; ``"currents"``: population-mean
        excitatory and inhibitory input currents in pA).
    """

    bin_ms: np.ndarray
    rho: np.ndarray
    peak_lag_ms: np.ndarray
    peak_corr: np.ndarray
    deviation: np.ndarray
    imbalance: np.ndarray
    ratio: np.ndarray
    n_bins: np.ndarray
    fano_e: np.ndarray
    fano_i: np.ndarray
    rho_signal: np.ndarray
    dt_ms: float
    signal: str = "rates"

    def median_over(self, name: str, min_bin_ms: float = 0.0) -> float:
        """Median of the per-scale array ``name`` over the scales at or above ``min_bin_ms`` (NaN if none)."""
        v = np.asarray(getattr(self, name), dtype=np.float64)[self.bin_ms >= min_bin_ms - 1e-9]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else float("nan")


def log_scales(
    dt_ms: float,
    duration_ms: float,
    *,
    n_scales: int = 32,
    min_bin_ms: Optional[float] = None,
    max_bin_ms: Optional[float] = None,
) -> np.ndarray:
    """Bin widths for the multiscale analysis, as integer numbers of input samples.

    ``n_scales`` widths geometrically spaced from ``min_bin_ms`` (default max(dt, 1 ms)) to ``max_bin_ms``
    (default duration/20, so the coarsest scale still has 20 bins), rounded to multiples of ``dt_ms``. Where
    rounding would repeat a width at the fine end, the widths step up by one sample instead (1, 2, 3, ...
    samples, then geometric), so there are ``n_scales`` distinct widths whenever the range holds that many;
    otherwise every width in the range once. The 32 log-spaced scales follow Dehghani et al. 2016; the end
    points and the rounding are our choice (notes: recipe UNVERIFIED).

    Returns
    -------
    ndarray of int64: samples per bin, strictly increasing.
    """
    lo = max(dt_ms, 1.0) if min_bin_ms is None else max(min_bin_ms, dt_ms)
    hi = duration_ms / 20.0 if max_bin_ms is None else max_bin_ms
    k_lo = max(1, int(round(lo / dt_ms)))
    k_hi = max(k_lo, int(round(hi / dt_ms)))
    if k_hi - k_lo + 1 <= n_scales:
        return np.arange(k_lo, k_hi + 1, dtype=np.int64)
    k = np.round(np.geomspace(k_lo, k_hi, n_scales)).astype(np.int64)
    for j in range(1, n_scales):  # fine end: at least one sample apart
        k[j] = max(k[j], k[j - 1] + 1)
    for j in range(n_scales - 2, -1, -1):  # keep the top end at k_hi
        k[j] = min(k[j], k[j + 1] - 1)
    return k


def _box(x: np.ndarray, k: int) -> np.ndarray:
    """Sums of ``k`` consecutive entries (valid part, length len(x) - k + 1), via a cumulative sum."""
    c = np.concatenate(([0.0], np.cumsum(x)))
    return c[k:] - c[:-k]


def ei_cofluctuation(
    e: np.ndarray,
    i: np.ndarray,
    dt_ms: float,
    *,
    n_scales: int = 32,
    min_bin_ms: Optional[float] = None,
    max_bin_ms: Optional[float] = None,
    max_lag_ms: float = 50.0,
    signal: str = "rates",
    n_cells_e: Optional[int] = None,
    n_cells_i: Optional[int] = None,
) -> CoFluctuation:
    """Multiscale co-fluctuation of an excitatory and an inhibitory population signal.

    After Dehghani, Peyrache, Telenczuk, Le Van Quyen, Halgren, Cash, Hatsopoulos and Destexhe, Sci Rep
    6:23176 (2016): E and I ensembles co-fluctuate at zero lag over many time scales in every normal brain
    state, with the largest deviations in slow-wave sleep, and the E-I temporal correlation breaks down in
    seizures. Their exact recipe could not be read (notes: UNVERIFIED); this implementation is our choice:

    1. For each of the bin widths ``Delta`` of :func:`log_scales`, coarse-grain both series into
       non-overlapping bins (mean per bin): ``E_Delta(t)``, ``I_Delta(t)``.
    2. ``rho(Delta) = corr(E_Delta, I_Delta)`` (Pearson, zero lag).
    3. ``deviation(Delta) = std(z_E - z_I)/sqrt(2)``, z the z-scored series (0 perfect, 1 independent).
    4. ``imbalance(Delta) = sqrt(mean((E_Delta - I_Delta)^2)) / mean((E_Delta + I_Delta)/2)``: the relative
       distance from the balance line, which sees a static offset too. It is meaningful when E and I are in
       units where balance means ``E = I``: per-cell rates of identical populations, or the excitatory
       current ``<ge*(EE - Vbal)>`` against the inhibitory one ``-<gi*(EI - Vbal)>``.
    5. ``ratio(Delta) = mean(E)/mean(I)``.
    6. The cross-correlation ``C_Delta(tau) = Cov(E_Delta(t), I_Delta(t + tau)) / (sd sd)`` with
       ``E_Delta, I_Delta`` the *moving* averages of width Delta, at the input resolution ``dt_ms``; its
       maximum over ``|tau| <= max_lag_ms`` gives ``peak_lag_ms`` (> 0: I follows E; NaN when the maximum
       lies on the edge of the window, i.e. there is no peak inside it). Moving rather than
       binned averages keep the lag resolution at ``dt_ms`` at every scale: the smoothed covariance is the raw
       cross-covariance (one FFT) convolved with a triangle of half-width Delta (two running sums).

    7. With ``n_cells_e`` and ``n_cells_i`` (E and I are then per-cell rates in Hz), the counting noise is
       separated out (our addition): ``fano_e``, ``fano_i`` and ``rho_signal`` (see :class:`CoFluctuation`).

    Counting noise alone lowers ``rho`` at fine scales (independent Poisson noise in E and I). In an
    asynchronous state the population rates of a few hundred neurons are almost pure counting noise, so
    ``rho`` is near 0 at every scale although nothing is wrong: there is no shared fluctuation to co-vary.
    Judge the co-fluctuation with ``rho_signal`` at scales where ``fano_e`` and ``fano_i`` exceed 1 clearly.

    Parameters
    ----------
    e, i : array of float, shape [T]
        The two signals on a common grid of step ``dt_ms`` (rates in Hz, or currents).
    dt_ms : float
    n_scales, min_bin_ms, max_bin_ms : see :func:`log_scales`.
    max_lag_ms : float
        Half-range of the lag search.
    signal : str
        Label stored in the result.
    n_cells_e, n_cells_i : int, optional
        Neurons behind E and I when they are per-cell spike rates in Hz (enables the noise correction).

    Returns
    -------
    CoFluctuation
    """
    e = np.asarray(e, dtype=np.float64)
    i = np.asarray(i, dtype=np.float64)
    if e.shape != i.shape or e.ndim != 1:
        raise ValueError("e and i must be 1-D series of equal length")
    n = e.size
    ks = log_scales(dt_ms, n * dt_ms, n_scales=n_scales, min_bin_ms=min_bin_ms, max_bin_ms=max_bin_ms)
    ks = ks[ks <= max(1, n // 2)]
    S = ks.size
    rho, dev, imb, rat, fe_, fi_, rsig = (np.full(S, np.nan) for _ in range(7))
    counts = n_cells_e is not None and n_cells_i is not None and n_cells_e > 0 and n_cells_i > 0
    lag, pk = np.full(S, np.nan), np.full(S, np.nan)
    nbins = np.zeros(S, dtype=np.int64)

    for s, k in enumerate(ks):
        nb = n // k
        nbins[s] = nb
        E = e[: nb * k].reshape(nb, k).mean(axis=1)
        I = i[: nb * k].reshape(nb, k).mean(axis=1)
        me, mi = E.mean(), I.mean()
        se, si = E.std(), I.std()
        if nb >= 3 and se > 0 and si > 0:
            r = float(np.mean((E - me) * (I - mi)) / (se * si))
            rho[s] = r
            dev[s] = float(np.std((E - me) / se - (I - mi) / si) / math.sqrt(2.0))
        half = 0.5 * (me + mi)
        if half != 0:
            imb[s] = float(np.sqrt(np.mean((E - I) ** 2)) / abs(half))
        if mi != 0:
            rat[s] = float(me / mi)
        if counts and nb >= 3:
            width_s = k * dt_ms * 1e-3
            noise_e, noise_i = me / (n_cells_e * width_s), mi / (n_cells_i * width_s)  # type: ignore[operator]
            if noise_e > 0 and noise_i > 0:
                fe_[s], fi_[s] = se * se / noise_e, si * si / noise_i
                xe, xi = se * se - noise_e, si * si - noise_i
                if xe > 0 and xi > 0:
                    cov = float(np.mean((E - me) * (I - mi)))
                    rsig[s] = float(np.clip(cov / math.sqrt(xe * xi), -1.0, 1.0))

    # Cross-correlation of moving averages: triangle-smoothed raw covariances.
    L_lag = int(round(max_lag_ms / dt_ms))
    L_lag = max(0, min(L_lag, n // 4))
    kmax = int(ks.max()) if S else 1
    L = L_lag + kmax  # raw lags needed: |tau| <= L_lag + k - 1
    L = min(L, n - 1)
    ce, ci = e - e.mean(), i - i.mean()
    nfft = sfft.next_fast_len(n + L + 1, real=True)
    fe, fi = sfft.rfft(ce, nfft), sfft.rfft(ci, nfft)
    lags = np.arange(-L, L + 1)

    def raw(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        c = sfft.irfft(np.conj(fa) * fb, nfft)  # c[tau] = sum_t a[t] b[t + tau]
        return c[lags % nfft] / n

    c_ei, c_ee, c_ii = raw(fe, fi), raw(fe, fe), raw(fi, fi)
    for s, k in enumerate(ks):
        k = int(k)
        if k - 1 + L_lag > L:
            continue
        tri_ei = _box(_box(c_ei, k), k)  # centre lag of entry j: -L + j + (k - 1)
        tri_ee = _box(_box(c_ee, k), k)
        tri_ii = _box(_box(c_ii, k), k)
        j0 = L - (k - 1)  # entry of lag 0
        var_e, var_i = tri_ee[j0], tri_ii[j0]
        if var_e <= 0 or var_i <= 0:
            continue
        window = tri_ei[j0 - L_lag : j0 + L_lag + 1] / math.sqrt(var_e * var_i)
        j = int(np.argmax(window))
        pk[s] = float(window[j])
        if L_lag == 0 or 0 < j < window.size - 1:  # a maximum on the edge of the window is no peak
            lag[s] = (j - L_lag) * dt_ms

    return CoFluctuation(
        bin_ms=ks * dt_ms,
        rho=rho,
        peak_lag_ms=lag,
        peak_corr=pk,
        deviation=dev,
        imbalance=imb,
        ratio=rat,
        n_bins=nbins,
        fano_e=fe_,
        fano_i=fi_,
        rho_signal=rsig,
        dt_ms=float(dt_ms),
        signal=signal,
    )


# ====================================================================================================== branching
@dataclass
class BranchingFit:
    """Result of :func:`branching_ratio_mr`.

    Attributes
    ----------
    m : float
        Branching ratio per bin of ``bin_ms``: ``m = exp(-bin_ms/tau_ms)``.
    tau_ms : float
        Autocorrelation time ``-bin_ms/ln m`` (inf for m >= 1).
    ci_low, ci_high : float
        Bootstrap confidence interval of m (percentiles, level ``ci``).
    ci : float
        Confidence level.
    b, offset : float
        Fitted amplitude and offset: ``r_k = b m^k (+ offset)``.
    k : ndarray of int
        Lags 1..k_max.
    r_k : ndarray
        The regression slopes of A_{t+k} on A_t.
    r_k_fit : ndarray
        The fitted curve at ``k``.
    r_k_boot_sd : ndarray
        Bootstrap standard deviation of each r_k.
    m_naive : float
        The conventional one-step estimate ``r_1`` (biased low by subsampling; for comparison).
    r2 : float
        Coefficient of determination of the fit over k = 1..k_max.
    bin_ms : float
    fit : str
        ``"exp"`` or ``"exp_offset"``.
    n_boot : int
    fit_ok : bool
        False when the fit is not meaningful: constant activity, ``r_1 <= 0`` (anticorrelated successive bins,
        as regular refractory-limited firing gives), no positive amplitude, or ``r2 < min_r2`` (r_k not an
        exponential decay, e.g. oscillating under PING). ``m``, ``tau_ms`` and the interval are then NaN.
    """

    m: float
    tau_ms: float
    ci_low: float
    ci_high: float
    ci: float
    b: float
    offset: float
    k: np.ndarray
    r_k: np.ndarray
    r_k_fit: np.ndarray
    r_k_boot_sd: np.ndarray
    m_naive: float
    r2: float
    bin_ms: float
    fit: str
    n_boot: int
    fit_ok: bool


def _mr_block_stats(a: np.ndarray, k_max: int, edges: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-block sufficient statistics of the lag-k regressions, arrays [n_blocks, k_max].

    A pair (A_t, A_{t+k}) belongs to the block of t (it may reach into the next block). For block b and lag k:
    ``n`` pairs, ``f = sum A_t``, ``g = sum A_{t+k}``, ``q = sum A_t^2``, ``p = sum A_t A_{t+k}``.
    """
    n = a.size
    nbk = edges.size - 1
    cs = np.concatenate(([0.0], np.cumsum(a)))
    cs2 = np.concatenate(([0.0], np.cumsum(a * a)))
    out = {key: np.empty((nbk, k_max)) for key in ("n", "f", "g", "q", "p")}
    lo_e, hi_e = edges[:-1], edges[1:]
    for k in range(1, k_max + 1):
        lo = np.minimum(lo_e, n - k)
        hi = np.minimum(hi_e, n - k)
        out["n"][:, k - 1] = hi - lo
        out["f"][:, k - 1] = cs[hi] - cs[lo]
        out["q"][:, k - 1] = cs2[hi] - cs2[lo]
        out["g"][:, k - 1] = cs[hi + k] - cs[lo + k]
        cp = np.concatenate(([0.0], np.cumsum(a[: n - k] * a[k:])))
        out["p"][:, k - 1] = cp[hi] - cp[lo]
    return out


def _r_from_stats(st: Dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    """r_k from block statistics pooled with block weights ``w`` [B, n_blocks] -> [B, k_max]."""
    N = w @ st["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        F, G, Q, P = (w @ st[key] / N for key in ("f", "g", "q", "p"))
        return (P - F * G) / (Q - F * F)


def mr_coefficients(activity: np.ndarray, k_max: int) -> np.ndarray:
    """Multistep regression coefficients ``r_k = Cov(A_t, A_{t+k}) / Var(A_t)``, k = 1..k_max.

    Wilting and Priesemann, Nat Commun 9:2325 (2018), eq. for the MR estimator: the slope of the linear
    regression of A_{t+k} on A_t. Per trial (the 'ts' method of their toolbox): front mean and variance over
    ``A[:-k]``, back mean over ``A[k:]``. With several trials (rows of a 2-D ``activity``) the sums are pooled
    over trials before the ratio is formed (our choice; equal to mrestimator's 'sm' method when trials share
    a mean).

    Parameters
    ----------
    activity : array, shape [T] or [trials, T]
        Population spike counts per bin.
    k_max : int

    Returns
    -------
    ndarray of float64, shape [k_max]
    """
    a = np.asarray(activity, dtype=np.float64)
    rows = a[None] if a.ndim == 1 else a
    stats = None
    for row in rows:
        row = row - row.mean()
        st = _mr_block_stats(row, k_max, np.array([0, row.size]))
        stats = st if stats is None else {key: stats[key] + st[key] for key in st}
    assert stats is not None
    return _r_from_stats(stats, np.ones((1, 1)))[0]


def _fit_grid() -> np.ndarray:
    """Candidate m values, dense near 1: tau from 0.1 to 1e5 bins below 1, and up to m = e^0.1 above."""
    tau = np.geomspace(0.1, 1e5, 700)
    below = np.exp(-1.0 / tau)
    above = np.exp(1.0 / np.geomspace(1e5, 10.0, 150))
    return np.concatenate((below, [1.0], above))


def _profile_sse(r: np.ndarray, m: np.ndarray, k: np.ndarray, offset: bool) -> Tuple[np.ndarray, ...]:
    """Least-squares error of ``r_k ~ b m^k (+ c)`` for every row of r [B, K] and every m [G], b >= 0.

    For fixed m the model is linear in (b, c), so the error has a closed form; returns (sse, b, c) [B, G].
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        phi = np.exp(np.outer(np.log(m), k))  # [G, K]
    phi = np.where(np.isfinite(phi), phi, 0.0)
    rr = np.einsum("bk,bk->b", r, r)[:, None]
    rp = r @ phi.T  # [B, G]
    pp = np.einsum("gk,gk->g", phi, phi)[None, :]
    if not offset:
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.where(rp > 0, rp / pp, 0.0)
        sse = rr - 2 * b * rp + b * b * pp
        return sse, b, np.zeros_like(b)
    K = float(k.size)
    r1 = r.sum(axis=1)[:, None]
    p1 = phi.sum(axis=1)[None, :]
    det = pp * K - p1 * p1
    with np.errstate(invalid="ignore", divide="ignore"):
        b = (rp * K - p1 * r1) / det
        c = (pp * r1 - p1 * rp) / det
    bad = ~np.isfinite(b) | (b < 0)
    # b < 0 or singular: the best admissible fit is the constant c = mean(r) (b = 0)
    b = np.where(bad, 0.0, b)
    c = np.where(bad, r1 / K, c)
    resid_sse = rr - 2 * (b * rp + c * r1) + b * b * pp + 2 * b * c * p1 + c * c * K
    return resid_sse, b, c


def _fit_mr(r: np.ndarray, k: np.ndarray, offset: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best m, b, c for each row of r [B, K]: a coarse grid in m, then a fine grid around each minimum."""
    grid = _fit_grid()
    sse, _, _ = _profile_sse(r, grid, k, offset)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    j = np.argmin(sse, axis=1)
    lo = grid[np.maximum(j - 1, 0)]
    hi = grid[np.minimum(j + 1, grid.size - 1)]
    B = r.shape[0]
    m_out, b_out, c_out = np.empty(B), np.empty(B), np.empty(B)
    frac = np.linspace(0.0, 1.0, 201)
    for row in range(B):
        fine = lo[row] + (hi[row] - lo[row]) * frac
        s, b, c = _profile_sse(r[row : row + 1], fine, k, offset)
        s = np.where(np.isfinite(s), s, np.inf)
        q = int(np.argmin(s[0]))
        m_out[row], b_out[row], c_out[row] = fine[q], b[0, q], c[0, q]
    return m_out, b_out, c_out


def branching_ratio_mr(
    activity: np.ndarray,
    bin_ms: float,
    *,
    k_max: Optional[int] = None,
    fit: str = "exp",
    n_boot: int = 200,
    n_blocks: int = 20,
    ci: float = 0.95,
    seed: int = 0,
    min_r2: float = 0.5,
) -> BranchingFit:
    """Branching ratio of population activity with the multistep regression (MR) estimator.

    Wilting and Priesemann, "Inferring collective dynamical states from widely unobserved systems", Nat Commun
    9:2325 (2018). For a branching process ``A_{t+1} = m A_t + h + noise`` observed through subsampling
    ``a_t`` (each unit seen with probability p), the lag-k regression slopes are
    ``r_k = Cov(a_t, a_{t+k}) / Var(a_t) = b m^k`` with an unknown ``b`` that depends on p; the conventional
    one-step estimate ``r_1 = b m`` is biased, the fit of the whole curve is not. Steps:

    1. :func:`mr_coefficients` for k = 1..k_max;
    2. least-squares fit ``r_k = b m^k`` (``fit="exp"``, default) or ``b m^k + c`` (``"exp_offset"``, the
       default of the authors' toolbox mrestimator, which absorbs slow non-stationarity). We default to the
       pure exponential because with tau close to or beyond k_max the offset trades off against tau and m
       becomes ill-determined (our choice; pass ``"exp_offset"`` for the toolbox behaviour). The fit is
       exact least squares: for fixed m it is linear in (b, c), so we scan m on a grid dense near 1 and
       refine (resolution ~1e-5 near m = 0.98), with b >= 0 enforced;
    3. ``tau = -bin_ms / ln m``;
    4. confidence interval: block bootstrap. The series is cut into ``n_blocks`` contiguous blocks (trials
       for 2-D input); the sufficient statistics of every regression are summed per block, blocks are
       resampled with replacement ``n_boot`` times, r_k recomputed from the resampled sums, refitted, and the
       percentiles of m give the interval (our choice of resampling unit; mrestimator resamples trials).

    Parameters
    ----------
    activity : array, shape [T] or [trials, T]
        Population spike counts per bin of ``bin_ms`` (subsampled or not).
    bin_ms : float
        Bin width; m is per bin (``m_Delta = exp(-Delta/tau)``: compare m only at equal bins).
    k_max : int, optional
        Largest lag; default ``min(T // 10, 250)``, never above ``T // 4``. It should cover a few tau.
    fit : {"exp", "exp_offset"}
    n_boot : int
        Bootstrap replicates (0: no interval, ci_low = ci_high = NaN).
    n_blocks : int
        Blocks of the bootstrap for 1-D input.
    ci : float
        Confidence level of the interval.
    seed : int
        Seed of the bootstrap.
    min_r2 : float
        Fits explaining less of the variance of r_k than this are reported as not meaningful.

    Returns
    -------
    BranchingFit
    """
    if fit not in ("exp", "exp_offset"):
        raise ValueError("fit must be 'exp' or 'exp_offset'")
    a = np.asarray(activity, dtype=np.float64)
    rows = a[None] if a.ndim == 1 else a
    T = rows.shape[1]
    if k_max is None:
        k_max = min(T // 10, 250)
    k_max = int(max(2, min(k_max, T // 4)))
    k = np.arange(1, k_max + 1)

    if a.ndim == 1:
        nb = int(max(2, min(n_blocks, T // max(k_max, 1))))
        edges = np.linspace(0, T, nb + 1).round().astype(np.int64)
        stats = _mr_block_stats(rows[0] - rows[0].mean(), k_max, edges)
    else:
        parts = [_mr_block_stats(row - row.mean(), k_max, np.array([0, T])) for row in rows]
        stats = {key: np.concatenate([p[key] for p in parts], axis=0) for key in parts[0]}
        nb = rows.shape[0]

    r = _r_from_stats(stats, np.ones((1, nb)))
    nan_fit = BranchingFit(
        m=float("nan"), tau_ms=float("nan"), ci_low=float("nan"), ci_high=float("nan"), ci=ci, b=float("nan"),
        offset=float("nan"), k=k, r_k=r[0], r_k_fit=np.full(k_max, np.nan), r_k_boot_sd=np.full(k_max, np.nan),
        m_naive=float(r[0, 0]), r2=float("nan"), bin_ms=float(bin_ms), fit=fit, n_boot=0, fit_ok=False,
    )
    if not np.all(np.isfinite(r)):
        return nan_fit
    offset = fit == "exp_offset"
    m, b, c = _fit_mr(r, k.astype(np.float64), offset)
    m0, b0, c0 = float(m[0]), float(b[0]), float(c[0])
    r_fit = b0 * m0 ** k.astype(np.float64) + c0
    ss_tot = float(np.sum((r[0] - r[0].mean()) ** 2))
    r2 = 1.0 - float(np.sum((r[0] - r_fit) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    fit_ok = bool(b0 > 0 and r[0, 0] > 0 and np.isfinite(r2) and r2 >= min_r2)
    if not fit_ok:
        nan_fit.r2, nan_fit.b, nan_fit.offset, nan_fit.r_k_fit = r2, b0, c0, r_fit
        return nan_fit

    lo_ci = hi_ci = float("nan")
    sd = np.full(k_max, np.nan)
    if n_boot > 0 and nb >= 2:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, nb, size=(n_boot, nb))
        w = np.zeros((n_boot, nb))
        np.add.at(w, (np.repeat(np.arange(n_boot), nb), picks.ravel()), 1.0)
        rb = _r_from_stats(stats, w)
        good = np.all(np.isfinite(rb), axis=1)
        if good.any():
            mb, _, _ = _fit_mr(rb[good], k.astype(np.float64), offset)
            alpha = (1.0 - ci) / 2.0
            lo_ci, hi_ci = (float(x) for x in np.quantile(mb, [alpha, 1.0 - alpha]))
            sd = rb[good].std(axis=0)
    tau = -bin_ms / math.log(m0) if 0 < m0 < 1 else float("inf")
    return BranchingFit(
        m=m0, tau_ms=tau, ci_low=lo_ci, ci_high=hi_ci, ci=ci, b=b0, offset=c0, k=k, r_k=r[0], r_k_fit=r_fit,
        r_k_boot_sd=sd, m_naive=float(r[0, 0]), r2=r2, bin_ms=float(bin_ms), fit=fit, n_boot=int(n_boot),
        fit_ok=True,
    )


# ====================================================================================================== spectrum
@dataclass
class Spectrum:
    """Population spectrum (:func:`population_spectrum`).

    Attributes
    ----------
    freqs_hz, psd : ndarray
        Welch estimate of the power spectral density of the population rate (Hz^2/Hz for a rate in Hz).
    gamma_band : tuple of float
        Band searched for the peak (Hz).
    gamma_peak_hz : float
        Frequency in the band where the PSD rises most above the aperiodic baseline.
    gamma_peak_ratio : float
        PSD over baseline there (about 1 without a rhythm).
    gamma_power_fraction : float
        Power in the band over the power from ``floor_band[0]`` to Nyquist.
    floor : float
        Counting-noise level ``2 <rate> / n_cells`` when the cell count is known, else the median PSD over
        ``floor_band``.
    baseline : ndarray
        The aperiodic baseline at ``freqs_hz`` (NaN outside the band and flanks; see
        :func:`population_spectrum`).
    gamma_modulation : float
        Depth of the gamma-band rate modulation relative to the mean rate: ``sqrt(2 P_ex) / <rate>`` with
        ``P_ex`` the band power above the baseline. A rate ``r0 (1 + a sin(2 pi f t))`` gives ``a``; it does
        not grow with the number of neurons, and broadband (aperiodic) power does not count.
    mean_rate : float
        Mean of the input series.
    bin_ms : float
    """

    freqs_hz: np.ndarray
    psd: np.ndarray
    gamma_band: Tuple[float, float]
    gamma_peak_hz: float
    gamma_peak_ratio: float
    gamma_power_fraction: float
    floor: float
    baseline: np.ndarray
    gamma_modulation: float
    mean_rate: float
    bin_ms: float


def population_spectrum(
    rate: np.ndarray,
    bin_ms: float,
    *,
    gamma_band: Tuple[float, float] = (30.0, 80.0),
    nperseg: int = 1024,
    floor_band: Tuple[float, Optional[float]] = (5.0, None),
    n_cells: Optional[int] = None,
) -> Spectrum:
    """Power spectrum of a population rate and its gamma-band peak (PING).

    Welch's method (Hann windows of ``nperseg`` bins, half overlap, mean removed per segment;
    ``scipy.signal.welch``). Pyramidal-interneuron network gamma (PING: E drives I, I silences E, the cycle
    set by the synaptic and membrane time constants of the loop) shows as a peak in 30-80 Hz (seeds/002;
    Whittington et al. 2000, Brunel and Wang 2003). A rhythm is a *peak*: power above the aperiodic spectrum
    around it. Shared input fluctuations (a feed-forward chip whose neurons share Poisson sources) raise the
    whole low-frequency spectrum above the counting noise without any rhythm, so the reference is an
    aperiodic baseline (our choice, in the spirit of the 1/f-corrected peak detection of Donoghue et al.
    2020): a power law ``log PSD = a + b log f`` fitted to the flanks ``[lo/2, lo)`` and
    ``(hi, min(2 hi, 0.9 Nyquist)]`` of the band ``[lo, hi]``, and inside the band at least the mean PSD of
    the lower flank. The second term makes it conservative: a spectrum that bends down inside the band (the
    knee of shared input filtered by the synapses, measured on bss2 chips) lies above any power law through
    its flanks, yet is no rhythm; a rhythm must rise above the spectrum just below the band. Weak gamma
    bumps on a steep 1/f spectrum are missed by design. Reported: the peak frequency and
    ``gamma_peak_ratio = PSD/baseline`` at the largest ratio in the band, and the modulation depth
    ``gamma_modulation = sqrt(2 * max(0, sum_band (PSD - baseline) df)) / mean`` (N-independent, used by the
    flag; the band excess is summed before clipping so that estimation noise cancels). Without usable flanks
    the baseline is the floor: the counting noise ``2 r / N`` of N cells at ``r`` Hz (one-sided, per-cell
    rate; also the high-frequency limit of any renewal train) when ``n_cells`` is given, else the median PSD
    over ``floor_band``. Caveat: regular (mean-driven) neurons firing near the same rate make a peak at that
    rate without any synchrony; read the peak with the CV.

    Parameters
    ----------
    rate : array, shape [T]
        Population rate on a grid of ``bin_ms`` (Hz per cell, or counts: the ratio is unit-free).
    bin_ms : float
    gamma_band : (float, float)
    nperseg : int
        Segment length (bins); reduced to the series length when shorter.
    floor_band : (float, float or None)
        Band of the median floor (without ``n_cells``); None upper edge = Nyquist.
    n_cells : int, optional
        Cells behind a per-cell rate in Hz: the floor is then the counting noise ``2 * mean / n_cells``.

    Returns
    -------
    Spectrum
    """
    x = np.asarray(rate, dtype=np.float64)
    fs = 1000.0 / bin_ms
    nps = int(min(nperseg, x.size))
    f, p = ssignal.welch(x, fs=fs, nperseg=nps, detrend="constant")
    hi = fs / 2.0 if floor_band[1] is None else floor_band[1]
    fl = (f >= floor_band[0]) & (f <= hi)
    mean = float(x.mean()) if x.size else float("nan")
    if n_cells is not None and n_cells > 0:
        floor = 2.0 * mean / n_cells
    else:
        floor = float(np.median(p[fl])) if fl.any() else float("nan")
    lo, hi_b = float(gamma_band[0]), float(gamma_band[1])
    band = (f >= lo) & (f <= hi_b)
    flank_lo = (f >= lo / 2) & (f < lo) & (p > 0)
    flank_hi = (f > hi_b) & (f <= min(2 * hi_b, 0.9 * fs / 2)) & (p > 0)
    baseline = np.full(f.shape, np.nan)
    if flank_lo.sum() >= 2 and flank_hi.sum() >= 2:
        fx = flank_lo | flank_hi
        slope, icpt = np.polyfit(np.log10(f[fx]), np.log10(p[fx]), 1)
        use = band | fx
        baseline[use] = 10.0 ** (icpt + slope * np.log10(f[use]))
        # conservative: a rhythm must also rise above the spectrum just below the band (a knee is no peak)
        baseline[band] = np.maximum(baseline[band], float(np.mean(p[flank_lo])))
    elif np.isfinite(floor):
        baseline[band] = floor
    if band.any() and np.all(np.isfinite(baseline[band])) and np.all(baseline[band] > 0):
        rel = p[band] / baseline[band]
        j = np.flatnonzero(band)[int(np.argmax(rel))]
        peak_hz, ratio = float(f[j]), float(p[j] / baseline[j])
        tot = float(p[f >= floor_band[0]].sum())
        frac = float(p[band].sum() / tot) if tot > 0 else float("nan")
        df = float(f[1] - f[0]) if f.size > 1 else 0.0
        excess = max(0.0, float(np.sum(p[band] - baseline[band])) * df)
        mod = math.sqrt(2.0 * excess) / abs(mean) if mean else float("nan")
    else:
        peak_hz, ratio, frac, mod = float("nan"), float("nan"), float("nan"), float("nan")
    return Spectrum(
        freqs_hz=f, psd=p, gamma_band=(lo, hi_b), gamma_peak_hz=peak_hz, gamma_peak_ratio=ratio,
        gamma_power_fraction=frac, floor=floor, baseline=baseline, gamma_modulation=mod, mean_rate=mean,
        bin_ms=float(bin_ms),
    )


def synchrony_chi(v: np.ndarray) -> float:
    """Synchrony measure chi of membrane potentials (Golomb and Rinzel 1993; Golomb, Scholarpedia 2(1):1347).

    ``chi^2 = Var_t(mean_i V_i(t)) / mean_i Var_t(V_i(t))``: about ``1/sqrt(M)`` for M asynchronous neurons,
    1 for full synchrony.

    Parameters
    ----------
    v : array, shape [T, M]
        Sampled potentials of M neurons.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 3 or v.shape[1] < 2:
        return float("nan")
    den = float(v.var(axis=0).mean())
    if den <= 0:
        return float("nan")
    return float(math.sqrt(v.mean(axis=1).var() / den))


# ====================================================================================================== recording
def population_counts(
    rec: Recording, bin_steps: int = 1, mask: Optional[np.ndarray] = None
) -> np.ndarray:
    """Spike counts per bin of ``bin_steps`` steps over the complete span of a recording.

    Parameters
    ----------
    rec : Recording
    bin_steps : int
    mask : array of bool, shape [N], optional
        Count only these neurons.

    Returns
    -------
    ndarray of int64, shape [n_bins]: bins from ``rec.spikes_complete_from_step``, incomplete last bin dropped.
    """
    s0 = int(rec.spikes_complete_from_step)
    nb = (rec.t_stop_step - s0) // bin_steps
    steps = np.asarray(rec.spike_steps)
    if mask is not None:
        steps = steps[np.asarray(mask, dtype=bool)[np.asarray(rec.spike_ids)]]
    b = (steps - s0) // bin_steps
    b = b[(b >= 0) & (b < nb)]
    return np.bincount(b, minlength=nb).astype(np.int64)


@dataclass
class Diagnostics:
    """Everything :func:`diagnose` measured on one recording, with its flags.

    Per-neuron arrays have shape [N] (NaN where undefined). ``to_dict()`` gives a JSON-ready summary.

    Attributes
    ----------
    n_neurons, n_exc, n_inh : int
        Chip size and populations (all excitatory when the recording has no ``is_exc``).
    duration_ms, dt_ms : float
    n_spikes : int
        Spikes over the whole recording.
    rate_hz : ndarray [N]; mean_rate_hz : float
        Rates over the whole recording.
    balance_index, signed_balance : ndarray [N]
        :func:`balance_index` and :func:`signed_balance` of the per-neuron current means (NaN without samples).
    balance_index_median, signed_balance_median : float
        Medians over active neurons.
    conductance_ratio : ndarray [N]; conductance_ratio_median : float; conductance_ratio_theory : float or None
        :func:`conductance_ratio` (cond_lif with a known Vbal only).
    cv, cv2 : ndarray [N]
        :func:`isi_cv`, :func:`isi_cv2`.
    fano_windows_ms : ndarray [W]; fano : ndarray [W, N]; fano_median : ndarray [W]
        :func:`fano_factor` and its median per window.
    regime : ndarray of int8 [N]
        :func:`classify_regime` labels; ``fluctuation_driven_fraction`` and ``mean_driven_fraction`` are the
        shares among classified neurons.
    cv_median : float
    cofluct_rates : CoFluctuation or None
        E/I population rates over 32 scales (None with one population).
    cofluct_currents : CoFluctuation or None
        Population excitatory current against the inhibitory one, from samples (None without samples).
    branching : BranchingFit or None
        MR estimator on the population activity.
    spectrum : Spectrum or None
        Population-rate spectrum.
    synchrony_chi : float
        :func:`synchrony_chi` of the trace neurons' potentials.
    count_corr_windows_ms, count_corr : ndarray
        :func:`mean_count_correlation` at 10, 30 and 100 ms (and ``thresholds.rsc_window_ms``).
    flags : list of str
        Raised flags (:class:`FlagThresholds`); ``healthy`` is True when none but advisory ones are raised.
    notes : list of str
        What could not be judged, and why.
    thresholds : FlagThresholds
        The rule set used.
    label : str
        Free text, e.g. "before" or "after".
    """

    n_neurons: int
    n_exc: int
    n_inh: int
    duration_ms: float
    dt_ms: float
    n_spikes: int
    rate_hz: np.ndarray
    mean_rate_hz: float
    # balance
    balance_index: np.ndarray
    signed_balance: np.ndarray
    balance_index_median: float
    signed_balance_median: float
    conductance_ratio: np.ndarray
    conductance_ratio_median: float
    conductance_ratio_theory: Optional[float]
    # irregularity
    cv: np.ndarray
    cv2: np.ndarray
    fano_windows_ms: np.ndarray
    fano: np.ndarray
    regime: np.ndarray
    cv_median: float
    fano_median: np.ndarray
    fluctuation_driven_fraction: float
    mean_driven_fraction: float
    # population
    cofluct_rates: Optional[CoFluctuation]
    cofluct_currents: Optional[CoFluctuation]
    branching: Optional[BranchingFit]
    spectrum: Optional[Spectrum]
    synchrony_chi: float
    count_corr_windows_ms: np.ndarray
    count_corr: np.ndarray
    # verdict
    flags: List[str]
    notes: List[str]
    healthy: bool
    thresholds: FlagThresholds
    label: str = ""

    def to_dict(self, *, per_neuron: bool = False) -> Dict[str, Any]:
        """A JSON-serialisable summary: scalars, per-scale and per-lag curves, the spectrum, flags.

        Parameters
        ----------
        per_neuron : bool
            Also include the per-neuron arrays (rate, balance, CV, regime, ...).
        """

        def clean(x: Any) -> Any:
            if isinstance(x, np.ndarray):
                return [clean(v) for v in x.tolist()]
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (np.floating, float)):
                xf = float(x)
                return xf if math.isfinite(xf) else None
            if isinstance(x, (np.integer,)):
                return int(x)
            if isinstance(x, np.bool_):
                return bool(x)
            return x

        per_neuron_keys = {
            "rate_hz", "balance_index", "signed_balance", "conductance_ratio", "cv", "cv2", "fano", "regime",
        }
        d: Dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in per_neuron_keys:
                if per_neuron:
                    d[f.name] = clean(v)
                continue
            if f.name == "spectrum" and v is not None:
                d[f.name] = clean(asdict(v))
            elif f.name in ("cofluct_rates", "cofluct_currents", "branching") and v is not None:
                d[f.name] = clean(asdict(v))
            elif f.name == "thresholds":
                d[f.name] = clean(asdict(v))
            else:
                d[f.name] = clean(v)
        d["balance_index_p90"] = clean(_nanquantile(self.balance_index, 0.9))
        return d


def _nanquantile(x: np.ndarray, q: float) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else float("nan")


def _nanmedian(x: np.ndarray) -> float:
    return _nanquantile(x, 0.5)


def diagnose(
    rec: Recording,
    *,
    theory: Optional[Theory] = None,
    thresholds: Optional[FlagThresholds] = None,
    n_scales: int = 32,
    base_bin_ms: float = 1.0,
    max_lag_ms: float = 50.0,
    mr_bin_ms: float = 4.0,
    mr_k_max_ms: float = 1000.0,
    mr_fit: str = "exp",
    n_boot: int = 100,
    fano_windows_ms: Sequence[float] = (10.0, 30.0, 100.0, 300.0, 1000.0),
    min_isis: int = 10,
    spectrum_bin_ms: float = 1.0,
    seed: int = 0,
    label: str = "",
) -> Diagnostics:
    """All diagnostics of one recording, and the flags of the rule set ``thresholds``.

    Parameters
    ----------
    rec : Recording
    theory : Theory, optional
        Balanced conductance ratio for cond_lif; default from ``rec.meta`` (``Theory.from_meta``), else none.
    thresholds : FlagThresholds, optional
    n_scales : int
        Scales of the E/I co-fluctuation (32, Dehghani et al. 2016).
    base_bin_ms : float
        Resolution of the population-rate series for the co-fluctuation (finest scale and lag resolution).
    max_lag_ms : float
        Lag search range of the E/I cross-correlation.
    mr_bin_ms : float
        Bin of the population activity for the MR estimator (4 ms: our default; m depends on the bin).
    mr_k_max_ms : float
        Largest lag of the MR fit (ms).
    mr_fit : str
        ``"exp"`` or ``"exp_offset"`` (:func:`branching_ratio_mr`).
    n_boot : int
        Bootstrap replicates of the MR confidence interval.
    fano_windows_ms : sequence of float
    min_isis : int
        Neurons with fewer ISIs are not classified.
    spectrum_bin_ms : float
        Bin of the population rate for the spectrum (Nyquist = 500/bin Hz).
    seed : int
        Seed of the bootstrap.
    label : str
        Free text kept in the result (e.g. "before", "after").

    Returns
    -------
    Diagnostics

    Notes
    -----
    Flags (each documented in :class:`FlagThresholds` and docs/diagnostics.md): ``silent``, ``imbalanced``,
    ``ei_decorrelated``, ``ei_current_imbalance``, ``near_critical``, ``supercritical``, ``mean_driven``,
    ``gamma_oscillation``, ``synchronous``. ``healthy`` is True when no flag other than the advisory ones
    (``thresholds.advisory``) is raised. ``notes`` carry what could not be judged (no samples, one
    population, fit not meaningful, ...).
    """
    th = thresholds or FlagThresholds()
    if theory is None:
        theory = Theory.from_meta(rec.meta)
    n = rec.n_neurons
    dt = rec.dt_ms
    notes: List[str] = []
    flags: List[str] = []
    exc = rec.exc_mask()
    n_exc = int(exc.sum())
    n_inh = n - n_exc

    rate = rec.rates_hz()
    mean_rate = float(rate.mean()) if n else float("nan")

    # ---- per-neuron balance from the sample means
    nm = rec.neuron_means
    have_samples = rec.n_samples > 0 and "iexc" in nm
    if have_samples:
        bi = balance_index(nm["iexc"], nm["iinh"])
        sb = signed_balance(nm["iexc"], nm["iinh"])
    else:
        bi = sb = np.full(n, np.nan)
        notes.append("no samples: balance index and current co-fluctuation not measured")
    cr = np.full(n, np.nan)
    cr_theory = theory.conductance_ratio if theory is not None else None
    if have_samples and cr_theory is not None and theory is not None and theory.vbal_mv is not None:
        cr, cr_theory = conductance_ratio(
            nm["ge"], nm["gi"], vbal_mv=theory.vbal_mv, ee_mv=theory.ee_mv, ei_mv=theory.ei_mv
        )

    # ---- irregularity over the complete span of spikes
    s0 = rec.spikes_complete_from_step
    t0_ms, t1_ms = s0 * dt, rec.t_stop_step * dt
    times, ids = sort_by_neuron(rec.spike_times_ms(), np.asarray(rec.spike_ids))
    cv = isi_cv(times, ids, n, min_isis=min_isis)
    cv2 = isi_cv2(times, ids, n, min_isis=min_isis)
    ff = fano_factor(times, ids, n, t0_ms, t1_ms, windows_ms=fano_windows_ms)
    rsc_windows = np.unique(np.array([10.0, 30.0, 100.0, th.rsc_window_ms]))
    rsc = mean_count_correlation(times, ids, n, t0_ms, t1_ms, windows_ms=rsc_windows)
    del times, ids
    regime = classify_regime(cv, cv_threshold=th.cv_threshold)
    n_cls = int(np.sum(regime != UNCLASSIFIED))
    fluct_frac = float(np.sum(regime == FLUCTUATION_DRIVEN) / n_cls) if n_cls else float("nan")
    mean_frac = float(np.sum(regime == MEAN_DRIVEN) / n_cls) if n_cls else float("nan")

    # ---- population series
    k_base = max(1, int(round(base_bin_ms / dt)))
    co_rates = None
    if n_exc > 0 and n_inh > 0:
        ce = population_counts(rec, k_base, exc).astype(np.float64) / (n_exc * k_base * dt * 1e-3)
        ci = population_counts(rec, k_base, ~exc).astype(np.float64) / (n_inh * k_base * dt * 1e-3)
        if ce.size >= 40:
            co_rates = ei_cofluctuation(
                ce, ci, k_base * dt, n_scales=n_scales, max_lag_ms=max_lag_ms, n_cells_e=n_exc, n_cells_i=n_inh
            )
        else:
            notes.append("recording too short for the E/I co-fluctuation of rates")
    else:
        notes.append("one population (no is_exc, or no E or no I neuron): E/I rate co-fluctuation not measured")
    co_cur = None
    if have_samples and rec.pop_series.shape[0] >= 40:
        e_cur = rec.series("iexc", "all").astype(np.float64)
        i_cur = -rec.series("iinh", "all").astype(np.float64)
        co_cur = ei_cofluctuation(
            e_cur, i_cur, rec.sample_dt_ms, n_scales=n_scales, max_lag_ms=max_lag_ms, signal="currents"
        )

    k_mr = max(1, int(round(mr_bin_ms / dt)))
    act = population_counts(rec, k_mr).astype(np.float64)
    branching = None
    if act.size >= 50 and act.sum() > 0:
        branching = branching_ratio_mr(
            act,
            k_mr * dt,
            k_max=max(2, min(int(round(mr_k_max_ms / (k_mr * dt))), act.size // 10)),
            fit=mr_fit,
            n_boot=n_boot,
            seed=seed,
        )
    else:
        notes.append("too little activity for the branching ratio")

    k_sp = max(1, int(round(spectrum_bin_ms / dt)))
    pop_rate = population_counts(rec, k_sp).astype(np.float64) / (max(n, 1) * k_sp * dt * 1e-3)
    spectrum = population_spectrum(pop_rate, k_sp * dt, n_cells=n) if pop_rate.size >= 64 else None

    chi = float("nan")
    if rec.traces.shape[0] >= 3 and rec.traces.shape[2] >= 2:
        chi = synchrony_chi(np.asarray(rec.traces[:, 2, :]))

    # ---- the rule set
    if not (mean_rate >= th.min_rate_hz):
        flags.append("silent")
    active = rate > 0
    bi_med = _nanmedian(bi[active]) if active.any() else _nanmedian(bi)
    if np.isfinite(bi_med):
        frac_hi = float(np.mean(bi[active & np.isfinite(bi)] > th.balance_index_neuron)) if active.any() else 0.0
        if bi_med > th.balance_index_max or frac_hi > th.balance_fraction_max:
            flags.append("imbalanced")
    if co_rates is not None:
        sel = (
            (co_rates.bin_ms >= th.rho_scale_min_ms - 1e-9)
            & (co_rates.fano_e >= th.fano_shared_min)
            & (co_rates.fano_i >= th.fano_shared_min)
        )
        if int(sel.sum()) >= th.rho_min_scales:
            rs = co_rates.rho_signal[sel]
            rs = np.where(np.isfinite(rs), rs, 0.0)
            if float(np.median(rs)) < th.rho_min:
                flags.append("ei_decorrelated")
        else:
            notes.append(
                "E and I rates fluctuate at the counting-noise level (asynchronous): co-fluctuation not judged"
            )
    if co_cur is not None:
        imb_med = co_cur.median_over("imbalance")
        if np.isfinite(imb_med) and imb_med > th.current_imbalance_max:
            flags.append("ei_current_imbalance")
    if branching is not None:
        if branching.fit_ok and branching.m_naive >= th.m_min_r1:
            if np.isfinite(branching.ci_low) and branching.ci_low >= th.m_supercritical:
                flags.append("supercritical")
            elif branching.m >= th.m_near_critical:
                flags.append("near_critical")
        elif branching.m_naive <= 0:
            regular = np.isfinite(mean_frac) and mean_frac > th.mean_driven_fraction_max
            cause = ("regular refractory-limited firing gives" if regular
                     else "a population oscillation with a period of a few bins gives; see the spectrum")
            notes.append(
                f"branching ratio not meaningful: r_1 = {branching.m_naive:.3g} <= 0 (successive bins "
                f"anticorrelated, as {cause})"
            )
        elif branching.m_naive < th.m_min_r1:
            notes.append(f"branching ratio not meaningful: r_1 = {branching.m_naive:.3g} (no memory)")
        else:
            notes.append(
                f"branching ratio not meaningful: r_k not an exponential decay (R^2 = {branching.r2:.2f}; "
                "oscillation?)"
            )
    if np.isfinite(mean_frac) and mean_frac > th.mean_driven_fraction_max:
        flags.append("mean_driven")
    if spectrum is not None and np.isfinite(spectrum.gamma_modulation):
        if spectrum.gamma_modulation > th.gamma_modulation_max:
            flags.append("gamma_oscillation")
    rsc_at = float(rsc[int(np.argmin(np.abs(rsc_windows - th.rsc_window_ms)))])
    if (np.isfinite(chi) and chi > th.chi_max) or (np.isfinite(rsc_at) and rsc_at > th.rsc_max):
        flags.append("synchronous")

    return Diagnostics(
        n_neurons=n, n_exc=n_exc, n_inh=n_inh, duration_ms=rec.duration_ms, dt_ms=dt,
        n_spikes=int(np.asarray(rec.spike_counts).sum()), rate_hz=rate, mean_rate_hz=mean_rate,
        balance_index=bi, signed_balance=sb, balance_index_median=bi_med,
        signed_balance_median=_nanmedian(sb[active]) if active.any() else _nanmedian(sb),
        conductance_ratio=cr, conductance_ratio_median=_nanmedian(cr), conductance_ratio_theory=cr_theory,
        cv=cv, cv2=cv2, fano_windows_ms=np.asarray(fano_windows_ms, dtype=np.float64), fano=ff, regime=regime,
        cv_median=_nanmedian(cv), fano_median=np.array([_nanmedian(row) for row in ff]),
        fluctuation_driven_fraction=fluct_frac, mean_driven_fraction=mean_frac,
        cofluct_rates=co_rates, cofluct_currents=co_cur, branching=branching, spectrum=spectrum,
        synchrony_chi=chi, count_corr_windows_ms=rsc_windows, count_corr=rsc, flags=flags, notes=notes,
        healthy=not [f for f in flags if f not in th.advisory], thresholds=th, label=label,
    )
