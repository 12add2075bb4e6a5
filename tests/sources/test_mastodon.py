"""The Mastodon source against a local streaming server (server-sent events + the REST timelines)."""

from __future__ import annotations

import asyncio
import json
import time

from emotion_monitor.sources import mastodon
from emotion_monitor.sources.base import SourceRunner
from tests.sources.conftest import read_topic
from tests.sources.servers import MastodonServer, status

# The HTML Mastodon renders for a status with a shortened link, a mention, a hashtag and entities.
CONTENT = ('<p>Loving the new <a href="https://example.social/tags/acme" class="mention hashtag" rel="tag">#<span>'
           'acme</span></a> flat white &amp; the crema! <span class="h-card"><a href="https://example.social/@bob" '
           'class="u-url mention">@<span>bob</span></a></span></p><p>Menu: <a href="https://acme.example/menu/'
           'autumn-2026/drinks" rel="nofollow noopener" target="_blank"><span class="invisible">https://</span>'
           '<span class="ellipsis">acme.example/menu/autumn</span><span class="invisible">-2026/drinks</span></a>'
           '<br>see you there&nbsp;:)</p>')


def test_html_to_text_reads_like_a_mastodon_client():
    assert mastodon.html_to_text(CONTENT) == ("Loving the new #acme flat white & the crema! @bob\n\n"
                                              "Menu: acme.example/menu/autumn…\nsee you there :)")
    assert mastodon.html_to_text("<p>one</p><p>two<br/>three</p>") == "one\n\ntwo\nthree"
    assert mastodon.html_to_text("plain &lt;b&gt; text") == "plain <b> text"


def test_events_become_posts_or_counted_skips():
    update = mastodon.parse_sse_event("update", json.dumps(status(110, CONTENT, language="en")), "100")
    assert update.position == "110"
    post = update.post
    assert post["id"] == "https://example.social/users/alice/statuses/110"
    assert post["url"] == "https://example.social/@alice/110" and post["author"] == "alice@example.social"
    assert post["lang"] == "en" and post["source"] == "mastodon" and post["text"].startswith("Loving the new #acme")
    assert "brand" not in post
    warned = mastodon.parse_sse_event("update", json.dumps(status(111, "<p>it broke</p>", spoiler="rant")), "110")
    assert warned.post["text"] == "rant\n\nit broke"
    reblog = mastodon.parse_sse_event("update", json.dumps(status(112, "", reblog=status(5, "<p>x</p>"))), "111")
    assert (reblog.skipped, reblog.position) == ("reblog", "112")
    assert mastodon.parse_sse_event("delete", "109", "112").skipped == "delete"
    assert mastodon.parse_sse_event("status.update", json.dumps(status(99, "<p>e</p>")), "112").skipped == "update"
    assert mastodon.parse_sse_event("notification", "{}", "112").skipped == "other_event"
    assert mastodon.parse_sse_event("update", "{not json", "112").skipped == "malformed"
    assert mastodon.parse_sse_event("update", json.dumps({"id": "113"}), "112").skipped == "malformed"
    older = mastodon.parse_sse_event("update", json.dumps(status(99, "<p>late</p>")), "112")
    assert older.post is not None and older.position == "112"  # the checkpoint never moves backwards
    assert mastodon.newer("99", "100") == "100" and mastodon.newer("111", "2") == "111"


def _run(runner: SourceRunner, steps) -> None:
    async def main():
        task = asyncio.create_task(runner.run(install_signal_handlers=False))
        for condition, action in steps:
            deadline = time.monotonic() + 20
            while not condition() and time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.05)
            assert condition(), f"step not reached: {condition}"
            await asyncio.get_running_loop().run_in_executor(None, action)
        runner.stop_requested.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(main())


