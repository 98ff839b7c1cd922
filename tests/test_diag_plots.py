"""The report figures: every plot renders to PNG, alone and as a before/after pair, and can be saved."""
from __future__ import annotations

import numpy as np
import pytest

from calibrate.diagnostics import diagnose
from calibrate.diagnostics.plots import all_figures, isi_cv_histogram_png, raster_png
from hw_models.recorder import Recorder
from hw_models.recording import Recording

PNG = b"\x89PNG\r\n\x1a\n"


def _recording(seed: int, inh_scale: float) -> Recording:
    """A 200-neuron, 2 s recording with samples: Poisson spikes with a shared slow modulation."""
    rng = np.random.default_rng(seed)
    n, dt, steps = 200, 0.1, 20_000
    is_exc = np.arange(n) < 160
    rec = Recorder(n, dt, is_exc=is_exc, sample_every_steps=10, meta={"model": "cond_lif", "vbal_mv": -55.0})
    rate = 10.0 * (1 + 0.5 * np.sin(2 * np.pi * np.arange(steps) * dt / 200.0))
    p = rate * dt * 1e-3
    for s in range(steps):
        spk = np.flatnonzero(rng.random(n) < p[s])
        if spk.size:
            rec.on_spikes(s, spk)
        if s % 10 == 0:
            ge = 5.0 * (1 + 0.1 * rng.standard_normal(n)) * rate[s] / 10.0
            gi = ge * 55.0 / 25.0 * inh_scale
            rec.on_sample(s, ge, gi, -60 + rng.standard_normal(n), ge * 55.0, gi * -25.0)
    return rec.finish(end_step=steps)


@pytest.fixture(scope="module")
def pair():
    before, after = _recording(51, 1.0 / 3.0), _recording(52, 1.0)
    return before, after, diagnose(before, n_boot=20, label="before"), diagnose(after, n_boot=20, label="after")


def test_each_plot_renders_for_one_chip(pair, tmp_path):
    _, ra, _, da = pair
    figs = all_figures(da, dpi=40)  # one chip, no recording: every figure but the raster
    assert set(figs) == {"isi_cv", "ei_scales", "branching", "spectrum"}
    figs["raster"] = raster_png(ra, dpi=40, path=tmp_path / "raster.png")
    for name, data in figs.items():
        assert data.startswith(PNG) and len(data) > 2000, name
    assert (tmp_path / "raster.png").read_bytes() == figs["raster"]


def test_all_figures_writes_a_before_after_report_set(pair, tmp_path):
    rb, ra, db, da = pair
    figs = all_figures(da, db, rec_after=ra, rec_before=rb, out_dir=tmp_path, dpi=40)
    assert set(figs) == {"raster", "isi_cv", "ei_scales", "branching", "spectrum"}
    for name, data in figs.items():
        assert (tmp_path / f"{name}.png").read_bytes() == data and data.startswith(PNG)
        assert len(data) > 2000
    # the named functions draw the same figures as all_figures
    assert isi_cv_histogram_png([db, da], labels=["before", "after"], dpi=40) == figs["isi_cv"]


def test_plots_reject_wrong_inputs(pair):
    _, ra, _, _ = pair
    with pytest.raises(TypeError):
        isi_cv_histogram_png(ra)  # a Recording is not a Diagnostics
