"""HTML of the diagnostics: the figure table, flags, notes and plots of one chip state or a before/after pair.

Rendering only: everything shown comes from :class:`~calibrate.diagnostics.result.Diagnostics` (the dominant mode
included, computed once per recording by :func:`~calibrate.diagnostics.diagnose`) and its
:class:`~calibrate.diagnostics.headlines.Headline`.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import plots
from .flags import FLAG_MEANING, FlagThresholds
from .headlines import headline
from .recording import Pair

__all__ = ["FIGURE_NAMES", "PAGE_STYLE", "diagnostics_section", "standalone_page"]

#: Keys of the figures dict of :func:`diagnostics_section` (and ``"mode"`` when measured).
FIGURE_NAMES: Tuple[str, ...] = ("raster", "isi_cv", "ei_scales", "branching", "spectrum")


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


def diagnostics_section(
    before: Optional[Pair],
    after: Pair,
    *,
    dpi: int = 80,
    labels: Optional[Tuple[str, str]] = None,
    heading_level: int = 3,
    figure_dir: Optional[Any] = None,
    figure_href: str = "",
) -> Tuple[str, Dict[str, bytes]]:
    """An HTML fragment with the diagnostics of one chip state, or of a before/after pair.

    Parameters
    ----------
    before : (Diagnostics, Recording) or None
        The chip before calibration (None: one column only).
    after : (Diagnostics, Recording)
    dpi : int
        Resolution of the PNGs.
    labels : (str, str), optional
        Column names; default the diagnoses' ``label`` or "before" / "after" ("chip" for a single state).
    heading_level : int
        HTML heading level of the fragment's sub-headings.
    figure_dir : path, optional
        Write every figure there as ``diag_<name>.png`` and ``diag_<name>.svg``, and have the fragment reference
        them as ``<figure_href>diag_<name>.png`` (a page beside the folder: ``figure_href="report/"``). Without it
        the PNGs are embedded as data URIs (a self-contained fragment).
    figure_href : str
        The prefix of the figures' addresses in the fragment (with ``figure_dir``).

    Returns
    -------
    html : str
        A ``<div class='eical-diagnostics'>`` with: the verdict, a table of every figure (one column per chip
        state, and the rule that flags it), the flags with their meaning, the notes, and the figures
        (``FIGURE_NAMES`` that have data: a chip with one population has no E/I rate co-fluctuation, and its
        co-fluctuation figure shows the current panel alone or is left out), before and after on the same axes
        (the raster: side by side), then the dominant-mode plot.
    figures : dict of str to bytes
        The PNGs drawn, by name: among ``FIGURE_NAMES``, and ``"mode"`` (the dominant mode measured by
        :func:`~calibrate.diagnostics.diagnose`) when the recordings are long enough for it.
    """
    d_a, r_a = after
    d_b, r_b = before if before is not None else (None, None)
    if labels is None:
        labels = (d_b.label or "before", d_a.label or "after") if d_b is not None else ("", d_a.label or "chip")
    states: List[State] = ([(labels[0], d_b, r_b)] if d_b is not None else []) + [(labels[1], d_a, r_a)]
    drawn = _figures(states)
    figs: Dict[str, bytes] = {}
    srcs: Dict[str, str] = {}
    for name, fig in drawn.items():
        if figure_dir is not None:
            figs[name] = plots.save_figure(fig, figure_dir, f"diag_{name}", dpi=dpi)
            srcs[name] = f"{figure_href}diag_{name}.png"
        else:
            figs[name] = plots._png_bytes(fig, dpi)
            srcs[name] = _png_uri(figs[name])
    heads = [headline(d, r).to_dict() for _, d, r in states]
    hn = f"h{int(heading_level)}"
    parts = ["<div class='eical-diagnostics'>", _verdict(states, heads), _table(states, heads)]
    parts += _flags_and_notes(states, hn)
    parts.append("<div class='eical-figures'>")
    for name in FIGURE_NAMES + ("mode",):
        if name in figs:
            title = html.escape(_FIGURE_TITLES[name])
            links = ""
            if figure_dir is not None:
                base = html.escape(f"{figure_href}diag_{name}")
                links = f" <span class='eical-files'>(<a href='{base}.png'>PNG</a>, <a href='{base}.svg'>SVG</a>)</span>"
            wide = " class='wide'" if drawn[name].get_size_inches()[0] > 7 else ""
            parts.append(f"<figure{wide}><img class='eical-diag-{name}' src='{html.escape(srcs[name])}' "
                         f"alt='{title}'><figcaption>{title}{links}</figcaption></figure>")
    parts.append("</div>")
    parts.append("</div>")
    return "\n".join(parts), figs


State = Tuple[str, Any, Any]  # (label, Diagnostics, Recording)


def _figures(states: List[State]) -> Dict[str, Any]:
    """The figures with data, by name: one chip state alone, or two overlaid (the raster: side by side)."""
    names = [lab for lab, _, _ in states]
    diags: Any = [d for _, d, _ in states] if len(states) > 1 else states[0][1]
    recs: Any = [r for _, _, r in states] if len(states) > 1 else states[0][2]
    figs = {
        "raster": plots.raster_figure(recs, labels=names),
        "isi_cv": plots.isi_cv_figure(diags, labels=names),
        "ei_scales": plots.ei_scales_figure(diags, labels=names),
        "branching": plots.branching_figure(diags, labels=names),
        "spectrum": plots.spectrum_figure(diags, labels=names),
        "mode": plots.mode_figure([d.mode for _, d, _ in states], names),
    }
    return {k: v for k, v in figs.items() if v is not None}


def _verdict(states: List[State], heads: List[Dict[str, Any]]) -> str:
    esc = html.escape
    verdict = []
    for lab, d, _ in states:
        flags = ", ".join(d.flags) if d.flags else "no flag"
        verdict.append(f"<b>{esc(lab)}</b>: {'healthy' if d.healthy else 'FLAGGED'} ({esc(flags)})")
    meta = states[-1][2].meta
    stream = meta.get("input_stream")
    where = (f" after a {meta.get('settle_s', 0):g} s settle, on input stream {stream} (inputs a calibration "
             "does not see)" if stream is not None else "")
    return ("<p>" + "; ".join(verdict) + f". Recorded {heads[-1]['duration_s']:.1f} s of model time per "
            f"state{where}; flag rules and thresholds: docs/diagnostics.md.</p>")


def _table(states: List[State], heads: List[Dict[str, Any]]) -> str:
    """Every figure, one column per chip state, and the rule that flags it."""
    esc = html.escape
    d_a = states[-1][1]
    parts = ["<div class='eical-scroll'><table class='eical-diag-figures'><tr><th>figure</th>"
             + "".join(f"<th>{esc(lab)}</th>" for lab, _, _ in states) + "<th>rule</th></tr>"]
    two_pops = any(h.get("ei_rate_rho_median") is not None for h in heads)
    for key, label, fmt, rule in _rows(d_a.thresholds, d_a.fano_windows_ms, d_a.count_corr_windows_ms):
        cells = [_cell(h, key, fmt) for h in heads]
        if all(c == "n/a" for c in cells) and not (key.startswith("ei_rate") and two_pops):
            continue  # not measured on this chip (e.g. no E/I populations); kept where "n/a" says something
        parts.append(f"<tr><td>{label}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells)
                     + f"<td>{esc(rule)}</td></tr>")
    parts.append("<tr><td><b>flags</b></td>" + "".join(
        f"<td><b>{esc(', '.join(h['flags']) or 'none')}</b></td>" for h in heads) + "<td></td></tr>")
    healthy_cells = "".join(f"<td><b>{'yes' if h['healthy'] else 'no'}</b></td>" for h in heads)
    parts.append(f"<tr><td><b>healthy</b></td>{healthy_cells}<td>no flag but advisory ones</td></tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def _flags_and_notes(states: List[State], hn: str) -> List[str]:
    esc = html.escape
    th = states[-1][1].thresholds
    parts: List[str] = []
    raised = sorted({f for _, d, _ in states for f in d.flags})
    if raised:
        parts.append(f"<{hn}>Flags</{hn}><ul>")
        for f in raised:
            who = ", ".join(lab for lab, d, _ in states if f in d.flags)
            adv = " (advisory)" if f in th.advisory else ""
            parts.append(f"<li><code>{esc(f)}</code>{adv} [{esc(who)}]: {esc(FLAG_MEANING.get(f, ''))}</li>")
        parts.append("</ul>")
    if any(d.notes for _, d, _ in states):
        parts.append(f"<{hn}>Notes</{hn}><ul>")
        for lab, d, _ in states:
            for note in d.notes:
                parts.append(f"<li>[{esc(lab)}] {esc(note)}</li>")
        parts.append("</ul>")
    return parts


#: The style of every eical page (the calibration report, the diagnose page): readable from a phone-sized window
#: up; figures shrink to the column (max-width 100 %), wide tables scroll inside their box, long words wrap, and
#: figures flow in a grid (one column in a narrow window, two from about 1100 px; wide figures span the row).
PAGE_STYLE = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1300px;margin:0 auto;padding:1em;"
    "color:#222;line-height:1.4}"
    "h1{font-size:1.5em;margin:0.2em 0}h2{border-bottom:1px solid #ddd;margin-top:1.5em}"
    "p,li,figcaption,h1,h2,h3{overflow-wrap:anywhere}td{overflow-wrap:break-word}"
    ".eical-scroll{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
    "vertical-align:top}"
    "img{max-width:100%;height:auto;display:block}"
    "figure{margin:0;min-width:0}figcaption{font-size:0.9em;color:#444;margin-top:0.3em}"
    ".eical-figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr));gap:1.2em;"
    "align-items:start}"
    ".eical-figures .wide{grid-column:1/-1}"
    "pre{overflow-x:auto;max-width:100%;background:#f7f7f7;padding:0.5em}"
)


def standalone_page(title: str, intro_html: str, section_html: str) -> str:
    """A complete HTML page around a :func:`diagnostics_section` fragment (``intro_html`` is inserted as is)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{intro_html}\n"
            f"{section_html}\n</body></html>\n")
