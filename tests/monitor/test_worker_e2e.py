"""End to end through a real worker process: tansu -> worker -> Redis TimeSeries and posts.classified."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np

from emotion_monitor.servers import free_port

from tests.monitor.conftest import (
    consume_all, create_topic, emotion_totals, monitor_env, posts_total, produce, wait_until,
)
from tests.monitor.posts_data import encode, make_posts

N = 240
BRANDS = ("acme", "globex", "initech")


def expected_counts(model_dir, posts, brand):
    """(low, high) bounds per emotion from the same model, loaded in-process the way the worker loads it (default
    settings: int8 on CPU); texts within 1e-2 of a threshold may flip with batch composition (padding changes int8
    activation scales more than fp32 rounding), so they widen the bound instead of making the test flaky."""
    from monitor.inference import load_inference
    from monitor.settings import MonitorSettings

    inference = load_inference(MonitorSettings(model_path=str(model_dir), device="cpu"))
    assert inference.precision == "int8"  # the worker's default on CPU, so the same arithmetic
    texts = [p["text"] for p in posts if p["brand"] == brand]
    proba = inference.predict_blocking(texts)
    inference.close()
    sure = (proba >= inference.thresholds + 1e-2).sum(axis=0)
    maybe = (proba >= inference.thresholds - 1e-2).sum(axis=0)
    return {name: (int(sure[j]), int(maybe[j])) for j, name in enumerate(inference.labels)}


def test_end_to_end_exact_totals_and_classified_topic(kafka_broker, redis_server, redis_client, small_model_dir,
                                                     start_worker):
    create_topic(kafka_broker, "posts", 3)
    posts = make_posts(N, BRANDS)
    produce(kafka_broker, "posts", encode(posts))
    port = free_port()
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir, metrics_port=str(port)))
    wait_until(lambda: sum(posts_total(redis_client, b) for b in BRANDS) >= N, 120, what="all posts counted",
               worker=worker)
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
    assert health["ok"] is True and health["model_version"].startswith("untrained-test-model")

    def counted(metrics: str) -> float:
        return float(re.search(r'em_posts_total\{outcome="counted"\} (\S+)', metrics).group(1))

    def metrics_once_counted() -> str | None:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return metrics if counted(metrics) >= N else None

    # the counter moves when the whole batch is done (its posts.classified records acknowledged), a moment after
    # its Redis write: wait for it to catch up with the totals, then require it to be exact
    metrics = wait_until(metrics_once_counted, 30, what="em_posts_total counted", worker=worker)
    assert counted(metrics) == N
    assert "em_end_to_end_delay_seconds_bucket" in metrics and "em_batch_size_count" in metrics
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == N // 3
        counts = emotion_totals(redis_client, brand, "count")
        for emotion, (low, high) in expected_counts(small_model_dir, posts, brand).items():
            assert low <= counts.get(emotion, 0) <= high, (brand, emotion, counts.get(emotion), low, high)
        scores = emotion_totals(redis_client, brand, "score")
        assert len(scores) == 28 and all(0 < v < N for v in scores.values())
    assert redis_client.smembers("em:brands") == set(BRANDS)
    classified = consume_all(kafka_broker, "posts.classified", N)
    assert len(classified) == N
    body = json.loads(classified[0].value)
    assert set(body) >= {"id", "brands", "text", "created_at", "scores", "labels", "model_version"}
    assert len(body["scores"]) == 28
    assert {json.loads(r.value)["id"] for r in classified} == {p["id"] for p in posts}
    recent = redis_client.zrangebyscore("em:posts:acme", 0, "+inf")
    assert len(recent) == N // 3 and np.all(np.diff([json.loads(r)["created_at"] for r in recent]) > 0)
