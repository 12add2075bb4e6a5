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


def test_created_series_carry_each_tiers_retention_and_markers_their_ttl(redis_server, redis_client):
    day = 86_400_000
    write(redis_server.url, [[item("a", ["acme"], 10_100, [0.9, 0.1, 0.2])]],
          retention_raw_ms=2 * day, retention_1m_ms=3 * day, retention_1h_ms=5 * day, seen_ttl_ms=4 * day)
    expected = {"raw": 2 * day, "1m": 3 * day, "1h": 5 * day}
    created = redis_client.ts().queryindex([f"app={schema.APP_LABEL}", "brand=acme"])
    assert len(created) == (3 * 2 + 1) * 3  # 3 emotions x (count, score) + posts, each in 3 tiers
    for key in created:
        tier = redis_client.ts().info(key).labels["tier"]
        assert redis_client.ts().info(key).retention_msecs == expected[tier], key
    ttl = redis_client.pttl(schema.seen_key("a"))
    assert 4 * day - 60_000 < ttl <= 4 * day  # set with the write, counting down from EM_MONITOR_SEEN_TTL_MS


def test_recent_posts_keep_only_the_newest_per_brand(redis_server, redis_client):
    # two batches, created_at out of order across them: the bound keeps the newest by event time, not arrival
    first = [item(f"p{i}", ["acme"], 10_000 + i * 1000, [0.9, 0.1, 0.2]) for i in (0, 5, 2)]
    second = [item(f"p{i}", ["acme", "globex"], 10_000 + i * 1000, [0.9, 0.1, 0.2]) for i in (4, 1, 3)]
    write(redis_server.url, [first, second], recent_posts_per_brand=3)
    kept = redis_client.zrange(schema.posts_key("acme"), 0, -1, withscores=True)
    assert [(body.split('"id":"')[1].split('"')[0], int(ts)) for body, ts in kept] == [
        ("p3", 13_000), ("p4", 14_000), ("p5", 15_000)]
    assert redis_client.zcard(schema.posts_key("globex")) == 3  # under its bound: all kept
    # every post was still counted: the bound trims the recent-posts store only
    assert sum(v for _, v in samples(redis_client, "acme", "_all", "posts")) == 6


def test_each_posts_json_scores_and_brands_reach_redis_whole_from_the_packed_batch(redis_server, redis_client):
    """The batch travels as a few packed arguments (JSONs back to back, brand lists, scores): each post's stored JSON
    is exactly its own (lengths that differ, multi-byte UTF-8, a ';' and ',' in the text), its brands its own."""
    texts = ["", "é" * 300, "a;b,c", "🙂 " * 50, "x" * 5000]
    brand_lists = [["acme"], ["acme", "globex"], ["globex"], ["initech", "acme"], ["globex", "initech"]]
    batch = [item(f"p{i}", brands, 20_000 + i, [0.9 - 0.2 * i, 0.1 * i, 0.5])
             for i, brands in enumerate(brand_lists)]
    batch = [ClassifiedPost(Post(id=b.post.id, brands=b.post.brands, text=t, created_at=b.post.created_at),
                            b.scores, b.labels, b.model_version) for b, t in zip(batch, texts)]
    assert write(redis_server.url, [batch]) == [[True] * 5]
    for brand in ("acme", "globex", "initech"):
        expected = [b.to_json() for b in batch if brand in b.post.brands]
        assert redis_client.zrange(schema.posts_key(brand), 0, -1) == expected
        assert samples(redis_client, brand, "_all", "posts") == [(20_000, float(len(expected)))]
        anger = sum(b.scores["anger"] for b in batch if brand in b.post.brands)
        assert samples(redis_client, brand, "anger", "score")[0][1] == pytest.approx(anger)
        joy_counted = sum(1 for b in batch if brand in b.post.brands and "joy" in b.labels)
        assert sum(v for _, v in samples(redis_client, brand, "joy", "count")) == joy_counted
