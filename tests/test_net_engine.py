"""The engine's recurrent path on balanced-net: exact, deterministic, and fast enough.

The compiled engine adds the previous step's spikes through the recurrent weights inside its kernel
(``hw_models.kernels._block_steps``). These tests hold it, to the bit, to the arithmetic of the straightforward
implementation, written out again here and run in the numpy reference engine (``ReferenceEngine._add_recurrent``
replaced by it).
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from hw_models import kernels
from hw_models.emulator import NumpyDevice

PROFILE = "balanced-net"


def reference_add_recurrent(self, ye, yi):
    """The plain version: for each presynaptic type, the bincount of the spiking rows' weights over all neurons
    (rows in ascending presynaptic order), times the postsynaptic conductance jump, added to a copy of the row."""
    pre = self._rec_prev
    chip = self.chip
    ye, yi = ye.copy(), yi.copy()
    rec_t = chip.rec.T.tocsr()
    for sel, jump, y in ((pre[chip.rec_is_exc[pre]], self.jump_e, ye), (pre[~chip.rec_is_exc[pre]], self.jump_i, yi)):
        if sel.size:
            take = np.concatenate([np.arange(rec_t.indptr[j], rec_t.indptr[j + 1]) for j in sel])
            y += np.bincount(rec_t.indices[take], weights=rec_t.data[take], minlength=self.n) * jump
    return ye, yi


class Spikes:
    sample_every_steps = 0

    def __init__(self):
        self.per_step: list[tuple[int, np.ndarray]] = []

    def on_spikes(self, step, idx):
        self.per_step.append((step, np.asarray(idx).copy()))


def _session(reference: bool):
    rec = Spikes()
    dev = NumpyDevice(PROFILE, 3, recorder=rec, reference=reference)
    if reference:
        dev.engine._add_recurrent = types.MethodType(reference_add_recurrent, dev.engine)
    out = [dev.run_true(150.0)]
    codes = {k: v.copy() for k, v in dev.codes.items()}
    codes["gain_e"][790:830] += 20  # a gain change between windows, on both populations
    codes["gain_i"][::7] -= 30
    dev.set_codes(codes)
    out.append(dev.run_true(100.0))
    dev.set_temperature(305.0)
    out.append(dev.run_true(100.0))
    return out, rec.per_step


@pytest.mark.skipif(not kernels.VECTOR_MATH.exact, reason="numpy's exp is not reproducible here (docs/model.md)")
def test_fast_recurrent_path_equals_the_reference_to_the_bit():
    fast, fast_spikes = _session(reference=False)
    ref, ref_spikes = _session(reference=True)
    for a, b in zip(fast, ref):
        assert np.array_equal(a.spike_counts, b.spike_counts)
        for key in ("mean_ge", "mean_gi", "iexc", "iinh"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert len(fast_spikes) == len(ref_spikes)
    assert all(sa == sb and np.array_equal(ia, ib) for (sa, ia), (sb, ib) in zip(fast_spikes, ref_spikes))
    # both branches of the fast path ran: steps after a single spike and steps after several
    sizes = np.array([idx.size for _, idx in fast_spikes])
    assert (sizes == 1).sum() > 100 and (sizes > 1).sum() > 100


def test_stepping_one_step_at_a_time_equals_one_window():
    a = NumpyDevice(PROFILE, 2)
    whole = a.engine.run(800)
    b = NumpyDevice(PROFILE, 2)
    b.engine.begin_window()
    for _ in range(800):
        b.engine.step()
    stepped = b.engine.end_window()
    assert np.array_equal(whole.spike_counts, stepped.spike_counts)
    assert np.array_equal(whole.mean_ge, stepped.mean_ge) and np.array_equal(whole.mean_gi, stepped.mean_gi)
    np.testing.assert_array_equal(a.engine.state.V, b.engine.state.V)
