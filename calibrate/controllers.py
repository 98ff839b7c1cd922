r"""Calibration controllers: the dual-loop homeostatic controller and three baselines, one interface.

A controller never touches a chip. It *plans* the windows of its next iteration (``plan() -> list[Window]``: codes,
window length, which proxy channels to read) and *learns* from what the runner measured (``update(windows,
measurements)``). The runner (``calibrate.run``) owns the loop and the ``Device``. So a controller is a plain object
whose state changes only in ``update``; a recorded run can be replayed through it without a chip.

The dual loop (``DualLoop``)
----------------------------
Knob codes follow the ratio ``r`` and the common scale ``s`` of each knob group (a neuron, a core or the chip)::

    gain_e = s * sqrt(r),   gain_i = s / sqrt(r)

*Loop 1, E/I balance.* The net-current proxy is linear in the two gains: its window mean is
``y = gain_e * a - gain_i * b`` (for cond_lif ``a = <ge>(EE - Vbal)`` and ``b = <gi>(Vbal - EI)`` at unit gain; the
input spike trains do not depend on the neuron, so ``<ge>`` is exactly proportional to ``gain_e``). Its zero is at
``r* = b / a`` and does not move when ``s`` does. The loop estimates ``(a, b)`` per group by weighted least squares
over every window it has seen (so noise averages out as 1/sqrt(time), like an annealed integral controller) and sets
``r`` to ``b/a``; this is a Newton step in ``ln r`` whose sensitivity ``d y / d ln r = (gain_e a + gain_i b)/2`` is
known, not guessed. Two reference readings make that possible from the first iteration: *null* windows with all
codes at 0 (no synaptic drive: the ADC reads its own per-neuron offset, which is then subtracted from every later
reading; controller_literature.md 5.4) and an *excitation-only* window (``gain_i = 0``: the proxy reads ``gain_e * a``
directly, which also gives the denominator of the balance index).

*Loop 2, rate.* Per group, ``ln rate = alpha + beta ln s + gamma ln r`` locally. ``beta`` and ``gamma`` are shared
by the population (pooled within-group regression), ``alpha`` is per group: the information-weighted mean of the
residuals over the windows taken near the target. The next scale solves the model for the target rate. Weighting
by spike count makes this the annealed (1/n) stochastic-approximation estimate, which approaches the counting floor
sqrt(F/(r T)) (controller_literature.md 5.2); a fixed loop gain would stall at a multiple of it.

*Time-scale separation.* The ratio loop converges in one or two iterations (its plant is linear and its
sensitivity measured), the rate loop over several, and the rate model carries ``gamma`` so that the ratio's last
small moves do not bias the rate estimate.

*Windows.* The first loop window is short (0.5 s); each next one at most doubles, and only grows while the measured
rate error is within a few counting-noise standard deviations (no point buying precision far from target); the last
one is trimmed to what the tolerance still needs. On a chip that reads one proxy channel per core per window, each
loop window is cut into sub-windows that monitor a different neuron of each core (a fixed random permutation), so
the proxy sampling costs windows, not model time.

*Limits.* Codes are integers from the DAC's nominal transfer; the state is kept within the DAC range (no wind-up);
a group whose required scale or ratio lies beyond the range is ``unreachable``. Neurons that never spike, even under
excitation only, are ``dead``: excluded from every rate estimate, balanced like the others, and reported.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from hw_models.device import DeviceIdentity, KnobSpec, Measurement

__all__ = ["Window", "Targets", "Controller", "DualLoop", "DualLoopSettings", "RateOnly", "BinarySearch",
           "CrossHomeostatic", "CONTROLLERS", "make_controller", "Status"]


@dataclass(frozen=True)
class Targets:
    """What a calibration aims for: a rate and a proxy value; on chips with excitatory and inhibitory neurons
    (recurrent profiles) the inhibitory ones may have their own rate (``rate_inh_hz``, with ``inh_mask`` [N])."""

    rate_hz: float = 10.0
    proxy_pa: float = 0.0
    rate_inh_hz: Optional[float] = None
    inh_mask: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("rate_hz",) + (("rate_inh_hz",) if self.rate_inh_hz is not None else ()):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"target {name}: expected a positive number of Hz, got {v!r}")
        if (self.rate_inh_hz is None) != (self.inh_mask is None):
            raise ValueError("targets: rate_inh_hz and inh_mask go together")

    @classmethod
    def from_profile(cls, profile, rate_hz: Optional[float] = None, rate_inh_hz: Optional[float] = None) -> "Targets":
        """The profile's targets (``targets.rate_hz``, and ``rate_inh_hz`` for its inhibitory neurons on a
        recurrent profile), optionally overridden."""
        t = profile["targets"]
        rate = float(rate_hz if rate_hz is not None else t["rate_hz"])
        inh = rate_inh_hz if rate_inh_hz is not None else t.get("rate_inh_hz")
        rec = profile["recurrent"]
        if inh is None or rec is None:
            return cls(rate_hz=rate)
        mask = np.arange(profile.n_neurons) >= rec["n_exc"]
        return cls(rate_hz=rate, rate_inh_hz=float(inh), inh_mask=mask)

    def per_neuron(self, n: int) -> np.ndarray:
        """Target rate of every neuron (Hz)."""
        out = np.full(n, float(self.rate_hz))
        if self.rate_inh_hz is not None:
            out[np.asarray(self.inh_mask, dtype=bool)] = float(self.rate_inh_hz)
        return out


@dataclass
class Window:
    """One measurement window a controller asks for.

    kind: ``settle`` (discarded), ``null`` (codes 0: ADC offsets), ``exc_probe`` (gain_i 0: excitatory part of the
    proxy), ``loop`` (closed-loop measurement at the current codes).
    """

    codes: dict[str, np.ndarray]
    window_ms: float
    kind: str = "loop"
    monitor: Optional[np.ndarray] = None


@dataclass
class Status:
    """Per-neuron outcome. Every neuron is exactly one of calibrated, unreachable, dead."""

    calibrated: np.ndarray
    unreachable: np.ndarray
    dead: np.ndarray

    def counts(self) -> dict[str, int]:
        return {"calibrated": int(self.calibrated.sum()), "unreachable": int(self.unreachable.sum()),
                "dead": int(self.dead.sum()), "n": int(self.calibrated.size)}


class Controller(ABC):
    """The interface every controller implements (the dual loop and the baselines)."""

    name: str = "controller"

    def __init__(self) -> None:
        self.identity: Optional[DeviceIdentity] = None
        self.knobs: dict[str, KnobSpec] = {}
        self.targets = Targets()

    def begin(self, identity: DeviceIdentity, knobs: Mapping[str, KnobSpec], targets: Targets,
              start_codes: Mapping[str, np.ndarray]) -> None:
        self.identity = identity
        self.knobs = dict(knobs)
        self.targets = targets
        if set(self.knobs) != {"gain_e", "gain_i"}:
            raise ValueError(f"{self.name}: expected knobs gain_e and gain_i, chip has {sorted(self.knobs)}")
        ke, ki = self.knobs["gain_e"], self.knobs["gain_i"]
        if ke.n_groups != ki.n_groups or not np.array_equal(ke.group_of, ki.group_of):
            raise ValueError(f"{self.name}: gain_e and gain_i must share the same groups")
        self.group_of = ke.group_of
        self.n_groups = ke.n_groups
        self.n = identity.n_neurons
        self.codes = {k: np.asarray(v, dtype=np.int64).copy() for k, v in start_codes.items()}
        # each knob group's target: the mean of its neurons' targets (per-neuron knobs: the neuron's own)
        tgt = targets.per_neuron(self.n)
        self.target_g = np.bincount(self.group_of, weights=tgt, minlength=self.n_groups) / np.maximum(
            np.bincount(self.group_of, minlength=self.n_groups), 1)
        self._start()

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def plan(self) -> list[Window]:
        """The windows of the next iteration; an empty list when the controller has finished."""

    @abstractmethod
    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> dict:
        """Learn from the measured windows; set ``self.codes``; return a small dict of loop figures for the
        iteration record (e.g. estimated errors)."""

    @abstractmethod
    def status(self) -> Status: ...

    def settings(self) -> dict:
        return {}

    # -- helpers shared by controllers ---------------------------------------------------------------------------
    def _group_rates(self, counts: np.ndarray, window_ms: float, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per group: spike count summed over live neurons, and the number of live neurons."""
        c = np.bincount(self.group_of, weights=counts * live, minlength=self.n_groups)
        n_live = np.bincount(self.group_of, weights=live.astype(float), minlength=self.n_groups)
        return c, n_live


