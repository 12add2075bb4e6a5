"""Without a password or OIDC the dashboard is open: the CLI says so when it starts, refuses a non-loopback address
unless --allow-open-remote is given, and with it really serves there. A real `emotion-monitor dashboard` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_monitor.children import ChildProcess, spawn
from emotion_monitor.servers import ServerUnavailable, free_port, http_ok, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
EMOTION_MONITOR = str(Path(sys.executable).parent / "emotion-monitor")


def _env(redis_server, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_DASHBOARD_")}
    env.update({"EM_DASHBOARD_REDIS_URL": redis_server.url, **extra})
    return env


def _serve(args: list[str], env: dict[str, str], log: Path, port: int) -> ChildProcess:
    """Start the dashboard, wait until Streamlit answers on ``port``; the caller stops it (as a process group)."""
    dashboard = spawn("dashboard", [EMOTION_MONITOR, "dashboard", "--port", str(port), *args], log, env, cwd=ROOT)
    try:
        ready = wait_until_ready(dashboard, lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 120, poll=0.3)
    except ServerUnavailable as exc:  # it exited during start-up: the message ends with its log
        dashboard.stop(5)
        pytest.fail(str(exc))
    if not ready:
        dashboard.stop(20)
        pytest.fail(f"dashboard did not come up within 120 s:\n{dashboard.log_tail(3000)}")
    return dashboard


def test_open_mode_is_refused_on_a_public_address_then_served_with_allow_open_remote(redis_server, tmp_path):
    port = free_port()
    refused = subprocess.run([EMOTION_MONITOR, "dashboard", "--host", "0.0.0.0", "--port", str(port)], cwd=ROOT,
                             env=_env(redis_server), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "refusing to serve the dashboard on 0.0.0.0 without access control" in refused.stderr
    assert "--allow-open-remote" in refused.stderr and "Traceback" not in refused.stderr
    assert not http_ok(f"http://127.0.0.1:{port}/_stcore/health")  # nothing was started

    log = tmp_path / "dashboard.log"
    proc = _serve(["--host", "0.0.0.0", "--allow-open-remote"], _env(redis_server), log, port)
    try:
        text = log.read_text()
        assert ("WARNING emotion_monitor.dashboard: no access control configured (no password, no OIDC): "
                f"dashboard open on http://0.0.0.0:{port}") in text
        # bound to every address, not only loopback: reachable through this machine's own non-loopback address
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
                address = probe.getsockname()[0]
            except OSError:  # no route at all (an isolated machine): only loopback to try
                address = "127.0.0.1"
        if not address.startswith("127."):
            assert http_ok(f"http://{address}:{port}/_stcore/health")
    finally:
        proc.stop(20)


def test_open_mode_on_loopback_warns_and_a_password_does_not(redis_server, tmp_path):
    port = free_port()
    log = tmp_path / "open.log"
    proc = _serve([], _env(redis_server), log, port)
    proc.stop(20)
    assert f"no access control configured (no password, no OIDC): dashboard open on http://127.0.0.1:{port}" \
        in log.read_text()

    log = tmp_path / "login.log"
    proc = _serve(["--host", "0.0.0.0"], _env(redis_server, EM_DASHBOARD_PASSWORD="s3cret"), log, port)
    proc.stop(20)
    text = log.read_text()
    assert f"dashboard on http://0.0.0.0:{port} (login required)" in text and "no access control" not in text
