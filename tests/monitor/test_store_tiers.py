"""Retention tiers, refusals, brand limits, the recompute fence and the compaction-rule migration of the Redis sink,
against a real Redis with TimeSeries. Retentions are minutes here where they are days in production: raw 10 min,
1m 1 day, 1h 30 days (ages relative to the brand's newest sample, as Redis counts retention)."""

from __future__ import annotations

import asyncio
import time

import pytest

from monitor import schema
from monitor.post import PostRejected
from monitor.settings import MonitorSettings
from monitor.store import ClearRefused, RecomputeInProgress, RedisStore
from tests.monitor.test_store import EMOTIONS, THRESHOLDS, item

pytestmark = pytest.mark.timeout(60)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
SHORT = {"retention_raw_ms": 10 * MIN, "retention_1m_ms": DAY, "retention_1h_ms": 30 * DAY}


def now_ms() -> int:
    return int(time.time() * 1000)


def run(redis_url: str, steps, **settings):
    """Run ``steps(store)`` (a coroutine function) against a store with these settings."""
    async def main():
        store = RedisStore(MonitorSettings(redis_url=redis_url, **settings), EMOTIONS)
        try:
            return await steps(store)
        finally:
            await store.close()

    return asyncio.run(main())


def tier_total(client, brand: str, tier: str, emotion: str = "_all", metric: str = "posts") -> float:
    key = schema.series_key(brand, emotion, metric, tier)
    return sum(float(v) for _, v in client.ts().range(key, "-", "+")) if client.exists(key) else 0.0


def totals(client, brand: str) -> dict[str, float]:
    return {tier: tier_total(client, brand, tier) for tier in ("raw", "1m", "1h")}


def test_history_lands_in_the_tiers_that_keep_it_and_too_old_is_refused_unmarked(redis_server, redis_client):
    now = now_ms()
    current = [item(f"c{i}", ["acme"], now - i * 1000, [0.9, 0.1, 0.2]) for i in range(5)]
    history = [item("m20", ["acme"], now - 20 * MIN, [0.9, 0.1, 0.2]),   # older than raw: 1m + 1h
               item("d3", ["acme"], now - 3 * DAY, [0.9, 0.1, 0.2]),     # older than 1m: 1h only
               item("d40", ["acme"], now - 40 * DAY, [0.9, 0.1, 0.2])]   # older than every tier

    async def steps(store):
        return await store.write(current, THRESHOLDS), await store.write(history, THRESHOLDS)

    first, second = run(redis_server.url, steps, **SHORT)
    assert first == [True] * 5
    assert second[:2] == [True, True]
    assert isinstance(second[2], PostRejected) and second[2].reason == "too_old"
    assert "older than every retention tier" in second[2].detail
    assert totals(redis_client, "acme") == {"raw": 5.0, "1m": 6.0, "1h": 7.0}
    assert tier_total(redis_client, "acme", "1h", "anger", "count") == 7.0
    assert not redis_client.exists(schema.seen_key("d40"))  # refused: never marked, so a later fix can count it
    assert redis_client.exists(schema.seen_key("d3"))

    again = run(redis_server.url, lambda store: store.write(history, THRESHOLDS), **SHORT)
    assert again[:2] == [False, False] and again[2].reason == "too_old"
    assert totals(redis_client, "acme") == {"raw": 5.0, "1m": 6.0, "1h": 7.0}


def test_a_foreign_future_sample_is_reported_not_hidden(redis_server, redis_client, caplog):
    """The bug of the issue at store level: a sample far ahead trims the brand's history. The monitor's own time
    policy never writes one (monitor.timepolicy); a series holding one from elsewhere makes posts too_old, visibly."""
    now = now_ms()
    run(redis_server.url, lambda store: store.write([item("a", ["acme"], now, [0.9, 0.1, 0.2])], THRESHOLDS),
        **SHORT)
    for tier in ("raw", "1m", "1h"):
        redis_client.ts().add(schema.series_key("acme", "_all", "posts", tier), now + 365 * DAY, 1)
    out = run(redis_server.url, lambda store: store.write([item("b", ["acme"], now, [0.9, 0.1, 0.2])], THRESHOLDS),
              **SHORT)
    assert isinstance(out[0], PostRejected) and out[0].reason == "too_old"
    assert not redis_client.exists(schema.seen_key("b"))


