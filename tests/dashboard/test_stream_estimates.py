"""The stream-adjusted share on the dashboard: the monitor's own PriorTracker writes estimate series into a real
Redis, the query reads back exactly what it wrote (the brand's own estimate, or the all-brands one for a brand with
too few posts), the trust note explains when not to trust it, and the page shows it beside the raw share."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

from dashboard import queries
from dashboard.transforms import estimate_trust
from monitor import schema
from monitor.priors import PriorTracker
from monitor.settings import MonitorSettings

from .conftest import seed_known
from .test_app import run_app

pytestmark = pytest.mark.timeout(120)

LABELS = ["anger", "joy", "neutral"]
SOURCE = np.array([0.036, 0.15, 0.30])
THRESHOLDS = np.array([0.3, 0.4, 0.5])
RATES = {"label_priors": SOURCE, "tpr": np.array([0.7, 0.75, 0.8]), "fpr": np.array([0.02, 0.05, 0.1])}


def write_estimates(redis_url: str, created_ms: int) -> PriorTracker:
    """600 acme posts (anger-rich) and 50 globex posts through the monitor's tracker; returns it (``latest``)."""
    rng = np.random.default_rng(5)
    y = rng.random((650, 3)) < np.array([0.4, 0.1, 0.3])
    x = rng.normal(np.where(y, 1.5, -1.5), 1.0)
    probs = 1 / (1 + np.exp(-(3 * x + np.log(SOURCE / (1 - SOURCE)))))
    settings = MonitorSettings(redis_url=redis_url, prior_min_posts=300)

    async def run():
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            tracker = PriorTracker(settings, LABELS, THRESHOLDS, RATES, client)
            tracker.observe(probs, [["acme"]] * 600 + [["globex"]] * 50, np.full(650, created_ms))
            await tracker.flush(force=True)
            return tracker
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_query_reads_the_trackers_estimates_with_fallback_and_trust(redis_server, redis_client):
    now = int(time.time() * 1000)
    created = now - 5 * 60_000
    tracker = write_estimates(redis_server.url, created)
    minute = created // 60_000 * 60_000

    frame = queries.stream_estimates(redis_client, ["acme", "globex", "initech"], now)
    acme = frame[frame["brand"] == "acme"].set_index("emotion")
    own = tracker.latest["acme"]
    assert list(acme.index) == sorted(LABELS) and set(acme["scope"]) == {"brand"}
    for j, emotion in enumerate(LABELS):
        assert acme.loc[emotion, "prior"] == pytest.approx(own["prior"][j], abs=1e-12)
        assert acme.loc[emotion, "adjusted"] == pytest.approx(own["adjusted"][j], abs=1e-12)
        assert acme.loc[emotion, "share"] == pytest.approx(own["share"][j], abs=1e-12)
    assert set(acme["window_posts"]) == {600.0} and set(acme["ts"]) == {minute}
    # globex (50 posts) and initech (none) have no own estimate: the all-brands one, labelled as such
    for brand in ("globex", "initech"):
        mine = frame[frame["brand"] == brand].set_index("emotion")
        assert set(mine["scope"]) == {"all brands"} and set(mine["window_posts"]) == {650.0}
        assert mine.loc["anger", "prior"] == pytest.approx(tracker.latest[schema.ALL_BRANDS]["prior"][0])
    # before the estimate was written there is none
    assert queries.stream_estimates(redis_client, ["acme"], minute - 1).empty

    notes = estimate_trust(frame, now).set_axis(frame["brand"] + ":" + frame["emotion"])
    assert notes["globex:anger"].startswith("too few posts for this brand")
    gap = (frame["adjusted"] - frame["prior"]).abs().set_axis(notes.index)
    for key in [k for k in notes.index if k.startswith("acme:")]:
        assert (notes[key] == "ok") == (gap[key] <= 0.05), (key, notes[key], gap[key])
    assert "min old" in estimate_trust(frame, now + 3_600_000).iloc[0]


def test_trust_note_flags_disagreement_and_missing_adjusted_share():
    frame = pd.DataFrame({"scope": ["brand", "brand", "brand"], "ts": [0, 0, 0],
                          "adjusted": [0.30, 0.30, float("nan")], "prior": [0.28, 0.45, 0.2]})
    notes = estimate_trust(frame, now_ms=60_000).tolist()
    assert notes[0] == "ok"
    assert notes[1].startswith("estimators disagree by 15 pp")
    assert notes[2] == "no adjusted share (threshold overridden)"


def test_page_shows_the_adjusted_share_beside_the_raw_share(dashboard_env, redis_server, redis_client):
    seed_known(redis_client)
    now = int(time.time() * 1000)
    tracker = write_estimates(redis_server.url, now - 5 * 60_000)
    at = run_app()
    table = next(d.value for d in at.dataframe if "share, adjusted for this stream %" in d.value.columns)
    anger = table[table["emotion"] == "anger"].iloc[0]
    assert anger["brand"] == "acme"
    assert anger["raw share %"] == f"{100 * tracker.latest['acme']['share'][0]:.1f}"
    assert anger["share, adjusted for this stream %"] == f"{100 * tracker.latest['acme']['adjusted'][0]:.1f}"
    assert any("window of 600 posts" in c.value for c in at.caption)


def test_page_explains_a_missing_estimate(dashboard_env, redis_client):
    seed_known(redis_client)
    at = run_app()
    assert any("No stream estimate yet" in i.value for i in at.info)
