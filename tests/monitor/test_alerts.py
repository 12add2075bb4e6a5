"""Spike rule (pure) and the alert engine against a real Redis and a real local webhook server.

No classifier here: posts are written with given scores, which is what the engine reads back from Redis."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from monitor.alerts import AlertEngine, WindowCounts, is_spike
from monitor.post import Post
from monitor.settings import MonitorSettings
from monitor.store import ClassifiedPost, RedisStore

EMOTIONS = ["anger", "joy", "neutral"]
T0 = 1_795_654_800_000
MIN = 60_000


def settings(**extra) -> MonitorSettings:
    return MonitorSettings(alert_window_ms=5 * MIN, alert_baseline_ms=60 * MIN, alert_min_volume=10,
                           alert_min_baseline_posts=20, alert_ratio=3.0, alert_min_share=0.2, **extra)


@pytest.mark.parametrize(
    "counts, spike",
    [
        (WindowCounts(12, 20, 6, 120), True),     # 60% vs 5%
        (WindowCounts(9, 10, 0, 120), False),     # below min volume
        (WindowCounts(12, 20, 5, 10), False),     # baseline too thin to judge
        (WindowCounts(12, 100, 1, 120), False),   # 12% < min share
        (WindowCounts(12, 20, 30, 120), False),   # 60% vs 25%: under 3x
        (WindowCounts(15, 20, 0, 120), True),     # nothing before
    ],
)
def test_spike_rule(counts, spike):
    assert is_spike(counts, settings()) is spike


def _classified(i: int, brand: str, created_at: int, angry: bool) -> ClassifiedPost:
    scores = {"anger": 0.9 if angry else 0.05, "joy": 0.1 if angry else 0.7, "neutral": 0.2}
    post = Post(id=f"{brand}-{i}", brands=[brand], text="t", created_at=created_at)
    return ClassifiedPost(post, scores, [k for k, v in scores.items() if v >= 0.5], "test")


@pytest.mark.parametrize("window_ms, said", [(5 * MIN, "5 min"), (20_000, "20 s"), (90_000, "90 s")])
def test_alert_message_states_the_real_window(window_ms, said):
    from monitor.alerts import _duration

    assert _duration(window_ms) == said


def test_engine_fires_once_to_redis_topic_and_webhook_with_retries(redis_server, redis_client, webhook):
    hook = webhook(fail_first=2)  # two 500s, then success: retries with back-off
    cfg = settings(redis_url=redis_server.url, webhook_url=hook.url, webhook_backoff=0.05, webhook_retries=3)
    sent = []

    async def publish(topic, key, value):
        sent.append((topic, key, value))

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        thresholds = np.full(3, 0.5, dtype=np.float32)
        # 60 minutes of steady traffic, 10% angry: never a spike
        steady = [_classified(i, "acme", T0 + i * 30_000, i % 10 == 0) for i in range(120)]
        for start in range(0, 120, 20):
            await store.write(steady[start:start + 20], thresholds)
            assert await engine.evaluate({"acme": steady[start + 19].post.created_at}) == []
        # then 5 minutes where most posts are angry
        end = T0 + 120 * 30_000
        spike = [_classified(1000 + i, "acme", end + i * 10_000, i % 5 != 0) for i in range(25)]
        fired = []
        for start in range(0, 25, 5):
            await store.write(spike[start:start + 5], thresholds)
            fired += await engine.evaluate({"acme": spike[start + 4].post.created_at})
        await engine.drain()
        await store.close()
        return fired

    fired = asyncio.run(run())
    assert len(fired) == 1 and fired[0].brand == "acme" and fired[0].emotion == "anger"
    assert fired[0].count >= 10 and fired[0].value >= 0.6 and fired[0].baseline == pytest.approx(0.1, abs=0.02)
    assert "in the last 5 min vs 10% before" in fired[0].message
    assert [t for t, _, _ in sent] == ["alerts"]
    assert len(hook.received) == 1 and hook.received[0]["brand"] == "acme" and hook.state["attempts"] == 3
    stored = redis_client.zrange("em:alerts", 0, -1)
    assert len(stored) == 1 and '"emotion":"anger"' in stored[0]
    assert redis_client.pttl("em:alert:last:acme:anger") > 0


def test_webhook_refuses_hosts_outside_allow_list(redis_server, webhook):
    hook = webhook()
    url = hook.url.replace("127.0.0.1", "localhost")
    cfg = settings(redis_url=redis_server.url, webhook_url=url, webhook_allowed_hosts=["127.0.0.1"])

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, None, "test")
        try:
            return await engine.post_webhook('{"x": 1}')
        finally:
            await store.close()

    assert asyncio.run(run()) is False
    assert hook.state["attempts"] == 0
