"""Access control for the page: a shared password, OIDC through Streamlit's own ``st.login``, or (neither set) open.

``gate`` draws the login step and returns True only once the visitor may see data. OIDC needs Streamlit's ``[auth]``
section in ``.streamlit/secrets.toml`` (redirect_uri, cookie_secret, client_id, client_secret,
server_metadata_url); when both are configured a visitor needs both. With neither, the dashboard is open — the CLI
binds it to localhost and logs that, and the page logs it once per server process.
"""

from __future__ import annotations

import hmac
import logging

import streamlit as st

from .settings import DashboardSettings

__all__ = ["gate"]

log = logging.getLogger("emotion_monitor.dashboard")
_SESSION_FLAG = "_em_password_ok"


@st.cache_resource(show_spinner=False)
def _log_open_once(host: str) -> bool:
    log.warning("no access control configured (no password, no OIDC): the dashboard is open to anyone who can "
                "reach %s", host)
    return True


def _oidc_gate(provider: str) -> bool:
    if st.user.get("is_logged_in", False):
        with st.sidebar:
            st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'user'}")
            st.button("Log out", on_click=st.logout)
        return True
    st.title("Brand mood")
    st.write("Sign in to see the dashboard.")
    if st.button("Log in", key="em_oidc_login"):
        try:
            st.login(None if provider == "default" else provider)
        except Exception as exc:  # Streamlit raises a plain exception when [auth] secrets are missing or wrong
            st.error(f"OIDC login ({provider!r}) is not usable: {exc}. Configure [auth] in .streamlit/secrets.toml.")
    return False


def _password_gate(secret: str) -> bool:
    if st.session_state.get(_SESSION_FLAG):
        return True
    st.title("Brand mood")
    with st.form("em_login"):
        attempt = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Enter")
    if submitted:
        if hmac.compare_digest(attempt.encode(), secret.encode()):
            st.session_state[_SESSION_FLAG] = True
            st.rerun()
        st.error("Wrong password.")
    return False


def gate(settings: DashboardSettings) -> bool:
    """True when the visitor may see data; otherwise the login step has been drawn and the caller should stop."""
    if settings.oidc_provider and not _oidc_gate(settings.oidc_provider):
        return False
    secret = settings.password.get_secret_value() if settings.password else ""
    if secret and not _password_gate(secret):
        return False
    if not settings.auth_configured:
        _log_open_once(settings.host)
    return True
