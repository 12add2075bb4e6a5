"""The contract with the writer: what the monitor's own ``RedisStore`` writes is what the dashboard's queries read.

Uses the monitor's real store (its series, labels, compaction rules raw -> 1m -> 1h, Lua write script) against a
real Redis; only the classifier is left out (scores are given).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
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
        return {(e, ts): v for e, ts, v in zip(frame["emotion"], frame["ts"], frame["count"]) if v}

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
