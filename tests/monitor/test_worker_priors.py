"""The worker's batch pipeline writes the stream-prior and adjusted-share series, on a real tansu broker and a real
Redis with the real (small) model: the EM prior equals EM over the same posts' probabilities, the adjusted share
equals adjusted classify-and-count of the exactly-once count series, a redelivered batch changes neither, and a model
without label_priors/tpr/fpr writes no estimate at all."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from monitor import schema
from monitor.inference import load_inference
from monitor.pipeline import BatchProcessor, Record
from monitor.settings import MonitorSettings
from monitor.store import RedisStore
from tests.monitor.conftest import consume_all, create_topic, posts_total, predicted, produce
from tests.monitor.posts_data import encode, make_posts
from trainer.adaptation import acc_from_rates, em_priors

BRANDS = ("acme", "acme", "acme", "globex")  # acme 3/4 of the posts, globex 1/4
N = 240


class WithRates:
    """Test-only: the real classifier plus the ``label_priors``/``tpr``/``fpr`` a calibrated artifact carries (here
    chosen, so the expected figures do not depend on a calibration fit)."""

    def __init__(self, real, label_priors, tpr, fpr):
        self.real, self.label_priors, self.tpr, self.fpr = real, label_priors, tpr, fpr

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def classifier(small_model_dir):
    from trainer import load_classifier

    return load_classifier(small_model_dir, device="cpu")


def _run(settings, classifier, batches):
    """Each batch through one real BatchProcessor (real store, real producer); returns (results, probabilities of
    the first batch's texts from the same inference object)."""

    async def run():
        model = load_inference(settings, classifier=classifier)
        producer = AIOKafkaProducer(bootstrap_servers=settings.broker_host_port(), linger_ms=5)
        await producer.start()
        store = RedisStore(settings, model.labels)
        try:
            async def send(topic, key, value):
                return await producer.send(topic, value, key=key)

            processor = BatchProcessor(settings, model, store, send)
            results = [await processor.process_until_done(batch) for batch in batches]
            return results, processor, model
        finally:
            await producer.stop()
            await store.close()
            model.close()

    return asyncio.run(run())


def _records(kafka_broker, n):
    rows = consume_all(kafka_broker, "posts", n)
    assert len(rows) == n
    return [Record(r.value, r.timestamp, r.topic, r.partition, r.offset, r.key) for r in rows]


def _latest(client, brand, emotion, metric):
    key = schema.estimate_key(brand, emotion, metric)
    return client.ts().get(key)[1] if client.exists(key) else None


def test_worker_writes_prior_and_adjusted_share_series(kafka_broker, redis_server, redis_client, classifier):
    create_topic(kafka_broker, "posts", 1)
    posts = make_posts(N, BRANDS)
    produce(kafka_broker, "posts", encode(posts))
    records = _records(kafka_broker, N)
    labels = list(classifier.labels)
    # what emotion-monitor calibrate stores in an artifact (set on the loaded classifier here)
    source = np.linspace(0.01, 0.3, len(labels))
    classifier = WithRates(classifier, source, np.full(len(labels), 0.8), np.full(len(labels), 0.1))
    settings = MonitorSettings(broker_url=kafka_broker.url, redis_url=redis_server.url, metrics_port=0,
                               prior_min_posts=100, prior_update_ms=0)

    # two micro-batches, then the first one delivered again (at-least-once redelivery)
    results, processor, model = _run(settings, classifier, [records[:128], records[128:], records[:128]])
    assert [r.counted for r in results] == [128, N - 128, 0]
    assert posts_total(redis_client, "acme") == 180 and posts_total(redis_client, "globex") == 60

    reference = load_inference(settings, classifier=classifier)
    proba = predicted(reference, [p["text"] for p in posts])
    reference.close()
    expected_all, _ = em_priors(proba.astype(np.float64), source)
    acme = np.array([p["brand"] == "acme" for p in posts])
    expected_acme, _ = em_priors(proba[acme].astype(np.float64), source)
    assert _latest(redis_client, schema.ALL_BRANDS, "_all", "window_posts") == N  # the redelivery added nothing
    assert _latest(redis_client, "acme", "_all", "window_posts") == 180
    for j, emotion in enumerate(labels):
        # EM over the counted posts' probabilities, up to the tracker's histogram binning
        assert abs(_latest(redis_client, schema.ALL_BRANDS, emotion, "prior") - expected_all[j]) < 0.005, emotion
        assert abs(_latest(redis_client, "acme", emotion, "prior") - expected_acme[j]) < 0.005, emotion
        # adjusted classify-and-count of the exactly-once counts
        key = schema.series_key("acme", emotion, "count")
        count = sum(v for _, v in redis_client.ts().range(key, 0, "+")) if redis_client.exists(key) else 0
        expected = acc_from_rates(np.array([count / 180]), np.array([0.8]), np.array([0.1]))[0]
        assert abs(_latest(redis_client, "acme", emotion, "adjusted") - expected) < 1e-9, emotion
        assert abs(_latest(redis_client, "acme", emotion, "share") - count / 180) < 1e-9, emotion
        assert _latest(redis_client, "globex", emotion, "prior") is None  # 60 posts < prior_min_posts


def test_a_model_without_rates_writes_no_estimates(kafka_broker, redis_server, redis_client, classifier, caplog):
    for name in ("label_priors", "tpr", "fpr"):
        assert getattr(classifier, name, None) is None  # an artifact without calibration.json
    create_topic(kafka_broker, "posts", 1)
    produce(kafka_broker, "posts", encode(make_posts(40, BRANDS)))
    records = _records(kafka_broker, 40)
    settings = MonitorSettings(broker_url=kafka_broker.url, redis_url=redis_server.url, metrics_port=0,
                               prior_min_posts=1, prior_update_ms=0)
    with caplog.at_level("WARNING", logger="monitor.priors"):
        results, processor, _ = _run(settings, classifier, [records[:20], records[20:]])
    assert [r.counted for r in results] == [20, 20] and processor.priors is None
    assert caplog.text.count("no label_priors/tpr/fpr") == 1
    assert not list(redis_client.scan_iter("em:ts:*:prior")) and not list(redis_client.scan_iter("em:ts:_all:*"))


@pytest.mark.slow  # long (a real worker or `up` run); CI runs it with -m slow
def test_worker_process_with_a_calibrated_artifact_writes_the_estimates(kafka_broker, redis_server, redis_client,
                                                                         small_model_dir, start_worker, tmp_path):
    """A real ``emotion-monitor worker`` (model in its inference child process) on an artifact carrying
    ``calibration.json`` (trainer.calibration, issue 13's calibrate): the rates cross the process boundary and the
    estimate series match the same model's probabilities in-process."""
    calibration = pytest.importorskip("trainer.calibration", reason="needs the artifact calibration (issue 13)")
    import shutil

    from tests.conftest import goemotions_data_dir
    from tests.monitor.conftest import monitor_env, wait_until
    from trainer import load_classifier

    model_dir = tmp_path / "calibrated"
    shutil.copytree(small_model_dir, model_dir)
    base = load_classifier(model_dir, device="cpu")
    labels = list(base.labels)
    rows = [line.split("\t") for line in
            (goemotions_data_dir() / "dev.tsv").read_text(encoding="utf-8").splitlines()[:300]]
    y = np.zeros((len(rows), len(labels)), dtype=int)
    for i, row in enumerate(rows):
        y[i, [int(j) for j in row[1].split(",")]] = 1
    raw = base.predict_proba([row[0] for row in rows])
    calibration.fit_calibration(labels, raw, y, np.asarray(base.thresholds)).save(model_dir)
    served = load_classifier(model_dir, device="cpu")
    assert served.tpr is not None and served.label_priors is not None

    create_topic(kafka_broker, "posts", 3)
    posts = make_posts(N, BRANDS)
    produce(kafka_broker, "posts", encode(posts))
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, model_dir, cpu_precision="fp32",
                                      prior_min_posts="100", prior_update_ms="0"))
    wait_until(lambda: _latest(redis_client, schema.ALL_BRANDS, "_all", "window_posts") == N, 180,
               what="the all-brands estimate over every post", worker=worker)
    # the same estimate in-process: a tracker fed the served model's probabilities for the same posts (EM on this
    # untrained model's flat posteriors is ill-conditioned, so compare like with like: same bins, same stopping rule)
    from monitor.priors import PriorTracker
    from monitor.settings import MonitorSettings

    proba = served.predict_proba([p["text"] for p in posts]).astype(np.float64)
    reference = PriorTracker(MonitorSettings(prior_min_posts=100), labels, served.thresholds,
                             {"label_priors": served.label_priors, "tpr": served.tpr, "fpr": served.fpr}, redis=None)
    reference.observe(proba, [[p["brand"]] for p in posts], [p["created_at"] for p in posts])
    expected = reference.estimate()[schema.ALL_BRANDS]["prior"]
    wait_until(lambda: _latest(redis_client, "acme", "_all", "window_posts") == 180, 30, what="acme's estimate",
               worker=worker)
    for j, emotion in enumerate(labels):
        assert abs(_latest(redis_client, schema.ALL_BRANDS, emotion, "prior") - expected[j]) < 0.005, emotion
        key = schema.series_key("acme", emotion, "count")
        count = sum(v for _, v in redis_client.ts().range(key, 0, "+")) if redis_client.exists(key) else 0
        adjusted = acc_from_rates(np.array([count / 180]), served.tpr[j:j + 1], served.fpr[j:j + 1])[0]
        assert abs(_latest(redis_client, "acme", emotion, "adjusted") - adjusted) < 1e-9, emotion
