"""Drive Debian's chromium with Playwright for Python (never `playwright install`): shared by the test and bench."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
