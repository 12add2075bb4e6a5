"""Loss paths of issue 9, through the real worker process: large dead letters, Redis refusing writes, DLQ copies
through a kill -9, and secrets in the log."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
import urllib.error
import urllib.request

import pytest

from emotion_monitor.servers import free_port
from tests.monitor.conftest import consume_all, create_topic, monitor_env, posts_total, produce, wait_until
from tests.monitor.posts_data import encode, make_posts

BRANDS = ("acme", "globex", "initech")


def metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def health(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None


def total(client) -> int:
    return sum(posts_total(client, b) for b in BRANDS)


def test_large_dead_letters_are_bounded_and_the_partition_keeps_flowing(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker):
    """A 450 KB record made a 1.05 MB envelope (original twice), over the producer's 1 MB limit: the batch was
    retried forever and the partition stalled. A 200 KB record of control characters grew six-fold in JSON."""
    create_topic(kafka_broker, "posts", 1)
    big = b"x" * 450_000
    controls = b'{"id": "c1", "brand": "acme", "text": "' + b"\x01" * 200_000 + b'"}'  # raw: 6x once escaped
    good = make_posts(30, BRANDS)
    produce(kafka_broker, "posts", encode(good[:10]) + [big] + encode(good[10:20]) + [controls] + encode(good[20:]))
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir))
    wait_until(lambda: total(redis_client) >= 30, 120, what="the posts after the large records", worker=worker)
    dlq = consume_all(kafka_broker, "posts.dlq", 2)
    assert len(dlq) == 2
    by_size = {json.loads(r.value)["original_size"]: (len(r.value), json.loads(r.value)) for r in dlq}
    for original in (big, controls):
        size, envelope = by_size[len(original)]
        assert size < 1_000_000
        assert envelope["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert envelope["original_truncated"] is True
    assert by_size[len(big)][1]["reason"] == "oversize"
    assert by_size[len(controls)][1]["reason"] == "not_json"  # raw control characters are not valid JSON
    assert total(redis_client) == 30


def test_redis_at_maxmemory_is_an_outage_not_poison(kafka_broker, redis_server, redis_client, small_model_dir,
                                                    start_worker):
    """Redis at maxmemory for a while: posts arriving meanwhile were retried, bisected and all dead-lettered as
    processing_failed, never counted. Now: waited out, em_redis_up 0 and /health 503 meanwhile, exact afterwards."""
    create_topic(kafka_broker, "posts", 3)
    first = make_posts(60, BRANDS)
    second = make_posts(150, BRANDS, prefix="q", base_ms=1_795_655_000_000)
    port = free_port()
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir, metrics_port=str(port),
                                      poison_retries="1", retry_max_s="1"))
    produce(kafka_broker, "posts", encode(first))
    wait_until(lambda: total(redis_client) >= 60, 120, what="first wave", worker=worker)
    wait_until(lambda: metric(port, "em_redis_up") == 1.0, 30, what="em_redis_up 1", worker=worker)
    redis_client.config_set("maxmemory", 1)  # every write refused: OOM command not allowed
    try:
        produce(kafka_broker, "posts", encode(second))
        wait_until(lambda: metric(port, "em_redis_up") == 0.0, 60, what="em_redis_up 0", worker=worker)
        state = health(port)
        assert state is not None and state[0] == 503 and state[1]["redis"] is True, state
        assert "OutOfMemory" in state[1]["redis_problem"] or "OOM" in state[1]["redis_problem"]
        time.sleep(4)  # long past poison_retries x back-off: poison handling would have dead-lettered by now
        assert total(redis_client) == 60
    finally:
        redis_client.config_set("maxmemory", 0)
    wait_until(lambda: total(redis_client) >= 210, 120, what="second wave after memory freed", worker=worker)
    time.sleep(1)
    for brand in BRANDS:
        assert posts_total(redis_client, brand) == 70
    assert consume_all(kafka_broker, "posts.dlq", 1, timeout=3) == []
    wait_until(lambda: metric(port, "em_redis_up") == 1.0, 30, what="em_redis_up back to 1", worker=worker)
    assert health(port)[0] == 200
    # bound to EM_MONITOR_METRICS_HOST (default 127.0.0.1), not 0.0.0.0: another local address is refused
    import socket

    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


# ~50 s (two worker starts around a kill -9): behind the slow marker CI runs
@pytest.mark.slow
def test_dlq_copies_through_a_kill_9_are_bounded(kafka_broker, redis_server, redis_client, small_model_dir,
                                                 start_worker):
    """20 malformed records, in clusters, one of them 450 KB (its dead letter over the producer's limit), and a
    kill -9: every retry of a batch re-sent the batch's rejections (126 copies in the issue; here the 450 KB record
    also stalled its partition forever). Now each delivery sends them once: at most 2 copies each (the first
    delivery and the redelivery after the kill)."""
    n = 300
    create_topic(kafka_broker, "posts", 1)
    good = encode(make_posts(n, BRANDS))
    malformed = [b"{broken json %d" % i for i in range(19)] + [b"y" * 450_000]
    values = []
    for i, value in enumerate(good):  # after every 60th post a cluster of 5 malformed records: one batch holds several
        values.append(value)
        if i % 60 == 59 and i // 60 < 4:
            values.extend(malformed[i // 60 * 5:i // 60 * 5 + 5])
    assert sum(v in malformed for v in values) == 20
    produce(kafka_broker, "posts", values)
    env = monitor_env(kafka_broker, redis_server.url, small_model_dir, max_batch="16", poison_retries="2",
                      retry_max_s="0.5")
    first = start_worker(env)
    wait_until(lambda: total(redis_client) > 60, 150, what="counting started", worker=first)
    first.signal(signal.SIGKILL)
    first.wait(10)
    assert total(redis_client) < n, "the worker finished before it could be killed; raise n"
    second = start_worker(env)
    wait_until(lambda: total(redis_client) >= n, 150, what="all posts", worker=second)
    time.sleep(2)
    dlq = consume_all(kafka_broker, "posts.dlq", 41, timeout=8)
    sha = {hashlib.sha256(m).hexdigest(): m for m in malformed}
    assert {sha[json.loads(r.value)["original_sha256"]] for r in dlq} == set(malformed)  # every one is there ...
    assert len(dlq) <= 40  # ... at most twice
    assert total(redis_client) == n


@pytest.mark.slow  # long (a real worker or `up` run); CI runs it with -m slow
def test_no_secret_in_any_log_line(kafka_broker, redis_server, small_model_dir, start_worker, webhook):
    """A password-bearing Redis URL and a token-bearing webhook URL (which fails twice, so its URL is logged, and
    fires for a real alert): neither secret appears in any line the worker logged, at info level."""
    import redis

    from tests.monitor.test_worker_alerts import ANGRY, CALM, T0, post

    password, token = "S3CRET-PW-8841", "TOKEN-XYZ-5521"
    redis.Redis.from_url(redis_server.url).config_set("requirepass", password)
    secret_url = redis_server.url.replace("redis://", f"redis://:{password}@")
    client = redis.Redis.from_url(secret_url, decode_responses=True)
    hook = webhook(fail_first=2)
    create_topic(kafka_broker, "posts", 1)
    steady = [post(i, "acme", CALM[i % len(CALM)], T0 + i * 90_000) for i in range(40)]
    end = T0 + 40 * 90_000
    spike = [post(100 + i, "acme", ANGRY[i % len(ANGRY)], end + i * 12_000) for i in range(14)]
    produce(kafka_broker, "posts", steady)
    env = monitor_env(kafka_broker, secret_url, None, webhook_url=f"{hook.url}?token={token}", log_level="info",
                      alert_window_ms="300000", alert_baseline_ms="3600000", alert_min_volume="10",
                      webhook_backoff="0.05")
    try:
        worker = start_worker(env)  # the shipped default model: it tells anger from calm
        wait_until(lambda: posts_total(client, "acme") >= 40, 150, what="steady posts", worker=worker)
        produce(kafka_broker, "posts", spike)
        wait_until(lambda: len(hook.received) >= 1, 90, what="the webhook, after two failures", worker=worker)
        assert hook.state["attempts"] == 3
        worker.stop()
        log = worker.log_path.read_text(errors="replace")
        assert "webhook http://127.0.0.1" in log and "answered 500" in log  # the URL was logged ...
        assert token not in log and password not in log  # ... without its secret
    finally:
        client.close()
