"""`up --source bluesky`: the live source as a child of `up` when Jetstream answers, the demo (with a clear message)
when it does not."""

from __future__ import annotations

import time

from emotion_monitor.components import monitor_topics
from emotion_monitor.servers import free_port
from emotion_monitor.settings import UpSettings
from emotion_monitor.up import Runtime
from tests.sources.conftest import read_topic
from tests.sources.servers import JetstreamServer, post_event


def _runtime(tmp_path, kafka_broker, redis_server, goemotions_dir) -> Runtime:
    settings = UpSettings(source="bluesky", run_dir=tmp_path / "run", demo_data_dir=goemotions_dir)
    settings.run_dir.mkdir(parents=True)
    runtime = Runtime(settings)
    runtime.kafka_url, runtime.redis_url, runtime.topics = kafka_broker.url, redis_server.url, monitor_topics()
    return runtime


def test_offline_bluesky_falls_back_to_the_demo_with_a_clear_message(monkeypatch, tmp_path, kafka_broker,
                                                                    redis_server, goemotions_dir):
    closed = f"ws://127.0.0.1:{free_port()}/subscribe"  # nothing listens there: as offline as it gets
    monkeypatch.setenv("EM_SOURCE_BLUESKY_ENDPOINT", closed)
    runtime = _runtime(tmp_path, kafka_broker, redis_server, goemotions_dir)
    said: list[tuple[str, bool]] = []
    corpus = runtime._load_demo_corpus(required=False)
    try:
        runtime._start_source(corpus, runtime.settings.run_dir, lambda text, err=False: said.append((text, err)))
        assert runtime.source is None and runtime._demo_thread.is_alive()
        demo_posts = read_topic(kafka_broker.url, runtime.topics["posts"], want=3, timeout=20)
    finally:
        runtime.stop(echo=lambda *a, **k: None)
    assert any(err and f"cannot reach Bluesky Jetstream at {closed}" in text and "Falling back to the demo" in text
               for text, err in said), said
    assert len(demo_posts) >= 3 and demo_posts[0]["source"].startswith("demo")


def test_reachable_bluesky_runs_the_source_as_a_child_and_stops_it(monkeypatch, tmp_path, kafka_broker,
                                                                    redis_server, goemotions_dir):
    server = JetstreamServer()
    server.publish(*[post_event("did:plc:up", f"3kup{i}", 1_725_911_162_000_000 + i, f"up post {i}")
                     for i in range(5)])
    monkeypatch.setenv("EM_SOURCE_BLUESKY_ENDPOINT", server.url)
    runtime = _runtime(tmp_path, kafka_broker, redis_server, goemotions_dir)
    said: list[str] = []
    try:
        runtime._start_source(None, runtime.settings.run_dir, lambda text, err=False: said.append(text))
        assert runtime.source is not None and runtime.source in runtime.children()
        posts = read_topic(kafka_broker.url, runtime.topics["posts"], want=5, timeout=30)
    finally:
        started = time.monotonic()
        runtime.stop(echo=lambda *a, **k: None)
        server.close()
    assert not runtime.source.group_alive() and time.monotonic() - started < runtime.settings.stop_timeout_s
    assert sorted(p["text"] for p in posts) == [f"up post {i}" for i in range(5)]
    assert runtime._demo_thread is None and any("source: Bluesky Jetstream" in text for text in said)
