"""The batch pipeline under failure, on a real tansu broker and a real Redis with the real (small) model.

Only the failures are injected: a classifier wrapper that crashes on one marked text (a poison post) and a send
wrapper around the real producer that fails a few times first (a broker away or refusing). Everything else —
parsing, inference, the Redis script, the produced records — is the product's own code against real servers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from faust.exceptions import ProducerSendError
from prometheus_client import REGISTRY

from emotion_monitor.servers import free_port, start_redis
from monitor.inference import load_inference
from monitor.pipeline import PROCESSING_FAILED, BatchProcessor, Record
from monitor.settings import MonitorSettings
from monitor.store import RedisStore
from tests.monitor.conftest import consume_all, create_topic, posts_total, produce
from tests.monitor.posts_data import encode, make_posts

BRANDS = ("acme", "globex", "initech")
POISON = "POISON-TEXT"
FAST_RETRIES = {"retry_initial_s": 0.01, "retry_max_s": 0.05}


class PoisonClassifier:
    """Test-only: the real classifier, except that any call holding a text with ``POISON`` raises, as a model that
    crashes on some input would. Counts the calls it failed and the sizes of the calls it served."""

    def __init__(self, real):
        self.real = real
        self.failed_calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_proba(self, texts, **kwargs):
        if any(POISON in text for text in texts):
            self.failed_calls.append(len(texts))
            raise RuntimeError("model crashed on this text")
        return self.real.predict_proba(texts, **kwargs)


class FlakySend:
    """Test-only: the real send, except that the first ``failures`` sends to ``topic`` raise ``make_error()``."""

    def __init__(self, send, topic: str, failures: int, make_error):
        self.send, self.topic, self.left, self.make_error = send, topic, failures, make_error

    async def __call__(self, topic: str, key: bytes | None, value: bytes):
        if topic == self.topic and self.left > 0:
            self.left -= 1
            raise self.make_error()
        return await self.send(topic, key, value)


def faust_style_broker_error() -> Exception:
    """What Faust raises when the broker is away: ProducerSendError *from* aiokafka's retriable error."""
    try:
        raise KafkaConnectionError("injected: broker unreachable")
    except KafkaConnectionError as exc:
        try:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        except ProducerSendError as wrapped:
            return wrapped


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def classifier(small_model_dir):
    from trainer import load_classifier

    return load_classifier(small_model_dir, device="cpu")


def make_settings(kafka_broker, redis_url: str, **extra) -> MonitorSettings:
    return MonitorSettings(broker_url=kafka_broker.url, redis_url=redis_url, metrics_port=0, **FAST_RETRIES, **extra)


def read_records(kafka_broker, topic: str, n: int) -> list[Record]:
    rows = consume_all(kafka_broker, topic, n)
    assert len(rows) == n
    return [Record(r.value, r.timestamp, r.topic, r.partition, r.offset, r.key) for r in rows]


def run_batches(settings, classifier, batches, *, send_wrapper=None, inference=None):
    """Each batch through one real BatchProcessor (real Redis store, real producer); returns the results."""

    async def run():
        model = inference or load_inference(settings, classifier=classifier)
        producer = AIOKafkaProducer(bootstrap_servers=settings.broker_host_port(), linger_ms=5)
        await producer.start()
        store = RedisStore(settings, model.labels)
        try:
            async def send(topic, key, value):
                return await producer.send(topic, value, key=key)

            processor = BatchProcessor(settings, model, store, send_wrapper(send) if send_wrapper else send)
            return [await processor.process_until_done(batch) for batch in batches]
        finally:
            await producer.stop()
            await store.close()
            if inference is None:
                model.close()

    return asyncio.run(run())


def ids_on(kafka_broker, topic: str, expected: int, timeout: float = 20.0) -> list[str]:
    return [json.loads(r.value)["id"] for r in consume_all(kafka_broker, topic, expected, timeout=timeout)]


def test_poison_posts_are_isolated_to_the_dlq_and_the_rest_is_counted(kafka_broker, redis_server, redis_client,
                                                                      classifier):
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(40, BRANDS)
    for i in (7, 30):
        posts[i]["text"] = f"{POISON} {posts[i]['text']}"
    produce(kafka_broker, "posts", encode(posts))
    records = read_records(kafka_broker, "posts", 40)
    settings = make_settings(kafka_broker, redis_server.url, poison_retries=2)
    poisoned = PoisonClassifier(classifier)
    before = {"dlq": metric("em_dlq_total", reason=PROCESSING_FAILED), "failed": metric("em_posts_total",
              outcome="failed"), "delay": metric("em_end_to_end_delay_seconds_count")}

    [result] = run_batches(settings, poisoned, [records])

    assert (result.records, result.counted, result.failed, result.duplicates) == (40, 38, 2, 0)
    assert poisoned.failed_calls[:2] == [40, 40]  # poison_retries attempts at the whole batch, then bisection
    assert 40 not in poisoned.failed_calls[2:] and poisoned.failed_calls.count(1) == 2  # each poison failed alone
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 38
    dlq = consume_all(kafka_broker, "posts.dlq", 2)
    assert len(dlq) == 2
    envelopes = sorted((json.loads(r.value) for r in dlq), key=lambda e: e["source_offset"])
    for envelope, index in zip(envelopes, (7, 30)):
        assert envelope["reason"] == PROCESSING_FAILED
        assert envelope["detail"] == "RuntimeError: model crashed on this text"
        assert (envelope["source_topic"], envelope["source_offset"]) == ("posts", records[index].offset)
        assert base64.b64decode(envelope["original_b64"]) == records[index].value
    good_ids = {p["id"] for i, p in enumerate(posts) if i not in (7, 30)}
    assert set(ids_on(kafka_broker, "posts.classified", 38)) == good_ids
    assert metric("em_dlq_total", reason=PROCESSING_FAILED) - before["dlq"] == 2
    assert metric("em_posts_total", outcome="failed") - before["failed"] == 2
    assert metric("em_end_to_end_delay_seconds_count") - before["delay"] == 38  # counted posts only


