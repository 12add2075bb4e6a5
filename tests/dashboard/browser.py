"""Test and benchmark support: ``emotion-monitor dashboard`` as a child process, opened in Debian's chromium with
Playwright for Python (never `playwright install`).

Shared by the real-browser test and ``bench/dashboard.py`` (which imports it from the repository): both start the
dashboard against a Redis URL, open one headless page on it, and stop the browser and the dashboard (as a process
group, :class:`~emotion_monitor.children.ChildProcess`) when done. Not part of the installed package: the product
never starts a browser.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emotion_monitor.children import ChildProcess, spawn
from emotion_monitor.servers import ServerUnavailable, free_port, http_ok, wait_until_ready

__all__ = ["CHART", "browser_context", "chromium_path", "dashboard_page", "start_dashboard"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
CHART = '[data-testid="stVegaLiteChart"]'


def _cli() -> list[str]:
    installed = shutil.which("emotion-monitor", path=str(Path(sys.executable).parent))
    return [installed] if installed else [sys.executable, "-m", "emotion_monitor"]


def start_dashboard(redis_url: str, port: int | None = None, *, log_dir: Path | None = None,
                    extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> ChildProcess:
    """Run the dashboard on ``127.0.0.1:port`` against ``redis_url``; returns once ``/_stcore/health`` says ok."""
    port = port or free_port()
    env = {**os.environ, **(extra_env or {})}
    command = [*_cli(), "dashboard", "--redis-url", redis_url, "--host", "127.0.0.1", "--port", str(port)]
    log_path = (log_dir / f"dashboard-{port}.log") if log_dir else None
    server = spawn("dashboard", command, log_path, env)
    server.url, server.port, server.env = f"http://127.0.0.1:{port}", port, extra_env or {}
    if wait_until_ready(server, lambda: http_ok(f"{server.url}/_stcore/health"), timeout, poll=0.2):
        return server
    server.stop()
    raise ServerUnavailable(f"dashboard did not answer {server.url}/_stcore/health within {timeout:.0f} s")


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
                   password: str = "") -> Iterator[tuple[ChildProcess, object]]:
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
