"""`up` given the URLs of an existing Kafka and Redis starts neither, and its worker and dashboard use those."""

from __future__ import annotations

import pytest

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from monitor import schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # long (a real worker or `up` run); CI runs it with -m slow
def test_up_uses_existing_kafka_and_redis(kafka_broker, redis_server, tmp_path):
    """... a password-protected Redis, whose password appears in no line `up` prints and no log of its children."""
    import redis

    password = "UP-S3CRET-7731"
    redis.Redis.from_url(redis_server.url).config_set("requirepass", password)
    redis_url = redis_server.url.replace("redis://", f"redis://:{password}@")
    redis_client = redis.Redis.from_url(redis_url, decode_responses=True)
    run_dir, out = tmp_path / "run", tmp_path / "up.out"
    env = {**os.environ, "EM_UP_KAFKA_URL": kafka_broker.url, "EM_UP_RUN_DIR": str(run_dir),
           "EM_UP_DASHBOARD_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "emotion_monitor", "up", "--redis-url", redis_url,
                             "--no-demo"], cwd=ROOT, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        info = json.loads((run_dir / "run.json").read_text())
        assert set(info["pids"]) == {"worker-0", "dashboard", "up"}  # no broker, no Redis of its own
        assert (info["kafka_url"], info["redis_url"]) == (kafka_broker.url, redis_url)  # for scripts: whole
        text = out.read_text()
        shown = redis_server.url.replace("redis://", "redis://:***@")
        assert f"broker: using {kafka_broker.url}" in text and f"redis: using {shown}" in text

        posts = tmp_path / "posts.jsonl"
        posts.write_text("".join(json.dumps({"id": f"e{i}", "brand": "acme", "text": f"post {i}"}) + "\n"
                                 for i in range(12)))
        sent = subprocess.run([sys.executable, "-m", "emotion_monitor", "produce", str(posts), "--kafka-url",
                               kafka_broker.url, "--no-progress"], cwd=ROOT, capture_output=True, text=True)
        assert sent.returncode == 0, sent.stderr
        key = schema.series_key("acme", schema.ALL_EMOTIONS, "posts")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (redis_client.exists(key) and _sum(redis_client, key) >= 12):
            time.sleep(0.5)
        assert _sum(redis_client, key) == 12  # the worker `up` started wrote to the given Redis
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        redis_client.close()
    assert kafka_broker.alive() and redis_server.alive()  # not ours to stop
    logs = [path for path in run_dir.rglob("*.log")]
    assert logs and all(password not in path.read_text(errors="replace") for path in logs + [out])


def _sum(client, key: str) -> int:
    return int(sum(value for _ts, value in client.ts().range(key, "-", "+")))
