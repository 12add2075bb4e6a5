"""The Faust app: posts topic -> micro-batches -> :class:`monitor.pipeline.BatchProcessor` -> ack.

Delivery: at-least-once. ``noack_take`` (Faust's ``take`` that leaves acking to the caller) hands over a batch;
its events are acked — and so become committable — only after the batch's Redis writes and produced records
succeeded. No idempotent producer, no transactions (the tansu broker supports neither; see the platform notes).
On SIGTERM Faust cancels the agent: the batch in hand is finished (shielded), acked, and the offsets committed.
"""

from __future__ import annotations

import asyncio

import faust

from monitor.faust_tuning import MonitorApp
from monitor.inference import Inference
from monitor.metrics import start_http
from monitor.pipeline import BatchProcessor, Record
from monitor.settings import MonitorSettings
from monitor.store import RedisStore

__all__ = ["create_app"]


def create_app(settings: MonitorSettings, inference: Inference) -> faust.App:
    app = MonitorApp(
        settings.group_id, broker=settings.broker_url, fetch_max_wait_ms=settings.fetch_max_wait_ms,
        web_enabled=False, store="memory://",
        topic_partitions=settings.topic_partitions, topic_replication_factor=1,
        consumer_auto_offset_reset="earliest", stream_wait_empty=False,
        # join the group in seconds rather than minutes (platform notes)
        broker_session_timeout=10, broker_rebalance_timeout=10, broker_heartbeat_interval=1,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    posts_topic = app.topic(settings.posts_topic, partitions=settings.topic_partitions, **raw)
    out_topics = {name: app.topic(name, **raw) for name in
                  (settings.dlq_topic, settings.classified_topic, settings.alerts_topic)}
    state: dict = {}

    async def send(topic: str, key: bytes | None, value: bytes):
        return await out_topics[topic].send(key=key, value=value)

    def processor() -> BatchProcessor:  # the Redis client must be made inside the running loop
        if "processor" not in state:
            state["processor"] = BatchProcessor(settings, inference, RedisStore(settings, inference.labels), send)
        return state["processor"]

    @app.agent(posts_topic)
    async def classify_posts(stream):
        async for events in stream.noack_take(settings.max_batch, within=settings.max_wait):
            records = [Record(e.message.value, e.message.timestamp and int(e.message.timestamp * 1000),
                              e.message.topic, e.message.partition, e.message.offset, e.message.key) for e in events]
            work = asyncio.ensure_future(processor().process_until_done(records))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:  # shutting down: finish this batch so it can be committed
                await work
                for event in events:
                    await stream.ack(event)
                raise
            for event in events:
                await stream.ack(event)

    @app.task
    async def serve_health() -> None:
        async def health() -> dict:
            redis_ok = await processor().store.ping()
            return {"ok": redis_ok, "redis": redis_ok, "model_version": inference.version}

        if settings.metrics_port:
            state["http"] = await start_http(settings.metrics_port, health)

    return app
