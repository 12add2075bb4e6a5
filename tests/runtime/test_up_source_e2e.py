"""`emotion-monitor up --source bluesky` as a user runs it (slow: a real worker loads the model): with Jetstream
reachable the source's posts are counted in Redis; offline, `up` says so and the demo's posts are counted instead."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import redis

from emotion_monitor.servers import free_port
from monitor import schema
from tests.runtime.test_up_e2e import ROOT, _posts_total, _wait
from tests.sources.servers import JetstreamServer, post_event

pytestmark = pytest.mark.slow


def _up(tmp_path, goemotions_dir, extra_env: dict[str, str]):
    env = {**os.environ, "EM_UP_KAFKA_PORT": "0", "EM_UP_REDIS_PORT": "0", "EM_UP_DASHBOARD_PORT": "0",
           "EM_UP_RUN_DIR": str(tmp_path / "run"), "EM_UP_DEMO_DATA_DIR": str(goemotions_dir),
           "EM_UP_STATUS_INTERVAL_S": "1", "EM_UP_DEMO_DAY_PATTERN": "false", **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "emotion_monitor", "up", "--source", "bluesky"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, output


def _stop(proc: subprocess.Popen, output: list[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=90) == 0, "".join(output[-40:])
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_up_source_bluesky_counts_the_live_posts(tmp_path, goemotions_dir):
    server = JetstreamServer()
    server.publish(*[post_event("did:plc:e2e", f"3ke2e{i}", 1_725_911_162_000_000 + i, f"I love this coffee {i}")
                     for i in range(40)])
    proc, output = _up(tmp_path, goemotions_dir, {"EM_SOURCE_BLUESKY_ENDPOINT": server.url,
                                                  "EM_SOURCE_BRAND": "acme coffee"})
    try:
        info = _wait(lambda: "dashboard: http" in "".join(output)
                     and json.loads((tmp_path / "run" / "run.json").read_text()), 240, "the dashboard", proc, output)
        client = redis.Redis.from_url(info["redis_url"], decode_responses=True)
        _wait(lambda: _posts_total(client) >= 40, 120, "the 40 Bluesky posts counted", proc, output)
        assert "source-bluesky" in info["pids"] and "source: Bluesky Jetstream" in "".join(output)
        assert _posts_total(client) == 40 and client.smembers(schema.BRANDS_KEY) == {"acme coffee"}
    finally:
        _stop(proc, output)
        server.close()
    assert "demo:" not in "".join(output)


def test_up_source_bluesky_offline_falls_back_to_the_demo(tmp_path, goemotions_dir):
    offline = f"ws://127.0.0.1:{free_port()}/subscribe"
    proc, output = _up(tmp_path, goemotions_dir, {"EM_SOURCE_BLUESKY_ENDPOINT": offline})
    try:
        info = _wait(lambda: "dashboard: http" in "".join(output)
                     and json.loads((tmp_path / "run" / "run.json").read_text()), 240, "the dashboard", proc, output)
        client = redis.Redis.from_url(info["redis_url"], decode_responses=True)
        _wait(lambda: _posts_total(client) >= 10, 120, "demo posts counted", proc, output)
    finally:
        _stop(proc, output)
    text = "".join(output)
    assert f"cannot reach Bluesky Jetstream at {offline}" in text and "Falling back to the demo source." in text
    assert "demo: ~" in text
