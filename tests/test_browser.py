"""The app in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Starts `streamlit run app.py` on a free local port, opens each page, uses a control, asserts that
no exception box is shown and saves screenshots to tests/_artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "_artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_zoo_root):
    port = _free_port()
    env = dict(os.environ, AECORE_HOME=str(tmp_path_factory.mktemp("home")), AECORE_OFFLINE="1",
               AECORE_PRETRAINED=str(tiny_zoo_root), AECORE_UMAP_WARMUP="0",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.fileWatcherType", "none", "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        log.seek(0)
        pytest.fail("streamlit did not start:\n" + log.read()[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def _settle(page) -> None:
    """Wait until streamlit has finished running the script (no 'running' indicator)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    # the 'running' widget appears only once the script has started: wait until it has been gone for a second
    page.wait_for_function("""() => {
        const busy = !!document.querySelector('[data-testid="stStatusWidget"]');
        window.__idle = busy ? 0 : (window.__idle || 0) + 1;
        return window.__idle >= 5;
    }""", polling=200, timeout=90_000)


def _assert_no_exception(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception shown on {name}"


def test_home_page_in_chromium(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server, wait_until="domcontentloaded")
    _settle(page)
    page.get_by_text("aecore — autoencoder lab").wait_for(timeout=60_000)
    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=60_000)
    _assert_no_exception(page, "home-mnist")

    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="fashion-mnist").click()
    page.get_by_text("fashion-mnist: 64 random test images").wait_for(timeout=60_000)
    _settle(page)
    _assert_no_exception(page, "home-fashion")
    page.close()


PAGE_STEMS = [Path(file).stem for file, *_ in __import__("ast").literal_eval(
    (ROOT / "app.py").read_text().split("PAGES = ", 1)[1].split("\n]\n", 1)[0] + "\n]")][1:]


def _use_a_control(page) -> str:
    """Move the first slider of the main area one step, else pick another option of its first select box."""
    main = page.locator('[data-testid="stMain"]')
    main.locator('[data-testid="stSlider"] input[type="range"], [data-testid="stSelectbox"], '
                 '[data-testid="stCheckbox"] label').first.wait_for(timeout=60_000)
    slider = main.locator('[data-testid="stSlider"] input[type="range"]')
    if slider.count():
        slider.first.focus()
        slider.first.press("ArrowRight")
        return "slider"
    select = main.locator('[data-testid="stSelectbox"]')
    if select.count():
        select.first.click()
        page.get_by_role("option").nth(1).click()
        return "selectbox"
    toggle = main.locator('[data-testid="stCheckbox"] label')
    toggle.first.click()
    return "toggle"


@pytest.mark.parametrize("stem", PAGE_STEMS)
def test_every_page_opens_and_reacts_in_chromium(server, browser, stem):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/{stem}", wait_until="domcontentloaded")
    _settle(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.wait_for(timeout=60_000)
    _assert_no_exception(page, f"page-{stem}")
    used = _use_a_control(page)
    _settle(page)
    _assert_no_exception(page, f"page-{stem}-after-{used}")
    page.close()


def test_png_download_is_a_png(server, browser):
    """Grids are encoded only when the button is clicked (a deferred download): the file must arrive."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(f"{server}/reconstructions", wait_until="domcontentloaded")
    _settle(page)
    button = page.locator('[data-testid="stDownloadButton"] button').first
    button.wait_for(timeout=60_000)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # A click that lands while the frontend is still wiring the button after a rerun is lost (once in CI, under
    # load); a user clicks again, and so does the test: three clicks, 30 s each, and the file must arrive.
    for attempt in range(3):
        try:
            with page.expect_download(timeout=30_000) as download:
                button.click()
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    data = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename.endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    page.close()
