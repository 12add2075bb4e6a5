"""Replay through the real broker and Redis: fill twice changes nothing; recompute equals a fresh run; time bounds."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
import redis

from monitor.inference import load_inference
from monitor.replay import ReplayRange, run_replay
from monitor.settings import MonitorSettings
from tests.monitor.conftest import EMOTION_MONITOR, ROOT, create_topic, emotion_totals, monitor_env, posts_total, produce
from tests.monitor.posts_data import encode, make_posts

BRANDS = ("acme", "globex", "initech")
BASE_MS = 1_795_654_800_000


def settings_for(kafka_broker, redis_url, model_dir, **extra) -> MonitorSettings:
    return MonitorSettings(broker_url=kafka_broker.url, redis_url=redis_url, model_path=str(model_dir), max_batch=32,
                           metrics_port=0, **extra)


def snapshot(client) -> dict:
    return {b: (posts_total(client, b), emotion_totals(client, b, "count")) for b in BRANDS}


def replay(settings, span=ReplayRange(), mode="fill", inference=None):
    return asyncio.run(run_replay(settings, span, mode=mode, progress=False, inference=inference))


@pytest.fixture()
def topic_with_posts(kafka_broker):
    create_topic(kafka_broker, "posts", 1)  # one partition: identical batches in every run (exact float equality)
    posts = make_posts(150, BRANDS, base_ms=BASE_MS)
    produce(kafka_broker, "posts", encode(posts), timestamps_ms=[p["created_at"] for p in posts])
    return posts


def test_fill_twice_leaves_totals_unchanged(kafka_broker, redis_server, redis_client, small_model_dir,
                                            topic_with_posts, tmp_path):
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
    first = replay(settings)
    assert (first.records, first.counted, first.duplicates) == (150, 150, 0)
    before = snapshot(redis_client)
    assert all(before[b][0] == 50 for b in BRANDS)
    # the second run goes through the real CLI, with its progress bar
    env = monitor_env(kafka_broker, redis_server.url, small_model_dir, topic_partitions="1")
    out = subprocess.run([EMOTION_MONITOR, "replay", "--mode", "fill"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "150 records, 0 counted, 150 already counted" in out.stdout
    assert "replay fill" in out.stderr  # tqdm progress bar
    assert snapshot(redis_client) == before


def test_recompute_after_threshold_change_matches_a_fresh_run(kafka_broker, redis_server, redis_client,
                                                              small_model_dir, topic_with_posts):
    old = settings_for(kafka_broker, redis_server.url, small_model_dir)
    replay(old)
    old_totals = snapshot(redis_client)
    lowered = {"threshold_overrides": {name: 0.45 for name in ("anger", "joy", "neutral", "sadness", "admiration")}}
    new = settings_for(kafka_broker, redis_server.url, small_model_dir, **lowered)
    inference = load_inference(new)
    result = replay(new, mode="recompute", inference=inference)
    assert result.cleared_markers == 150 and result.counted == 150
    recomputed = snapshot(redis_client)
    fresh_url = redis_server.url.rsplit("/", 1)[0] + "/1"  # another database on the same server: a fresh run
    replay(settings_for(kafka_broker, fresh_url, small_model_dir, **lowered), inference=inference)
    fresh_client = redis.Redis.from_url(fresh_url, decode_responses=True)
    try:
        assert recomputed == snapshot(fresh_client)
    finally:
        fresh_client.close()
    assert recomputed != old_totals  # the thresholds really changed the counts
    assert all(recomputed[b][0] == 50 for b in BRANDS)  # and nothing was counted twice


def test_time_bounds_and_future_times(kafka_broker, redis_server, redis_client, small_model_dir, topic_with_posts):
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
    inference = load_inference(settings)
    future = BASE_MS + 10**9
    assert replay(settings, ReplayRange(from_time_ms=future), inference=inference).records == 0
    window = replay(settings, ReplayRange(from_time_ms=BASE_MS + 30_000, to_time_ms=BASE_MS + 59_000),
                    inference=inference)
    assert window.records == 30 and window.counted == 30
    rest = replay(settings, ReplayRange(from_offset=100, to_time_ms=future), inference=inference)
    assert (rest.records, rest.counted) == (50, 50)
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 80
    recent = [json.loads(m)["id"] for m in redis_client.zrangebyscore("em:posts:acme", 0, "+inf")]
    assert all(30 <= int(i[1:]) < 60 or int(i[1:]) >= 100 for i in recent)


def test_publish_retries_broker_send_errors_with_back_off(kafka_broker, redis_server, redis_client, small_model_dir,
                                                          topic_with_posts, monkeypatch):
    """--publish through a producer whose first sends fail (the broker away): replay waits, loses and DLQs nothing.

    Test-only: a subclass of the real producer that raises, then returns failed delivery futures, before sending."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError, RequestTimedOutError

    import monitor.replay
    from tests.monitor.conftest import consume_all

    failures = {"raise": 2, "future": 2}

    class FlakyProducer(AIOKafkaProducer):
        async def send(self, topic, value=None, key=None, **kwargs):
            if failures["raise"]:
                failures["raise"] -= 1
                raise KafkaConnectionError("injected: broker unreachable")
            if failures["future"]:
                failures["future"] -= 1
                future = asyncio.get_running_loop().create_future()
                future.set_exception(RequestTimedOutError("injected: delivery timed out"))
                return future
            return await super().send(topic, value, key=key, **kwargs)

    monkeypatch.setattr(monitor.replay, "AIOKafkaProducer", FlakyProducer)
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir, retry_initial_s=0.05,
                            poison_retries=1)
    summary = asyncio.run(run_replay(settings, ReplayRange(), publish=True, progress=False))
    assert failures == {"raise": 0, "future": 0}
    assert (summary.records, summary.counted, summary.failed) == (150, 150, 0)
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 150
    published = {json.loads(r.value)["id"] for r in consume_all(kafka_broker, "posts.classified", 150)}
    assert published == {p["id"] for p in topic_with_posts}
    assert consume_all(kafka_broker, "posts.dlq", 1, timeout=3) == []


