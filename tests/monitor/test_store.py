"""The Redis sink against a real Redis with TimeSeries: one atomic script call per batch, samples summed per series and
raw bucket, each post counted once, and series recreated (labels included) when Redis lost them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from monitor import schema
from monitor.post import Post
from monitor.settings import MonitorSettings
from monitor.store import ClassifiedPost, RedisStore

pytestmark = pytest.mark.timeout(60)
EMOTIONS = ["anger", "joy", "neutral"]
THRESHOLDS = np.array([0.5, 0.4, 0.3])


def item(post_id: str, brands: list[str], created_at: int, scores: list[float]) -> ClassifiedPost:
    post = Post(id=post_id, brands=brands, text=f"text {post_id}", created_at=created_at)
    return ClassifiedPost.from_probabilities(post, scores, EMOTIONS, THRESHOLDS, "v1")


def write(redis_url: str, batches: list[list[ClassifiedPost]], between=None, **settings) -> list[list[bool]]:
    async def run() -> list[list[bool]]:
        store = RedisStore(MonitorSettings(redis_url=redis_url, **settings), EMOTIONS)
        try:
            fresh = []
            for i, batch in enumerate(batches):
                if between and i:
                    await between(store)
                fresh.append(await store.write(batch, THRESHOLDS))
            return fresh
        finally:
            await store.close()

    return asyncio.run(run())


def samples(client, brand: str, emotion: str, metric: str) -> list[tuple[int, float]]:
    return [(int(ts), float(v)) for ts, v in client.ts().range(schema.series_key(brand, emotion, metric), "-", "+")]


def test_batch_is_summed_per_bucket_and_counted_once(redis_server, redis_client):
    batch = [
        item("a", ["acme"], 10_100, [0.9, 0.1, 0.2]),
        item("b", ["acme", "globex"], 10_900, [0.6, 0.5, 0.1]),
        item("a", ["acme"], 10_100, [0.9, 0.1, 0.2]),  # redelivered inside the same batch
        item("c", ["acme"], 11_050, [0.1, 0.2, 0.7]),  # the next 1 s bucket
    ]
    fresh = write(redis_server.url, [batch, batch[:2]])
    assert fresh == [[True, True, False, True], [False, False]]

    assert samples(redis_client, "acme", "_all", "posts") == [(10_000, 2.0), (11_000, 1.0)]
    assert samples(redis_client, "acme", "anger", "count") == [(10_000, 2.0)]
    assert samples(redis_client, "acme", "joy", "count") == [(10_000, 1.0)]
    assert samples(redis_client, "acme", "neutral", "count") == [(11_000, 1.0)]
    score = samples(redis_client, "acme", "anger", "score")
    assert [ts for ts, _ in score] == [10_000, 11_000]
    assert [v for _, v in score] == pytest.approx([1.5, 0.1])
    assert samples(redis_client, "globex", "_all", "posts") == [(10_000, 1.0)]
    assert samples(redis_client, "globex", "anger", "count") == [(10_000, 1.0)]
    assert redis_client.smembers(schema.BRANDS_KEY) == {"acme", "globex"}
    recent = redis_client.zrange(schema.posts_key("acme"), 0, -1, withscores=True)
    assert [(body.split('"id":"')[1][0], ts) for body, ts in recent] == [("a", 10_100), ("b", 10_900), ("c", 11_050)]
    # the 1m / 1h tiers are written by the same call (no compaction rules), so their open bucket is readable at once
    assert redis_client.ts().info(schema.series_key("acme", "_all", "posts")).rules in ([], {})
    for tier in ("1m", "1h"):
        key = schema.series_key("acme", "anger", "count", tier)
        assert [(int(t), float(v)) for t, v in redis_client.ts().range(key, "-", "+")] == [(0, 2.0)]


def test_bucket_of_one_ms_keeps_each_posts_timestamp(redis_server, redis_client):
    write(redis_server.url, [[item("a", ["acme"], 10_100, [0.9, 0.1, 0.2]),
                              item("b", ["acme"], 10_101, [0.9, 0.1, 0.2])]], raw_bucket_ms=1)
    assert samples(redis_client, "acme", "anger", "count") == [(10_100, 1.0), (10_101, 1.0)]


def test_series_lost_by_redis_are_recreated_with_labels(redis_server, redis_client):
    async def flush(store: RedisStore) -> None:
        await store.redis.flushall()  # the worker's cache still says the brand's series exist

    fresh = write(redis_server.url, [[item("a", ["acme"], 10_100, [0.9, 0.1, 0.2])],
                                     [item("b", ["acme"], 20_100, [0.9, 0.1, 0.2])]], between=flush)
    assert fresh == [[True], [True]]
    key = schema.series_key("acme", "anger", "count")
    info = redis_client.ts().info(key)
    assert info.labels == schema.series_labels("acme", "anger", "count")
    assert redis_client.ts().info(schema.series_key("acme", "anger", "count", "1h")).labels == \
        schema.series_labels("acme", "anger", "count", "1h")
    assert samples(redis_client, "acme", "anger", "count") == [(20_000, 1.0)]
    assert redis_client.ts().queryindex([f"app={schema.APP_LABEL}", "brand=acme", "tier=raw"])


def test_clear_widens_to_whole_buckets_and_drops_markers(redis_server, redis_client):
    async def clear(store: RedisStore) -> None:
        assert store.whole_buckets(10_500, 10_600) == (0, 3_599_999)
        assert await store.clear(10_000, 10_999, ["acme"], ["a"]) == 1

    fresh = write(redis_server.url, [[item("a", ["acme"], 10_550, [0.9, 0.1, 0.2]),
                                      item("b", ["acme"], 12_000, [0.9, 0.1, 0.2])],
                                     [item("a", ["acme"], 10_550, [0.9, 0.1, 0.2])]], between=clear)
    assert fresh == [[True, True], [True]]  # a's marker was cleared, so the recompute counts it again
    assert samples(redis_client, "acme", "_all", "posts") == [(10_000, 1.0), (12_000, 1.0)]
