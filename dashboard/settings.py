"""The dashboard's one settings object. Every field has a default and an env var ``EM_DASHBOARD_<FIELD>``.

``emotion-monitor dashboard`` turns its command-line options into these env vars for the Streamlit process, so the
page, the CLI and the tests read configuration the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DashboardSettings", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class DashboardSettings(BaseSettings):
    """Configuration of the Streamlit brand-mood dashboard."""

    model_config = SettingsConfigDict(env_prefix="EM_DASHBOARD_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis (with TimeSeries) that the monitor worker writes to.")
    redis_timeout_seconds: float = Field(
        2.0, gt=0, description="Connect/read timeout for Redis; past it the page says Redis is unreachable.")
    refresh_seconds: float = Field(
        10.0, ge=0, description="Live refresh period of the charts, alerts and shifts (0 turns live refresh off).")
    default_range: Literal["1h", "24h", "7d"] = Field(
        "24h", description="Time range selected when the page opens: last 1h, 24h or 7d.")
    top_n: int = Field(
        5, ge=1, le=28, description="How many emotions (the most frequent in the range) are drawn by default.")
    alerts_limit: int = Field(200, ge=1, description="Most recent alerts listed in the alert timeline.")
    posts_limit: int = Field(200, ge=1, description="Most posts shown behind one alert and in the post explorer.")
    explorer_limit: int = Field(
        2000, ge=1, description="Newest stored posts of the range the post explorer reads and filters (per refresh).")
    min_share_posts: int = Field(
        5, ge=1, description="A bucket with fewer posts than this shows no share of posts (3 posts would swing 33 %).")
    password: SecretStr | None = Field(
        None, description="Shared password asked before anything is shown; unset = no password gate.")
    oidc_provider: str = Field(
        "", description="Log in through Streamlit's st.login with this provider of .streamlit/secrets.toml [auth] "
                        "('default' for the unnamed [auth] section); empty = no OIDC.")
    host: str = Field("127.0.0.1", description="Address the Streamlit server listens on.")
    port: int = Field(8501, ge=1, le=65535, description="Port the Streamlit server listens on.")
    allow_open_remote: bool = Field(
        False, description="Serve without any access control on a non-loopback address (trusted networks only).")

    @property
    def auth_configured(self) -> bool:
        return bool(self.password and self.password.get_secret_value()) or bool(self.oidc_provider)
