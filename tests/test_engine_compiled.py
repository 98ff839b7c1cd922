"""The compiled engine (hw_models.kernels) against the numpy step loop it replaced (hw_models.reference), bit for bit,
and its reproducibility: window cuts, thread counts, block widths and processes change no value.

The bit-identity tests need the compiled step to call numpy's own exp and pow (``VECTOR_MATH.exact``); where no
candidate routine reproduces numpy on this machine they say so and skip (docs/model.md, "Performance").
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw_models import kernels
from hw_models.emulator import NumpyDevice
from hw_models.profile import load_profile
from hw_models.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]
STATS_FIELDS = ("spike_counts", "iexc", "iinh", "isyn", "mean_ge", "mean_gi")
exact = pytest.mark.skipif(not kernels.VECTOR_MATH.exact,
                           reason=f"no routine reproduces numpy's exp/pow here: {kernels.VECTOR_MATH.describe()}")


def _state(dev) -> list[np.ndarray]:
    s = dev.engine.state
    names = ("V", "ge", "gi", "r") if dev.chip.model == "cond_lif" else ("Imem", "Iampa", "Igaba", "Ipre", "r")
    return [np.asarray(getattr(s, k)).copy() for k in names]


def _same_stats(a, b, where):
    for f in STATS_FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), (where, f)
        if x is not None:
            assert np.array_equal(x, y), (where, f, np.flatnonzero(x != y)[:5])


def _session(profile, seed, reference, windows_ms, *, threads=1, recorder=None, codes_rng=7, temperature_at=None,
             record_isyn=True):
    """One device through a series of windows with code changes between windows and a temperature step."""
    dev = NumpyDevice(profile, seed, reference=reference, threads=threads, recorder=recorder, record_isyn=record_isyn)
    rng = np.random.default_rng(codes_rng)
    out = []
    for w, ms in enumerate(windows_ms):
        if w % 2 == 1:
            codes = {}
            for k, v in dev.codes.items():
                spec = dev.knobs[k]
                c = np.clip(v + rng.integers(-12, 13, v.shape), 1, 2 ** spec.bits - 1)
                if spec.transfer is not None:  # a coarse/fine DAC has invalid codes: keep those groups' codes
                    c = np.where(np.isfinite(spec.transfer[c]), c, v)
                codes[k] = c
            dev.set_codes(codes)
        if temperature_at is not None and w == temperature_at:
            dev.set_temperature(dev.temperature_k + 6.0)
        st = dev.run_true(ms)
        out.append((st, _state(dev)))
    return dev, out


CASES = {
    # name: (profile, seed, windows in ms); dead neurons: bss2 and balanced-net draw 1 %, the dpi case 10 %
    "cond_lif": (load_profile("bss2").with_changes({"geometry.cores": 1, "geometry.neurons_per_core": 192}), 3,
                 [30.0, 0.1, 47.3, 100.0, 112.5]),
    "dpi": (load_profile("dynapse2").with_changes({"defects.dead_fraction": 0.1}), 4, [20.0, 55.5, 0.2, 100.0]),
    "recurrent": ("balanced-net", 2, [40.0, 33.3, 0.1, 80.0]),
    "devboard": ("devboard", 1, [100.0, 250.0, 1.0, 150.0]),
}


@exact
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_engine_equals_the_numpy_step_loop(case):
    """Spike counts, window means (proxy parts, conductances, true synaptic current) and the membrane state after
    every window, bit for bit, through gain changes and a temperature step."""
    profile, seed, windows = CASES[case]
    dev, fast = _session(profile, seed, False, windows, temperature_at=2)
    _, ref = _session(profile, seed, True, windows, temperature_at=2)
    assert dev.chip.dead.any() or case == "devboard"
    for w, ((sa, xa), (sb, xb)) in enumerate(zip(fast, ref)):
        _same_stats(sa, sb, (case, w))
        for k, (x, y) in enumerate(zip(xa, xb)):
            assert np.array_equal(x, y), (case, w, "state", k)
    assert sum(int(s.spike_counts.sum()) for s, _ in fast) > 50, "too few spikes for the comparison to mean much"


@exact
@pytest.mark.parametrize("case", ["recurrent", "dpi"])
def test_recordings_equal_the_numpy_step_loop(case):
    """The recorder receives the same spikes and samples, so a recording (rasters, population series, traces,
    per-neuron means) is the same file either way."""
    profile, seed, windows = CASES[case]
    n = NumpyDevice(profile, seed).chip.n
    recs = [Recorder(n, 0.1, sample_every_steps=7) for _ in range(2)]
    _session(profile, seed, False, windows, recorder=recs[0])
    _session(profile, seed, True, windows, recorder=recs[1])
    a, b = (r.finish() for r in recs)
    assert a.spike_steps.size > 20
    for f in ("spike_steps", "spike_ids", "spike_counts", "sample_steps", "pop_series", "trace_steps", "traces"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
    for k in a.neuron_means:
        assert np.array_equal(a.neuron_means[k], b.neuron_means[k], equal_nan=True), k


class _Spikes:
    """A recorder without the batch method: the engine calls on_spikes once per step, as the step loop did."""

    sample_every_steps = 0

    def __init__(self):
        self.calls = []

    def on_spikes(self, step, idx):
        self.calls.append((int(step), np.asarray(idx).tolist()))


def test_per_step_recorder_calls_equal_the_batch_path():
    a, b = _Spikes(), Recorder(1000, 0.1, sample_every_steps=10 ** 9)
    for rec in (a, b):
        NumpyDevice("balanced-net", 5, recorder=rec).run_true(60.0)
    got = b.finish()
    steps = [s for s, ids in a.calls for _ in ids]
    ids = [i for _, ids in a.calls for i in ids]
    assert len(ids) > 100
    assert np.array_equal(steps, got.spike_steps) and np.array_equal(ids, got.spike_ids)
    assert all(x[0] < y[0] for x, y in zip(a.calls, a.calls[1:]))  # one call per step, in order


@pytest.mark.parametrize("profile", ["bss2", "balanced-net", "dynapse2"])
def test_window_cuts_change_nothing(profile):
    """The same 260 ms as one window, as windows cut anywhere (across input blocks), and step by step for a stretch:
    the same spike trains and the same final state."""
    total = 2600
    cuts = [1, 999, 1, 7, 250, 342, 700]  # then 50 single steps and the rest as one window
    runs = []
    for mode in ("one", "cut"):
        rec = Recorder(NumpyDevice(profile, 1).chip.n, 0.1, sample_every_steps=10 ** 9)
        dev = NumpyDevice(profile, 1, recorder=rec)
        if mode == "one":
            dev.engine.run(total)
        else:
            for c in cuts:
                dev.engine.run(c)
            dev.engine.begin_window()
            for _ in range(50):
                dev.engine.step()
            dev.engine.end_window()
            dev.engine.run(total - sum(cuts) - 50)
        runs.append((rec.finish(), _state(dev)))
    (ra, sa), (rb, sb) = runs
    assert ra.spike_steps.size > 50
    assert np.array_equal(ra.spike_steps, rb.spike_steps) and np.array_equal(ra.spike_ids, rb.spike_ids)
    for x, y in zip(sa, sb):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("profile", [
    load_profile("bss2").with_changes({"geometry.cores": 3, "geometry.neurons_per_core": 400}),
    "balanced-net",
    load_profile("dynapse2").with_changes({"geometry.cores": 6, "geometry.neurons_per_core": 128}),
], ids=["cond_lif", "recurrent", "dpi"])
def test_thread_count_and_block_width_change_nothing(profile, monkeypatch):
    """1 and 2 threads, and serial runs with narrow blocks (every block finds its part of each input row by
    bisection): identical statistics, state and recordings, in both kernel modes (blocks through the whole window;
    all blocks every step, with a recorder or recurrent input; the threaded stepwise mode is forced here, the
    engine uses it only for large chips)."""
    from hw_models import engine

    monkeypatch.setattr(engine, "STEPWISE_PARALLEL_MIN_NEURONS", 0)

    def run(threads, width, windows, recorder):
        original = kernels.block_width
        if width is not None:
            monkeypatch.setattr(kernels, "block_width", lambda n, t: width)
        try:
            rec = Recorder(NumpyDevice(profile, 6).chip.n, 0.1, sample_every_steps=13) if recorder else None
            dev, out = _session(profile, 6, False, windows, threads=threads, recorder=rec)
            return out, (rec.finish() if rec is not None else None)
        finally:
            monkeypatch.setattr(kernels, "block_width", original)

    short = [3.0, 1.3, 2.0]  # the stepwise mode pays a barrier per step on two threads: keep it short
    recurrent = profile == "balanced-net"
    for windows, recorder, variants in ((short if recurrent else [20.0, 13.4, 30.0], False,
                                         ((2, None), (1, 64), (1, 200), (2, 96))),
                                        (short, True, ((2, None), (1, 64)))):
        base, rec0 = run(1, None, windows, recorder)
        for threads, width in variants:
            other, rec1 = run(threads, width, windows, recorder)
            for w, ((sa, xa), (sb, xb)) in enumerate(zip(base, other)):
                _same_stats(sa, sb, (threads, width, w, recorder))
                for x, y in zip(xa, xb):
                    assert np.array_equal(x, y), (threads, width, w, recorder)
            if recorder:
                assert np.array_equal(rec0.spike_steps, rec1.spike_steps)
                assert np.array_equal(rec0.spike_ids, rec1.spike_ids)
                assert np.array_equal(rec0.pop_series, rec1.pop_series, equal_nan=True)


_CHILD = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from hw_models.emulator import NumpyDevice
out = {}
for name in sys.argv[1:]:
    dev = NumpyDevice(name, 9, record_isyn=True)
    st = dev.run_true(120.0)
    st2 = dev.run_true(33.3)
    s = dev.engine.state
    x = s.V if dev.chip.model == "cond_lif" else s.Imem
    out[name] = {"counts": st.spike_counts.tolist() + st2.spike_counts.tolist(), "iexc": st.iexc.tolist(),
                 "iinh": st2.iinh.tolist(), "state": x.tolist()}
print(json.dumps(out))
"""


