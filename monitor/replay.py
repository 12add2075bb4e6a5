"""Replay / backfill the posts topic through the same pipeline as the worker, in its own consumer group.

* ``fill``: reprocess the range; posts already counted are skipped by the idempotency marker, so running it twice
  (or while the worker runs) never double counts. Markers live ``EM_MONITOR_SEEN_TTL_MS`` from when a post was
  counted, which is after its record was written: a record older than that (the *marker horizon*, less
  ``max_future_ms`` for clock skew) may have lost its marker, so fill refuses a range holding one
  (:class:`ReplayRefused`, naming ``recompute``) before counting anything.
* ``recompute``: read the range to learn its posts' ``created_at`` span, widen it to whole buckets of every tier,
  then — while a fence in Redis makes workers wait with posts inside that span — read the *whole topic* for every
  post whose ``created_at`` lies in the span (whatever its record time), clear those posts' brands' samples in
  every tier in that span, their recent posts and their markers, and count them again (e.g. with a new model or
  thresholds). It refuses before clearing anything when Redis holds more posts of a brand in the span than the topic
  still has (they would be lost), and stops before touching markers when Redis refuses a clear. Racing a live
  worker: a post counted by the worker before the fence is in the topic, so it is cleared and recounted; one the
  worker writes later waits for the fence and is then counted once (already counted by the recompute, or not).

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from monitor.inference import load_inference
from monitor.pipeline import BatchProcessor, BatchResult, Record
from monitor.post import PostRejected, to_epoch_ms, parse_post
from monitor.retry import Backoff, retry_transient
from monitor.settings import MonitorSettings
from monitor.store import RedisStore
from monitor.timepolicy import check_created_at

__all__ = ["ReplayRange", "ReplayRefused", "ReplaySummary", "high_water_marks", "run_replay"]

log = logging.getLogger(__name__)


class ReplayRefused(RuntimeError):
    """The replay would count wrongly (see the module docstring); nothing was counted or cleared."""


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
class ReplaySummary(BatchResult):
    """The batches' counters added up (:meth:`BatchResult.add`), plus what only a replay has."""

    mode: str = "fill"
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


async def _read(consumer, starts: dict, stops: dict, batch: int,
                span: ReplayRange) -> AsyncIterator[tuple[list, int]]:
    """Yield ``(records, passed_over)`` from every partition's ``[start, stop)``: the records (at most ``batch``)
    whose timestamps fall in the span's ``[from_time, to_time]``, and how many of that fetch fell outside it."""
    low = span.from_time_ms if span.from_time_ms is not None else -1
    high = span.to_time_ms if span.to_time_ms is not None else float("inf")
    active = {tp for tp in starts if stops[tp] > starts[tp]}
    for tp in active:
        consumer.seek(tp, starts[tp])
    while active:
        fetched = await consumer.getmany(*active, timeout_ms=1000, max_records=batch)
        rows, passed_over = [], 0
        for tp, records in fetched.items():
            for record in records:
                if record.offset >= stops[tp]:
                    continue
                if low <= record.timestamp <= high:
                    rows.append(record)
                else:
                    passed_over += 1
            if await consumer.position(tp) >= stops[tp]:
                active.discard(tp)
        if rows or passed_over:
            yield rows, passed_over


def _valid_post(record, settings: MonitorSettings):
    """The record's post when it passes parsing and the time policy, else None (the pipeline dead-letters it)."""
    try:
        return check_created_at(parse_post(record.value, record.timestamp, max_bytes=settings.max_post_bytes,
                                           require_brand=settings.brand_matching == "off"), settings)
    except PostRejected:
        return None


def _created_in(record, span: tuple[int, int], settings: MonitorSettings) -> bool:
    post = _valid_post(record, settings)
    return post is not None and span[0] <= post.created_at <= span[1]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


async def _check_marker_horizon(consumer, starts, stops, span: ReplayRange, settings: MonitorSettings) -> None:
    """Fill: refuse a range holding a record older than the marker horizon (its post may have been counted and its
    marker expired since: filling it would count it twice)."""
    horizon = int(time.time() * 1000) - settings.seen_ttl_ms + settings.max_future_ms
    oldest = None
    async for rows, _ in _read(consumer, starts, stops, settings.max_batch * 8, span):
        for record in rows:
            if oldest is None or record.timestamp < oldest:
                oldest = record.timestamp
    if oldest is not None and oldest < horizon:
        raise ReplayRefused(
            f"replay fill refused: the range holds records from {_iso(max(oldest, 0))}, older than the marker horizon "
            f"{_iso(horizon)} (EM_MONITOR_SEEN_TTL_MS = {settings.seen_ttl_ms} ms): their posts may have been counted "
            f"and their markers expired, so fill could count them twice. Use --mode recompute for that range, or "
            f"fill from --from-time {horizon}"
        )


