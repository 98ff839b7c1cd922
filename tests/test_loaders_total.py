"""Loaders are total: any bytes as a profile or a gain table give a valid object or the library's own error
(ProfileError, TableError), one line naming the file, in bounded time and memory. NVM images: test_fb_nvmimage.py.

Property tests (hypothesis) feed random bytes, byte-mutated copies of real files, and real files with random
YAML/JSON values put under their valid keys. ``N_EXAMPLES`` per property in CI, ``N_SLOW`` under ``slow``.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw_models.profile import PROFILE_MAX_BYTES, Profile, ProfileError, list_profiles, load_profile
from hw_models.table import TABLE_MAX_BYTES, GainTable, KnobTable, TableError

N_EXAMPLES = 300
N_SLOW = 3000
REPO = Path(__file__).resolve().parent.parent
PROFILE_TEXT = list_profiles()["devboard"].read_bytes()
TABLE_TEXT = GainTable(chip_uid="emu-devboard-1", profile="devboard", profile_sha256="ab" * 32,
                       knobs={"gain_e": KnobTable("neuron", 8, [1, 2, 3, 200]),
                              "gain_i": KnobTable("core", 10, [1000])},
                       targets={"rate_hz": 10.0}, metrics={"after": {"rate_mean_hz": 9.9}}).to_json().encode()

fast = settings(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                               HealthCheck.too_slow])
slow = settings(fast, max_examples=N_SLOW)


# -- strategies -------------------------------------------------------------------------------------------------------


@st.composite
def mutated(draw, base: bytes):
    """``base`` with 1-8 random edits: a byte replaced, bytes inserted, a span deleted or duplicated, a cut."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "duplicate", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "replace" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "duplicate":
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
        else:
            del data[i:]
    return bytes(data)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | \
    st.sampled_from([10 ** 400, -(10 ** 30), float("inf"), "", "\n", "\x00", "2001-12-14", "1e400", "0x10"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4), max_leaves=12)