def test_hashtag_stream_with_token_survives_a_drop_and_backfills_the_gap(source_settings, kafka_broker,
                                                                         redis_client):
    server = MastodonServer(token="s3cret")
    settings = source_settings(mastodon_instance=server.url, mastodon_token="s3cret", mastodon_timeline="hashtag",
                               mastodon_tag="acme", brand="acme coffee", idle_timeout_s=5)
    runner = SourceRunner("mastodon", settings, mastodon.stream_mastodon(settings), mastodon.checkpoint_key(settings),
                          topic="posts")
    expected = {f"https://example.social/users/alice/statuses/{i}" for i in (101, 102, 105, 106, 107, 108)}

    def first_batch():
        server.publish(status(101, "<p>first #acme</p>", tag="acme"))
        server.publish(status(102, "<p>second #acme</p>", tag="acme"))
        server.publish(status(103, "<p>not about the tag</p>", tag="other"))
        server.publish(("delete", "101"))
        server.publish(status(104, "<p>boost</p>", tag="acme", reblog=status(50, "<p>old</p>")))

    def drop_and_miss_two():
        server.drop_streams()
        server.publish(status(105, "<p>written while the source was away</p>", tag="acme"), live=False)
        server.publish(status(106, "<p>also while away</p>", tag="acme"), live=False)

    def after_reconnect():
        server.publish(status(107, "<p>live again</p>", tag="acme"))
        server.publish(status(108, "<p>and <br>more</p>", tag="acme"))

    try:
        _run(runner, [
            (lambda: server.connections == 1, first_batch),
            (lambda: runner.tracker.acked_posts >= 2 and runner._saved_position == "104", drop_and_miss_two),
            (lambda: server.connections == 2 and runner.tracker.acked_posts >= 4, after_reconnect),
            (lambda: runner.tracker.acked_posts >= 6, lambda: None),
        ])
    finally:
        server.close()
    records = read_topic(kafka_broker.url, "posts", want=len(expected))
    assert {r["id"] for r in records} == expected  # the two posted during the gap came through the REST backfill
    assert all(r["brand"] == "acme coffee" for r in records)
    assert any(r.startswith("/api/v1/timelines/tag/acme?") and "min_id=104" in r for r in server.requests)
    assert server.requests[0] == "/api/v1/streaming/hashtag?tag=acme"
    assert json.loads(redis_client.get(mastodon.checkpoint_key(settings)))["position"] == "108"
    assert runner.metrics.value("em_source_skipped_total", reason="delete") == 1
    assert runner.metrics.value("em_source_skipped_total", reason="reblog") == 1


def test_public_stream_without_the_required_token_retries_with_backoff(source_settings):
    server = MastodonServer(token="needed")
    settings = source_settings(mastodon_instance=server.url)
    runner = SourceRunner("mastodon", settings, mastodon.stream_mastodon(settings), "em:test:m", topic="posts")
    try:
        _run(runner, [(lambda: runner.metrics.value("em_source_reconnects_total", cause="ConnectionError") >= 2,
                       lambda: None)])
    finally:
        server.close()
    assert server.connections == 0 and server.requests[0] == "/api/v1/streaming/public"


def test_slow_consumer_stalled_broker_loses_nothing(source_settings, kafka_broker):
    import os
    import signal

    server = MastodonServer()
    settings = source_settings(mastodon_instance=server.url, max_in_flight=100, idle_timeout_s=30)
    runner = SourceRunner("mastodon", settings, mastodon.stream_mastodon(settings), "em:test:slow", topic="posts")
    n = 1500
    state = {"max_in_flight": 0}

    def stall_while_publishing():
        os.kill(kafka_broker.pid, signal.SIGSTOP)  # the broker stalls while statuses keep streaming in
        try:
            for i in range(n):
                server.publish(status(1000 + i, f"<p>status {i} " + "padding " * 30 + "</p>"))
                state["max_in_flight"] = max(state["max_in_flight"], len(runner.tracker))
            time.sleep(1.0)
            state["max_in_flight"] = max(state["max_in_flight"], len(runner.tracker))
        finally:
            os.kill(kafka_broker.pid, signal.SIGCONT)

    try:
        _run(runner, [(lambda: server.connections == 1, stall_while_publishing),
                      (lambda: runner.tracker.acked_posts >= n, lambda: None)])
    finally:
        server.close()
    assert state["max_in_flight"] <= 101 + 1  # it stopped reading instead of buffering without bound
    records = read_topic(kafka_broker.url, "posts", want=n, timeout=30)
    assert len({r["id"] for r in records}) == n
