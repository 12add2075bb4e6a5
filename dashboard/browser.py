"""Open the running dashboard in Debian's chromium with Playwright for Python (never `playwright install`).

Shared by the real-browser test and ``bench/dashboard.py``: both start ``emotion-monitor dashboard`` against a Redis
URL, open one headless page on it, and stop the browser and the dashboard (by PID) when done.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dashboard.process import start_dashboard
from emotion_monitor.servers import ServerProcess

__all__ = ["CHART", "browser_context", "chromium_path", "dashboard_page"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
CHART = '[data-testid="stVegaLiteChart"]'


def chromium_path() -> str:
    """The system chromium; a clear failure (not a skip) when it is missing."""
    path = os.environ.get("EM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("the real-browser test needs Debian's chromium: `apt-get install -y chromium` "
                           "(./em test installs it when run as root), or set EM_CHROMIUM to its path")
    return path


def browser_context(playwright, user_data_dir: Path):
    """A headless persistent context (Playwright owns --user-data-dir through ``user_data_dir``)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS,
        viewport={"width": 1400, "height": 1800})


@contextmanager
def dashboard_page(redis_url: str, workdir: Path, *, default_range: str, refresh_seconds: int,
                   password: str = "") -> Iterator[tuple[ServerProcess, object]]:
    """A dashboard on a free port (open access, or behind ``password``) and a blank headless page; yields
    ``(server, page)``.

    Checks for chromium before starting anything; the dashboard's log and the browser profile go under ``workdir``.
    """
    chromium_path()  # fail with the install hint before starting anything
    from playwright.sync_api import sync_playwright

    server = start_dashboard(redis_url, log_dir=workdir, extra_env={
        "EM_DASHBOARD_DEFAULT_RANGE": default_range, "EM_DASHBOARD_REFRESH_SECONDS": str(refresh_seconds),
        "EM_DASHBOARD_PASSWORD": password, "EM_DASHBOARD_OIDC_PROVIDER": ""})
    try:
        with sync_playwright() as playwright:
            context = browser_context(playwright, workdir / f"chromium-profile-{server.port}")
            try:
                yield server, context.new_page()
            finally:
                context.close()
    finally:
        server.stop()
