"""The Bluesky source against a local Jetstream WebSocket server: creates, deletes, other collections, malformed
frames, a dropped connection, a slow consumer, compression, SIGTERM and kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import redis

from emotion_monitor.sources import bluesky
from emotion_monitor.sources.base import SourceRunner
from tests.sources.conftest import read_topic, source_process
from tests.sources.servers import (JetstreamServer, account_event, identity_event, like_event, post_event)

T0 = 1_725_911_162_000_000
DID = "did:plc:eygmaihciaxprqvxpfvl6flk"


def _fixture_events(n_posts: int = 6) -> list:
    """Posts interleaved with every other kind of frame Jetstream sends."""
    events: list = []
    t = T0
    for i in range(n_posts):
        t += 1000
        events.append(post_event(DID, f"3kpost{i:04d}", t, f"post number {i}, I love it", langs=["en"]))
        if i == 1:
            t += 1000
            events.append(post_event(DID, "3kpost0000", t, "", operation="delete"))
            t += 1000
            events.append(identity_event(DID, t))
            events.append("{this is not json")
            t += 1000
            events.append(post_event(DID, "3kpost0001", t, "edited", operation="update"))
        if i == 3:
            t += 1000
            events.append(account_event(DID, t))
            t += 1000
            events.append(like_event(DID, "3klike", t))
            events.append(json.dumps([1, 2, 3]))
    return events


def test_parser_on_every_documented_event_kind():
    parser = bluesky.JetstreamParser()
    create = parser.parse(json.dumps(post_event(DID, "3k1", T0, "so happy today", langs=["en-US"],
                                                created_at="2024-09-09T19:46:02.102Z")))
    assert create.position == T0 and create.skipped is None
    assert create.post == {"id": f"at://{DID}/app.bsky.feed.post/3k1", "text": "so happy today",
                           "created_at": 1725911162102, "author": DID, "source": "bluesky", "lang": "en-US",
                           "url": f"https://bsky.app/profile/{DID}/post/3k1"}
    assert "brand" not in create.post  # untagged: the worker's brand queries assign brands
    reasons = {
        "delete": post_event(DID, "3k1", T0 + 1, "", operation="delete"),
        "update": post_event(DID, "3k1", T0 + 2, "x", operation="update"),
        "other_collection": like_event(DID, "3k2", T0 + 3),
        "kind_identity": identity_event(DID, T0 + 4),
        "kind_account": account_event(DID, T0 + 5),
        "no_text": post_event(DID, "3k3", T0 + 6, "   "),
    }
    for reason, event in reasons.items():
        item = parser.parse(json.dumps(event))
        assert (item.skipped, item.post, item.position) == (reason, None, event["time_us"]), reason
    for bad in ("{nope", "[]", json.dumps({"kind": "commit"}), b"\xff\xfe", json.dumps({"time_us": "soon"})):
        item = parser.parse(bad)
        assert (item.skipped, item.position) == ("malformed", None)
    broken = post_event(DID, "3k4", T0 + 7, "x")
    del broken["commit"]["rkey"]
    assert parser.parse(json.dumps(broken)).skipped == "malformed"
    # createdAt missing or unreadable: the event time
    no_time = post_event(DID, "3k5", T0 + 8_000, "hello", created_at="yesterday-ish")
    assert parser.parse(json.dumps(no_time)).post["created_at"] == (T0 + 8_000) // 1000
    # language filter (a region-tagged lang matches its language) and posts without langs
    german = bluesky.JetstreamParser(languages=["de"])
    assert german.parse(json.dumps(post_event(DID, "a", T0, "hallo", langs=["de-AT"]))).post is not None
    assert german.parse(json.dumps(post_event(DID, "b", T0, "hi", langs=["en"]))).skipped == "language"
    assert german.parse(json.dumps(post_event(DID, "c", T0, "hi", langs=None))).skipped == "language"


def test_subscribe_url_carries_the_documented_parameters(source_settings):
    settings = source_settings(bluesky_endpoint="wss://jet.example/subscribe", bluesky_wanted_dids=["did:plc:a",
                               "did:plc:b"], bluesky_compress=True)
    url = bluesky.jetstream_url(settings, 1725911162329308)
    assert url == ("wss://jet.example/subscribe?wantedCollections=app.bsky.feed.post&wantedDids=did%3Aplc%3Aa"
                   "&wantedDids=did%3Aplc%3Ab&cursor=1725911162329308&compress=true")


def _run_until(runner: SourceRunner, done, timeout: float = 30.0) -> None:
    async def main():
        task = asyncio.create_task(runner.run(install_signal_handlers=False))
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.1)
        runner.stop_requested.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())


def test_dropped_connection_resumes_from_the_checkpoint_and_loses_nothing(source_settings, kafka_broker,
                                                                           redis_client):
    events = _fixture_events(8)
    server = JetstreamServer(drop_after=4)  # the first connection dies after 4 frames, mid-stream
    try:
        server.publish(*events)
        settings = source_settings(bluesky_endpoint=server.url, brand="Acme Coffee")
        runner = SourceRunner("bluesky", settings, bluesky.stream_jetstream(settings), "em:test:bluesky",
                              topic="posts")
        _run_until(runner, lambda: runner.tracker.acked_posts >= 8 and runner._saved_position == T0 + 13_000)
    finally:
        server.close()
    records = read_topic(kafka_broker.url, "posts", want=8)
    assert {r["id"] for r in records} == {f"at://{DID}/app.bsky.feed.post/3kpost{i:04d}" for i in range(8)}
    assert all(r["brand"] == "acme coffee" and r["source"] == "bluesky" for r in records)
    assert server.connections == 2
    assert "wantedCollections=app.bsky.feed.post" in server.requests[0] and "cursor=" not in server.requests[0]
    resumed_at = int(server.requests[1].split("cursor=")[1].split("&")[0])
    assert T0 < resumed_at <= T0 + 4_000  # at most the frames before the drop, not the start of time
    checkpoint = json.loads(redis_client.get("em:test:bluesky"))
    assert checkpoint["position"] == T0 + 13_000  # the last event's time_us (8 posts + 5 others, 1 ms apart)
    metrics = runner.metrics
    assert metrics.value("em_source_skipped_total", reason="delete") >= 1
    assert metrics.value("em_source_skipped_total", reason="update") >= 1
    assert metrics.value("em_source_skipped_total", reason="malformed") >= 2
    assert metrics.value("em_source_skipped_total", reason="kind_identity") >= 1
    assert metrics.value("em_source_reconnects_total", cause="ConnectionClosedError") == 1
    assert metrics.value("em_source_skipped_total", reason="other_collection") == 0  # filtered by Jetstream


def test_compressed_frames_with_the_dictionary(source_settings, kafka_broker, tmp_path):
    import zstandard

    samples = [json.dumps(post_event(DID, f"3ks{i}", T0 + i, f"sample text {i} " * (i % 7))).encode()
               for i in range(400)]
    dictionary = zstandard.train_dictionary(4096, samples).as_bytes()
    (tmp_path / "zstd_dictionary").write_bytes(dictionary)
    server = JetstreamServer(zstd_dictionary=dictionary)
    try:
        server.publish(*_fixture_events(5))
        settings = source_settings(bluesky_endpoint=server.url, bluesky_compress=True,
                                   bluesky_zstd_dictionary=tmp_path / "zstd_dictionary")
        runner = SourceRunner("bluesky", settings, bluesky.stream_jetstream(settings), "em:test:z", topic="posts")
        _run_until(runner, lambda: runner.tracker.acked_posts >= 5)
    finally:
        server.close()
    assert "compress=true" in server.requests[0]
    records = read_topic(kafka_broker.url, "posts", want=5)
    assert sorted(r["text"] for r in records) == [f"post number {i}, I love it" for i in range(5)]
    with pytest.raises(ValueError, match="zstd_dictionary"):
        bluesky.stream_jetstream(source_settings(bluesky_compress=True))


def test_slow_consumer_is_dropped_by_the_server_and_catches_up_without_loss(source_settings, kafka_broker):
    n = 12_000  # more frames than the kernel buffers between the server and a stalled reader hold
    events = [post_event(DID, f"3kslow{i:05d}", T0 + i * 10, f"slow consumer post {i} " + "x" * 100)
              for i in range(n)]
    server = JetstreamServer(slow_timeout_s=0.5, write_limit=1024, rate=3000)  # a live stream, 3000 frames/s
    try:
        server.publish(*events)
        settings = source_settings(bluesky_endpoint=server.url, max_in_flight=500)
        runner = SourceRunner("bluesky", settings, bluesky.stream_jetstream(settings), "em:test:slow",
                              topic="posts")

        async def main():
            task = asyncio.create_task(runner.run(install_signal_handlers=False))
            while runner.tracker.acked_posts < 100:
                await asyncio.sleep(0.05)
            os.kill(kafka_broker.pid, signal.SIGSTOP)  # the broker stalls: the source must stop reading
            try:
                await asyncio.sleep(6.0)
            finally:
                os.kill(kafka_broker.pid, signal.SIGCONT)
            deadline = time.monotonic() + 60
            while runner.tracker.acked_posts < n and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            runner.stop_requested.set()
            await asyncio.wait_for(task, 20)

        asyncio.run(main())
    finally:
        server.close()
    assert server.dropped_slow >= 1 and server.connections >= 2  # it fell behind, was dropped, came back
    records = read_topic(kafka_broker.url, "posts", want=n, timeout=30)
    assert len({r["id"] for r in records}) == n


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_checkpoint_survives_kill_9_and_sigterm_stops_cleanly(kafka_broker, redis_server, tmp_path):
    n = 600
    events = [post_event(DID, f"3kkill{i:04d}", T0 + i * 1000, f"post {i}") for i in range(n)]
    server = JetstreamServer(rate=150)  # 4 s of stream: the kill lands mid-way
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    env = {"EM_SOURCE_KAFKA_URL": kafka_broker.url, "EM_SOURCE_REDIS_URL": redis_server.url,
           "EM_SOURCE_BLUESKY_ENDPOINT": server.url, "EM_SOURCE_METRICS_PORT": "0",
           "EM_SOURCE_CHECKPOINT_INTERVAL_S": "0.1", "EM_SOURCE_BACKOFF_INITIAL_S": "0.1"}
    key = "em:source:bluesky:" + server.url.split("/")[2]
    try:
        server.publish(*events)
        first = source_process(["bluesky"], env, tmp_path / "first.log")
        _wait(lambda: client.get(key) and json.loads(client.get(key))["position"] > T0 + 100_000, 30,
              "a checkpoint after 100 posts")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = json.loads(client.get(key))["position"]
        assert at_kill < T0 + (n - 1) * 1000  # killed mid-stream
        second = source_process(["bluesky"], env, tmp_path / "second.log")
        _wait(lambda: json.loads(client.get(key))["position"] == T0 + (n - 1) * 1000, 30, "the last event")
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0, (tmp_path / "second.log").read_text()
    finally:
        server.close()
        client.close()
    assert f"cursor={at_kill}" in server.requests[1]  # resumed exactly at the checkpoint
    records = read_topic(kafka_broker.url, "posts", want=n)
    ids = [r["id"] for r in records]
    assert set(ids) == {f"at://{DID}/app.bsky.feed.post/3kkill{i:04d}" for i in range(n)}  # none lost
    duplicates = len(ids) - len(set(ids))  # the replayed overlap: same ids, so the worker counts them once
    by_id: dict[str, dict] = {}
    for record in records:
        assert by_id.setdefault(record["id"], record) == record
    assert duplicates < n
    assert "stopped;" in (tmp_path / "second.log").read_text()


def test_sigterm_during_a_live_stream_stops_promptly_with_the_checkpoint_saved(kafka_broker, redis_server, tmp_path):
    """Regression: a SIGTERM that arrived while frames kept coming was swallowed (Python 3.11's wait_for around
    recv()), and the source streamed on until the server went away."""
    server = JetstreamServer(rate=800)
    server.publish(*[post_event(DID, f"3klive{i:05d}", T0 + i, f"live {i}") for i in range(20_000)])  # 25 s of frames
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    env = {"EM_SOURCE_KAFKA_URL": kafka_broker.url, "EM_SOURCE_REDIS_URL": redis_server.url,
           "EM_SOURCE_BLUESKY_ENDPOINT": server.url, "EM_SOURCE_METRICS_PORT": "0",
           "EM_SOURCE_CHECKPOINT_KEY": "em:test:live"}
    try:
        process = source_process(["bluesky"], env, tmp_path / "log")
        _wait(lambda: client.get("em:test:live") and json.loads(client.get("em:test:live"))["position"] > T0 + 500,
              30, "500 posts")
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(10)
        except Exception:
            process.kill()
            raise
        assert code == 0
        assert server.sent < 20_000  # stopped mid-stream, not at its end
        saved = json.loads(client.get("em:test:live"))["position"]
    finally:
        server.close()
        client.close()
    log = (tmp_path / "log").read_text()
    assert f"checkpoint {saved}" in log  # the final checkpoint is the position it reports
