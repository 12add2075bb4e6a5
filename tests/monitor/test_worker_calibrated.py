"""A real worker process serving an artifact written by `emotion-monitor calibrate` (on tansu + Redis): the scores it
publishes are the adapted, calibrated probabilities and its labels are decided at the adapted thresholds."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from emotion_monitor.servers import free_port

from tests.monitor.conftest import consume_all, create_topic, monitor_env, posts_total, produce, wait_until
from tests.monitor.posts_data import encode, make_posts

pytestmark = pytest.mark.timeout(300)
N = 30


@pytest.fixture(scope="module")
def adapted_model(tmp_path_factory):
    """The shipped model adapted to an anger-heavy unlabelled stream (fp32 scoring, as the worker below runs)."""
    from trainer.calibrate import calibrate_artifact

    folder = tmp_path_factory.mktemp("adapted")
    stream = folder / "stream.txt"
    stream.write_text("\n".join(["I am so angry at this company", "this makes me furious", "what a rip-off, I hate it",
                                 "thanks, all good", "ok", "the parcel arrived today"] * 10) + "\n")
    calibrate_artifact(None, folder / "model", unlabelled=stream, int8=False)
    return folder / "model"


def test_worker_publishes_adapted_calibrated_scores(kafka_broker, redis_server, redis_client, adapted_model,
                                                    start_worker):
    from trainer import load_classifier

    classifier = load_classifier(adapted_model, device="cpu")
    assert classifier.calibration is not None and classifier.calibration.adaptation
    posts = make_posts(N, ("acme",))
    expected = classifier.predict_proba([p["text"] for p in posts])
    raw = classifier.predict_proba([p["text"] for p in posts], calibrated=False)
    assert not np.allclose(expected, raw, atol=1e-2)  # the served scores are not the raw sigmoid outputs
    create_topic(kafka_broker, "posts", 1)
    produce(kafka_broker, "posts", encode(posts))
    port = free_port()
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, adapted_model, metrics_port=str(port),
                                      cpu_precision="fp32"))
    wait_until(lambda: posts_total(redis_client, "acme") >= N, 180, what="all posts counted", worker=worker)
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
    assert health["model_version"].startswith(classifier.version)
    row_of = {p["id"]: i for i, p in enumerate(posts)}
    records = consume_all(kafka_broker, "posts.classified", N)
    assert len(records) == N
    for record in records:
        body = json.loads(record.value)
        i = row_of[body["id"]]
        assert [body["scores"][name] for name in classifier.labels] == pytest.approx(expected[i], abs=1e-4)
        clear = np.abs(expected[i] - classifier.thresholds) > 1e-3  # fp32 batch padding moves scores by ~1e-6
        flagged = {name for j, name in enumerate(classifier.labels) if expected[i, j] >= classifier.thresholds[j]}
        assert {n for n in body["labels"] if clear[classifier.labels.index(n)]} == \
            {n for n in flagged if clear[classifier.labels.index(n)]}
