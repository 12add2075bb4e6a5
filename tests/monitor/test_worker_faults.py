"""Bad input, a killed worker and a Redis outage: nothing lost, nothing counted twice, the worker keeps going."""

from __future__ import annotations

import pytest

import base64
import json
import re
import signal
import time
import urllib.request

from emotion_monitor.servers import free_port, start_redis
from tests.monitor.conftest import (
    committed_total, consume_all, create_topic, monitor_env, posts_total, prefilled_posts_env, produce, wait_until,
    written_total,
)
from tests.monitor.posts_data import encode, make_posts

BRANDS = ("acme", "globex", "initech")

MALFORMED = {
    b"{this is not json": "not_json",
    b"\xff\xfe\x00garbage": "not_json",
    b'["a", "list"]': "not_object",
    json.dumps({"brand": "acme", "text": "no id"}).encode(): "missing_field",
    json.dumps({"id": "m1", "text": "no brand"}).encode(): "missing_field",
    json.dumps({"id": "m2", "brand": "acme"}).encode(): "missing_field",
    json.dumps({"id": 42, "brand": "acme", "text": "numeric id"}).encode(): "wrong_type",
    json.dumps({"id": "m3", "brand": "acme", "text": {"nested": 1}}).encode(): "wrong_type",
    json.dumps({"id": "m4", "brand": "acme", "text": "x", "created_at": "last tuesday"}).encode(): "invalid_value",
    json.dumps({"id": "m5", "brand": "a=b", "text": "label breaker"}).encode(): "invalid_value",
    json.dumps({"id": "m6", "brand": "acme", "text": "x" * 10, "pad": "y" * 300_000}).encode(): "oversize",
}


def test_malformed_records_go_to_dlq_with_reasons_and_processing_goes_on(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker):
    create_topic(kafka_broker, "posts", 3)
    good = make_posts(60, BRANDS)
    values = encode(good[:30]) + list(MALFORMED) + encode(good[30:])
    produce(kafka_broker, "posts", values)
    # brand matching off: an untagged post is malformed again (with matching on it is matched or counted unmatched,
    # see test_worker_brands)
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir, brand_matching="off"))
    wait_until(lambda: sum(posts_total(redis_client, b) for b in BRANDS) >= 60, 120, what="good posts", worker=worker)
    dlq = consume_all(kafka_broker, "posts.dlq", len(MALFORMED))
    assert len(dlq) == len(MALFORMED)
    got = {}
    for record in dlq:
        envelope = json.loads(record.value)
        original = base64.b64decode(envelope["original_b64"])
        got[original] = envelope["reason"]
        # original_text: the record as text whenever its bytes are UTF-8, absent otherwise (original_b64 always)
        try:
            text = original.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        assert envelope.get("original_text") == text, (envelope["reason"], original[:60])
    assert got == MALFORMED
    assert sum("original_text" in json.loads(r.value) for r in dlq) == len(MALFORMED) - 1  # all but the \xff one
    assert sum(posts_total(redis_client, b) for b in BRANDS) == 60
    assert worker.process.poll() is None  # still running


