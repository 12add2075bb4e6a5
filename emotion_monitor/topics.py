"""Kafka helpers shared by ``up``, the demo source and ``produce``: URL parsing and idempotent topic creation."""

from __future__ import annotations

import asyncio
import logging

__all__ = ["bootstrap_servers", "ensure_topics", "topic_partitions"]

log = logging.getLogger(__name__)


def bootstrap_servers(kafka_url: str) -> str:
    """``kafka://h1:9092,h2:9092`` (Faust's form) or ``h1:9092`` -> ``h1:9092,h2:9092`` (the clients' form)."""
    url = kafka_url.strip()
    for scheme in ("kafka://", "tcp://", "plaintext://"):
        if url.lower().startswith(scheme):
            url = url[len(scheme):]
    hosts = [host.strip().rstrip("/") for host in url.split(";") for host in host.split(",") if host.strip()]
    for host in hosts:
        if ":" not in host:
            raise ValueError(f"Kafka address {host!r} in {kafka_url!r} has no port (expected host:port)")
    if not hosts:
        raise ValueError(f"no Kafka address in {kafka_url!r}")
    return ",".join(hosts)


async def _partition_counts(kafka_url: str, topics: list[str]) -> dict[str, int | None]:
    """Partitions of each topic (None when it does not exist), from one metadata request."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(kafka_url))
    await consumer.start()
    try:
        metadata = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - the only metadata call without auto-create
    finally:
        await consumer.stop()
    counts = {}
    for topic in topics:
        found = metadata.partitions_for_topic(topic)
        counts[topic] = len(found) if found else None
    return counts


async def topic_partitions(kafka_url: str, topic: str) -> int | None:
    """Number of partitions of ``topic``, or None when it does not exist."""
    return (await _partition_counts(kafka_url, [topic]))[topic]


async def _ensure_topics(kafka_url: str, partitions: dict[str, int], timeout_s: float) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url), request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, count, 1) for name, count in partitions.items() if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # created by someone else meanwhile: fine, it exists
                pass
    finally:
        await admin.close()
    counts = await _partition_counts(kafka_url, list(partitions))  # one connection, not one per topic
    return {name: count or 0 for name, count in counts.items()}


def ensure_topics(kafka_url: str, partitions: dict[str, int], timeout_s: float = 30.0) -> dict[str, int]:
    """Create each missing topic with its partition count (replication 1 is the broker's default for one node).

    An existing topic is left as it is (the broker here cannot add partitions); returns the partitions each now has,
    so the caller can warn when an existing posts topic has fewer partitions than workers.
    """
    return asyncio.run(_ensure_topics(kafka_url, partitions, timeout_s))
