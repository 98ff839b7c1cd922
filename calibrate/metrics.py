"""Ground-truth figures of an emulated chip at given codes: the yardstick for controllers (tests, benchmarks).

A controller only ever sees measurements; to judge it we replay the emulated chip at its final codes on inputs it
never saw and read the *true* window statistics (no ADC): rates, and the balance proxy's two parts. The replay and
its estimators are ``calibrate.replay`` (replicas of a small chip in one engine; the input drive as a control
variate, docs/yield.md). Definitions (docs/model.md 1, docs/controller.md "verifying a calibration"):

- rates: each live neuron's long-run rate, estimated from the replay's sub-windows at the neuron's expected input
  drive (``calibrate.control_variate``; the plain means on recurrent chips).
- rate CV: std/mean across live neurons of those rates (relative to each neuron's own target). The estimates carry
  noise of their own; we report the raw CV, the noise's share ``counting_cv`` (the rms relative noise of one
  neuron's estimate, less the common part that spreads none) and the deconvolved
  ``sqrt(max(CV^2 - counting_cv^2, 0))``.
- balance index of a neuron: :func:`calibrate.figures.balance_index` of its true current means; on a feed-forward
  chip these are the proxy parts' exact expectations (the replay checks them against its own window means).
- ``fano``: the counting Fano factor of the replay's raw counts (common fluctuation removed), for the counting floor
  ``sqrt(F / (r T))`` of a calibration that spent model time T: :func:`calibrate.figures.counting_floor`.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .figures import counting_floor
from .truth import TrueFigures, figures_from_record

__all__ = ["TrueFigures", "true_figures", "figures_from_record", "counting_floor"]


def true_figures(profile, seed: int, codes: Mapping[str, np.ndarray], *, replay_s: float = 100.0,
                 target_rate_hz: Optional[float] = None, temperature_k: Optional[float] = None,
                 sub_window_s: float = 1.0, settle_s: float = 0.5, device=None, input_stream: int = 1,
                 replicas: Optional[int] = None) -> TrueFigures:
    """Replay an emulated chip at ``codes`` and return its true figures (see module docstring).

    ``replay_s`` seconds of model time are observed in all, after ``settle_s``, on input stream ``input_stream`` (1
    by default: not the stream the calibration measured, so the replay does not re-live the input noise the
    controller fitted). A small chip runs as ``replicas`` independent copies of ``replay_s / replicas`` each (default:
    ``calibrate.replay.replicas_for``). ``device`` may be given to replay on an existing emulator (it keeps its state;
    one copy).
    """
    from hw_models.profile import load_profile

    from .replay import record_replay

    prof = device.profile if device is not None else load_profile(profile)
    rec = record_replay(prof, seed, codes, replay_s=replay_s, sub_window_s=sub_window_s, settle_s=settle_s,
                        temperature_k=temperature_k, input_stream=input_stream, device=device, replicas=replicas)
    return figures_from_record(prof, rec, rec.rate_estimate(), target_rate_hz=target_rate_hz)
