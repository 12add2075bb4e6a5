"""The real servers start, serve and stop (as process groups: emotion_monitor.children)."""

import asyncio
import os

import pytest


def test_redis_has_timeseries(redis_server, redis_client):
    redis_client.ts().create("probe", labels={"k": "v"})
    redis_client.ts().add("probe", 1000, 2.5)
    assert [tuple(s) for s in redis_client.ts().range("probe", "-", "+")] == [(1000, 2.5)]
    redis_server.stop()
    assert not redis_server.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(redis_server.pid, 0)


def test_tansu_roundtrip(kafka_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap = f"127.0.0.1:{kafka_broker.port}"

    async def roundtrip():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        await producer.send_and_wait("probe", b"hello")
        await producer.stop()
        consumer = AIOKafkaConsumer("probe", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id="g")
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=20)
        finally:
            await consumer.stop()
        return message.value

    assert asyncio.run(roundtrip()) == b"hello"
    kafka_broker.stop()
    assert not kafka_broker.alive()