def test_broker_and_redis_outages_are_waited_out_never_dead_lettered(kafka_broker, tmp_path, classifier):
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(30, BRANDS)
    produce(kafka_broker, "posts", encode(posts))
    records = read_records(kafka_broker, "posts", 30)
    port = free_port()  # Redis is not running yet
    settings = make_settings(kafka_broker, f"redis://127.0.0.1:{port}/0", poison_retries=1)
    # the broker refuses posts.classified 5 times (after the Redis write) with Faust's wrapped retriable error:
    # more failures than poison_retries allows, so an outage miscounted as poison would reach the DLQ
    flaky = {}

    def wrap(send):
        flaky["send"] = FlakySend(send, "posts.classified", 5, faust_style_broker_error)
        return flaky["send"]

    server = None

    async def start_redis_later():
        nonlocal server
        await asyncio.sleep(1.5)  # long past poison_retries x back-off
        server = await asyncio.to_thread(start_redis, port=port, log_dir=tmp_path)

    async def run():
        starter = asyncio.create_task(start_redis_later())
        result = await asyncio.to_thread(run_batches, settings, classifier, [records], send_wrapper=wrap)
        await starter
        return result

    try:
        [result] = asyncio.run(run())
        assert flaky["send"].left == 0
        assert (result.counted, result.duplicates, result.failed) == (30, 0, 0)  # earlier attempts' counts carried
        import redis

        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert sum(posts_total(client, b) for b in BRANDS) == 30
        finally:
            client.close()
        assert set(ids_on(kafka_broker, "posts.classified", 30)) == {p["id"] for p in posts}
        assert consume_all(kafka_broker, "posts.dlq", 1, timeout=3) == []
    finally:
        if server is not None:
            server.stop()


T0 = 1_795_654_800_000


def test_a_failure_after_the_redis_write_still_publishes_and_alerts(kafka_broker, redis_server, redis_client,
                                                                   classifier):
    """posts.classified fails once after the batch is counted: the retry finds every post already counted, yet
    publishes them all and runs the spike check; a redelivery afterwards fires nothing new (cooldown)."""
    create_topic(kafka_broker, "posts", 1)
    calm = [{"id": f"c{i}", "brand": "acme", "text": "calm", "created_at": T0 + i * 90_000} for i in range(40)]
    end = T0 + 40 * 90_000
    spike = [{"id": f"s{i}", "brand": "acme", "text": "spike", "created_at": end + i * 12_000} for i in range(20)]
    produce(kafka_broker, "posts", encode(calm + spike))
    records = read_records(kafka_broker, "posts", 60)
    alerting = {"alert_emotions": ["anger"], "alert_window_ms": 300_000, "alert_baseline_ms": 3_600_000,
                "alert_min_volume": 10, "alert_min_baseline_posts": 20, "alert_cooldown_ms": 900_000}
    # the same real model; thresholds make the calm hour anger-free and the spike all anger
    never = make_settings(kafka_broker, redis_server.url, threshold_overrides={"anger": 1.01}, **alerting)
    always = make_settings(kafka_broker, redis_server.url, threshold_overrides={"anger": 0.0}, **alerting)
    [calm_result] = run_batches(never, classifier, [records[:40]])
    assert calm_result.counted == 40 and calm_result.alerts == []

    def first_send_fails(send):
        return FlakySend(send, "posts.classified", 1, lambda: RuntimeError("broker refused"))

    spiked, redelivered = run_batches(always, classifier, [records[40:], records[40:]], send_wrapper=first_send_fails)

    assert (spiked.counted, spiked.duplicates) == (20, 0)
    assert [(a.brand, a.emotion) for a in spiked.alerts] == [("acme", "anger")]
    assert (redelivered.counted, redelivered.duplicates, redelivered.alerts) == (0, 20, [])
    assert posts_total(redis_client, "acme") == 60
    assert redis_client.zcard("em:alerts") == 1
    on_topic = consume_all(kafka_broker, "alerts", 2, timeout=5)
    assert len(on_topic) == 1 and json.loads(on_topic[0].value)["brand"] == "acme"
    # at-least-once: every spike post is on posts.classified (twice here: the redelivery republished them)
    published = ids_on(kafka_broker, "posts.classified", 80)
    assert set(published) == {p["id"] for p in calm + spike}
    assert all(published.count(p["id"]) == 2 for p in spike)


def test_delay_metric_observes_only_posts_counted_now(kafka_broker, redis_server, classifier):
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(6, BRANDS)
    sent_ms = int(time.time() * 1000) - 10_000  # record timestamps 10 s ago: each observation is about 10 s
    produce(kafka_broker, "posts", encode(posts[:3]) + [b"{not json", b"[1]"] + encode(posts[3:]),
            timestamps_ms=[sent_ms] * 8)
    records = read_records(kafka_broker, "posts", 8)
    settings = make_settings(kafka_broker, redis_server.url)
    first, second = records[:2], records  # posts 0 and 1 are duplicates in the second batch
    count, total = metric("em_end_to_end_delay_seconds_count"), metric("em_end_to_end_delay_seconds_sum")

    one, two = run_batches(settings, classifier, [first, second])

    assert (one.counted, two.counted, two.duplicates, two.rejected) == (2, 4, 2, 2)
    assert metric("em_end_to_end_delay_seconds_count") - count == 6  # 2 + 4: not the rejects, not the duplicates
    assert 6 * 10 <= metric("em_end_to_end_delay_seconds_sum") - total < 6 * 60
