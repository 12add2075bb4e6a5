"""`emotion-monitor produce` against a real broker: bad rows are reported with line and reason, good rows delivered."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main
from emotion_monitor.topics import bootstrap_servers, ensure_topics


async def _consume_all(kafka_url: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers(kafka_url), auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    records = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
        # one more poll: anything beyond the expected count would be a bug (a rejected row delivered)
        for messages in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(messages)
    finally:
        await consumer.stop()
    return [{"key": r.key.decode(), "value": json.loads(r.value)} for r in records]


def test_produce_jsonl_reports_bad_rows_and_delivers_good_ones(kafka_broker, tmp_path):
    ensure_topics(kafka_broker.url, {"my-posts": 2})
    lines = [
        json.dumps({"id": "p1", "brand": "Acme", "text": "I love it", "created_at": "2026-11-25T10:00:00Z"}),
        "{not json",
        json.dumps({"id": "p2", "brand": "acme"}),  # no text
        "",  # blank lines are skipped, not rejected
        json.dumps({"id": "p3", "brands": ["acme", "Nimbus Air"], "text": "meh", "created_at": 1764064800000}),
        json.dumps({"id": "p4", "brand": "bad=brand", "text": "breaks label filters"}),
        json.dumps({"id": 5, "brand": "acme", "text": "id must be a string"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "p6", "brand": "velora", "text": "no created_at: the record timestamp is used"}),
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "rejects.jsonl"

    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", kafka_broker.url, "--topic", "my-posts",
                                       "--rejects", str(rejects), "--no-progress"])

    assert result.exit_code == 1, result.output  # some rows were rejected
    assert "sent 3 post(s)" in result.output
    report = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(row["line"], row["reason"]) for row in report] == [
        (2, "not_json"), (3, "missing_field"), (6, "invalid_value"), (7, "wrong_type"), (8, "not_object"),
    ]
    assert f"{path}:3: rejected (missing_field)" in result.output
    assert "'text'" in report[1]["detail"]

    delivered = asyncio.run(_consume_all(kafka_broker.url, "my-posts", expected=3))
    assert sorted(record["value"]["id"] for record in delivered) == ["p1", "p3", "p6"]
    assert {record["key"] for record in delivered} == {"p1", "p3", "p6"}  # keyed by post id
    assert next(r for r in delivered if r["value"]["id"] == "p1")["value"]["text"] == "I love it"  # sent as given


def test_produce_csv_with_brand_lists_and_a_ragged_row(kafka_broker, tmp_path):
    ensure_topics(kafka_broker.url, {"posts": 1})
    path = tmp_path / "posts.csv"
    path.write_text(
        "id,brands,text,created_at,source\n"
        'c1,acme|velora,"Two brands, one post",2026-11-25T10:00:00Z,survey\n'
        "c2,acme,,,\n"  # empty text cell: absent -> missing_field
        "c3,acme,too,many,cells,here\n"
        'c4,velora,"multi\nline text",,\n'
        "c5,velora,fine,1764064800000,\n"
    )
    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", kafka_broker.url, "--no-progress"])

    assert result.exit_code == 1, result.output
    assert "sent 3 post(s) to posts" in result.output
    assert f"{path}:3: rejected (missing_field)" in result.output
    assert f"{path}:4: rejected (invalid_row)" in result.output
    delivered = asyncio.run(_consume_all(kafka_broker.url, "posts", expected=3))
    by_id = {record["value"]["id"]: record["value"] for record in delivered}
    assert sorted(by_id) == ["c1", "c4", "c5"]
    assert by_id["c1"]["brands"] == ["acme", "velora"]
    assert by_id["c4"]["text"] == "multi\nline text"


def test_produce_all_good_exits_zero(kafka_broker, tmp_path):
    ensure_topics(kafka_broker.url, {"posts": 1})
    path = tmp_path / "ok.ndjson"
    path.write_text("".join(json.dumps({"id": f"g{i}", "brand": "acme", "text": f"post {i}"}) + "\n" for i in range(50)))
    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", kafka_broker.url, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "sent 50 post(s)" in result.output and "rejected 0 row(s)" in result.output
    assert len(asyncio.run(_consume_all(kafka_broker.url, "posts", expected=50))) == 50


def test_produce_without_a_broker_says_how_to_fix_it(tmp_path):
    from emotion_monitor.servers import free_port

    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"id": "x", "brand": "acme", "text": "hi"}) + "\n")
    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", f"kafka://127.0.0.1:{free_port()}",
                                       "--no-progress"])
    assert result.exit_code != 0
    assert "cannot reach Kafka" in result.output and "emotion-monitor up" in result.output


def test_produce_applies_the_workers_size_limit(kafka_broker, tmp_path, monkeypatch):
    """The limit is the worker's EM_MONITOR_MAX_POST_BYTES, not parse_post's default (256 KiB): a post the worker
    accepts is sent, one the worker would dead-letter as oversize is reported here."""
    from monitor.post import DEFAULT_MAX_BYTES, PostRejected, parse_post
    from monitor.settings import MonitorSettings

    monkeypatch.setenv("EM_MONITOR_MAX_POST_BYTES", "400000")
    ensure_topics(kafka_broker.url, {"posts": 1})
    big = json.dumps({"id": "big", "brand": "acme", "text": "x" * 300_000}).encode()  # over the default, under 400 kB
    huge = json.dumps({"id": "huge", "brand": "acme", "text": "y" * 450_000}).encode()
    small = json.dumps({"id": "small", "brand": "acme", "text": "fine"}).encode()
    assert DEFAULT_MAX_BYTES < len(big) < 400_000 < len(huge)
    path = tmp_path / "sizes.jsonl"
    path.write_bytes(b"\n".join([big, huge, small]) + b"\n")

    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", kafka_broker.url, "--no-progress"])

    assert result.exit_code == 1, result.output
    assert "sent 2 post(s)" in result.output
    assert f"{path}:2: rejected (oversize)" in result.output and "400000-byte limit" in result.output
    delivered = asyncio.run(_consume_all(kafka_broker.url, "posts", expected=2))
    assert sorted(record["value"]["id"] for record in delivered) == ["big", "small"]
    # and the worker, with the same settings, takes what was sent and would dead-letter what was rejected
    limit = MonitorSettings().max_post_bytes
    assert parse_post(big, None, max_bytes=limit).id == "big"
    with pytest.raises(PostRejected, match="oversize|400000"):
        parse_post(huge, None, max_bytes=limit)


def test_produce_with_invalid_worker_settings_names_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_MONITOR_MAX_POST_BYTES", "10")  # the worker refuses < 256
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"id": "x", "brand": "acme", "text": "hi"}) + "\n")
    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", "kafka://127.0.0.1:1", "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "invalid EM_MONITOR_* settings" in result.output and "max_post_bytes" in result.output


def test_produce_sends_untagged_rows_when_brand_matching_is_on(kafka_broker, tmp_path, monkeypatch):
    """Text-only rows get a stable id (the same on a second run, so the worker dedupes them); with matching off they
    are rejected as before."""
    ensure_topics(kafka_broker.url, {"raw-posts": 1})
    path = tmp_path / "firehose.csv"
    path.write_text("text\nloving #acmecoffee\nsomething else\n")
    monkeypatch.delenv("EM_MONITOR_BRAND_MATCHING", raising=False)
    args = ["produce", str(path), "--kafka-url", kafka_broker.url, "--topic", "raw-posts", "--no-progress"]
    for _ in range(2):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "sent 2 post(s)" in result.output
    delivered = asyncio.run(_consume_all(kafka_broker.url, "raw-posts", expected=4))
    ids = [record["value"]["id"] for record in delivered]
    assert len(ids) == 4 and len(set(ids)) == 2 and all(i.startswith("firehose.csv:") for i in ids)
    assert {record["value"]["text"] for record in delivered} == {"loving #acmecoffee", "something else"}
    assert all("brand" not in record["value"] and "brands" not in record["value"] for record in delivered)

    monkeypatch.setenv("EM_MONITOR_BRAND_MATCHING", "off")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"{path}:2: rejected (missing_field)" in result.output and "sent 0 post(s)" in result.output


def test_produce_reports_hostile_values_and_goes_on(kafka_broker, tmp_path):
    """Infinity, 1e400, 100k-deep nesting and a lone surrogate made parse_post raise something else than a rejection,
    and `produce` crashed at that row, sending nothing after it."""
    ensure_topics(kafka_broker.url, {"my-posts": 1})
    lines = [
        json.dumps({"id": "p1", "brand": "acme", "text": "first"}),
        '{"id": "x1", "brand": "acme", "text": "t", "created_at": Infinity}',
        '{"id": "x2", "brand": "acme", "text": "t", "created_at": 1e400}',
        '{"id": "x3", "brand": "acme", "text": "t", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"id": "x4", "brand": "acme", "text": "\\ud800"}',
        json.dumps({"id": "p2", "brand": "acme", "text": "last"}),
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "rejects.jsonl"

    result = CliRunner().invoke(main, ["produce", str(path), "--kafka-url", kafka_broker.url, "--topic", "my-posts",
                                       "--rejects", str(rejects), "--no-progress"])

    assert result.exit_code == 1, result.output
    assert "sent 2 post(s)" in result.output
    report = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(row["line"], row["reason"]) for row in report] == [
        (2, "invalid_value"), (3, "invalid_value"), (4, "not_json"), (5, "invalid_value")]
    delivered = asyncio.run(_consume_all(kafka_broker.url, "my-posts", expected=2))
    assert sorted(record["value"]["id"] for record in delivered) == ["p1", "p2"]
