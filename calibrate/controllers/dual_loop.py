r"""The dual-loop homeostatic controller, made of the named parts of this package (docs/controller.md).

Knob codes follow the ratio ``r`` and the common scale ``s`` of each knob group (a neuron, a core or the chip)::

    gain_e = s * sqrt(r),   gain_i = s / sqrt(r)

*Loop 1, E/I balance* (:mod:`.balance`): the proxy's window mean is ``y = gain_e a - gain_i b``; its zero is at
``r* = b / a``, which does not move when ``s`` does. ``(a, b)`` come from a least-squares fit over every window, and
``r`` is set to ``b / a`` (a Newton step in ``ln r`` whose sensitivity is known, not guessed). Two reference readings
make that possible from the first iteration: *null* windows with all codes at 0 (the ADC reads its own per-neuron
offset, subtracted from every later reading) and an *excitation-only* window (``gain_i = 0``: the proxy reads
``gain_e a`` directly, which is also the denominator of the balance index).

*Loop 2, rate*: per knob group (:mod:`.group_loop`, with the rate model of :mod:`.rate_model`), or per population on
a recurrent chip (:mod:`.population`). Its counting noise comes from one Fano estimate (:mod:`.fano`).

*Time-scale separation.* The ratio loop converges in one or two iterations (its plant is linear and its sensitivity
measured), the rate loop over several, and the rate model carries ``gamma`` so that the ratio's last small moves do
not bias the rate estimate.

*Windows.* The first loop window is short (``first_window_ms``, 0.3 s); each next one at most doubles, and only grows
while the measured rate error is within a few counting-noise standard deviations; the last one is trimmed to what
the tolerance still needs. On a chip that reads one proxy channel per core per window, each loop window is cut into
sub-windows that monitor a different neuron of each core (:class:`ProxySampler`), so the proxy sampling costs
windows, not model time.

*Limits* (:mod:`.lattice`): codes are integers from the DAC's nominal transfer, chosen jointly for both knobs; the
state is kept within the DAC range (no wind-up); a group whose required scale or ratio lies beyond the range is
``unreachable``. Neurons that never spike, even under excitation only, are ``dead``: excluded from every rate
estimate, balanced like the others, and reported.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional, Sequence

import numpy as np

from hw_models.device import DeviceIdentity, Measurement

from .balance import BalanceFit, OffsetEstimate
from .base import (BalanceReference, Controller, LoopRecord, OffsetRecord, Phase, PhaseRecord, Status, StopReason,
                   UpdateRecord, Window, WindowKind)
from .group_loop import GroupRateLoop
from .lattice import CodeLattice
from .population import PopulationRateLoop
from .settings import DualLoopSettings
from .state import LoopObservation, LoopState, RateLoop

__all__ = ["DualLoop", "ProxySampler"]

# dithered loop windows (DualLoopSettings.dither_rate): four blocks, the scale's and the ratio's sign patterns
DITHER_BLOCKS = 4
DITHER_SCALE_PATTERN = (1.0, -1.0, -1.0, 1.0)
DITHER_RATIO_PATTERN = (1.0, 1.0, -1.0, -1.0)


class ProxySampler:
    """Which neuron of each core a one-channel-per-core chip reads in each sub-window: a fixed random permutation of
    each core's neurons (seeded by the chip's uid, so reproducible), walked in order. On chips that read every
    channel it asks for none (the chip's default: all)."""

    def __init__(self, identity: DeviceIdentity):
        self.one_channel = identity.proxy_channels == "one_per_core"
        self.per_core, self.n_cores = identity.neurons_per_core, identity.n_cores
        seed = int.from_bytes(identity.uid.encode()[:8].ljust(8, b"\0"), "little")
        self.perm = np.random.default_rng(seed).permutation(self.per_core)
        self.pos = 0

    def next(self, count: int) -> list[Optional[np.ndarray]]:
        """Monitor sets for ``count`` sub-windows: the next neuron of each core's permutation."""
        if not self.one_channel:
            return [None] * count
        out = []
        for _ in range(count):
            j = self.perm[self.pos % self.per_core]
            self.pos += 1
            out.append(np.arange(self.n_cores) * self.per_core + j)
        return out


class DualLoop(Controller):
    """Dual-loop homeostatic controller (module docstring has the theory)."""

    name = "dual-loop"

    def __init__(self, settings: Optional[DualLoopSettings] = None, **overrides) -> None:
        super().__init__()
        self.cfg = settings if settings is not None else DualLoopSettings(**overrides)
        if settings is not None and overrides:
            raise TypeError("give either settings or keyword overrides, not both")

    def settings(self) -> dict:
        return asdict(self.cfg)

    # -- state ---------------------------------------------------------------------------------------------------
    def _start(self) -> None:
        cfg = self.cfg
        ke = self.knobs["gain_e"]
        self.lattice = CodeLattice(ke, self.knobs["gain_i"])
        self.shared = ke.sharing != "neuron"
        ln_s, ln_r = self.lattice.start_state(self.codes)
        self.state = LoopState.start(ln_s, ln_r)
        self.sampler = ProxySampler(self.identity)
        self.offsets = OffsetEstimate(self.n)
        self.balance = BalanceFit(self.group_of, self.n_groups, shared=self.shared,
                                  halflife_ms=cfg.forget_halflife_ms)
        self.balance_est = np.full(self.n_groups, np.nan)  # the balance index each group's last window measured
        self.spikes_any = np.zeros(self.n, dtype=bool)
        self.dead = np.zeros(self.n, dtype=bool)
        self.phase = Phase.NULL
        self.model_ms = 0.0
        self.next_ms = cfg.first_window_ms
        self.last_ms = 0.0
        self.stopped: Optional[StopReason] = None
        self.rate_loop = self._rate_loop(ln_s, ln_r)
        self.dither_count = 0

    def _rate_loop(self, ln_s: np.ndarray, ln_r: np.ndarray) -> RateLoop:
        """Loop 2 for this chip: per population when the targets name E and I populations on per-neuron knobs
        (recurrent chips; ``population_mode`` forces it either way), else per knob group."""
        inh = self.targets.inh_mask
        pm = self.cfg.population_mode
        if (inh is not None and not self.shared) if pm is None else bool(pm):
            if inh is None or self.shared:
                raise ValueError("population mode needs per-neuron knobs and targets with an inhibitory population")
            return PopulationRateLoop(self.cfg, inh_mask=inh, state=self.state,
                                      targets_hz=(self.targets.rate_hz, self.targets.rate_inh_hz))
        return GroupRateLoop(self.cfg, group_of=self.group_of, n_groups=self.n_groups, shared=self.shared,
                             target_g=self.target_g, start_ln_s=ln_s.copy(), start_ln_r=ln_r.copy())

    @property
    def fano(self) -> float:
        """The Fano factor loop 2 uses for its counting noise."""
        return self.rate_loop.fano.value

    def _codes_from_state(self) -> dict[str, np.ndarray]:
        self.state.clip(self.lattice)
        slope_s, slope_r = self.rate_loop.slopes
        return self.lattice.quantise(self.state.ln_s, self.state.ln_r, slope_s, slope_r, self.rate_loop.rate_tol,
                                     max(0.5 * self.cfg.balance_tol, 1e-6))

    # -- planning --------------------------------------------------------------------------------------------------
    def plan(self) -> list[Window]:
        if self.stopped is not None:
            return []
        if self.phase is Phase.NULL:
            return self._plan_null()
        if self.phase is Phase.PROBE:
            return self._plan_probe()
        T = self._next_window_ms()
        if T <= 0:
            self.stopped = StopReason.BUDGET
            return []
        cfg, codes = self.cfg, self.codes
        if self.sampler.one_channel:
            m = int(max(1, min(self.identity.neurons_per_core, round(T / cfg.sub_window_ms))))
            return [Window(codes, T / m, WindowKind.LOOP, mon) for mon in self.sampler.next(m)]
        k = max(1, int(cfg.fano_splits))
        blocks = self._dither_blocks(T, k)
        if blocks is not None:
            return [Window(blocks[i * DITHER_BLOCKS // k], T / k, WindowKind.LOOP) for i in range(k)]
        return [Window(codes, T / k, WindowKind.LOOP) for _ in range(k)]

    def _dithers(self, T: float, k: int) -> bool:
        """Whether a loop window of ``T`` ms in ``k`` sub-windows is dithered: calibration (no forgetting) of
        per-neuron knobs by the per-group rate loop, long enough windows, sub-windows that split into the blocks."""
        cfg = self.cfg
        return (cfg.forget_halflife_ms is None and not self.shared and isinstance(self.rate_loop, GroupRateLoop)
                and cfg.dither_rate > 0 and T >= cfg.dither_min_ms
                and k % DITHER_BLOCKS == 0)

    def _dither_blocks(self, T: float, k: int) -> Optional[list[dict]]:
        """The codes of a dithered window's four blocks (``DualLoopSettings.dither_rate``): the state moved in
        ``ln s`` in the pattern (+, -, -, +) and in ``ln r`` in (+, +, -, -), each by what moves the rate by
        ``dither_rate`` and with a random sign per group (seeded by the chip and the window's number). The patterns
        are orthogonal to each other and to a linear drift within the window, and the signs keep the chip's common
        input fluctuations from lining up with them."""
        if not self._dithers(T, k):
            return None
        cfg = self.cfg
        seed = int.from_bytes(self.identity.uid.encode()[:8].ljust(8, b"\0"), "little")
        rng = np.random.default_rng([seed, self.dither_count])
        self.dither_count += 1
        sign_s = rng.choice([-1.0, 1.0], self.n_groups)
        sign_r = rng.choice([-1.0, 1.0], self.n_groups)
        slope_s, slope_r = self.rate_loop.slopes
        amp_s = np.clip(cfg.dither_rate / np.maximum(slope_s, 1e-6), 0.0, cfg.dither_max)
        amp_r = float(np.clip(cfg.dither_rate / max(abs(slope_r), 1e-6), 0.0, cfg.dither_max))
        out = []
        for p, q in zip(DITHER_SCALE_PATTERN, DITHER_RATIO_PATTERN):
            c = self.lattice.clip(self.state.ln_s + amp_s * p * sign_s, self.state.ln_r + amp_r * q * sign_r)
            out.append(self.lattice.quantise(c.ln_s, c.ln_r, slope_s, slope_r, self.rate_loop.rate_tol,
                                             max(0.5 * cfg.balance_tol, 1e-6)))
        return out

    def _plan_null(self) -> list[Window]:
        cfg = self.cfg
        zero = {k: np.zeros(spec.n_groups, dtype=np.int64) for k, spec in self.knobs.items()}
        wins = [Window(zero, cfg.settle_ms, WindowKind.SETTLE)]
        if self.sampler.one_channel:
            # every neuron this run may monitor needs its offset: sweep the whole permutation, short windows
            self.sampler.pos = 0
            wins += [Window(zero, max(cfg.null_ms / 10, self.identity.dt_ms), WindowKind.NULL, m)
                     for m in self.sampler.next(self.identity.neurons_per_core)]
            self.sampler.pos = 0
        else:
            wins += [Window(zero, cfg.null_ms, WindowKind.NULL) for _ in range(int(cfg.null_reads))]
        return wins

    def _plan_probe(self) -> list[Window]:
        cfg = self.cfg
        codes = self._codes_from_state()
        probe = {"gain_e": codes["gain_e"], "gain_i": np.zeros_like(codes["gain_i"])}
        wins = [Window(probe, cfg.settle_ms, WindowKind.SETTLE)]
        if self.sampler.one_channel:
            # every neuron of each core once: a shared knob's sensitivity is its core's mean, and a 10 ms reading is
            # noisy, so a sample of the core is not enough
            start = self.sampler.pos
            wins += [Window(probe, cfg.sub_window_ms, WindowKind.EXC_PROBE, mon)
                     for mon in self.sampler.next(self.identity.neurons_per_core)]
            self.sampler.pos = start  # the first loop window samples the same neurons (paired design)
        else:
            wins.append(Window(probe, cfg.probe_ms, WindowKind.EXC_PROBE))
        # back to full drive: let the inhibitory synapses settle before loop windows
        wins.append(Window(codes, cfg.settle_ms, WindowKind.SETTLE))
        self.codes = codes
        return wins

    def _next_window_ms(self) -> float:
        cfg = self.cfg
        left = cfg.budget_ms - self.model_ms
        # a sliver of budget after a long window would add almost no information, only a last noisy correction
        if left <= max(cfg.first_window_ms * 0.2, 0.25 * self.last_ms):
            return 0.0
        return float(min(self.next_ms, left))

    # -- learning --------------------------------------------------------------------------------------------------
    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> UpdateRecord:
        for m in measurements:
            self.model_ms += m.window_ms
        if self.phase is Phase.NULL:
            for w, m in zip(windows, measurements):
                if w.kind == WindowKind.NULL:
                    self.offsets.add(m.proxy_pa, m.observed)
            self.phase = Phase.PROBE
            return OffsetRecord(Phase.NULL, self.offsets.finish())
        if self.phase is Phase.PROBE:
            for w, m in zip(windows, measurements):
                if w.kind == WindowKind.EXC_PROBE:
                    self._add_balance(w, m)
                    self.spikes_any |= m.spike_counts > 0
            self.phase = Phase.LOOP
            return PhaseRecord(Phase.PROBE)
        return self._update_loop(windows, measurements)

    def _add_balance(self, w: Window, m: Measurement) -> None:
        ge, gi = self.lattice.gains(w.codes)
        self.balance.add(ge, gi, m.proxy_pa, m.observed, self.offsets.offset_pa, self.targets.proxy_pa, m.window_ms)

    def _update_loop(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> LoopRecord:
        """Loop windows: one measurement (or sub-windows of one) at the same codes; both loops learn from it."""
        counts = np.zeros(self.n)
        T = 0.0
        ysum, ycnt = np.zeros(self.n), np.zeros(self.n)
        for w, m in zip(windows, measurements):
            self._add_balance(w, m)
            counts += m.spike_counts
            T += m.window_ms
            ok = m.observed & np.isfinite(m.proxy_pa)
            ysum[ok] += (m.proxy_pa - self.offsets.offset_pa - self.targets.proxy_pa)[ok]
            ycnt[ok] += 1
        self.spikes_any |= counts > 0
        loop2 = self.rate_loop
        applied = [self.lattice.applied_state(w.codes, self.state.ln_s, self.state.ln_r) for w in windows]
        lens = np.array([m.window_ms for m in measurements])
        dithered = any(any(not np.array_equal(w.codes[k], windows[0].codes[k]) for k in w.codes) for w in windows)

        def window_mean(values: list) -> np.ndarray:
            # a dithered window's blocks ran at different codes: its state is their length-weighted mean
            return sum(v * t for v, t in zip(values, lens)) / lens.sum() if dithered else values[0]

        ln_s, ln_r = window_mean([a[0] for a in applied]), window_mean([a[1] for a in applied])
        sub_counts = [m.spike_counts for m in measurements]
        if dithered:
            # the blocks' deliberate offsets moved each neuron's expected count: take them out of the Fano sample
            slope_s, slope_r = loop2.slopes
            sub_counts = [m.spike_counts * np.exp(-(slope_s * (a[0] - ln_s) + slope_r * (a[1] - ln_r)))[self.group_of]
                          for m, a in zip(measurements, applied)]
        # the Fano sample counts the neurons live before this window (a neuron's first spike gives it no history)
        loop2.fano.add(loop2.fano_sample(sub_counts, ~self.dead), T)
        # dead: no spike in any window, the excitation-only probe included (a live neuron fires hard there)
        self.dead = ~self.spikes_any
        live = ~self.dead
        c, n_live = self.group_counts(counts, live)
        blocks = self._block_observation(measurements, applied, ln_s, ln_r, live) if dithered else (None,) * 3
        self.last_ms = T
        # loop 1: ratio from the balance least squares
        ge = window_mean([self.lattice.gains(w.codes)[0] for w in windows])
        self.balance_est = self.balance.measured_index(ysum, ycnt, ge)
        self.state.ln_r = self.balance.solve(self.state.ln_s, self.state.ln_r, self.cfg.max_ratio_step,
                                             loop2.ratios_frozen)
        # loop 2: scale from the rate model (per group, or per population)
        obs = LoopObservation(counts, live, c, n_live, ln_s, ln_r, T, self.model_ms, self.balance.balance_se, *blocks)
        loop2.step(self.state, self.lattice, obs)
        self.codes = self._codes_from_state()
        sched = loop2.schedule(self.state, obs, self.balance.measured_ms)
        if sched.stop is not None:
            self.stopped = sched.stop
        else:
            self.next_ms = sched.next_ms
        return self._record(obs)

    def _block_observation(self, measurements: Sequence[Measurement], applied: list, ln_s: np.ndarray,
                           ln_r: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A dithered window's blocks: each group's count per block, and each block's applied offset from the
        window's state (its length-weighted mean)."""
        k = len(measurements)
        cnt = np.zeros((DITHER_BLOCKS, self.n_groups))
        ds = np.zeros((DITHER_BLOCKS, self.n_groups))
        dr = np.zeros((DITHER_BLOCKS, self.n_groups))
        per = np.zeros(DITHER_BLOCKS)
        for i, (m, a) in enumerate(zip(measurements, applied)):
            j = i * DITHER_BLOCKS // k
            cnt[j] += self.group_counts(m.spike_counts, live)[0]
            ds[j] += a[0] - ln_s
            dr[j] += a[1] - ln_r
            per[j] += 1
        return cnt, ds / per[:, None], dr / per[:, None]

    def _record(self, obs: LoopObservation) -> LoopRecord:
        c, n_live, T = obs.group_counts, obs.group_live, obs.window_ms
        live_g = n_live > 0
        rates = c[live_g] / n_live[live_g] / (T * 1e-3)
        bal = self.balance_est[live_g & np.isfinite(self.balance_est)]
        loop2 = self.rate_loop

        def rms(se: np.ndarray) -> Optional[float]:
            return float(np.sqrt(np.mean(np.minimum(se[live_g], 10) ** 2))) if live_g.any() else None

        return loop2.record(dict(
            phase=Phase.LOOP, window_ms=T, rate_mean_hz=float(rates.mean()) if rates.size else None,
            rate_cv=float(rates.std() / rates.mean()) if rates.size and rates.mean() > 0 else None,
            balance_p95=float(np.quantile(bal, 0.95)) if bal.size else None, beta=loop2.beta, gamma=loop2.gamma,
            fano=self.fano, rate_se_rms=rms(self.state.rate_se), balance_se_rms=rms(self.balance.balance_se)))

    # -- what the run loop asks ------------------------------------------------------------------------------------
    def status(self) -> Status:
        dead = self.dead.copy()
        # a group still off target by more than its noise allows when the loop stopped is not calibrated either: it
        # is counted with the unreachable ones (it did not reach its target within the budget)
        unreach_g = self.state.unreachable_rate | self.state.unreachable_ratio | self.state.off_target
        unreach = unreach_g[self.group_of] & ~dead
        return Status(calibrated=~dead & ~unreach, unreachable=unreach, dead=dead)

    def stop_reason(self) -> StopReason:
        return self.stopped if self.stopped is not None else StopReason.CONVERGED

    def balance_reference(self) -> Optional[BalanceReference]:
        return BalanceReference(offset_pa=self.offsets.offset_pa.copy(), exc_pa_per_gain=self.balance.a.copy())
