"""Balance diagnostics of an emulated chip at given codes, for calibration reports and ``eical diagnose``.

An emulated chip (``NumpyDevice``, or ``LavaDevice`` with the same spikes) is set to the codes, run for a short
settle, then recorded through a :class:`hw_models.recording.Recorder` and diagnosed with
:func:`calibrate.diagnostics.diagnose`:

- :func:`record_chip`: the recording (E/I populations from the profile's ``recurrent.n_exc``, and the
  conductance-ratio theory ``model, Vbal, EE, EI`` in ``meta``);
- :func:`diagnose_codes`: the recording and its :class:`~calibrate.diagnostics.Diagnostics`;
- :func:`damped_mode` / :func:`recording_mode`: the dominant mode of the population activity, the MR regression
  slopes fitted with a damped oscillation ``b |lambda|^k cos(omega k + phi)`` (ours): the branching ratio of
  an oscillating network, where the MR exponential does not fit;
- :func:`headline`: the scalar figures of one diagnosis (the table rows, the JSON summary, the printed lines);
- :func:`diagnostics_section`: an HTML fragment for a report, before and after side by side: a table of every
  figure, the flags, the notes, and the five plots of :mod:`calibrate.diagnostics_plots` as data-URI PNGs;
- :func:`calibration_section` / :func:`saved_section`: what a calibration report adds (records the chip at its
  start codes and at its calibrated codes, writes ``diagnostics.json`` and the fragment to the output
  directory) and how ``eical report DIR`` finds the fragment again.

The recording uses input stream 2 (``DIAGNOSTICS_INPUT_STREAM``): stream 0 is what the calibration itself saw
and stream 1 is the ``true_figures`` replay, so the diagnosis judges the codes on inputs neither has seen.
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hw_models.table import json_default as _json_default

from hw_models.profile import Profile, load_profile
from hw_models.recording import Recorder, Recording

from .diagnostics import Diagnostics, FlagThresholds, diagnose

__all__ = [
    "DEFAULT_REPORT_DURATION_S",
    "DEFAULT_SETTLE_S",
    "DIAGNOSTICS_INPUT_STREAM",
    "FIGURE_NAMES",
    "SECTION_TITLE",
    "SECTION_FILE",
    "JSON_FILE",
    "profile_meta",
    "exc_mask_of",
    "mode_png",
    "record_chip",
    "diagnose_codes",
    "DampedMode",
    "damped_mode",
    "recording_mode",
    "headline",
    "diagnostics_section",
    "standalone_page",
    "calibration_section",
    "saved_section",
]

#: Model seconds recorded per chip state in a calibration report (512 neurons: ~3 s wall per state).
DEFAULT_REPORT_DURATION_S = 5.0
#: Model seconds run before recording, so conductances and potentials forget their initial state.
DEFAULT_SETTLE_S = 0.5
#: Input stream of diagnostic recordings (0: the calibration's own inputs, 1: the true-figures replay).
DIAGNOSTICS_INPUT_STREAM = 2
#: Keys of the figures dict of :func:`diagnostics_section`.
FIGURE_NAMES: Tuple[str, ...] = ("raster", "isi_cv", "ei_scales", "branching", "spectrum")
SECTION_TITLE = "Balance diagnostics (emulated chip, independent recording)"
#: Files :func:`calibration_section` writes into a calibration output directory.
SECTION_FILE = "diagnostics_section.html"
JSON_FILE = "diagnostics.json"

Pair = Tuple[Diagnostics, Recording]


# ====================================================================================================== recording
def profile_meta(profile: Profile) -> Dict[str, Any]:
    """``meta`` for a recording of ``profile``: the model and, for cond_lif, ``Vbal, EE, EI`` (mV), from which
    :meth:`calibrate.diagnostics.Theory.from_meta` builds the balanced conductance ratio."""
    neu = profile["neuron"]
    if profile.model == "cond_lif":
        return {"model": "cond_lif", "vbal_mv": float(neu["Vbal_mV"]), "ee_mv": float(neu["EE_mV"]),
                "ei_mv": float(neu["EI_mV"])}
    return {"model": profile.model, "vbal_mv": None, "ee_mv": None, "ei_mv": None}


def exc_mask_of(profile: Profile) -> Optional[np.ndarray]:
    """Excitatory chip neurons of a recurrent profile (the first ``recurrent.n_exc``); None for a feed-forward
    chip (its neurons are one population)."""
    rec = profile["recurrent"]
    if rec is None:
        return None
    return np.arange(profile.n_neurons) < int(rec["n_exc"])


class _Gate:
    """Forwards the engine's recorder calls once opened (the settle is run with it closed).

    The recorder has to be given to the device at construction (the Lava device forwards it into its process),
    so the settle cannot simply run without one.
    """

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.sample_every_steps = recorder.sample_every_steps
        self.open = False

    def on_spikes(self, step: int, neurons: np.ndarray) -> None:
        if self.open:
            self.recorder.on_spikes(step, neurons)

    def on_sample(self, step: int, *state: np.ndarray) -> None:
        if self.open:
            self.recorder.on_sample(step, *state)


def record_chip(
    profile: Any,
    seed: int,
    codes: Optional[Mapping[str, np.ndarray]] = None,
    duration_s: float = DEFAULT_REPORT_DURATION_S,
    *,
    input_stream: int = DIAGNOSTICS_INPUT_STREAM,
    temperature_k: Optional[float] = None,
    backend: str = "numpy",
    settle_s: float = DEFAULT_SETTLE_S,
    sample_every_steps: int = 10,
    path: Optional[Any] = None,
    max_memory_mb: float = 256.0,
    chip: Any = None,
    progress: Optional[Callable[[str], None]] = None,
    chunk_s: float = 1.0,
) -> Recording:
    """Record an emulated chip of ``profile`` with mismatch ``seed`` at ``codes``.

    Parameters
    ----------
    profile : Profile, name or path
    seed : int
        Mismatch seed (the chip; the same seed and codes give the same spikes).
    codes : mapping knob -> codes, optional
        Codes to set (validated by the device); knobs left out, or all when None, stay nominal (``code_ref``).
    duration_s : float
        Model seconds recorded, after ``settle_s`` unrecorded seconds.
    input_stream : int
        Realisation of the Poisson inputs (2 by default: not the calibration's 0 nor the replay's 1).
    temperature_k : float, optional
        Chip temperature (default: the profile's T0).
    backend : str
        ``"numpy"`` or ``"lava"`` (bit-identical spikes; Lava needs Python 3.10 and lava-nc and raises
        :class:`calibrate.backends.BackendUnavailable` otherwise).
    sample_every_steps, path, max_memory_mb
        Passed to :class:`~hw_models.recording.Recorder` (``path``: write the recording there, memory-mapped).
    chip : hw_models.chip.Chip, optional
        An already drawn chip of this profile and seed (saves drawing it again).
    progress : callable(str), optional
        Called with a short status text after each recorded chunk.
    chunk_s : float
        The recording runs in windows of this many model seconds (only for ``progress``: how time is cut into
        windows changes no value, hw_models.engine).

    Returns
    -------
    Recording
        With ``is_exc`` from ``recurrent.n_exc`` (None for a feed-forward chip) and ``meta`` holding the model,
        ``vbal_mv, ee_mv, ei_mv`` (cond_lif) and the run: profile, seed, chip uid, codes, input stream,
        temperature, settle, backend.
    """
    from .backends import open_device

    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    if not (math.isfinite(settle_s) and settle_s >= 0):
        raise ValueError(f"settle_s must be a non-negative number of seconds, got {settle_s!r}")
    prof = load_profile(profile)
    dt = prof.dt_ms
    settle_steps = int(round(settle_s * 1e3 / dt))
    recorder = Recorder(prof.n_neurons, dt, is_exc=exc_mask_of(prof), sample_every_steps=sample_every_steps,
                        path=path, max_memory_mb=max_memory_mb, start_step=settle_steps, meta=profile_meta(prof))
    gate = _Gate(recorder)
    kw: Dict[str, Any] = {"recorder": gate, "input_stream": int(input_stream)}
    if chip is not None:
        kw["chip"] = chip
    device = open_device(backend, prof, seed, temperature_k=temperature_k, **kw)
    try:
        if codes is not None:
            device.set_codes({k: np.asarray(v) for k, v in codes.items()})
        if settle_steps:
            if progress is not None:
                progress(f"settling {settle_s:g} s")
            device.run_true(settle_steps * dt)
        gate.open = True
        total = max(1, int(round(duration_s * 1e3 / dt)))
        chunk = max(1, int(round(chunk_s * 1e3 / dt)))
        done = 0
        while done < total:
            k = min(chunk, total - done)
            device.run_true(k * dt)
            done += k
            if progress is not None:
                progress(f"recording {done * dt / 1e3:.1f}/{total * dt / 1e3:.1f} s")
        rec = recorder.finish(end_step=settle_steps + total)
        rec.meta.update({
            "profile": prof.name, "seed": int(seed), "chip_uid": device.identity.uid,
            "codes": "nominal" if codes is None else "given", "input_stream": int(input_stream),
            "temperature_k": float(device.temperature_k), "settle_s": settle_steps * dt / 1e3,
            "backend": getattr(device, "backend", backend),
        })
    finally:
        device.close()
    return rec


def diagnose_codes(
    profile: Any,
    seed: int,
    codes: Optional[Mapping[str, np.ndarray]] = None,
    duration_s: float = DEFAULT_REPORT_DURATION_S,
    *,
    label: str = "",
    thresholds: Optional[FlagThresholds] = None,
    n_boot: int = 100,
    diagnose_seed: int = 0,
    **record_kw: Any,
) -> Pair:
    """Record the chip at ``codes`` (:func:`record_chip`, same keywords) and diagnose the recording.

    Returns
    -------
    (Diagnostics, Recording)
    """
    rec = record_chip(profile, seed, codes, duration_s, **record_kw)
    d = diagnose(rec, thresholds=thresholds, n_boot=n_boot, seed=diagnose_seed, label=label)
    return d, rec


# ====================================================================================================== dominant mode
@dataclass
class DampedMode:
    """Dominant mode of the population activity, fitted to the multistep-regression coefficients (ours).

    ``r_k = b |lambda|^k cos(omega k + phi)``, k = 1..k_max: the MR model ``r_k = b m^k`` of Wilting and
    Priesemann (2018) with a complex eigenvalue ``lambda = |lambda| e^(i omega)`` allowed. For any linear
    population dynamics observed through subsampling, ``r_k`` is the true autocorrelation times an unknown
    ``b`` (the same argument as for real m), so ``|lambda|`` is the per-bin modulus of the slowest mode: it is
    the MR branching ratio m when the mode is real (``omega = 0``) and approaches 1 at an oscillatory (Hopf)
    instability, which is how an inhibition-stabilised E/I network loses stability (gamma, PING). The MR
    estimator proper reports "not meaningful" there, because ``r_k`` oscillates.

    Attributes
    ----------
    modulus : float
        ``|lambda|`` per bin (NaN when the fit is not meaningful).
    tau_ms : float
        Decay time of the mode's envelope, ``-bin_ms / ln|lambda|`` (inf at or above 1).
    freq_hz : float
        ``omega / (2 pi bin)``; 0 for a real (non-oscillating) mode.
    b, phase : float
    r2 : float
        Variance of ``r_k`` explained by the fit.
    bin_ms : float
    k, r_k, r_k_fit : ndarray
    fit_ok : bool
        False when ``r2 < min_r2`` or ``r_k`` is all zero.
    """

    modulus: float
    tau_ms: float
    freq_hz: float
    b: float
    phase: float
    r2: float
    bin_ms: float
    k: np.ndarray
    r_k: np.ndarray
    r_k_fit: np.ndarray
    fit_ok: bool


def _mode_sse(
    r: np.ndarray, k: np.ndarray, lam: np.ndarray, om: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of ``r_k ~ lam^k (A cos(om k) + B sin(om k))`` for every (lam, om) pair: SSE, A, B."""
    env = lam[:, None] ** k[None, :]  # [L, K]
    c = np.cos(om[:, None] * k[None, :])  # [W, K]
    s = np.sin(om[:, None] * k[None, :])
    ec, es = env[:, None, :] * c[None], env[:, None, :] * s[None]  # [L, W, K]
    scc, sss, scs = (ec * ec).sum(-1), (es * es).sum(-1), (ec * es).sum(-1)
    rc, rs = (ec * r).sum(-1), (es * r).sum(-1)
    det = scc * sss - scs * scs
    ok = det > 1e-12 * np.maximum(scc * sss, 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        a2 = np.where(ok, (rc * sss - rs * scs) / det, rc / np.maximum(scc, 1e-300))
        b2 = np.where(ok, (rs * scc - rc * scs) / det, 0.0)
    fit = a2[..., None] * ec + b2[..., None] * es
    sse = ((fit - r) ** 2).sum(-1)
    return sse, a2, b2


def damped_mode(activity: np.ndarray, bin_ms: float, k_max: int, *, min_r2: float = 0.5) -> DampedMode:
    """Fit the dominant (possibly oscillating) mode to the MR coefficients of ``activity`` (:class:`DampedMode`).

    Exact least squares: for fixed ``(|lambda|, omega)`` the model is linear in ``(b cos phi, b sin phi)``, so a
    grid of moduli (decay times 0.1 to 1e4 bins, and up to e^0.05 above 1) is scanned, for the real mode
    (``omega = 0``, the MR exponential) and for oscillations from one period within ``k_max`` lags up to
    Nyquist, and the best cells are refined on finer local grids. The oscillating fit is kept only when it
    lowers the Bayesian information criterion (two more parameters): a slow cosine would otherwise trade off
    against the decay of a real mode.

    Parameters
    ----------
    activity : array [T] or [trials, T]
        Population spike counts per bin.
    bin_ms : float
    k_max : int
        Lags fitted (should cover a few periods and decay times).
    """
    from .diagnostics import mr_coefficients

    k_max = int(max(3, k_max))
    r = mr_coefficients(activity, k_max)
    k = np.arange(1, k_max + 1, dtype=np.float64)
    nan = float("nan")
    if not np.all(np.isfinite(r)) or not np.any(r != 0):
        return DampedMode(nan, nan, nan, nan, nan, nan, float(bin_ms), k.astype(int), r, np.full_like(r, nan), False)
    lam0 = np.concatenate((np.exp(-1.0 / np.geomspace(0.1, 1e4, 160)), np.exp(1.0 / np.geomspace(1e4, 20.0, 20))))
    w_min = 2 * np.pi / k_max  # an oscillation must complete a period within the lags fitted to be identified

    def best(om: np.ndarray) -> Tuple[float, float, float, float, float]:
        lam = lam0
        sse, A, B = _mode_sse(r, k, lam, om)
        i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
        for _ in range(2):  # local refinement around the best cell
            li = lam[max(i - 1, 0)], lam[min(i + 1, lam.size - 1)]
            lam = np.linspace(li[0], li[1], 41)
            if om.size > 1:
                om = np.linspace(max(om[max(j - 1, 0)], w_min), om[min(j + 1, om.size - 1)], 41)
            sse, A, B = _mode_sse(r, k, lam, om)
            i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
        return float(sse[i, j]), float(lam[i]), float(om[j]), float(A[i, j]), float(B[i, j])

    real = best(np.zeros(1))
    osc = best(np.linspace(w_min, np.pi, 121)) if w_min < np.pi else real

    def bic(sse: float, n_par: int) -> float:  # model choice: the oscillation must earn its two parameters
        return k_max * math.log(max(sse, 1e-300) / k_max) + n_par * math.log(k_max)

    _, l_best, w_best, a_best, b_best = osc if bic(osc[0], 4) < bic(real[0], 2) else real
    fit = l_best ** k * (a_best * np.cos(w_best * k) + b_best * np.sin(w_best * k))
    ss_tot = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - float(((fit - r) ** 2).sum()) / ss_tot if ss_tot > 0 else nan
    amp = math.hypot(a_best, b_best)
    ok = bool(np.isfinite(r2) and r2 >= min_r2 and amp > 0)
    tau = -bin_ms / math.log(l_best) if l_best < 1 else math.inf
    return DampedMode(
        modulus=l_best if ok else nan, tau_ms=tau if ok else nan,
        freq_hz=w_best / (2 * math.pi * bin_ms) * 1e3 if ok else nan, b=amp, phase=math.atan2(-b_best, a_best),
        r2=r2, bin_ms=float(bin_ms), k=k.astype(int), r_k=r, r_k_fit=fit, fit_ok=ok,
    )


def recording_mode(rec: Recording, *, bin_ms: float = 1.0, k_max_ms: float = 100.0) -> Optional[DampedMode]:
    """:func:`damped_mode` of the whole chip's spike counts in bins of ``bin_ms`` over lags up to ``k_max_ms``
    (defaults: 1 ms, 100 ms: a few gamma periods); None when the recording is too short or silent."""
    from .diagnostics import population_counts

    kb = max(1, int(round(bin_ms / rec.dt_ms)))
    a = population_counts(rec, kb).astype(np.float64)
    k_max = int(round(k_max_ms / (kb * rec.dt_ms)))
    if a.size < 10 * k_max or a.sum() == 0:
        return None
    return damped_mode(a, kb * rec.dt_ms, k_max)


def mode_png(modes: Sequence[Optional[DampedMode]], labels: Sequence[str], *, dpi: int = 80) -> bytes:
    """The regression slopes r_k of the dominant-mode fit and the fitted damped oscillations, one colour per state
    (grey before, blue after, as :mod:`calibrate.diagnostics_plots`)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = ("#7f7f7f", "#1f77b4") if len(modes) == 2 else ("#1f77b4",) * len(modes)
    for m, name, col in zip(modes, labels, colours):
        if m is None:
            continue
        lag = m.k * m.bin_ms
        ax.plot(lag, m.r_k, "o", ms=2.0, c=col, alpha=0.6, label=f"{name} r_k".strip())
        if m.fit_ok:
            osc = f", {m.freq_hz:.0f} Hz" if m.freq_hz > 0 else ""
            ax.plot(lag, m.r_k_fit, "-", c=col, lw=1.3,
                    label=f"{name}: |lambda| = {m.modulus:.3f}/{m.bin_ms:g} ms, decay {m.tau_ms:.1f} ms{osc}".strip())
        else:
            ax.plot([], [], " ", label=f"{name}: no meaningful fit".strip())
    ax.axhline(0.0, c="k", lw=0.6)
    ax.set_xlabel("lag (ms)")
    ax.set_ylabel("r_k = Cov(A_t, A_t+k) / Var(A_t)")
    ax.set_title("dominant mode: r_k = b |lambda|^k cos(omega k + phi)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ====================================================================================================== figures
def _f(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _at(arr: np.ndarray, grid: np.ndarray, want: float) -> Optional[float]:
    grid = np.asarray(grid, dtype=np.float64)
    if grid.size == 0:
        return None
    j = int(np.argmin(np.abs(grid - want)))
    return _f(np.asarray(arr)[j]) if abs(grid[j] - want) < 1e-6 else None


def headline(d: Diagnostics, rec: Optional[Recording] = None) -> Dict[str, Any]:
    """The scalar figures of one diagnosis, JSON-ready (None where not measured).

    Keys: rates (all, E, I), balance (median, p90, signed, conductance ratio and its theory), irregularity (CV,
    CV2, regime fractions, Fano at each window), synchrony (count correlation per window, chi), E/I rate
    co-fluctuation (raw and noise-corrected correlation, scales judged, peak lag), E/I current co-fluctuation
    (correlation, imbalance, deviation, ratio), branching (m, interval, tau, r_1, R^2, fit_ok, bin), spectrum
    (gamma peak, ratio, modulation depth), with the recording the dominant mode of the population activity
    (:func:`recording_mode`: ``mode_modulus``, ``mode_tau_ms``, ``mode_freq_hz``, ``mode_r2``), and the verdict
    (flags, healthy).
    """
    h: Dict[str, Any] = {
        "n_neurons": d.n_neurons, "n_exc": d.n_exc, "n_inh": d.n_inh, "duration_s": d.duration_ms / 1e3,
        "n_spikes": d.n_spikes, "rate_mean_hz": _f(d.mean_rate_hz), "rate_exc_hz": None, "rate_inh_hz": None,
    }
    if rec is not None and rec.is_exc is not None and 0 < d.n_exc < d.n_neurons:
        exc = rec.exc_mask()
        h["rate_exc_hz"] = _f(d.rate_hz[exc].mean())
        h["rate_inh_hz"] = _f(d.rate_hz[~exc].mean())
    bi = d.balance_index[np.isfinite(d.balance_index)]
    h.update({
        "balance_index_median": _f(d.balance_index_median),
        "balance_index_p90": _f(np.quantile(bi, 0.9)) if bi.size else None,
        "signed_balance_median": _f(d.signed_balance_median),
        "conductance_ratio_median": _f(d.conductance_ratio_median),
        "conductance_ratio_theory": _f(d.conductance_ratio_theory),
        "cv_median": _f(d.cv_median),
        "cv2_median": _f(np.nanmedian(d.cv2)) if np.isfinite(d.cv2).any() else None,
        "fluctuation_driven_fraction": _f(d.fluctuation_driven_fraction),
        "mean_driven_fraction": _f(d.mean_driven_fraction),
    })
    for w, v in zip(d.fano_windows_ms, d.fano_median):
        h[f"fano_{w:g}ms"] = _f(v)
    for w, v in zip(d.count_corr_windows_ms, d.count_corr):
        h[f"count_corr_{w:g}ms"] = _f(v)
    h["synchrony_chi"] = _f(d.synchrony_chi)
    cr = d.cofluct_rates
    th = d.thresholds
    if cr is not None:
        shared = (cr.bin_ms >= th.rho_scale_min_ms - 1e-9) & (cr.fano_e >= th.fano_shared_min) & (
            cr.fano_i >= th.fano_shared_min)
        rs = cr.rho_signal[shared]
        h.update({
            "ei_rate_rho_median": _f(cr.median_over("rho")),
            "ei_rate_rho_10ms": _f(cr.median_over("rho", 10.0)),
            "ei_rate_rho_signal_median": _f(np.median(np.where(np.isfinite(rs), rs, 0.0))) if rs.size else None,
            "ei_rate_shared_scales": int(shared.sum()),
            "ei_rate_peak_lag_ms": _f(cr.median_over("peak_lag_ms")),
            "ei_rate_fano_e_median": _f(cr.median_over("fano_e", 10.0)),
            "ei_rate_fano_i_median": _f(cr.median_over("fano_i", 10.0)),
        })
    cc = d.cofluct_currents
    if cc is not None:
        h.update({
            "ei_current_rho_median": _f(cc.median_over("rho")),
            "ei_current_imbalance_median": _f(cc.median_over("imbalance")),
            "ei_current_deviation_median": _f(cc.median_over("deviation")),
            "ei_current_ratio_median": _f(cc.median_over("ratio")),
            "ei_current_peak_lag_ms": _f(cc.median_over("peak_lag_ms")),
        })
    b = d.branching
    if b is not None:
        h.update({
            "branching_m": _f(b.m), "branching_ci_low": _f(b.ci_low), "branching_ci_high": _f(b.ci_high),
            "branching_tau_ms": _f(b.tau_ms), "branching_r1": _f(b.m_naive), "branching_r2": _f(b.r2),
            "branching_fit_ok": bool(b.fit_ok), "branching_bin_ms": _f(b.bin_ms),
        })
    s = d.spectrum
    if s is not None:
        h.update({
            "gamma_peak_hz": _f(s.gamma_peak_hz), "gamma_peak_ratio": _f(s.gamma_peak_ratio),
            "gamma_modulation": _f(s.gamma_modulation),
        })
    if rec is not None:
        mode = recording_mode(rec)
        if mode is not None:
            h.update({
                "mode_modulus": _f(mode.modulus), "mode_tau_ms": _f(mode.tau_ms), "mode_freq_hz": _f(mode.freq_hz),
                "mode_r2": _f(mode.r2), "mode_fit_ok": bool(mode.fit_ok), "mode_bin_ms": _f(mode.bin_ms),
            })
    h["flags"] = list(d.flags)
    h["healthy"] = bool(d.healthy)
    return h


# (key, label, format, the rule that raises a flag, from FlagThresholds) -- one table row each
def _rows(th: FlagThresholds, fano_w: Sequence[float], rsc_w: Sequence[float]) -> List[Tuple[str, str, str, str]]:
    rows = [
        ("n_neurons", "neurons (E / I)", "neurons", ""),
        ("duration_s", "recorded (model s)", ".1f", ""),
        ("n_spikes", "spikes", "d", ""),
        ("rate_mean_hz", "mean rate (Hz)", ".2f", f"silent below {th.min_rate_hz:g}"),
        ("rate_exc_hz", "excitatory rate (Hz)", ".2f", ""),
        ("rate_inh_hz", "inhibitory rate (Hz)", ".2f", ""),
        ("balance_index_median", "balance index |Iexc+Iinh|/Iexc, median", ".3f",
         f"imbalanced above {th.balance_index_max:g}"),
        ("balance_index_p90", "balance index, 90th percentile", ".3f", ""),
        ("signed_balance_median", "signed balance, median (&gt; 0: excitation wins)", "+.3f", ""),
        ("conductance_ratio_median", "&lt;ge&gt;/&lt;gi&gt;, median", ".3f", ""),
        ("conductance_ratio_theory", "&lt;ge&gt;/&lt;gi&gt; at balance (theory)", ".3f", ""),
        ("cv_median", "ISI CV, median", ".2f", f"neuron mean-driven below {th.cv_threshold:g}"),
        ("cv2_median", "ISI CV2, median", ".2f", ""),
        ("fluctuation_driven_fraction", "fluctuation-driven fraction", ".2f", ""),
        ("mean_driven_fraction", "mean-driven fraction", ".2f", f"mean_driven above {th.mean_driven_fraction_max:g}"),
    ]
    rows += [(f"fano_{w:g}ms", f"Fano factor, {w:g} ms windows, median", ".2f", "") for w in fano_w]
    rows += [(f"count_corr_{w:g}ms", f"mean pairwise count correlation, {w:g} ms", ".3f",
              f"synchronous above {th.rsc_max:g}" if abs(w - th.rsc_window_ms) < 1e-9 else "") for w in rsc_w]
    rows += [
        ("synchrony_chi", "synchrony chi of V (trace neurons)", ".3f", f"synchronous above {th.chi_max:g}"),
        ("ei_rate_rho_median", "E/I rate correlation, median over scales", ".3f", ""),
        ("ei_rate_rho_10ms", "E/I rate correlation, median over scales &gt;= 10 ms", ".3f", ""),
        ("ei_rate_fano_e_median", "E population Fano factor, median over scales &gt;= 10 ms", ".2f",
         f"shared fluctuations from {th.fano_shared_min:g}"),
        ("ei_rate_fano_i_median", "I population Fano factor, median over scales &gt;= 10 ms", ".2f", ""),
        ("ei_rate_shared_scales", "scales with shared E and I fluctuations", "d", f"judged from {th.rho_min_scales}"),
        ("ei_rate_rho_signal_median", "E/I rate correlation, counting noise removed", ".3f",
         f"ei_decorrelated below {th.rho_min:g}"),
        ("ei_rate_peak_lag_ms", "E/I rate cross-correlation peak lag (ms, I after E &gt; 0)", ".1f", ""),
        ("ei_current_rho_median", "E/I current correlation, median over scales", ".3f", ""),
        ("ei_current_imbalance_median", "E/I current distance from balance, median over scales", ".3f",
         f"ei_current_imbalance above {th.current_imbalance_max:g}"),
        ("ei_current_deviation_median", "E/I current deviation index sqrt(1 - rho)", ".3f", ""),
        ("ei_current_ratio_median", "E/I current ratio mean(E)/mean(I)", ".3f", ""),
        ("branching_m", "branching ratio m (MR estimator)", ".4f",
         f"near_critical from {th.m_near_critical:g}; supercritical when the interval is >= {th.m_supercritical:g}"),
        ("branching_ci", "m, 95 % interval", "ci", ""),
        ("branching_tau_ms", "autocorrelation time tau (ms)", ".1f", ""),
        ("branching_r1", "one-step regression r_1", ".3f", f"m trusted from r_1 >= {th.m_min_r1:g}"),
        ("branching_r2", "R^2 of the exponential fit", ".3f", ""),
        ("branching_bin_ms", "MR bin (ms)", ".1f", ""),
        ("mode_modulus", "dominant mode |lambda| per bin (damped-oscillation fit of r_k)", ".4f",
         "-> 1: the activity's memory diverges (ours, not a flag)"),
        ("mode_bin_ms", "dominant mode bin (ms)", ".1f", ""),
        ("mode_tau_ms", "dominant mode decay time (ms)", ".1f", ""),
        ("mode_freq_hz", "dominant mode frequency (Hz, 0: not oscillating)", ".1f", ""),
        ("mode_r2", "R^2 of the damped-oscillation fit", ".3f", ""),
        ("gamma_peak_hz", "gamma peak (Hz)", ".1f", ""),
        ("gamma_peak_ratio", "gamma PSD / aperiodic baseline", ".2f", ""),
        ("gamma_modulation", "gamma modulation depth", ".3f",
         f"gamma_oscillation (advisory) above {th.gamma_modulation_max:g}"),
    ]
    return rows


def _cell(h: Dict[str, Any], key: str, fmt: str) -> str:
    if fmt == "neurons":
        ne, ni = h.get("n_exc"), h.get("n_inh")
        return f"{h['n_neurons']} ({ne} / {ni})" if ni else f"{h['n_neurons']} (one population)"
    if fmt == "ci":
        lo, hi = h.get("branching_ci_low"), h.get("branching_ci_high")
        return "n/a" if lo is None or hi is None else f"[{lo:.4f}, {hi:.4f}]"
    v = h.get(key)
    if v is None:
        if key == "branching_m" and h.get("branching_fit_ok") is False:
            return "not meaningful"
        return "n/a"
    if fmt == "d":
        return str(int(v))
    return format(v, fmt)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_FIGURE_TITLES = {
    "raster": "Raster excerpt (500 ms; excitatory red, inhibitory blue)",
    "isi_cv": "ISI CV histogram (dashed: the regime threshold; dotted: Poisson)",
    "ei_scales": "E/I co-fluctuation against the time scale (after Dehghani et al. 2016)",
    "branching": "Branching ratio: multistep regression r_k = b m^k (Wilting and Priesemann 2018)",
    "spectrum": "Population spectrum, gamma band shaded, aperiodic baseline dashed",
    "mode": "Dominant mode of the population activity (1 ms bins): the branching ratio of an oscillating network",
}

_FLAG_MEANING = {
    "silent": "the chip barely fires; the other figures are not meaningful",
    "imbalanced": "excitation is not cancelled by inhibition in most neurons (balance index)",
    "ei_current_imbalance": "the population E and I input currents leave the balance line at every scale",
    "ei_decorrelated": "E and I populations fluctuate beyond counting noise but not together (seizure signature)",
    "near_critical": "the branching ratio approaches 1: reverberating, near-runaway activity",
    "supercritical": "the branching ratio is above 1: runaway activity",
    "mean_driven": "most neurons fire regularly (CV < threshold): the fluctuation-driven balanced state is lost",
    "synchronous": "neurons fire together (count correlation or chi above threshold)",
    "gamma_oscillation": "a gamma rhythm (PING) modulates the population rate (advisory)",
}


def diagnostics_section(
    before: Optional[Pair],
    after: Pair,
    *,
    dpi: int = 80,
    labels: Optional[Tuple[str, str]] = None,
    heading_level: int = 3,
) -> Tuple[str, Dict[str, bytes]]:
    """An HTML fragment with the diagnostics of one chip state, or of a before/after pair.

    Parameters
    ----------
    before : (Diagnostics, Recording) or None
        The chip before calibration (None: one column only).
    after : (Diagnostics, Recording)
    dpi : int
        Resolution of the embedded PNGs.
    labels : (str, str), optional
        Column names; default the diagnoses' ``label`` or "before" / "after" ("chip" for a single state).
    heading_level : int
        HTML heading level of the fragment's sub-headings.

    Returns
    -------
    html : str
        A ``<div class='eical-diagnostics'>`` with: the verdict, a table of every figure (one column per chip
        state, and the rule that flags it), the flags with their meaning, the notes, and the five figures
        (``FIGURE_NAMES``) as ``<img src='data:image/png;base64,...'>``, before and after on the same axes
        (the raster: side by side), then the dominant-mode plot.
    figures : dict of str to bytes
        The same PNGs, by name: ``FIGURE_NAMES`` always, and ``"mode"`` (:func:`mode_png`, the dominant mode
        of :func:`recording_mode`) when the recordings are long enough for it (10 x 100 ms).
    """
    from . import diagnostics_plots as dp

    d_a, r_a = after
    d_b, r_b = before if before is not None else (None, None)
    if labels is None:
        labels = (d_b.label or "before", d_a.label or "after") if d_b is not None else ("", d_a.label or "chip")
    lab_b, lab_a = labels
    if d_b is not None:
        diags: Any = [d_b, d_a]
        recs: Any = [r_b, r_a]
        names: Optional[List[str]] = [lab_b, lab_a]
    else:
        diags, recs, names = d_a, r_a, [lab_a]
    figs = {
        "raster": dp.raster_png(recs, labels=names, dpi=dpi),
        "isi_cv": dp.isi_cv_histogram_png(diags, labels=names, dpi=dpi),
        "ei_scales": dp.ei_scales_png(diags, labels=names, dpi=dpi),
        "branching": dp.branching_png(diags, labels=names, dpi=dpi),
        "spectrum": dp.spectrum_png(diags, labels=names, dpi=dpi),
    }
    modes = [recording_mode(r) for r in (recs if isinstance(recs, list) else [recs])]
    if any(m is not None for m in modes):
        figs["mode"] = mode_png(modes, names, dpi=dpi)
    states = ([(lab_b, d_b, r_b)] if d_b is not None else []) + [(lab_a, d_a, r_a)]
    heads = [headline(d, r) for _, d, r in states]
    th = d_a.thresholds
    hn = f"h{int(heading_level)}"
    esc = html.escape

    parts: List[str] = ["<div class='eical-diagnostics'>"]
    verdict = []
    for (lab, d, _), h in zip(states, heads):
        flags = ", ".join(d.flags) if d.flags else "no flag"
        state = "healthy" if d.healthy else "FLAGGED"
        verdict.append(f"<b>{esc(lab)}</b>: {state} ({esc(flags)})")
    stream = r_a.meta.get("input_stream")
    where = (f" after a {r_a.meta.get('settle_s', 0):g} s settle, on input stream {stream} (inputs a calibration "
             "does not see)" if stream is not None else "")
    parts.append("<p>" + "; ".join(verdict) + f". Recorded {heads[-1]['duration_s']:.1f} s of model time per "
                 f"state{where}; flag rules and thresholds: docs/diagnostics.md.</p>")
    parts.append("<table class='eical-diag-figures'><tr><th>figure</th>"
                 + "".join(f"<th>{esc(lab)}</th>" for lab, _, _ in states) + "<th>rule</th></tr>")
    for key, label, fmt, rule in _rows(th, d_a.fano_windows_ms, d_a.count_corr_windows_ms):
        cells = [_cell(h, key, fmt) for h in heads]
        two_pops = any(h.get("ei_rate_rho_median") is not None for h in heads)
        if all(c == "n/a" for c in cells) and not (key.startswith("ei_rate") and two_pops):
            continue  # not measured on this chip (e.g. no E/I populations); kept where "n/a" says something
        parts.append(f"<tr><td>{label}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells)
                     + f"<td>{esc(rule)}</td></tr>")
    parts.append("<tr><td><b>flags</b></td>" + "".join(
        f"<td><b>{esc(', '.join(h['flags']) or 'none')}</b></td>" for h in heads) + "<td></td></tr>")
    healthy_cells = "".join(f"<td><b>{'yes' if h['healthy'] else 'no'}</b></td>" for h in heads)
    parts.append(f"<tr><td><b>healthy</b></td>{healthy_cells}<td>no flag but advisory ones</td></tr>")
    parts.append("</table>")
    raised = sorted({f for _, d, _ in states for f in d.flags})
    if raised:
        parts.append(f"<{hn}>Flags</{hn}><ul>")
        for f in raised:
            who = ", ".join(lab for lab, d, _ in states if f in d.flags)
            adv = " (advisory)" if f in th.advisory else ""
            parts.append(f"<li><code>{esc(f)}</code>{adv} [{esc(who)}]: {esc(_FLAG_MEANING.get(f, ''))}</li>")
        parts.append("</ul>")
    if any(d.notes for _, d, _ in states):
        parts.append(f"<{hn}>Notes</{hn}><ul>")
        for lab, d, _ in states:
            for note in d.notes:
                parts.append(f"<li>[{esc(lab)}] {esc(note)}</li>")
        parts.append("</ul>")
    for name in FIGURE_NAMES + ("mode",):
        if name not in figs:
            continue
        title = _FIGURE_TITLES[name]
        parts.append(f"<{hn}>{esc(title)}</{hn}><img class='eical-diag-{name}' src='{_png_uri(figs[name])}' "
                     f"alt='{esc(name)}'>")
    parts.append("</div>")
    return "\n".join(parts), figs


_PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "h2{border-bottom:1px solid #ddd}img{max-width:100%}"
)


def standalone_page(title: str, intro_html: str, section_html: str) -> str:
    """A complete HTML page around a :func:`diagnostics_section` fragment (``intro_html`` is inserted as is)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{intro_html}\n"
            f"{section_html}\n</body></html>\n")


# ====================================================================================================== reports
def calibration_section(
    out_dir: Any,
    device: Any,
    before_codes: Optional[Mapping[str, np.ndarray]],
    after_codes: Mapping[str, np.ndarray],
    *,
    duration_s: float = DEFAULT_REPORT_DURATION_S,
    settle_s: float = DEFAULT_SETTLE_S,
    input_stream: int = DIAGNOSTICS_INPUT_STREAM,
    n_boot: int = 100,
    dpi: int = 80,
) -> Optional[Tuple[str, str]]:
    """The diagnostics section of a calibration report: the chip at its start codes and at its calibrated codes.

    Records both states of the emulated ``device``'s chip (same profile, seed and temperature; the numpy engine,
    which gives the same spikes as Lava), diagnoses them, and writes into ``out_dir``:

    - ``diagnostics.json``: ``{"before": ..., "after": ...}``, each ``Diagnostics.to_dict()`` plus
      ``"headline"`` (:func:`headline`), and ``"run"`` (durations, input stream, costs);
    - ``diagnostics_section.html``: the fragment of :func:`diagnostics_section`, which :func:`saved_section`
      reads back so that ``eical report DIR`` re-renders it.

    Parameters
    ----------
    out_dir : path
    device : an emulated device (``NumpyDevice`` or ``LavaDevice``); anything without a drawn ``chip`` (a board)
        gives None (nothing recorded, nothing written).
    before_codes : mapping or None
        The codes the calibration started from (None: nominal).
    after_codes : mapping
        The calibrated codes.

    Returns
    -------
    (title, html) for ``calibrate.report.write_report(out_dir, extra_sections=[...])``, or None.
    """
    chip = getattr(device, "chip", None)
    prof = getattr(device, "profile", None)
    if chip is None or prof is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    temp = getattr(device, "temperature_k", None)
    kw = dict(input_stream=input_stream, temperature_k=temp, settle_s=settle_s, chip=chip, n_boot=n_boot)
    t0 = time.perf_counter()
    before = diagnose_codes(prof, chip.seed, before_codes, duration_s, label="before", **kw)
    t1 = time.perf_counter()
    after = diagnose_codes(prof, chip.seed, after_codes, duration_s, label="after", **kw)
    t2 = time.perf_counter()
    body, _ = diagnostics_section(before, after, dpi=dpi)
    t3 = time.perf_counter()
    doc = {
        "run": {"duration_s": duration_s, "settle_s": settle_s, "input_stream": input_stream,
                "temperature_k": temp, "profile": prof.name, "seed": chip.seed,
                "wall_s": {"before": t1 - t0, "after": t2 - t1, "figures": t3 - t2}},
        "before": dict(before[0].to_dict(), headline=headline(*before)),
        "after": dict(after[0].to_dict(), headline=headline(*after)),
    }
    (out / JSON_FILE).write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    (out / SECTION_FILE).write_text(body + "\n")
    return SECTION_TITLE, body


def saved_section(out_dir: Any) -> Optional[Tuple[str, str]]:
    """The section :func:`calibration_section` wrote into ``out_dir`` (None when there is none), for
    ``write_report(out_dir, extra_sections=[...])`` when a report is re-rendered from its files."""
    p = Path(out_dir) / SECTION_FILE
    if not p.is_file():
        return None
    return SECTION_TITLE, p.read_text()
