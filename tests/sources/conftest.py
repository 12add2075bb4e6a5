"""Helpers for the source tests: read a topic back, run a source in-process or as the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_monitor.sources.settings import SourceSettings

ROOT = Path(__file__).resolve().parents[2]


async def _read_topic(kafka_url: str, topic: str, want: int | None, timeout: float) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    from emotion_monitor.topics import bootstrap_servers

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers(kafka_url), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                records.extend(json.loads(message.value) for message in messages)
            if want is not None and len({r.get("id", id(r)) for r in records}) >= want:
                break
            if want is None and not batch and records:
                break
    finally:
        await consumer.stop()
    return records


def read_topic(kafka_url: str, topic: str, want: int | None = None, timeout: float = 20.0) -> list[dict]:
    """Every record of ``topic`` from the start, once ``want`` distinct ids arrived (or ``timeout``)."""
    return asyncio.run(_read_topic(kafka_url, topic, want, timeout))


@pytest.fixture()
def source_settings(kafka_broker, redis_server):
    def make(**overrides) -> SourceSettings:
        values = dict(kafka_url=kafka_broker.url, redis_url=redis_server.url, metrics_port=0,
                      backoff_initial_s=0.1, backoff_max_s=0.5, checkpoint_interval_s=0.1)
        values.update(overrides)
        return SourceSettings(**values)

    return make


def source_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``emotion-monitor source ...`` as a child process (its own session), output in ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "emotion_monitor", "source", *args], cwd=ROOT,
                                env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
