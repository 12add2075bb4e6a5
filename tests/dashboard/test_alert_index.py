"""Alerts per brand are read exactly: the monitor's real alert engine writes each alert to the shared timeline and the
brand's own index in one transaction, and the dashboard reads the brand's index, so a brand with older alerts is never
crowded out by a brand that alerts a lot. Alerts stored before the index existed are still listed (real Redis)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from dashboard import queries
from monitor import schema

pytestmark = pytest.mark.timeout(60)
EMOTIONS = ["anger", "joy", "neutral"]
MIN = 60_000
T0 = 1_795_654_800_000


def _posts(brand: str, start: int) -> list:
    """60 min of steady traffic (10 % angry), then 5 min where most posts are angry: a spike at the end."""
    from monitor.post import Post
    from monitor.store import ClassifiedPost

    def classified(i: int, created_at: int, angry: bool) -> ClassifiedPost:
        scores = {"anger": 0.9 if angry else 0.05, "joy": 0.1 if angry else 0.7, "neutral": 0.2}
        post = Post(id=f"{brand}-{i}", brands=[brand], text="t", created_at=created_at)
        return ClassifiedPost(post, scores, [k for k, v in scores.items() if v >= 0.5], "test")

    steady = [classified(i, start + i * 30_000, i % 10 == 0) for i in range(120)]
    end = start + 120 * 30_000
    return steady + [classified(1000 + i, end + i * 10_000, i % 5 != 0) for i in range(25)]


def _fire_alerts(redis_url: str, plan: list[tuple[str, int]]) -> list:
    """Write a spike for each brand in ``plan``, then run the engine's real ``evaluate`` ``n`` times per brand, in
    order (no cooldown, and a 1 ms later evaluation time each round, so every round fires one distinct alert)."""
    from monitor.alerts import AlertEngine
    from monitor.settings import MonitorSettings
    from monitor.store import RedisStore

    cfg = MonitorSettings(redis_url=redis_url, alert_window_ms=5 * MIN, alert_baseline_ms=60 * MIN,
                          alert_min_volume=10, alert_min_baseline_posts=20, alert_ratio=3.0, alert_min_share=0.2,
                          alert_detector="threshold",  # pins the threshold rule's windows (default: statistical)
                          alert_cooldown_ms=0, alert_emotions=["anger"])

    async def publish(topic, key, value):
        pass

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        fired = []
        try:
            thresholds = np.full(3, 0.5, dtype=np.float32)
            latest = {}
            for brand, _ in plan:
                posts = _posts(brand, T0)
                await store.write(posts, thresholds)
                latest[brand] = posts[-1].post.created_at
            for brand, rounds in plan:
                for i in range(rounds):
                    fired += await engine.evaluate({brand: latest[brand] + i})
        finally:
            await store.close()
        return fired

    return asyncio.run(run())


def test_a_brand_with_older_alerts_is_not_crowded_out(redis_server, redis_client):
    fired = _fire_alerts(redis_server.url, [("globex", 1), ("acme", 150)])
    assert [a.brand for a in fired] == ["globex"] + ["acme"] * 150
    # the engine wrote every alert to both the shared timeline and its brand's index
    assert redis_client.zcard(schema.ALERTS_KEY) == 151
    assert redis_client.zcard(schema.brand_alerts_key("acme")) == 150
    assert redis_client.zrange(schema.brand_alerts_key("globex"), 0, -1) == [fired[0].to_json()]
    assert int(redis_client.get(schema.ALERTS_INDEXED_SINCE_KEY)) == fired[0].ts

    client = queries.connect(redis_server.url)
    now = int(time.time() * 1000)
    start, end = now - 3_600_000, now + MIN
    # globex's one alert is older than all 150 of acme's: with limit 5 the old scan (newest 5 x 20 of the shared
    # timeline, then filtered by brand) never reached it
    alerts, malformed = queries.list_alerts(client, ["globex"], start, end, limit=5)
    assert malformed == 0 and len(alerts) == 1
    assert alerts[0]["brand"] == "globex" and alerts[0]["emotion"] == "anger" and alerts[0]["ts"] == fired[0].ts
    # acme: its 5 newest, newest first; both brands together: still the newest overall, globex's is older
    newest_acme = sorted((a.ts, a.window_end) for a in fired if a.brand == "acme")[-5:][::-1]
    acme, _ = queries.list_alerts(client, ["acme"], start, end, limit=5)
    assert [(a["ts"], a["window_end"]) for a in acme] == newest_acme
    both, _ = queries.list_alerts(client, ["acme", "globex"], start, end, limit=200)
    assert len(both) == 151 and both[-1]["brand"] == "globex"
    assert [a["ts"] for a in both] == sorted((a["ts"] for a in both), reverse=True)


def _legacy_alert(brand: str, ts: int) -> str:
    return json.dumps({"brand": brand, "emotion": "anger", "ts": ts, "window_start": ts - MIN, "window_end": ts,
                       "value": 0.5, "baseline": 0.1, "count": 12, "posts": 20, "message": f"old {brand}"})


def test_alerts_stored_before_the_brand_index_are_still_listed(redis_server, redis_client):
    now = int(time.time() * 1000)
    # an older monitor wrote only the shared timeline, with no index and no marker
    redis_client.zadd(schema.ALERTS_KEY, {_legacy_alert("globex", now - 20 * MIN): now - 20 * MIN,
                                          _legacy_alert("acme", now - 15 * MIN): now - 15 * MIN})
    client = queries.connect(redis_server.url)
    alerts, malformed = queries.list_alerts(client, ["globex"], now - 3_600_000, now + MIN)
    assert malformed == 0 and [a["message"] for a in alerts] == ["old globex"]

    # then the new engine indexes alerts from now on: the old ones are still found (the range before the marker is
    # scanned in the shared timeline), the new ones come from the index, none twice
    fired = _fire_alerts(redis_server.url, [("globex", 2)])
    alerts, malformed = queries.list_alerts(client, ["globex"], now - 3_600_000, int(time.time() * 1000) + MIN)
    assert malformed == 0
    assert [a["message"] for a in alerts][-1] == "old globex" and len(alerts) == 3
    assert {a["ts"] for a in alerts[:2]} == {a.ts for a in fired}
    # the marker is the first indexed alert's time: a window from there on is read from the brand indexes alone
    since = int(redis_client.get(schema.ALERTS_INDEXED_SINCE_KEY))
    assert since == min(a.ts for a in fired)
    recent, _ = queries.list_alerts(client, ["acme", "globex"], since, int(time.time() * 1000) + MIN)
    assert sorted(a["ts"] for a in recent) == sorted(a.ts for a in fired)
