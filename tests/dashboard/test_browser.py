"""The real thing: `emotion-monitor dashboard` in a subprocess, seeded Redis, headless Debian chromium.

Screenshots of each check go to the test's tmp folder, and to ``bench/results/dashboard_*.png`` when
``EM_DASHBOARD_SCREENSHOT=1`` (how the committed ones were made)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.dashboard.browser import CHART, dashboard_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
TOOLTIP = "() => { const t = document.querySelector('#vg-tooltip-element'); return t ? t.innerText : ''; }"


def _keep(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("EM_DASHBOARD_SCREENSHOT"):
        target = ROOT / "bench" / "results" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    return shot


def _hover_tooltips(page, chart, step: int = 3) -> list[str]:
    """Move the mouse across the middle of a chart's plot and collect every tooltip text shown."""
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    seen = []
    for y in (box["y"] + 20, box["y"] + 90):
        for x in range(int(box["x"]) + 30, int(box["x"] + box["width"]) - 5, step):
            page.mouse.move(x, y)
            text = page.evaluate(TOOLTIP)
            if text and (not seen or seen[-1] != text):
                seen.append(text)
    page.mouse.move(0, 0)
    return seen


def _no_horizontal_overflow(page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page scrolls sideways: scrollWidth {width[0]} > innerWidth {width[1]}"


def test_dashboard_in_a_real_browser(redis_server, seeded, tmp_path):
    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=2) as (server, page):
        page.goto(f"{server.url}/?brand=acme", wait_until="domcontentloaded")
        page.wait_for_selector(CHART, timeout=60_000)
        page.locator('[data-testid="stMarkdownContainer"]', has_text=seeded.alert["message"]).first.wait_for(
            timeout=30_000)
        body = page.inner_text("body")
        assert "acme" in body and "anger" in body
        assert "Redis is unreachable" not in body and "Traceback" not in body
        # the KPI header
        page.get_by_text("Key figures").first.wait_for()
        assert "acme · posts" in body and "acme · net sentiment" in body and "acme · alerts in range" in body
        _keep(page, tmp_path, "dashboard_screenshot.png")
        # live refresh: the "Updated" line changes without a reload
        stamp = page.get_by_text("refresh took").first.inner_text()
        page.wait_for_function(
            "s => ![...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".some(e => e.innerText === s)", arg=stamp, timeout=30_000)
        page.wait_for_selector(CHART, timeout=30_000)
        # the alert is a marker on the emotion chart: pointing at it shows its message; no tooltip says NaN
        tips = _hover_tooltips(page, page.locator(CHART).first)
        assert any(seeded.alert["message"] in tip for tip in tips), tips
        assert any("posts in bucket" in tip for tip in tips), tips  # the lines' own tooltips
        assert not any("NaN" in tip for tip in tips), tips
        # the time in a line tooltip is a time of day in one format (no "time NaN")
        line_tip = next(tip for tip in tips if "posts in bucket" in tip)
        assert " UTC" in line_tip or any(ch.isdigit() for ch in line_tip.split("time")[1][:20])
        _keep(page, tmp_path, "dashboard_alert_marker.png")
        assert "NaN" not in page.inner_text("body")
        # a value the chart shows is the seeded one: acme's bucket 30 minutes ago holds 30 posts, 20 of them angry
        seeded_bucket = [tip for tip in tips if _tooltip_value(tip, "posts in bucket") == seeded.counts[
            ("acme", "_all", seeded.t1)]]
        assert seeded_bucket, tips
        assert any(_tooltip_value(tip, "anger") == seeded.counts[("acme", "anger", seeded.t1)]
                   for tip in seeded_bucket), seeded_bucket


def _tooltip_value(tip: str, field: str) -> float | None:
    """The number a Vega tooltip shows for ``field``: its rows read "name<tab>" then the value on the next line."""
    lines = [line.strip() for line in tip.splitlines() if line.strip()]
    for name, value in zip(lines, lines[1:]):
        if name == field:
            try:
                return float(value.replace(",", ""))
            except ValueError:
                return None
    return None


def test_password_gate_in_a_real_browser(redis_server, seeded, tmp_path):
    """With EM_DASHBOARD_PASSWORD the page asks first, refuses a wrong password, shows the data after the right one,
    and a new browser session is asked again."""
    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=0,
                        password="s3cret-pw") as (server, page):
        page.goto(f"{server.url}/?brand=acme", wait_until="domcontentloaded")
        field = page.get_by_label("Password", exact=True)
        field.wait_for(timeout=60_000)
        assert page.locator(CHART).count() == 0
        field.fill("wrong")
        page.get_by_role("button", name="Enter").click()
        page.get_by_text("Wrong password.").first.wait_for(timeout=30_000)
        assert page.locator(CHART).count() == 0 and "anger" not in page.inner_text("body")
        page.get_by_label("Password", exact=True).fill("s3cret-pw")
        page.get_by_role("button", name="Enter").click()
        page.wait_for_selector(CHART, timeout=60_000)
        assert "acme · posts" in page.inner_text("body") and page.get_by_label("Password", exact=True).count() == 0
        _keep(page, tmp_path, "dashboard_after_login.png")
        # another tab is another Streamlit session: asked again
        fresh = page.context.new_page()
        fresh.goto(f"{server.url}/?brand=acme", wait_until="domcontentloaded")
        fresh.get_by_label("Password", exact=True).wait_for(timeout=60_000)
        assert fresh.locator(CHART).count() == 0
        fresh.close()


