"""`up --persist DIR` through its real interface: counts and the posts topic survive a restart of `up` (two
full start-ups of the worker and dashboard; in the default suite, about a minute)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from emotion_monitor.topics import bootstrap_servers
from monitor import schema

ROOT = Path(__file__).resolve().parents[2]


def _start_up(persist: Path, run_dir: Path, ports: dict[str, int], name: str) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "EM_UP_RUN_DIR": str(run_dir), "EM_UP_KAFKA_PORT": str(ports["kafka"]),
           "EM_UP_REDIS_PORT": str(ports["redis"]), "EM_UP_DASHBOARD_PORT": "0"}
    out_path = run_dir.parent / f"{name}.out"
    proc = subprocess.Popen([sys.executable, "-m", "emotion_monitor", "up", "--persist", str(persist), "--no-demo"],
                            cwd=ROOT, env=env, stdout=out_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if "Ctrl-C stops everything" in out_path.read_text():
            return proc, json.loads((run_dir / "run.json").read_text())
        time.sleep(0.5)
    if proc.poll() is None:
        _stop(proc)
    pytest.fail(f"up did not start:\n{out_path.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0


def _total(client) -> int:
    rows = client.ts().mrange("-", "+", filters=[f"app={schema.APP_LABEL}", "metric=posts", "tier=raw"],
                              aggregation_type="sum", bucket_size_msec=10**13)
    return int(sum(value for row in rows for _k, (_l, samples) in row.items() for _t, value in samples))


def _wait_total(client, expected: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _total(client) < expected:
        time.sleep(0.5)
    assert _total(client) == expected


async def _topic_size(kafka_url: str) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer("posts", bootstrap_servers=bootstrap_servers(kafka_url), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    count = 0
    for _ in range(6):
        count += sum(len(v) for v in (await consumer.getmany(timeout_ms=700)).values())
    await consumer.stop()
    return count


def _produce(kafka_url: str, path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "emotion_monitor", "produce", str(path), "--kafka-url", kafka_url,
                             "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ~60 s (two full `up` starts): behind the slow marker CI runs
@pytest.mark.slow
def test_up_persist_keeps_counts_and_posts_across_a_restart(tmp_path):
    from emotion_monitor.servers import free_port

    persist, run_dir = tmp_path / "data", tmp_path / "run"
    run_dir.mkdir()
    ports = {"kafka": free_port(), "redis": free_port()}
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps({"id": f"a{i}", "brand": "acme", "text": f"great coffee {i}"}) + "\n"
                             for i in range(20)))
    second.write_text("".join(json.dumps({"id": f"b{i}", "brand": "acme", "text": f"bad coffee {i}"}) + "\n"
                              for i in range(5)))

    proc, info = _start_up(persist, run_dir, ports, "first")
    try:
        _produce(info["kafka_url"], first)
        _wait_total(redis.Redis.from_url(info["redis_url"]), 20)
    finally:
        _stop(proc)

    proc, info = _start_up(persist, run_dir, ports, "second")
    try:
        client = redis.Redis.from_url(info["redis_url"])
        assert _total(client) == 20  # Redis kept its counts
        assert asyncio.run(_topic_size(info["kafka_url"])) == 20  # the broker kept the posts
        _produce(info["kafka_url"], second)
        _wait_total(client, 25)  # the worker resumes: new posts counted, the old ones not twice
    finally:
        _stop(proc)
