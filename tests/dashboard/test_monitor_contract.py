"""The contract with the writer: what the monitor's own ``RedisStore`` writes is what the dashboard's queries read.

Uses the monitor's real store (its series, labels, compaction rules raw -> 1m -> 1h, Lua write script) against a
real Redis; only the classifier is left out (scores are given).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

from dashboard import queries
from dashboard.taxonomy import EMOTIONS

pytestmark = pytest.mark.timeout(60)
MINUTE = 60_000


def _write(redis_url: str, rows: list[tuple[str, int, dict[str, float]]]) -> None:
    from monitor.post import Post
    from monitor.settings import MonitorSettings
    from monitor.store import ClassifiedPost, RedisStore

    async def run() -> None:
        store = RedisStore(MonitorSettings(redis_url=redis_url), EMOTIONS)
        try:
            thresholds = np.full(len(EMOTIONS), 0.5)
            items = []
            for post_id, created_at, scores in rows:
                full = {emotion: scores.get(emotion, 0.01) for emotion in EMOTIONS}
                labels = [e for e in EMOTIONS if full[e] >= 0.5]
                post = Post(id=post_id, brands=["acme"], text=f"text {post_id}", created_at=created_at, source="t")
                items.append(ClassifiedPost(post, full, labels, "test"))
            await store.write(items, thresholds)
        finally:
            await store.close()

    asyncio.run(run())


def test_dashboard_reads_what_the_monitor_writes(redis_server):
    now = int(time.time() * 1000)
    old, recent = (now - 90 * MINUTE) // MINUTE * MINUTE, (now - 10 * MINUTE) // MINUTE * MINUTE
    _write(redis_server.url, [
        ("a", old + 1_000, {"joy": 0.9}),
        ("b", recent + 1_000, {"anger": 0.9}), ("c", recent + 2_000, {"anger": 0.8, "joy": 0.7}),
        ("d", recent + 3_000, {"anger": 0.2}),
    ])
    client = queries.connect(redis_server.url)
    assert queries.list_brands(client) == ["acme"]

    def counts(window):
        frame = queries.emotion_series(client, ["acme"], window)
        return {(e, ts): v for e, ts, v in zip(frame["emotion"], frame["ts"], frame["count"]) if v and ":" not in e}

    hour = queries.plan_window(now - queries.HOUR, now, now)
    assert hour.tier == "raw"
    assert counts(hour) == {("anger", recent): 2, ("joy", recent): 1, ("_all", recent): 3}

    # the 1-minute compaction (newest bucket through LATEST, as it is not closed yet)
    day = queries.plan_window(now - queries.DAY, now, now)
    assert day.tier == "1m"
    bucket = lambda ts: ts // day.bucket_ms * day.bucket_ms  # noqa: E731
    day_counts = counts(day)
    assert day_counts[("anger", bucket(recent))] == 2 and day_counts[("_all", bucket(recent))] == 3
    assert day_counts[("joy", bucket(old))] == 1

    totals = queries.period_totals(client, ["acme"], now, queries.HOUR, now)
    by = {(e, p): v for e, p, v in zip(totals["emotion"], totals["period"], totals["count"])}
    assert by[("_all", "previous")] == 1 and by[("_all", "current")] == 3 and by[("anger", "current")] == 2

    posts, malformed = queries.alert_posts(client, {"brand": "acme", "emotion": "anger",
                                                    "window_start": recent, "window_end": recent + MINUTE})
    assert malformed == 0
    assert list(posts["text"]) == ["text b", "text c", "text d"] and list(posts["labelled"]) == [True, True, False]
    assert posts["score"].tolist() == pytest.approx([0.9, 0.8, 0.2])


def test_grouped_shares_count_each_post_once(redis_server):
    """Posts written by the monitor's real store; the dashboard's sentiment / Ekman shares equal the share of posts
    with at least one emotion of the group, counted by hand from the posts (not the sum of member emotions)."""
    from dashboard.transforms import apply_grouping, chart_frame, shift_table
    from monitor.taxonomy import GROUPINGS

    now = int(time.time() * 1000)
    minute = (now - 20 * MINUTE) // MINUTE * MINUTE
    posts = [  # (id, scores at or above 0.5 = labels)
        ("n1", {"anger": 0.9, "annoyance": 0.8, "disgust": 0.7}),  # three negative emotions, two of Ekman anger
        ("n2", {"sadness": 0.9, "fear": 0.6}),                      # two negative
        ("n3", {"annoyance": 0.9, "joy": 0.6}),                     # one negative, one positive
        ("p1", {"joy": 0.9, "love": 0.8, "gratitude": 0.7}),        # three positive
        ("z1", {"neutral": 0.9}),
    ]
    _write(redis_server.url, [(pid, minute + 1000 * i, scores) for i, (pid, scores) in enumerate(posts)])
    labelled = {pid: [e for e, v in scores.items() if v >= 0.5] for pid, scores in posts}

    def by_hand(grouping: str, group: str) -> float:
        return 100 * sum(any(GROUPINGS[grouping][e] == group for e in labels) for labels in labelled.values()) / 5

    client = queries.connect(redis_server.url)
    window = queries.plan_window(now - queries.HOUR, now, now)
    raw = queries.emotion_series(client, ["acme"], window)
    for grouping, groups in (("sentiment", ["negative", "positive", "neutral"]), ("ekman", ["anger", "joy"])):
        frame = chart_frame(apply_grouping(raw, grouping), groups, "share")
        shares = {e: v for e, v, ts in zip(frame["emotion"], frame["value"], frame["ts"]) if ts == minute}
        assert shares == pytest.approx({g: by_hand(grouping, g) for g in groups}), grouping
    assert by_hand("sentiment", "negative") == 60.0  # 3 of 5 posts, where the member sum would say 6 of 5
    assert not apply_grouping(raw, "sentiment")["estimated"].any()
    # the per-emotion view never shows the group series
    assert not any(":" in e for e in apply_grouping(raw, "emotions")["emotion"])
    # shifts use the same counts: negative 3 posts = 60 % now, no earlier data before
    totals = queries.period_totals(client, ["acme"], now, queries.HOUR, now)
    negative = shift_table(totals, "sentiment").set_index("emotion").loc["negative"]
    assert negative["current"] == 3 and negative["current_share"] == pytest.approx(60.0)
    assert pd.isna(negative["previous_share"]) and negative["note"] == "no earlier data"


@pytest.mark.parametrize("watched", ["anger", "sentiment:negative"])
def test_alert_keeps_its_evidence_and_the_store_is_bounded_by_age(redis_server, watched):
    """The real alert engine snapshots the window's most angry posts into the alert (they outlive the recent-posts
    store), also when it watches a group series; the store drops posts older than recent_posts_max_age_ms before the
    newest one."""
    import json

    from monitor.alerts import AlertEngine
    from monitor.settings import MonitorSettings
    from monitor.store import RedisStore

    now = int(time.time() * 1000)
    start = now - 70 * MINUTE
    rows = [(f"s{i}", start + i * 30_000, {"anger": 0.9} if i % 10 == 0 else {"joy": 0.8}) for i in range(120)]
    rows += [(f"a{i}", start + 120 * 30_000 + i * 10_000, {"anger": 0.6 + i / 100} if i % 5 else {"joy": 0.8})
             for i in range(25)]
    cfg = MonitorSettings(redis_url=redis_server.url, alert_window_ms=5 * MINUTE, alert_baseline_ms=60 * MINUTE,
                          alert_min_volume=10, alert_min_baseline_posts=20, alert_ratio=3.0, alert_min_share=0.2,
                          alert_detector="threshold",  # pins the threshold rule's windows (default: statistical)
                          alert_cooldown_ms=0, alert_emotions=[watched], alert_evidence_posts=5,
                          recent_posts_max_age_ms=30 * MINUTE)

    async def run():
        from monitor.post import Post
        from monitor.store import ClassifiedPost

        store = RedisStore(cfg, EMOTIONS)
        try:
            items = []
            for post_id, created_at, scores in rows:
                full = {emotion: scores.get(emotion, 0.01) for emotion in EMOTIONS}
                post = Post(id=post_id, brands=["acme"], text=f"text {post_id}", created_at=created_at)
                items.append(ClassifiedPost(post, full, [e for e in EMOTIONS if full[e] >= 0.5], "test"))
            await store.write(items, np.full(len(EMOTIONS), 0.5))
            engine = AlertEngine(cfg, store, None, "test")
            engine.publish = _ignore
            return await engine.evaluate({"acme": rows[-1][1]})
        finally:
            await store.close()

    (alert,) = asyncio.run(run())
    assert alert.emotion == watched
    angry = sorted(((s["anger"], pid) for pid, _, s in rows[120:] if "anger" in s), reverse=True)
    assert [p["id"] for p in alert.evidence] == [pid for _, pid in angry[:5]]
    client = queries.connect(redis_server.url)
    stored = json.loads(client.zrange("em:alerts:brand:acme", 0, -1)[0])
    assert [p["id"] for p in stored["evidence"]] == [pid for _, pid in angry[:5]]
    assert stored["evidence"][0]["text"] == f"text {angry[0][1]}"
    # the store kept only the last 30 minutes before the newest post
    kept = client.zrange("em:posts:acme", 0, -1, withscores=True)
    assert min(score for _, score in kept) >= rows[-1][1] - 30 * MINUTE
    assert len(kept) == sum(1 for _, t, _ in rows if t >= rows[-1][1] - 30 * MINUTE)


async def _ignore(*args) -> None:
    return None


def test_a_posts_url_travels_to_the_stored_json():
    """The post explorer links to the original: the monitor keeps the source's ``url`` in the classified JSON."""
    import json

    from monitor.post import Post
    from monitor.store import ClassifiedPost

    post = Post.model_validate({"id": "u1", "brand": "acme", "text": "t", "created_at": 1,
                                "url": "https://example.com/p/1"})
    stored = json.loads(ClassifiedPost(post, {"joy": 0.9}, ["joy"], "test").to_json())
    assert stored["url"] == "https://example.com/p/1"
    row = queries.post_rows([stored], "joy")[0].iloc[0]
    assert row["url"] == "https://example.com/p/1" and row["labelled"]
    assert queries.post_rows([dict(stored, url="javascript:alert(1)")], "joy")[0].iloc[0]["url"] is None
