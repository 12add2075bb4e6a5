"""`up` fails fast and clearly, and leaves nothing running, when something it needs is missing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_up(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EM_UP_RUN_DIR": str(tmp_path / "run"), **env_extra}
    return subprocess.run([sys.executable, "-m", "emotion_monitor", "up", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_missing_openssl11_names_the_fix(tmp_path):
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    if "libssl.so.1.1 " in listing:
        pytest.skip("this system has OpenSSL 1.1 installed: the missing-library path cannot be reproduced")
    # A home without ~/.cache/emotion-monitor/libssl1.1 and no EMOTION_MONITOR_LIBSSL_DIR: as on a fresh Debian 12.
    # The broker starts first (its binary needs no OpenSSL 1.1), then Redis fails: the broker must be stopped again.
    env = {"HOME": str(tmp_path / "home"), "EMOTION_MONITOR_LIBSSL_DIR": ""}
    result = _run_up(["--kafka-port", "0", "--redis-port", "0"], env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "OpenSSL 1.1" in result.stderr and "deploy/fetch-libssl11.sh" in result.stderr
    port = int(re.search(r"tansu at kafka://127.0.0.1:(\d+)", result.stdout).group(1))
    assert "stopped: kafka" in result.stdout
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the broker it had started is gone
    assert not (tmp_path / "run" / "run.json").exists()  # no worker or dashboard was started


def test_busy_port_says_how_to_pick_another(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run_up(["--kafka-port", str(port)], {}, tmp_path)
    assert result.returncode == 1
    assert f"port {port} for the broker is already in use" in result.stderr and "--kafka-port 0" in result.stderr


def test_wrong_demo_data_path_fails_before_anything_starts(tmp_path):
    result = _run_up(["--kafka-port", "0", "--redis-port", "0"], {"EM_UP_DEMO_DATA_DIR": str(tmp_path / "nowhere")},
                     tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere' / 'emotions.txt'} not found" in result.stderr
    assert "broker:" not in result.stdout  # nothing was started


def test_invalid_settings_name_the_field(tmp_path):
    result = _run_up([], {"EM_UP_DEMO_SPIKE_BRAND": "nobody"}, tmp_path)
    assert result.returncode == 1
    assert "demo_spike_brand 'nobody' is not one of demo_brands" in result.stderr


def test_given_kafka_url_malformed_or_unreachable_is_a_clear_error(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: nothing answers there
        redis_url = f"redis://127.0.0.1:{port}/0"
        malformed = _run_up(["--kafka-url", "nohost", "--redis-url", redis_url, "--no-demo"], {}, tmp_path)
        unreachable = _run_up(["--kafka-url", f"kafka://127.0.0.1:{port}", "--redis-url", redis_url, "--no-demo"],
                              {}, tmp_path)
    assert malformed.returncode == 1, malformed.stderr
    assert "EM_UP_KAFKA_URL" in malformed.stderr and "has no port" in malformed.stderr
    assert "Traceback" not in malformed.stderr and "broker:" not in malformed.stdout
    assert unreachable.returncode == 1, unreachable.stderr
    assert f"cannot create the topics on Kafka at kafka://127.0.0.1:{port}" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    assert not (tmp_path / "run" / "run.json").exists()  # no worker or dashboard was started
