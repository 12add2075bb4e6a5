"""The status line reader against a real Redis (seeded with the monitor's schema) and a worker-style /metrics page."""

from __future__ import annotations

import http.server
import json
import threading
import time

from emotion_monitor.status import StatusReader
from monitor import schema


class _Metrics(http.server.BaseHTTPRequestHandler):
    counted = 100.0

    def do_GET(self):  # noqa: N802
        body = (f'em_posts_total{{outcome="counted"}} {self.counted}\n'
                'em_posts_total{outcome="rejected"} 7.0\n'
                'em_dlq_total{reason="not_json"} 4.0\nem_dlq_total{reason="missing_field"} 3.0\n').encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Clock:
    """Stands in for the ``time`` module inside emotion_monitor.status: wall time is real, the monotonic clock (the
    rate's denominator) moves only when the test says."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


def test_status_reads_redis_and_worker_metrics(redis_client, redis_server, monkeypatch):
    import emotion_monitor.status

    clock = _Clock()
    monkeypatch.setattr(emotion_monitor.status, "time", clock)
    now = int(time.time() * 1000)
    for brand, count in (("acme", 12), ("velora", 5)):
        key = schema.series_key(brand, schema.ALL_EMOTIONS, "posts")
        redis_client.ts().create(key, labels=schema.series_labels(brand, schema.ALL_EMOTIONS, "posts"))
        redis_client.ts().madd([(key, now - 60_000 + i, 1) for i in range(count)])
        compaction = schema.series_key(brand, schema.ALL_EMOTIONS, "posts", "1m")  # must not be double counted
        redis_client.ts().create(compaction, labels=schema.series_labels(brand, schema.ALL_EMOTIONS, "posts", "1m"))
        redis_client.ts().add(compaction, now - 60_000, count)
        redis_client.sadd(schema.BRANDS_KEY, brand)
    alert = {"brand": "velora", "emotion": "anger", "ts": now, "message": "anger 45% vs 4% baseline"}
    redis_client.zadd(schema.ALERTS_KEY, {json.dumps(alert): now})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reader = StatusReader(redis_server.url, [server.server_address[1]])
        first = reader.read()
        assert (first.posts_last_hour, first.brands, first.alerts, first.dead_letters) == (17, 2, 1, 7)
        assert first.new_alerts == ["velora / anger: anger 45% vs 4% baseline"]
        _Metrics.counted = 130.0
        clock.now += 2.0
        second = reader.read()
        assert second.new_alerts == []  # printed once
        assert second.posts_per_s == 15.0  # 30 more posts counted between scrapes 2 s apart
        assert "alerts 1" in second.line() and "dead letters 7" in second.line()
    finally:
        server.shutdown()


def test_status_survives_redis_going_away(redis_server):
    reader = StatusReader(redis_server.url)
    redis_server.stop()
    status = reader.read()
    assert status.error and "Redis unreachable" in status.line()


def test_status_shows_an_alert_that_is_not_a_json_object_as_stored(redis_client, redis_server):
    now = int(time.time() * 1000)
    redis_client.zadd(schema.ALERTS_KEY, {'["not", "an", "object"]': now, "plain text": now + 1})
    status = StatusReader(redis_server.url).read()
    assert status.error is None
    assert status.new_alerts == ['["not", "an", "object"]', "plain text"]


def test_status_rate_and_dead_letters_from_a_real_workers_metrics(kafka_broker, redis_server, tmp_path, monkeypatch):
    """The reader scrapes a real worker's /metrics: counted posts between two scrapes over the time between them,
    and the worker's dead-letter counter."""
    import emotion_monitor.status
    from emotion_monitor.servers import free_port
    from tests.monitor.conftest import Worker, create_topic, monitor_env, produce, wait_until
    from tests.monitor.posts_data import encode, make_posts
    from trainer import make_untrained_artifact

    clock = _Clock()
    monkeypatch.setattr(emotion_monitor.status, "time", clock)
    model = make_untrained_artifact(tmp_path / "model", max_length=32)
    create_topic(kafka_broker, "posts", 3)
    now = int(time.time() * 1000)
    first = make_posts(30, ("acme", "globex"), base_ms=now - 120_000)
    produce(kafka_broker, "posts", encode(first) + [b"{not json", b'["a list"]'])
    port = free_port()
    worker = Worker(monitor_env(kafka_broker, redis_server.url, model, metrics_port=str(port)), tmp_path / "w.log")
    try:
        reader = StatusReader(redis_server.url, [port])
        wait_until(lambda: reader._scrape() == (30.0, 2), 150, what="first posts counted", worker=worker)
        assert reader.read().dead_letters == 2
        produce(kafka_broker, "posts", encode(make_posts(45, ("acme",), base_ms=now - 60_000, prefix="q")))
        wait_until(lambda: reader._scrape() == (75.0, 2), 120, what="more posts counted", worker=worker)
        clock.now += 3.0
        status = reader.read()
        assert status.posts_per_s == 15.0  # 45 posts between two scrapes 3 s apart
        assert (status.posts_last_hour, status.brands, status.dead_letters) == (75, 2, 2)
    finally:
        worker.stop()
