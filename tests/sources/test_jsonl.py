"""The followed-file source: lines to posts, bad lines to the dead-letter topic, resume by offset, rotation."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time

from emotion_monitor.sources import jsonl
from emotion_monitor.sources.base import SourceRunner
from tests.sources.conftest import read_topic, source_process


def _line(i: int, **extra) -> str:
    return json.dumps({"id": f"vendor-{i}", "text": f"post {i} about the flat white", **extra}) + "\n"


def test_file_to_posts_with_bad_lines_dead_lettered_then_resume_reads_only_new_lines(source_settings, kafka_broker,
                                                                                   redis_client, tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(_line(1) + "\n" + "{broken\n" + _line(2, brand="Velora") + "[1, 2]\n" + '{"text": "no id"}\n'
                    + _line(3))  # no newline issue: every line ends with one
    settings = source_settings(brand="acme coffee")
    key = jsonl.checkpoint_key(path, None)

    def run_once():
        runner = SourceRunner("jsonl", settings, jsonl.stream_jsonl(path, False, 0.05), key, topic="posts",
                              dlq_topic="posts.dlq", finite=True)
        asyncio.run(asyncio.wait_for(runner.run(install_signal_handlers=False), 30))
        return runner

    first = run_once()
    assert first.tracker.acked_posts == 3 and first.metrics.value("em_source_dead_letters_total") == 3
    position = json.loads(redis_client.get(key))["position"]
    assert position == {"inode": os.stat(path).st_ino, "offset": path.stat().st_size}
    with path.open("a") as out:
        out.write(_line(4) + _line(5))
    second = run_once()
    assert second.tracker.acked_posts == 2  # only the appended lines
    posts = read_topic(kafka_broker.url, "posts", want=5)
    assert sorted(p["id"] for p in posts) == [f"vendor-{i}" for i in range(1, 6)]  # none twice
    assert {p["id"]: p.get("brand") for p in posts}["vendor-2"] == "Velora"  # a line's own brand is kept
    assert sum(p.get("brand") == "acme coffee" for p in posts) == 4
    dead = read_topic(kafka_broker.url, "posts.dlq", want=None)
    assert [d["reason"] for d in dead] == ["not_json", "not_object", "missing_field"]
    assert base64.b64decode(dead[0]["original_b64"]) == b"{broken"
    assert dead[0]["source_topic"] == f"file:{path}" and dead[0]["source_offset"] == len(_line(1)) + 1


def test_follow_reads_appends_waits_for_whole_lines_and_handles_rotation(source_settings, kafka_broker, tmp_path):
    path = tmp_path / "stream.jsonl"
    path.write_text(_line(1))
    settings = source_settings()
    runner = SourceRunner("jsonl", settings, jsonl.stream_jsonl(path, True, 0.05), "em:test:follow", topic="posts")

    async def main():
        task = asyncio.create_task(runner.run(install_signal_handlers=False))

        async def until(count):
            deadline = time.monotonic() + 20
            while runner.tracker.acked_posts < count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert runner.tracker.acked_posts == count

        await until(1)
        with path.open("a") as out:
            out.write(_line(2))
            out.write(_line(3)[:15])  # half a line: must not be sent yet
            out.flush()
            await until(2)
            await asyncio.sleep(0.3)
            assert runner.tracker.acked_posts == 2
            out.write(_line(3)[15:])
        await until(3)
        replacement = tmp_path / "stream.jsonl.new"  # log rotation: a new file takes the name
        replacement.write_text(_line(10) + _line(11))
        os.replace(replacement, path)
        await until(5)
        runner.stop_requested.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())
    posts = read_topic(kafka_broker.url, "posts", want=5)
    assert sorted(p["id"] for p in posts) == ["vendor-1", "vendor-10", "vendor-11", "vendor-2", "vendor-3"]


def test_cli_follow_stops_cleanly_on_sigterm(kafka_broker, redis_server, redis_client, tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_text("".join(_line(i) for i in range(20)))
    from emotion_monitor.servers import free_port

    port = free_port()
    env = {"EM_SOURCE_KAFKA_URL": kafka_broker.url, "EM_SOURCE_REDIS_URL": redis_server.url,
           "EM_SOURCE_METRICS_PORT": str(port), "EM_SOURCE_CHECKPOINT_INTERVAL_S": "0.1"}
    process = source_process(["jsonl", str(path), "--follow", "--brand", "Acme Coffee"], env, tmp_path / "log")
    key = jsonl.checkpoint_key(path, None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        raw = redis_client.get(key)
        if raw and json.loads(raw)["position"]["offset"] == path.stat().st_size:
            break
        time.sleep(0.1)
    import urllib.request

    time.sleep(0.3)  # the metric follows the checkpoint within one interval
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'em_source_posts_total{source="jsonl"} 20.0' in metrics
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
    assert health["ok"] and health["checkpoint"]["offset"] == path.stat().st_size
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    log = (tmp_path / "log").read_text()
    assert "20 post(s) acknowledged" in log
    assert len(read_topic(kafka_broker.url, "posts", want=20)) == 20