def _paths(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


PROFILE_DATA = yaml.safe_load(PROFILE_TEXT)
PROFILE_PATHS = sorted(_paths(PROFILE_DATA), key=str)
TABLE_DATA = json.loads(TABLE_TEXT)
TABLE_PATHS = sorted(_paths(TABLE_DATA), key=str)


def _with(data, path, value):
    d = json.loads(json.dumps(data))
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


@st.composite
def profile_with_random_value(draw):
    d = _with(PROFILE_DATA, draw(st.sampled_from(PROFILE_PATHS)), draw(values))
    return yaml.safe_dump(d, allow_unicode=draw(st.booleans())).encode()


@st.composite
def table_with_random_value(draw):
    d = _with(TABLE_DATA, draw(st.sampled_from(TABLE_PATHS)), draw(values))
    return json.dumps(d).encode()


# -- the property ----------------------------------------------------------------------------------------------------


def check_profile(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        assert isinstance(load_profile(path), Profile)
    except ProfileError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(str(path)), msg


def check_table(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        assert isinstance(GainTable.load(path), GainTable)
    except TableError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(str(path)), msg


@fast
@given(data=st.binary(max_size=2048))
def test_random_bytes_as_a_profile(tmp_path, data):
    check_profile(tmp_path / "p.yaml", data)


@fast
@given(data=mutated(PROFILE_TEXT))
def test_mutated_profile(tmp_path, data):
    check_profile(tmp_path / "p.yaml", data)


@fast
@given(data=profile_with_random_value())
def test_profile_with_a_random_value_under_a_valid_key(tmp_path, data):
    check_profile(tmp_path / "p.yaml", data)


@fast
@given(data=st.binary(max_size=2048))
def test_random_bytes_as_a_table(tmp_path, data):
    check_table(tmp_path / "t.json", data)


@fast
@given(data=mutated(TABLE_TEXT))
def test_mutated_table(tmp_path, data):
    check_table(tmp_path / "t.json", data)


@fast
@given(data=table_with_random_value())
def test_table_with_a_random_value_under_a_valid_key(tmp_path, data):
    check_table(tmp_path / "t.json", data)


@pytest.mark.slow
@slow
@given(data=st.one_of(st.binary(max_size=4096), mutated(PROFILE_TEXT), profile_with_random_value()))
def test_profiles_many_examples(tmp_path, data):
    check_profile(tmp_path / "p.yaml", data)


@pytest.mark.slow
@slow
@given(data=st.one_of(st.binary(max_size=4096), mutated(TABLE_TEXT), table_with_random_value()))
def test_tables_many_examples(tmp_path, data):
    check_table(tmp_path / "t.json", data)


def test_the_seeds_of_the_properties_are_valid():
    """The mutation bases load: a property that could only ever fail would prove nothing."""
    assert isinstance(load_profile(list_profiles()["devboard"]), Profile)
    p = Path(__file__).parent / "__base_table.json"
    try:
        p.write_bytes(TABLE_TEXT)
        assert isinstance(GainTable.load(p), GainTable)
    finally:
        p.unlink()


# -- specific hostile files ------------------------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f'  b0: &b0 [{", ".join(["lol"] * width)}]']
    for i in range(1, levels + 1):
        lines.append(f"  b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]")
    return "\n".join(lines)


def nested_bomb_profile() -> str:
    """devboard with its description replaced by a 9-level alias bomb (9**9 = 387 million strings expanded)."""
    text = PROFILE_TEXT.decode()
    kept = [line for line in text.splitlines() if not line.startswith("description:")]
    return "\n".join(kept) + "\ndescription:\n" + alias_bomb() + "\n"


def test_nested_alias_bomb_is_refused_in_bounded_memory(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(nested_bomb_profile())
    tracemalloc.start()
    try:
        with pytest.raises(ProfileError, match="alias bomb") as e:
            load_profile(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6 and str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_nested_alias_bomb_in_a_fresh_process():
    """What the issue measured: a separate process (RSS), with a hard limit in case the loader regressed."""
    code = textwrap.dedent(f"""
        import resource, sys, tempfile, pathlib
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_loaders_total import nested_bomb_profile
        from hw_models.profile import load_profile, ProfileError
        p = pathlib.Path(tempfile.mkdtemp()) / "bomb.yaml"
        p.write_text(nested_bomb_profile())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_profile(p)
        except ProfileError as e:
            print(str(e))
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    line, grew = r.stdout.strip().splitlines()
    assert "alias bomb" in line and int(grew) < 100e6


@pytest.mark.parametrize("text, what", [
    ("a: &a [*a]\n", "cycle"),
    ("schema: 1\nname: x\ndescription: " + "[" * 200 + "]" * 200 + "\n", "nested deeper"),
    ("description:\n" + alias_bomb(4, 40) + "\n", "alias bomb"),
    ("x: &x {a: 1}\ny: *x\n", "unknown key"),  # aliases as such are fine; this fails on the key
])
def test_yaml_limits(tmp_path, text, what):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(ProfileError, match=what):
        load_profile(p)


def test_aliases_within_limits_are_allowed(tmp_path):
    """Sharing one block of mismatch levels between keys is fair use of YAML."""
    d = yaml.safe_load(PROFILE_TEXT)
    text = yaml.safe_dump(d, sort_keys=False)
    lvl = d["mismatch"]["lognormal"]["C"]
    anchored = text.replace("    C:\n", "    C: &lv\n", 1)
    assert anchored != text
    anchored = anchored.replace("    gL:\n" + "".join(f"      {k}: {v}\n" for k, v in d["mismatch"]["lognormal"]["gL"]
                                                   .items()), "    gL: *lv\n", 1)
    assert "gL: *lv" in anchored
    p = tmp_path / "anchored.yaml"
    p.write_text(anchored)
    prof = load_profile(p)
    assert prof["mismatch"]["lognormal"]["gL"] == prof["mismatch"]["lognormal"]["C"]
    assert all(prof["mismatch"]["lognormal"]["C"][k] == v for k, v in lvl.items())


@pytest.mark.parametrize("loader, error, limit", [(load_profile, ProfileError, PROFILE_MAX_BYTES),
                                                  (GainTable.load, TableError, TABLE_MAX_BYTES)])
def test_files_over_the_cap_are_refused_without_reading_them(tmp_path, loader, error, limit):
    p = tmp_path / "big.yaml"
    with open(p, "wb") as f:
        f.truncate(limit + 1)  # sparse
    with pytest.raises(error, match="larger than"):
        loader(p)
    with pytest.raises(error, match="larger than"):
        loader("/dev/zero")


@pytest.mark.parametrize("loader, error", [(load_profile, ProfileError), (GainTable.load, TableError)])
@pytest.mark.parametrize("data, text", [
    (random.Random(1).randbytes(3000), "not UTF-8"),
    (b"\xef\xbb\xbf" + b"\xff\xfe", "not UTF-8"),
    ('{"schema": ' + "9" * 5000 + "}", "more digits than can be read"),
    ("[" * 100000 + "]" * 100000, "nested"),
])
def test_hostile_files(tmp_path, loader, error, data, text):
    p = tmp_path / ("f.yaml" if loader is load_profile else "f.json")
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(error, match=text) as e:
        loader(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_keys_with_newlines_stay_on_one_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text('"bad\\nkey": 1\n')
    with pytest.raises(ProfileError) as e:
        load_profile(p)
    assert "\n" not in str(e.value) and "bad\\nkey" in str(e.value)
    q = tmp_path / "t.json"
    q.write_text('{"bad\\nkey": 1}')
    with pytest.raises(TableError) as e:
        GainTable.load(q)
    assert "\n" not in str(e.value)
