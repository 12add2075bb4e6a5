"""What `up --persist DIR` relies on: the broker's s3 storage on the on-disk S3 server (s3rver) and Redis' append-only
file keep topics, records, committed group offsets and TimeSeries samples across a full stop and restart of all three,
and across a crash: SIGKILL of all three, with no chance to flush anything."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import redis

from emotion_monitor.servers import free_port, start_redis, start_s3rver, start_tansu
from emotion_monitor.settings import UpSettings
from emotion_monitor.topics import bootstrap_servers, ensure_topics


def _start(persist, log_dir, kafka_port, redis_port):
    s3 = start_s3rver(persist / "s3", install_dir=UpSettings().s3rver_dir, log_dir=log_dir)
    broker = start_tansu(kafka_port, storage_url="s3://tansu/", extra_env=s3.env, log_dir=log_dir)
    store = start_redis(redis_port, data_dir=persist / "redis", log_dir=log_dir)
    return [s3, broker, store]


def _stop(servers):
    for server in reversed(servers):
        server.stop()


def _kill(servers):
    """A crash: SIGKILL to Redis, the broker and the S3 server at once, nothing flushed on the way out."""
    for server in servers:
        if server.alive():
            os.kill(server.pid, signal.SIGKILL)
    for server in servers:
        server.process.wait(timeout=10)
        assert server.process.returncode == -signal.SIGKILL


async def _produce_and_commit(kafka_url: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url), acks="all")
    await producer.start()
    for i in range(40):
        await producer.send_and_wait("posts", f"post-{i}".encode(), partition=i % 2)
    await producer.stop()
    consumer = AIOKafkaConsumer("posts", bootstrap_servers=bootstrap_servers(kafka_url), group_id="workers",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen = 0
    while seen < 30:  # consume 30 of 40, commit exactly there
        batch = await consumer.getmany(timeout_ms=1000, max_records=30 - seen)
        seen += sum(len(v) for v in batch.values())
    await consumer.commit()
    await consumer.stop()


async def _read_back(kafka_url: str) -> tuple[list[bytes], int]:
    from aiokafka import AIOKafkaConsumer

    everything = AIOKafkaConsumer("posts", bootstrap_servers=bootstrap_servers(kafka_url), group_id=None,
                                  auto_offset_reset="earliest")
    await everything.start()
    values: list[bytes] = []
    for _ in range(10):
        batch = await everything.getmany(timeout_ms=1000)
        values += [record.value for records in batch.values() for record in records]
        if len(values) >= 40:
            break
    await everything.stop()
    group = AIOKafkaConsumer("posts", bootstrap_servers=bootstrap_servers(kafka_url), group_id="workers",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    await group.start()
    rest = 0
    for _ in range(5):
        batch = await group.getmany(timeout_ms=1000)
        rest += sum(len(v) for v in batch.values())
    await group.stop()
    return values, rest


@pytest.mark.timeout(180)
# the sigterm case is slow (CI runs it with -m slow); kill -9, the harder case for persistence, stays default
@pytest.mark.parametrize("end", [pytest.param("sigterm", marks=pytest.mark.slow), "sigkill"])
def test_broker_and_redis_data_survive_a_restart(tmp_path, end):
    persist = tmp_path / "data"
    kafka_port, redis_port = free_port(), free_port()
    servers = _start(persist, tmp_path, kafka_port, redis_port)
    try:
        kafka_url, redis_url = servers[1].url, servers[2].url
        ensure_topics(kafka_url, {"posts": 2})
        asyncio.run(_produce_and_commit(kafka_url))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.ts().create("em:ts:acme:anger:count", labels={"app": "emotion-monitor", "brand": "acme"})
        client.ts().madd([("em:ts:acme:anger:count", 1000 + i, 1) for i in range(25)])
        client.close()
    finally:
        (_kill if end == "sigkill" else _stop)(servers)
    assert any((persist / "s3").rglob("*")) and any((persist / "redis").iterdir())

    servers = _start(persist, tmp_path, kafka_port, redis_port)
    try:
        values, rest = asyncio.run(_read_back(servers[1].url))
        assert sorted(values) == sorted(f"post-{i}".encode() for i in range(40))
        assert rest == 10  # the group resumes at its committed offsets: nothing re-read, nothing skipped
        client = redis.Redis.from_url(servers[2].url, decode_responses=True)
        assert client.ts().info("em:ts:acme:anger:count").total_samples == 25
        assert client.ts().get("em:ts:acme:anger:count")[0] == 1024
    finally:
        _stop(servers)
