"""``DIR/report.html`` of a yield study, with every figure also as PNG and SVG beside it.

Figures (matplotlib's object API, no pyplot state, Agg/SVG renderers; no display needed):

- ``yield_<key>``: yield against each swept value with its 95 % Wilson band (the oracle's too, when run); on a 2-D
  grid one line per value of the other key, and ``yield_heatmap``: the grid as a heat map, each cell annotated;
- ``failures``: chips failing each criterion, per sweep point;
- ``distributions``: the judged rate figure (true rate CV, or the worst core's rate error on shared knobs),
  the mean-rate error, the model time and the wall time per chip;
- ``controller_vs_oracle`` (with ``--reference oracle``): each chip's rate figure for the controller against the
  oracle's, and the two yields per point.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from calibrate.criteria import CRITERIA

__all__ = ["write_report"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _fig(w=6.4, h=4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _save(fig, out: Path, name: str) -> str:
    for ext in ("png", "svg"):
        fig.savefig(out / f"{name}.{ext}", dpi=110 if ext == "png" else None)
    return name


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _label(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _yield_line(ax, xs, entries, label, color, categorical):
    y = np.array([_num(e["yield"]) for e in entries])
    lo = np.array([_num(e["ci95"][0]) if e["ci95"] else np.nan for e in entries])
    hi = np.array([_num(e["ci95"][1]) if e["ci95"] else np.nan for e in entries])
    x = np.arange(len(xs)) if categorical else np.array(xs, dtype=float)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.plot(x, y, "o-", color=color, label=label)


def _yield_total(out: Path, study, summary: dict) -> tuple[str, str]:
    """No sweep: the study's yield (and the oracle's) as bars with their intervals."""
    fig = _fig(4.5, 3.5)
    ax = fig.add_subplot()
    bars = [("controller", summary["total"])]
    if study.oracle:
        bars.append(("oracle", summary["total"]["oracle"]))
    for i, (name, e) in enumerate(bars):
        if e["yield"] is None:
            continue
        ci = e["ci95"]
        ax.bar(i, e["yield"], color=_COLORS[i], yerr=[[e["yield"] - ci[0]], [ci[1] - e["yield"]]], capsize=6)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("yield (95 % Wilson interval)")
    ax.set_title(f"{study.profile.name}: {summary['total']['chips']} chips")
    return _save(fig, out, "yield"), "Yield with its 95 % Wilson interval"


def _yield_against(out: Path, study, pts: list, si: int) -> tuple[str, str]:
    """Yield against sweep ``si``: one line per value of the other key (2 sweeps), controller and oracle (1 sweep),
    or pooled over the other keys (3 or more)."""
    sweeps = list(study.sweeps)
    sw = sweeps[si]
    fig = _fig()
    ax = fig.add_subplot()
    cat = not sw.numeric
    others = [j for j in range(len(sweeps)) if j != si]
    if len(sweeps) == 2:
        oj = others[0]
        for k, ov in enumerate(sweeps[oj].values):
            sel = [p for p in pts if p["values"][sweeps[oj].key] == ov]
            sel.sort(key=lambda p: sw.values.index(p["values"][sw.key]))
            _yield_line(ax, sw.values, sel, f"{sweeps[oj].key} = {_label(ov)}", _COLORS[k % len(_COLORS)], cat)
    elif len(sweeps) == 1:
        _yield_line(ax, sw.values, pts, "controller", _COLORS[0], cat)
        if study.oracle:
            _yield_line(ax, sw.values, [p["oracle"] for p in pts], "oracle", _COLORS[1], cat)
    else:
        from .summary import wilson_interval

        pooled = []
        for v in sw.values:
            sel = [p for p in pts if p["values"][sw.key] == v]
            n, k = sum(p["chips"] for p in sel), sum(p["passed"] for p in sel)
            ci = wilson_interval(k, n)
            pooled.append({"yield": k / n if n else None, "ci95": list(ci) if ci else None})
        _yield_line(ax, sw.values, pooled, "pooled over " + ", ".join(sweeps[j].key for j in others),
                    _COLORS[0], cat)
    if cat:
        ax.set_xticks(range(len(sw.values)), [_label(v) for v in sw.values])
    ax.set_xlabel(sw.key)
    ax.set_ylabel("yield (band: 95 % Wilson interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{study.profile.name}: yield against {sw.key}, {study.chips} chips per point")
    return _save(fig, out, "yield_" + sw.key.replace(".", "_")), f"Yield against {sw.key}"


def _yield_heatmap(out: Path, study, pts: list) -> tuple[str, str]:
    """Two sweeps: the grid's yield as a heat map, each cell labelled with its yield and interval."""
    a, b = study.sweeps
    shape = (len(a.values), len(b.values))
    z = np.full(shape, np.nan)
    lab = np.empty(shape, dtype=object)
    for p in pts:
        i, j = a.values.index(p["values"][a.key]), b.values.index(p["values"][b.key])
        z[i, j] = _num(p["yield"])
        ci = p["ci95"]
        lab[i, j] = "n/a" if ci is None else f"{p['yield']:.0%}\n[{ci[0]:.0%}, {ci[1]:.0%}]"
    fig = _fig(1.2 + 1.3 * len(b.values), 1.0 + 0.8 * len(a.values))
    ax = fig.add_subplot()
    im = ax.imshow(z, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
    for i in range(shape[0]):
        for j in range(shape[1]):
            ax.text(j, i, lab[i, j] or "", ha="center", va="center", fontsize=7,
                    color="white" if not (z[i, j] > 0.6) else "black")
    ax.set_xticks(range(len(b.values)), [_label(v) for v in b.values])
    ax.set_yticks(range(len(a.values)), [_label(v) for v in a.values])
    ax.set_xlabel(b.key)
    ax.set_ylabel(a.key)
    fig.colorbar(im, ax=ax, label="yield")
    ax.set_title(f"{study.profile.name}: yield, {study.chips} chips per cell (95 % Wilson interval)", fontsize=9)
    return _save(fig, out, "yield_heatmap"), f"Yield over the {a.key} x {b.key} grid"


def _yield_figures(out: Path, study, summary: dict) -> list[tuple[str, str]]:
    if not study.sweeps:
        return [_yield_total(out, study, summary)]
    pts = summary["points"]
    figs = [_yield_against(out, study, pts, si) for si in range(len(study.sweeps))]
    if len(study.sweeps) == 2:
        figs.append(_yield_heatmap(out, study, pts))
    return figs


def _integer_y(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _point_label(p: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={_label(v)}" for k, v in p["values"].items()) or "all chips"


def _failures_figure(out: Path, summary: dict):
    pts = summary["points"]
    fig = _fig(max(5.0, 0.7 * len(pts) + 2), 3.6)
    ax = fig.add_subplot()
    w = 0.8 / len(CRITERIA)
    x = np.arange(len(pts))
    for k, c in enumerate(CRITERIA):
        ax.bar(x + (k - 1) * w, [p["failures"][c] for p in pts], width=w, label=c, color=_COLORS[k])
    ax.set_xticks(x, [_point_label(p) for p in pts], rotation=30 if len(pts) > 3 else 0, ha="right" if len(pts) > 3 else "center", fontsize=7)
    ax.set_ylabel("chips failing")
    _integer_y(ax)
    ax.legend(fontsize=8)
    ax.set_title("Failures by criterion (a chip may fail several)")
    return _save(fig, out, "failures"), "Chips failing each criterion, per sweep point"


def _distributions_figure(out: Path, study, rows: Sequence[dict], summary: dict):
    ok = [r for r in rows if not r.get("error")]
    shared = any(r.get("shared_knobs") for r in ok)
    rate_fig, rate_lim = (("group_rate_err_max", study.spec.rate_err) if shared
                          else ("rate_cv_deconvolved", study.spec.rate_cv))
    panels = [(rate_fig, "worst core |rate / target - 1|" if shared else "true rate CV (counting noise removed)",
               rate_lim), ("rate_err", "mean rate / target - 1", study.spec.rate_err),
              ("model_time_s", "model time used (s)", None), ("wall_s", "wall time per chip (s)", None)]
    fig = _fig(9.0, 6.0)
    axes = fig.subplots(2, 2).ravel()
    pts = summary["points"]
    series = [(_point_label(p), [r for r in ok if int(r["point"]) == p["point"]]) for p in pts]
    if len(series) > 5:
        series = [("all points", ok)]
    for ax, (key, title, lim) in zip(axes, panels):
        allv = np.array([_num(r.get(key)) for r in ok])
        allv = allv[np.isfinite(allv)]
        if allv.size == 0:
            ax.set_title(title + ": none")
            continue
        bins = np.histogram_bin_edges(allv, bins=min(30, max(5, int(math.sqrt(allv.size)) + 2)))
        for k, (lab, rs) in enumerate(series):
            v = np.array([_num(r.get(key)) for r in rs])
            v = v[np.isfinite(v)]
            ax.hist(v, bins=bins, histtype="step", linewidth=1.5, color=_COLORS[k % len(_COLORS)], label=lab)
            if study.oracle and key in (rate_fig, "rate_err") and len(series) == 1:
                o = np.array([_num(r.get("oracle." + key)) for r in rs])
                o = o[np.isfinite(o)]
                ax.hist(o, bins=bins, histtype="step", linewidth=1.5, linestyle="--", color=_COLORS[1],
                        label="oracle")
        if lim is not None:
            for s in ((-1, 1) if key == "rate_err" else (1,)):
                ax.axvline(s * lim, color="k", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("chips")
        _integer_y(ax)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "distributions"), "Distributions over chips (dotted: the spec's limits)"


def _oracle_figure(out: Path, study, rows: Sequence[dict], summary: dict):
    ok = [r for r in rows if not r.get("error")]
    shared = any(r.get("shared_knobs") for r in ok)
    key = "group_rate_err_max" if shared else "rate_cv_deconvolved"
    lim = study.spec.rate_err if shared else study.spec.rate_cv
    fig = _fig(9.5, 4.0)
    a1, a2 = fig.subplots(1, 2)
    c = np.array([_num(r.get(key)) for r in ok])
    o = np.array([_num(r.get("oracle." + key)) for r in ok])
    m = np.isfinite(c) & np.isfinite(o)
    a1.scatter(o[m], c[m], s=10, color=_COLORS[0])
    if m.any():
        top = max(float(np.max(c[m])), float(np.max(o[m])), lim) * 1.05
        a1.plot([0, top], [0, top], "k-", linewidth=0.8)
        a1.axvline(lim, color="k", linestyle=":")
        a1.axhline(lim, color="k", linestyle=":")
    a1.set_xlabel(f"oracle: {key}")
    a1.set_ylabel(f"controller: {key}")
    a1.set_title("Each chip: controller against oracle", fontsize=9)
    pts = summary["points"]
    x = np.arange(len(pts))
    for k, (name, get) in enumerate((("controller", lambda p: p), ("oracle", lambda p: p["oracle"]))):
        y = np.array([_num(get(p)["yield"]) for p in pts])
        lo = np.array([_num(get(p)["ci95"][0]) if get(p)["ci95"] else np.nan for p in pts])
        hi = np.array([_num(get(p)["ci95"][1]) if get(p)["ci95"] else np.nan for p in pts])
        a2.errorbar(x + (k - 0.5) * 0.25, y, yerr=[y - lo, hi - y], fmt="o", capsize=4, color=_COLORS[k], label=name)
    a2.set_xticks(x, [_point_label(p) for p in pts], rotation=30 if len(pts) > 3 else 0, fontsize=7,
                  ha="right" if len(pts) > 3 else "center")
    a2.set_ylim(-0.02, 1.02)
    a2.set_ylabel("yield (95 % Wilson interval)")
    a2.legend(fontsize=8)
    a2.set_title("Yield: controller and oracle", fontsize=9)
    return _save(fig, out, "controller_vs_oracle"), "The controller against the oracle (same chips, same replay)"


def _fmt(x, spec=".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def _ci(e: dict) -> str:
    if e.get("yield") is None:
        return "n/a"
    lo, hi = e["ci95"]
    return f"{e['yield']:.1%} [{lo:.1%}, {hi:.1%}]"


def write_report(out: Path, study, rows: Sequence[dict], summary: dict) -> Path:
    """Render ``out/report.html`` and its figures (``<name>.png`` and ``<name>.svg`` beside it)."""
    out = Path(out)
    figs = _yield_figures(out, study, summary)
    figs.append(_failures_figure(out, summary))
    figs.append(_distributions_figure(out, study, rows, summary))
    if study.oracle:
        figs.append(_oracle_figure(out, study, rows, summary))
    ident = summary["study"]
    e = html.escape
    head = ["sweep point", "chips", "passed", "yield [95 % CI]"]
    if study.oracle:
        head.append("oracle yield [95 % CI]")
    head += [f"failing {c}" for c in CRITERIA] + ["median true CV", "median |rate err|", "median balance p95",
                                                   "median model s", "median wall s", "errors", "missing",
                                                   "replay se / limit"]
    trs = []
    for p in summary["points"]:
        md = p["medians"]
        cells = [_point_label(p), p["chips"], p["passed"], _ci(p)]
        if study.oracle:
            cells.append(_ci(p["oracle"]))
        cells += [p["failures"][c] for c in CRITERIA]
        cells += [_fmt(md.get("rate_cv_deconvolved")), _fmt(md.get("abs_rate_err"), ".4f"),
                  _fmt(md.get("balance_p95")), _fmt(md.get("model_time_s"), ".1f"), _fmt(md.get("wall_s"), ".1f"),
                  p["errors"], p["missing"],
                  ", ".join(f"{k} {v:.2f}" for k, v in p["replay_se_over_limit"].items())
                  + ("" if p["replay_ok"] else " (replay too short)")]
        trs.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    run = summary["run"]
    sweeps = ", ".join(f"{s['key']} = {', '.join(_label(v) for v in s['values'])}" for s in ident["sweeps"]) or "none"
    notes = []
    if not summary["complete"]:
        notes.append("Some chips are missing: re-run the same command to compute them.")
    if any(p["errors"] for p in summary["points"]):
        notes.append("Some chips raised an error (yield.json lists examples); they are not counted in the yield.")
    if not all(p["replay_ok"] for p in summary["points"] if p["chips"]):
        notes.append("At some points the judging replay's own uncertainty is above a tenth of a limit: "
                     "re-run with a longer --evaluate (docs/yield.md).")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>eical yield: {e(ident['profile'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}
td:first-child{{text-align:left}}figure{{margin:1.5em 0}}figcaption{{font-size:13px;color:#555}}
.note{{color:#a33}}</style></head><body>
<h1>Yield study: {e(ident['profile'])}</h1>
<p>{summary['chips_per_point']} chips per sweep point (seeds {summary['first_seed']}&ndash;{summary['first_seed'] +
summary['chips_per_point'] - 1}), sweeps: {e(sweeps)}. Controller <b>{e(ident['controller'])}</b>, budget
{e(str(ident['budget_s'] if ident['budget_s'] is not None else 'default'))} s of model time; each chip judged by a
{summary['replay_s']:g} s replay on inputs the calibration did not see. Spec: {e(', '.join(f'{k} &le; {v:g}' for k, v in ident['spec'].items()))}.
Profile sha256 {e(ident['profile_sha256'][:16])}&hellip;, eical {e(ident['eical_version'])}.</p>
<p>Total: {_ci(summary['total'])} of {summary['total']['chips']} chips{(' (oracle: ' + _ci(summary['total']['oracle']) + ')') if study.oracle else ''}.
This run computed {run['computed']} chips ({run['already_done']} were already done) on {run['workers']} workers in
{run['wall_s']:.0f} s{(f", {run['chips_per_hour_per_worker']:.0f} chips per hour per worker") if run.get('chips_per_hour_per_worker') else ''}.</p>
{''.join(f'<p class="note">{e(n)}</p>' for n in notes)}
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{''.join(trs)}</table>
{''.join(f'<figure><img src="{n}.png" alt="{e(c)}"><figcaption>{e(c)} (<a href="{n}.svg">SVG</a>)</figcaption></figure>' for n, c in figs)}
</body></html>
"""
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(body)
    tmp.replace(path)
    return path
