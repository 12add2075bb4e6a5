"""The Faust app: posts topic -> micro-batches -> :class:`monitor.pipeline.BatchProcessor` -> ack.

Two ways to read the posts topic (``EM_MONITOR_CONSUMER``): ``batch`` (default) takes the micro-batches straight
from an aiokafka consumer inside this app (:mod:`monitor.batch_consumer`; same guarantees as below, offsets committed
per batch in taken order); ``faust`` is the Faust agent described here, whose per-event stream machinery costs more
CPU per post than the rest of the pipeline (``bench/consume_ceiling.py``).

Delivery: at-least-once. ``noack_take`` (Faust's ``take`` that leaves acking to the caller) hands over a batch;
its events are acked — and so become committable — only after the batch's Redis writes and produced records
succeeded. A batch's ``posts.classified`` records go out as a few producer batches (``publish_many``), every one
acknowledged by the broker before the batch's events are acked. No idempotent producer, no transactions (the tansu
broker supports neither; see docs/platform.md).
Up to ``pipeline_depth`` batches are in flight (one classified while the previous one is written); they are acked in
the order they were taken. On SIGTERM Faust cancels the agent: the batches in hand are finished (shielded), acked,
and the offsets committed; then alert deliveries still in flight (webhook, Slack, Teams, email) get up to
``alert_drain_timeout`` seconds to finish (:meth:`monitor.alerts.AlertEngine.drain`).
"""

from __future__ import annotations

import asyncio
import time

import faust
from aiokafka.partitioner import DefaultPartitioner

from monitor.acker import InOrderAcker
from monitor.batch_consumer import BatchConsumer
from monitor.faust_tuning import MonitorApp
from monitor.inference import Inference
from monitor.metrics import METRICS, start_http
from monitor.partitions import partitions_for_keys
from monitor.pipeline import BatchProcessor, Record
from monitor.settings import MonitorSettings
from monitor.store import RedisStore

__all__ = ["create_app", "new_app"]

# Below the producer's 1 MiB request limit (producer_max_request_size) with room for the request framing
_PRODUCER_BATCH_BYTES = 512 * 1024


def _faust_agent(settings: MonitorSettings, processor, state: dict):
    """The posts agent of ``EM_MONITOR_CONSUMER=faust``: Faust's stream, ``noack_take`` batches, in-order acks."""

    async def classify_posts(stream):
        # Up to `pipeline_depth` batches in flight: while one writes to Redis and the broker, the next is already with
        # the model (whose one executor runs them one at a time, in order). Acks stay in batch order.
        slots = asyncio.Semaphore(settings.pipeline_depth)
        acker = InOrderAcker(stream, slots)
        consume = METRICS.stage("consume")
        try:
            waiting_since = time.perf_counter()
            async for events in stream.noack_take(settings.max_batch, within=settings.max_wait):
                records = [Record(e.message.value, e.message.timestamp and int(e.message.timestamp * 1000),
                                  e.message.topic, e.message.partition, e.message.offset, e.message.key)
                           for e in events]
                # from asking for a batch to holding its records (includes waiting for posts when the topic is idle)
                consume.observe(time.perf_counter() - waiting_since)
                await slots.acquire()
                acker.add(events, asyncio.ensure_future(processor().process_until_done(records)))
                waiting_since = time.perf_counter()
        finally:  # stream stopped or shutting down (cancelled): finish the batches in hand so they can be committed
            await acker.finish()
            if "processor" in state:  # then deliver the alerts still in flight (bounded: alert_drain_timeout)
                await state["processor"].alerts.drain()

    return classify_posts


def new_app(settings: MonitorSettings, **overrides) -> MonitorApp:
    """The worker's Faust app, configured as the worker runs it, without agents (``bench/consume_ceiling.py`` times
    Faust's own consuming with exactly this configuration; ``overrides``: other Faust settings, to compare)."""
    return MonitorApp(
        settings.group_id, broker=settings.broker_url, fetch_max_wait_ms=settings.fetch_max_wait_ms,
        web_enabled=False, store="memory://",
        topic_partitions=settings.topic_partitions, topic_replication_factor=1,
        consumer_auto_offset_reset="earliest", stream_wait_empty=False,
        # join the group in seconds rather than minutes (docs/platform.md)
        broker_session_timeout=10, broker_rebalance_timeout=10, broker_heartbeat_interval=1,
        # a batch's posts.classified records (~1 KB each) in a few producer batches, not one per 16 KB (the default)
        producer_max_batch_size=_PRODUCER_BATCH_BYTES,
        **overrides,
    )


