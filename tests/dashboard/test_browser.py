"""The real thing: `emotion-monitor dashboard` in a subprocess, seeded Redis, headless Debian chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dashboard.browser import CHART, dashboard_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_in_a_real_browser(redis_server, seeded, tmp_path):
    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=2) as (server, page):
        page.goto(f"{server.url}/?brand=acme", wait_until="domcontentloaded")
        page.wait_for_selector(CHART, timeout=60_000)
        page.get_by_text(seeded.alert["message"], exact=False).first.wait_for(timeout=30_000)
        body = page.inner_text("body")
        assert "acme" in body
        assert "anger" in body
        assert "Redis is unreachable" not in body and "Traceback" not in body
        # live refresh: the "Updated" line changes without a reload
        stamp = page.get_by_text("refresh took").first.inner_text()
        page.wait_for_function(
            "s => ![...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".some(e => e.innerText === s)", arg=stamp, timeout=30_000)
        page.wait_for_selector(CHART, timeout=30_000)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("EM_DASHBOARD_SCREENSHOT"):
        target = ROOT / "bench" / "results" / "dashboard_screenshot.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_page_waits_for_first_data_then_draws_it(redis_server, redis_client, tmp_path):
    from .conftest import seed_known

    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=1) as (server, page):
        page.goto(server.url, wait_until="domcontentloaded")
        page.get_by_text("No data yet").first.wait_for(timeout=60_000)
        seed_known(redis_client)  # the worker's first posts arrive while the page is open
        page.wait_for_selector(CHART, timeout=30_000)  # no reload: the page polls and redraws itself
        assert "acme" in page.inner_text("body")