async def _prepare_recompute(consumer, store: RedisStore, starts, stops, span: ReplayRange,
                             settings: MonitorSettings, summary: ReplaySummary, matching=None):
    """Recompute, before any recount: learn the created_at span of the range's posts, widen it to whole tier buckets,
    fence it, find every post of the topic inside it, check the topic still holds all that Redis counted there,
    clear it. Returns (span, starts, stops) of the recount: the whole topic up to its end after the fence was set.

    ``matching`` (the pipeline's brand matching, None when off) attributes untagged posts to brands by the current
    registry, as the recount will."""
    lo = hi = None
    async for rows, _ in _read(consumer, starts, stops, settings.max_batch * 8, span):
        for record in rows:
            post = _valid_post(record, settings)
            if post is not None:
                lo = post.created_at if lo is None else min(lo, post.created_at)
                hi = post.created_at if hi is None else max(hi, post.created_at)
    if lo is None:
        return None, starts, stops
    keep = store.whole_buckets(lo, hi)
    await store.hold_fence(*keep)
    # the end of every partition *after* the fence: a post the worker counted before the fence is below it
    begin, ends = await _plan(consumer, settings, ReplayRange())
    ids: set[str] = set()
    per_brand: dict[str, set[str]] = {}
    async for rows, _ in _read(consumer, begin, ends, settings.max_batch * 8, ReplayRange()):
        await store.hold_fence(*keep)  # refreshed while a long topic is read: it expires only if this process dies
        for record in rows:
            post = _valid_post(record, settings)
            if post is not None and keep[0] <= post.created_at <= keep[1]:
                ids.add(post.id)
                for brand in (await matching.brands_of(post) if matching is not None else post.brands):
                    per_brand.setdefault(brand, set()).add(post.id)
    for brand, posts in sorted(per_brand.items()):
        counted = await store.counted_in_span(brand, *keep)
        if counted > len(posts):
            raise ReplayRefused(
                f"replay recompute refused: Redis counts {counted} posts of brand {brand!r} created in "
                f"[{_iso(keep[0])}, {_iso(keep[1])}] but the topic holds only {len(posts)} (the rest expired from "
                "Kafka?): clearing would lose them. Nothing was cleared"
            )
    summary.cleared_markers = await store.clear(keep[0], keep[1], per_brand, ids)
    log.info("recompute: cleared %d brands in [%s, %s], %d posts to recount", len(per_brand), _iso(keep[0]),
             _iso(keep[1]), len(ids))
    return keep, begin, ends


async def run_replay(settings: MonitorSettings, span: ReplayRange, *, mode: str = "fill", group_id: str | None = None,
                     publish: bool = False, progress: bool = True, inference=None) -> ReplaySummary:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    summary = ReplaySummary(mode=mode)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker_host_port(), enable_auto_commit=False,
                                group_id=group_id or f"{settings.group_id}-replay", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_wait_ms=settings.fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker_host_port(), linger_ms=5) if publish else None
    store = started_producer = None
    await consumer.start()
    try:
        starts, stops = await _plan(consumer, settings, span)
        summary.ranges = {f"{tp.topic}[{tp.partition}]": [starts[tp], stops[tp]] for tp in starts}
        total = sum(stops[tp] - starts[tp] for tp in starts)
        keep = None  # recompute: the created_at span it recounts (records are chosen by it, not by record time)
        if mode == "fill" and total:  # before loading the model: a refusal is immediate
            await _check_marker_horizon(consumer, starts, stops, span, settings)
        inference = inference or load_inference(settings)
        store = RedisStore(settings, inference.labels)
        if producer:
            await producer.start()
            started_producer = producer

        async def send(topic: str, key: bytes | None, value: bytes):
            return await producer.send(topic, value, key=key) if producer else None

        processor = BatchProcessor(settings, inference, store, send, publish_classified=publish,
                                   evaluate_alerts=False)
        if mode == "recompute" and total:
            keep, starts, stops = await _prepare_recompute(consumer, store, starts, stops, span, settings, summary,
                                                           processor.brand_matching)
            span = ReplayRange()
            total = sum(stops[tp] - starts[tp] for tp in starts) if keep else 0
            if not keep:
                starts = stops
        with tqdm(total=total, desc=f"replay {mode}", unit="post", disable=not progress) as bar:
            async for rows, passed_over in _read(consumer, starts, stops, settings.max_batch, span):
                if keep is not None:
                    chosen = [r for r in rows if _created_in(r, keep, settings)]
                    passed_over += len(rows) - len(chosen)
                    rows = chosen
                    await store.hold_fence(*keep)  # refreshed: it expires only if this process dies
                records = [Record(r.value, r.timestamp, r.topic, r.partition, r.offset, r.key) for r in rows]
                result = await processor.process_until_done(records) if records else None
                if result is not None:
                    summary.add(result)
                    commit = {}
                    for r in rows:
                        tp = TopicPartition(r.topic, r.partition)
                        commit[tp] = max(commit.get(tp, 0), r.offset + 1)
                    await retry_transient(lambda: consumer.commit(commit),
                                          Backoff(settings.retry_initial_s, settings.retry_max_s), "commit")
                bar.update(len(rows) + passed_over)
        if keep is not None:
            await store.release_fence()
    finally:
        if mode == "recompute" and store is not None:
            try:
                await store.release_fence()
            except Exception:  # Redis away: the fence expires by itself
                log.warning("could not release the recompute fence; it expires in 2 minutes")
        await consumer.stop()
        if started_producer:
            await started_producer.stop()
        if store is not None:
            await store.close()
    summary.seconds = time.perf_counter() - started
    return summary
