"""End to end through a real worker process: tansu -> worker -> Redis TimeSeries and posts.classified."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np
import pytest

from emotion_monitor.servers import free_port

from tests.monitor.conftest import (
    consume_all, create_topic, emotion_totals, monitor_env, posts_total, predicted, produce, wait_until,
)
from tests.monitor.posts_data import encode, make_posts

N = 240
BRANDS = ("acme", "globex", "initech")


def reference_scores(model_dir, posts):
    """The model's probabilities for ``posts``, in-process, loaded the way the worker loads it with fp32 on CPU, and
    per emotion a threshold in the widest gap between two neighbouring scores of the middle 60 % of posts.

    fp32 arithmetic moves a probability by ~1e-6 with batch composition (padding), while those gaps are ~1e-3 wide:
    so every post sits far from every threshold, and the worker's counts must equal these exactly. (int8, the CPU
    default, moves scores by up to ~1e-2: test_int8 covers it.)"""
    from monitor.inference import load_inference
    from monitor.settings import MonitorSettings

    inference = load_inference(MonitorSettings(model_path=str(model_dir), device="cpu", cpu_precision="fp32",
                                               inference_isolation="thread"))
    assert inference.precision == "fp32"
    proba = predicted(inference, [p["text"] for p in posts]).astype(np.float64)
    labels = list(inference.labels)
    inference.close()
    thresholds = {}
    low, high = int(0.2 * len(posts)), int(0.8 * len(posts))
    for j, name in enumerate(labels):
        ordered = np.sort(proba[:, j])
        k = low + int(np.argmax(np.diff(ordered)[low:high]))
        assert ordered[k + 1] - ordered[k] > 1e-4, (name, ordered[k + 1] - ordered[k])
        thresholds[name] = float((ordered[k] + ordered[k + 1]) / 2)
    return labels, proba, thresholds


def test_end_to_end_exact_totals_and_classified_topic(kafka_broker, redis_server, redis_client, small_model_dir,
                                                     start_worker):
    create_topic(kafka_broker, "posts", 3)
    posts = make_posts(N, BRANDS)
    labels, proba, thresholds = reference_scores(small_model_dir, posts)
    produce(kafka_broker, "posts", encode(posts))
    port = free_port()
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir, metrics_port=str(port),
                                      cpu_precision="fp32", threshold_overrides=thresholds))
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
    from monitor.taxonomy import group_series

    limits = np.array([thresholds[name] for name in labels])
    groups = group_series(labels)  # Ekman / sentiment groups: a post counts once if any member is above threshold
    assert groups
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == N // 3
        rows = proba[[i for i, p in enumerate(posts) if p["brand"] == brand]]
        above = rows >= limits
        expected_counts = {name: int(n) for name, n in zip(labels, above.sum(axis=0)) if n}
        assert 0 < sum(expected_counts.values()) < len(rows) * len(labels)  # thresholds split the posts
        expected_counts.update({name: int(above[:, members].any(axis=1).sum()) for name, members in groups
                                if above[:, members].any(axis=1).any()})
        assert emotion_totals(redis_client, brand, "count") == expected_counts
        scores = emotion_totals(redis_client, brand, "score")
        assert set(scores) == set(labels) | {name for name, _ in groups}
        for j, name in enumerate(labels):
            assert scores[name] == pytest.approx(rows[:, j].sum(), rel=1e-5), (brand, name)
        for name, members in groups:  # a group's score: the highest member score per post
            assert scores[name] == pytest.approx(rows[:, members].max(axis=1).sum(), rel=1e-5), (brand, name)
    assert redis_client.smembers("em:brands") == set(BRANDS)
    classified = consume_all(kafka_broker, "posts.classified", N)
    assert len(classified) == N
    body = json.loads(classified[0].value)
    assert set(body) >= {"id", "brands", "text", "created_at", "scores", "labels", "model_version"}
    assert len(body["scores"]) == 28
    assert {json.loads(r.value)["id"] for r in classified} == {p["id"] for p in posts}
    row_of = {p["id"]: i for i, p in enumerate(posts)}
    for record in classified:  # each post's labels and (4-decimal) scores, as computed in-process
        body = json.loads(record.value)
        i = row_of[body["id"]]
        assert body["labels"] == [name for j, name in enumerate(labels) if proba[i, j] >= limits[j]]
        assert [body["scores"][name] for name in labels] == pytest.approx(proba[i], abs=6e-5)
    recent = redis_client.zrangebyscore("em:posts:acme", 0, "+inf")
    assert len(recent) == N // 3 and np.all(np.diff([json.loads(r)["created_at"] for r in recent]) > 0)
