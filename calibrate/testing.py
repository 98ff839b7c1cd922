"""A pytest plugin for regression-testing calibration controllers in CI (entry point ``pytest11: eical``).

Installed with eical, it gives every test session three fixtures and an assertion helper::

    def test_my_controller_calibrates_devboard(eical_calibrate):
        result = eical_calibrate(MyController(), profile="devboard", seed=3)
        assert_calibrated(result, rate_cv=0.05, balance=0.05)

- ``eical_chip(profile, seed, **kw)``: a seeded emulated chip (``NumpyDevice``), closed after the test;
- ``eical_calibrate(controller, profile=..., seed=..., target_rate_hz=..., backend=None, **session_kw)``: runs the
  calibration session (``calibrate.session.run_calibration``, the one ``eical calibrate`` runs) on such a chip, or
  on a board, and returns its ``CalibrationResult``;
- ``eical_backend``: where ``eical_calibrate`` runs: ``numpy`` (default), ``lava``, or ``serial:PORT``;
- ``eical_targets``: the default ``Targets`` (10 Hz, zero proxy);
- ``assert_calibrated(result, ...)`` (import it from ``calibrate.testing``): judges the result with the one judge
  (``calibrate.criteria.judge``): an emulated chip by its judging replay at the result's codes on independent inputs
  (true figures), a board by the measured figures of its final verification (with their counting-noise
  uncertainty); raises ``AssertionError`` with every figure.

Hardware in the loop, as pytest-embedded and labgrid do it: the same tests run against a board with
``pytest --eical-backend serial:/dev/ttyACM0`` (or ``eical_backend = serial:/dev/ttyACM0`` in the ini file, or
``backend=`` per call). ``eical_calibrate`` then calibrates the board behind the port (its ``profile`` must be the
board's; ``seed`` is the emulator's and is not used), with a final verification window (``--verify``'s default), and
``assert_calibrated`` judges the measured figures. ``eical board-emulator`` serves a board on a pseudo-terminal.

Everything emulated is seeded, so a test that passes once passes every time, on every machine.
"""
from __future__ import annotations

from typing import Optional

import pytest

__all__ = ["assert_calibrated", "CalibrationCheck"]


def pytest_addoption(parser) -> None:
    group = parser.getgroup("eical", "eical calibration tests")
    group.addoption("--eical-backend", default=None, metavar="BACKEND",
                    help="where eical_calibrate runs: numpy (default), lava, or serial:PORT (a board, e.g. "
                         "serial:/dev/ttyACM0)")
    parser.addini("eical_backend", "default for --eical-backend", default=None)


class CalibrationCheck(dict):
    """The figures ``assert_calibrated`` judged (a dict, so a failing test prints them all)."""


