"""Pure logic of ``monitor.batch_consumer``: how a micro-batch is taken from ``getmany`` and which offsets a commit
carries. The consumer itself runs in every real-worker test (it is the default ``EM_MONITOR_CONSUMER``): the
end-to-end, kill -9 (two workers, rebalance), SIGTERM, Redis outage and batched-publish tests."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition

from monitor.batch_consumer import BatchConsumer, _PendingOffsets
from monitor.settings import MonitorSettings


class ScriptedConsumer:
    """Stands in for an ``AIOKafkaConsumer``: ``getmany`` hands out the scripted fetches, one per call (an empty
    fetch after waiting its timeout), and records the ``max_records`` asked for."""

    def __init__(self, fetches: list[int], per_fetch_delay: float = 0.0):
        self.fetches, self.delay, self.asked, self.offset = list(fetches), per_fetch_delay, [], 0

    async def getmany(self, timeout_ms: int, max_records: int):
        self.asked.append(max_records)
        if not self.fetches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        await asyncio.sleep(self.delay)
        n = min(self.fetches.pop(0), max_records)
        rows = list(range(self.offset, self.offset + n))
        self.offset += n
        return {TopicPartition("posts", 0): rows} if rows else {}


def taker(consumer, max_batch: int, max_wait: float) -> BatchConsumer:
    service = BatchConsumer(None, MonitorSettings(max_batch=max_batch, max_wait=max_wait), lambda: None, None)
    service.consumer = consumer
    return service


def test_a_batch_fills_across_fetches_and_never_exceeds_max_batch():
    consumer = ScriptedConsumer([100, 100, 100, 100])
    rows = asyncio.run(taker(consumer, 256, 5.0)._take())
    assert rows == list(range(256))
    # asks only for what the batch still lacks (aiokafka keeps the rest of its fetch for the next batch)
    assert consumer.asked == [256, 156, 56]


def test_a_partial_batch_goes_max_wait_after_its_first_record():
    consumer = ScriptedConsumer([0, 0, 10], per_fetch_delay=0.01)  # idle first: waiting for a first record is free
    started = time.monotonic()
    rows = asyncio.run(taker(consumer, 256, 0.2)._take())
    waited = time.monotonic() - started
    assert rows == list(range(10))
    assert 0.2 <= waited < 1.0  # the batch waited max_wait for more, then went


def test_pending_offsets_keep_the_highest_per_partition_and_are_taken_once():
    async def run():
        pending = _PendingOffsets()
        a, b = TopicPartition("posts", 0), TopicPartition("posts", 1)
        await pending.ack({a: 10, b: 5})
        await pending.ack({a: 7})  # never moves a partition back
        assert pending.changed.is_set()
        first = pending.take()
        assert not pending.changed.is_set()
        return first, pending.take()

    first, second = asyncio.run(run())
    assert first == {TopicPartition("posts", 0): 10, TopicPartition("posts", 1): 5}
    assert second == {}