def test_post_explorer_filtered_to_an_emotion(redis_server, seeded, tmp_path):
    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=0) as (server, page):
        page.goto(f"{server.url}/?brand=acme", wait_until="domcontentloaded")
        page.wait_for_selector(CHART, timeout=60_000)
        explorer = page.locator('[data-testid="stSelectbox"]').filter(has_text="Emotion").first
        explorer.scroll_into_view_if_needed()
        explorer.locator("input").first.click()
        page.keyboard.type("anger")
        page.keyboard.press("Enter")
        page.get_by_text("3 post(s) (labelled anger)", exact=False).first.wait_for(timeout=30_000)
        # the post read in full: the angriest one, with its source and author
        page.locator('[data-testid="stText"]', has_text=seeded.window_texts[0]).first.wait_for(timeout=30_000)
        body = page.inner_text("body")
        assert "demo · user0" in body and "NaN" not in body
        page.get_by_text("3 post(s) (labelled anger)", exact=False).first.scroll_into_view_if_needed()
        page.set_viewport_size({"width": 1400, "height": 3400})
        page.wait_for_timeout(1500)
        _keep(page, tmp_path, "dashboard_explorer.png")


def test_page_fits_800_px_with_three_brands(redis_server, seeded, redis_client, tmp_path):
    from dashboard.seed import write_counts

    write_counts(redis_client, "initech", "raw", [(seeded.t1, "_all", 12), (seeded.t1, "fear", 5)])
    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=0) as (server, page):
        page.set_viewport_size({"width": 800, "height": 1200})
        page.goto(f"{server.url}/?brand=acme,globex,initech&measure=share", wait_until="domcontentloaded")
        page.wait_for_selector(CHART, timeout=60_000)
        page.get_by_text("Brands compared").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # charts size themselves to their container after the first paint
        _no_horizontal_overflow(page)
        # the sidebar collapsed by itself, so the charts get the page's width
        sidebar = page.evaluate("() => { const r = document.querySelector('[data-testid=stSidebar]')"
                                ".getBoundingClientRect(); return [r.left, r.right]; }")
        assert sidebar[1] <= 10, f"sidebar still open at {sidebar}"
        body = page.inner_text("body")
        assert "NaN" not in body and "None" not in body
        for chart in page.locator(CHART).all():
            box = chart.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 800, box
        page.set_viewport_size({"width": 800, "height": 3200})  # Streamlit scrolls inside: a tall window shows all
        page.wait_for_timeout(1500)
        _no_horizontal_overflow(page)
        _keep(page, tmp_path, "dashboard_800px.png")


def test_page_waits_for_first_data_then_draws_it(redis_server, redis_client, tmp_path):
    from .conftest import seed_known

    with dashboard_page(redis_server.url, tmp_path, default_range="1h", refresh_seconds=1) as (server, page):
        page.goto(server.url, wait_until="domcontentloaded")
        page.get_by_text("No data yet").first.wait_for(timeout=60_000)
        seed_known(redis_client)  # the worker's first posts arrive while the page is open
        page.wait_for_selector(CHART, timeout=60_000)  # no reload: the page polls and redraws itself
        assert "acme" in page.inner_text("body")