def assert_calibrated(result, *, rate_cv: float = 0.05, balance: float = 0.05, balance_quantile: float = 0.95,
                      rate_err: float = 0.05, group_rate_err: Optional[float] = None,
                      group_balance: Optional[float] = None, replay_s: Optional[float] = None,
                      profile=None) -> CalibrationCheck:
    """Check a calibration: an emulated chip against its truth (the judging replay at the final codes, on inputs
    independent of the calibration's), a board by its measured figures at the final codes (its verification).

    Parameters
    ----------
    rate_cv: bound on the rate CV across live neurons, counting noise of the replay removed (per-neuron knobs).
    balance, balance_quantile: bound on the given quantile of the per-neuron balance index (per-neuron knobs).
    rate_err: bound on |mean rate / target - 1| over live neurons.
    group_rate_err, group_balance: for shared knobs, bounds on every group's |mean rate / target - 1| and balance
        index (default: rate_err and balance).
    replay_s: replay length (default: the profile's judging length, ``calibrate.replay.default_replay_s``, at which
        each figure's uncertainty is under a tenth of the default limits); profile: the profile (default: looked up
        from the result's chip).

    Every neuron must be accounted for: calibrated + unreachable + dead = N, the chip's neuron count. ``result`` is a
    ``CalibrationResult`` or a session's ``CalibrationOutcome``.
    """
    from .criteria import judge

    result = getattr(result, "result", result)  # a CalibrationOutcome carries its CalibrationResult
    ident = result.identity
    st = result.status.counts()
    if ident.seed is not None:
        from .replay import default_replay_s, judging_replay

        name = profile if profile is not None else ident.profile
        length = replay_s if replay_s is not None else default_replay_s(getattr(name, "name", name))
        judged = judging_replay(name, ident.seed, result.codes, replay_s=length, target_rate_hz=result.targets.rate_hz)
        fig, se, source = judged.figures.to_dict(), judged.se, "true figures of a {:g} s replay".format(length)
    else:
        from .verdict import measured_figures

        fig, se, idx = measured_figures(result)
        if not idx:
            raise AssertionError("assert_calibrated: this board's run has no windows at its final codes to judge")
        source = f"measured figures of {len(idx)} windows at the final codes"
    check = CalibrationCheck({k: v for k, v in fig.items()})
    check.update(neurons=st.to_dict(), model_time_s=result.model_ms / 1e3, iterations=result.iterations,
                 uncertainty=dict(se), judged_by=source)
    problems = []
    if st.calibrated + st.unreachable + st.dead != ident.n_neurons:
        problems.append(f"neuron accounting: {st.to_dict()} on a chip of {ident.n_neurons} neurons")
    shared = result.codes["gain_e"].shape[0] < ident.n_neurons
    # one judge for the plugin, `eical calibrate`'s verdict and yield studies (calibrate.criteria)
    for c in judge(fig, shared=shared, target_rate_hz=result.targets.rate_hz,
                   target_inh_hz=result.targets.rate_inh_hz, rate_cv=rate_cv, balance=balance, rate_err=rate_err,
                   balance_quantile=balance_quantile, group_rate_err=group_rate_err, group_balance=group_balance,
                   se=se):
        if not c.met:
            problems.append(c.message + (f" (+-{c.se:.2g})" if c.se == c.se else ""))
    if problems:
        raise AssertionError(f"calibration not good enough ({source}): " + "; ".join(problems)
                             + f"\nfigures: {dict(check)}")
    return check


@pytest.fixture
def eical_backend(request) -> str:
    """Where ``eical_calibrate`` runs: ``--eical-backend``, else the ini's ``eical_backend``, else ``numpy``."""
    return request.config.getoption("eical_backend") or request.config.getini("eical_backend") or "numpy"


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
def eical_calibrate(eical_chip, eical_backend):
    """Factory: ``eical_calibrate(controller, profile="devboard", seed=0, target_rate_hz=None, backend=None,
    **session_kw)`` runs the calibration session on a fresh seeded chip (or, with ``--eical-backend serial:PORT``
    or ``backend=``, on the board there) and returns its ``CalibrationResult``. Nothing is judged in the session
    (``evaluate_s=0``): ``assert_calibrated`` judges."""
    from .session import run_calibration

    opened = []

    def run(controller, profile: str = "devboard", seed: int = 0, target_rate_hz: Optional[float] = None,
            backend: Optional[str] = None, **session_kw):
        where = backend or eical_backend
        session_kw.setdefault("evaluate_s", 0.0)
        if where == "numpy":
            dev = eical_chip(profile, seed)
        else:
            dev = _open_other(where, profile, seed)
            opened.append(dev)
            session_kw.setdefault("verify_s", None)  # a board: the default final verification (measured verdict)
        return run_calibration(dev, controller=controller, target_rate_hz=target_rate_hz, **session_kw).result

    yield run
    for d in opened:
        d.close()


def _open_other(backend: str, profile: str, seed: int):
    from hw_models.profile import load_profile

    from .backends import open_device

    if not backend.startswith("serial:"):
        return open_device(backend, profile, seed)
    dev = open_device(backend)
    want = load_profile(profile).name
    if dev.identity.profile != want:
        dev.close()
        pytest.fail(f"--eical-backend {backend}: the board runs profile {dev.identity.profile!r}, the test calibrates "
                    f"{want!r}", pytrace=False)
    return dev
