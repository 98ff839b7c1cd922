"""Figures of the balance diagnostics for reports, alone or as a before/after-calibration pair.

Every function takes one :class:`~calibrate.diagnostics.Diagnostics` (or :class:`~hw_models.recording.Recording`
for the raster), or a ``(before, after)`` pair that is overlaid or set side by side, and returns PNG bytes; with
``path`` it also writes them there. Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, so
no display and no pyplot global state are involved (safe in threads and under any backend setting).

- :func:`raster_png`: raster excerpt, excitatory and inhibitory neurons in two colours;
- :func:`isi_cv_histogram_png`: ISI CV histogram with the regime threshold;
- :func:`ei_scales_png`: E/I zero-lag correlation (raw and counting-noise corrected), peak lag and current
  imbalance against the time scale (Dehghani et al. 2016 style);
- :func:`branching_png`: MR regression slopes r_k and the fitted ``b m^k`` (Wilting and Priesemann 2018);
- :func:`spectrum_png`: population spectrum with the gamma band;
- :func:`mode_png`: the dominant mode's fit of the regression slopes (:mod:`calibrate.diagnostics.mode`);
- :func:`all_figures`: the first five as a dict name -> PNG bytes.

Each ``*_png`` function has a ``*_figure`` twin that returns the ``Figure`` itself, or None when there is nothing to
draw (no spike train long enough for a branching fit, no E/I populations and no current samples): a report shows no
empty panel, it leaves the figure out. :func:`save_figure` writes a figure as PNG and SVG (for papers and wikis).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hw_models.recording import Recording

from .mode import DampedMode
from .result import Diagnostics

__all__ = [
    "raster_png",
    "isi_cv_histogram_png",
    "ei_scales_png",
    "branching_png",
    "spectrum_png",
    "mode_png",
    "all_figures",
    "raster_figure",
    "isi_cv_figure",
    "ei_scales_figure",
    "branching_figure",
    "spectrum_figure",
    "mode_figure",
    "save_figure",
]

PathLike = Union[str, "os.PathLike[str]"]
DiagOrPair = Union[Diagnostics, Sequence[Diagnostics]]
RecOrPair = Union[Recording, Sequence[Recording]]

_COLOURS = ("#7f7f7f", "#1f77b4")  # before (grey), after (blue)
_E_COLOUR, _I_COLOUR = "#d62728", "#1f77b4"


def _as_list(x: object, kind: type) -> List:
    if isinstance(x, kind):
        return [x]
    items = list(x)  # type: ignore[call-overload]
    if not items or not all(isinstance(i, kind) for i in items):
        raise TypeError(f"expected a {kind.__name__} or a sequence of them")
    return items


def _labels(items: Sequence[object], labels: Optional[Sequence[str]]) -> List[str]:
    if labels is not None:
        return list(labels)
    if len(items) == 2:
        default = ["before", "after"]
    else:
        default = [""] * len(items)
    out = []
    for it, d in zip(items, default):
        lab = getattr(it, "label", "") or d
        out.append(lab)
    return out


def _png_bytes(fig: Figure, dpi: int) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _finish(fig: Optional[Figure], path: Optional[PathLike], dpi: int, empty: str = "nothing to draw") -> bytes:
    if fig is None:  # the *_png API always returns an image: a note instead of empty axes
        fig = Figure(figsize=(5.0, 1.2))
        fig.text(0.5, 0.5, empty, ha="center", va="center", fontsize=10)
    data = _png_bytes(fig, dpi)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def save_figure(fig: Figure, directory: PathLike, name: str, *, dpi: int = 100) -> bytes:
    """Write ``fig`` as ``directory/name.png`` (``dpi``) and ``directory/name.svg`` (vector, no timestamp, so the
    same figure gives the same file); returns the PNG bytes."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _png_bytes(fig, dpi)
    (d / f"{name}.png").write_bytes(data)
    with matplotlib.rc_context({"svg.hashsalt": name}):  # fixed element ids: the same figure, the same file
        fig.savefig(d / f"{name}.svg", format="svg", metadata={"Date": None})
    return data