def create_app(settings: MonitorSettings, inference: Inference) -> faust.App:
    app = new_app(settings)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    posts_topic = app.topic(settings.posts_topic, partitions=settings.topic_partitions, **raw)
    out_topics = {name: app.topic(name, **raw) for name in
                  (settings.dlq_topic, settings.classified_topic, settings.alerts_topic)}
    state: dict = {}

    async def send(topic: str, key: bytes | None, value: bytes):
        return await out_topics[topic].send(key=key, value=value)

    async def publish_many(topic: str, rows: list[tuple[bytes | None, bytes]]) -> list[asyncio.Future]:
        """A batch's records as a few producer batches (one per partition, split at ``producer_max_batch_size``)
        through the aiokafka producer under Faust's: one request instead of one Faust send per record (the
        per-record path cost more than the rest of the batch). Partitions as a send would pick them (the
        producer's partitioner over the key). The futures resolve when the broker acknowledged each batch; the
        pipeline awaits them all before the batch's events are acked, so no offset is committed before."""
        producer = app.producer._ensure_producer()
        await producer.partitions_for(topic)  # the topic's metadata, which partitioning needs
        keys = [key for key, _ in rows]
        if isinstance(producer._partitioner, DefaultPartitioner) and None not in keys:
            # the same partitions, hashed over the batch at once (monitor/partitions.py)
            chosen = partitions_for_keys(keys, list(producer._metadata.partitions_for_topic(topic)))
        else:
            chosen = [producer._partition(topic, None, key, value, key, value) for key, value in rows]
        by_partition: dict[int, list] = {}
        for partition, row in zip(chosen, rows):
            by_partition.setdefault(partition, []).append(row)
        acked = []
        for partition, records in by_partition.items():
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                    acked.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any one record
            acked.append(await producer.send_batch(batch, topic, partition=partition))
        return acked

    def processor(create: bool = True) -> BatchProcessor | None:  # the Redis client must be made in the running loop
        if "processor" not in state:
            if not create:
                return None
            state["processor"] = BatchProcessor(settings, inference, RedisStore(settings, inference.labels), send,
                                                publish_many=publish_many)
        return state["processor"]

    if settings.consumer == "batch":  # the posts topic in batches from aiokafka (monitor/batch_consumer.py)
        app.extra_services.append(BatchConsumer(app, settings, processor, posts_topic))
        app.faust_consumer_group = f"{settings.group_id}-faust"
    else:
        app.agent(posts_topic, name="classify_posts")(_faust_agent(settings, processor, state))

    if settings.alert_detect_interval_seconds > 0:
        # the detections the throttle skipped run once their interval passed, also when no batch follows
        @app.timer(max(0.5, settings.alert_detect_interval_seconds / 2))
        async def run_skipped_detections() -> None:
            current = processor(create=False)
            if current is not None and current.evaluate_alerts:
                await current.alerts.run_skipped()  # never raises; a failed detection waits for the next tick

    @app.task
    async def serve_health() -> None:
        async def health() -> dict:
            store = processor().store
            redis_ok = await store.ping()
            # reachable is not enough: a Redis at maxmemory (or read-only, ...) answers PING but refuses writes.
            # While a write failed, probe with a tiny expiring write, so an idle worker turns healthy again once
            # Redis accepts writes (not only after its next batch)
            if redis_ok and METRICS.redis_problem is not None:
                try:
                    await store.redis.set("em:health:write-probe", 1, px=1000)
                    METRICS.redis_ok()
                except Exception as exc:  # noqa: BLE001 - still refused: the problem stands, with the latest reason
                    METRICS.redis_down(exc)
            writable = METRICS.redis_problem is None
            return {"ok": redis_ok and writable, "redis": redis_ok, "redis_writable": writable,
                    "redis_problem": METRICS.redis_problem, "model_version": inference.version}

        if settings.metrics_port:
            state["http"] = await start_http(settings.metrics_port, health, settings.metrics_host)

    return app