def test_brand_limits_allow_list_count_and_rate(redis_server, redis_client):
    now = now_ms()

    def post(i, brands):
        return item(f"p{i}", brands, now, [0.9, 0.1, 0.2])

    out = run(redis_server.url, lambda store: store.write(
        [post(1, ["acme"]), post(2, ["globex"]), post(3, ["initech"]), post(4, ["acme", "hooli"]), post(5, ["acme"])],
        THRESHOLDS), max_brands=2)
    assert out[0] is True and out[1] is True and out[4] is True
    assert [out[2].reason, out[3].reason] == ["brand_limit", "brand_limit"]
    assert "'initech'" in out[2].detail and "MAX_BRANDS = 2" in out[2].detail
    assert "'hooli'" in out[3].detail and "'acme'" not in out[3].detail
    assert redis_client.smembers(schema.BRANDS_KEY) == {"acme", "globex"}
    assert totals(redis_client, "acme")["raw"] == 2.0  # p4 (acme + hooli) is refused whole, never half counted
    assert not redis_client.exists(schema.series_key("initech", "_all", "posts"))  # no series for a refused brand

    for key in redis_client.keys(f"{schema.BRANDS_KEY}:new:*"):  # acme and globex were this minute's new brands
        redis_client.delete(key)
    rate = run(redis_server.url, lambda store: store.write([post(6, ["umbrella"]), post(7, ["wayne"])], THRESHOLDS),
               max_brands=0, max_new_brands_per_minute=1)
    assert [rate[0], rate[1].reason] == [True, "brand_limit"] and "PER_MINUTE = 1" in rate[1].detail

    allowed = run(redis_server.url, lambda store: store.write([post(8, ["acme"]), post(9, ["stark"])], THRESHOLDS),
                  max_brands=0, brand_allow_list=["ACME"])
    assert allowed[0] is True and allowed[1].reason == "brand_limit" and "ALLOW_LIST" in allowed[1].detail


def test_fence_holds_other_writers_until_released(redis_server, redis_client):
    now = now_ms()
    inside, outside = item("in", ["acme"], now - 5 * MIN, [0.9, 0.1, 0.2]), item("out", ["acme"], now, [0.9, 0.1, 0.2])

    async def steps(store):
        other = RedisStore(store.settings, EMOTIONS)
        try:
            await store.hold_fence(now - HOUR, now - MIN)
            assert await other.write([outside], THRESHOLDS) == [True]  # outside the span: not held
            with pytest.raises(RecomputeInProgress):
                await other.write([inside], THRESHOLDS)
            assert not await store.redis.exists(schema.seen_key("in"))  # nothing of the held batch was written
            assert await store.write([inside], THRESHOLDS) == [True]  # the fence holder's own writes pass
            waiting = asyncio.create_task(other.write_with_retry([inside], THRESHOLDS))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await store.release_fence()
            return await asyncio.wait_for(waiting, 10)
        finally:
            await other.close()

    assert run(redis_server.url, steps, retry_initial_s=0.05, retry_max_s=0.2, **SHORT) == [False]
    assert totals(redis_client, "acme")["raw"] == 2.0  # counted once, by the fence holder


def test_clear_refused_leaves_markers(redis_server, redis_client):
    now = now_ms()
    old = item("old", ["acme"], now - 20 * MIN, [0.9, 0.1, 0.2])

    async def steps(store):
        await store.write([item("new", ["acme"], now, [0.9, 0.1, 0.2]), old], THRESHOLDS)
        # a rule from elsewhere on one of the brand's series: Redis refuses TS.DEL past its retention
        raw = schema.series_key("acme", "_all", "posts")
        await store.redis.ts().create("foreign:agg")
        await store.redis.ts().createrule(raw, "foreign:agg", "sum", MIN)
        lo, hi = store.whole_buckets(old.post.created_at, old.post.created_at)
        with pytest.raises(ClearRefused, match="no marker was removed"):
            await store.clear(lo, hi, ["acme"], ["old"])

    run(redis_server.url, steps, **SHORT)
    assert redis_client.exists(schema.seen_key("old"))