def _posts_metric(port: int, outcome: str) -> float:
    """The worker's own Prometheus counter em_posts_total{outcome} (0 while its endpoint is not up)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    match = re.search(rf'em_posts_total\{{outcome="{outcome}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def _counted(port: int) -> float:
    return _posts_metric(port, "counted")


def _health_ok(port: int) -> bool:
    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())["ok"] is True
    except OSError:
        return False


def test_kill_9_mid_stream_then_restart_counts_exactly(kafka_broker, redis_server, redis_client, small_model_dir,
                                                       start_worker):
    """Two workers share the partitions; one is killed -9 mid-stream and restarted: totals stay exact."""
    n = 600
    env = prefilled_posts_env(kafka_broker, redis_server.url, small_model_dir, n, BRANDS)
    port_a, port_b = free_port(), free_port()
    first = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(port_a)})
    other = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(port_b)})
    wait_until(lambda: _counted(port_a) > 0 and _counted(port_b) > 0, 150, what="both workers counting", worker=first)
    first.signal(signal.SIGKILL)
    first.wait(10)
    mid = written_total(redis_client, BRANDS)
    assert mid < n, "the workers finished before one could be killed; raise n"
    port_c = free_port()
    restarted = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(port_c)})
    wait_until(lambda: sum(posts_total(redis_client, b) for b in BRANDS) >= n, 150, what="all posts", worker=other)
    # every offset committed: no record is still in flight, so a double count would be in Redis by now
    wait_until(lambda: committed_total(kafka_broker) >= n, 60, what="all offsets committed", worker=other)
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == n // 3
    assert 0 < _counted(port_b) < n  # the surviving worker did part of the work, not all of it
    # graceful stop: SIGTERM ends a running worker cleanly (wait until the restarted one serves /health: before
    # that it may still be loading its model, where SIGTERM is the default handler's)
    wait_until(lambda: _health_ok(port_c), 60, what="restarted worker up", worker=restarted)
    for worker in (other, restarted):
        worker.signal(signal.SIGTERM)
    assert other.wait(30) == 0 and restarted.wait(30) == 0


@pytest.mark.slow  # long (a real worker or `up` run); CI runs it with -m slow
def test_kill_9_inside_the_redelivery_window_restart_sees_duplicates_and_counts_once(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker):
    """A worker killed -9 after writing posts whose offsets its group has not committed yet (the redelivery window):
    the restarted worker gets them again, reports them as duplicates and counts only the rest."""
    n = 600
    env = prefilled_posts_env(kafka_broker, redis_server.url, small_model_dir, n, BRANDS)

    def written() -> int:
        return written_total(redis_client, BRANDS)

    for _attempt in range(3):  # the kill may land just after a commit; then the window is empty: go again
        worker = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(free_port())})
        wait_until(lambda: written() > committed_total(kafka_broker), 150, interval=0.1,
                   what="posts written but not committed", worker=worker)
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        at_kill, committed = written(), committed_total(kafka_broker)
        if at_kill > committed:
            break
    else:
        raise AssertionError("three kills all landed right after a commit")
    assert at_kill < n, "the worker finished before it could be killed; raise n"
    port = free_port()
    restarted = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(port)})
    wait_until(lambda: committed_total(kafka_broker) >= n, 150, what="all offsets committed", worker=restarted)
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == n // 3
    assert _posts_metric(port, "counted") == n - at_kill
    assert _posts_metric(port, "duplicate") >= at_kill - committed > 0


def test_sigterm_with_batches_in_hand_finishes_writes_and_commits_them(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker):
    """SIGTERM mid-stream: the batches in hand are finished, written and committed before the worker exits 0, so
    what Redis holds equals what the group committed; a restarted worker counts exactly the rest, nothing twice."""
    n = 600
    env = prefilled_posts_env(kafka_broker, redis_server.url, small_model_dir, n, BRANDS)

    def written() -> int:
        return written_total(redis_client, BRANDS)

    port = free_port()
    worker = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(port)})
    wait_until(lambda: _counted(port) >= 32, 150, what="the worker counting", worker=worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log_tail()
    at_stop = written()
    assert 0 < at_stop < n, "the worker finished before it could be stopped; raise n"
    assert committed_total(kafka_broker) == at_stop  # every post it wrote was committed, nothing left in flight

    port = free_port()
    restarted = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(port)})
    wait_until(lambda: committed_total(kafka_broker) >= n, 150, what="all offsets committed", worker=restarted)
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == n // 3
    assert _posts_metric(port, "counted") == n - at_stop
    assert _posts_metric(port, "duplicate") == 0  # nothing was handed out again


def test_redis_outage_loses_nothing(kafka_broker, tmp_path, small_model_dir, start_worker):
    """Redis stopped mid-stream: the worker waits (em_redis_up 0, /health 503 naming the problem), loses nothing,
    and is healthy again once Redis is back."""
    import redis

    from tests.monitor.test_worker_loss_paths import health, metric

    data_dir = tmp_path / "redis-data"
    server = start_redis(data_dir=data_dir, log_dir=tmp_path)
    port = server.port
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        create_topic(kafka_broker, "posts", 3)
        first, second = make_posts(120, BRANDS), make_posts(120, BRANDS, prefix="q", base_ms=1_795_655_000_000)
        produce(kafka_broker, "posts", encode(first))
        metrics_port = free_port()
        worker = start_worker(monitor_env(kafka_broker, server.url, small_model_dir, metrics_port=str(metrics_port)))
        wait_until(lambda: sum(posts_total(client, b) for b in BRANDS) >= 120, 120, what="first wave", worker=worker)
        wait_until(lambda: metric(metrics_port, "em_redis_up") == 1.0, 30, what="em_redis_up 1", worker=worker)
        server.stop()  # SIGTERM: redis writes its append-only file
        produce(kafka_broker, "posts", encode(second))  # arrives while Redis is down
        wait_until(lambda: metric(metrics_port, "em_redis_up") == 0.0, 60, what="em_redis_up 0", worker=worker)
        state = health(metrics_port)
        assert state is not None and state[0] == 503 and state[1]["ok"] is False and state[1]["redis_problem"], state
        time.sleep(2)
        assert worker.process.poll() is None, worker.log_tail()
        server = start_redis(port=port, data_dir=data_dir, log_dir=tmp_path)
        wait_until(lambda: sum(posts_total(client, b) for b in BRANDS) >= 240, 120, what="second wave", worker=worker)
        time.sleep(1)
        for brand in BRANDS:
            assert posts_total(client, brand) == 80
        wait_until(lambda: metric(metrics_port, "em_redis_up") == 1.0, 30, what="em_redis_up back to 1",
                   worker=worker)
        assert health(metrics_port)[0] == 200
    finally:
        client.close()
        server.stop()
