"""Suite-wide hooks: say so plainly when the browser test could not run (README "Tests")."""
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
