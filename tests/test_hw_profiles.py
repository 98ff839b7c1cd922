"""Device profiles: every shipped profile loads and is documented; every broken profile fails with one clear line."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hw_models.profile import Profile, ProfileError, list_profiles, load_profile

ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = ROOT / "device_profiles"
SHIPPED = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def test_the_issue_profiles_are_shipped():
    assert {"bss2", "dynapse2", "devboard"} <= set(SHIPPED)
    assert {"bss2", "dynapse2", "devboard"} <= set(list_profiles())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_profile_loads(name):
    p = load_profile(name)
    assert p.name == name
    assert p.n_neurons > 0
    assert len(p.sha256) == 64
    # the validated content round-trips through YAML to the same profile (same hash)
    again = Profile(yaml.safe_load(p.to_yaml()), source="<roundtrip>")
    assert again.sha256 == p.sha256


@pytest.mark.parametrize("name", SHIPPED)
def test_every_nominal_value_and_sigma_has_a_comment(name):
    """The issue: every nominal value and sigma carries a comment with its source or says it is an assumption."""
    lines = (PROFILE_DIR / f"{name}.yaml").read_text().splitlines()
    section = None
    missing = []
    for no, line in enumerate(lines, 1):
        top = re.match(r"^([A-Za-z_]+):", line)
        if top:
            section = top.group(1)
            continue
        if section not in ("neuron", "mismatch"):
            continue
        m = re.match(r"^\s+([A-Za-z_0-9]+):\s*(\S.*)$", line)
        if m and not m.group(2).startswith("#"):  # a key with a value on this line
            if "#" not in m.group(2):
                missing.append(f"line {no}: {line.strip()}")
    assert not missing, f"{name}.yaml: values without a source comment: {missing}"


def test_shipped_profiles_match_the_issue():
    d = load_profile("dynapse2")
    assert d.model == "dpi" and d.n_cores == 4 and d.neurons_per_core == 256
    kn = d["knobs"]
    assert kn["sharing"] == "core" and kn["dac"] == "coarse_fine" and kn["bits"] == 11
    for k in ("code_ref_e", "code_ref_i"):
        assert kn[k] % 256 >= 100, "code_ref should use a high fine value"
    assert d["observe"]["proxy_channels"] == "one_per_core"
    b = load_profile("devboard")
    assert b.model == "cond_lif" and b.n_neurons == 32
    kb = b["knobs"]
    assert kb["sharing"] == "neuron" and kb["bits"] == 8 and kb["dac"] == "linear"
    assert 64 <= kb["code_ref_e"] <= 96 and 64 <= kb["code_ref_i"] <= 96
    assert load_profile("bss2").model == "cond_lif"


# ---------------------------------------------------------------------------------------------------------------
# broken profiles: (case id, edit of the bss2 data, key path in the message, expectation in the message)
# ---------------------------------------------------------------------------------------------------------------
def _set(path, value):
    def edit(d):
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return edit


def _delete(path):
    def edit(d):
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return edit


BROKEN = [
    ("unknown-top-key", _set("colour", "blue"), "colour", "unknown key; expected one of"),
    ("unknown-nested-key", _set("neuron.Vthresh_mV", -50.0), "neuron.Vthresh_mV", "unknown key; expected one of"),
    ("unknown-level", _set("mismatch.lognormal.gL", {"chip": 0.1, "wafer": 0.2}), "mismatch.lognormal.gL.wafer",
     "expected one of chip, core, neuron"),
    ("missing-leaf", _delete("neuron.Ge0_nS"), "neuron.Ge0_nS", "missing; expected a number"),
    ("missing-section", _delete("knobs"), "knobs", "missing; expected a mapping"),
    ("wrong-type-str", _set("geometry.cores", "four"), "geometry.cores", "expected an integer in [1, 4096], got 'four'"),
    ("wrong-type-float-for-int", _set("knobs.bits", 10.5), "knobs.bits", "expected an integer in [1, 16], got 10.5"),
    ("wrong-type-bool", _set("neuron.C_pF", True), "neuron.C_pF", "expected a number in (0, 100000], got True"),
    ("out-of-range-negative-sigma", _set("mismatch.lognormal.gL.neuron", -0.1), "mismatch.lognormal.gL.neuron",
     "expected a number in [0, 2], got -0.1"),
    ("out-of-range-dt", _set("dt_ms", 5.0), "dt_ms", "expected a number in [0.001, 1], got 5.0"),
    ("zero-positive-quantity", _set("neuron.gL_nS", 0.0), "neuron.gL_nS", "expected a number in (0, 10000], got 0.0"),
    ("bad-choice", _set("knobs.sharing", "synapse"), "knobs.sharing", "expected one of 'neuron', 'core', 'chip'"),
    ("code-ref-above-dac", _set("knobs.code_ref_e", 2000), "knobs.code_ref_e",
     "expected an integer in [1, 1023] for a 10-bit DAC, got 2000"),
    ("indegree-above-pool", _set("input.K_e", 2000), "input.K_e", "expected at most input.n_src_e = 1000, got 2000"),
    ("reversal-order", _set("neuron.EI_mV", -60.0), "neuron", "expected EI_mV < EL_mV < EE_mV"),
    ("section-not-mapping", _set("observe", 3), "observe", "expected a mapping, got 3"),
    ("levels-not-mapping", _set("mismatch.lognormal.C", 0.1), "mismatch.lognormal.C",
     "expected a mapping {chip, core, neuron} of numbers"),
]


def _write(tmp_path: Path, edit, name="broken.yaml") -> Path:
    data = yaml.safe_load((PROFILE_DIR / "bss2.yaml").read_text())
    edit(data)
    f = tmp_path / name
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


@pytest.mark.parametrize("case,edit,path,expected", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_profile_gives_one_clear_line(tmp_path, case, edit, path, expected):
    f = _write(tmp_path, edit)
    with pytest.raises(ProfileError) as ei:
        load_profile(f)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}: {path}: "), msg  # the file, then the key path
    assert expected in msg, msg  # what was expected


def test_broken_profile_cases_are_many_and_distinct():
    assert len(BROKEN) >= 8
    assert len({c[2] for c in BROKEN}) >= 8


@pytest.mark.parametrize("text,where", [
    ("schema: 1\nname: [unclosed\n", "not valid YAML at line"),
    ("", "<top>: empty file"),
    ("- 1\n- 2\n", "<top>: expected a mapping"),
])
def test_unparseable_files(tmp_path, text, where):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=re.escape(where)) as ei:
        load_profile(f)
    assert str(ei.value).startswith(str(f)) and "\n" not in str(ei.value)


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ProfileError, match="no such profile; known profiles: .*bss2"):
        load_profile("no_such_chip")


def test_dpi_profile_is_checked_against_the_dpi_schema(tmp_path):
    data = yaml.safe_load((PROFILE_DIR / "dynapse2.yaml").read_text())
    data["neuron"]["C_pF"] = 200.0  # a cond_lif key in a dpi profile
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r": neuron\.C_pF: unknown key"):
        load_profile(f)
    data = yaml.safe_load((PROFILE_DIR / "dynapse2.yaml").read_text())
    data["knobs"]["bits"] = 10
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r": knobs\.bits: expected 11 for a coarse/fine DAC"):
        load_profile(f)


_CLI = [sys.executable, "-m", "calibrate.cli"]  # `eical` in a child process


def test_cli_validate_broken_profile_exit_2_one_line(tmp_path):
    f = _write(tmp_path, _set("mismatch.lognormal.gL.neuron", -0.1))
    proc = subprocess.run([*_CLI, "profiles", "validate", str(f)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(f) in lines[0] and "mismatch.lognormal.gL.neuron" in lines[0]
    assert "expected a number in [0, 2], got -0.1" in lines[0]
    assert proc.stdout == ""


def test_cli_validate_good_profile(tmp_path):
    proc = subprocess.run([*_CLI, "profiles", "validate", str(PROFILE_DIR / "devboard.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ": ok (devboard, cond_lif, 32 neurons" in proc.stdout