def raster_figure(
    recs: RecOrPair,
    *,
    t_start_ms: Optional[float] = None,
    duration_ms: float = 500.0,
    max_neurons: int = 200,
    labels: Optional[Sequence[str]] = None,
) -> Figure:
    """The raster excerpt of :func:`raster_png` as a ``Figure``."""
    items = _as_list(recs, Recording)
    names = _labels(items, labels)
    fig = Figure(figsize=(5.0 * len(items), 3.6))
    for j, (rec, name) in enumerate(zip(items, names)):
        ax = fig.add_subplot(1, len(items), j + 1)
        t_lo_all = rec.spikes_complete_from_step * rec.dt_ms
        t_hi_all = rec.t_stop_step * rec.dt_ms
        t0 = (t_lo_all + t_hi_all - duration_ms) / 2 if t_start_ms is None else t_start_ms
        t0 = max(t0, t_lo_all)
        t1 = min(t0 + duration_ms, t_hi_all)
        exc = rec.exc_mask()
        n = rec.n_neurons
        k = min(max_neurons, n)
        e_idx, i_idx = np.flatnonzero(exc), np.flatnonzero(~exc)
        k_i = 0 if i_idx.size == 0 else max(1, int(round(k * i_idx.size / n)))
        k_e = k - k_i if e_idx.size else 0
        pick_e = e_idx[np.linspace(0, e_idx.size - 1, k_e).round().astype(int)] if k_e else e_idx[:0]
        pick_i = i_idx[np.linspace(0, i_idx.size - 1, k_i).round().astype(int)] if k_i else i_idx[:0]
        row = np.full(n, -1)
        row[pick_e] = np.arange(pick_e.size)
        row[pick_i] = pick_e.size + np.arange(pick_i.size)
        steps = np.asarray(rec.spike_steps)
        a = int(np.searchsorted(steps, int(np.floor(t0 / rec.dt_ms)), side="left"))
        b = int(np.searchsorted(steps, int(np.ceil(t1 / rec.dt_ms)), side="left"))
        t = steps[a:b] * rec.dt_ms
        ids = np.asarray(rec.spike_ids[a:b])
        y = row[ids]
        shown = y >= 0
        is_e = exc[ids] & shown
        is_i = ~exc[ids] & shown
        ax.scatter(t[is_e], y[is_e], s=1.5, c=_E_COLOUR, marker="|", linewidths=0.6, label="E")
        if is_i.any():
            ax.scatter(t[is_i], y[is_i], s=1.5, c=_I_COLOUR, marker="|", linewidths=0.6, label="I")
        ax.set_xlim(t0, t1)
        ax.set_ylim(-1, max(k, 1))
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("neuron (sample)")
        rate = rec.rates_hz().mean()
        ax.set_title(f"{name + ': ' if name else ''}raster, {rate:.1f} Hz mean", fontsize=10)
    fig.tight_layout()
    return fig


def raster_png(
    recs: RecOrPair,
    *,
    t_start_ms: Optional[float] = None,
    duration_ms: float = 500.0,
    max_neurons: int = 200,
    labels: Optional[Sequence[str]] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
) -> bytes:
    """Raster excerpt: ``duration_ms`` from ``t_start_ms`` (default: the middle of the complete span).

    At most ``max_neurons`` neurons are drawn, spread evenly over the chip with excitatory (red) and inhibitory
    (blue) neurons in proportion; a pair is drawn in two panels side by side.
    """
    fig = raster_figure(recs, t_start_ms=t_start_ms, duration_ms=duration_ms, max_neurons=max_neurons,
                        labels=labels)
    return _finish(fig, path, dpi)