def test_series_with_compaction_rules_from_an_earlier_version_are_migrated(redis_server, redis_client):
    """Series created by the previous version (raw -> 1m -> 1h compaction rules) keep every count: the rules are
    dropped, their open buckets written, and the direct tier writes are not doubled by a compaction."""
    emotions_series = [(e, m) for e in EMOTIONS for m in ("count", "score")] + [("_all", "posts")]
    start = (now_ms() // HOUR - 2) * HOUR
    for emotion, metric in emotions_series:  # what the previous ensure_brand created
        raw = schema.series_key("acme", emotion, metric)
        for tier, retention in (("raw", 10 * MIN), ("1m", DAY), ("1h", 30 * DAY)):
            redis_client.ts().create(schema.series_key("acme", emotion, metric, tier), retention_msecs=retention,
                                     labels=schema.series_labels("acme", emotion, metric, tier),
                                     duplicate_policy="sum")
        for tier, bucket in (("1m", MIN), ("1h", HOUR)):
            redis_client.ts().createrule(raw, schema.series_key("acme", emotion, metric, tier), "sum", bucket)
    legacy = [start + i * 20 * MIN + 1000 for i in range(7)]  # 7 posts over 2 h 20 min: the last buckets are open
    for ts in legacy:
        redis_client.ts().add(schema.series_key("acme", "_all", "posts"), ts, 1, duplicate_policy="sum")
    assert tier_total(redis_client, "acme", "1h") == 6.0  # the open hour is not in the compaction yet

    newest = legacy[-1] + 30_000
    run(redis_server.url, lambda store: store.write([item("n", ["acme"], newest, [0.9, 0.1, 0.2])], THRESHOLDS),
        **SHORT)
    raw = schema.series_key("acme", "_all", "posts")
    assert redis_client.ts().info(raw).rules in ([], {})
    # raw keeps 10 min: the last legacy post and the new one; the tiers keep all 8, none twice
    assert totals(redis_client, "acme") == {"raw": 2.0, "1m": 8.0, "1h": 8.0}
    redis_client.ts().add(raw, newest + 2 * HOUR, 1)  # later raw samples no longer feed a compaction
    assert tier_total(redis_client, "acme", "1h") == 8.0


def test_settings_markers_must_outlive_raw_retention():
    with pytest.raises(ValueError, match="seen_ttl_ms .* shorter than retention_raw_ms"):
        MonitorSettings(retention_raw_ms=8 * DAY, seen_ttl_ms=7 * DAY)
    with pytest.raises(ValueError, match="retention_raw_ms"):
        MonitorSettings(retention_raw_ms=0)  # "forever": no finite marker could outlive it
    assert MonitorSettings(retention_raw_ms=DAY, seen_ttl_ms=DAY).seen_ttl_ms == DAY


def test_time_policy_future_seconds_and_microseconds():
    from monitor.post import Post
    from monitor.timepolicy import check_created_at

    settings, now = MonitorSettings(), 1_800_000_000_000

    def verdict(created):
        try:
            check_created_at(Post(id="x", brands=["a"], text="t", created_at=created), settings, now_ms=now)
            return "ok"
        except PostRejected as exc:
            return exc.reason

    assert verdict(now + 4 * MIN) == "ok" and verdict(now - 300 * DAY) == "ok"
    assert verdict(now + 6 * MIN) == "future_timestamp"
    assert verdict(now + 365 * DAY) == "future_timestamp"
    assert verdict(now // 1000) == "invalid_value"       # epoch seconds
    assert verdict(now * 1000) == "invalid_value"        # epoch microseconds
    assert verdict(0) == "invalid_value"
