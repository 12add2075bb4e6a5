"""Start ``emotion-monitor dashboard`` as a child process and wait until Streamlit answers its health check.

Used by the real-browser test, the benchmark and anything else that needs a running dashboard; stopped by PID
through the returned :class:`~emotion_monitor.servers.ServerProcess`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from emotion_monitor.servers import ServerProcess, ServerUnavailable, free_port, http_ok, launch, wait_until_ready

__all__ = ["start_dashboard"]


def _cli() -> list[str]:
    installed = shutil.which("emotion-monitor", path=str(Path(sys.executable).parent))
    return [installed] if installed else [sys.executable, "-m", "emotion_monitor"]


def start_dashboard(redis_url: str, port: int | None = None, *, log_dir: Path | None = None,
                    extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> ServerProcess:
    """Run the dashboard on ``127.0.0.1:port`` against ``redis_url``; returns once ``/_stcore/health`` says ok."""
    port = port or free_port()
    env = {**os.environ, **(extra_env or {})}
    command = [*_cli(), "dashboard", "--redis-url", redis_url, "--host", "127.0.0.1", "--port", str(port)]
    log_path = (log_dir / f"dashboard-{port}.log") if log_dir else None
    process = launch(command, log_path, env)
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess("dashboard", url, port, process, log_path, env=extra_env or {})
    if wait_until_ready(process, "dashboard", lambda: http_ok(f"{url}/_stcore/health"), timeout, log_path, poll=0.2):
        return server
    server.stop()
    raise ServerUnavailable(f"dashboard did not answer {url}/_stcore/health within {timeout:.0f} s")
