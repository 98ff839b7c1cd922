"""The calibration report: the verdict banner first, figures with one quantity per axis and none empty, every
figure written as PNG and SVG under report/, the recorded figures of history.npz, and reports of runs that stopped
early. The page in a real browser: tests/test_report_browser.py."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from calibrate.history import History
from calibrate.report import FIGURE_DIR, report_figures, verdict_banner, verdict_state, write_report
from report_fixtures import calibration_dir, verdict, with_verdict

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return calibration_dir(tmp_path_factory.mktemp("cal") / "run")


class _Page(HTMLParser):
    """The page's body elements in order, its images and links."""

    def __init__(self):
        super().__init__()
        self.body_children: list[tuple[str, dict]] = []
        self.depth = 0
        self.in_body = False
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.in_body, self.depth = True, 0
            return
        if tag == "img":
            self.images.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if self.in_body:
            if self.depth == 0:
                self.body_children.append((tag, a))
            if tag not in ("img", "meta", "br", "link"):
                self.depth += 1

    def handle_endtag(self, tag):
        if tag == "body":
            self.in_body = False
        elif self.in_body and tag not in ("img", "meta", "br", "link"):
            self.depth -= 1


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text())
    return p


@pytest.mark.parametrize("kind,state", [("met", "met"), ("failed", "failed"), ("incomplete", "incomplete"),
                                        ("none", "none")])
def test_the_verdict_banner_comes_first_and_says_what_happened(run_dir, tmp_path, kind, state):
    d = with_verdict(run_dir, tmp_path / kind, kind)
    page_path = write_report(d)
    page = _parse(page_path)
    tag, attrs = page.body_children[0]
    assert tag == "header" and attrs["id"] == "verdict" and attrs["class"] == f"verdict {state}"
    text = page_path.read_text()
    banner = text[text.index("<header"):text.index("</header>")]
    if kind == "met":
        assert "Spec met: all 3 criteria within their limits." in banner
    elif kind == "failed":
        # names every failed criterion with its value and limit, and not the one that passed
        line = re.search(r"<p class='verdict-line'><b>(.*?)</b></p>", banner).group(1)
        assert line == "Spec NOT met: rate_cv 0.147 &gt; 0.05; balance_p95 0.0712 &gt; 0.05."
        assert "rate_err" not in line
    elif kind == "incomplete":
        assert "Incomplete run (stopped: interrupted)" in banner and "rate_cv not measured" in banner
    else:
        assert "no verdict recorded" in banner.lower()
    v = verdict(kind)
    if v is not None:  # every criterion's row: value with its uncertainty, limit, result and source
        for c in v["criteria"]:
            assert f"<code>{c['name']}</code>" in banner
        assert banner.count("NOT met</td>") == sum(not c["met"] for c in v["criteria"])
        assert "0.0081 &plusmn; 0.0012" in banner and "true (independent replay" in banner


def test_verdict_state_of_summaries():
    assert verdict_state({}) == "none"
    assert verdict_state({"verdict": verdict("met")}) == "met"
    assert verdict_state({"verdict": verdict("failed")}) == "failed"
    assert verdict_state({"verdict": verdict("incomplete")}) == "incomplete"
    assert verdict_state({"verdict": verdict("met"), "complete": False}) == "incomplete"
    assert verdict_state({"complete": False}) == "incomplete"
    # a measured figure (a board) says so in the banner
    v = verdict("met")
    v["criteria"][0]["source"] = "measured"
    assert "measured (on the chip)" in verdict_banner({"verdict": v}, "t")


@pytest.mark.slow
def test_every_figure_is_written_as_png_and_svg_and_the_page_shows_the_files(run_dir, tmp_path):
    d = with_verdict(run_dir, tmp_path / "run", "met")
    from calibrate.diagnostics.report import saved_section

    page_path = write_report(d, extra_sections=[saved_section(d)])
    page = _parse(page_path)
    figs = d / FIGURE_DIR
    names = sorted(p.stem for p in figs.glob("*.png"))
    assert sorted(p.stem for p in figs.glob("*.svg")) == names
    for own in ("rates", "balance", "convergence_rate", "convergence_balance", "codes_gain_e", "codes_gain_i"):
        assert own in names
    assert {"diag_raster", "diag_isi_cv", "diag_ei_scales", "diag_branching", "diag_spectrum"} <= set(names)
    # the page shows exactly these files (no data URIs), and links both formats
    assert sorted(page.images) == sorted(f"{FIGURE_DIR}/{n}.png" for n in names)
    assert "data:image" not in page_path.read_text()
    for n in names:
        assert f"{FIGURE_DIR}/{n}.svg" in page.links
        assert (figs / f"{n}.png").read_bytes().startswith(PNG)
        root = ET.parse(figs / f"{n}.svg").getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 20
    # re-rendering gives the same SVG files (no timestamps)
    before = {n: (figs / f"{n}.svg").read_bytes() for n in names if not n.startswith("diag_")}
    write_report(d, extra_sections=[saved_section(d)])
    assert before == {n: (figs / f"{n}.svg").read_bytes() for n in before}
    # the page is made for narrow and wide windows
    text = page_path.read_text()
    assert "name='viewport'" in text and "img{max-width:100%" in text and "overflow-x:auto" in text


