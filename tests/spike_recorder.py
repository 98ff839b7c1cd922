"""The smallest recorder the engine accepts (``on_spikes`` only): it keeps (step, neuron) of every spike.

Shared by the theory tests of the feed-forward profiles and of balanced-net.
"""
from __future__ import annotations

import numpy as np


class SpikeRecorder:
    sample_every_steps = 0

    def __init__(self):
        self.steps: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []

    def on_spikes(self, step: int, idx: np.ndarray) -> None:
        self.steps.append(np.full(idx.size, step, dtype=np.int64))
        self.ids.append(np.asarray(idx, dtype=np.int64).copy())

    def trains(self, n: int, first_step: int = 0) -> list[np.ndarray]:
        """Spike steps of each neuron at or after ``first_step``, ascending."""
        steps = np.concatenate(self.steps) if self.steps else np.zeros(0, dtype=np.int64)
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.int64)
        keep = steps >= first_step
        steps, ids = steps[keep], ids[keep]
        order = np.lexsort((steps, ids))
        steps, ids = steps[order], ids[order]
        bounds = np.searchsorted(ids, np.arange(n + 1))
        return [steps[bounds[i]:bounds[i + 1]] for i in range(n)]

    def isi_cv(self, n: int, min_isi: int = 20) -> np.ndarray:
        """ISI CV of every neuron with at least ``min_isi`` intervals."""
        out = []
        for t in self.trains(n):
            isi = np.diff(t)
            if isi.size >= min_isi:
                out.append(isi.std() / isi.mean())
        return np.array(out)
