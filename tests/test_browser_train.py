"""Watching a model learn on the Train page, in a real headless Chromium: the reconstruction picture
changes from one snapshot to the next, Pause stops the epoch counter, Resume starts it again."""

from __future__ import annotations

import re
import time

import pytest

from tests.test_browser import ARTIFACTS, CHROMIUM, _settle, browser, server  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"),
]

WHERE = re.compile(r"(Training|Paused): epoch (\d+) of \d+, batch (\d+) of \d+")


def position(page) -> tuple[str, int, int] | None:
    """('Training' or 'Paused', epoch, batch) from the progress bar's text; None when there is none."""
    bar = page.locator('[data-testid="stMain"] [data-testid="stProgress"]')
    if not bar.count():
        return None
    found = WHERE.search(bar.first.inner_text())
    return (found.group(1), int(found.group(2)), int(found.group(3))) if found else None


def wait_for(condition, limit: float, what: str):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {limit} s: {what}")


def test_watch_pause_and_resume_a_run_in_chromium(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{server}/train?tr_data=digits&tr_epochs=200&tr_latent=2", wait_until="domcontentloaded")
    _settle(page)
    page.get_by_role("button", name="Start training").click()
    grid = page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first
    grid.wait_for(timeout=90_000)
    first = grid.get_attribute("src")
    changed = wait_for(lambda: (src := grid.get_attribute("src")) != first and src, 90,
                       "the reconstruction picture changes at the next snapshot")
    assert changed.startswith(("/media/", "http")) and first != changed
    charts = page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"]')
    wait_for(lambda: charts.count() >= 2, 60, "the code map and the loss chart")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "train-watch-running.png"), full_page=True)

    page.get_by_role("button", name="Pause", exact=True).click()
    held = wait_for(lambda: (p := position(page)) and p[0] == "Paused" and p, 60, "the run pauses")
    time.sleep(3.0)
    assert position(page) == held                                  # the epoch counter stands still
    page.get_by_role("button", name="Resume").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "train-watch-paused.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0

    page.get_by_role("button", name="Resume").click()
    wait_for(lambda: (p := position(page)) and p[0] == "Training" and p[1:] > held[1:], 60,
             "the epoch counter moves on after Resume")
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text("Stopped by you").wait_for(timeout=90_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()
