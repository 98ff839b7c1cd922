"""The seizure test (issue 7): the diagnostics tell a balanced chip from a seizure-like one on ``balanced-net``.

``balanced-net`` is a recurrent E/I network (800 E + 200 I cond_lif neurons, J/sqrt(K) couplings, per-neuron
10-bit gain knobs) designed to sit in the asynchronous irregular, inhibition-stabilised balanced state at
nominal codes. The seizure-like chip is the same chip with every neuron's ``gain_i`` code cut to a third.

Each figure must move the way the literature says:

- balance index up, with net excitation (docs/model.md 1; ``imbalanced``);
- E/I co-fluctuation towards imbalance: the population E and I currents leave the balance line at every time
  scale (the current-imbalance measure of docs/diagnostics.md 4, after Dehghani et al. 2016);
- branching ratio towards 1 (Wilting and Priesemann 2018): on this network the activity's dominant mode is
  an oscillation (gamma, PING), so the MR exponential ``r_k = b m^k`` does not fit in either state and the
  diagnosis says so; the same regression slopes fitted with a damped oscillation
  (``calibrate.diagnostics.mode.damped_mode``) give the mode's modulus ``|lambda|``, the MR m of an oscillating mode,
  which moves towards 1 (the memory of the activity lengthens about four-fold).

Measured (seed 1, 4 s, docs/diagnostics.md 10): BI 0.09 -> 0.29, current imbalance 0.07 -> 0.34,
``|lambda|`` per ms 0.75 -> 0.93. Not the literature's direction: the E/I *rate* correlation gets stronger,
not weaker (the network oscillates coherently); the test pins that too, so the documentation stays true.
"""
from __future__ import annotations

import numpy as np
import pytest

from calibrate.diagnostics import headline
from calibrate.diagnostics.recording import diagnose_codes
from hw_models.emulator import NumpyDevice, nominal_codes

PROFILE = "balanced-net"
SEED = 1
DURATION_S = 4.0


def cut_inhibition(codes: dict) -> dict:
    """Every neuron's inhibitory gain code cut to a third (at least code 1)."""
    return {"gain_e": np.asarray(codes["gain_e"]).copy(),
            "gain_i": np.maximum(np.rint(np.asarray(codes["gain_i"]) / 3.0), 1).astype(np.int64)}


def diagnose_pair(base_codes: dict):
    dev = NumpyDevice(PROFILE, SEED)
    out = []
    for label, codes in (("balanced", base_codes), ("inhibition / 3", cut_inhibition(base_codes))):
        d, rec = diagnose_codes(PROFILE, SEED, codes, DURATION_S, chip=dev.chip, label=label, n_boot=50)
        out.append((d, headline(d, rec).to_dict()))
    return out


def assert_seizure_directions(healthy, broken) -> None:
    (d_h, h), (d_b, b) = healthy, broken
    # the balanced chip is not flagged (gamma_oscillation is advisory: PING is physiological)
    assert d_h.healthy, (d_h.flags, d_h.notes)
    # the seizure-like chip is flagged
    assert not d_b.healthy and "imbalanced" in d_b.flags, (d_b.flags, d_b.notes)
    # 1. balance index rises, towards net excitation
    assert b["balance_index_median"] > 2.0 * h["balance_index_median"]
    assert b["balance_index_median"] > d_b.thresholds.balance_index_max > h["balance_index_median"]
    assert b["signed_balance_median"] > 0.2 > h["signed_balance_median"]
    # 2. E/I co-fluctuation moves towards imbalance: the population currents leave the balance line at every scale
    assert b["ei_current_imbalance_median"] > 3.0 * h["ei_current_imbalance_median"]
    cb, ch = d_b.cofluct_currents, d_h.cofluct_currents
    assert np.all(cb.imbalance > ch.imbalance)  # at every one of the 32 scales
    assert b["ei_current_ratio_median"] > h["ei_current_ratio_median"]  # E current over I current grows
    # 3. branching ratio towards 1: the dominant mode's modulus per bin (the MR m of an oscillating mode)
    assert h["mode_fit_ok"] and b["mode_fit_ok"]
    # (a margin, not a size: calibrated seed 1 measures 0.80 -> 0.89, nominal codes 0.75 -> 0.93; the time constant
    # below is the firmer statement, 4.4 -> 8.9 ms)
    assert b["mode_modulus"] > h["mode_modulus"] + 0.05
    assert b["mode_tau_ms"] > 1.8 * h["mode_tau_ms"]
    assert b["mode_modulus"] < 1.0  # still stable: the cut network oscillates, it does not run away
    assert 30.0 <= b["mode_freq_hz"] <= 80.0  # a gamma rhythm
    # the MR exponential itself does not fit the oscillating r_k; the diagnosis says so rather than give an m
    assert not d_b.branching.fit_ok and any("branching ratio not meaningful" in n for n in d_b.notes)
    # the documented counter-finding: E and I rates co-fluctuate more, not less, in this seizure-like state
    assert b["ei_rate_rho_median"] > h["ei_rate_rho_median"]
    # rates: both populations rise; inhibition more (the paradoxical response of an inhibition-stabilised net)
    assert b["rate_exc_hz"] > 1.2 * h["rate_exc_hz"] and b["rate_inh_hz"] > 2.0 * h["rate_inh_hz"]


@pytest.mark.slow
def test_designed_balanced_chip_against_inhibition_cut_to_a_third():
    """Reference: the chip at nominal codes, where balanced-net is designed to be balanced."""
    dev = NumpyDevice(PROFILE, SEED)
    healthy, broken = diagnose_pair(nominal_codes(dev.knobs))
    assert_seizure_directions(healthy, broken)


@pytest.fixture(scope="module")
def calibrated_codes():
    from calibrate.session import run_calibration

    return run_calibration(NumpyDevice(PROFILE, SEED)).result.codes


def _profile_has_inhibitory_target() -> bool:
    from hw_models.profile import load_profile

    return load_profile(PROFILE)["targets"].get("rate_inh_hz") is not None


@pytest.mark.slow
@pytest.mark.xfail(
    condition=not _profile_has_inhibitory_target(), strict=True,
    reason="balanced-net has no targets.rate_inh_hz: the dual loop then pulls the inhibitory neurons towards the "
           "E target (5 Hz) and the network leaves the balanced state (runaway or synchronous), which the "
           "diagnostics rightly flag. With the profile's recommended I target (14 Hz) the calibration converges "
           "and the assertions hold (docs/diagnostics.md 13).")
def test_calibrated_chip_is_not_flagged_and_its_seizure_like_cut_is(calibrated_codes):
    """The issue's test: the chip calibrated by the dual loop is not flagged; the same chip with every gain_i
    code cut to a third is, with each figure moving the literature's way."""
    healthy, broken = diagnose_pair(calibrated_codes)
    assert_seizure_directions(healthy, broken)
