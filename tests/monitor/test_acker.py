"""Pure logic of the worker's pipelined acking (``monitor.acker.InOrderAcker``): batches finish in any order, their
events are acked in the order the batches were taken, and shutting down acks every batch in hand exactly once.
The worker itself (pipeline_depth 2 by default) runs in the end-to-end, kill -9 and SIGTERM tests."""

from __future__ import annotations

import asyncio

from monitor.acker import InOrderAcker


class RecordingStream:
    """Stands in for a Faust stream: only ``ack`` is used."""

    def __init__(self):
        self.acked: list[str] = []

    async def ack(self, event: str) -> bool:
        self.acked.append(event)
        return True


def test_out_of_order_completion_is_acked_in_taken_order():
    async def run() -> list[list[str]]:
        stream, slots = RecordingStream(), asyncio.Semaphore(3)
        acker = InOrderAcker(stream, slots)
        gates = [asyncio.Event() for _ in range(3)]

        async def work(i: int) -> None:
            await gates[i].wait()

        for i in range(3):
            await slots.acquire()
            acker.add([f"b{i}-e0", f"b{i}-e1"], asyncio.ensure_future(work(i)))
        seen = []
        gates[2].set()  # the newest batch finishes first: nothing may be acked yet
        await asyncio.sleep(0.01)
        seen.append(list(stream.acked))
        gates[0].set()
        await asyncio.sleep(0.01)
        seen.append(list(stream.acked))
        gates[1].set()
        await asyncio.sleep(0.01)
        seen.append(list(stream.acked))
        assert slots._value == 3  # every slot given back once its batch was acked
        await acker.finish()
        return seen

    seen = asyncio.run(run())
    assert seen[0] == []
    assert seen[1] == ["b0-e0", "b0-e1"]
    assert seen[2] == ["b0-e0", "b0-e1", "b1-e0", "b1-e1", "b2-e0", "b2-e1"]


def test_finish_waits_for_every_batch_in_hand_and_acks_each_once():
    async def run() -> tuple[list[str], list[str]]:
        stream, slots = RecordingStream(), asyncio.Semaphore(2)
        acker = InOrderAcker(stream, slots)
        done: list[str] = []

        async def work(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            done.append(name)

        for name, seconds in (("first", 0.05), ("second", 0.01)):
            await slots.acquire()
            acker.add([name], asyncio.ensure_future(work(name, seconds)))
        await asyncio.sleep(0)  # the background acker is now waiting on the first batch
        await acker.finish()  # as on SIGTERM: both batches finish and are acked, in order
        await asyncio.sleep(0.02)
        return done, stream.acked

    done, acked = asyncio.run(run())
    assert sorted(done) == ["first", "second"]
    assert acked == ["first", "second"]