# ------------------------------------------------------------------------------------------------------------------
# The dual loop
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class DualLoopSettings:
    """Settings of the dual loop, with the defaults used by ``eical calibrate``; see docs/controller.md.

    rate_tol: relative standard error of each group's rate estimate at which loop 2 stops (0.035: the final rate CV
        across neurons is then about that, under the 0.05 goal with room for quantisation and model error).
    rate_tol_shared: the same for knobs shared by a core or the chip (their group mean is over many neurons).
    balance_tol_shared: balance_tol for shared knobs (a group's balance is judged on its own, not as a quantile).
    rate_tol_population: the same for the population rates of a recurrent chip (population mode).
    balance_tol: tolerance on the estimated balance index of a group (|y| / (gain_e a)).
    first_window_ms, max_growth: loop window schedule: first window, and at most this factor longer each time.
    budget_ms: model time the calibration may spend measuring, reference windows included.
    beta0, gamma0: initial slopes d ln rate / d ln s and d ln rate / d ln r, until the data identify them.
    beta_sd: prior spread of the groups' own slopes around the population's (sets the shrinkage of each group's
        slope estimate; 0.3 is an assumption, of the order of the slope spread the rate model's fits show).
    null_ms, settle_ms, probe_ms: reference windows (ADC offsets, transients after large code changes, the
        excitation-only probe).
    null_reads: null windows read per channel: the offset is their mean, so its error is read noise / sqrt(reads)
        (controller_literature.md 5.4: 10 null windows take a 10 pA offset to ~2 pA).
    sub_window_ms: on one-channel-per-core chips, the length of one proxy sub-window of a loop window.
    fano_splits: a loop window is measured as this many sub-windows (all-channel chips), so the spike-count Fano
        factor, which sets the counting noise, is estimated from the data rather than assumed.
    prior_rate_se: warm start from a calibrated table (tracking): the relative standard error of the start codes'
        rates. The start then counts, in each group's own rate estimate, as a pseudo-window of ``F / se**2`` spikes
        exactly at target, so a few short noisy windows do not undo a per-neuron calibration they cannot match.
        None: no prior (a calibration from scratch).
    population_mode: recurrent chips: loop 2 sets one scale per population (E, I) from the measured closed-loop
        Jacobian d ln rate_P / d ln s_Q (see DualLoop._solve_rate_pop); None switches it on when the targets give
        the inhibitory neurons their own rate.
    jacobian_prior_sd: prior spread of the Jacobian's entries around (beta0 on the diagonal, 0 off it).
    probe_step: population mode: the first loop windows step S_E, then S_I, by this much (in ln s), so the closed-
        loop Jacobian is measured, not assumed, before the loop relies on it.
    near: half-width (in ln rate) of the band around target within which a window informs the rate estimate fully
        (a band that narrows with the estimate's standard error was tried and was worse on devboard: it drops
        windows the estimate still needs).
    """

    rate_tol: float = 0.035
    rate_tol_shared: float = 0.01
    balance_tol_shared: float = 0.02
    rate_tol_population: float = 0.01
    balance_tol: float = 0.03
    fano_splits: int = 4
    first_window_ms: float = 300.0
    max_growth: float = 2.0
    budget_ms: float = 90_000.0
    beta0: float = 1.5
    beta_sd: float = 0.3
    gamma0: float = 0.0
    null_ms: float = 20.0
    null_reads: int = 10
    settle_ms: float = 50.0
    probe_ms: float = 200.0
    sub_window_ms: float = 10.0
    near: float = 0.5
    max_ratio_step: float = 1.0
    forget_halflife_ms: Optional[float] = None  # tracking: old windows lose weight with this half-life
    prior_rate_se: Optional[float] = None  # warm start from a calibrated table: how well its rates were known
    population_mode: Optional[bool] = None  # None: on when the targets name E and I populations (recurrent chips)
    jacobian_prior_sd: float = 1.0
    probe_step: float = 0.15

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if v is None:
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"dual-loop setting {k}: expected a non-negative number, got {v!r}")
        if self.rate_tol <= 0 or self.first_window_ms <= 0 or self.max_growth < 1:
            raise ValueError("dual-loop settings: rate_tol and first_window_ms must be > 0, max_growth >= 1")


