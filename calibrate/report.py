"""``report.html``: one self-contained page per calibration, rendered from the files in its output directory.

Everything is recomputed from ``summary.json`` and ``history.npz`` (never from live state), so ``eical report DIR``
re-renders a report at any time. Plots are PNGs embedded as data URIs (matplotlib, Agg backend: no display).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["write_report", "history_figures"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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


def _plots(summary: dict, hist) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    hf = history_figures(hist)
    tgt = summary["targets"]["rate_hz"]
    if hf:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
        rb, ra = hf["before"]["rates"], hf["after"]["rates"]
        hi = max(np.nanpercentile(np.concatenate([rb, ra]), 99.5), 2 * tgt)
        bins = np.linspace(0, hi, 50)
        ax[0].hist(rb, bins=bins, alpha=0.6, label=f"before ({summary['before']['window_s']:.1f} s window)")
        ax[0].hist(ra, bins=bins, alpha=0.6, label=f"after ({summary['after']['window_s']:.1f} s window)")
        ax[0].axvline(tgt, color="k", lw=1, ls="--", label="target")
        ax[0].set_xlabel("measured rate (Hz)")
        ax[0].set_ylabel("neurons")
        ax[0].legend(fontsize=8)
        ax[0].set_title("Rates")
        bb, ba = hf["before"]["balance"], hf["after"]["balance"]
        have = bb is not None and ba is not None
        fin = np.concatenate([bb[np.isfinite(bb)], ba[np.isfinite(ba)]]) if have else np.zeros(0)
        if fin.size:
            bins = np.linspace(0, max(np.percentile(fin, 99), 0.06), 50)
            ax[1].hist(bb[np.isfinite(bb)], bins=bins, alpha=0.6, label="before")
            ax[1].hist(ba[np.isfinite(ba)], bins=bins, alpha=0.6, label="after")
            ax[1].axvline(0.05, color="k", lw=1, ls="--", label="0.05")
            ax[1].legend(fontsize=8)
        ax[1].set_xlabel("measured balance index |I_bal| / I_exc")
        ax[1].set_title("E/I balance (neurons or knob groups whose proxy was read)" if have
                        else "E/I balance: not estimated by this controller")
        out.append(("Rate and balance before and after", _png(fig)))
    its = [r for r in hist.iterations if r.get("rate_mean_hz") is not None]
    if its:
        t = np.array([r["model_time_s"] for r in its])
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
        ax[0].plot(t, [r["rate_mean_hz"] for r in its], "o-", label="mean rate (Hz)")
        ax[0].axhline(tgt, color="k", lw=1, ls="--")
        ax[0].set_xlabel("model time (s)")
        ax[0].set_ylabel("Hz")
        a2 = ax[0].twinx()
        a2.semilogy(t, [r.get("rate_cv") or np.nan for r in its], "s-", color="C1", label="rate CV (window)")
        if any(r.get("rate_se_rms") is not None for r in its):
            a2.semilogy(t, [min(r.get("rate_se_rms") or np.nan, 10) for r in its], "^-", color="C2",
                        label="rate estimate s.e.")
        a2.set_ylabel("relative")
        ax[0].set_title("Loop 2: rate")
        h1, l1 = ax[0].get_legend_handles_labels()
        h2, l2 = a2.get_legend_handles_labels()
        ax[0].legend(h1 + h2, l1 + l2, fontsize=8)
        ax[1].semilogy(t, [r.get("balance_p95") or np.nan for r in its], "o-", label="balance index p95 (window)")
        if any(r.get("balance_se_rms") is not None for r in its):
            ax[1].semilogy(t, [min(r.get("balance_se_rms") or np.nan, 10) for r in its], "^-",
                           label="balance estimate s.e.")
        ax[1].axhline(0.05, color="k", lw=1, ls="--")
        ax[1].set_xlabel("model time (s)")
        ax[1].set_title("Loop 1: E/I balance")
        ax[1].legend(fontsize=8)
        out.append(("Convergence of both loops", _png(fig)))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.0))
    for j, (name, codes) in enumerate((("gain_e", hist.codes_e[-1]), ("gain_i", hist.codes_i[-1]))):
        kn = summary.get("knobs", {}).get(name, {})
        top = kn.get("max_code")
        ax[j].hist(codes, bins=min(64, max(8, len(np.unique(codes)))), color=f"C{j}")
        if top is not None:
            ax[j].axvline(0, color="k", lw=1)
            ax[j].axvline(top, color="k", lw=1, label=f"DAC range 0..{top}")
            ax[j].axvline(kn.get("code_ref", 0), color="gray", ls="--", lw=1, label="code_ref (nominal)")
            ax[j].set_xlim(-top * 0.02, top * 1.02)
            ax[j].legend(fontsize=8)
        ax[j].set_xlabel(f"final {name} code")
        ax[j].set_ylabel("knob groups")
    out.append(("Codes used vs the DAC range", _png(fig)))
    return out


def _table_rows(d: dict, keys: list[tuple[str, str]]) -> str:
    rows = []
    for k, label in keys:
        v = d.get(k)
        if v is None:
            continue
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{v:.4g}</td></tr>" if isinstance(v, float)
                    else f"<tr><td>{html.escape(label)}</td><td>{html.escape(str(v))}</td></tr>")
    return "\n".join(rows)


def write_report(out_dir, extra_sections: Optional[list[tuple[str, str]]] = None) -> Path:
    """Render ``report.html`` in ``out_dir`` from its ``summary.json`` and ``history.npz``; return its path."""
    from .run import History

    d = Path(out_dir)
    summary = json.loads((d / "summary.json").read_text())
    hist = History.load(d / "history.npz")
    table_path = d / "table.json"
    if table_path.is_file():
        t = json.loads(table_path.read_text())
        summary.setdefault("knobs", {})
        for k, kv in t.get("knobs", {}).items():
            summary["knobs"][k] = {"max_code": (1 << kv["bits"]) - 1, "code_ref": None}
    ref = summary.get("code_ref") or {}
    for k, v in ref.items():
        summary["knobs"].setdefault(k, {})["code_ref"] = v
    plots = _plots(summary, hist)
    chip, n = summary["chip"], summary["neurons"]
    keys = [("rate_mean_hz", "mean rate (Hz)"), ("rate_cv", "rate CV (measured)"),
            ("counting_cv", "of which counting noise"), ("balance_median", "balance index median"),
            ("balance_p95", "balance index p95"), ("window_s", "window (s)")]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>eical calibration report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "h2{border-bottom:1px solid #ddd}img{max-width:100%}</style></head><body>",
        f"<h1>Calibration of {html.escape(chip['uid'])}</h1>",
        f"<p>profile <b>{html.escape(str(chip['profile']))}</b>, {chip['n_neurons']} neurons, backend "
        f"{html.escape(str(chip['backend']))}; controller <b>{html.escape(summary['controller']['name'])}</b>; "
        f"target {summary['targets']['rate_hz']} Hz; stopped: {html.escape(summary['stopped'])} after "
        f"{summary['iterations']} iterations, {summary['model_time_s']:.1f} s model time "
        f"({summary['hardware_time_s']:.3g} s on hardware), {summary['windows']} windows.</p>",
        f"<p>Neurons: {n['calibrated']} calibrated, {n['unreachable']} unreachable, {n['dead']} dead "
        f"(of {n['n']}).</p>",
        "<h2>Measured figures</h2><table><tr><th>before</th><th>after</th></tr><tr><td><table>",
        _table_rows(summary.get("before", {}), keys), "</table></td><td><table>",
        _table_rows(summary.get("after", {}), keys), "</table></td></tr></table>",
    ]
    if "true_after" in summary:
        t = summary["true_after"]
        parts.append("<h2>True figures after (emulated chip, independent replay)</h2><table>")
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
        parts.append("</table>")
    for title, uri in plots:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{uri}' alt='{html.escape(title)}'>")
    for title, body in (extra_sections or []):
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    parts.append("<h2>Controller settings</h2><pre>" +
                 html.escape(json.dumps(summary["controller"].get("settings", {}), indent=1)) + "</pre>")
    parts.append("</body></html>")
    path = d / "report.html"
    path.write_text("\n".join(parts))
    return path
