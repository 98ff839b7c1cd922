"""The calibration report in a real browser: Debian's chromium, headless, driven through its chromium-driver by
selenium. At 700 and at 1400 px wide every image loads, nothing overflows sideways, and the verdict banner is the
first thing on the page, visible without scrolling.

Skipped (and `make test` prints ``SKIPPED: browser test (...)``, tests/conftest.py) where chromium, chromedriver or
selenium is missing; ``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``.
"""
from __future__ import annotations

import shutil

import pytest

from calibrate.diagnostics.report import saved_section
from calibrate.report import write_report
from report_fixtures import calibration_dir, with_verdict

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Flags that work on a root CI machine without a display, GPU or network (see README "Tests").
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
WIDTHS = (700, 1400)


def browser_missing() -> str:
    """Why the browser test cannot run here ("" when it can)."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return (f"{' and '.join(missing)} not found; on Debian: apt-get install chromium chromium-driver "
                "(.ci/run does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return ""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    why = browser_missing()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.add_argument("--window-size=1400,1000")
    # an explicit driver and browser: selenium looks nothing up and downloads nothing
    drv = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Three reports of the same short run: spec met, spec failed, and a summary without a verdict."""
    base = calibration_dir(tmp_path_factory.mktemp("cal") / "run")
    out = {}
    for kind in ("met", "failed", "none"):
        d = with_verdict(base, tmp_path_factory.mktemp(kind) / "run", kind)
        out[kind] = write_report(d, extra_sections=[saved_section(d)])
    return out


def _set_width(drv, width: int, height: int = 900) -> None:
    """The viewport exactly ``width`` CSS px wide (the window's outer size is not the viewport's)."""
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


PAGE_STATE = """
const imgs = Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                    w: i.naturalWidth, shown: i.getBoundingClientRect().width}));
const b = document.getElementById('verdict');
const r = b ? b.getBoundingClientRect() : null;
const style = b ? getComputedStyle(b) : null;
return {innerWidth: window.innerWidth, innerHeight: window.innerHeight,
        scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
        images: imgs, first: document.body.firstElementChild ? document.body.firstElementChild.id : null,
        banner: r ? {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height,
                     visibility: style.visibility, display: style.display, background: style.backgroundColor} : null};
"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["met", "failed", "none"])
def test_report_page_in_chromium(driver, reports, width, kind, tmp_path):
    _set_width(driver, width)
    driver.get(reports[kind].as_uri())
    s = driver.execute_script(PAGE_STATE)
    driver.save_screenshot(str(tmp_path / f"report-{kind}-{width}.png"))  # kept by pytest for a look on failure
    assert s["innerWidth"] == width
    # every image loads (the PNG files under report/), and none is drawn wider than the window
    assert len(s["images"]) >= 10
    broken = [i["src"] for i in s["images"] if not i["complete"] or i["w"] == 0]
    assert not broken, f"images that did not load: {broken}"
    assert all(i["shown"] <= width for i in s["images"])
    # nothing overflows horizontally: no sideways scrolling of the page (wide tables scroll in their own box)
    assert s["scrollWidth"] <= s["innerWidth"] and s["bodyScrollWidth"] <= s["innerWidth"], s
    # the verdict banner is the page's first element, shown, inside the window and above the fold
    b = s["banner"]
    assert s["first"] == "verdict" and b is not None
    assert b["display"] != "none" and b["visibility"] == "visible" and b["height"] > 40
    assert 0 <= b["top"] < s["innerHeight"] and b["left"] >= 0 and b["right"] <= width
    banner = driver.find_element("id", "verdict")
    assert banner.is_displayed()
    text = banner.text
    expected = {"met": "Spec met", "failed": "Spec NOT met: rate_cv 0.147 > 0.05; balance_p95 0.0712 > 0.05",
                "none": "No verdict recorded"}[kind]
    assert expected in text
    # the colours say it too: green, red, grey
    rgb = tuple(int(v) for v in b["background"].strip("rgba()").split(",")[:3])
    assert {"met": rgb[1] > rgb[0], "failed": rgb[0] > rgb[1], "none": rgb[0] == rgb[1] == rgb[2]}[kind], rgb


def test_the_checks_catch_a_broken_page(driver, reports, tmp_path):
    """A negative control: the same report with its responsive style removed and one figure file missing fails
    the checks above at 700 px (an image does not load; the page scrolls sideways)."""
    import re

    src = reports["met"]
    d = tmp_path / "broken"
    shutil.copytree(src.parent, d)
    page = d / src.name
    text = re.sub(r"<style>.*?</style>", "<style>img{max-width:none}</style>", page.read_text(), flags=re.S)
    page.write_text(text)
    (d / "report" / "rates.png").unlink()
    _set_width(driver, 700)
    driver.get(page.as_uri())
    s = driver.execute_script(PAGE_STATE)
    assert [i["src"] for i in s["images"] if i["w"] == 0] == ["report/rates.png"]
    assert s["scrollWidth"] > s["innerWidth"]