def _neighbour_codes(spec: KnobSpec, codes: np.ndarray) -> np.ndarray:
    """[G, 3]: each code and its neighbours below and above in the DAC's gain order (clipped at the ends)."""
    if spec.dac == "linear":
        c = np.asarray(codes, dtype=np.int64)
        return np.stack([np.maximum(c - 1, 0), c, np.minimum(c + 1, spec.max_code)], axis=1)
    valid = spec.valid_codes()
    order = valid[np.argsort(spec.nominal_gain(valid), kind="stable")]
    pos = np.empty(spec.max_code + 1, dtype=np.int64)
    pos[order] = np.arange(order.size)
    p = pos[np.asarray(codes, dtype=np.int64)]
    return order[np.stack([np.maximum(p - 1, 0), p, np.minimum(p + 1, order.size - 1)], axis=1)]


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
        ke, ki = self.knobs["gain_e"], self.knobs["gain_i"]
        ge = ke.nominal_gain(self.codes["gain_e"])
        gi = ki.nominal_gain(self.codes["gain_i"])
        ge = np.maximum(ge, ke.gain_limits()[0])
        gi = np.maximum(gi, ki.gain_limits()[0])
        self.ln_s = 0.5 * (np.log(ge) + np.log(gi))
        self.ln_r = np.log(ge) - np.log(gi)
        self._start_lnS, self._start_lnR = self.ln_s.copy(), self.ln_r.copy()
        self.lim_e = tuple(np.log(ke.gain_limits()))
        self.lim_i = tuple(np.log(ki.gain_limits()))
        G, N = self.n_groups, self.n
        self.shared = ke.sharing != "neuron"
        self.one_channel = self.identity.proxy_channels == "one_per_core"
        per_core = self.identity.neurons_per_core
        # fixed random permutation of each core's neurons for proxy sampling (seeded by the chip uid: reproducible)
        seed = int.from_bytes(self.identity.uid.encode()[:8].ljust(8, b"\0"), "little")
        self._perm = np.random.default_rng(seed).permutation(per_core)
        self._perm_pos = 0
        self.offset = np.full(N, np.nan)  # ADC offset per neuron (from null windows)
        self._null_sum = np.zeros(N)
        self._null_n = np.zeros(N)
        # balance least squares per group: y = ge*a - gi*b; normal equations sums
        # [sum w ge^2, sum w ge gi, sum w gi^2, sum w ge y, sum w gi y, sum w y^2, number of readings]
        self._S = np.zeros((G, 7))
        self.balance_se = np.full(G, np.inf)
        self._bal_ms = 0.0
        self.a = np.full(G, np.nan)
        self.b = np.full(G, np.nan)
        # rate windows per group: lists of arrays [K, G]
        self._rw_lnS, self._rw_lnR, self._rw_c, self._rw_n, self._rw_T, self._rw_t = [], [], [], [], [], []
        self.beta = self.cfg.beta0
        self.gamma = self.cfg.gamma0
        self.alpha = np.full(G, np.nan)
        self.beta_g = np.full(G, self.cfg.beta0)
        self.spikes_any = np.zeros(N, dtype=bool)
        self.probe_counts = np.zeros(N)
        self.dead = np.zeros(N, dtype=bool)
        self.unreachable_rate = np.zeros(G, dtype=bool)
        self.unreachable_ratio = np.zeros(G, dtype=bool)
        self.phase = "null"
        self.model_ms = 0.0
        self.next_T = self.cfg.first_window_ms
        self.last_T = 0.0
        self.done = False
        self.rate_se = np.full(G, np.inf)
        self.rate_err = np.full(G, np.inf)
        self.balance_est = np.full(G, np.nan)
        self.fano = 1.0
        self._fano_w = 0.0
        self._ratios_frozen = False
        pm = self.cfg.population_mode
        inh = self.targets.inh_mask
        self.pop_mode = (inh is not None and not self.shared) if pm is None else bool(pm)
        if self.pop_mode:
            if inh is None or self.shared:
                raise ValueError("population mode needs per-neuron knobs and targets with an inhibitory population")
            self.pop_of = np.asarray(inh, dtype=bool).astype(np.int64)  # 0: excitatory, 1: inhibitory
            self.S = np.array([np.mean(self.ln_s[self.pop_of == 0]), np.mean(self.ln_s[self.pop_of == 1])])
            self.ln_s = self.S[self.pop_of].copy()
            self._pw_S, self._pw_R, self._pw_y, self._pw_c, self._pw_t = [], [], [], [], []
            self.jacobian = np.diag([self.cfg.beta0, self.cfg.beta0])
            self._pop_step = np.inf
            self.pop_target = np.log([self.targets.rate_hz, self.targets.rate_inh_hz])

    # -- codes from (s, r) -----------------------------------------------------------------------------------------
    def _clip_state(self) -> None:
        """Keep (ln s, ln r) inside the DAC range: the ratio first (balance wins), then the scale."""
        lo_e, hi_e = self.lim_e
        lo_i, hi_i = self.lim_i
        r_hi = hi_e - lo_i
        r_lo = lo_e - hi_i
        self.unreachable_ratio = (self.ln_r > r_hi) | (self.ln_r < r_lo)
        self.ln_r = np.clip(self.ln_r, r_lo, r_hi)
        s_hi = np.minimum(hi_e - self.ln_r / 2, hi_i + self.ln_r / 2)
        s_lo = np.maximum(lo_e - self.ln_r / 2, lo_i + self.ln_r / 2)
        self._s_at_limit = np.where(self.ln_s >= s_hi, 1, np.where(self.ln_s <= s_lo, -1, 0))
        self.ln_s = np.clip(self.ln_s, s_lo, s_hi)

    def _codes_from_state(self) -> dict[str, np.ndarray]:
        """Integer codes for the wanted (ln s, ln r), chosen jointly on the DAC lattice.

        Rounding each knob on its own can miss by half a step in both, and one step of an 8-bit DAC near its
        code_ref moves a rate by several percent. So among the neighbouring code pairs (each knob's nearest code
        and the ones either side of it, in gain order) we take the pair whose predicted rate error (the rate
        model's slopes) and ratio error (relative to the tolerances) are smallest."""
        self._clip_state()
        ke, ki = self.knobs["gain_e"], self.knobs["gain_i"]
        want_e = self.ln_s + self.ln_r / 2
        want_i = self.ln_s - self.ln_r / 2
        ce = _neighbour_codes(ke, ke.code_for_gain(np.exp(want_e)))  # [G, 3]
        ci = _neighbour_codes(ki, ki.code_for_gain(np.exp(want_i)))
        with np.errstate(divide="ignore"):
            le = np.log(np.maximum(ke.nominal_gain(ce), 1e-300))
            li = np.log(np.maximum(ki.nominal_gain(ci), 1e-300))
        # all 9 pairs: [G, 3, 3]
        ls = 0.5 * (le[:, :, None] + li[:, None, :])
        lr = le[:, :, None] - li[:, None, :]
        d_rate = self.beta_g[:, None, None] * (ls - self.ln_s[:, None, None]) + self.gamma * (lr - self.ln_r[:, None, None])
        d_ratio = lr - self.ln_r[:, None, None]
        # each error against the standard error its loop stops at (balance_tol is two of them): a ratio error also
        # moves the rate through gamma, so rounding that spends the balance budget muddies the rate fit too
        cost = (d_rate / self._tol()) ** 2 + (d_ratio / max(0.5 * self.cfg.balance_tol, 1e-6)) ** 2
        cost = np.where(np.isfinite(cost), cost, np.inf)
        best = np.argmin(cost.reshape(cost.shape[0], -1), axis=1)
        rows = np.arange(cost.shape[0])
        return {"gain_e": ce[rows, best // 3], "gain_i": ci[rows, best % 3]}

    def _applied_state(self, codes) -> tuple[np.ndarray, np.ndarray]:
        """(ln s, ln r) the codes really set. The rate model is fitted on these, not on the wanted state: the lattice
        is coarse (an 8-bit step is 1-2 % of gain near code_ref), and the joint quantiser trades rate for ratio
        error, so the wanted state can be off the applied one by more than the counting noise of a long window."""
        ge, gi = self._applied(codes)
        ok = (ge > 0) & (gi > 0)
        with np.errstate(divide="ignore"):
            le, li = np.log(np.where(ok, ge, 1.0)), np.log(np.where(ok, gi, 1.0))
        return np.where(ok, 0.5 * (le + li), self.ln_s), np.where(ok, le - li, self.ln_r)

    def _applied(self, codes) -> tuple[np.ndarray, np.ndarray]:
        return self.knobs["gain_e"].nominal_gain(codes["gain_e"]), self.knobs["gain_i"].nominal_gain(codes["gain_i"])

    def _monitors(self, count: int) -> list[Optional[np.ndarray]]:
        """Monitor sets for ``count`` sub-windows: the next neurons of each core's permutation."""
        if not self.one_channel:
            return [None] * count
        per_core, n_cores = self.identity.neurons_per_core, self.identity.n_cores
        out = []
        for _ in range(count):
            j = self._perm[self._perm_pos % per_core]
            self._perm_pos += 1
            out.append(np.arange(n_cores) * per_core + j)
        return out

    def _zero_codes(self) -> dict[str, np.ndarray]:
        return {k: np.zeros(spec.n_groups, dtype=np.int64) for k, spec in self.knobs.items()}

    # -- planning --------------------------------------------------------------------------------------------------
    def plan(self) -> list[Window]:
        cfg = self.cfg
        if self.done:
            return []
        if self.phase == "null":
            zero = self._zero_codes()
            wins = [Window(zero, cfg.settle_ms, "settle")]
            if self.one_channel:
                # every neuron this run may monitor needs its offset: sweep the whole permutation, short windows
                n_sweep = self.identity.neurons_per_core
                self._perm_pos = 0
                wins += [Window(zero, max(cfg.null_ms / 10, self.identity.dt_ms), "null", m)
                         for m in self._monitors(n_sweep)]
                self._perm_pos = 0
            else:
                wins += [Window(zero, cfg.null_ms, "null") for _ in range(int(cfg.null_reads))]
            return wins
        if self.phase == "probe":
            codes = self._codes_from_state()
            probe = {"gain_e": codes["gain_e"], "gain_i": np.zeros_like(codes["gain_i"])}
            wins = [Window(probe, cfg.settle_ms, "settle")]
            if self.one_channel:
                # every neuron of each core once: a shared knob's sensitivity is its core's mean, and a 10 ms
                # reading is noisy, so a sample of the core is not enough
                m = self.identity.neurons_per_core
                start = self._perm_pos
                wins += [Window(probe, cfg.sub_window_ms, "exc_probe", mon) for mon in self._monitors(m)]
                self._perm_pos = start  # the first loop window samples the same neurons (paired design)
            else:
                wins.append(Window(probe, cfg.probe_ms, "exc_probe"))
            # back to full drive: let the inhibitory synapses settle before loop windows
            wins.append(Window(codes, cfg.settle_ms, "settle"))
            self.codes = codes
            return wins
        # loop phase
        T = self._next_window_ms()
        if T <= 0:
            self.done = True
            return []
        codes = self.codes
        if self.one_channel:
            m = int(max(1, min(self.identity.neurons_per_core, round(T / cfg.sub_window_ms))))
            return [Window(codes, T / m, "loop", mon) for mon in self._monitors(m)]
        k = max(1, int(cfg.fano_splits))
        return [Window(codes, T / k, "loop") for _ in range(k)]

    def _next_window_ms(self) -> float:
        cfg = self.cfg
        left = cfg.budget_ms - self.model_ms
        # a sliver of budget after a long window would add almost no information, only a last noisy correction
        if left <= max(cfg.first_window_ms * 0.2, 0.25 * self.last_T):
            return 0.0
        return float(min(self.next_T, left))

    # -- learning --------------------------------------------------------------------------------------------------
    def update(self, windows: Sequence[Window], measurements: Sequence[Measurement]) -> dict:
        for w, m in zip(windows, measurements):
            self.model_ms += m.window_ms
        info: dict = {"phase": self.phase}
        if self.phase == "null":
            for w, m in zip(windows, measurements):
                if w.kind == "null":
                    ok = m.observed & np.isfinite(m.proxy_pa)
                    self._null_sum[ok] += m.proxy_pa[ok]
                    self._null_n[ok] += 1
            seen = self._null_n > 0
            self.offset[seen] = self._null_sum[seen] / self._null_n[seen]
            self.offset[~seen] = 0.0  # never monitored: no correction (and never used)
            self.phase = "probe"
            info["offset_sd_pa"] = float(np.std(self.offset[seen])) if seen.any() else None
            return info
        if self.phase == "probe":
            for w, m in zip(windows, measurements):
                if w.kind == "exc_probe":
                    self._add_balance(w, m)
                    self.probe_counts += m.spike_counts
                    self.spikes_any |= m.spike_counts > 0
            self.phase = "loop"
            return info
        # loop windows: one measurement (or sub-windows of one) at the same codes
        counts = np.zeros(self.n)
        T = 0.0
        ysum, ycnt = np.zeros(self.n), np.zeros(self.n)
        for w, m in zip(windows, measurements):
            self._add_balance(w, m)
            counts += m.spike_counts
            T += m.window_ms
            ok = m.observed & np.isfinite(m.proxy_pa)
            ysum[ok] += (m.proxy_pa - self.offset - self.targets.proxy_pa)[ok]
            ycnt[ok] += 1
        self.spikes_any |= counts > 0
        self._update_fano([m.spike_counts for m in measurements], T)
        self._update_dead()
        live = ~self.dead
        c, n_live = self._group_rates(counts, T, live)
        lnS, lnR = self._applied_state(windows[0].codes)
        self._rw_lnS.append(lnS)
        self._rw_lnR.append(lnR)
        self._rw_c.append(c)
        self._rw_n.append(n_live)
        self._rw_T.append(T)
        self._rw_t.append(self.model_ms)
        self.last_T = T
        # loop 1: ratio from the balance least squares
        self._measured_balance(ysum, ycnt, windows[0].codes)
        self._solve_balance()
        # loop 2: scale from the rate model
        if self.pop_mode:
            self._solve_rate_pop(counts, T, [m.spike_counts for m in measurements])
            self.codes = self._codes_from_state()
            self._schedule_pop()
            info.update(self._loop_info(c, n_live, T))
            info.update({"pop_rates_hz": self._pop_rates_last, "jacobian": self.jacobian.tolist()})
            return info
        self._solve_rate(c, n_live, T)
        self.codes = self._codes_from_state()
        self._schedule()
        info.update(self._loop_info(c, n_live, T))
        return info

    # -- population mode (recurrent chips) -------------------------------------------------------------------------
    def _solve_rate_pop(self, counts: np.ndarray, T: float, sub_counts: list) -> None:
        """Loop 2 on a recurrent chip: one scale S_P per population, from the closed-loop Jacobian.

        On a recurrent chip a neuron's rate depends on every other neuron's codes, so per-neuron rate control is
        ill-posed; what a balanced network defines is its population rates. Per window we have the population
        scales S = (S_E, S_I) and rates y = (ln r_E, ln r_I). Per population P we fit, by weighted least squares
        over the windows (weights: the population's spike count, divided by its Fano factor), the local model
        ``y_P = c_P + J_PE S_E + J_PI S_I`` with a ridge prior (J = diag(beta0) +- jacobian_prior_sd). The next S
        solves ``J S = target - c``, damped. The fitted J is the *closed-loop* response: in an inhibition-
        stabilised network J_II (the inhibitory rate's response to the inhibitory neurons' own common scale) can
        be negative, the paradoxical effect (controller_literature.md 1.6); solving the full 2x2 system follows
        whichever sign the chip shows instead of assuming the single-neuron one. The per-neuron ratios (loop 1)
        are untouched."""
        live = ~self.dead
        # time-scale separation made strict: on a recurrent chip every ratio change moves the whole network, so
        # once loop 1's estimate is within its tolerance the ratios are frozen and loop 2 finishes on a network
        # that no longer changes under it
        bse = self.balance_se[live]
        if bse.size and 2.0 * float(np.sqrt(np.mean(np.minimum(bse, 10.0) ** 2))) <= self.cfg.balance_tol:
            self._ratios_frozen = True
        y, cnt = np.zeros(2), np.zeros(2)
        for P in (0, 1):
            sel = live & (self.pop_of == P)
            cnt[P] = counts[sel].sum()
            y[P] = math.log((cnt[P] + 0.5) / max(sel.sum(), 1) / (T * 1e-3))
        self._pop_rates_last = [float(math.exp(v)) for v in y]
        # Fano of the population sums across sub-windows (common fluctuation included: it moves a population mean)
        if len(sub_counts) >= 2:
            sc = np.array(sub_counts, dtype=float)
            f = []
            for P in (0, 1):
                tot = sc[:, live & (self.pop_of == P)].sum(axis=1)
                if tot.mean() > 0:
                    f.append(tot.var(ddof=1) / tot.mean())
            if f:
                self.fano = float(np.clip((self.fano * self._fano_w + np.median(f) * T) / (self._fano_w + T), 0.2, 20))
                self._fano_w += T
        self._pw_S.append(self.S.copy())
        self._pw_R.append(np.array([np.mean(self.ln_r[self.pop_of == P]) for P in (0, 1)]))
        self._pw_y.append(y)
        self._pw_c.append(cnt)
        self._pw_t.append(self.model_ms)
        Sx = np.array(self._pw_S)
        Y = np.array(self._pw_y)
        Cn = np.array(self._pw_c)
        age = self._weights_age(np.array(self._pw_t))
        # windows taken while loop 1 had the ratios elsewhere saw another network: they fade out (the population
        # means of ln r move as loop 1 converges; 0.02 in ln r moves a population rate by a few percent)
        R_now = np.array([np.mean(self.ln_r[self.pop_of == P]) for P in (0, 1)])
        dR = np.max(np.abs(np.array(self._pw_R) - R_now), axis=1)
        age = age * np.exp(-(dR / 0.02) ** 2)
        lam = self.fano / max(self.cfg.jacobian_prior_sd, 1e-6) ** 2
        X = np.column_stack([np.ones(len(Sx)), Sx])
        J = np.zeros((2, 2))
        c = np.zeros(2)
        for P in (0, 1):
            close = np.exp(-((Y[:, P] - self.pop_target[P]) / self.cfg.near) ** 2)
            w = (Cn[:, P] + 1.0) * close * age
            A = X.T @ (w[:, None] * X)
            b = X.T @ (w * Y[:, P])
            prior = np.zeros(3)
            prior[1 + P] = self.cfg.beta0
            L = np.diag([1e-9, lam, lam])
            theta = np.linalg.solve(A + L, b + L @ prior)
            c[P], J[P] = theta[0], theta[1:]
        self.jacobian = J
        want = self.pop_target - c
        try:
            S_new = np.linalg.solve(J, want)
            ok = np.all(np.isfinite(S_new)) and abs(np.linalg.det(J)) > 1e-3
        except np.linalg.LinAlgError:
            ok = False
        if not ok:  # singular: diagonal Newton with the sign each population shows
            d = np.where(np.abs(np.diag(J)) > 0.1, np.diag(J), self.cfg.beta0)
            S_new = self.S + (self.pop_target - y) / d
        step = S_new - self.S
        norm = float(np.max(np.abs(step)))
        if norm > 0.5:
            step *= 0.5 / norm
        self._pop_step = float(np.max(np.abs(step)))
        k = len(self._pw_S)
        if k <= 2:
            # identification design: window 1 at the start point, window 2 with S_E stepped, window 3 with S_I
            # stepped (each from the first point), so both columns of J are seen before the loop closes on it
            step = np.zeros(2)
            step[k - 1] = self.cfg.probe_step
            step = self._pw_S[0] + step - self.S
            self._pop_step = np.inf
        self.S = self.S + step
        self.pop_se = np.sqrt(self.fano / np.maximum((Cn * age[:, None]).sum(axis=0), 1.0))
        self.pop_err = np.abs(y - self.pop_target)
        self.ln_s = self.S[self.pop_of].copy()
        self._clip_state()
        # the scale actually in force after clipping (balance keeps priority): the population means
        self.S = np.array([np.mean(self.ln_s[self.pop_of == P]) for P in (0, 1)])
        self.rate_se = self.pop_se[self.pop_of]
        self.rate_err = self.pop_err[self.pop_of]
        self.unreachable_rate = np.zeros(self.n_groups, dtype=bool)

    def _schedule_pop(self) -> None:
        cfg = self.cfg
        tol = cfg.rate_tol_population
        bse = self.balance_se[~self.dead]
        bal_rms = float(np.sqrt(np.mean(np.minimum(bse, 10.0) ** 2))) if bse.size else 0.0
        bal_ok = 2.0 * bal_rms <= cfg.balance_tol
        # a recurrent network's population rate wanders from window to window more than its in-window counting
        # noise says (slow network fluctuations), so "close" is judged by the size of the last correction, in
        # units of the rate tolerance, rather than by the last window's error
        settled = self._pop_step * float(np.max(np.abs(np.diag(self.jacobian)))) <= 2.0 * tol
        if float(self.pop_se.max()) <= tol and settled and bal_ok:
            self.done = True
            return
        far = self._pop_step > 0.1
        T = self.last_T * (1.0 if far else cfg.max_growth)
        self.next_T = max(T, cfg.first_window_ms * 0.5)

    def _update_dead(self) -> None:
        """Dead: no spike in any window, the excitation-only probe included (a live neuron fires hard there)."""
        self.dead = ~self.spikes_any

    def _weights_age(self, times: np.ndarray) -> np.ndarray:
        if self.cfg.forget_halflife_ms is None:
            return np.ones_like(times)
        return 0.5 ** ((self.model_ms - times) / self.cfg.forget_halflife_ms)

    def _add_balance(self, w: Window, m: Measurement) -> None:
        ok = m.observed & np.isfinite(m.proxy_pa)
        if not ok.any():
            return
        ge, gi = self._applied(w.codes)
        idx = np.flatnonzero(ok)
        g = self.group_of[idx]
        y = m.proxy_pa[idx] - self.offset[idx] - self.targets.proxy_pa
        e, i = ge[g], gi[g]
        wt = m.window_ms  # input shot noise of a window mean falls as 1/T
        if self.cfg.forget_halflife_ms is not None:
            self._S *= 0.5 ** (m.window_ms / self.cfg.forget_halflife_ms)
        for col, val in enumerate((e * e, e * i, i * i, e * y, i * y, y * y)):
            self._S[:, col] += np.bincount(g, weights=wt * val, minlength=self.n_groups)
        self._S[:, 6] += np.bincount(g, minlength=self.n_groups)
        self._bal_ms += m.window_ms

    def _solve_balance(self) -> None:
        Se2, Sei, Si2, Sey, Siy, Syy, nobs = self._S.T
        det = Se2 * Si2 - Sei * Sei
        ok = det > 1e-12 * np.maximum(Se2 * Si2, 1e-300)
        # y = ge*a - gi*b  ->  [Se2, -Sei; Sei, -Si2] [a; b] = [Sey; Siy]
        a = np.where(ok, (Sey * Si2 - Sei * Siy) / np.where(ok, det, 1), np.nan)
        b = np.where(ok, (Sey * Sei - Se2 * Siy) / np.where(ok, det, 1), np.nan)
        good = ok & (a > 0) & (b > 0)
        self.a = np.where(good, a, self.a)
        self.b = np.where(good, b, self.b)
        have = np.isfinite(self.a) & np.isfinite(self.b) & (self.a > 0) & (self.b > 0)
        target = np.log(np.where(have, self.b, 1.0) / np.where(have, self.a, 1.0))
        step = np.clip(target - self.ln_r, -self.cfg.max_ratio_step, self.cfg.max_ratio_step)
        if not self._ratios_frozen:
            self.ln_r = np.where(have, self.ln_r + step, self.ln_r)
        self._balance_uncertainty(ok & have, det, Se2, Sei, Si2, Sey, Siy, Syy, nobs)

    def _balance_uncertainty(self, ok, det, Se2, Sei, Si2, Sey, Siy, Syy, nobs) -> None:
        """Standard error of the balance index the new ratio will give, from the least-squares covariance.

        Residual variance per unit weight: RSS / (n - 2), with RSS = Syy - (a Sey - b Siy). On per-neuron knobs it
        is pooled over neurons (each has few readings); a shared knob's own readings estimate it."""
        a, b = self.a, self.b
        with np.errstate(invalid="ignore", divide="ignore"):
            rss = np.maximum(Syy - (a * Sey - b * Siy), 0.0)
            dof = nobs - 2
            s2 = np.where(dof > 0, rss / np.maximum(dof, 1), np.nan)
        if not self.shared:
            pooled = np.nanmedian(s2[ok]) if np.any(ok & np.isfinite(s2)) else np.nan
            s2 = np.full_like(s2, pooled)
        # inverse of X'WX with X = [ge, -gi]: [[Si2, Sei], [Sei, Se2]] / det
        with np.errstate(invalid="ignore", divide="ignore"):
            vaa, vbb, vab = s2 * Si2 / det, s2 * Se2 / det, s2 * Sei / det
            ge = np.exp(self.ln_s + self.ln_r / 2)
            gi = np.exp(self.ln_s - self.ln_r / 2)
            # B = 1 - gi b / (ge a): dB/da = gi b/(ge a^2), dB/db = -gi/(ge a)
            da = gi * b / (ge * a * a)
            db = -gi / (ge * a)
            var = da * da * vaa + db * db * vbb + 2 * da * db * vab
            self.balance_se = np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.inf)

    def _measured_balance(self, ysum: np.ndarray, ycnt: np.ndarray, codes) -> None:
        """Balance index of each group as this loop window measured it: |mean proxy| / (gain_e a)."""
        ge, _ = self._applied(codes)
        gy = np.bincount(self.group_of, weights=ysum / np.maximum(ycnt, 1), minlength=self.n_groups)
        gn = np.bincount(self.group_of, weights=(ycnt > 0).astype(float), minlength=self.n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.balance_est = np.where(gn > 0, np.abs(gy / np.maximum(gn, 1)) / (ge * self.a), np.nan)

    def _update_fano(self, sub_counts: list, T: float) -> None:
        """Running estimate of the spike-count Fano factor of what loop 2 estimates, clipped to [0.2, 5].

        Per-neuron knobs: each neuron's count across sub-windows, the population's common fluctuation removed
        (shared inputs make every neuron fire more in the same window; that does not spread neurons apart).
        Shared knobs: the *group's summed* count, common fluctuation included (it is exactly what moves a core's
        mean rate), with sub-windows merged into at most 8 bins so slow input fluctuations are seen."""
        if len(sub_counts) < 2:
            return
        c = np.array(sub_counts, dtype=float)
        if self.shared:
            live = ~self.dead
            g = np.stack([np.bincount(self.group_of, weights=row * live, minlength=self.n_groups) for row in c])
            k = min(8, g.shape[0])
            bins = np.array_split(np.arange(g.shape[0]), k)
            g = np.stack([g[b].sum(axis=0) for b in bins])
            lens = np.array([len(b) for b in bins], dtype=float)[:, None]
            g = g / lens  # equal-length bins up to one sub-window; per-sub-window mean count
            m = g.mean(axis=0)
            ok = m > 0
            if k < 2 or not ok.any():
                return
            # var of a bin's mean over lens sub-windows, scaled back to the Fano of a bin's total count
            f = float(np.median(g[:, ok].var(axis=0, ddof=1) * lens.mean() / m[ok]))
        else:
            c = c[:, ~self.dead]
            m = c.mean(axis=0)
            ok = m > 0.5
            if ok.sum() < 3:
                return
            c = c[:, ok]
            tot = c.sum(axis=1, keepdims=True)
            r = c - m[ok][None, :] * (tot / max(tot.mean(), 1e-9))
            # the mean, not the median: with a few sub-windows each neuron's variance has few degrees of freedom, and
            # the median of a chi-square with 3 of them is 0.79 of its mean (F came out 1.06 against 1.3)
            f = float(np.mean(r.var(axis=0, ddof=1) / m[ok]))
        if not np.isfinite(f):
            return
        self.fano = (self.fano * self._fano_w + f * T) / (self._fano_w + T)
        self.fano = float(np.clip(self.fano, 0.2, 5.0))
        self._fano_w += T

    def _solve_rate(self, c_now: np.ndarray, n_now: np.ndarray, T_now: float) -> None:
        """Fit ln rate = alpha_g + beta ln s + gamma ln r over the windows; set ln s for the target."""
        cfg = self.cfg
        lt = np.log(self.target_g)
        lnS = np.array(self._rw_lnS)
        lnR = np.array(self._rw_lnR)
        C = np.array(self._rw_c)
        Nl = np.array(self._rw_n)
        T = np.array(self._rw_T)[:, None] * 1e-3
        usable = Nl > 0
        rate = (C + 0.5) / np.maximum(Nl, 1) / T
        y = np.log(rate)
        # information weight: spike count (var of ln rate ~ 1/count), times closeness to target, times age
        close = np.exp(-((y - lt) / cfg.near) ** 2)
        age = self._weights_age(np.array(self._rw_t))[:, None]
        W = (C + 1.0) * close * age * usable
        K = lnS.shape[0]
        if K >= 2:
            self._fit_slopes(y, lnS, lnR, W)
        wsum = W.sum(axis=0)
        has = wsum > 0
        self.beta_g = self._group_slopes(y, lnS, lnR, W, wsum, has)
        resid = y - self.beta_g * lnS - self.gamma * lnR
        # the warm start's pseudo-window: at the start state, exactly at target, with F / se^2 counts
        P = 0.0 if cfg.prior_rate_se is None else self.fano / max(cfg.prior_rate_se, 1e-6) ** 2
        resid0 = lt - self.beta_g * self._start_lnS - self.gamma * self._start_lnR
        live_now = Nl[-1] > 0
        c0 = float(resid0[live_now].mean()) if live_now.any() else 0.0
        if cfg.forget_halflife_ms is None:
            self.alpha = np.where(has | (P > 0), ((W * resid).sum(axis=0) + P * resid0) / np.maximum(wsum + P, 1e-12),
                                  np.nan)
            has = has | (P > 0)
            wsum = wsum + P
        else:
            # tracking: drift (temperature) moves every neuron alike, so split alpha into a population part that
            # follows the recent windows (forgetting, pooled over all neurons: precise within one window) and each
            # neuron's own deviation from it, learnt from every window (it does not drift): alpha = pop + dev
            # weights here are *expected* counts (target rate x window), not observed ones: a neuron whose count came
            # out high would weigh more, which biases every average up by about F / count, 2.4 % for a 5 s window
            # at 10 Hz, and the loop then holds every rate that much low
            W0 = self.target_g[None, :] * T * np.maximum(Nl, 1) * close * usable
            w_k = ((C + 1.0) * usable).sum(axis=1)  # a window's information: its total count over the neurons
            c_k = (W0 * resid).sum(axis=1) / np.maximum(W0.sum(axis=1), 1e-12)
            w0sum = W0.sum(axis=0)
            has = w0sum > 0
            dev = np.where(has | (P > 0), ((W0 * (resid - c_k[:, None])).sum(axis=0) + P * (resid0 - c0))
                           / np.maximum(w0sum + P, 1e-12), np.nan)
            has = has | (P > 0)
            w0sum = w0sum + P
            # the line is fitted over four times the forgetting time: a line does not lag a steady drift however long
            # its memory, and a slope from a few windows is mostly their noise
            self.alpha = self._population_trend(c_k, age[:, 0] ** 0.25 * w_k, T[:, 0]) + dev
            wsum = w0sum
        # far from target with no near window: a damped Newton step from the latest window
        y_now = np.log((c_now + 0.5) / np.maximum(n_now, 1) / (T_now * 1e-3))
        newton = self.ln_s + np.clip((lt - y_now) / self.beta_g, -1.0, 1.0)
        model = (lt - self.alpha - self.gamma * self.ln_r) / self.beta_g
        nearness = wsum / np.maximum(wsum + 2.0, 1e-9)  # few near counts: trust the model little
        target_s = np.where(has, nearness * model + (1 - nearness) * newton, newton)
        # count-information: standard error of the rate estimate per group (Poisson; F ~ 1)
        self.rate_se = np.where(has, np.sqrt(self.fano / np.maximum(wsum, 1e-9)), np.inf)
        self.rate_err = np.abs(y_now - lt)
        self.ln_s = np.where(n_now > 0, target_s, np.median(target_s[n_now > 0]) if (n_now > 0).any() else self.ln_s)
        self._clip_state()
        # unreachable: wants to go beyond the DAC range and the rate is still off by more than the noise allows
        wants_out = (self._s_at_limit != 0) & (np.abs(target_s - self.ln_s) > 1e-9)
        off = self.rate_err > 3.0 * np.sqrt(1.0 / np.maximum(c_now + 1, 1)) + 0.05
        self.unreachable_rate = wants_out & off & (n_now > 0)

    def _population_trend(self, c_k: np.ndarray, a_k: np.ndarray, T_s: np.ndarray) -> float:
        """Tracking: the population intercept the next window will see, from the recent windows' intercepts ``c_k``
        (weights ``a_k``: information times age). A weighted line in time, evaluated at the middle of the next
        window. A weighted mean would lag a steady drift by about the forgetting time (on bss2, 300 -> 310 K over
        120 s, the mean rate ran 5 % high); the line follows it."""
        t_mid = np.array(self._rw_t) * 1e-3 - T_s / 2  # seconds, middle of each window
        wsum = max(float(a_k.sum()), 1e-12)
        mean_c = float((a_k * c_k).sum() / wsum)
        if (a_k > 1e-3 * a_k.max()).sum() < 3:
            return mean_c
        t_bar = float((a_k * t_mid).sum() / wsum)
        stt = float((a_k * (t_mid - t_bar) ** 2).sum())
        if stt <= 0:
            return mean_c
        slope = float((a_k * (t_mid - t_bar) * (c_k - mean_c)).sum()) / stt
        t_next = self.model_ms * 1e-3 + self.last_T * 1e-3 / 2
        return mean_c + slope * (t_next - t_bar)

    def _group_slopes(self, y, lnS, lnR, W, wsum, has) -> np.ndarray:
        """Each group's own slope d ln rate / d ln s, shrunk towards the population's ``beta``.

        Empirical Bayes: the group's within-group regression ``b_g`` has variance ``F / Sxx_g``; with a prior
        spread ``cfg.beta_sd`` of true slopes around ``beta`` the posterior mean is
        ``(Sxx_g b_g + k beta) / (Sxx_g + k)``, ``k = F / beta_sd**2``. Groups the data say little about keep
        ``beta``; groups whose scale moved a lot get their own, which removes the bias a shared slope leaves when
        windows far from target are averaged."""
        safe = np.where(has, wsum, 1.0)
        xm = (W * lnS).sum(axis=0) / safe
        ym = (W * (y - self.gamma * lnR)).sum(axis=0) / safe
        dx = lnS - xm
        Sxx = (W * dx * dx).sum(axis=0)
        Sxy = (W * dx * (y - self.gamma * lnR - ym)).sum(axis=0)
        k = self.fano / max(self.cfg.beta_sd, 1e-6) ** 2
        b = (Sxy + k * self.beta) / (Sxx + k)
        return np.clip(np.where(has, b, self.beta), 0.3, 8.0)

    def _fit_slopes(self, y, lnS, lnR, W) -> None:
        """Pooled within-group weighted regression for beta (and gamma when the ratio moved enough)."""
        wsum = W.sum(axis=0)
        ok = wsum > 0
        if ok.sum() < 1:
            return
        def demean(x):
            m = (W * x).sum(axis=0) / np.where(ok, wsum, 1)
            return (x - m)[:, ok]
        Wk = W[:, ok]
        ys, xs, us = demean(y), demean(lnS), demean(lnR)
        Sxx = (Wk * xs * xs).sum()
        Suu = (Wk * us * us).sum()
        Sxu = (Wk * xs * us).sum()
        Sxy = (Wk * xs * ys).sum()
        Suy = (Wk * us * ys).sum()
        if Sxx <= 1e-6 * Wk.sum() * 0.01 ** 2:
            return
        if Suu > 1e-6 * Wk.sum() * 0.01 ** 2:
            det = Sxx * Suu - Sxu * Sxu
            if det > 1e-12 * Sxx * Suu:
                beta = (Sxy * Suu - Sxu * Suy) / det
                gamma = (Suy * Sxx - Sxu * Sxy) / det
                if 0.3 <= beta <= 8.0 and -50 <= gamma <= 50:
                    self.beta, self.gamma = float(beta), float(gamma)
                    return
        beta = (Sxy - self.gamma * Sxu) / Sxx
        if 0.3 <= beta <= 8.0:
            self.beta = float(beta)

    def _tol(self) -> float:
        return self.cfg.rate_tol_shared if self.shared else self.cfg.rate_tol

    def _schedule(self) -> None:
        """Next loop window: long enough for what the tolerances still need, at most ``max_growth`` times the
        last one, and not growing while the rate is still far from target (beyond its counting noise)."""
        cfg = self.cfg
        live_g = np.array(self._rw_n)[-1] > 0
        active = live_g & ~self.unreachable_rate & ~self.unreachable_ratio
        if not active.any():
            self.done = True
            return
        tol = self._tol()
        se = self.rate_se[active]
        rms_se = float(np.sqrt(np.mean(np.minimum(se, 10.0) ** 2)))
        err = self.rate_err[active]
        noise = np.sqrt(self.fano / np.maximum(np.array(self._rw_c)[-1][active] + 1, 1))
        far = float(np.median(err / noise))
        bse = self.balance_se[active]
        bal_rms = float(np.sqrt(np.mean(np.minimum(bse, 10.0) ** 2)))
        # |balance| of a group is ~ its standard error; 2 se covers ~95 % of groups. A shared knob's few groups
        # must each be within the goal, so their worst one is judged against a tighter tolerance
        bal_tol = cfg.balance_tol_shared if self.shared else cfg.balance_tol
        if self.shared:
            bal_rms = float(np.max(np.minimum(bse, 10.0)))
        bal_ok = 2.0 * bal_rms <= bal_tol
        if rms_se <= tol and bal_ok and far < 3.0:
            self.done = True
            return
        growth = cfg.max_growth if far < 3.0 else 1.0
        T = self.last_T * growth
        need = []
        if np.isfinite(rms_se):
            n_per_group = np.maximum(np.array(self._rw_n)[-1][active], 1)
            have = self.fano / np.maximum(rms_se, 1e-9) ** 2
            need_counts = max(self.fano / tol ** 2 - have, 0.0)
            need.append(need_counts / (float(np.median(self.target_g[active])) * float(np.median(n_per_group)))
                        * 1e3 * 1.1)
        if np.isfinite(bal_rms) and not bal_ok:
            need.append(self._bal_ms * ((2.0 * bal_rms / bal_tol) ** 2 - 1.0) * 1.1)
        if need and far < 3.0:
            T = min(T, max(max(need), cfg.first_window_ms))
        self.next_T = max(T, cfg.first_window_ms * 0.5)

    def _loop_info(self, c, n_live, T) -> dict:
        live_g = n_live > 0
        rates = c[live_g] / n_live[live_g] / (T * 1e-3)
        bal = self.balance_est[live_g & np.isfinite(self.balance_est)]
        return {
            "window_ms": T,
            "rate_mean_hz": float(rates.mean()) if rates.size else None,
            "rate_cv": float(rates.std() / rates.mean()) if rates.size and rates.mean() > 0 else None,
            "balance_p95": float(np.quantile(bal, 0.95)) if bal.size else None,
            "beta": self.beta, "gamma": self.gamma, "fano": self.fano,
            "rate_se_rms": float(np.sqrt(np.mean(np.minimum(self.rate_se[live_g], 10) ** 2))) if live_g.any() else None,
            "balance_se_rms": float(np.sqrt(np.mean(np.minimum(self.balance_se[live_g], 10) ** 2))) if live_g.any() else None,
        }

    def status(self) -> Status:
        dead = self.dead.copy()
        unreach_g = self.unreachable_rate | self.unreachable_ratio
        unreach = unreach_g[self.group_of] & ~dead
        calibrated = ~dead & ~unreach
        return Status(calibrated=calibrated, unreachable=unreach, dead=dead)


# ------------------------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------------------------


class _FixedWindowBaseline(Controller):
    """Shared plumbing for the baselines: fixed-length loop windows, dead detection from spikes, a budget."""

    def __init__(self, window_ms: float = 1000.0, budget_ms: float = 90_000.0, rate_tol: float = 0.04) -> None:
        super().__init__()
        self.window_ms = float(window_ms)
        self.budget_ms = float(budget_ms)
        self.rate_tol = float(rate_tol)

    def settings(self) -> dict:
        return {"window_ms": self.window_ms, "budget_ms": self.budget_ms, "rate_tol": self.rate_tol}

    def _start(self) -> None:
        self.model_ms = 0.0
        self.spikes_any = np.zeros(self.n, dtype=bool)
        self.windows_seen = 0
        self.done = False
        self.unreachable = np.zeros(self.n_groups, dtype=bool)
        self._init()

    def _init(self) -> None:
        pass

    def _loop_window(self) -> list[Window]:
        if self.done or self.model_ms + self.window_ms > self.budget_ms + 1e-9:
            self.done = True
            return []
        return [Window(self.codes, self.window_ms, "loop")]

    def _measure(self, measurements) -> tuple[np.ndarray, np.ndarray, float]:
        counts = np.zeros(self.n)
        T = 0.0
        for m in measurements:
            counts += m.spike_counts
            T += m.window_ms
            self.model_ms += m.window_ms
        self.spikes_any |= counts > 0
        self.windows_seen += 1
        dead = ~self.spikes_any if self.windows_seen >= 3 else np.zeros(self.n, dtype=bool)
        c, n_live = self._group_rates(counts, T, ~dead)
        rate = c / np.maximum(n_live, 1) / (T * 1e-3)
        return rate, n_live, T

    def status(self) -> Status:
        dead = ~self.spikes_any
        unreach = self.unreachable[self.group_of] & ~dead
        return Status(calibrated=~dead & ~unreach, unreachable=unreach, dead=dead)


class RateOnly(_FixedWindowBaseline):
    """One loop: scale the excitatory gain alone to reach the target rate (multiplicative, log-domain Newton with
    the same slope prior as the dual loop, damped by 1/2). Inhibition stays at its start codes, so balance is left
    to chance: this is what most homeostatic rules do (controller_literature.md 3.1)."""

    name = "rate-only"

    def plan(self) -> list[Window]:
        return self._loop_window()

    def update(self, windows, measurements) -> dict:
        rate, n_live, T = self._measure(measurements)
        ke = self.knobs["gain_e"]
        err = np.log(self.target_g) - np.log(np.maximum(rate, 0.5 / (T * 1e-3)))
        g = np.maximum(ke.nominal_gain(self.codes["gain_e"]), ke.gain_limits()[0])
        new = np.exp(np.log(g) + 0.5 * np.clip(err / 1.5, -1, 1))
        lo, hi = ke.gain_limits()
        self.unreachable = ((new > hi) | (new < lo)) & (np.abs(err) > 0.1)
        self.codes = {"gain_e": ke.code_for_gain(np.clip(new, lo, hi)), "gain_i": self.codes["gain_i"]}
        cv = float(np.std(rate[n_live > 0]) / max(np.mean(rate[n_live > 0]), 1e-9))
        rel = rate[n_live > 0] / self.target_g[n_live > 0]
        if float(np.std(rel)) <= self.rate_tol and abs(float(np.mean(rel)) - 1) < self.rate_tol:
            self.done = True
        return {"window_ms": T, "rate_mean_hz": float(np.mean(rate[n_live > 0])), "rate_cv": cv}


class BinarySearch(_FixedWindowBaseline):
    """calix-style per-knob open-loop search: one knob at a time, a binary search over its codes on the sign of
    its error, every group in parallel. Stage 1 searches ``gain_i`` for zero proxy (at the start ``gain_e``),
    stage 2 searches ``gain_e`` for the target rate (at the found ``gain_i``), and since stage 2 moves the balance,
    both stages run again (calix re-runs stages to undo coupling, calix.md 5). ADC offsets are nulled first."""

    name = "search"

    def __init__(self, window_ms: float = 1000.0, budget_ms: float = 180_000.0, rate_tol: float = 0.04,
                 rounds: int = 2) -> None:
        super().__init__(window_ms, budget_ms, rate_tol)
        self.rounds = rounds

    def settings(self) -> dict:
        return {**super().settings(), "rounds": self.rounds}

    def _init(self) -> None:
        self.stage = -1  # -1: offsets
        self.round = 0
        self.offset = np.zeros(self.n)

    def _begin_stage(self, knob: str) -> None:
        spec = self.knobs[knob]
        valid = spec.valid_codes()
        order = np.argsort(spec.nominal_gain(valid), kind="stable")
        self._sorted = valid[order]  # codes by ascending gain
        self.lo = np.zeros(self.n_groups, dtype=np.int64)
        self.hi = np.full(self.n_groups, len(self._sorted) - 1, dtype=np.int64)
        self.knob = knob
        self._set_mid()

    def _set_mid(self) -> None:
        mid = (self.lo + self.hi) // 2
        self.codes = dict(self.codes)
        self.codes[self.knob] = self._sorted[mid]

    def plan(self) -> list[Window]:
        if self.done:
            return []
        if self.stage == -1:
            zero = {k: np.zeros(s.n_groups, dtype=np.int64) for k, s in self.knobs.items()}
            return [Window(zero, 50.0, "settle"), Window(zero, 20.0, "null")]
        return self._loop_window()

    def update(self, windows, measurements) -> dict:
        if self.stage == -1:
            for w, m in zip(windows, measurements):
                self.model_ms += m.window_ms
                if w.kind == "null":
                    self.offset = np.where(np.isfinite(m.proxy_pa), m.proxy_pa, 0.0)
            self.stage = 0
            self._begin_stage("gain_i")
            return {"phase": "null"}
        rate, n_live, T = self._measure(measurements)
        if self.knob == "gain_i":
            m = measurements[-1]
            y = np.where(m.observed, m.proxy_pa - self.offset, np.nan)
            yg = np.bincount(self.group_of, weights=np.nan_to_num(y), minlength=self.n_groups) / np.maximum(
                np.bincount(self.group_of, weights=np.isfinite(y).astype(float), minlength=self.n_groups), 1)
            too_high = yg < self.targets.proxy_pa  # net current below target: too much inhibition
        else:
            too_high = rate > self.target_g
        mid = (self.lo + self.hi) // 2
        self.hi = np.where(too_high, mid, self.hi)
        self.lo = np.where(too_high, self.lo, mid + 1)
        self.lo = np.minimum(self.lo, self.hi)
        if np.all(self.lo >= self.hi):
            self.codes = dict(self.codes)
            self.codes[self.knob] = self._sorted[self.lo]
            at_edge = (self.lo == 0) | (self.lo == len(self._sorted) - 1)
            if self.knob == "gain_e":
                self.unreachable = at_edge & (np.abs(rate / self.target_g - 1) > 0.2)
                self.round += 1
                if self.round >= self.rounds:
                    self.done = True
                    return {"window_ms": T, "stage": "done"}
                self._begin_stage("gain_i")
            else:
                self._begin_stage("gain_e")
        else:
            self._set_mid()
        live = n_live > 0
        return {"window_ms": T, "stage": self.knob, "rate_mean_hz": float(rate[live].mean()),
                "rate_cv": float(rate[live].std() / max(rate[live].mean(), 1e-9))}


class CrossHomeostatic(_FixedWindowBaseline):
    """The cross-homeostatic population rule of Maryada et al. 2025 (after Soldado-Magraner et al. 2022), as their
    code applies it on Dynap-SE2 (controller_literature.md 1.1-1.2): per iteration, population-mean rates over a
    fixed window; updates ``eta * max(1, r) * error`` in fine-code steps, stochastically rounded and clipped to
    +-5 steps. On a chip with excitatory and inhibitory chip neurons (a recurrent profile) each population's
    gains follow the *other* population's error (cross rule); on a feed-forward chip there is one population per
    knob group, and the rule reduces to its two same-population terms: excitatory gain up and inhibitory gain
    down while the rate is below target (our adaptation, stated as such)."""

    name = "cross-homeostatic"

    def __init__(self, window_ms: float = 1000.0, budget_ms: float = 400_000.0, rate_tol: float = 0.04,
                 eta: float = 0.005, max_steps: int = 5, seed: int = 0) -> None:
        super().__init__(window_ms, budget_ms, rate_tol)
        self.eta = eta
        self.max_steps = max_steps
        self.seed = seed

    def settings(self) -> dict:
        return {**super().settings(), "eta": self.eta, "max_steps": self.max_steps, "seed": self.seed}

    def _init(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        # codes ordered by gain, so "one fine step" is one position along the DAC's own code order
        self._order = {}
        self._pos = {}
        for k, spec in self.knobs.items():
            valid = spec.valid_codes()
            order = valid[np.argsort(spec.nominal_gain(valid), kind="stable")]
            self._order[k] = order
            where = {int(c): i for i, c in enumerate(order)}
            self._pos[k] = np.array([where[int(c)] for c in self.codes[k]], dtype=np.int64)

    def plan(self) -> list[Window]:
        return self._loop_window()

    def _steps(self, x: np.ndarray) -> np.ndarray:
        fl = np.floor(x)
        return np.clip(fl + (self.rng.random(x.shape) < (x - fl)), -self.max_steps, self.max_steps)

    def update(self, windows, measurements) -> dict:
        rate, n_live, T = self._measure(measurements)
        live = n_live > 0
        err = self.target_g - rate
        drive = self.eta * np.maximum(1.0, rate) * err
        # integer code steps (Maryada: stochastically rounded fine-code steps, at most 5 per iteration)
        self.codes = dict(self.codes)
        for knob, sign in (("gain_e", +1.0), ("gain_i", -1.0)):
            steps = self._steps(sign * drive).astype(np.int64)
            order = self._order[knob]
            self._pos[knob] = np.clip(self._pos[knob] + steps, 0, len(order) - 1)
            self.codes[knob] = order[self._pos[knob]]
        mean = float(rate[live].mean()) if live.any() else 0.0
        cv = float(rate[live].std() / max(mean, 1e-9)) if live.any() else 0.0
        rel = rate[live] / self.target_g[live] if live.any() else np.ones(1)
        if abs(float(rel.mean()) - 1) < 0.01 and (float(rel.std()) <= self.rate_tol or self.knobs["gain_e"].sharing != "neuron"):
            self.done = True
        return {"window_ms": T, "rate_mean_hz": mean, "rate_cv": cv}


CONTROLLERS = {"dual-loop": DualLoop, "rate-only": RateOnly, "search": BinarySearch,
               "cross-homeostatic": CrossHomeostatic}


def make_controller(name: str, **settings) -> Controller:
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; expected one of {', '.join(CONTROLLERS)}")
    return CONTROLLERS[name](**settings)
