"""A pytest plugin for regression-testing calibration controllers in CI (entry point ``pytest11: eical``).

Installed with eical, it gives every test session three fixtures and an assertion helper::

    def test_my_controller_calibrates_devboard(eical_calibrate):
        result = eical_calibrate(MyController(), profile="devboard", seed=3)
        assert_calibrated(result, rate_cv=0.05, balance=0.05)

- ``eical_chip(profile, seed, **kw)``: a seeded emulated chip (``NumpyDevice``), closed after the test;
- ``eical_calibrate(controller, profile=..., seed=..., target_rate_hz=..., **session_kw)``: runs the calibration
  session (``calibrate.session.run_calibration``, the one ``eical calibrate`` runs) on such a chip and returns its
  ``CalibrationResult``;
- ``eical_targets``: the default ``Targets`` (10 Hz, zero proxy);
- ``assert_calibrated(result, ...)`` (import it from ``calibrate.testing``): replays the emulated chip at the
  result's codes on independent inputs and checks the true figures; raises ``AssertionError`` with every figure.

Everything is seeded, so a test that passes once passes every time, on every machine.
"""
from __future__ import annotations

from typing import Optional

import pytest

__all__ = ["assert_calibrated", "CalibrationCheck"]


class CalibrationCheck(dict):
    """The figures ``assert_calibrated`` judged (a dict, so a failing test prints them all)."""


def assert_calibrated(result, *, rate_cv: float = 0.05, balance: float = 0.05, balance_quantile: float = 0.95,
                      rate_err: float = 0.05, group_rate_err: Optional[float] = None,
                      group_balance: Optional[float] = None, replay_s: float = 60.0,
                      profile=None) -> CalibrationCheck:
    """Check a calibration against emulator truth (independent replay at the final codes).

    Parameters
    ----------
    rate_cv: bound on the rate CV across live neurons, counting noise of the replay removed (per-neuron knobs).
    balance, balance_quantile: bound on the given quantile of the per-neuron balance index (per-neuron knobs).
    rate_err: bound on |mean rate / target - 1| over live neurons.
    group_rate_err, group_balance: for shared knobs, bounds on every group's |mean rate / target - 1| and balance
        index (default: rate_err and balance).
    replay_s: replay length; profile: the profile (default: looked up from the result's chip).

    Every neuron must be accounted for: calibrated + unreachable + dead = N, the chip's neuron count. ``result`` is a
    ``CalibrationResult`` or a session's ``CalibrationOutcome``.
    """
    from .criteria import judge
    from .metrics import true_figures

    result = getattr(result, "result", result)  # a CalibrationOutcome carries its CalibrationResult
    ident = result.identity
    if ident.seed is None:
        raise AssertionError("assert_calibrated judges emulated chips (it replays them); this chip has no seed")
    st = result.status.counts()
    fig = true_figures(profile if profile is not None else ident.profile, ident.seed, result.codes,
                       replay_s=replay_s, target_rate_hz=result.targets.rate_hz)
    check = CalibrationCheck(fig.to_dict())
    check.update(neurons=st.to_dict(), model_time_s=result.model_ms / 1e3, iterations=result.iterations)
    problems = []
    if st.calibrated + st.unreachable + st.dead != ident.n_neurons:
        problems.append(f"neuron accounting: {st.to_dict()} on a chip of {ident.n_neurons} neurons")
    shared = result.codes["gain_e"].shape[0] < ident.n_neurons
    # one judge for the plugin and for yield studies (calibrate.criteria)
    for c in judge(fig, shared=shared, target_rate_hz=result.targets.rate_hz,
                   target_inh_hz=result.targets.rate_inh_hz, rate_cv=rate_cv, balance=balance, rate_err=rate_err,
                   balance_quantile=balance_quantile, group_rate_err=group_rate_err, group_balance=group_balance):
        if not c.met:
            problems.append(c.message)
    if problems:
        raise AssertionError("calibration not good enough: " + "; ".join(problems) + f"\nfigures: {dict(check)}")
    return check


@pytest.fixture
def eical_targets():
    from .controllers import Targets

    return Targets()


@pytest.fixture
def eical_chip():
    """Factory: ``eical_chip(profile="devboard", seed=0, **kw)`` -> a seeded emulated chip, closed at teardown."""
    from hw_models.emulator import NumpyDevice

    made = []

    def make(profile: str = "devboard", seed: int = 0, **kw):
        dev = NumpyDevice(profile, seed, **kw)
        made.append(dev)
        return dev

    yield make
    for d in made:
        d.close()


@pytest.fixture
def eical_calibrate(eical_chip):
    """Factory: ``eical_calibrate(controller, profile="devboard", seed=0, target_rate_hz=None, **session_kw)`` runs
    the calibration session on a fresh seeded chip and returns its ``CalibrationResult``."""
    from .session import run_calibration

    def run(controller, profile: str = "devboard", seed: int = 0, target_rate_hz: Optional[float] = None,
            **session_kw):
        dev = eical_chip(profile, seed)
        return run_calibration(dev, controller=controller, target_rate_hz=target_rate_hz, **session_kw).result

    return run