def isi_cv_figure(diags: DiagOrPair, *, bins: int = 40, labels: Optional[Sequence[str]] = None) -> Optional[Figure]:
    """The ISI CV histogram of :func:`isi_cv_histogram_png`; None when no neuron has an ISI CV."""
    items = _as_list(diags, Diagnostics)
    names = _labels(items, labels)
    finite = [d.cv[np.isfinite(d.cv)] for d in items]
    if not any(c.size for c in finite):
        return None
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    hi = max([2.0] + [float(np.quantile(c, 0.99)) for c in finite if c.size])
    edges = np.linspace(0.0, hi, bins + 1)
    colours = _COLOURS if len(items) == 2 else (_COLOURS[1],) * len(items)
    for c, d, name, col in zip(finite, items, names, colours):
        lab = f"{name} (median {np.median(c):.2f})" if c.size else f"{name} (no data)"
        ax.hist(np.clip(c, 0, hi), bins=edges, histtype="stepfilled", alpha=0.45, color=col, label=lab.strip())
    ax.axvline(items[-1].thresholds.cv_threshold, ls="--", c="k", lw=0.8)
    ax.axvline(1.0, ls=":", c="k", lw=0.8)
    ax.set_xlabel("ISI CV (dimensionless; 1 = Poisson)")
    ax.set_ylabel("neurons")
    ax.set_title("ISI irregularity: mean-driven < threshold <= fluctuation-driven", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def isi_cv_histogram_png(
    diags: DiagOrPair,
    *,
    bins: int = 40,
    labels: Optional[Sequence[str]] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
) -> bytes:
    """Histogram of the per-neuron ISI CV; the dashed line is the regime threshold (fluctuation vs mean)."""
    return _finish(isi_cv_figure(diags, bins=bins, labels=labels), path, dpi, "no neuron fired often enough for an "
                   "ISI CV")


def ei_scales_figure(diags: DiagOrPair, *, labels: Optional[Sequence[str]] = None) -> Optional[Figure]:
    """The E/I co-fluctuation panels of :func:`ei_scales_png` that have data, side by side; None when none has.

    A chip with one population (no inhibitory neurons) has no E/I rate co-fluctuation and no peak lag: only the
    current panel is drawn (when current samples exist)."""
    items = _as_list(diags, Diagnostics)
    names = _labels(items, labels)
    has_rates = any(d.cofluct_rates is not None for d in items)
    has_currents = any(d.cofluct_currents is not None for d in items)
    panels = (["rates", "lag"] if has_rates else []) + (["currents"] if has_currents else [])
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    axes = {p: fig.add_subplot(1, len(panels), j + 1) for j, p in enumerate(panels)}
    ax_r, ax_l, ax_c = axes.get("rates"), axes.get("lag"), axes.get("currents")
    colours = _COLOURS if len(items) == 2 else (_COLOURS[1],) * len(items)
    for d, name, col in zip(items, names, colours):
        cr = d.cofluct_rates
        if cr is not None and ax_r is not None and ax_l is not None:
            ax_r.semilogx(cr.bin_ms, cr.rho, "-o", ms=2.5, c=col, label=f"{name} rho".strip())
            fmin = d.thresholds.fano_shared_min
            shared = (cr.fano_e >= fmin) & (cr.fano_i >= fmin)
            if shared.any():
                sig = np.where(shared, cr.rho_signal, np.nan)
                ax_r.semilogx(cr.bin_ms, sig, "--", c=col, label=f"{name} rho, noise-corrected".strip())
            ax_l.semilogx(cr.bin_ms, cr.peak_lag_ms, "-o", ms=2.5, c=col, label=name or None)
        cc = d.cofluct_currents
        if cc is not None and ax_c is not None:
            ax_c.semilogx(cc.bin_ms, cc.imbalance, "-o", ms=2.5, c=col, label=name or None)
    if ax_r is not None and ax_l is not None:
        ax_r.set_ylim(-1.05, 1.05)
        ax_r.axhline(items[-1].thresholds.rho_min, ls=":", c="k", lw=0.8)
        ax_r.set_xlabel("bin width (ms)")
        ax_r.set_ylabel("corr(E rate, I rate) at zero lag")
        ax_r.set_title("E/I rate co-fluctuation", fontsize=10)
        ax_l.axhline(0.0, c="k", lw=0.6)
        ax_l.set_xlabel("bin width (ms)")
        ax_l.set_ylabel("peak lag (ms), I after E > 0")
        ax_l.set_title("lag of the E/I cross-correlation peak", fontsize=10)
    if ax_c is not None:
        ax_c.axhline(items[-1].thresholds.current_imbalance_max, ls=":", c="k", lw=0.8)
        ax_c.set_xlabel("bin width (ms)")
        ax_c.set_ylabel("rms(E - I) / mean (dimensionless)")
        ax_c.set_title("distance of E/I currents from balance", fontsize=10)
    for ax in axes.values():
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ei_scales_png(
    diags: DiagOrPair,
    *,
    labels: Optional[Sequence[str]] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
) -> bytes:
    """E/I co-fluctuation against the time scale: correlation, peak lag, and current imbalance.

    Left: zero-lag correlation of the E and I population rates (solid: raw; dashed: counting-noise corrected,
    drawn only at scales where both population Fano factors reach ``thresholds.fano_shared_min``).
    Middle: lag of the cross-correlation peak (> 0: I follows E). Right: relative distance of the population
    excitatory and inhibitory input currents from the balance line (``imbalance``), when samples exist.
    Panels without data (one population: no rate correlation, no lag) are left out.
    """
    return _finish(ei_scales_figure(diags, labels=labels), path, dpi,
                   "no E/I co-fluctuation: one population and no current samples")


def branching_figure(diags: DiagOrPair, *, labels: Optional[Sequence[str]] = None) -> Optional[Figure]:
    """The MR regression plot of :func:`branching_png`; None when no state has a branching estimate."""
    items = _as_list(diags, Diagnostics)
    names = _labels(items, labels)
    if all(d.branching is None for d in items):
        return None
    fig = Figure(figsize=(5.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    colours = _COLOURS if len(items) == 2 else (_COLOURS[1],) * len(items)
    for d, name, col in zip(items, names, colours):
        b = d.branching
        if b is None:
            continue
        lag = b.k * b.bin_ms
        ax.plot(lag, b.r_k, "o", ms=2.5, c=col, alpha=0.7, label=f"{name} r_k".strip())
        if b.fit_ok:
            txt = f"m = {b.m:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}], tau = {b.tau_ms:.1f} ms"
            ax.plot(lag, b.r_k_fit, "-", c=col, lw=1.4, label=f"{name} fit: {txt}".strip())
        else:
            ax.plot([], [], " ", label=f"{name}: no meaningful fit (r_1 = {b.m_naive:.2f})".strip())
    ax.axhline(0.0, c="k", lw=0.6)
    ax.set_xlabel("lag k * bin (ms)")
    ax.set_ylabel("r_k = Cov(A_t, A_t+k) / Var(A_t)")
    ax.set_title("branching ratio, multistep regression", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def branching_png(
    diags: DiagOrPair,
    *,
    labels: Optional[Sequence[str]] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
) -> bytes:
    """MR estimator: regression slopes r_k against the lag (ms) and the fitted ``b m^k``."""
    return _finish(branching_figure(diags, labels=labels), path, dpi, "no branching estimate (too few spikes)")


def spectrum_figure(diags: DiagOrPair, *, labels: Optional[Sequence[str]] = None) -> Optional[Figure]:
    """The population spectrum of :func:`spectrum_png`; None when no state has one."""
    items = _as_list(diags, Diagnostics)
    names = _labels(items, labels)
    if all(d.spectrum is None for d in items):
        return None
    fig = Figure(figsize=(5.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    colours = _COLOURS if len(items) == 2 else (_COLOURS[1],) * len(items)
    band: Optional[Tuple[float, float]] = None
    for d, name, col in zip(items, names, colours):
        s = d.spectrum
        if s is None:
            continue
        band = s.gamma_band
        ok = s.freqs_hz > 0
        lab = f"{name} gamma {s.gamma_peak_hz:.0f} Hz, depth {s.gamma_modulation:.2f}".strip()
        ax.loglog(s.freqs_hz[ok], s.psd[ok], c=col, lw=1.0, label=lab)
        base = ok & np.isfinite(s.baseline)
        if base.any():
            ax.loglog(s.freqs_hz[base], s.baseline[base], ls="--", c=col, lw=0.9)
        if np.isfinite(s.gamma_peak_hz):
            j = int(np.argmin(np.abs(s.freqs_hz - s.gamma_peak_hz)))
            ax.plot([s.freqs_hz[j]], [s.psd[j]], "v", c=col, ms=5)
    if band is not None:
        ax.axvspan(band[0], band[1], color="#ffdd88", alpha=0.3, lw=0)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("PSD of population rate (Hz^2/Hz)")
    ax.set_title("population spectrum", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def spectrum_png(
    diags: DiagOrPair,
    *,
    labels: Optional[Sequence[str]] = None,
    path: Optional[PathLike] = None,
    dpi: int = 100,
) -> bytes:
    """Population-rate power spectrum (log-log) with the gamma band shaded, its aperiodic baseline dashed and
    the peak marked."""
    return _finish(spectrum_figure(diags, labels=labels), path, dpi, "no spectrum (recording too short)")


def mode_figure(modes: Sequence[Optional[DampedMode]], labels: Sequence[str]) -> Optional[Figure]:
    """The dominant-mode plot of :func:`mode_png`; None when no state has a mode."""
    if all(m is None for m in modes):
        return None
    fig = Figure(figsize=(5.4, 3.6))
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
    return fig


def mode_png(modes: Sequence[Optional[DampedMode]], labels: Sequence[str], *, dpi: int = 80) -> bytes:
    """The regression slopes r_k of the dominant-mode fit and the fitted damped oscillations, one colour per state
    (grey before, blue after, as the other plots of this module)."""
    return _finish(mode_figure(modes, labels), None, dpi, "no dominant mode measured")


def all_figures(
    after: Diagnostics,
    before: Optional[Diagnostics] = None,
    *,
    rec_after: Optional[Recording] = None,
    rec_before: Optional[Recording] = None,
    out_dir: Optional[PathLike] = None,
    dpi: int = 100,
) -> Dict[str, bytes]:
    """Every figure, for one chip or a before/after pair: ``{"raster", "isi_cv", "ei_scales", "branching",
    "spectrum"}`` -> PNG bytes (the raster only when recordings are given). With ``out_dir``, each is also
    written there as ``<name>.png``.
    """
    diags: DiagOrPair = [before, after] if before is not None else after
    recs: Optional[RecOrPair] = None
    if rec_after is not None:
        recs = [rec_before, rec_after] if rec_before is not None else rec_after
    names: List[str] = []
    if before is not None:
        names = [before.label or "before", after.label or "after"]
    lab = names or None
    out: Dict[str, bytes] = {}
    if recs is not None:
        out["raster"] = raster_png(recs, labels=lab, dpi=dpi)
    out["isi_cv"] = isi_cv_histogram_png(diags, labels=lab, dpi=dpi)
    out["ei_scales"] = ei_scales_png(diags, labels=lab, dpi=dpi)
    out["branching"] = branching_png(diags, labels=lab, dpi=dpi)
    out["spectrum"] = spectrum_png(diags, labels=lab, dpi=dpi)
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        for k, v in out.items():
            (d / f"{k}.png").write_bytes(v)
    return out