def test_another_process_gives_the_same_chip_and_spikes():
    """A chip run in a fresh interpreter (its own numba cache load, its own exp/pow routine choice) equals this one."""
    names = ["devboard", "dynapse2", "balanced-net"]
    r = subprocess.run([sys.executable, "-c", _CHILD, *names], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    child = json.loads(r.stdout)
    for name in names:
        dev = NumpyDevice(name, 9, record_isyn=True)
        st, st2 = dev.run_true(120.0), dev.run_true(33.3)
        s = dev.engine.state
        x = s.V if dev.chip.model == "cond_lif" else s.Imem
        c = child[name]
        assert c["counts"] == st.spike_counts.tolist() + st2.spike_counts.tolist(), name
        assert c["iexc"] == st.iexc.tolist() and c["iinh"] == st2.iinh.tolist(), name  # floats, exactly
        assert c["state"] == x.tolist(), name


def test_one_compiled_specialisation():
    """Every chip, model and mode goes through one compiled signature of the serial kernel (a second one would
    mean a second compilation on a user's first call)."""
    NumpyDevice("devboard", 1).run_true(5.0)
    NumpyDevice("dynapse2", 1, record_isyn=True).run_true(5.0)
    NumpyDevice("balanced-net", 1, recorder=Recorder(1000, 0.1, sample_every_steps=5)).run_true(5.0)
    assert len(kernels.run_window_serial.signatures) == 1


def test_threads_are_checked():
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        NumpyDevice("devboard", 1, threads=0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        NumpyDevice("devboard", 1, threads=1.5)


def test_vector_math_choice_is_reported():
    d = kernels.VECTOR_MATH.describe()
    assert set(d) == {"exp", "exp_matches_numpy", "pow", "pow_matches_numpy"}
    x = -np.linspace(0.0, 0.1, 1001)
    y = x.copy()
    vm = kernels.VECTOR_MATH
    vm.apply("map8" if vm.lanes_exp == 8 else "map1", int(vm.addresses[1]), y)
    if vm.exp.matches_numpy:
        assert np.array_equal(y, np.exp(x))
    else:
        np.testing.assert_allclose(y, np.exp(x), rtol=4e-16)


def test_a_malformed_chip_is_refused_before_it_runs():
    """The kernel trusts its indices; a chip whose arrays do not fit its size never reaches it."""
    import dataclasses

    from hw_models.chip import draw_chip
    from hw_models.engine import Engine

    chip = draw_chip("devboard", 1)
    with pytest.raises(ValueError, match=r"in_e has shape \(31, 64\), expected \(32, 64\)"):
        Engine(dataclasses.replace(chip, in_e=chip.in_e[:-1]))
    params = dict(chip.params, C=chip.params["C"][:5])
    with pytest.raises(ValueError, match="parameter C has shape"):
        Engine(dataclasses.replace(chip, params=params))


def test_numba_thread_settings_are_restored():
    """The engine sets numba's thread count and chunk size for its own call only (they are per-thread settings
    that other numba code in the process shares)."""
    import numba

    before = numba.get_num_threads(), numba.get_parallel_chunksize()
    profile = load_profile("bss2").with_changes({"geometry.cores": 2, "geometry.neurons_per_core": 512})
    NumpyDevice(profile, 1, threads=2).run_true(3.0)
    assert (numba.get_num_threads(), numba.get_parallel_chunksize()) == before


def test_the_c_library_fallback_runs_the_same_model(monkeypatch):
    """Where numpy's exp/pow cannot be reproduced the kernel calls the C library's (scalar thunks). Those give
    glibc's bits exactly, and a chip run on them keeps every other guarantee and the same statistics."""
    import math

    vm = kernels.VECTOR_MATH
    c = vm.c_library_addresses
    x = -np.linspace(0.0, 0.1, 1003)
    y = x.copy()
    vm.apply("map1", int(c[1]), y)
    assert y.tolist() == [math.exp(v) for v in x]
    b = np.exp(np.linspace(0.0, 14.0, 1001))
    z = b.copy()
    vm.apply("map1p", int(c[3]), z, 0.41343963553530753)
    assert z.tolist() == [math.pow(v, 0.41343963553530753) for v in b]

    runs = {}
    for name in ("devboard", "dynapse2"):
        for which in ("numpy", "libm", "libm-cut"):
            if which != "numpy":
                monkeypatch.setattr(vm, "addresses", c)
            dev = NumpyDevice(name, 2)
            if which == "libm-cut":
                counts = sum(dev.run_true(ms).spike_counts for ms in (100.0, 0.1, 399.9))
            else:
                counts = dev.run_true(500.0).spike_counts
            runs[name, which] = (counts, _state(dev))
            monkeypatch.undo()
        a, b_, cut = runs[name, "numpy"], runs[name, "libm"], runs[name, "libm-cut"]
        assert np.array_equal(b_[0], cut[0]) and all(np.array_equal(p, q) for p, q in zip(b_[1], cut[1]))
        assert abs(int(b_[0].sum()) - int(a[0].sum())) <= 0.05 * a[0].sum() + 5, name  # same model, same rates
