"""Suite-wide hooks: say so plainly when the browser test could not run (README), keep the tests' board emulators
in a registry of their own, and ``eical``: the command line run in-process."""
from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line, ``SKIPPED: browser test (why)``, when the report's browser test was skipped for want of a browser
    (``make test`` shows it after pytest's summary; CI installs chromium so that it runs)."""
    reasons = []
    for rep in terminalreporter.stats.get("skipped", []):
        if "test_report_browser.py" in rep.nodeid:
            longrepr = rep.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            reasons.append(reason.replace("Skipped: ", "", 1))
    if reasons:
        terminalreporter.write_line(f"SKIPPED: browser test ({reasons[0]})")


@pytest.fixture(scope="session", autouse=True)
def _emulator_registry(tmp_path_factory):
    """Board emulators the tests start register in a directory of this run's own (firmware_bridge.registry), so
    that `eical devices` in a test never probes an emulator a person or another test run has open."""
    import os

    old = os.environ.get("EICAL_RUNTIME_DIR")
    os.environ["EICAL_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("eical-runtime"))
    yield
    if old is None:
        os.environ.pop("EICAL_RUNTIME_DIR", None)
    else:
        os.environ["EICAL_RUNTIME_DIR"] = old


@pytest.fixture
def eical(capsys):
    """Run ``eical ARGS`` in-process; returns (exit code, stdout, stderr). A usage error (argparse's SystemExit)
    gives its exit code like any other."""
    from calibrate.cli import main

    def run(*argv):
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
