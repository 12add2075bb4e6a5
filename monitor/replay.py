"""Replay / backfill the posts topic through the same pipeline as the worker, in its own consumer group.

* ``fill``: reprocess the range; posts already counted are skipped by the idempotency marker, so running it twice
  (or while the worker runs) never double counts.
* ``recompute``: first read the range to learn its post ids and its ``created_at`` span, then clear that span (raw
  TimeSeries samples — compactions are recalculated by Redis — recent posts, and the ids' markers), then reprocess,
  e.g. with a new model or thresholds. Everything counted in that span is replaced, so replay the whole span.

Broker faults handled (docs/platform.md): ``end_offsets()`` is wrong on tansu, so the end of each partition is the
fetch high-water mark; ``offsets_for_times()`` for a time past the end answers offset 0 with timestamp -1, which
is read as "no such offset". Measured here too: tansu answers ``offsets_for_times()`` per record *batch* (offset 0
for any time inside the first batch), so its offset is used only as a lower bound to seek to, and every record is
then filtered by its own timestamp against ``[from, to]``; the read always ends at the high-water mark.

Delivery: each batch goes through :meth:`monitor.pipeline.BatchProcessor.process_until_done`, like the worker's:
Redis or broker unreachable (a ``--publish`` send, the offset commit) is retried with back-off until it is back,
a record that fails processing even alone is isolated (the rest of the batch is counted). Offsets of the replay
group are committed after each batch. Alerts are not evaluated (history is not news); records go to
``posts.classified`` / the DLQ only with ``--publish`` (at-least-once: a retried batch may publish a post twice).
Without ``--publish`` a record that fails processing is only logged and counted as failed in the summary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from monitor.inference import load_inference
from monitor.pipeline import BatchProcessor, Record
from monitor.post import PostRejected, to_epoch_ms, parse_post
from monitor.retry import Backoff, retry_transient
from monitor.settings import MonitorSettings
from monitor.store import RedisStore

__all__ = ["ReplayRange", "ReplaySummary", "high_water_marks", "run_replay"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayRange:
    from_time_ms: int | None = None
    from_offset: int | None = None
    to_time_ms: int | None = None

    @classmethod
    def parse(cls, from_time=None, from_offset=None, to_time=None) -> "ReplayRange":
        return cls(None if from_time is None else to_epoch_ms(from_time), from_offset,
                   None if to_time is None else to_epoch_ms(to_time))


@dataclass
class ReplaySummary:
    mode: str
    records: int = 0
    counted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    unmatched: int = 0
    cleared_markers: int = 0
    seconds: float = 0.0
    ranges: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"replay ({self.mode}): {self.records} records, {self.counted} counted, {self.duplicates} already "
                f"counted, {self.rejected} rejected, {self.failed} failed, {self.unmatched} matched no brand, "
                f"{self.cleared_markers} markers cleared, "
                f"{self.seconds:.1f} s")


async def high_water_marks(consumer: AIOKafkaConsumer, tps: list[TopicPartition], timeout: float = 10.0) -> dict:
    """Each partition's end from a real fetch response (tansu's ListOffsets end is wrong)."""
    marks: dict[TopicPartition, int] = {}
    await consumer.seek_to_beginning(*tps)
    deadline = time.monotonic() + timeout
    while len(marks) < len(tps) and time.monotonic() < deadline:
        await consumer.getmany(*[tp for tp in tps if tp not in marks], timeout_ms=300, max_records=1)
        for tp in tps:
            mark = consumer.highwater(tp)
            if mark is not None:
                marks[tp] = mark
    missing = [tp for tp in tps if tp not in marks]
    if missing:
        raise RuntimeError(f"no fetch high-water mark for {missing} within {timeout:.0f} s")
    return marks


async def _offsets_at(consumer, tps, when_ms: int, ends: dict) -> dict:
    """First offset at or after ``when_ms`` per partition; the end when there is none (incl. tansu's 0/-1)."""
    found = await consumer.offsets_for_times({tp: when_ms for tp in tps})
    result = {}
    for tp in tps:
        hit = found.get(tp)
        none = hit is None or (hit.offset == 0 and hit.timestamp == -1) or hit.offset < 0
        result[tp] = ends[tp] if none else min(hit.offset, ends[tp])
    return result


async def _plan(consumer, settings: MonitorSettings, span: ReplayRange) -> tuple[dict, dict]:
    topic = settings.posts_topic
    await consumer.topics()  # refresh metadata so the topic's partitions are known
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise RuntimeError(f"topic {topic!r} does not exist on {settings.broker_url}")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends = await high_water_marks(consumer, tps)
    if span.from_time_ms is not None:
        starts = await _offsets_at(consumer, tps, span.from_time_ms, ends)
    elif span.from_offset is not None:
        starts = {tp: max(0, min(span.from_offset, ends[tp])) for tp in tps}
    else:
        begin = await consumer.beginning_offsets(tps)
        starts = {tp: min(begin.get(tp, 0), ends[tp]) for tp in tps}
    return starts, ends


async def _read(consumer, starts: dict, stops: dict, batch: int, span: ReplayRange, skipped: list | None = None):
    """Yield lists of records (at most ``batch``) from every partition's ``[start, stop)`` whose timestamps fall in
    the span's ``[from_time, to_time]``; ``skipped`` (a one-item list) counts the rest."""
    low = span.from_time_ms if span.from_time_ms is not None else -1
    high = span.to_time_ms if span.to_time_ms is not None else float("inf")
    active = {tp for tp in starts if stops[tp] > starts[tp]}
    for tp in active:
        consumer.seek(tp, starts[tp])
    while active:
        fetched = await consumer.getmany(*active, timeout_ms=1000, max_records=batch)
        rows = []
        for tp, records in fetched.items():
            for record in records:
                if record.offset >= stops[tp]:
                    continue
                if low <= record.timestamp <= high:
                    rows.append(record)
                elif skipped is not None:
                    skipped[0] += 1
            if await consumer.position(tp) >= stops[tp]:
                active.discard(tp)
        if rows:
            yield rows


async def run_replay(settings: MonitorSettings, span: ReplayRange, *, mode: str = "fill", group_id: str | None = None,
                     publish: bool = False, progress: bool = True, inference=None) -> ReplaySummary:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    summary = ReplaySummary(mode)
    inference = inference or load_inference(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker_host_port(), enable_auto_commit=False,
                                group_id=group_id or f"{settings.group_id}-replay", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_wait_ms=settings.fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker_host_port(), linger_ms=5) if publish else None
    store = RedisStore(settings, inference.labels)
    await consumer.start()
    if producer:
        await producer.start()
    try:
        async def send(topic: str, key: bytes | None, value: bytes):
            return await producer.send(topic, value, key=key) if producer else None

        processor = BatchProcessor(settings, inference, store, send, publish_classified=publish,
                                   evaluate_alerts=False)
        starts, stops = await _plan(consumer, settings, span)
        summary.ranges = {f"{tp.topic}[{tp.partition}]": [starts[tp], stops[tp]] for tp in starts}
        total = sum(stops[tp] - starts[tp] for tp in starts)
        if mode == "recompute" and total:
            ids, lo, hi = [], None, None
            async for rows in _read(consumer, starts, stops, settings.max_batch * 8, span):
                for record in rows:
                    try:
                        post = parse_post(record.value, record.timestamp, max_bytes=settings.max_post_bytes,
                                          require_brand=settings.brand_matching == "off")
                    except PostRejected:
                        continue
                    ids.append(post.id)
                    lo = post.created_at if lo is None else min(lo, post.created_at)
                    hi = post.created_at if hi is None else max(hi, post.created_at)
            if ids:
                summary.cleared_markers = await store.clear(lo, hi, ids)
        skipped = [0]
        with tqdm(total=total, desc=f"replay {mode}", unit="post", disable=not progress) as bar:
            async for rows in _read(consumer, starts, stops, settings.max_batch, span, skipped):
                records = [Record(r.value, r.timestamp, r.topic, r.partition, r.offset, r.key) for r in rows]
                result = await processor.process_until_done(records)
                summary.records += result.records
                summary.counted += result.counted
                summary.duplicates += result.duplicates
                summary.rejected += result.rejected
                summary.failed += result.failed
                summary.unmatched += result.unmatched
                commit = {}
                for r in rows:
                    tp = TopicPartition(r.topic, r.partition)
                    commit[tp] = max(commit.get(tp, 0), r.offset + 1)
                await retry_transient(lambda: consumer.commit(commit),
                                      Backoff(settings.redis_retry_initial, settings.redis_retry_max), "commit")
                bar.update(len(rows) + skipped[0])
                skipped[0] = 0
    finally:
        await consumer.stop()
        if producer:
            await producer.stop()
        await store.close()
    summary.seconds = time.perf_counter() - started
    return summary
