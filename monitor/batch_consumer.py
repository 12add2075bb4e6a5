"""The posts topic read in micro-batches straight from an aiokafka consumer (``EM_MONITOR_CONSUMER=batch``, the default).

Why: Faust's per-event stream machinery (a message and an event object per record, the conductor, the stream's
per-event iteration, ``take``'s timers, per-event acks) costs ~125-140 µs of CPU per post by itself — more than the
whole ≤ 100 µs per post the worker may spend (``bench/consume_ceiling.py``: a Faust agent that only takes and acks
reads ~5,000 posts/s on 2 shared cores, a bare aiokafka ``getmany`` reader >100,000/s). Faust stays the app: its
producer (``posts.classified``, the DLQ, alerts), topic declaration, the health task, the worker's lifecycle and
signals; this service is one of the app's dependencies, started after Faust's and stopped before them.

Delivery: at-least-once, exactly as the Faust path. A batch's offsets are committed only after its Redis writes and
produced records succeeded (``BatchProcessor.process_until_done``), and batches are committed in the order they were
taken (:class:`monitor.acker.InOrderAcker`), so a committed offset never skips unfinished work. A commit that fails
because the partition moved to another worker (rebalance) is dropped: the new owner reads those records again and
Redis counts each post once (its idempotency marker). Before partitions are revoked, and on SIGTERM, the batches in
hand are finished and committed; then, on SIGTERM, alert deliveries get ``alert_drain_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, InconsistentGroupProtocolError

from monitor.acker import InOrderAcker
from monitor.metrics import METRICS
from monitor.pipeline import BatchProcessor, Record
from monitor.retry import Backoff, retry_transient
from monitor.settings import MonitorSettings

__all__ = ["BatchConsumer"]

log = logging.getLogger(__name__)


class _PendingOffsets:
    """The next offset to commit per partition, raised by each batch as it is acked (in taken order)."""

    def __init__(self):
        self.offsets: dict[TopicPartition, int] = {}
        self.changed = asyncio.Event()

    async def ack(self, offsets: dict[TopicPartition, int]) -> None:  # never suspends (see InOrderAcker._ack)
        for tp, offset in offsets.items():
            if offset > self.offsets.get(tp, -1):
                self.offsets[tp] = offset
        self.changed.set()

    def take(self) -> dict[TopicPartition, int]:
        offsets, self.offsets = self.offsets, {}
        self.changed.clear()
        return offsets


class _SettleOnRevoke(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        # the batches in hand are finished and committed while the partitions are still ours
        await self.owner.settle()

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("posts partitions assigned: %s", sorted(tp.partition for tp in assigned))


class BatchConsumer(mode.Service):
    """Consumes ``settings.posts_topic`` in the Faust app's consumer group id, ``max_batch`` records per batch (a
    partial batch goes ``max_wait`` seconds after its first record), up to ``pipeline_depth`` batches in flight."""

    def __init__(self, app, settings: MonitorSettings, processor: Callable[..., BatchProcessor | None], posts_topic,
                 **kwargs):
        super().__init__(**kwargs)
        self.app, self.settings, self.processor, self.posts_topic = app, settings, processor, posts_topic
        self.consumer: AIOKafkaConsumer | None = None
        self.pending = _PendingOffsets()
        self.acker = None
        self.tasks: list[asyncio.Task] = []

    async def on_start(self) -> None:
        settings, app = self.settings, self.app
        await self.posts_topic.maybe_declare()  # created with topic_partitions partitions, as Faust's agent would
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.broker_host_port(), group_id=settings.group_id,
            client_id=f"{settings.group_id}-posts", enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            # join the group in seconds rather than minutes (docs/platform.md), as the Faust consumer does
            session_timeout_ms=10_000, rebalance_timeout_ms=10_000, heartbeat_interval_ms=1_000,
            # as Faust's consumer: a batch held up by an outage may keep getmany waiting for long without the
            # worker leaving the group (aiokafka's own default is 5 minutes)
            max_poll_interval_ms=int(app.conf.broker_max_poll_interval * 1000),
            # Faust's own assignor (a separate instance): the group's protocol stays the one Faust-agent workers use,
            # so workers of either EM_MONITOR_CONSUMER (and of earlier versions) share one group — tansu never lets a
            # group that was formed with Faust's protocol switch to another (InconsistentGroupProtocolError)
            partition_assignment_strategy=(app.conf.PartitionAssignor(app, replicas=app.conf.table_standby_replicas),))
        await self.consumer.start()
        self.consumer.subscribe([settings.posts_topic], listener=_SettleOnRevoke(self))
        self.slots = asyncio.Semaphore(settings.pipeline_depth)
        self.acker = InOrderAcker(self.pending, self.slots)
        self.tasks = [asyncio.ensure_future(self._consume()), asyncio.ensure_future(self._commit_when_acked())]
        gc.freeze()  # what Faust and the consumers built while starting lives as long as they do (see monitor/cli.py)

    async def on_stop(self) -> None:
        """SIGTERM: stop taking batches, finish and commit those in hand, leave the group, drain alert deliveries."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.acker is not None:
            await self.acker.finish()
        if self.consumer is not None:
            await self._commit()
            await self.consumer.stop()
        processor = self.processor(create=False)
        if processor is not None:  # then deliver the alerts still in flight (bounded: alert_drain_timeout)
            await processor.alerts.drain()

    async def settle(self) -> None:
        """Wait until every batch taken so far is finished and acked, then commit."""
        while self.acker.current is not None or not self.acker.queue.empty():
            if self.acker.task.done():  # the acker failed: nothing more will be acked
                break
            await asyncio.sleep(0.01)
        await self._commit()

    async def _take(self) -> list:
        """Up to ``max_batch`` records: waits for the first, then at most ``max_wait`` seconds for the batch to fill."""
        consumer, settings = self.consumer, self.settings
        rows: list = []
        deadline = None
        while len(rows) < settings.max_batch:
            timeout = 1.0 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                fetched = await consumer.getmany(timeout_ms=int(timeout * 1000),
                                                 max_records=settings.max_batch - len(rows))
            except InconsistentGroupProtocolError:
                if rows:  # never drop records in hand (a later commit would pass them): process them first
                    break
                raise
            for part in fetched.values():
                rows.extend(part)
            if rows and deadline is None:
                deadline = time.monotonic() + settings.max_wait
        return rows

    async def _consume(self) -> None:
        consume = METRICS.stage("consume")
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        try:
            while True:
                waiting_since = time.perf_counter()
                try:
                    rows = await self._take()
                except InconsistentGroupProtocolError as exc:
                    # another client reads the posts in this group with another assignment protocol: joined once
                    # it has gone (records in hand were returned by _take first, never dropped)
                    log.warning("cannot join group %s (%r): another member uses another assignment protocol; "
                                "retrying in %.1f s", self.settings.group_id, exc, backoff.delay)
                    await backoff.wait()
                    continue
                backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
                records = [Record(r.value, r.timestamp, r.topic, r.partition, r.offset, r.key) for r in rows]
                last: dict[tuple[str, int], int] = {}
                for r in rows:  # the next offset to read per partition once this batch is done
                    last[r.topic, r.partition] = r.offset + 1
                offsets = {TopicPartition(topic, partition): offset for (topic, partition), offset in last.items()}
                # from asking for a batch to holding its records (includes waiting for posts when the topic is idle)
                consume.observe(time.perf_counter() - waiting_since)
                await self.slots.acquire()
                self.acker.add([offsets], asyncio.ensure_future(self.processor().process_until_done(records)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an unexpected consumer error: stop the worker rather than idle unseen
            log.exception("posts consumer failed")
            await self.crash(exc)

    async def _commit_when_acked(self) -> None:
        while True:
            await self.pending.changed.wait()
            await self._commit()

    async def _commit(self) -> None:
        offsets = self.pending.take()
        if not offsets:
            return
        assigned = self.consumer.assignment()
        lost = {tp: o for tp, o in offsets.items() if tp not in assigned}
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if lost:  # their new owner reads these records again (Redis counts each post once)
            log.warning("not committing offsets of partitions no longer assigned: %s", lost)
        if not offsets:
            return
        started = time.perf_counter()
        try:
            await retry_transient(lambda: self.consumer.commit(offsets),
                                  Backoff(self.settings.retry_initial_s, self.settings.retry_max_s), "commit")
        except (CommitFailedError, IllegalStateError) as exc:  # the group moved on: redelivered, counted once
            log.warning("offset commit dropped (%r): those records will be read again", exc)
        except BaseException:  # cancelled mid-commit (SIGTERM): the offsets stay pending for the final commit
            await self.pending.ack(offsets)
            raise
        finally:
            METRICS.stage("commit").observe(time.perf_counter() - started)
