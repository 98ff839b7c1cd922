"""The diagnostics section of reports: before/after table, flags, notes and the five plots, and its files."""
from __future__ import annotations

import base64
import copy
import json
import re

import pytest

from calibrate.diagnostics import headline
from calibrate.diagnostics.recording import diagnose_codes, profile_meta
from calibrate.diagnostics.render import FIGURE_NAMES, diagnostics_section
from calibrate.diagnostics.report import JSON_FILE, SECTION_FILE, SECTION_TITLE, diagnose_calibration, saved_section
from calibrate.figures import exc_mask
from hw_models.emulator import NumpyDevice, nominal_codes
from hw_models.profile import Profile, load_profile

PNG = b"\x89PNG\r\n\x1a\n"


def small_recurrent_profile() -> Profile:
    """bss2's neurons as a 200-neuron recurrent chip (160 E + 40 I): fast, and it has both populations."""
    d = copy.deepcopy(load_profile("bss2").data)
    d["name"] = "dx-small-recurrent"
    d["geometry"] = {"cores": 1, "neurons_per_core": 200}
    d["recurrent"] = {"n_exc": 160, "K_ee": 40, "K_ei": 10, "K_ie": 40, "K_ii": 10,
                      "J_ee": 1.0, "J_ei": 2.0, "J_ie": 1.0, "J_ii": 2.0}
    return Profile(d)


@pytest.fixture(scope="module")
def pair():
    prof = small_recurrent_profile()
    dev = NumpyDevice(prof, 3)
    nom = nominal_codes(dev.knobs)
    cut = {"gain_e": nom["gain_e"], "gain_i": nom["gain_i"] // 3}
    before = diagnose_codes(prof, 3, cut, 1.5, label="inhibition / 3", chip=dev.chip, n_boot=20)
    after = diagnose_codes(prof, 3, None, 1.5, label="nominal", chip=dev.chip, n_boot=20)
    return prof, before, after


def test_profile_meta_and_populations():
    prof = small_recurrent_profile()
    assert profile_meta(prof) == {"model": "cond_lif", "vbal_mv": -52.0, "ee_mv": 0.0, "ei_mv": -80.0}
    m = exc_mask(prof)
    assert m.sum() == 160 and m[:160].all() and not m[160:].any()
    assert exc_mask(load_profile("bss2")) is None
    assert profile_meta(load_profile("dynapse2"))["vbal_mv"] is None  # dpi: no conductance-ratio theory


def test_recording_carries_populations_and_theory(pair):
    prof, (d_b, r_b), (d_a, r_a) = pair
    assert r_a.is_exc is not None and r_a.is_exc.sum() == 160
    assert r_a.meta["vbal_mv"] == -52.0 and r_a.meta["input_stream"] == 2 and r_a.meta["profile"] == prof.name
    assert d_a.conductance_ratio_theory == pytest.approx(28.0 / 52.0)  # (Vbal - EI)/(EE - Vbal)
    assert d_a.n_exc == 160 and d_a.n_inh == 40
    assert d_a.cofluct_rates is not None and d_a.cofluct_currents is not None


def test_section_renders_table_flags_notes_and_five_plots(pair):
    _, before, after = pair
    body, figs = diagnostics_section(before, after)
    names = FIGURE_NAMES + ("mode",)  # the five of the issue, then the dominant mode of the activity
    assert set(figs) == set(names)
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", body)
    assert len(uris) == 6
    for name, uri in zip(names, uris):
        assert base64.b64decode(uri) == figs[name] and figs[name].startswith(PNG)
        assert f"eical-diag-{name}" in body
    # one column per state, named by the labels
    assert "<th>inhibition / 3</th><th>nominal</th>" in body
    # every headline figure has its row; the flags and their meaning; the notes
    for label in ("balance index", "ISI CV", "Fano factor", "count correlation", "E/I rate correlation",
                  "counting noise removed", "E/I current distance from balance", "branching ratio m",
                  "dominant mode |lambda|", "gamma modulation depth", "synchrony chi"):
        assert label in body, label
    d_b = before[0]
    assert "imbalanced" in d_b.flags and "<code>imbalanced</code>" in body and "FLAGGED" in body
    for note in d_b.notes + after[0].notes:
        assert note.replace("<", "&lt;").replace(">", "&gt;") in body or note in body
    # the fragment is a fragment
    assert body.startswith("<div class='eical-diagnostics'>") and body.rstrip().endswith("</div>")
    assert "<html" not in body


def test_single_state_section(pair):
    _, _, after = pair
    body, figs = diagnostics_section(None, after)
    assert set(FIGURE_NAMES) <= set(figs) and body.count("data:image/png;base64,") == len(figs)
    assert "<th>nominal</th><th>rule</th>" in body


def test_headline_is_json_and_matches_the_diagnosis(pair):
    _, (d, rec), _ = pair
    h = headline(d, rec).to_dict()
    json.dumps(h)  # plain types only
    assert h["flags"] == d.flags and h["healthy"] == d.healthy
    exc = rec.exc_mask()
    assert h["rate_exc_hz"] == pytest.approx(rec.rates_hz()[exc].mean())
    assert h["rate_inh_hz"] == pytest.approx(rec.rates_hz()[~exc].mean())
    assert h["balance_index_median"] == pytest.approx(d.balance_index_median)
    assert h["ei_current_imbalance_median"] == pytest.approx(d.cofluct_currents.median_over("imbalance"))
    if d.branching.fit_ok:
        assert h["branching_m"] == pytest.approx(d.branching.m)
    else:
        assert h["branching_m"] is None and h["branching_fit_ok"] is False


@pytest.mark.slow
def test_calibration_section_writes_its_files_and_the_report_embeds_it(tmp_path):
    from calibrate.report import write_report
    from calibrate.session import run_calibration

    dev = NumpyDevice("devboard", 1)
    outcome = run_calibration(dev, out=tmp_path, report=False, budget_s=3, max_iterations=3)
    dx = diagnose_calibration(dev, None, outcome.result.codes, duration_s=1.0, n_boot=20)
    assert dx is not None
    sec = dx.write(tmp_path)
    assert sec[0] == SECTION_TITLE
    assert (tmp_path / SECTION_FILE).read_text().strip() == sec[1].strip()
    doc = json.loads((tmp_path / JSON_FILE).read_text())
    assert set(doc) == {"run", "before", "after"}
    assert doc["before"]["label"] == "before" and doc["after"]["label"] == "after"
    assert doc["run"]["duration_s"] == 1.0 and doc["run"]["seed"] == 1
    assert doc["after"]["headline"]["flags"] == doc["after"]["flags"]
    # a re-render finds the section again
    again = saved_section(tmp_path)
    assert again is not None and again[1].strip() == sec[1].strip()
    path = write_report(tmp_path, extra_sections=[again])
    page = path.read_text()
    assert SECTION_TITLE in page and page.count("eical-diag-") >= 5
    # the "before" state is the chip at nominal codes: its recording is the nominal chip's
    assert doc["before"]["mean_rate_hz"] != doc["after"]["mean_rate_hz"]


def test_no_section_for_a_board(tmp_path):
    class Board:
        identity = None

    assert diagnose_calibration(Board(), None, {}) is None
    assert saved_section(tmp_path) is None and not (tmp_path / JSON_FILE).exists()
