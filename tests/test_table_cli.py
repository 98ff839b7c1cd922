"""``eical table show`` and ``eical table diff`` through the real entry point: identity, origin, codes and gains per
knob, the verdict and figures; per-knob code and gain changes (through the DAC: dynapse2's coarse/fine codes are not
gains) and the groups that moved most; bad input gets one line and exit 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibrate.cli import main
from calibrate.cli.table import _print_summary, table_summary
from hw_models.chip import make_knobs
from hw_models.profile import load_profile
from hw_models.table import GainTable, KnobTable
from report_fixtures import verdict


@pytest.fixture
def eical(capsys):
    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def make_table(path, profile, codes_e, codes_i, **kw):
    prof = load_profile(profile)
    k = make_knobs(prof)
    t = GainTable(chip_uid=f"emu-{profile}-1", profile=prof.name, profile_sha256=prof.sha256, seed=1,
                  knobs={"gain_e": KnobTable(k["gain_e"].sharing, k["gain_e"].bits, [int(c) for c in codes_e]),
                         "gain_i": KnobTable(k["gain_i"].sharing, k["gain_i"].bits, [int(c) for c in codes_i])},
                  created="2026-12-01T10:00:00Z", eical_version="0.1.0", **kw)
    t.save(path)
    return path


METRICS = {"before": {"window_s": 0.3, "rate_mean_hz": 15.8, "rate_cv": 1.08, "balance_p95": 0.66},
           "after": {"window_s": 9.6, "rate_mean_hz": 10.01, "rate_cv": 0.239, "balance_p95": 0.136}}


def test_show_a_calibrated_table(eical, tmp_path):
    codes_e = [64] * 30 + [0, 255]
    t = make_table(tmp_path / "t.json", "devboard", codes_e, [80] * 32, targets={"rate_hz": 10.0, "proxy_pa": 0.0},
                   metrics=METRICS, controller={"name": "dual-loop", "settings": {"budget_ms": 90000.0}})
    code, out, err = eical("table", "show", t)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[1].startswith("chip       emu-devboard-1 (profile devboard, sha256 ") and "seed 1" in lines[1]
    assert "controller dual-loop (budget 90 s)" in lines[2]
    assert "gain_e: 8-bit linear per neuron, 32 codes: min 0, median 64, max 255; 1 at 0, 1 at 255" in out
    assert "gain (code_ref 64 = 1) median 1.000, range 0.000-3.984" in out
    assert "gain_i" in out and "median 1.250" in out
    assert "targets    rate 10 Hz, proxy 0 pA" in out
    assert "verdict    no verdict recorded" in out
    assert "after: rate 10.01 Hz, CV 0.239, balance p95 0.136 (measured, 9.6 s window)" in out
    code, out, _ = eical("table", "show", t, "--json")
    d = json.loads(out)
    assert d["chip"]["uid"] == "emu-devboard-1" and d["knobs"]["gain_e"]["at_top"] == 1
    assert d["knobs"]["gain_i"]["gain_median"] == pytest.approx(80 / 64) and d["verdict"] is None


@pytest.mark.parametrize("kind,line", [("met", "verdict    met (3 criteria within their limits)"),
                                       ("failed", "verdict    NOT met: rate_cv 0.147 > 0.05; balance_p95 0.0712 > 0.05"),
                                       ("incomplete", "verdict    incomplete run: no pass (failed so far: rate_cv not "
                                                      "measured (limit 0.05))")])
def test_show_prints_the_tables_verdict(tmp_path, capsys, kind, line):
    """A table that carries a verdict (the calibration's, as summary.json has it) shows it in one line."""
    t = GainTable.load(make_table(tmp_path / "t.json", "devboard", [64] * 32, [64] * 32))
    t.verdict = verdict(kind)
    _print_summary(table_summary(t, "t.json"))
    assert line in capsys.readouterr().out


def test_show_a_table_read_back_from_a_board(eical, tmp_path):
    t = make_table(tmp_path / "t.json", "devboard", [64] * 32, [64] * 32,
                   controller={"name": "read-back", "settings": {"port": "/dev/pts/3", "bank": "B", "generation": 2,
                                                                  "crc": "0x1234abcd", "active": True}})
    code, out, _ = eical("table", "show", t)
    assert code == 0
    assert "read back from board at /dev/pts/3 (bank B, gen 2, crc 0x1234abcd, active)" in out
    assert "metrics    none (read back from a board: the board stores codes only)" in out


def test_diff_names_code_and_gain_changes_and_the_neurons_that_moved_most(eical, tmp_path):
    a = make_table(tmp_path / "a.json", "devboard", [64] * 32, [64] * 32)
    ce, ci = [64] * 32, [64] * 32
    ce[5], ci[5] = 96, 70      # +50 % and +9.4 %
    ce[17] = 32                # -50 %
    ci[9] = 60                 # -6.25 %
    b = make_table(tmp_path / "b.json", "devboard", ce, ci)
    code, out, err = eical("table", "diff", a, b, "--top", "3")
    assert code == 0 and err == ""
    assert "gain_e: 2 of 32 neurons changed (1 up, 1 down); code change mean +0.00, largest 32; gain change " \
           "(linear DAC) median 50.0 %, largest 50.0 %" in out
    assert "gain_i: 2 of 32 neurons changed (1 up, 1 down)" in out
    moved = out.split("moved most:\n")[1].splitlines()
    assert len(moved) == 3
    assert moved[0].split(":")[0].strip() == "neuron 5" and "gain_e 64 -> 96 (+50.0 %)" in moved[0]
    assert moved[1].split(":")[0].strip() == "neuron 17" and "gain_e 64 -> 32 (-50.0 %)" in moved[1]
    assert moved[2].split(":")[0].strip() == "neuron 9" and "gain_i 64 -> 60 (-6.2 %)" in moved[2]
    d = json.loads(eical("table", "diff", a, b, "--json")[1])
    assert d["knobs"]["gain_e"]["changed"] == 2 and d["moved_most"][0]["group"] == 5 and d["gains"]
    code, out, _ = eical("table", "diff", a, a)
    assert code == 0 and "no code differs" in out


def test_diff_goes_through_the_coarse_fine_dac(eical, tmp_path):
    """dynapse2 (per-core 11-bit coarse/fine codes): code 127 -> 128 is one code up but 5.5 % less current (bit 7
    of the fine DAC is weak); the diff says so instead of +0.8 %."""
    k = make_knobs(load_profile("dynapse2"))["gain_e"]
    ref = k.code_ref
    a = make_table(tmp_path / "a.json", "dynapse2", [ref, ref, ref, 127], [ref] * 4)
    b = make_table(tmp_path / "b.json", "dynapse2", [ref, ref, ref, 128], [ref] * 4)
    code, out, _ = eical("table", "diff", a, b)
    assert code == 0
    g = k.nominal_gain(np.array([127, 128]))
    pct = (g[1] / g[0] - 1) * 100
    assert pct == pytest.approx(-5.45, abs=0.1)
    assert f"gain_e: 1 of 4 cores changed (1 up, 0 down)" in out
    assert f"largest {abs(pct):.1f} %" in out and "1 moved their gain against their code" in out
    assert f"core 3: gain_e 127 -> 128 ({pct:+.1f} %)" in out


def test_diff_and_show_refuse_what_they_cannot_compare(eical, tmp_path):
    a = make_table(tmp_path / "a.json", "devboard", [64] * 32, [64] * 32)
    d = make_table(tmp_path / "d.json", "dynapse2", [723] * 4, [723] * 4)
    code, out, err = eical("table", "diff", a, d)
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot diff knob 'gain_e'" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = eical("table", "show", tmp_path / "bad.json")
    assert code == 2 and "bad.json: not valid JSON" in err and err.count("\n") == 1
    code, _, err = eical("table", "diff", a, tmp_path / "missing.json")
    assert code == 2 and "missing.json" in err


def test_tables_of_a_profile_not_installed_here_compare_codes_only(eical, tmp_path):
    t = GainTable(chip_uid="board-x", profile="somewhere-else", profile_sha256="ab" * 32, seed=None,
                  knobs={"gain_e": KnobTable("neuron", 8, [10, 20]), "gain_i": KnobTable("neuron", 8, [5, 5])})
    t.save(tmp_path / "a.json")
    t.knobs["gain_e"] = KnobTable("neuron", 8, [10, 40])
    t.save(tmp_path / "b.json")
    code, out, _ = eical("table", "diff", tmp_path / "a.json", tmp_path / "b.json")
    assert code == 0 and "not installed here: codes only" in out and "neuron 1: gain_e 20 -> 40, gain_i 5 -> 5" in out
    code, out, _ = eical("table", "show", tmp_path / "a.json")
    assert code == 0 and "codes only, no gains" in out and "gain (code_ref" not in out