def _axes_check(fig, name):
    axes = fig.get_axes()
    assert axes, name
    boxes = [tuple(np.round(ax.get_position().bounds, 4)) for ax in axes]
    assert len(set(boxes)) == len(boxes), f"{name}: two axes on one spot (a twin axis)"
    for ax in axes:
        drawn = len(ax.lines) + len(ax.patches) + len(ax.collections)
        assert drawn > 0, f"{name}: an empty panel"
        label = ax.get_ylabel()
        assert label, f"{name}: unlabelled y axis"
        # a unit, or what is counted, or an explicit 'dimensionless'
        assert re.search(r"\((Hz|s|ms|dimensionless|DAC code|Hz\^2/Hz)\)|neurons|cores|groups|r_k|corr", label), label
    assert any(ax.get_xlabel() for ax in axes), name


def test_report_figures_have_one_quantity_per_axis_with_units_and_no_empty_panel(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["verdict"] = verdict("met")
    hist = History.load(run_dir / "history.npz")
    figs, missing = report_figures(summary, hist, {"gain_e": {"bits": 8, "sharing": "neuron", "code_ref": 64},
                                                   "gain_i": {"bits": 8, "sharing": "neuron", "code_ref": 64}})
    assert missing == []
    for name, (_, fig) in figs.items():
        _axes_check(fig, name)
    # loop 2's panels: mean rate, rate CV and the rate estimate's s.e., each on its own axis
    labels = [ax.get_ylabel() for ax in figs["convergence_rate"][1].get_axes()]
    assert len(labels) == 3 and labels[0] == "mean rate (Hz)" and "rate CV" in labels[1] and "s.e." in labels[2]
    # the balance limit of the verdict is drawn
    lines = figs["convergence_balance"][1].get_axes()[0].get_lines()
    assert any(ln.get_label() == "limit 0.05" for ln in lines)


def test_log_axes_have_plain_tick_labels(run_dir, tmp_path):
    d = with_verdict(run_dir, tmp_path / "run", "met")
    write_report(d)
    svg = (d / FIGURE_DIR / "convergence_rate.svg").read_text()
    assert "10^" not in svg and "\\times" not in svg  # no "2x10^-1" labels that run into the next panel


def test_single_population_diagnostics_draw_no_empty_co_fluctuation_panel(run_dir):
    """devboard has one population: no E/I rate correlation and no lag, so the co-fluctuation figure is the
    current panel alone (it used to carry two empty axes)."""
    from calibrate.diagnostics import plots
    from calibrate.diagnostics.recording import diagnose_codes

    d, _ = diagnose_codes("devboard", 1, None, 1.0, label="chip", n_boot=10)
    assert d.cofluct_rates is None and d.cofluct_currents is not None
    fig = plots.ei_scales_figure(d)
    assert len(fig.get_axes()) == 1 and "currents" in fig.get_axes()[0].get_title()
    _axes_check(fig, "ei_scales")
    for maker in (plots.isi_cv_figure, plots.branching_figure, plots.spectrum_figure):
        f = maker(d)
        if f is not None:
            _axes_check(f, maker.__name__)


def test_the_report_shows_the_runs_recorded_figures(run_dir, tmp_path):
    """The histograms are history.npz's figures (the controller's own estimates), not figures re-derived from
    codes: change the recorded after-rates, and the report's histogram follows."""
    d = with_verdict(run_dir, tmp_path / "run", "met")
    hist = History.load(d / "history.npz")
    n = hist.figures["after_rates_hz"].size
    hist.figures["after_rates_hz"] = np.full(n, 7.25)
    hist.save(d / "history.npz")
    summary = json.loads((d / "summary.json").read_text())
    figs, _ = report_figures(summary, History.load(d / "history.npz"), {})
    ax = figs["rates"][1].get_axes()[0]
    before_poly, after_poly = ax.patches[:2]  # stepfilled: one polygon per histogram
    assert after_poly.get_label().startswith("after")
    xs, ys = after_poly.get_path().vertices[:, 0], after_poly.get_path().vertices[:, 1]
    top = ys.max()
    assert top == n and xs[ys == top].min() <= 7.25 <= xs[ys == top].max()  # every neuron in the 7.25 Hz bin


def test_a_run_stopped_early_still_gets_a_report(run_dir, tmp_path):
    """An interrupted run may have no after-figures and no history: the report says so and draws what it has."""
    d = with_verdict(run_dir, tmp_path / "run", "incomplete")
    s = json.loads((d / "summary.json").read_text())
    s["after"] = {}
    s.pop("true_after", None)
    (d / "summary.json").write_text(json.dumps(s))
    (d / "history.npz").unlink()
    (d / "table.json").unlink()
    text = write_report(d).read_text()
    assert "class='verdict incomplete'" in text and "no loop windows" in text
    assert "<img" not in text
