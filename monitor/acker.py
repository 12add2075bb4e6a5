"""In-order acking of pipelined batches: up to ``pipeline_depth`` batches are in flight, each acked as soon as it is
done but never before a batch taken earlier, so a committed offset never skips unfinished work. Used by both consumer
modes of the worker (:mod:`monitor.app`'s Faust agent and :mod:`monitor.batch_consumer`)."""

from __future__ import annotations

import asyncio
import time

from monitor.metrics import METRICS

__all__ = ["InOrderAcker"]


class InOrderAcker:
    """Acks each batch's events as soon as its processing is done, in the order the batches were taken (a batch is
    never acked before an earlier one, so a committed offset never skips unfinished work).

    ``stream``: anything with ``async ack(item)`` that acks synchronously inside (a Faust stream acks events;
    :class:`monitor.batch_consumer.BatchConsumer` passes its pending offsets). ``slots``: released once per batch
    acked, bounding the batches in flight.
    """

    def __init__(self, stream, slots: asyncio.Semaphore):
        self.stream, self.slots = stream, slots
        self.queue: asyncio.Queue = asyncio.Queue()
        self.current = None
        self.task = asyncio.ensure_future(self._run())

    def add(self, events, work: asyncio.Future) -> None:
        if self.task.done():  # the acker itself failed: surface it instead of queueing work nobody acks
            self.task.result()
        self.queue.put_nowait((events, work))

    async def _ack(self, events) -> None:
        started = time.perf_counter()
        for event in events:
            await self.stream.ack(event)  # synchronous inside: never suspends, so never half done by a cancel
        self.slots.release()
        METRICS.stage("ack").observe(time.perf_counter() - started)

    async def _run(self) -> None:
        while True:
            self.current = await self.queue.get()
            events, work = self.current
            await asyncio.shield(work)
            await self._ack(events)
            self.current = None

    async def finish(self) -> None:
        """Stop acking in the background, then wait for every batch in hand and ack it."""
        self.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        held = [self.current] if self.current else []
        while not self.queue.empty():
            held.append(self.queue.get_nowait())
        for events, work in held:
            await work
            await self._ack(events)

    def stop(self) -> None:
        self.task.cancel()
