"""The two messages between the host and the chip's Lava process model (no Lava import here).

Both travel through Lava external pipes as one flat float64 vector each (a pipe carries one fixed shape), so a
window costs one message each way whatever N is (``Var.get/set`` would cost one message per element).

``ctrl`` (host -> model), pushed before every window and received *blocking* by the model at the window's first
step, so codes and temperature take effect exactly at the window boundary::

    [CMD_WINDOW, seq, n_steps, temperature_k, flags, gain_e[N], gain_i[N]]

``flags``: bit 0 the gains changed (apply ``gain_e``/``gain_i``), bit 1 the temperature changed.

``meas`` (model -> host), sent at the window's last step::

    [seq, n_steps, step_index, present, counts[N], iexc[N], iinh[N], isyn[N], mean_ge[N], mean_gi[N]]

``present``: bit k set when the k-th optional row (isyn, mean_ge, mean_gi) holds data (absent rows are zeros and
come back as None). Spike counts are integers far below 2**53, so float64 carries them exactly.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from hw_models.engine import WindowStats

__all__ = ["CMD_WINDOW", "FLAG_GAINS", "FLAG_TEMPERATURE", "ctrl_len", "meas_len", "pack_ctrl", "unpack_ctrl",
           "pack_meas", "unpack_meas", "rec_frame_len", "FrameWriter", "replay_frame"]

CMD_WINDOW = 1.0
FLAG_GAINS = 1
FLAG_TEMPERATURE = 2
_CTRL_HDR = 5
_MEAS_HDR = 4
_OPTIONAL = ("isyn", "mean_ge", "mean_gi")


def ctrl_len(n: int) -> int:
    return _CTRL_HDR + 2 * n


def meas_len(n: int) -> int:
    return _MEAS_HDR + 6 * n


def pack_ctrl(n: int, seq: int, n_steps: int, temperature_k: float, gains: Optional[tuple[np.ndarray, np.ndarray]],
              temperature_changed: bool) -> np.ndarray:
    msg = np.zeros(ctrl_len(n))
    flags = (FLAG_GAINS if gains is not None else 0) | (FLAG_TEMPERATURE if temperature_changed else 0)
    msg[:_CTRL_HDR] = (CMD_WINDOW, seq, n_steps, temperature_k, flags)
    if gains is not None:
        msg[_CTRL_HDR:_CTRL_HDR + n] = gains[0]
        msg[_CTRL_HDR + n:] = gains[1]
    return msg


def unpack_ctrl(msg: np.ndarray, n: int) -> tuple[int, int, Optional[float], Optional[tuple[np.ndarray, np.ndarray]]]:
    """``(seq, n_steps, temperature_k or None, (gain_e, gain_i) or None)``; raises ValueError on a bad message."""
    if msg.shape != (ctrl_len(n),) or msg[0] != CMD_WINDOW:
        raise ValueError(f"chip process: bad control message (shape {msg.shape}, command {msg[:1]})")
    seq, n_steps, temp, flags = int(msg[1]), int(msg[2]), float(msg[3]), int(msg[4])
    if n_steps < 1 or n_steps != msg[2]:
        raise ValueError(f"chip process: a window needs a positive whole number of steps, got {msg[2]!r}")
    gains = None
    if flags & FLAG_GAINS:
        gains = (msg[_CTRL_HDR:_CTRL_HDR + n].copy(), msg[_CTRL_HDR + n:].copy())
    return seq, n_steps, (temp if flags & FLAG_TEMPERATURE else None), gains


def pack_meas(seq: int, step_index: int, stats: WindowStats) -> np.ndarray:
    n = stats.spike_counts.shape[0]
    msg = np.zeros(meas_len(n))
    present = 0
    rows = msg[_MEAS_HDR:].reshape(6, n)
    rows[0] = stats.spike_counts
    rows[1] = stats.iexc
    rows[2] = stats.iinh
    for k, name in enumerate(_OPTIONAL):
        value = getattr(stats, name)
        if value is not None:
            rows[3 + k] = value
            present |= 1 << k
    msg[:_MEAS_HDR] = (seq, stats.n_steps, step_index, present)
    return msg


def unpack_meas(msg: np.ndarray, n: int, dt_ms: float) -> tuple[int, int, WindowStats]:
    """``(seq, step_index, stats)``."""
    seq, n_steps, step_index, present = (int(x) for x in msg[:_MEAS_HDR])
    rows = msg[_MEAS_HDR:].reshape(6, n)
    opt = {name: (rows[3 + k].copy() if present & (1 << k) else None) for k, name in enumerate(_OPTIONAL)}
    stats = WindowStats(rows[0].astype(np.int64), n_steps, dt_ms, iexc=rows[1].copy(), iinh=rows[2].copy(), **opt)
    return seq, step_index, stats


# -- recording: the engine's recorder calls, forwarded from the model to the host's recorder ----------------------
#
# ``rec`` (model -> host) frames: one flat float64 vector of ``rec_frame_len(N)`` values, ``[used, records...]``,
# each record ``[kind, step, length, payload[length]]``: ``REC_SPIKES`` (payload: the neuron indices that spiked),
# ``REC_SAMPLE`` (payload: ge, gi, v, iexc, iinh, N each) or ``REC_END`` (the window's last record). A frame
# holds at least one record of either kind, so a step's records never straddle frames.

REC_SPIKES = 1.0
REC_SAMPLE = 2.0
REC_END = 3.0
_REC_HDR = 3


def rec_frame_len(n: int) -> int:
    return 1 + _REC_HDR + 5 * n + 4


class FrameWriter:
    """Packs recorder calls into frames and hands each full frame to ``send``; a stand-in recorder for the
    engine (``on_spikes``, ``on_sample``, ``sample_every_steps``)."""

    def __init__(self, n: int, sample_every_steps: int, send):
        self.n = n
        self.sample_every_steps = int(sample_every_steps)
        self._send = send
        self._frame = np.zeros(rec_frame_len(n))
        self._pos = 1

    def _room(self, length: int) -> int:
        if self._pos + _REC_HDR + length > self._frame.shape[0]:
            self.flush()
        p = self._pos
        self._pos = p + _REC_HDR + length
        return p

    def on_spikes(self, step: int, neurons: np.ndarray) -> None:
        k = neurons.shape[0]
        p = self._room(k)
        self._frame[p:p + _REC_HDR] = (REC_SPIKES, step, k)
        self._frame[p + _REC_HDR:p + _REC_HDR + k] = neurons

    def on_sample(self, step: int, ge, gi, v, iexc, iinh) -> None:
        n = self.n
        p = self._room(5 * n)
        self._frame[p:p + _REC_HDR] = (REC_SAMPLE, step, 5 * n)
        q = p + _REC_HDR
        for a in (ge, gi, v, iexc, iinh):
            self._frame[q:q + n] = a
            q += n

    def end_window(self) -> None:
        p = self._room(0)
        self._frame[p:p + _REC_HDR] = (REC_END, 0, 0)
        self.flush()

    def flush(self) -> None:
        if self._pos > 1:
            self._frame[0] = self._pos
            self._send(self._frame)  # the pipe copies the frame, so the buffer is reused
            self._pos = 1


def replay_frame(frame: np.ndarray, n: int, recorder) -> int:
    """Make the recorder calls a frame holds; return how many windows ended in it."""
    used, p, ended = int(frame[0]), 1, 0
    while p < used:
        kind, step, length = frame[p], int(frame[p + 1]), int(frame[p + 2])
        q = p + _REC_HDR
        if kind == REC_SPIKES:
            recorder.on_spikes(step, frame[q:q + length].astype(np.int64))
        elif kind == REC_SAMPLE:
            ge, gi, v, iexc, iinh = frame[q:q + length].reshape(5, n).copy()
            recorder.on_sample(step, ge, gi, v, iexc, iinh)
        elif kind == REC_END:
            ended += 1
        else:
            raise ValueError(f"recording frame: unknown record kind {kind!r} at {p}")
        p = q + length
    return ended
