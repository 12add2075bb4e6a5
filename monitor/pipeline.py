"""One micro-batch, start to finish: parse -> (reject to DLQ) -> classify -> Redis -> posts.classified -> alerts.

Shared by the Faust worker and by replay, so both count the same way. Delivery guarantees of
:meth:`BatchProcessor.process_until_done`, after which the caller acks/commits the input offsets:

* **Counts: exactly once.** Every post is counted once, by ``id``, however often the batch is attempted or
  redelivered (the idempotent Redis write of :mod:`monitor.store`).
* **Nothing is dropped.** It returns only when every record is either counted in Redis and published, or on the
  dead-letter topic with its reason and original bytes, every produced record acknowledged by the broker. (An
  untagged post that brand matching gives no brand is valid but not stored: it is counted in ``em:unmatched``, see
  :class:`monitor.brands.IngestMatching`.)
* **Servers away: wait.** Redis or the broker unreachable (:func:`monitor.retry.is_transient`) is retried with
  back-off for as long as it lasts; such a failure never sends anything to the DLQ.
* **Poison: isolate.** A batch that fails for any other reason (a text that crashes the model, a record the broker
  refuses, a bug) ``poison_retries`` times is bisected until the failing records stand alone; each of those goes to
  the DLQ as ``processing_failed`` and the rest of the batch is counted normally.
* **posts.classified: at-least-once.** A retried attempt publishes the batch's classified posts again, even
  those the failed attempt already counted in Redis, so a consumer may see an ``id`` twice (dedupe by ``id``) but
  never misses one. Alerts are evaluated for every brand of the batch on every successful attempt, counted before
  or not; the alert cooldown keeps a re-evaluation from firing twice.
* **DLQ: once per delivery, bounded.** A record's dead letter is sent once per delivery of its batch, however many
  attempts the batch takes (a redelivery after a crash sends it again: at-least-once). Envelopes stay under the
  producer's request limit (:data:`monitor.post.MAX_ENVELOPE_BYTES`; a larger original is truncated, its size and
  sha256 kept). A record whose dead letter the broker keeps refusing is, after ``poison_retries`` attempts and one
  with the original left out, skipped: logged with its topic/partition/offset and counted in
  ``em_dlq_undeliverable_total`` — it never blocks its partition.

Input never crashes the batch: anything :func:`monitor.post.parse_post` or the time policy
(:mod:`monitor.timepolicy`) rejects, and any post the store refuses to count (``too_old``, ``brand_limit``), goes to
the DLQ with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from monitor.alerts import AlertEngine
from monitor.brands import IngestMatching
from monitor.inference import Inference
from monitor.metrics import METRICS, observe_many
from monitor.post import Post, PostRejected, parse_post, rejection_envelope
from monitor.priors import PriorTracker
from monitor.retry import Backoff, retry_transient
from monitor.settings import MonitorSettings
from monitor.store import ClassifiedPost, RedisStore
from monitor.timepolicy import check_created_at

__all__ = ["PROCESSING_FAILED", "BatchProcessor", "BatchResult", "PublishMany", "Record", "check_alert_emotions"]

log = logging.getLogger(__name__)

# (topic, key, value) -> awaitable that resolves once the broker acknowledged the record
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object] | None]]
# (topic, [(key, value), ...]) -> awaitables that resolve once the broker acknowledged every one of the records
PublishMany = Callable[[str, list[tuple[bytes | None, bytes]]], Awaitable[list[Awaitable[object]]]]
# (topic, partition, offset) of a record: what "already dead-lettered during this delivery" is keyed by
Coordinates = tuple[str, int, int]

# DLQ reason of a record that parsed but could not be processed, even alone (the detail names the exception)
PROCESSING_FAILED = "processing_failed"
_MAX_DETAIL_CHARS = 2000


class Record(NamedTuple):
    """The parts of a Kafka record the pipeline needs (built from a Faust event or an aiokafka record). A named tuple:
    built once per post, it costs a quarter of a frozen dataclass."""

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
    failed: int = 0  # parsed, but failed processing even alone: dead-lettered as processing_failed
    unmatched: int = 0  # valid, but brand matching gave it no brand: counted in em:unmatched, not stored
    alerts: list = field(default_factory=list)

    def add(self, other: "BatchResult") -> None:
        self.records += other.records
        self.counted += other.counted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.failed += other.failed
        self.unmatched += other.unmatched
        self.alerts.extend(other.alerts)


def _count_opened(alert) -> None:
    """em_alerts_total counts alerts opened (an episode's updates and resolution are not new alerts)."""
    if alert.status == "open":
        METRICS.alerts.labels(alert.emotion).inc()


def check_alert_emotions(settings: MonitorSettings, labels: Sequence[str]) -> None:
    """Fail fast: an emotion the model does not know would silently never alert."""
    unknown = [e for e in settings.alert_emotions if e not in labels]
    if unknown:
        raise ValueError(f"EM_MONITOR_ALERT_EMOTIONS: unknown emotion(s) {unknown}; the model knows {list(labels)}")


class BatchProcessor:
    def __init__(self, settings: MonitorSettings, inference: Inference, store: RedisStore, send: Send,
                 *, publish_classified: bool = True, evaluate_alerts: bool = True,
                 publish_many: PublishMany | None = None):
        """``publish_many``, when given, publishes a batch's ``posts.classified`` records in one call (a few
        producer batches instead of one send per post); without it each record goes through ``send``."""
        self.settings = settings
        self.inference = inference
        self.store = store
        self.send = send
        self.publish_many = publish_many
        self.publish_classified = publish_classified
        self.evaluate_alerts = evaluate_alerts
        self.brand_matching = IngestMatching(settings, store) if settings.brand_matching != "off" else None
        check_alert_emotions(settings, inference.labels)
        # stream label priors (derived estimates, not counts): only the live worker, not replay's recount
        self.priors = PriorTracker.for_processor(settings, inference, store) if evaluate_alerts else None
        self.alerts = AlertEngine(settings, store, self._publish_alert, inference.version,
                                  on_alert=_count_opened)

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)

    async def _send_and_wait(self, topic: str, key: bytes | None, value: bytes) -> None:
        pending = await self.send(topic, key, value)
        if pending is not None:
            await pending

    async def _publish_alert(self, topic: str, key: bytes | None, value: bytes) -> None:
        # the cooldown is already claimed when an alert is published: waiting out a broker outage here (instead of
        # failing the batch, whose retry would find the cooldown taken) keeps the alert from being lost
        await retry_transient(lambda: self._send_and_wait(topic, key, value), self._backoff(), "publish alert")

    # ------------------------------------------------------------------ retry policy

    async def process_until_done(self, records: Sequence[Record]) -> BatchResult:
        """Process the batch under the guarantees of the module docstring; never raises (but is cancellable)."""
        started = time.perf_counter()
        counted_earlier: set[str] = set()  # post ids an attempt counted in Redis before it failed
        dead_lettered: set[Coordinates] = set()  # records whose dead letter the broker acked during this delivery
        backoff = self._backoff()
        failures = 0
        while True:
            try:
                result = await self._attempt(records, counted_earlier, dead_lettered)
                break
            except Exception as exc:
                failures, error = failures + 1, exc
                if failures < self.settings.poison_retries:
                    log.exception("batch of %d failed (%d/%d); retrying in %.1f s (offsets not committed)",
                                  len(records), failures, self.settings.poison_retries, backoff.delay)
                    await backoff.wait()
                    continue
            log.warning("batch of %d failed %d times; isolating the failing record(s)", len(records), failures)
            try:
                result = await self._isolate(records, error, counted_earlier, dead_lettered)
                break
            except Exception:  # e.g. the DLQ itself refuses the record: keep the batch, start over
                log.exception("isolating the failing records failed; retrying the batch in %.1f s", backoff.delay)
                failures = 0
                await backoff.wait()
        METRICS.batch_size.observe(len(records))
        METRICS.batch_seconds.observe(time.perf_counter() - started)
        METRICS.last_batch.set(time.time())
        return result

    async def _attempt(self, records: Sequence[Record], counted_earlier: set[str],
                       dead_lettered: set[Coordinates]) -> BatchResult:
        """:meth:`process`, retried for as long as it fails transiently (a server away); other errors propagate."""
        return await retry_transient(lambda: self.process(records, counted_earlier, dead_lettered), self._backoff(),
                                     f"batch of {len(records)}")

    async def _isolate(self, records: Sequence[Record], error: Exception, counted_earlier: set[str],
                       dead_lettered: set[Coordinates]) -> BatchResult:
        """Bisect a failing batch: halves that succeed are done, halves that fail are split again; a record that
        fails alone is dead-lettered with ``error``, the exception it failed with."""
        if len(records) == 1:
            return await self._dead_letter(records[0], error, dead_lettered)
        result = BatchResult()
        middle = len(records) // 2
        for half in (records[:middle], records[middle:]):
            try:
                part = await self._attempt(half, counted_earlier, dead_lettered)
            except Exception as exc:
                part = await self._isolate(half, exc, counted_earlier, dead_lettered)
            result.add(part)
        return result

    async def _dead_letter(self, record: Record, error: Exception, dead_lettered: set[Coordinates]) -> BatchResult:
        """A record that failed alone: to the DLQ as ``processing_failed``, in bounded attempts. Never raises for a
        refused dead letter (only an outage is waited out): after ``poison_retries`` refusals the envelope is sent
        without the original, and if that is refused too the record is skipped, logged and counted."""
        detail = f"{type(error).__name__}: {error}"[:_MAX_DETAIL_CHARS]
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.error("record %s failed processing alone (%s); sending it to %s", where, detail, self.settings.dlq_topic)
        rejection = PostRejected(PROCESSING_FAILED, detail)
        METRICS.posts.labels("failed").inc()
        for attempt in range(self.settings.poison_retries + 1):
            keep_original = attempt < self.settings.poison_retries
            try:
                await retry_transient(
                    lambda: self._dead_letter_acked(record, rejection, dead_lettered, keep_original=keep_original),
                    self._backoff(), "dead-letter")
                return BatchResult(records=1, failed=1)
            except Exception as exc:  # noqa: BLE001 - refused by the broker: bounded, see the docstring
                refusal = exc
                log.warning("dead letter of %s refused (%d/%d): %r", where, attempt + 1,
                            self.settings.poison_retries + 1, exc)
        METRICS.dlq_undeliverable.inc()
        log.error("record %s SKIPPED: it failed processing (%s) and the broker refused its dead letter %d times "
                  "(last: %r); its offset is committed without a DLQ copy", where, detail,
                  self.settings.poison_retries + 1, refusal)
        return BatchResult(records=1, failed=1)

    async def _dead_letter_acked(self, record: Record, rejection: PostRejected, dead_lettered: set[Coordinates],
                                 *, keep_original: bool = True) -> None:
        pending = await self.send_dead_letter(record, rejection, dead_lettered, keep_original=keep_original)
        if pending is not None:
            await pending

    async def send_dead_letter(self, record: Record, rejection: PostRejected, dead_lettered: set[Coordinates] | None,
                               *, keep_original: bool = True) -> asyncio.Future | None:
        """The one way a record reaches the DLQ. Sends its envelope unless ``dead_lettered`` (the coordinates this
        delivery already dead-lettered) holds it; returns a future that resolves once the broker acknowledged it
        (then the record joins ``dead_lettered`` and ``em_dlq_total{reason}`` counts it), or None if not sent.
        Raises what the producer raises at once (e.g. a record it refuses)."""
        where = (record.topic, record.partition, record.offset)
        if dead_lettered is not None and where in dead_lettered:
            return None
        # without the original (max_bytes=0 truncates it to nothing) it still names the original's size and sha256
        envelope = rejection_envelope(record.value, rejection, topic=record.topic, partition=record.partition,
                                      offset=record.offset, **({} if keep_original else {"max_bytes": 0}))
        pending = await self.send(self.settings.dlq_topic, record.key, envelope)

        async def acked() -> None:
            if pending is not None:
                await pending
            if dead_lettered is not None:
                dead_lettered.add(where)
            METRICS.dlq.labels(rejection.reason).inc()

        task = asyncio.ensure_future(acked())
        task.add_done_callback(_retrieve)  # a failed attempt may never gather it: no "never retrieved" noise
        return task

    # ------------------------------------------------------------------ one attempt

    async def process(self, records: Sequence[Record], counted_earlier: set[str] | None = None,
                      dead_lettered: set[Coordinates] | None = None) -> BatchResult:
        """One attempt at the batch; raises on any failure (Redis outages excepted: the write waits them out).

        ``counted_earlier`` carries, across the attempts at one batch, the ids an attempt counted in Redis before it
        failed, so the retry still reports them as counted (not as duplicates). ``dead_lettered`` carries the
        records whose dead letter an attempt already delivered, so a retry does not send them again. Both are
        updated in place.
        """
        counted_earlier = set() if counted_earlier is None else counted_earlier
        dead_lettered = set() if dead_lettered is None else dead_lettered
        result = BatchResult(records=len(records))
        pending: list[Awaitable[object] | None] = []
        parsed: list[tuple[Record, Post]] = []
        reasons: list[str] = []
        clock = time.perf_counter()
        for record in records:
            try:
                parsed.append((record, check_created_at(
                    parse_post(record.value, record.timestamp_ms, max_bytes=self.settings.max_post_bytes,
                               require_brand=self.brand_matching is None),
                    self.settings)))
            except PostRejected as exc:
                reasons.append(exc.reason)
                pending.append(await self.send_dead_letter(record, exc, dead_lettered))
        result.rejected = len(reasons)
        clock = _lap("parse", clock)
        if parsed and self.brand_matching is not None:  # brand queries tag untagged posts; the unmatched are counted
            parsed, result.unmatched = await self.brand_matching.apply(parsed)
            clock = _lap("brands", clock)
        if parsed:
            classified = await self._classify([post for _, post in parsed])
            clock = time.perf_counter()
            written = await self.store.write_with_retry(classified, self.inference.thresholds)
            METRICS.redis_ok()
            clock = _lap("redis", clock)
            # posts the store refused (too_old, brand_limit: never marked, never counted) go to the DLQ like rejects
            for (record, _), outcome in zip(parsed, written):
                if isinstance(outcome, PostRejected):
                    reasons.append(outcome.reason)
                    pending.append(await self.send_dead_letter(record, outcome, dead_lettered))
            kept = [i for i, outcome in enumerate(written) if not isinstance(outcome, PostRejected)]
            parsed, classified, written = ([rows[i] for i in kept] for rows in (parsed, classified, written))
            result.rejected = len(reasons)
            self._observe_delay([record for (record, _), new in zip(parsed, written) if new])
            if self.priors is not None:  # posts counted now only; never raises (estimates must not fail the batch)
                await self.priors.observe_counted(classified, written)
            fresh = _counted(classified, written, counted_earlier)
            result.counted = sum(fresh)
            result.duplicates = len(fresh) - result.counted
            if self.publish_classified:
                topic = self.settings.classified_topic
                rows = [(item.post.id.encode(), item.to_json_bytes()) for item in classified]
                if self.publish_many is not None:
                    pending.extend(await self.publish_many(topic, rows))
                else:
                    for key, value in rows:
                        pending.append(await self.send(topic, key, value))
        _raise_first(await asyncio.gather(*(f for f in pending if f is not None), return_exceptions=True))
        clock = _lap("produce", clock)
        # alerts last: an alert claims its cooldown when it fires, so nothing that can fail the attempt may follow it
        # (a retry would find the cooldown taken); its own publish waits out a broker outage instead of failing
        if parsed and self.evaluate_alerts:
            result.alerts = await self.alerts.evaluate(_latest_by_brand(classified))
            _lap("alerts", clock)
        METRICS.posts.labels("counted").inc(result.counted)
        METRICS.posts.labels("duplicate").inc(result.duplicates)
        METRICS.posts.labels("rejected").inc(result.rejected)
        METRICS.posts.labels("unmatched").inc(result.unmatched)
        return result

    async def _classify(self, posts: list[Post]) -> list[ClassifiedPost]:
        clock = time.perf_counter()
        proba, inference_s = await self.inference.predict([p.text for p in posts])
        METRICS.inference_seconds.observe(inference_s)
        clock = _lap("model", clock)  # the round trip: queue, pickling both ways, the model itself
        labels, thresholds, version = self.inference.labels, self.inference.thresholds, self.inference.version
        classified = ClassifiedPost.many(posts, proba, labels, thresholds, version)
        _lap("build", clock)
        return classified

    @staticmethod
    def _observe_delay(written: list[Record]) -> None:
        """End-to-end delay of the posts this write counted: not of rejects, duplicates or earlier attempts' posts."""
        written_at_ms = time.time() * 1000
        observe_many(METRICS.delay_seconds, [max(0.0, written_at_ms - record.timestamp_ms) / 1000
                                             for record in written if record.timestamp_ms])


