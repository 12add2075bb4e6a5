"""``emotion-monitor dashboard``: launch the Streamlit page with this component's settings.

Options override the ``EM_DASHBOARD_*`` env vars and are handed to the Streamlit process as those env vars, so the
page reads one :class:`~dashboard.settings.DashboardSettings`. The process *becomes* Streamlit (exec), so whoever
started it can stop it by its PID.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from .settings import LOOPBACK_HOSTS, DashboardSettings

__all__ = ["dashboard", "streamlit_command"]

APP_FILE = Path(__file__).with_name("app.py")
log = logging.getLogger("emotion_monitor.dashboard")


def streamlit_command(settings: DashboardSettings) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.address", settings.host, "--server.port", str(settings.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
    ]


def _settings_env(settings: DashboardSettings) -> dict[str, str]:
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if name == "password":
            value = settings.password.get_secret_value()
        env[f"EM_DASHBOARD_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@click.command("dashboard")
@click.option("--redis-url", help="Redis with TimeSeries written by the monitor [env EM_DASHBOARD_REDIS_URL].")
@click.option("--host", help="Address to listen on [env EM_DASHBOARD_HOST; default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [env EM_DASHBOARD_PORT; default 8501].")
@click.option("--refresh-seconds", type=float, help="Live refresh period, 0 = off [env EM_DASHBOARD_REFRESH_SECONDS].")
@click.option("--default-range", type=click.Choice(["1h", "24h", "7d"]), help="Range shown first.")
@click.option("--top-n", type=int, help="Emotions drawn by default (the most frequent).")
@click.option("--allow-open-remote", is_flag=True, default=None,
              help="Serve without access control on a non-loopback address.")
def dashboard(**options) -> None:
    """Run the Streamlit brand-mood dashboard (set EM_DASHBOARD_PASSWORD or EM_DASHBOARD_OIDC_PROVIDER to require
    a login).

    \b
    Examples:
      emotion-monitor dashboard --redis-url redis://127.0.0.1:6379/0
      EM_DASHBOARD_PASSWORD=s3cret emotion-monitor dashboard --host 0.0.0.0 --port 8501
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {name: value for name, value in options.items() if value is not None}
    try:
        settings = DashboardSettings(**overrides)
    except ValidationError as exc:
        raise click.ClickException(f"invalid dashboard settings:\n{exc}") from exc
    if not settings.auth_configured:
        if settings.host not in LOOPBACK_HOSTS and not settings.allow_open_remote:
            raise click.ClickException(
                f"refusing to serve the dashboard on {settings.host} without access control: set "
                "EM_DASHBOARD_PASSWORD or EM_DASHBOARD_OIDC_PROVIDER, or pass --allow-open-remote")
        log.warning("no access control configured (no password, no OIDC): dashboard open on http://%s:%d",
                    settings.host, settings.port)
    else:
        log.info("dashboard on http://%s:%d (login required)", settings.host, settings.port)
    env = {**os.environ, **_settings_env(settings)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, streamlit_command(settings), env)
