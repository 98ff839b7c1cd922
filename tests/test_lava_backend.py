"""The Lava backend: bit-identical to numpy, and it never hangs or leaks.

Runs in the Python 3.10 lane of ``make test`` (``pytest -m lava`` under ``timeout -s KILL``); skipped where Lava is
not installed. Small chips and module-scoped profiles keep the whole module to a few seconds of Lava time.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lava")

from hw_models.chip import draw_chip  # noqa: E402
from hw_models.device import CodeError, Device, DeviceError  # noqa: E402
from hw_models.emulator import NumpyDevice  # noqa: E402
from hw_models.engine import Engine  # noqa: E402
from hw_models.emulator import gains_from_codes  # noqa: E402
from hw_models.lava import LavaDevice, LavaModelError, open_sessions  # noqa: E402
from hw_models.lava.stepping import SteppedEngine  # noqa: E402
from hw_models.profile import load_profile  # noqa: E402

pytestmark = pytest.mark.lava

ROOT = Path(__file__).resolve().parent.parent
STATS_FIELDS = ("spike_counts", "iexc", "iinh", "isyn", "mean_ge", "mean_gi")


@pytest.fixture(scope="module")
def cond_profile():
    """bss2-like cond_lif chip, 64 neurons, per-neuron 10-bit knobs, proxy on every neuron."""
    return load_profile("bss2").with_changes({"geometry.neurons_per_core": 64})


@pytest.fixture(scope="module")
def dpi_profile():
    """dynapse2-like dpi chip, 3 cores x 12 neurons, per-core coarse/fine knobs, one proxy channel per core."""
    return load_profile("dynapse2").with_changes({"geometry.cores": 3, "geometry.neurons_per_core": 12})


@pytest.fixture(scope="module")
def lava_warm():
    """Lava imported and run once, so the one-off state of a first run (e.g. multiprocessing's resource tracker
    and its pipe) is not counted as a leak."""
    with LavaDevice("devboard", 0) as dev:
        dev.measure(1.0)


@pytest.fixture(scope="module", autouse=True)
def no_leftovers():
    """Every test here leaves no Lava worker, session or helper thread behind."""
    yield
    assert open_sessions() == 0
    assert multiprocessing.active_children() == []


def _random_codes(knobs, rng):
    out = {}
    for name, spec in knobs.items():
        valid = spec.valid_codes()
        # around nominal: from half to twice the reference gain, so the chips keep firing at sane rates
        g = spec.nominal_gain(valid)
        ok = valid[(g >= 0.5) & (g <= 2.0)]
        out[name] = rng.choice(ok, spec.n_groups)
    return out


def _assert_same_measurements(profile, seed, windows_ms, *, monitor_for=None, temperature_at=None):
    rng = np.random.default_rng(seed)
    with NumpyDevice(profile, seed) as a, LavaDevice(profile, seed) as b:
        assert isinstance(b, Device)
        assert b.identity == dataclasses.replace(a.identity, backend="lava")
        total = 0
        for w, window_ms in enumerate(windows_ms):
            if w % 2 == 0:
                codes = _random_codes(a.knobs, rng)
                a.set_codes(codes)
                b.set_codes(codes)
            if temperature_at == w:
                a.set_temperature(a.temperature_k + 1.5)
                b.set_temperature(b.temperature_k + 1.5)
            mon = monitor_for(w) if monitor_for else None
            ma, mb = a.measure(window_ms, monitor=mon), b.measure(window_ms, monitor=mon)
            assert np.array_equal(ma.spike_counts, mb.spike_counts), f"window {w}: spike counts differ"
            assert np.array_equal(ma.observed, mb.observed), f"window {w}: monitored channels differ"
            assert np.array_equal(ma.proxy_pa, mb.proxy_pa, equal_nan=True), f"window {w}: proxy readings differ"
            assert (ma.window_ms, ma.hardware_ms, ma.temperature_k) == (mb.window_ms, mb.hardware_ms, mb.temperature_k)
            total += int(ma.spike_counts.sum())
        assert total > 0, "the chips never fired: the comparison would prove little"
        assert np.isfinite(mb.proxy_pa[mb.observed]).all()


def test_import_does_not_load_lava():
    code = ("import sys, hw_models, calibrate, calibrate.backends, hw_models.lava\n"
            "from hw_models.lava import stepping, protocol\n"
            "assert 'lava' not in sys.modules, sorted(m for m in sys.modules if m.startswith('lava'))\n"
            "from hw_models.lava import LavaDevice\n"
            "assert 'lava' not in sys.modules\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_stepped_engine_is_engine_run(cond_profile, dpi_profile):
    """The per-step engine the Lava model runs equals Engine.run bit for bit, across windows that cut input blocks
    and chunks anywhere, gain and temperature changes, recurrent input and the true synaptic current."""
    rec = {"n_exc": 48, "K_ee": 8, "K_ei": 4, "K_ie": 8, "K_ii": 4, "J_ee": 0.5, "J_ei": 0.5, "J_ie": 0.5, "J_ii": 0.5}
    rng = np.random.default_rng(7)
    for profile in (cond_profile, cond_profile.with_changes({"recurrent": rec}), dpi_profile):
        chip = draw_chip(profile, 3)
        a, b = Engine(chip, record_isyn=True), SteppedEngine(chip, record_isyn=True)
        for w, n in enumerate([1, 7, 250, 251, 999, 1003, 2]):
            g = gains_from_codes(chip, _random_codes(chip.knobs, rng))
            a.set_gains(*g)
            b.set_gains(*g)
            if w == 3:
                a.set_temperature(a.temperature_k + 1.0)
                b.set_temperature(b.temperature_k + 1.0)
            sa = a.run(n)
            b.begin_window()
            for _ in range(n):
                b.step()
            sb = b.end_window()
            assert sa.n_steps == sb.n_steps == n
            for f in STATS_FIELDS:
                x, y = getattr(sa, f), getattr(sb, f)
                assert (x is None) == (y is None), f
                if x is not None:
                    assert np.array_equal(x, y), (profile.name, w, f)
        assert a.step_index == b.step_index


def test_cond_lif_bit_identical_to_numpy(cond_profile):
    """bss2-like chip: 10 windows, codes changed every other window, a temperature step: same spikes and proxy."""
    _assert_same_measurements(cond_profile, 11, [20.0, 5.0, 33.3, 20.0, 1.0, 20.0, 47.0, 20.0, 10.0, 20.0],
                              temperature_at=6)


def test_dpi_bit_identical_to_numpy(dpi_profile):
    """dynapse2-like chip (per-core coarse/fine DACs, one channel per core): the monitor's round robin and explicit
    channel choices read the same values through the same ADC model."""
    def monitor_for(w):
        return None if w < 5 else [w % 12, 12 + (w * 5) % 12, 24 + (w * 7) % 12]

    _assert_same_measurements(dpi_profile, 4, [20.0] * 10, monitor_for=monitor_for, temperature_at=3)


def test_true_statistics_and_codes_match(cond_profile):
    """run_true returns the same WindowStats (the synaptic-current diagnostic included, on another input
    stream); code validation and the device's extras behave as numpy's."""
    with NumpyDevice(cond_profile, 2, record_isyn=True, input_stream=1) as a, \
            LavaDevice(cond_profile, 2, record_isyn=True, input_stream=1) as b:
        assert b.steps_for(12.34) == a.steps_for(12.34)
        for window_ms in (15.0, 0.1, 30.0):
            sa, sb = a.run_true(window_ms), b.run_true(window_ms)
            for f in STATS_FIELDS:
                assert np.array_equal(getattr(sa, f), getattr(sb, f)), f
        with pytest.raises(CodeError):
            b.set_codes({"gain_e": np.full(cond_profile.n_neurons, 5000)})
        with pytest.raises(CodeError):
            b.measure(5.0, monitor=[cond_profile.n_neurons])
        ma, mb = a.measure(5.0), b.measure(5.0)  # a refused request ran no window on either chip
        assert np.array_equal(ma.proxy_pa, mb.proxy_pa)
    with pytest.raises(RuntimeError):
        b.measure(5.0)


class _CallLog:
    """A recorder that keeps a copy of every call."""

    def __init__(self, sample_every_steps):
        self.sample_every_steps = sample_every_steps
        self.calls = []

    def on_spikes(self, step, neurons):
        self.calls.append(("spikes", int(step), np.array(neurons, dtype=np.int64)))

    def on_sample(self, step, *arrays):
        self.calls.append(("sample", int(step), np.array(arrays)))


def test_recorder_gets_the_same_calls(cond_profile, dpi_profile):
    """A recorder on the Lava backend sees numpy's calls (spikes and state samples, same steps, same values), even
    when a window's records span many more frames than the recording pipe holds; the real Recorder then gives the
    same recording."""
    from hw_models.recorder import Recorder

    for profile in (cond_profile, dpi_profile):
        logs = []
        for cls in (NumpyDevice, LavaDevice):
            log = _CallLog(7)
            with cls(profile, 3, recorder=log) as dev:
                for window_ms in (50.0, 3.0, 0.7):  # 50 ms: about 70 frames through a 4-frame pipe
                    dev.measure(window_ms)
            logs.append(log.calls)
        a, b = logs
        assert len(a) == len(b) > 20
        assert any(c[0] == "spikes" for c in a)
        for x, y in zip(a, b):
            assert x[:2] == y[:2] and np.array_equal(x[2], y[2]), (x[:2], y[:2])
    recordings = []
    for cls in (NumpyDevice, LavaDevice):
        rec = Recorder(cond_profile.n_neurons, cond_profile.dt_ms, sample_every_steps=10)
        with cls(cond_profile, 3, recorder=rec) as dev:
            dev.run_true(60.0)
        recordings.append(rec.finish())
    ra, rb = recordings
    assert ra.spike_steps.size > 0
    for f in ("spike_steps", "spike_ids", "spike_counts", "sample_steps", "pop_series", "traces"):
        assert np.array_equal(getattr(ra, f), getattr(rb, f), equal_nan=True), f
    for k in ra.neuron_means:
        assert np.array_equal(ra.neuron_means[k], rb.neuron_means[k], equal_nan=True), k


def test_recorder_error_reaches_the_caller(cond_profile):
    """A host recorder that raises: its exception comes out of the window, and the chip keeps running."""
    class Failing(_CallLog):
        def on_spikes(self, step, neurons):
            raise KeyError("recorder is full")

    with LavaDevice(cond_profile, 3, recorder=Failing(5)) as dev:
        with pytest.raises(KeyError, match="recorder is full"):
            dev.measure(30.0)
        assert dev.measure(5.0).spike_counts.shape == (cond_profile.n_neurons,)


def test_open_device_lava(cond_profile):
    from calibrate.backends import open_device

    with open_device("lava", cond_profile, 1, temperature_k=301.0) as dev:
        assert isinstance(dev, LavaDevice) and dev.identity.backend == "lava"
        assert dev.temperature_k == 301.0
        assert dev.measure(2.0).spike_counts.shape == (cond_profile.n_neurons,)


def _leak_snapshot():
    from hw_models.lava.device import _import_lava

    return {"children": len(multiprocessing.active_children()), "threads": threading.active_count(),
            "root_handlers": len(logging.getLogger().handlers),
            "lava_handlers": len(logging.getLogger("lava.magma.compiler.compiler").handlers),
            "lava_processes": len(_import_lava().ProcessServer().processes), "sessions": open_sessions(),
            "fds": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0}


def _settled(before, deadline_s=5.0):
    """The snapshot once helper threads have had time to finish (port threads exit just after their join)."""
    end = time.monotonic() + deadline_s
    while True:
        now = _leak_snapshot()
        if all(now[k] <= before[k] for k in before) or time.monotonic() > end:
            return now
        time.sleep(0.05)


def test_thirty_cycles_leak_nothing(lava_warm):
    """30 start/measure/close cycles in one process: no extra child process, thread, log handler or fd."""
    profile = load_profile("devboard")
    before = _settled(_leak_snapshot())
    t0 = time.perf_counter()
    for i in range(30):
        with LavaDevice(profile, i) as dev:
            dev.measure(2.0)
    per_cycle = (time.perf_counter() - t0) / 30
    after = _settled(before)
    assert after == before, f"leaked over 30 cycles: before {before}, after {after}"
    assert per_cycle < 2.0


def test_model_exception_surfaces_with_its_own_message(cond_profile, lava_warm, monkeypatch):
    """An exception inside the Lava process model reaches the caller as itself, fast, and stops the workers.
    (Workers are forked, so a patch made here reaches the model's engine; the host's engine is never stepped.)"""
    from hw_models.lava import stepping

    def broken_advance(self, n_steps):
        return self.state.V + np.zeros(self.n + 1)  # numpy refuses: the model's step fails with a ValueError

    before = _leak_snapshot()
    monkeypatch.setattr(stepping.SteppedEngine, "advance", broken_advance)
    dev = LavaDevice(cond_profile, 1)
    t0 = time.perf_counter()
    with pytest.raises(LavaModelError) as info:
        dev.measure(10.0)
    assert time.perf_counter() - t0 < 5.0
    err = info.value
    assert "ValueError" in str(err) and "operands could not be broadcast" in str(err)
    assert "Exception(s) occurred" not in str(err)
    assert "broken_advance" in err.remote_traceback and "run_spk" in err.remote_traceback
    assert isinstance(err.__cause__, ValueError)
    assert isinstance(err, DeviceError)
    with pytest.raises(DeviceError, match="failed earlier"):
        dev.measure(1.0)
    dev.close()
    assert _settled(before) == before


def test_model_failing_to_build_surfaces_at_start(monkeypatch, capsys, lava_warm):
    """An exception while Lava builds the model (in the worker) fails the device's start with that message and
    leaves nothing running. (Workers are forked, so a patch made here reaches the model's engine.)"""
    from hw_models.lava import stepping

    def broken_init(self, *args, **kwargs):
        raise RuntimeError("engine build failed")

    before = _leak_snapshot()
    monkeypatch.setattr(stepping.SteppedEngine, "__init__", broken_init)
    with pytest.raises(LavaModelError, match="could not start: RuntimeError: engine build failed") as info:
        LavaDevice("devboard", 1)
    assert "broken_init" in info.value.remote_traceback
    capsys.readouterr()  # Lava prints the worker's traceback too
    assert _settled(before) == before


def test_dead_worker_is_reported_not_waited_for(cond_profile, lava_warm):
    """A worker killed mid-run (no Python exception to report) fails the run within seconds instead of hanging."""
    before = _leak_snapshot()
    dev = LavaDevice(cond_profile, 1)
    dev.measure(1.0)
    actors = dev.engine._session._actors()
    model_pid = actors[0].pid
    threading.Timer(0.3, lambda: os.kill(model_pid, signal.SIGKILL)).start()
    t0 = time.perf_counter()
    with pytest.raises(LavaModelError, match="exited during a run"):
        dev.measure(60_000.0)  # far longer than the test: only the failure can end it
    assert time.perf_counter() - t0 < 10.0
    dev.close()
    assert _settled(before) == before


_EXIT_SCRIPT = textwrap.dedent("""
    import sys
    from hw_models.lava import LavaDevice
    from hw_models.profile import load_profile
    p = load_profile("devboard")
    a = LavaDevice(p, 1)
    b = LavaDevice(p, 2)   # started, never run
    a.measure(5.0)
    del b
    c = LavaDevice(p, 3)
    c.measure(1.0)
    if sys.argv[1] == "raise":
        raise RuntimeError("boom")
    print("exiting with open devices")
""")


@pytest.mark.parametrize("how", ["return", "raise"])
def test_interpreter_exits_with_open_devices(how):
    """Devices left open (or an exception escaping) never hang the interpreter at exit."""
    proc = subprocess.Popen([sys.executable, "-c", _EXIT_SCRIPT, how], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the interpreter hung at exit with open Lava devices")
    if how == "return":
        assert proc.returncode == 0 and "exiting with open devices" in out, err
    else:
        assert proc.returncode == 1 and "RuntimeError: boom" in err
    # and no worker outlived it (an exited child not yet reaped by init, e.g. multiprocessing's resource
    # tracker, which ends with its interpreter, is a zombie: not running, holding nothing)
    # A process caught in the middle of exiting shows as running for a moment: give it a second.
    deadline = time.monotonic() + 3.0
    while True:
        r = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-s", str(proc.pid)], capture_output=True, text=True)
        alive = [line for line in r.stdout.splitlines() if line.split()[1][0] != "Z"]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert alive == []


def _python311():
    """An interpreter of Python 3.11 or newer with eical importable (the main lane's .venv), or None."""
    for cand in (ROOT / ".venv" / "bin" / "python",):
        if cand.exists():
            r = subprocess.run([str(cand), "-c", "import sys, hw_models; print(sys.version_info >= (3, 11))"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode == 0 and r.stdout.strip() == "True":
                return str(cand)
    return None


def test_newer_python_gets_one_clear_line():
    py = _python311()
    if py is None:
        pytest.skip("no Python >= 3.11 environment with eical (make test-main builds .venv)")
    code = ("import sys\n"
            "from calibrate.backends import open_device, BackendUnavailable\n"
            "try:\n"
            "    open_device('lava', 'devboard', 3)\n"
            "except BackendUnavailable as e:\n"
            "    print(e)\n"
            "assert 'lava' not in sys.modules\n")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "Python 3.10" in lines[0], r.stdout
