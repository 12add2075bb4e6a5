"""Both ways of reading the posts topic (``EM_MONITOR_CONSUMER``) share one consumer group and its committed offsets:
a worker on Faust's agent stream stopped mid-stream (SIGTERM: the batches in hand finished and committed), then a
worker on the batch consumer (the default) counts exactly the rest, nothing twice — so a deployment can switch either
way. Every other real-worker test runs the default batch consumer."""

from __future__ import annotations

import signal

import pytest

from emotion_monitor.servers import free_port
from tests.monitor.conftest import committed_total, create_topic, monitor_env, posts_total, produce, wait_until
from tests.monitor.posts_data import encode, make_posts
from tests.monitor.test_worker_faults import _counted, _posts_metric

BRANDS = ("acme", "globex", "initech")


# two worker starts (~60-120 s on this machine): behind the slow marker CI runs
@pytest.mark.slow
def test_faust_agent_then_batch_consumer_continue_from_the_same_offsets(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker):
    n = 600
    create_topic(kafka_broker, "posts", 3)
    produce(kafka_broker, "posts", encode(make_posts(n, BRANDS)))
    env = monitor_env(kafka_broker, redis_server.url, small_model_dir, max_batch="16")

    def written() -> int:
        return sum(posts_total(redis_client, b) for b in BRANDS)

    port = free_port()
    faust = start_worker({**env, "EM_MONITOR_CONSUMER": "faust", "EM_MONITOR_METRICS_PORT": str(port)})
    wait_until(lambda: _counted(port) >= 32, 150, what="the Faust-agent worker counting", worker=faust)
    faust.signal(signal.SIGTERM)
    assert faust.wait(60) == 0, faust.log_tail()
    at_stop = written()
    assert 0 < at_stop < n, "the worker finished before it could be stopped; raise n"
    assert committed_total(kafka_broker) == at_stop

    port = free_port()
    batch = start_worker({**env, "EM_MONITOR_CONSUMER": "batch", "EM_MONITOR_METRICS_PORT": str(port)})
    wait_until(lambda: committed_total(kafka_broker) >= n, 150, what="all offsets committed", worker=batch)
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == n // 3
    assert _posts_metric(port, "counted") == n - at_stop
    assert _posts_metric(port, "duplicate") == 0  # it started at the Faust worker's committed offsets
    batch.signal(signal.SIGTERM)
    assert batch.wait(60) == 0, batch.log_tail()
