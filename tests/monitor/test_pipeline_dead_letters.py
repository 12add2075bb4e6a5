"""Dead letters on real tansu + Redis with the real (small) model: once per delivery, never a stalled partition, and
hostile values that are rejections (also in replay's recompute pre-scan). Only the failures are injected."""

from __future__ import annotations

import json

from monitor.pipeline import PROCESSING_FAILED
from tests.monitor.conftest import consume_all, create_topic, posts_total, produce
from tests.monitor.posts_data import encode, make_posts
from tests.monitor.test_pipeline_robustness import (  # noqa: F401 - classifier is a fixture
    BRANDS,
    POISON,
    FlakySend,
    PoisonClassifier,
    classifier,
    make_settings,
    metric,
    read_records,
    run_batches,
)

MALFORMED = [b"{not json", b"[1, 2]", b'{"id": "x", "brand": "acme", "text": "t", "created_at": Infinity}']


def test_rejections_are_dead_lettered_once_per_delivery_not_once_per_attempt(kafka_broker, redis_server,
                                                                             redis_client, classifier):
    """posts.classified fails 3 times (after the DLQ sends): each of the 3 retries used to send the batch's
    rejections again. Now: one copy each for this delivery; a second delivery of the same batch adds one more."""
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(20, BRANDS)
    produce(kafka_broker, "posts", encode(posts[:10]) + MALFORMED + encode(posts[10:]))
    records = read_records(kafka_broker, "posts", 23)
    settings = make_settings(kafka_broker, redis_server.url, poison_retries=5)
    before = metric("em_dlq_total", reason="not_json")

    def failing(send):
        return FlakySend(send, "posts.classified", 3, lambda: RuntimeError("broker refused"))

    [result] = run_batches(settings, classifier, [records], send_wrapper=failing)

    assert (result.counted, result.rejected, result.failed) == (20, 3, 0)
    dlq = consume_all(kafka_broker, "posts.dlq", 4, timeout=5)
    assert sorted(json.loads(r.value)["source_offset"] for r in dlq) == [10, 11, 12]
    assert metric("em_dlq_total", reason="not_json") - before == 1  # counted when the broker acked it, once
    [again] = run_batches(settings, classifier, [records])  # a redelivery (e.g. after a crash): at-least-once
    assert (again.counted, again.duplicates) == (0, 20)
    assert len(consume_all(kafka_broker, "posts.dlq", 7, timeout=5)) == 6
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 20


def test_a_record_that_cannot_be_dead_lettered_is_skipped_not_retried_forever(kafka_broker, redis_server,
                                                                              redis_client, classifier):
    """The broker refuses every dead letter (not an outage): the batch used to be isolated, fail, reset its failure
    count and start over forever, holding the partition. Now the record is skipped after bounded attempts, logged
    and counted, and the rest of the batch is counted."""
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(16, BRANDS)
    posts[5]["text"] = f"{POISON} {posts[5]['text']}"
    produce(kafka_broker, "posts", encode(posts[:8]) + [b"{not json"] + encode(posts[8:]))
    records = read_records(kafka_broker, "posts", 17)
    settings = make_settings(kafka_broker, redis_server.url, poison_retries=2)
    refusals = {}

    def refusing(send):
        refusals["send"] = FlakySend(send, "posts.dlq", 10**9, lambda: RuntimeError("topic authorization failed"))
        return refusals["send"]

    skipped = metric("em_dlq_undeliverable_total")
    [result] = run_batches(settings, PoisonClassifier(classifier), [records], send_wrapper=refusing)

    assert (result.records, result.counted, result.failed) == (17, 15, 2)  # the poison post and the malformed one
    assert metric("em_dlq_undeliverable_total") - skipped == 2
    # bounded: per record poison_retries + 1 envelope tries (the last without the original)
    assert 10**9 - refusals["send"].left < 100
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 15


def test_dead_letter_refused_with_its_original_is_sent_without_it(kafka_broker, redis_server, classifier):
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(4, BRANDS)
    posts[1]["text"] = f"{POISON} {posts[1]['text']}"
    produce(kafka_broker, "posts", encode(posts))
    records = read_records(kafka_broker, "posts", 4)
    settings = make_settings(kafka_broker, redis_server.url, poison_retries=1)

    class RefuseLarge:  # stands in for a broker whose max message size is below the envelope
        def __init__(self, send):
            self.send = send

        async def __call__(self, topic, key, value):
            if topic == "posts.dlq" and b'"original_b64": ""' not in value:
                raise RuntimeError("MessageSizeTooLargeError")
            return await self.send(topic, key, value)

    [result] = run_batches(settings, PoisonClassifier(classifier), [records], send_wrapper=RefuseLarge)

    assert (result.counted, result.failed) == (3, 1)
    [letter] = consume_all(kafka_broker, "posts.dlq", 1)
    envelope = json.loads(letter.value)
    assert envelope["reason"] == PROCESSING_FAILED and envelope["original_truncated"] is True
    assert envelope["original_size"] == len(records[1].value) and envelope["source_offset"] == records[1].offset


def test_recompute_pre_scan_goes_on_past_hostile_records(kafka_broker, redis_server, redis_client, small_model_dir):
    """Infinity or 100k-deep nesting made parse_post raise OverflowError/RecursionError, which aborted recompute's
    pre-scan before anything was recounted."""
    from tests.monitor.test_replay import replay, settings_for

    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(30, BRANDS)
    hostile = [b'{"id": "h1", "brand": "acme", "text": "t", "created_at": Infinity}',
               b'{"id": "h2", "brand": "acme", "text": "t", "created_at": 1e400}',
               b'{"id": "h3", "brand": "acme", "text": "t", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]
    produce(kafka_broker, "posts", encode(posts[:15]) + hostile + encode(posts[15:]))
    settings = settings_for(kafka_broker, redis_server.url, small_model_dir, max_post_bytes=400_000)
    result = replay(settings, mode="recompute")
    # recompute recounts the valid posts created in the span it cleared; a record that is no valid post has no
    # created_at to place it in a span (the worker dead-lettered it when it first read it), so it is not recounted
    assert (result.counted, result.rejected, result.failed) == (30, 0, 0)
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 30
