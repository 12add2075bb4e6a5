"""One micro-batch, start to finish: parse -> (reject to DLQ) -> classify -> Redis -> posts.classified -> alerts.

Shared by the Faust worker and by replay, so both count the same way. Delivery guarantee: :meth:`process` returns
only once every Redis write succeeded (it retries through Redis outages) and every record it produced (DLQ,
classified, alerts) was acknowledged by the broker; the caller acks/commits the input offsets only after that. A crash
before that point means redelivery, which the idempotent Redis writes absorb: at-least-once in, exactly-once counts.
Input never crashes the batch: anything :func:`monitor.post.parse_post` rejects goes to the DLQ with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from monitor.alerts import AlertEngine
from monitor.inference import Inference
from monitor.metrics import METRICS
from monitor.post import Post, PostRejected, parse_post, rejection_envelope
from monitor.settings import MonitorSettings
from monitor.store import ClassifiedPost, RedisStore

__all__ = ["BatchProcessor", "BatchResult", "Record", "check_alert_emotions"]

log = logging.getLogger(__name__)

# (topic, key, value) -> awaitable that resolves once the broker acknowledged the record
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object] | None]]


@dataclass(frozen=True)
class Record:
    """The parts of a Kafka record the pipeline needs (built from a Faust event or an aiokafka record)."""

    value: bytes | None
    timestamp_ms: int | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass
class BatchResult:
    records: int = 0
    counted: int = 0
    duplicates: int = 0
    rejected: int = 0
    alerts: list = field(default_factory=list)


def check_alert_emotions(settings: MonitorSettings, labels: Sequence[str]) -> None:
    """Fail fast: an emotion the model does not know would silently never alert."""
    unknown = [e for e in settings.alert_emotions if e not in labels]
    if unknown:
        raise ValueError(f"EM_MONITOR_ALERT_EMOTIONS: unknown emotion(s) {unknown}; the model knows {list(labels)}")


class BatchProcessor:
    def __init__(self, settings: MonitorSettings, inference: Inference, store: RedisStore, send: Send,
                 *, publish_classified: bool = True, evaluate_alerts: bool = True):
        self.settings = settings
        self.inference = inference
        self.store = store
        self.send = send
        self.publish_classified = publish_classified
        self.evaluate_alerts = evaluate_alerts
        check_alert_emotions(settings, inference.labels)
        self.alerts = AlertEngine(settings, store, self._send_and_wait, inference.version,
                                  on_alert=lambda alert: METRICS.alerts.labels(alert.emotion).inc())

    async def _send_and_wait(self, topic: str, key: bytes | None, value: bytes) -> None:
        pending = await self.send(topic, key, value)
        if pending is not None:
            await pending

    async def process_until_done(self, records: Sequence[Record]) -> BatchResult:
        """:meth:`process`, retried with back-off on any unexpected failure (a broker send error, a bug): the batch
        is never acked half done, and a rerun cannot double count (idempotent Redis writes)."""
        delay = self.settings.redis_retry_initial
        while True:
            try:
                return await self.process(records)
            except Exception:
                log.exception("batch of %d failed; retrying in %.1f s (offsets not committed)", len(records), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.redis_retry_max)

    async def process(self, records: Sequence[Record]) -> BatchResult:
        started = time.perf_counter()
        result = BatchResult(records=len(records))
        pending: list[Awaitable[object]] = []
        posts: list[Post] = []
        for record in records:
            try:
                posts.append(parse_post(record.value, record.timestamp_ms, max_bytes=self.settings.max_post_bytes))
            except PostRejected as exc:
                result.rejected += 1
                METRICS.dlq.labels(exc.reason).inc()
                envelope = rejection_envelope(record.value, exc, topic=record.topic, partition=record.partition,
                                              offset=record.offset)
                pending.append(await self.send(self.settings.dlq_topic, record.key, envelope))
        if posts:
            proba, inference_s = await self.inference.predict([p.text for p in posts])
            METRICS.inference_seconds.observe(inference_s)
            labels, thresholds = self.inference.labels, self.inference.thresholds
            classified = [ClassifiedPost.from_probabilities(post, row, labels, thresholds, self.inference.version)
                          for post, row in zip(posts, proba)]
            fresh = await self.store.write_with_retry(classified, thresholds)
            METRICS.redis_up.set(1)
            written_at_ms = time.time() * 1000
            for record in records:
                if record.timestamp_ms:
                    METRICS.delay_seconds.observe(max(0.0, written_at_ms - record.timestamp_ms) / 1000)
            result.counted = sum(fresh)
            result.duplicates = len(fresh) - result.counted
            if self.publish_classified:
                for item in classified:
                    pending.append(await self.send(self.settings.classified_topic, item.post.id.encode(),
                                                   item.to_json().encode()))
            if self.evaluate_alerts and result.counted:
                latest: dict[str, int] = {}
                for item, is_new in zip(classified, fresh):
                    if is_new:
                        for brand in item.post.brands:
                            latest[brand] = max(latest.get(brand, 0), item.post.created_at)
                result.alerts = await self.alerts.evaluate(latest)
        for future in pending:
            if future is not None:
                await future
        METRICS.posts.labels("counted").inc(result.counted)
        METRICS.posts.labels("duplicate").inc(result.duplicates)
        METRICS.posts.labels("rejected").inc(result.rejected)
        METRICS.batch_size.observe(len(records))
        METRICS.batch_seconds.observe(time.perf_counter() - started)
        METRICS.last_batch.set(time.time())
        return result