@pytest.mark.slow  # ~25 s; CI runs it with -m slow; the recompute itself stays default (the test above)
def test_recompute_through_the_cli_keeps_totals_and_the_recent_posts(kafka_broker, redis_server, redis_client,
                                                                     small_model_dir, topic_with_posts):
    """`emotion-monitor replay --mode recompute` itself: the totals equal the first count, every tier's too, and the
    recent-posts store holds each post once after its entries were cleared and written again."""
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
    replay(settings)
    before = snapshot(redis_client)
    env = monitor_env(kafka_broker, redis_server.url, small_model_dir, topic_partitions="1")
    out = subprocess.run([EMOTION_MONITOR, "replay", "--mode", "recompute"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "replay (recompute): 150 records, 150 counted" in out.stdout and "150 markers cleared" in out.stdout
    assert snapshot(redis_client) == before
    for brand in BRANDS:
        stored = [json.loads(m)["id"] for m in redis_client.zrangebyscore(f"em:posts:{brand}", 0, "+inf")]
        assert sorted(stored) == sorted(p["id"] for p in topic_with_posts if p["brand"] == brand)


@pytest.mark.slow  # ~21 s; CI runs it with -m slow; the worker-reads-what-the-replay-reads tests (test_alert_rules) stay default
def test_a_replay_fires_no_alert_where_the_worker_would(kafka_broker, redis_server, redis_client, small_model_dir):
    """History is not news: a replayed spike is counted but not alerted. The same counts make the worker's alert engine
    fire, so the replay's silence is its choice, not an absent spike."""
    from monitor.alerts import AlertEngine
    from monitor.store import RedisStore

    create_topic(kafka_broker, "posts", 1)
    minute = 60_000
    calm = [{"id": f"c{i}", "brand": "acme", "text": f"calm post {i}", "created_at": BASE_MS + i * minute}
            for i in range(50)]  # 50 minutes of baseline
    burst = [{"id": f"b{i}", "brand": "acme", "text": f"burst post {i}", "created_at": BASE_MS + 56 * minute + i * 5000}
             for i in range(30)]  # 30 posts in the 5-minute window after it
    produce(kafka_broker, "posts", encode(calm + burst), timestamps_ms=[p["created_at"] for p in calm + burst])
    # the baseline without anger, the burst all angry (thresholds chosen per replay)
    replay(settings_for(kafka_broker, redis_server.url, small_model_dir, threshold_overrides={"anger": 0.999}),
           ReplayRange(to_time_ms=BASE_MS + 55 * minute))
    env = monitor_env(kafka_broker, redis_server.url, small_model_dir, topic_partitions="1",
                      threshold_overrides={"anger": 0.0})
    out = subprocess.run([EMOTION_MONITOR, "replay", "--mode", "fill", "--from-offset", "50"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "30 records, 30 counted" in out.stdout
    assert posts_total(redis_client, "acme") == 80 and emotion_totals(redis_client, "acme", "count")["anger"] == 30
    assert redis_client.zcard("em:alerts") == 0 and not redis_client.keys("em:alert:last:*")

    async def worker_would_alert() -> list:
        settings = settings_for(kafka_broker, redis_server.url, small_model_dir)
        store = RedisStore(settings, ["anger"])
        sent = []

        async def publish(topic, key, value):
            sent.append(value)
        try:
            return await AlertEngine(settings, store, publish, "test").evaluate({"acme": burst[-1]["created_at"]})
        finally:
            await store.close()

    fired = asyncio.run(worker_would_alert())
    assert [(a.brand, a.emotion, a.count) for a in fired] == [("acme", "anger", 30)]


def test_read_yields_the_span_and_counts_what_it_passed_over(kafka_broker, topic_with_posts):
    """``_read`` returns both halves of a time-bounded read (no output parameter): every record of the range is either
    yielded (timestamp in the span) or counted as passed over, so the progress bar can reach the range's total."""
    from aiokafka import AIOKafkaConsumer

    from monitor.replay import _plan, _read

    settings = MonitorSettings(broker_url=kafka_broker.url)
    times = sorted(p["created_at"] for p in topic_with_posts)
    span = ReplayRange(from_time_ms=times[40], to_time_ms=times[99])

    async def read_all():
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker_host_port(), enable_auto_commit=False)
        await consumer.start()
        try:
            starts, stops = await _plan(consumer, settings, ReplayRange())
            return [(list(rows), passed) async for rows, passed in _read(consumer, starts, stops, 16, span)]
        finally:
            await consumer.stop()

    chunks = asyncio.run(read_all())
    kept = [r for rows, _ in chunks for r in rows]
    assert all(len(rows) <= 16 for rows, _ in chunks)
    assert sorted(r.timestamp for r in kept) == times[40:100]
    assert sum(passed for _, passed in chunks) == len(times) - 60
