"""``report.html``: one page per calibration, rendered from the files in its output directory.

Everything is read from ``summary.json``, ``history.npz`` (the run's own measured figures and the controller's
estimates behind them: ``History.figures``, never re-derived from codes) and ``table.json``, never from live state,
so ``eical report DIR`` re-renders a report at any time, also of an interrupted run.

The page, top to bottom:

1. the **verdict banner**: green when the spec was met, red naming every failed criterion, amber when the run is
   incomplete (interrupted, or its summary says so), grey "no verdict recorded" for a summary written before
   verdicts existed (``summary["verdict"]``: ``{"met", "complete", "criteria": [{"name", "value", "limit", "met",
   "source", "uncertainty"}]}``);
2. what was calibrated and how the run went; the measured and the true figures;
3. the figures: every one with one quantity per axis and its unit, none empty (a figure without data is left out
   and a sentence says why). Each is written as ``report/<name>.png`` and ``report/<name>.svg`` beside
   ``report.html`` (for papers and wikis), and the page shows the PNG files;
4. the diagnostics section (``extra_sections``), the controller's settings.

The page is readable from a 700 px window up (``diagnostics.render.PAGE_STYLE``: images shrink to the column, wide
tables scroll in their box, figures flow in a grid). Figures are drawn on ``matplotlib.figure.Figure`` with the Agg
canvas: no display, no pyplot state.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .diagnostics.plots import save_figure
from .diagnostics.render import PAGE_STYLE

__all__ = ["write_report", "history_figures", "report_figures", "verdict_banner", "verdict_state", "verdict_line",
           "FIGURE_DIR",
           "REPORT_FILE"]

REPORT_FILE = "report.html"
#: The folder beside ``report.html`` with every figure of the report, as PNG and SVG.
FIGURE_DIR = "report"

# Readable names of the verdict's criteria (calibrate.criteria); others are shown as they are named.
CRITERION_LABELS = {
    "rate_cv": "rate CV across neurons (counting noise removed)",
    "balance_p95": "balance index, 95th percentile",
    "rate_err": "|mean rate / target - 1|",
}
SOURCE_LABELS = {"true": "true (independent replay of the emulated chip)", "measured": "measured (on the chip)"}

_BEFORE, _AFTER = "#7f7f7f", "#1f77b4"  # the diagnostics' colours: before grey, after blue


def history_figures(hist) -> dict:
    """Per-neuron measured figures before (first loop iteration) and after (last loop or verify windows), as the run
    recorded them (``History.figures``): rates, and the balance index ``|proxy - offset| / (gain_e a)`` with the
    controller's own estimates of the offsets and of ``a`` (per knob group for shared knobs). Empty for a run
    without loop windows; balance None for a controller without a balance reference."""
    f = hist.figures
    if "before_rates_hz" not in f or "after_rates_hz" not in f:
        return {}
    return {side: {"rates": f[f"{side}_rates_hz"], "balance": f.get(f"{side}_balance")}
            for side in ("before", "after")}


# -- the verdict ------------------------------------------------------------------------------------------------------


def verdict_state(summary: Mapping[str, Any]) -> str:
    """``"met"``, ``"failed"``, ``"incomplete"`` or ``"none"`` (no verdict recorded) for a ``summary.json``."""
    v = summary.get("verdict")
    if not isinstance(v, Mapping):
        return "incomplete" if summary.get("complete") is False else "none"
    if v.get("complete") is False or summary.get("complete") is False:
        return "incomplete"
    return "met" if v.get("met") else "failed"


def _num(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(float(x), spec)


def _criterion_phrase(c: Mapping[str, Any]) -> str:
    """``rate_cv 0.147 > 0.05`` for a failed criterion (``not measured`` when it has no value)."""
    name = str(c.get("name", "?"))
    if c.get("value") is None:
        return f"{name} not measured (limit {_num(c.get('limit'), 'g')})"
    return f"{name} {_num(c.get('value'))} > {_num(c.get('limit'), 'g')}"


def verdict_line(verdict: Optional[Mapping[str, Any]]) -> str:
    """One line of plain text for a verdict (``summary["verdict"]``, or a table's): ``met (3 criteria)``, ``NOT met:
    rate_cv 0.147 > 0.05``, ``incomplete ...`` or ``no verdict recorded``."""
    if not isinstance(verdict, Mapping):
        return "no verdict recorded"
    criteria = [c for c in verdict.get("criteria", []) if isinstance(c, Mapping)]
    failed = [c for c in criteria if not c.get("met")]
    if verdict.get("complete") is False:
        return "incomplete run: no pass" + (f" (failed so far: {'; '.join(map(_criterion_phrase, failed))})"
                                            if failed else "")
    if verdict.get("met"):
        return f"met ({len(criteria)} criteria within their limits)"
    return "NOT met: " + ("; ".join(map(_criterion_phrase, failed)) if failed else "(no criterion named)")


def verdict_banner(summary: Mapping[str, Any], title: str) -> str:
    """The banner at the top of the report: ``<header class='verdict STATE'>`` with the page title, one sentence
    of verdict, and the criteria table."""
    esc = html.escape
    state = verdict_state(summary)
    v = summary.get("verdict") if isinstance(summary.get("verdict"), Mapping) else {}
    criteria = [c for c in v.get("criteria", []) if isinstance(c, Mapping)]
    failed = [c for c in criteria if not c.get("met")]
    stopped = summary.get("stopped")
    if state == "met":
        headline = f"Spec met: all {len(criteria)} criteria within their limits."
    elif state == "failed":
        headline = ("Spec NOT met: " + "; ".join(_criterion_phrase(c) for c in failed) + "."
                    if failed else "Spec NOT met.")
    elif state == "incomplete":
        why = f" (stopped: {stopped})" if stopped else ""
        headline = (f"Incomplete run{why}: the calibration did not finish, so there is no pass. The figures below "
                    "are those of the part that ran.")
        if failed:
            headline += " Failed so far: " + "; ".join(_criterion_phrase(c) for c in failed) + "."
    else:
        headline = ("No verdict recorded: this summary was written without one (an eical from before verdicts). "
                    "Judge the figures below, or re-run the calibration.")
    parts = [f"<header class='verdict {state}' id='verdict' role='status'>", f"<h1>{esc(title)}</h1>",
             f"<p class='verdict-line'><b>{esc(headline)}</b></p>"]
    if criteria:
        parts.append("<div class='eical-scroll'><table class='verdict-criteria'><tr><th>criterion</th><th>value</th>"
                     "<th>limit</th><th>result</th><th>figure</th></tr>")
        for c in criteria:
            name = str(c.get("name", "?"))
            unc = c.get("uncertainty")
            value = _num(c.get("value"), ".4g")
            if value != "n/a" and unc is not None and _num(unc) != "n/a":
                value += f" &plusmn; {esc(_num(unc, '.2g'))}"
            src = str(c.get("source", ""))
            parts.append(
                f"<tr><td><code>{esc(name)}</code> {esc(CRITERION_LABELS.get(name, ''))}</td><td class='num'>{value}</td>"
                f"<td class='num'>&le; {esc(_num(c.get('limit'), 'g'))}</td>"
                f"<td class='num {'ok' if c.get('met') else 'bad'}'>{'met' if c.get('met') else 'NOT met'}</td>"
                f"<td>{esc(SOURCE_LABELS.get(src, src))}</td></tr>")
        parts.append("</table></div>")
    parts.append("</header>")
    return "\n".join(parts)


_BANNER_STYLE = (
    ".verdict{border:2px solid;border-radius:6px;padding:0.6em 1em;margin:0 0 1em}"
    ".verdict table{background:rgba(255,255,255,0.6)}"
    ".verdict.met{background:#e6f4ea;border-color:#1e7e34;color:#0b3d18}"
    ".verdict.failed{background:#fdecea;border-color:#b00020;color:#5c0011}"
    ".verdict.incomplete{background:#fff3e0;border-color:#c77700;color:#4d2e00}"
    ".verdict.none{background:#f0f0f0;border-color:#888;color:#333}"
    ".verdict td.num.ok{color:#1e7e34;font-weight:bold}.verdict td.num.bad{color:#b00020;font-weight:bold}"
    ".verdict td.num{white-space:nowrap}"
)


# -- the figures ------------------------------------------------------------------------------------------------------


def _limit(summary: Mapping[str, Any], name: str) -> Optional[float]:
    v = summary.get("verdict")
    if isinstance(v, Mapping):
        for c in v.get("criteria", []):
            if isinstance(c, Mapping) and c.get("name") == name and c.get("limit") is not None:
                return float(c["limit"])
    return None


def _hist_pair(ax, before: np.ndarray, after: np.ndarray, labels: Sequence[str], bins: np.ndarray) -> None:
    ax.hist(before, bins=bins, histtype="stepfilled", alpha=0.5, color=_BEFORE, label=labels[0])
    ax.hist(after, bins=bins, histtype="stepfilled", alpha=0.5, color=_AFTER, label=labels[1])


def _group_word(sharing: Optional[str]) -> str:
    return {"neuron": "neurons", "core": "cores", "chip": "chips"}.get(sharing or "", "knob groups")


def report_figures(summary: Mapping[str, Any], hist, knobs: Optional[Mapping[str, Mapping[str, Any]]] = None
                   ) -> Tuple[Dict[str, Tuple[str, Figure]], List[str]]:
    """The report's own figures, by file name: (title, Figure); and one sentence for each figure left out.

    ``knobs``: per knob name ``{"bits", "sharing", "code_ref"}`` (from table.json and the summary's code_ref)."""
    figs: Dict[str, Tuple[str, Figure]] = {}
    missing: List[str] = []
    _histograms(summary, hist, figs, missing)
    _convergence_figures(summary, hist, figs, missing)
    if hist is not None and len(hist.codes_e):
        for name, codes in (("gain_e", hist.codes_e[-1]), ("gain_i", hist.codes_i[-1])):
            figs[f"codes_{name}"] = (f"Final {name} codes against the DAC range",
                                     _codes_figure(name, np.asarray(codes), (knobs or {}).get(name, {})))
    return figs, missing


def _histograms(summary: Mapping[str, Any], hist, figs: dict, missing: list) -> None:
    """Measured rates and balance before and after, as history.npz recorded them."""
    tgt = (summary.get("targets") or {}).get("rate_hz")
    hf = history_figures(hist) if hist is not None else {}
    if not hf:
        missing.append("No before/after histograms: the run recorded no loop windows.")
        return
    win = {s: (summary.get(s) or {}).get("window_s") for s in ("before", "after")}
    labels = [f"{s} ({win[s]:.1f} s window)" if win[s] else s for s in ("before", "after")]
    rb, ra = np.asarray(hf["before"]["rates"], float), np.asarray(hf["after"]["rates"], float)
    both = np.concatenate([rb[np.isfinite(rb)], ra[np.isfinite(ra)]])
    if both.size:
        fig = Figure(figsize=(5.6, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        hi = max(float(np.percentile(both, 99.5)), 2 * (tgt or 0), 1e-9)
        _hist_pair(ax, rb[np.isfinite(rb)], ra[np.isfinite(ra)], labels, np.linspace(0, hi, 50))
        if tgt:
            ax.axvline(tgt, color="k", lw=1, ls="--", label=f"target {tgt:g} Hz")
        ax.set_xlabel("measured rate (Hz)")
        ax.set_ylabel("neurons")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs["rates"] = ("Measured rates before and after", fig)
    bb, ba = hf["before"]["balance"], hf["after"]["balance"]
    fb = np.asarray(bb, float)[np.isfinite(bb)] if bb is not None else np.zeros(0)
    fa = np.asarray(ba, float)[np.isfinite(ba)] if ba is not None else np.zeros(0)
    if not (fb.size or fa.size):
        missing.append("No balance histogram: this controller does not estimate the E/I balance.")
        return
    lim = _limit(summary, "balance_p95") or 0.05
    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    hi = max(float(np.percentile(np.concatenate([fb, fa]), 99)), 1.2 * lim)
    _hist_pair(ax, fb, fa, ["before", "after"], np.linspace(0, hi, 50))
    ax.axvline(lim, color="k", lw=1, ls="--", label=f"limit {lim:g}")
    ax.set_xlabel("measured balance index |I_bal| / I_exc (dimensionless)")
    ax.set_ylabel("neurons or knob groups read")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["balance"] = ("Measured E/I balance index before and after (neurons or knob groups whose proxy was read; "
                       "the controller's own offset and sensitivity estimates)", fig)


def _convergence_figures(summary: Mapping[str, Any], hist, figs: dict, missing: list) -> None:
    """Both loops against model time, one quantity per panel, from the controller's per-iteration records."""
    tgt = (summary.get("targets") or {}).get("rate_hz")
    its = [r for r in (hist.iterations if hist is not None else []) if r.get("rate_mean_hz") is not None]
    if not its:
        missing.append("No convergence plots: the run has no loop iterations with measured rates.")
        return
    t = np.array([r["model_time_s"] for r in its], float)
    fig = _convergence(t, its, [
        ("rate_mean_hz", "mean rate (Hz)", False, tgt, f"target {tgt:g} Hz" if tgt else None),
        ("rate_cv", "rate CV across neurons,\nwindow (dimensionless)", True, None, None),
        ("rate_se_rms", "rate estimate s.e.,\nrms relative (dimensionless)", True, None, None),
    ])
    if fig is not None:
        figs["convergence_rate"] = ("Convergence of loop 2 (rates): one quantity per panel, against model time", fig)
    lim = _limit(summary, "balance_p95")
    fig = _convergence(t, its, [
        ("balance_p95", "balance index p95,\nwindow (dimensionless)", True, lim,
         f"limit {lim:g}" if lim is not None else None),
        ("balance_se_rms", "balance estimate s.e.,\nrms (dimensionless)", True, None, None),
    ])
    if fig is not None:
        figs["convergence_balance"] = ("Convergence of loop 1 (E/I balance), against model time", fig)
    else:
        missing.append("No balance convergence plot: no iteration measured the balance.")


def _codes_figure(name: str, codes: np.ndarray, kn: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(5.6, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(codes, bins=min(64, max(8, len(np.unique(codes)))), color=_AFTER)
    bits = kn.get("bits")
    if bits:
        top = (1 << int(bits)) - 1
        ax.axvline(0, color="k", lw=1)
        ax.axvline(top, color="k", lw=1, label=f"DAC range 0..{top}")
        ax.set_xlim(-top * 0.02, top * 1.02)
    if kn.get("code_ref") is not None:
        ax.axvline(kn["code_ref"], color="gray", ls="--", lw=1, label=f"code_ref {kn['code_ref']} (nominal)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_xlabel(f"final {name} code (DAC code)")
    ax.set_ylabel(_group_word(kn.get("sharing")))
    fig.tight_layout()
    return fig


def _convergence(t: np.ndarray, its: List[dict], rows: List[tuple]) -> Optional[Figure]:
    """Stacked panels sharing the model-time axis, one quantity each; rows without data are left out.

    ``rows``: (record key, y label with unit, log scale, reference line or None, its label)."""
    have = []
    for key, label, log, ref, ref_label in rows:
        y = np.array([np.nan if r.get(key) is None else float(r[key]) for r in its])
        if np.isfinite(y).any():
            have.append((y, label, log, ref, ref_label))
    if not have:
        return None
    fig = Figure(figsize=(5.6, 1.3 + 1.7 * len(have)))
    axes = fig.subplots(len(have), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (y, label, log, ref, ref_label) in zip(axes, have):
        ok = np.isfinite(y) & ((y > 0) if log else True)
        ax.plot(t[ok], y[ok], "o-", ms=3, color=_AFTER)
        span = [v for v in list(y[ok]) + ([ref] if ref is not None else []) if v > 0]
        if log and span and max(span) / min(span) >= 4:  # a narrower range reads better on a linear axis
            ax.set_yscale("log")
            # plain numbers (0.2, 0.5, 1, 2) instead of 2x10^-1 labels
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            log = False
        if ref is not None:
            ax.axhline(ref, color="k", lw=1, ls="--", label=ref_label)
            ax.legend(fontsize=8, loc="best")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3, which="both" if log else "major")
    axes[-1].set_xlabel("model time (s)")
    fig.align_ylabels(axes)
    fig.tight_layout()
    return fig


# -- the page -------------------------------------------------------------------------------------------------------


def _table_rows(d: Mapping[str, Any], keys: List[Tuple[str, str]]) -> str:
    rows = []
    for k, label in keys:
        v = d.get(k)
        if v is None:
            continue
        cell = f"{v:.4g}" if isinstance(v, float) else str(v)
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(cell)}</td></tr>")
    return "\n".join(rows)


def _knobs(d: Path, summary: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    knobs: Dict[str, Dict[str, Any]] = {}
    table_path = d / "table.json"
    if table_path.is_file():
        try:
            t = json.loads(table_path.read_text())
            for k, kv in (t.get("knobs") or {}).items():
                knobs[k] = {"bits": kv.get("bits"), "sharing": kv.get("sharing")}
        except (ValueError, AttributeError):
            pass  # a damaged table: the codes figure goes without the DAC range
    for k, v in (summary.get("code_ref") or {}).items():
        knobs.setdefault(k, {})["code_ref"] = v
    return knobs


def _intro(summary: Mapping[str, Any]) -> List[str]:
    esc = html.escape
    chip = summary.get("chip") or {}
    ctrl = summary.get("controller") or {}
    parts = []
    what = [f"profile <b>{esc(str(chip.get('profile', '?')))}</b>"]
    if chip.get("seed") is not None:
        what.append(f"seed {esc(str(chip['seed']))}")
    if chip.get("n_neurons") is not None:
        what.append(f"{chip['n_neurons']} neurons")
    if chip.get("backend"):
        what.append(f"backend {esc(str(chip['backend']))}")
    run = []
    if ctrl.get("name"):
        run.append(f"controller <b>{esc(str(ctrl['name']))}</b>")
    tgt = (summary.get("targets") or {}).get("rate_hz")
    if tgt is not None:
        run.append(f"target {tgt:g} Hz")
    if summary.get("stopped"):
        run.append(f"stopped: {esc(str(summary['stopped']))}")
    if summary.get("iterations") is not None:
        run.append(f"{summary['iterations']} iterations")
    if summary.get("model_time_s") is not None:
        hw = summary.get("hardware_time_s")
        run.append(f"{summary['model_time_s']:.1f} s model time" + (f" ({hw:.3g} s on hardware)" if hw else ""))
    if summary.get("windows") is not None:
        run.append(f"{summary['windows']} windows")
    parts.append(f"<p>{', '.join(what)}; {', '.join(run)}.</p>")
    n = summary.get("neurons") or {}
    if n:
        parts.append(f"<p>Neurons: {n.get('calibrated', '?')} calibrated, {n.get('unreachable', '?')} unreachable, "
                     f"{n.get('dead', '?')} dead (of {n.get('n', '?')}).</p>")
    return parts


def write_report(out_dir, extra_sections: Optional[List[Tuple[str, str]]] = None, *, dpi: int = 100) -> Path:
    """Render ``report.html`` in ``out_dir`` from its ``summary.json``, ``history.npz`` and ``table.json``, with
    every figure written as ``report/<name>.png`` and ``.svg``; return the page's path.

    ``extra_sections``: (title, HTML) pairs appended after the figures (the diagnostics section, whose own
    figures already lie in ``report/``). A missing ``history.npz`` (a run stopped before its first window) gives a
    report without figures."""
    from .history import History

    d = Path(out_dir)
    summary = json.loads((d / "summary.json").read_text())
    hist = History.load(d / "history.npz") if (d / "history.npz").is_file() else None
    figs, missing = report_figures(summary, hist, _knobs(d, summary))
    fig_dir = d / FIGURE_DIR
    chip = summary.get("chip") or {}
    title = f"Calibration of {chip.get('uid', 'a chip')}"
    esc = html.escape
    keys = [("rate_mean_hz", "mean rate (Hz)"), ("rate_cv", "rate CV (measured)"),
            ("counting_cv", "rate CV from counting noise alone"), ("balance_median", "balance index median"),
            ("balance_p95", "balance index p95"), ("window_s", "window (s)")]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{PAGE_STYLE}{_BANNER_STYLE}</style></head><body>",
        verdict_banner(summary, title),
    ]
    parts += _intro(summary)
    before, after = summary.get("before") or {}, summary.get("after") or {}
    if before or after:
        parts += ["<h2>Measured figures</h2><div class='eical-scroll'><table><tr><th>before</th><th>after</th></tr>"
                  "<tr><td><table>", _table_rows(before, keys), "</table></td><td><table>", _table_rows(after, keys),
                  "</table></td></tr></table></div>"]
    if "true_after" in summary:
        t = summary["true_after"] or {}
        parts.append("<h2>True figures after (emulated chip, independent replay)</h2><div class='eical-scroll'><table>")
        parts.append(_table_rows(t, [("replay_s", "replay (s)"), ("rate_mean_hz", "mean rate (Hz)"),
                                     ("rate_cv_deconvolved", "rate CV (counting noise removed)"),
                                     ("rate_cv", "rate CV (raw)"), ("counting_cv", "counting CV of the replay"),
                                     ("fano", "Fano factor"), ("balance_median", "balance index median"),
                                     ("balance_p95", "balance index p95"),
                                     ("frac_balanced_005", "fraction with balance index <= 0.05"),
                                     ("group_rate_err_max", "max |core rate / target - 1|"),
                                     ("group_balance_max", "max core balance index")]))
        if summary.get("counting_floor") is not None:
            parts.append(f"<tr><td>counting floor sqrt(F/(r T))</td><td>{summary['counting_floor']:.4g}</td></tr>")
            if summary.get("cv_over_floor") is not None:
                parts.append(f"<tr><td>CV / floor</td><td>{summary['cv_over_floor']:.3g}</td></tr>")
        parts.append("</table></div>")
    parts.append("<h2>Figures</h2>")
    if figs:
        parts.append("<div class='eical-figures'>")
        for name, (caption, fig) in figs.items():
            save_figure(fig, fig_dir, name, dpi=dpi)
            base = esc(f"{FIGURE_DIR}/{name}")
            wide = " class='wide'" if fig.get_size_inches()[0] > 7 else ""
            parts.append(f"<figure{wide}><img src='{base}.png' alt='{esc(caption)}' id='fig-{esc(name)}'>"
                         f"<figcaption>{esc(caption)} <span class='eical-files'>(<a href='{base}.png'>PNG</a>, "
                         f"<a href='{base}.svg'>SVG</a>)</span></figcaption></figure>")
        parts.append("</div>")
    for m in missing:
        parts.append(f"<p class='eical-missing'>{esc(m)}</p>")
    for sec_title, body in (extra_sections or []):
        parts.append(f"<h2>{esc(sec_title)}</h2>{body}")
    settings = (summary.get("controller") or {}).get("settings", {})
    parts.append("<h2>Controller settings</h2><pre>" + esc(json.dumps(settings, indent=1)) + "</pre>")
    parts.append("</body></html>")
    path = d / REPORT_FILE
    path.write_text("\n".join(parts) + "\n")
    return path
