"""Known answers of the irregularity statistics: Poisson, periodic and gamma-renewal trains."""
from __future__ import annotations

import numpy as np
import pytest

from calibrate.diagnostics import (
    FLUCTUATION_DRIVEN,
    MEAN_DRIVEN,
    UNCLASSIFIED,
    classify_regime,
    diagnose,
    spike_count_fano,
    isi_cv,
    isi_cv2,
    mean_count_correlation,
    sort_by_neuron,
)
from hw_models.recording import Recording

WINDOWS = (10.0, 30.0, 100.0, 300.0, 1000.0)


def poisson_trains(n: int, rate_hz: float, t_ms: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson trains (times in ms, neuron ids), returned in time order as a chip emits them."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate_hz * t_ms * 1e-3, n)
    t = rng.uniform(0.0, t_ms, counts.sum())
    ids = np.repeat(np.arange(n), counts)
    order = np.argsort(t)
    return t[order], ids[order]


def renewal_trains(n: int, rate_hz: float, t_ms: float, shape: float, seed: int):
    """Gamma-renewal trains with ISI shape ``shape`` (CV = 1/sqrt(shape)), random phase, time-ordered."""
    rng = np.random.default_rng(seed)
    mean_isi = 1000.0 / rate_hz
    k = int(t_ms / mean_isi * 1.5 + 50)
    isi = rng.gamma(shape, mean_isi / shape, size=(n, k))
    t = np.cumsum(isi, axis=1) - rng.uniform(0, mean_isi, size=(n, 1)) - isi[:, :1]
    ids = np.repeat(np.arange(n), k)
    t = t.ravel()
    keep = (t >= 0) & (t < t_ms)
    t, ids = t[keep], ids[keep]
    order = np.argsort(t, kind="stable")
    return t[order], ids[order]


def test_poisson_cv_and_fano_within_5_percent_of_one():
    t, ids = poisson_trains(200, 20.0, 50_000.0, seed=11)
    cv = isi_cv(t, ids, 200)
    assert np.median(cv) == pytest.approx(1.0, rel=0.05)
    assert np.mean(cv) == pytest.approx(1.0, rel=0.05)
    ff = spike_count_fano(t, ids, 200, 0.0, 50_000.0, windows_ms=WINDOWS)
    for w, row in zip(WINDOWS, ff):
        assert np.mean(row) == pytest.approx(1.0, rel=0.05), w
    assert np.mean(isi_cv2(t, ids, 200)) == pytest.approx(1.0, rel=0.05)


def test_poisson_through_a_recording_and_diagnose():
    """The same known answer through the chip path: steps of 0.1 ms, Recording, diagnose()."""
    t, ids = poisson_trains(300, 15.0, 40_000.0, seed=12)
    rec = Recording.from_spikes(np.floor(t / 0.1).astype(np.int64), ids, 300, 0.1, n_steps=400_000)
    d = diagnose(rec, n_boot=0)
    assert d.cv_median == pytest.approx(1.0, rel=0.05)
    for w, f in zip(d.fano_windows_ms, d.fano_median):
        assert f == pytest.approx(1.0, rel=0.05), w
    assert d.fluctuation_driven_fraction == 1.0
    assert "mean_driven" not in d.flags


def test_regular_trains_have_cv_below_0_05():
    rng = np.random.default_rng(13)
    n, t_ms = 100, 20_000.0
    period = rng.uniform(20.0, 80.0, n)  # 12.5 - 50 Hz, a different period per neuron
    t_list, id_list = [], []
    for i in range(n):
        ts = rng.uniform(0, period[i]) + np.arange(0, t_ms, period[i])
        ts = ts[ts < t_ms] + rng.normal(0.0, 0.2, ts[ts < t_ms].size)  # 0.2 ms jitter
        t_list.append(ts)
        id_list.append(np.full(ts.size, i))
    t, ids = np.concatenate(t_list), np.concatenate(id_list)
    t = np.floor(t / 0.1) * 0.1  # on the 0.1 ms step grid, as a chip reports
    cv = isi_cv(t, ids, n)
    assert np.nanmax(cv) < 0.05
    assert np.nanmax(isi_cv2(t, ids, n)) < 0.05
    ff = spike_count_fano(t, ids, n, 0.0, t_ms, windows_ms=(1000.0,))
    assert np.nanmax(ff) < 0.1  # periodic: the count in long windows hardly varies
    assert (classify_regime(cv) == MEAN_DRIVEN).all()


@pytest.mark.parametrize("shape", [2.0, 4.0, 16.0])
def test_gamma_renewal_cv_is_one_over_sqrt_shape(shape):
    t, ids = renewal_trains(150, 20.0, 40_000.0, shape, seed=14)
    cv = isi_cv(t, ids, 150)
    assert np.median(cv) == pytest.approx(1.0 / np.sqrt(shape), rel=0.05)
    # For a renewal process the long-window Fano factor tends to CV^2 (Cox 1962).
    ff = spike_count_fano(t, ids, 150, 0.0, 40_000.0, windows_ms=(1000.0,))
    assert np.nanmean(ff) == pytest.approx(1.0 / shape, rel=0.15)


def test_classify_regime_rules():
    cv = np.array([0.05, 0.49, 0.5, 1.3, np.nan])
    lab = classify_regime(cv, cv_threshold=0.5)
    assert lab.tolist() == [MEAN_DRIVEN, MEAN_DRIVEN, FLUCTUATION_DRIVEN, FLUCTUATION_DRIVEN, UNCLASSIFIED]
    # a regular-looking CV but a clearly irregular count (bursting) is not called mean-driven
    lab2 = classify_regime(cv, fano=np.array([0.1, 3.0, 1, 1, 1]), fano_threshold=0.5)
    assert lab2[:2].tolist() == [MEAN_DRIVEN, FLUCTUATION_DRIVEN]


def test_too_few_spikes_give_nan_and_sorting_is_robust():
    t = np.array([5.0, 1.0, 3.0, 2.0, 10.0])
    ids = np.array([0, 0, 0, 1, 1])
    cv = isi_cv(t, ids, 3, min_isis=2)
    assert cv[0] == pytest.approx(0.0) and np.isnan(cv[1]) and np.isnan(cv[2])  # ISIs 2, 2 -> CV 0
    ts, ii = sort_by_neuron(t, ids)
    assert ii.tolist() == [0, 0, 0, 1, 1] and ts.tolist() == [1.0, 3.0, 5.0, 2.0, 10.0]
    ff = spike_count_fano(t, ids, 3, 0.0, 10.0, windows_ms=(100.0,))
    assert np.isnan(ff).all()  # no complete window


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.2])
def test_mean_count_correlation_of_a_mip_population_is_eps(eps):
    """Multiple-interaction process (Kuhn, Aertsen and Rotter 2003): every neuron copies each spike of a
    mother Poisson train (rate r/eps) with probability eps, so each is Poisson at r and every pair's count
    correlation is exactly eps, at any window."""
    rng = np.random.default_rng(15)
    n, r, t_ms = 100, 10.0, 100_000.0
    if eps == 0.0:
        t, ids = poisson_trains(n, r, t_ms, seed=16)
    else:
        mother = np.sort(rng.uniform(0, t_ms, rng.poisson(r / eps * t_ms * 1e-3)))
        pick = rng.random((n, mother.size)) < eps
        ids = np.nonzero(pick)[0]
        t = np.broadcast_to(mother, pick.shape)[pick]
    rsc = mean_count_correlation(t, ids, n, 0.0, t_ms, windows_ms=(10.0, 100.0))
    np.testing.assert_allclose(rsc, eps, atol=0.01)
