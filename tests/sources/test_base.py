"""The shared runner's pure logic: the checkpoint moves only over acknowledged items, in stream order."""

from __future__ import annotations

import asyncio

import pytest

from emotion_monitor.sources.base import AckTracker, DeliveryFailed


def test_checkpoint_moves_only_over_items_acknowledged_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        tracker = AckTracker()
        first, second, third = loop.create_future(), loop.create_future(), loop.create_future()
        tracker.add(10, first)
        tracker.add(11, None)  # a skipped event
        tracker.add(12, second)
        tracker.add(None, None)  # a frame without a position
        tracker.add(13, third)
        assert tracker.advance() is None
        second.set_result(None)  # acknowledged out of order: 12 must wait for 10
        assert tracker.advance() is None
        first.set_result(None)
        assert tracker.advance() == 12 and tracker.acked_posts == 2 and len(tracker) == 1
        third.set_exception(RuntimeError("broker said no"))
        with pytest.raises(DeliveryFailed, match="broker said no"):
            tracker.advance()
        assert tracker.acked_position == 12 and len(tracker) == 0  # resume from the last acknowledged position

    asyncio.run(main())


def test_partition_by_key_is_deterministic_and_spreads_ids():
    from emotion_monitor.sources.base import partition_by_key

    ids = [f"at://did:plc:x/app.bsky.feed.post/{i}".encode() for i in range(400)]
    first = [partition_by_key(key, [0, 1, 2, 3], [0, 1, 2, 3]) for key in ids]
    assert first == [partition_by_key(key, [0, 1, 2, 3], [0, 1]) for key in ids]  # a replay lands where it did
    assert all(60 <= first.count(p) <= 140 for p in range(4))
