"""Recorder -> Recording: exact spike round trip, population and per-neuron means, subsets, disk mode, ring."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from hw_models.recorder import Recorder
from hw_models.recording import NEURON_MEAN_KEYS, POPS, QUANTITIES, Recording

N = 50
DT = 0.1


def _drive(rec: Recorder, n_steps: int, seed: int, sample_every: int = 10, p_spike: float = 0.02):
    """Feed random spikes and states; return what was fed so the test can recompute everything."""
    rng = np.random.default_rng(seed)
    all_steps, all_ids, samples = [], [], []
    for s in range(n_steps):
        spk = np.flatnonzero(rng.random(N) < p_spike)
        if spk.size:
            rec.on_spikes(s, spk)
            all_steps.append(np.full(spk.size, s))
            all_ids.append(spk)
        if s % sample_every == 0:
            ge, gi = rng.random(N) * 10, rng.random(N) * 20
            v = -70 + 20 * rng.random(N)
            x = (ge, gi, v, ge * 55.0, gi * -25.0)
            rec.on_sample(s, *x)
            samples.append((s, np.stack(x)))
    return np.concatenate(all_steps), np.concatenate(all_ids), samples


def _check_against_fed(r: Recording, steps, ids, samples, is_exc):
    assert np.array_equal(np.asarray(r.spike_steps), steps)
    assert np.array_equal(np.asarray(r.spike_ids), ids)
    assert np.array_equal(r.spike_counts, np.bincount(ids, minlength=N))
    x = np.stack([smp for _, smp in samples])  # [T, 5, N]
    assert np.array_equal(np.asarray(r.sample_steps), [s for s, _ in samples])
    want = {
        "all": x.mean(axis=2),
        "exc": x[:, :, is_exc].mean(axis=2),
        "inh": x[:, :, ~is_exc].mean(axis=2),
    }
    for p, w in want.items():
        np.testing.assert_allclose(np.asarray(r.pop_series)[:, POPS.index(p), :], w, rtol=1e-5, atol=1e-4)
    means = x.mean(axis=0)
    for j, q in enumerate(QUANTITIES):
        np.testing.assert_allclose(r.neuron_means[q], means[j], rtol=1e-10)
    np.testing.assert_allclose(r.neuron_means["v_sq"], (x[:, 2] ** 2).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(r.neuron_means["ibal_sq"], ((x[:, 3] + x[:, 4]) ** 2).mean(axis=0), rtol=1e-10)
    tr = np.asarray(r.traces)
    np.testing.assert_allclose(tr[:, :, :], x[:, :3, :][:, :, r.trace_neurons], rtol=1e-6)


def test_memory_mode_round_trip_is_exact():
    is_exc = np.arange(N) < 40
    rec = Recorder(N, DT, is_exc=is_exc, sample_every_steps=10, sample_neurons=np.arange(0, N, 5))
    steps, ids, samples = _drive(rec, 3000, seed=1)
    r = rec.finish(end_step=3000)
    _check_against_fed(r, steps, ids, samples, is_exc)
    assert r.n_steps == 3000 and r.t_start_step == 0 and r.duration_ms == pytest.approx(300.0)
    assert r.spikes_complete_from_step == 0 and r.samples_dropped == 0
    assert r.spike_ids.dtype == np.int32 and r.spike_steps.dtype == np.int64


def test_small_chunks_and_disk_mode_give_the_same_recording(tmp_path):
    is_exc = np.arange(N) < 40
    rec = Recorder(
        N, DT, is_exc=is_exc, sample_every_steps=10, path=tmp_path / "rec", chunk_spikes=1024, chunk_samples=16
    )
    steps, ids, samples = _drive(rec, 3000, seed=2)
    r = rec.finish(end_step=3000)
    _check_against_fed(r, steps, ids, samples, is_exc)
    assert isinstance(r.spike_steps, np.memmap)  # lazily paged from disk
    assert not list((tmp_path / "rec").glob("spike_codes_*.npy"))  # chunks were joined and removed
    again = Recording.load(tmp_path / "rec")
    _check_against_fed(again, steps, ids, samples, is_exc)
    assert again.meta == r.meta and again.n_steps == 3000


def test_npz_save_load_round_trip(tmp_path):
    is_exc = np.arange(N) < 40
    rec = Recorder(N, DT, is_exc=is_exc, meta={"model": "cond_lif", "vbal_mv": -55.0})
    steps, ids, samples = _drive(rec, 1000, seed=3)
    r = rec.finish()
    f = r.save(tmp_path / "x.npz")
    back = Recording.load(f)
    _check_against_fed(back, steps, ids, samples, is_exc)
    assert back.meta == {"model": "cond_lif", "vbal_mv": -55.0}
    assert back.n_steps == r.n_steps and np.array_equal(back.is_exc, is_exc)


def test_memory_ring_keeps_the_latest_spikes_and_full_counts():
    rec = Recorder(N, DT, max_memory_mb=0.05, chunk_spikes=1024, sample_every_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        steps, ids, _ = _drive(rec, 20000, seed=4, p_spike=0.05)
        with pytest.warns(RuntimeWarning, match="early spikes dropped"):
            r = rec.finish(end_step=20000)
    c = r.spikes_complete_from_step
    assert c > 0  # something was dropped
    keep = steps >= c
    assert np.array_equal(np.asarray(r.spike_steps), steps[keep])  # exactly the spikes from c on
    assert np.array_equal(np.asarray(r.spike_ids), ids[keep])
    assert np.array_equal(r.spike_counts, np.bincount(ids, minlength=N))  # counts cover everything
    retained_bytes = r.spike_steps.size * 8
    assert retained_bytes <= 0.05 * 2**20
    assert r.samples_dropped > 0 and r.n_samples == 2000
    assert r.sample_steps.size == r.pop_series.shape[0] == 2000 - r.samples_dropped
    assert np.all(np.diff(r.sample_steps) == 10) and r.sample_steps[-1] == 19990


def test_default_trace_subset_is_bounded_and_holds_both_populations():
    n = 1000
    is_exc = np.arange(n) < 800
    rec = Recorder(n, DT, is_exc=is_exc)
    sub = rec.sample_neurons
    assert 0 < sub.size <= 64 and np.unique(sub).size == sub.size
    assert is_exc[sub].any() and (~is_exc[sub]).any()
    assert abs((~is_exc[sub]).mean() - 0.2) < 0.05
    assert Recorder(10, DT).sample_neurons.tolist() == list(range(10))


def test_single_population_and_empty_calls():
    rec = Recorder(4, DT, sample_every_steps=1)
    rec.on_spikes(5, np.array([], dtype=np.int64))
    rec.on_spikes(6, np.array([1, 3]))
    rec.on_sample(6, *(np.ones(4) * k for k in range(5)))
    r = rec.finish()
    assert r.t_start_step == 5 and r.n_steps == 2
    assert r.is_exc is None and r.exc_mask().all()
    assert np.isnan(r.series("ge", "inh")).all()  # no inhibitory population
    assert r.series("gi", "exc")[0] == pytest.approx(1.0)
    with pytest.raises(RuntimeError):
        rec.finish()


def test_from_spikes_sorts_and_clips():
    r = Recording.from_spikes(np.array([30, 10, 20, 99]), np.array([2, 0, 1, 1]), 3, 0.1, n_steps=50)
    assert r.spike_steps.tolist() == [10, 20, 30] and r.spike_ids.tolist() == [0, 1, 2]
    assert r.spike_counts.tolist() == [1, 1, 1]
    assert np.isnan(r.neuron_means["ge"]).all() and set(r.neuron_means) == set(NEURON_MEAN_KEYS)
    np.testing.assert_allclose(r.rates_hz(), 1.0 / 0.005)
    json.dumps(r.meta)


def test_default_budget_holds_a_4096_neuron_chip_for_100_s():
    """Issue 7: 4096 neurons, 100 s at dt 0.1 ms, ~10 Hz (4.1 M spikes), sampled every 1 ms, 64 trace neurons,
    in the default in-memory budget without dropping; with ``path`` nothing is ever dropped."""
    rec = Recorder(4096, DT, is_exc=np.arange(4096) < 3277)
    cap = rec.capacity()
    assert cap["spikes"] >= 4096 * 10 * 100 * 1.2
    assert cap["samples"] >= 100_000 and cap["trace_samples"] >= 100_000
    assert rec.sample_neurons.size == 64


def test_disk_mode_is_unbounded(tmp_path):
    assert set(Recorder(10, DT, path=tmp_path / "r").capacity().values()) == {None}

