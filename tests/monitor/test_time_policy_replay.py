"""Counting that survives real time, end to end through the real broker, Redis and the pipeline (replay runs the
worker's BatchProcessor): future-dated posts, backfilled history older than raw retention, recompute past raw
retention, fill past the marker horizon, brand limits. Retentions in minutes stand for days: raw 10 min, 1m 1 day,
1h 30 days."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
import redis

from monitor import schema
from monitor.inference import load_inference
from monitor.replay import ReplayRange, ReplayRefused, run_replay
from monitor.settings import MonitorSettings
from tests.monitor.conftest import EMOTION_MONITOR, ROOT, consume_all, create_topic, monitor_env, produce
from tests.monitor.posts_data import encode, make_posts

pytestmark = pytest.mark.timeout(240)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
SHORT = {"retention_raw_ms": 10 * MIN, "retention_1m_ms": DAY, "retention_1h_ms": 30 * DAY}
BRANDS = ("acme", "globex")


LOWERED = {"threshold_overrides": {name: 0.45 for name in ("anger", "joy", "neutral", "sadness", "admiration")}}


def settings_for(kafka_broker, redis_url, model_dir, **extra) -> MonitorSettings:
    return MonitorSettings(broker_url=kafka_broker.url, redis_url=redis_url, model_path=str(model_dir), max_batch=32,
                           metrics_port=0, inference_isolation="thread", **{**SHORT, **extra})


@pytest.fixture(scope="module")
def models(small_model_dir):
    """The model loaded once for the module (on a thread: no child process per test), with the default and with
    lowered thresholds."""
    loaded = {name: load_inference(MonitorSettings(model_path=str(small_model_dir), max_batch=32,
                                                   inference_isolation="thread", **extra))
              for name, extra in (("default", {}), ("lowered", LOWERED))}
    yield loaded
    for inference in loaded.values():
        inference.close()


def replay(settings, span=ReplayRange(), mode="fill", inference=None, publish=False):
    return asyncio.run(run_replay(settings, span, mode=mode, progress=False, inference=inference, publish=publish))


def tier_totals(client, brand: str, metric: str = "posts") -> dict[str, dict[str, float]]:
    """Per tier, per emotion totals (the dashboard's query shape: MRANGE FILTER ... tier=... GROUPBY emotion)."""
    out = {}
    for tier in ("raw", "1m", "1h"):
        rows = client.ts().mrange(0, "+", [f"app={schema.APP_LABEL}", f"brand={brand}", f"metric={metric}",
                                           f"tier={tier}"],
                                  aggregation_type="sum", bucket_size_msec=10**13, groupby="emotion", reduce="sum")
        out[tier] = {name.split("=", 1)[1]: sum(v for _, v in samples)
                     for row in rows for name, (_, samples) in row.items()}
    return out


def posts_per_tier(client, brand: str) -> dict[str, float]:
    return {tier: by_emotion.get("_all", 0.0) for tier, by_emotion in tier_totals(client, brand).items()}


def dlq(kafka_broker, expected: int, timeout: float = 20) -> list[dict]:
    return [json.loads(r.value) for r in consume_all(kafka_broker, "posts.dlq", expected, timeout=timeout)]


def original(letter: dict) -> dict:
    """The dead-lettered post (as text when the envelope has it, else from base64)."""
    import base64

    text = letter.get("original_text") or base64.b64decode(letter["original_b64"]).decode()
    return json.loads(text)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_future_dated_post_is_dead_lettered_and_the_brand_stays_exact(kafka_broker, redis_server, redis_client,
                                                                       small_model_dir, models):
    """The issue's run: 50 posts, one dated a year ahead, 50 more. Before: the brand's raw total read 1."""
    create_topic(kafka_broker, "posts", 1)
    base = now_ms() - 10 * MIN
    posts = make_posts(101, ("acme",), base_ms=base, step_ms=100)
    posts[50]["created_at"] = now_ms() + 365 * DAY
    produce(kafka_broker, "posts", encode(posts))
    summary = replay(settings_for(kafka_broker, redis_server.url, small_model_dir), publish=True,
                     inference=models["default"])
    assert (summary.records, summary.counted, summary.rejected) == (101, 100, 1)
    assert posts_per_tier(redis_client, "acme") == {"raw": 100.0, "1m": 100.0, "1h": 100.0}
    letters = dlq(kafka_broker, 1)
    assert [(d["reason"], original(d)["id"]) for d in letters] == [("future_timestamp", "p50")]
    assert "ahead of the worker's clock" in letters[0]["detail"]
    assert not redis_client.exists(schema.seen_key("p50"))


def test_backfill_older_than_raw_retention_counts_in_the_coarser_tiers_once(kafka_broker, redis_server,
                                                                            redis_client, small_model_dir, models):
    """Before: 100 posts 20 days old for a brand with current data were counted in no tier, nothing on the DLQ."""
    create_topic(kafka_broker, "posts", 1)
    now = now_ms()
    current = make_posts(30, BRANDS, base_ms=now - 30_000, prefix="c")
    history = make_posts(40, BRANDS, base_ms=now - 20 * MIN, prefix="h")       # older than raw: 1m + 1h
    ancient = make_posts(10, BRANDS, base_ms=now - 3 * DAY, prefix="a")        # older than 1m: 1h only
    lost = make_posts(2, BRANDS, base_ms=now - 40 * DAY, prefix="x")           # older than every tier: DLQ
    produce(kafka_broker, "posts", encode(current))
    produce(kafka_broker, "posts", encode(history + ancient + lost))  # replayed history: produced now
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
    inference = models["default"]
    first = replay(settings, inference=inference, publish=True)
    assert (first.records, first.counted, first.rejected) == (82, 80, 2)
    expected = {"raw": 15.0, "1m": 35.0, "1h": 40.0}
    assert {b: posts_per_tier(redis_client, b) for b in BRANDS} == {b: expected for b in BRANDS}
    letters = dlq(kafka_broker, 2)
    assert sorted((d["reason"], original(d)["id"]) for d in letters) == [
        ("too_old", "x0"), ("too_old", "x1")]
    before = {b: tier_totals(redis_client, b, "count") for b in BRANDS}

    second = replay(settings, inference=inference)  # fill again: nothing counted twice
    assert (second.counted, second.duplicates, second.rejected) == (0, 80, 2)
    assert {b: posts_per_tier(redis_client, b) for b in BRANDS} == {b: expected for b in BRANDS}
    assert {b: tier_totals(redis_client, b, "count") for b in BRANDS} == before


def test_recompute_past_raw_retention_equals_a_fresh_run(kafka_broker, redis_server, redis_client, small_model_dir,
                                                         models):
    """Before: TS.DEL was refused past raw retention (compaction rules), the markers were deleted anyway and the
    recount added on top of the old samples."""
    create_topic(kafka_broker, "posts", 1)
    now = now_ms()
    current = make_posts(30, BRANDS, base_ms=now - 30_000, prefix="c")
    history = make_posts(60, BRANDS, base_ms=now - 3 * HOUR, step_ms=MIN, prefix="h")
    produce(kafka_broker, "posts", encode(current + history))
    old = settings_for(kafka_broker, redis_server.url, small_model_dir)
    replay(old, inference=models["default"])
    old_counts = {b: tier_totals(redis_client, b, "count") for b in BRANDS}
    lowered = LOWERED
    new = settings_for(kafka_broker, redis_server.url, small_model_dir, **lowered)
    inference = models["lowered"]
    result = replay(new, mode="recompute", inference=inference)
    assert result.cleared_markers == result.counted == 90
    recomputed = {b: tier_totals(redis_client, b, "count") for b in BRANDS}
    fresh_url = redis_server.url.rsplit("/", 1)[0] + "/1"
    replay(settings_for(kafka_broker, fresh_url, small_model_dir, **lowered), inference=inference)
    fresh_client = redis.Redis.from_url(fresh_url, decode_responses=True)
    try:
        assert recomputed == {b: tier_totals(fresh_client, b, "count") for b in BRANDS}
        assert {b: posts_per_tier(redis_client, b) for b in BRANDS} == \
            {b: posts_per_tier(fresh_client, b) for b in BRANDS}
    finally:
        fresh_client.close()
    assert recomputed != old_counts  # the thresholds really changed the counts
    assert {b: posts_per_tier(redis_client, b)["1h"] for b in BRANDS} == {"acme": 45.0, "globex": 45.0}


def test_recompute_by_record_time_recounts_every_post_created_in_the_cleared_span(kafka_broker, redis_server,
                                                                                   redis_client, small_model_dir,
                                                                                   models):
    """Before: records were chosen by Kafka time but samples cleared by created_at span: a post created in the span
    whose record lies outside the range lost its samples and kept its marker (undercount)."""
    create_topic(kafka_broker, "posts", 1)
    now = now_ms()
    created = now - 30 * MIN
    early = make_posts(10, BRANDS, base_ms=created, prefix="e")            # records written 2 h ago
    late = make_posts(10, BRANDS, base_ms=created + 500, prefix="l")       # same seconds, records written now
    produce(kafka_broker, "posts", encode(early), timestamps_ms=[now - 2 * HOUR + i for i in range(10)])
    produce(kafka_broker, "posts", encode(late))
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
    replay(settings, inference=models["default"])
    new = settings_for(kafka_broker, redis_server.url, small_model_dir, **LOWERED)
    result = replay(new, ReplayRange(from_time_ms=now - MIN), mode="recompute", inference=models["lowered"])
    assert result.cleared_markers == result.counted == 20  # the early records too: created in the cleared span
    recomputed = {b: tier_totals(redis_client, b, "count") for b in BRANDS}
    # nothing newer for these brands: raw keeps them too (retention counts back from a series' newest sample)
    assert {b: posts_per_tier(redis_client, b) for b in BRANDS} == {b: {"raw": 10.0, "1m": 10.0, "1h": 10.0}
                                                                     for b in BRANDS}
    fresh_url = redis_server.url.rsplit("/", 1)[0] + "/1"
    replay(settings_for(kafka_broker, fresh_url, small_model_dir, **LOWERED), inference=models["lowered"])
    fresh_client = redis.Redis.from_url(fresh_url, decode_responses=True)
    try:
        assert recomputed == {b: tier_totals(fresh_client, b, "count") for b in BRANDS}
    finally:
        fresh_client.close()


def test_recompute_refuses_to_clear_posts_the_topic_no_longer_holds(kafka_broker, redis_server, redis_client,
                                                                    small_model_dir, models):
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(20, BRANDS, base_ms=now_ms() - 5 * MIN)
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
    inference = models["default"]
    produce(kafka_broker, "posts", encode(posts[:10]))
    replay(settings, inference=inference)
    # ten more posts of the same span counted from elsewhere (e.g. a topic whose records Kafka deleted since)
    other = "posts-elsewhere"
    create_topic(kafka_broker, other, 1)
    produce(kafka_broker, other, encode(posts[10:]))
    replay(settings.model_copy(update={"posts_topic": other}), inference=inference)
    before = {b: posts_per_tier(redis_client, b) for b in BRANDS}
    with pytest.raises(ReplayRefused, match="topic holds only 5"):
        replay(settings, mode="recompute", inference=inference)
    assert {b: posts_per_tier(redis_client, b) for b in BRANDS} == before
    assert redis_client.exists(schema.seen_key("p0"))
    assert not redis_client.exists(schema.RECOMPUTE_FENCE_KEY)  # released on the way out


def test_fill_past_the_marker_horizon_is_refused_naming_recompute(kafka_broker, redis_server, redis_client,
                                                                  small_model_dir, models):
    """Before: with markers expired (TTL is wall clock) and the samples kept, fill counted every post again."""
    create_topic(kafka_broker, "posts", 1)
    now = now_ms()
    posts = make_posts(20, BRANDS, base_ms=now - 2 * DAY)
    produce(kafka_broker, "posts", encode(posts), timestamps_ms=[now - 2 * DAY + i for i in range(20)])
    long_markers = settings_for(kafka_broker, redis_server.url, small_model_dir, seen_ttl_ms=7 * DAY)
    inference = models["default"]
    assert replay(long_markers, inference=inference).counted == 20
    for key in redis_client.keys("em:seen:*"):  # what a marker TTL of one day has done by now
        redis_client.delete(key)
    before = {b: posts_per_tier(redis_client, b) for b in BRANDS}
    env = monitor_env(kafka_broker, redis_server.url, small_model_dir, topic_partitions="1", seen_ttl_ms=str(DAY),
                      **{k: str(v) for k, v in SHORT.items()})
    out = subprocess.run([EMOTION_MONITOR, "replay", "--mode", "fill", "--no-progress"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode != 0
    assert "older than the marker horizon" in out.stderr and "--mode recompute" in out.stderr
    assert {b: posts_per_tier(redis_client, b) for b in BRANDS} == before  # nothing counted twice
    # the records inside the horizon can still be filled
    newer = make_posts(4, BRANDS, base_ms=now - MIN, prefix="n")
    produce(kafka_broker, "posts", encode(newer))
    short_markers = settings_for(kafka_broker, redis_server.url, small_model_dir, seen_ttl_ms=DAY)
    inside = replay(short_markers, ReplayRange(from_time_ms=now - DAY + 10 * MIN), inference=inference)
    assert (inside.records, inside.counted) == (4, 4)


def test_brand_limit_dead_letters_posts_of_brands_beyond_it(kafka_broker, redis_server, redis_client,
                                                           small_model_dir, models):
    create_topic(kafka_broker, "posts", 1)
    base = now_ms() - MIN
    posts = [{"id": f"b{i}", "brand": f"brand{i % 5}", "text": "fine", "created_at": base + i} for i in range(20)]
    produce(kafka_broker, "posts", encode(posts))
    summary = replay(settings_for(kafka_broker, redis_server.url, small_model_dir, max_brands=3), publish=True,
                     inference=models["default"])
    assert (summary.counted, summary.rejected) == (12, 8)
    assert redis_client.scard(schema.BRANDS_KEY) == 3
    letters = dlq(kafka_broker, 8)
    assert len(letters) == 8 and {d["reason"] for d in letters} == {"brand_limit"}
    assert {original(d)["brand"] for d in letters} == {"brand3", "brand4"}