def _counted(classified: list[ClassifiedPost], written: list[bool], counted_earlier: set[str]) -> list[bool]:
    """Per post, whether this batch counted it: written now, or written by an earlier attempt that failed later (its
    first occurrence only, so an id twice in one batch is still one count). Adds the ids written now to
    ``counted_earlier`` at once, before anything after the write can fail."""
    carried = set(counted_earlier)
    fresh = []
    for item, is_new in zip(classified, written):
        post_id = item.post.id
        if is_new:
            counted_earlier.add(post_id)
        elif post_id in carried:
            carried.discard(post_id)
            is_new = True
        fresh.append(is_new)
    return fresh


def _lap(stage: str, since: float) -> float:
    """Observe the seconds since ``since`` as ``stage`` (``em_stage_seconds``); returns now, the next stage's start."""
    now = time.perf_counter()
    METRICS.stage(stage).observe(now - since)
    return now


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _raise_first(outcomes: list) -> None:
    """Every delivery is awaited (none left with an unretrieved error); the first failure fails the attempt."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _latest_by_brand(classified: list[ClassifiedPost]) -> dict[str, int]:
    """Each brand of the batch with its newest ``created_at``: where the alert check looks."""
    latest: dict[str, int] = {}
    for item in classified:
        for brand in item.post.brands:
            latest[brand] = max(latest.get(brand, 0), item.post.created_at)
    return latest
