"""Batch helpers of the pipeline equal their one-at-a-time originals: a batch's classified posts built at once
(``ClassifiedPost.many``, the worker's path) — the same scores, labels and JSON byte for byte, the 4-digit rounding
included — and a batch's delays observed at once (``observe_many``) — the same histogram."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.post import Post
from monitor.store import ClassifiedPost, round_scores

EMOTIONS = ["anger", "joy", "neutral", "sadness", "fear"]


def test_round_scores_is_pythons_round_including_near_halves():
    rng = np.random.default_rng(7)
    plain = rng.random((200, 28)).astype(np.float32)
    # values at and around k + 0.5 ten-thousandths, where x * 1e4 itself rounds: the cases numpy alone can get wrong
    halves = (np.arange(0, 10_000) * 2 + 1) / 20_000
    near = np.concatenate([halves, np.nextafter(halves, 0), np.nextafter(halves, 1),
                           halves.astype(np.float32).astype(np.float64)])
    for matrix in (plain, near.reshape(-1, 4), np.array([[0.0, 1.0, 0.99995, 5e-05]])):
        expected = [[round(float(v), 4) for v in row] for row in np.asarray(matrix, dtype=np.float64)]
        assert round_scores(matrix) == expected


def test_many_equals_one_at_a_time_byte_for_byte():
    rng = np.random.default_rng(3)
    thresholds = np.array([0.5, 0.4, 0.3, 0.35, 0.6], dtype=np.float32)
    proba = rng.random((64, len(EMOTIONS))).astype(np.float32)
    proba[0] = thresholds  # exactly at the threshold: counted as above, as one at a time
    proba[1] = np.nextafter(thresholds, np.float32(0))
    posts = [Post(id=f"p{i}", brands=["acme", "globex"][: 1 + i % 2], text=f"text é {i}", created_at=1_000 + i,
                  source="test" if i % 3 else None) for i in range(len(proba))]
    batch = ClassifiedPost.many(posts, proba, EMOTIONS, thresholds, "v1")
    single = [ClassifiedPost.from_probabilities(p, row, EMOTIONS, thresholds, "v1") for p, row in zip(posts, proba)]
    assert batch == single
    assert [b.to_json_bytes() for b in batch] == [s.to_json_bytes() for s in single]
    assert [b.to_json() for b in batch] == [s.to_json() for s in single]
    assert batch[0].labels == EMOTIONS and batch[1].labels == []
    body = json.loads(batch[5].to_json())
    assert body["scores"] == {e: round(float(v), 4) for e, v in zip(EMOTIONS, proba[5])}


def test_many_refuses_a_matrix_that_does_not_match_the_posts():
    posts = [Post(id="p", brands=["acme"], text="t", created_at=1)]
    with pytest.raises(ValueError, match="shape"):
        ClassifiedPost.many(posts, np.zeros((2, len(EMOTIONS))), EMOTIONS, np.zeros(len(EMOTIONS)), "v1")


def test_the_json_holds_the_posts_own_fields_as_to_dict_gives_them():
    post = Post(id="p", brands=["acme"], text="t", created_at=5, url="https://example.org/p", lang=None)
    post = post.model_copy(update={"matched": {"acme": "acme"}})  # set by brand matching at ingest
    item = ClassifiedPost.many([post], np.array([[0.9, 0.1, 0.2, 0.3, 0.4]], dtype=np.float32), EMOTIONS,
                               np.full(len(EMOTIONS), 0.5, dtype=np.float32), "v2")[0]
    body = json.loads(item.to_json_bytes())
    assert body == {**post.to_dict(), "scores": {e: round(float(np.float32(v)), 4) for e, v in
                                                 zip(EMOTIONS, [0.9, 0.1, 0.2, 0.3, 0.4])},
                    "labels": ["anger"], "model_version": "v2"}
    assert "lang" not in body and body["matched"] == {"acme": "acme"}
    assert item == ClassifiedPost(post, item.scores, ["anger"], "v2")


def test_observe_many_counts_as_observe_one_at_a_time():
    from prometheus_client import CollectorRegistry, Histogram

    from monitor.metrics import observe_many

    registry = CollectorRegistry()
    bounds = (0.05, 0.1, 0.25, 0.5, 1, 2, 5)
    one, many = (Histogram(name, "delay", buckets=bounds, registry=registry) for name in ("one", "many"))
    amounts = [0.0, 0.05, 0.0500001, 0.1, 0.3, 0.3, 2.0, 4.99, 5.0, 7.5, 1e9]
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts)
    observe_many(many, [])

    got = {(s.name[len("many"):], s.labels.get("le")): s.value
           for m in registry.collect() if m.name == "many" for s in m.samples if not s.name.endswith("_created")}
    want = {(s.name[len("one"):], s.labels.get("le")): s.value
            for m in registry.collect() if m.name == "one" for s in m.samples if not s.name.endswith("_created")}
    assert got.keys() == want.keys() and got[("_count", None)] == len(amounts)
    assert got == pytest.approx(want)
