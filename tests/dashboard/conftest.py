"""Known data in the monitor's schema, written to a real Redis (TimeSeries) for the dashboard tests.

Times are relative to "now" (the page reads the real clock) and kept well inside their periods, so seconds of test
run time cannot move a sample across a period boundary. Default range in these tests: the last hour, which the page
reads from the raw tier in 1-minute buckets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import dashboard
from dashboard.seed import add_alert, add_post, write_counts

MINUTE = 60_000
HOUR = 60 * MINUTE
APP_FILE = str(Path(dashboard.__file__).with_name("app.py"))


@dataclass
class Seeded:
    now_ms: int
    t0: int  # previous period (90 min ago)
    t1: int  # current period (30 min ago), the spike
    t2: int  # current period (10 min ago)
    counts: dict  # (brand, emotion, ts) -> count in the raw and 1m tiers
    hourly: dict  # (brand, emotion, hour start) -> count in the 1h tier
    alert: dict
    window_texts: list
    outside_text: str


def _floor_minute(ms: int) -> int:
    return ms // MINUTE * MINUTE


def seed_known(client) -> Seeded:
    now = int(time.time() * 1000)
    t0, t1, t2 = (_floor_minute(now - m * MINUTE) for m in (90, 30, 10))
    counts = {
        # previous period: 50 posts, joy 10 %, anger 2 %
        ("acme", "_all", t0): 50, ("acme", "joy", t0): 5, ("acme", "anger", t0): 1,
        # current period: 50 posts, joy 10 %, anger 60 % (the seeded shift), annoyance (ekman: anger) 4
        ("acme", "_all", t1): 30, ("acme", "joy", t1): 3, ("acme", "anger", t1): 20, ("acme", "annoyance", t1): 4,
        ("acme", "_all", t2): 20, ("acme", "joy", t2): 2, ("acme", "anger", t2): 10,
        ("globex", "_all", t1): 10, ("globex", "gratitude", t1): 7,
        # the monitor's group series (posts with at least one emotion of the group): at t1, 2 of the 20 angry posts
        # are annoyed too, so Ekman anger holds 22 posts (not 20 + 4) and so does sentiment negative
        ("acme", "ekman:joy", t0): 5, ("acme", "sentiment:positive", t0): 5,
        ("acme", "ekman:anger", t0): 1, ("acme", "sentiment:negative", t0): 1,
        ("acme", "ekman:joy", t1): 3, ("acme", "sentiment:positive", t1): 3,
        ("acme", "ekman:anger", t1): 22, ("acme", "sentiment:negative", t1): 22,
        ("acme", "ekman:joy", t2): 2, ("acme", "sentiment:positive", t2): 2,
        ("acme", "ekman:anger", t2): 10, ("acme", "sentiment:negative", t2): 10,
        ("globex", "ekman:joy", t1): 7, ("globex", "sentiment:positive", t1): 7,
    }
    hourly: dict = {}
    for (brand, emotion, ts), value in counts.items():
        key = (brand, emotion, ts // HOUR * HOUR)
        hourly[key] = hourly.get(key, 0) + value
    # what the monitor's compactions would hold: samples are minute-aligned, so the 1m tier equals the raw one
    for brand in ("acme", "globex"):
        for tier, table in (("raw", counts), ("1m", counts), ("1h", hourly)):
            write_counts(client, brand, tier, [(ts, e, v) for (b, e, ts), v in table.items() if b == brand])
    window_texts = ["acme support never answers", "furious about the acme outage", "acme billing is a scam"]
    for i, text in enumerate(window_texts):
        add_post(client, {
            "id": f"p{i}", "text": text, "brands": ["acme"], "created_at": t1 + i * 1000, "source": "demo",
            "author": f"user{i}", "scores": {"anger": 0.9 - i * 0.1, "joy": 0.01}, "labels": ["anger"],
            "model_version": "test",
        })
    outside_text = "acme is lovely today"
    add_post(client, {"id": "late", "text": outside_text, "brands": ["acme"], "created_at": t2, "source": "demo",
                      "author": "x", "scores": {"joy": 0.9}, "labels": ["joy"], "model_version": "test"})
    alert = {"brand": "acme", "emotion": "anger", "ts": t1 + MINUTE, "window_start": t1 - MINUTE,
             "window_end": t1 + MINUTE, "value": 0.67, "baseline": 0.02, "count": 20,
             "message": "anger spiked for acme: 67% of posts vs 2% baseline"}
    add_alert(client, alert)
    add_alert(client, {"brand": "globex", "emotion": "gratitude", "ts": t1, "window_start": t1 - MINUTE,
                       "window_end": t1 + MINUTE, "value": 0.7, "baseline": 0.1, "count": 7,
                       "message": "gratitude spiked for globex"})
    return Seeded(now, t0, t1, t2, counts, hourly, alert, window_texts, outside_text)


@pytest.fixture()
def seeded(redis_client) -> Seeded:
    return seed_known(redis_client)


@pytest.fixture()
def dashboard_env(monkeypatch, redis_server):
    """Point the page at the test Redis; open access, last hour by default."""
    for name in ("PASSWORD", "OIDC_PROVIDER"):
        monkeypatch.delenv(f"EM_DASHBOARD_{name}", raising=False)
    monkeypatch.setenv("EM_DASHBOARD_REDIS_URL", redis_server.url)
    monkeypatch.setenv("EM_DASHBOARD_DEFAULT_RANGE", "1h")
    monkeypatch.setenv("EM_DASHBOARD_REDIS_TIMEOUT_SECONDS", "1")
    return monkeypatch
