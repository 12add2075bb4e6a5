"""Online prior tracking (monitor.priors) against a real Redis: the estimate series recover known priors.

The probabilities come from a synthetic *calibrated* scorer under pure label shift (as in
tests/trainer/test_adaptation.py), so the truth is known: each brand's stream draws labels with its own priors.
Tolerance: the EM prior within 0.02 and the adjusted share within 0.04 of the realised share at 2,000 posts.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from monitor import schema
from monitor.priors import PriorTracker, adaptation_rates
from monitor.settings import MonitorSettings
from trainer.adaptation import em_priors, rates_at_thresholds

LABELS = ["anger", "joy", "neutral"]
SOURCE = np.array([0.036, 0.15, 0.30])
THRESHOLDS = np.array([0.3, 0.4, 0.5])
SEPARATION = 3.0
BASE_MS = 1_795_654_800_000  # a whole minute


def _sample(priors, n, rng):
    y = rng.random((n, len(priors))) < np.asarray(priors)[None, :]
    x = rng.normal(np.where(y, SEPARATION / 2, -SEPARATION / 2), 1.0)
    logit_source = np.log(SOURCE / (1 - SOURCE))
    return y, 1 / (1 + np.exp(-(SEPARATION * x + logit_source[None, :])))


@pytest.fixture(scope="module")
def rates():
    y, p = _sample(SOURCE, 30_000, np.random.default_rng(0))
    tpr, fpr = rates_at_thresholds(p, y, THRESHOLDS)
    return {"label_priors": SOURCE, "tpr": tpr, "fpr": fpr}


def _series(client, brand, emotion, metric):
    key = schema.estimate_key(brand, emotion, metric)
    return client.ts().range(key, 0, "+") if client.exists(key) else []


def test_tracker_writes_priors_and_adjusted_shares_that_recover_the_truth(redis_server, redis_client, rates):
    settings = MonitorSettings(redis_url=redis_server.url, prior_min_posts=500, prior_window_ms=10 * 60_000)
    rng = np.random.default_rng(1)
    shifted = [0.34, 0.05, 0.30]  # acme: an anger-rich stream
    y_acme, p_acme = _sample(shifted, 2000, rng)
    y_few, p_few = _sample(SOURCE, 200, rng)  # globex: too few posts for its own estimate
    probs = np.vstack([p_acme, p_few])
    brands = [["acme"]] * 2000 + [["globex"]] * 200
    created = BASE_MS + np.arange(2200) * 150  # 5.5 minutes of stream

    async def run():
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            tracker = PriorTracker(settings, LABELS, THRESHOLDS, rates, client)
            for start in range(0, 2200, 256):  # micro-batches, as the worker observes them
                tracker.observe(probs[start:start + 256], brands[start:start + 256], created[start:start + 256])
            await tracker.flush(force=True)
            return tracker
        finally:
            await client.aclose()

    tracker = asyncio.run(run())
    truth = y_acme.mean(axis=0)
    newest_minute_ms = int(created.max()) // 60_000 * 60_000
    for j, emotion in enumerate(LABELS):
        [(ts, prior)] = _series(redis_client, "acme", emotion, "prior")
        [(_, adjusted)] = _series(redis_client, "acme", emotion, "adjusted")
        assert ts == newest_minute_ms
        assert abs(prior - truth[j]) <= 0.02, (emotion, prior, truth[j])
        assert abs(adjusted - truth[j]) <= 0.04, (emotion, adjusted, truth[j])
        assert _series(redis_client, "globex", emotion, "prior") == []  # below prior_min_posts: no own estimate
        assert _series(redis_client, schema.ALL_BRANDS, emotion, "prior")  # ... but in the all-brands one
    # the raw flagged share misses anger badly: the correction is doing the work
    assert abs((p_acme[:, 0] >= THRESHOLDS[0]).mean() - truth[0]) > 0.05
    assert _series(redis_client, "acme", "_all", "window_posts") == [(newest_minute_ms, 2000.0)]
    assert _series(redis_client, schema.ALL_BRANDS, "_all", "window_posts") == [(newest_minute_ms, 2200.0)]
    # labelled so that count queries (tier=raw|1m|1h) never see them
    info = redis_client.ts().info(schema.estimate_key("acme", "anger", "prior"))
    assert info.labels == schema.estimate_labels("acme", "anger", "prior") and info.labels["tier"] == "estimate"
    # the all-brands estimate is EM over every post once, up to the histogram's binning
    exact, _ = em_priors(probs, SOURCE)
    assert np.allclose(tracker.latest[schema.ALL_BRANDS]["prior"], exact, atol=0.003)


def test_minutes_leave_the_window_and_a_reestimate_replaces_the_minute(redis_server, redis_client, rates):
    settings = MonitorSettings(redis_url=redis_server.url, prior_min_posts=100, prior_window_ms=2 * 60_000)
    rng = np.random.default_rng(2)
    _, p_old = _sample([0.6, 0.05, 0.3], 600, rng)  # an anger burst in minute 0
    y_new, p_new = _sample([0.05, 0.05, 0.3], 600, rng)  # calm in minutes 5 and 6

    async def run():
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            tracker = PriorTracker(settings, LABELS, THRESHOLDS, rates, client)
            tracker.observe(p_old, [["acme"]] * 600, BASE_MS + np.arange(600) * 50)
            tracker.observe(p_new[:300], [["acme"]] * 300, np.full(300, BASE_MS + 5 * 60_000 + 10))
            await tracker.flush(force=True)
            first = tracker.latest["acme"]["prior"].copy()
            tracker.observe(p_new[300:], [["acme"]] * 300, np.full(300, BASE_MS + 6 * 60_000 - 10))
            await tracker.flush(force=True)
            return first, tracker
        finally:
            await client.aclose()

    first, tracker = asyncio.run(run())
    # the burst is 5 minutes old: outside the 2-minute window, so it moves neither estimate
    assert first[0] < 0.12 and tracker.latest["acme"]["posts"] == 600
    rows = _series(redis_client, "acme", "anger", "prior")
    assert [ts for ts, _ in rows] == [BASE_MS + 5 * 60_000]  # same minute written twice: LAST, one sample
    assert np.isclose(rows[0][1], tracker.latest["acme"]["prior"][0])
    assert abs(rows[0][1] - y_new[:, 0].mean()) < 0.03
    assert BASE_MS // 60_000 not in tracker._windows["acme"].minutes  # pruned from memory too
    assert sorted(tracker._windows["acme"].minutes) == [BASE_MS // 60_000 + 5]


def test_quiet_and_busy_minutes_mix_in_one_estimate(rates):
    """Quiet minutes keep their posts' probabilities, busy ones a histogram; EM over the mix matches EM over the
    posts to the histogram's binning."""
    settings = MonitorSettings(prior_min_posts=1, prior_window_ms=30 * 60_000)
    _, p = _sample([0.2, 0.1, 0.3], 1000, np.random.default_rng(6))
    quiet = BASE_MS + np.arange(200) * 15_000  # 4 posts a minute for 50 minutes: rows
    busy = np.full(800, BASE_MS + 50 * 60_000)  # then 800 posts in one minute: a histogram
    tracker = PriorTracker(settings, LABELS, THRESHOLDS, rates, redis=None)
    tracker.observe(p[:200], [["quiet"]] * 200, quiet)
    only_rows = tracker.estimate()["quiet"]
    kept = quiet // 60_000 >= quiet.max() // 60_000 - 29  # the window: the last 30 minutes
    assert only_rows["posts"] == kept.sum() == 120
    assert np.allclose(only_rows["prior"], em_priors(p[:200][kept], SOURCE, tol=1e-6)[0], atol=0.003)
    windows = tracker._windows["quiet"].minutes.values()
    assert all(entry["hist"] is None for entry in windows)
    tracker.observe(p[200:], [["busy"]] * 800, busy)
    both = tracker.estimate()[schema.ALL_BRANDS]
    first = busy[0] // 60_000 - 29
    mask = np.concatenate([quiet // 60_000 >= first, np.ones(800, bool)])
    assert both["posts"] == mask.sum()
    assert np.allclose(both["prior"], em_priors(p[mask], SOURCE, tol=1e-6)[0], atol=0.003)


class _Inference:
    labels = LABELS
    thresholds = THRESHOLDS
    version = "test-model"

    def __init__(self, adaptation):
        self.adaptation = adaptation


class _Store:
    redis = None


def test_no_tracker_without_rates_or_when_off(caplog, rates):
    settings = MonitorSettings()
    with caplog.at_level(logging.WARNING, logger="monitor.priors"):
        assert PriorTracker.for_processor(settings, _Inference(None), _Store()) is None
    assert "no label_priors/tpr/fpr" in caplog.text
    assert PriorTracker.for_processor(MonitorSettings(prior_tracking=False), _Inference(rates), _Store()) is None
    tracker = PriorTracker.for_processor(MonitorSettings(threshold_overrides={"joy": 0.9}), _Inference(rates), _Store())
    assert tracker is not None and tracker.acc_labels.tolist() == [True, False, True]


def test_rates_read_from_a_classifier_in_label_order_or_not_at_all():
    class Classifier:
        label_priors = {"joy": 0.2, "anger": 0.1, "neutral": 0.3}
        tpr = [0.5, 0.6, 0.7]
        fpr = np.array([0.01, 0.02, 0.03])

    rates = adaptation_rates(Classifier(), LABELS)
    assert rates["label_priors"].tolist() == [0.1, 0.2, 0.3] and rates["tpr"].tolist() == [0.5, 0.6, 0.7]
    Classifier.tpr = [0.5, 0.6]  # wrong length
    assert adaptation_rates(Classifier(), LABELS) is None
    Classifier.tpr = None
    assert adaptation_rates(Classifier(), LABELS) is None


def test_a_failed_write_never_fails_the_caller_and_is_retried(redis_server, redis_client, rates, caplog):
    from emotion_monitor.servers import free_port

    settings = MonitorSettings(prior_min_posts=10)
    _, p = _sample(SOURCE, 50, np.random.default_rng(4))

    async def run():
        import redis.asyncio as aioredis

        nowhere = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        tracker = PriorTracker(settings, LABELS, THRESHOLDS, rates, nowhere)
        tracker.observe(p, [["acme"]] * 50, np.full(50, BASE_MS))
        with caplog.at_level(logging.WARNING, logger="monitor.priors"):
            await tracker.flush(force=True)  # Redis unreachable: logged, not raised
            await tracker.flush(force=True)
        await nowhere.aclose()
        tracker.redis = aioredis.Redis.from_url(redis_server.url)
        await tracker.flush(force=True)  # the aggregates were kept: written now
        await tracker.redis.aclose()

    asyncio.run(run())
    assert caplog.text.count("could not estimate or write the prior series") == 1
    assert _series(redis_client, "acme", "anger", "prior")
