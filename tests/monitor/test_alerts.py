"""Spike rule (pure) and the alert engine against a real Redis and a real local webhook server.

No classifier here: posts are written with given scores, which is what the engine reads back from Redis."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from monitor.alerts import AlertEngine, WindowCounts, is_spike
from monitor.post import Post
from monitor.settings import MonitorSettings
from monitor.store import ClassifiedPost, RedisStore

EMOTIONS = ["anger", "joy", "neutral"]
T0 = 1_795_654_800_000
MIN = 60_000


def settings(**extra) -> MonitorSettings:
    # these tests pin the threshold rule's exact windows and counts (and the emission path it shares with the
    # statistical detector, which tests/monitor/test_detector.py covers); the statistical detector is the default now
    extra.setdefault("alert_detector", "threshold")
    return MonitorSettings(alert_window_ms=5 * MIN, alert_baseline_ms=60 * MIN, alert_min_volume=10,
                           alert_min_baseline_posts=20, alert_ratio=3.0, alert_min_share=0.2, **extra)


@pytest.mark.parametrize(
    "counts, spike",
    [
        (WindowCounts(12, 20, 6, 120), True),     # 60% vs 5%
        (WindowCounts(9, 10, 0, 120), False),     # below min volume
        (WindowCounts(12, 20, 5, 10), False),     # baseline too thin to judge
        (WindowCounts(12, 100, 1, 120), False),   # 12% < min share
        (WindowCounts(12, 20, 30, 120), False),   # 60% vs 25%: under 3x
        (WindowCounts(15, 20, 0, 120), True),     # nothing before
    ],
)
def test_spike_rule(counts, spike):
    assert is_spike(counts, settings()) is spike


def _classified(i: int, brand: str, created_at: int, angry: bool) -> ClassifiedPost:
    scores = {"anger": 0.9 if angry else 0.05, "joy": 0.1 if angry else 0.7, "neutral": 0.2}
    post = Post(id=f"{brand}-{i}", brands=[brand], text="t", created_at=created_at)
    return ClassifiedPost(post, scores, [k for k, v in scores.items() if v >= 0.5], "test")


@pytest.mark.parametrize("window_ms, said", [(5 * MIN, "5 min"), (20_000, "20 s"), (90_000, "90 s")])
def test_alert_message_states_the_real_window(window_ms, said):
    from monitor.alerts import _duration

    assert _duration(window_ms) == said


END = T0 + 120 * 30_000  # end of the steady hour, start of the spike
THRESHOLDS = np.full(3, 0.5, dtype=np.float32)
STEADY = [_classified(i, "acme", T0 + i * 30_000, i % 10 == 0) for i in range(120)]  # one hour, 10% angry
SPIKE = [_classified(1000 + i, "acme", END + i * 10_000, i % 5 != 0) for i in range(25)]  # 80% angry
FIRES_AT = END + 14 * 10_000  # the third spike batch of five is the first with 10 angry posts in the window


async def _write_steady_hour(store: RedisStore, engine: AlertEngine) -> None:
    for start in range(0, 120, 20):
        await store.write(STEADY[start:start + 20], THRESHOLDS)
        assert await engine.evaluate({"acme": STEADY[start + 19].post.created_at}) == []


def test_engine_fires_once_to_redis_topic_and_webhook_with_retries(redis_server, redis_client, webhook):
    hook = webhook(fail_first=2)  # two 500s, then success: retries with back-off
    cfg = settings(redis_url=redis_server.url, webhook_url=hook.url, webhook_backoff=0.05, webhook_retries=3)
    sent = []

    async def publish(topic, key, value):
        sent.append((topic, key, value))

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        await _write_steady_hour(store, engine)  # never a spike
        fired = []
        for start in range(0, 25, 5):  # then 5 minutes where most posts are angry
            await store.write(SPIKE[start:start + 5], THRESHOLDS)
            fired += await engine.evaluate({"acme": SPIKE[start + 4].post.created_at})
        await engine.drain()
        await store.close()
        return fired

    fired = asyncio.run(run())
    assert len(fired) == 1 and fired[0].brand == "acme" and fired[0].emotion == "anger"
    # at the third spike batch (spike posts 0..14): 12 angry of those 15, plus the 5 calm steady posts of the last
    # 5 minutes = 12 of 20 posts; the baseline hour before it holds steady posts 0..114, 12 of them angry
    assert (fired[0].count, fired[0].posts, fired[0].value) == (12, 20, 0.6)
    assert fired[0].baseline == round(12 / 115, 4)
    assert (fired[0].window_start, fired[0].window_end) == (FIRES_AT - 5 * MIN + 1, FIRES_AT)
    assert "60% of 20 posts in the last 5 min vs 10% before" in fired[0].message
    assert [t for t, _, _ in sent] == ["alerts"]
    assert len(hook.received) == 1 and hook.received[0]["brand"] == "acme" and hook.state["attempts"] == 3
    stored = redis_client.zrange("em:alerts", 0, -1)
    assert len(stored) == 1 and '"emotion":"anger"' in stored[0]
    # the cooldown marker holds the alert's event time and lives EM_MONITOR_ALERT_COOLDOWN_MS (15 min by default)
    assert redis_client.get("em:alert:last:acme:anger") == str(FIRES_AT)
    assert 15 * MIN - 60_000 < redis_client.pttl("em:alert:last:acme:anger") <= 15 * MIN


def test_two_engines_on_one_redis_fire_one_alert(redis_server, redis_client):
    """Two workers (each its own engine and connection) see the same spike at the same moment: one alert in all."""
    cfg = settings(redis_url=redis_server.url)
    sent = []

    async def publish(topic, key, value):
        sent.append(topic)

    async def run():
        stores = [RedisStore(cfg, EMOTIONS), RedisStore(cfg, EMOTIONS)]
        engines = [AlertEngine(cfg, store, publish, "test") for store in stores]
        await _write_steady_hour(stores[0], engines[0])
        await stores[0].write(SPIKE[:15], THRESHOLDS)
        results = []
        for _ in range(3):  # several rounds, both engines at once: only the first claim of the cooldown wins
            results.append(await asyncio.gather(*(e.evaluate({"acme": FIRES_AT}) for e in engines)))
        for store in stores:
            await store.close()
        return results

    results = asyncio.run(run())
    fired = [alert for round_ in results for per_engine in round_ for alert in per_engine]
    assert len(fired) == 1 and (fired[0].brand, fired[0].emotion) == ("acme", "anger")
    assert sent == ["alerts"]
    assert redis_client.zcard("em:alerts") == 1 and redis_client.zcard("em:alerts:brand:acme") == 1


def test_cooldown_expires_and_the_spike_alerts_again(redis_server, redis_client):
    cooldown_ms = 300
    cfg = settings(redis_url=redis_server.url, alert_cooldown_ms=cooldown_ms)

    async def publish(topic, key, value):
        pass

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        await _write_steady_hour(store, engine)
        await store.write(SPIKE[:15], THRESHOLDS)
        first = await engine.evaluate({"acme": FIRES_AT})
        during = await engine.evaluate({"acme": FIRES_AT})  # same spike, inside the cooldown
        ttl = await store.redis.pttl("em:alert:last:acme:anger")
        deadline = time.monotonic() + 30
        while await store.redis.exists("em:alert:last:acme:anger"):  # wait for Redis to expire the marker
            assert time.monotonic() < deadline, "cooldown marker never expired"
            await asyncio.sleep(0.05)
        after = await engine.evaluate({"acme": FIRES_AT})
        await store.close()
        return first, during, ttl, after

    first, during, ttl, after = asyncio.run(run())
    assert len(first) == 1 and during == [] and 0 < ttl <= cooldown_ms
    assert len(after) == 1 and (after[0].emotion, after[0].count) == ("anger", 12)
    assert redis_client.zcard("em:alerts") == 2


def test_webhook_refuses_hosts_outside_allow_list(redis_server, webhook):
    hook = webhook()
    url = hook.url.replace("127.0.0.1", "localhost")
    cfg = settings(redis_url=redis_server.url, webhook_url=url, webhook_allowed_hosts=["127.0.0.1"])

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, None, "test")
        try:
            return await engine.post_webhook('{"x": 1}')
        finally:
            await store.close()

    assert asyncio.run(run()) is False
    assert hook.state["attempts"] == 0


async def _steady_then_spike(store, engine, thresholds, before_spike=None):
    """The scenario of the test above; ``before_spike`` runs after the steady hour. Returns what each spike
    evaluation returned or raised."""
    steady = [_classified(i, "acme", T0 + i * 30_000, i % 10 == 0) for i in range(120)]
    for start in range(0, 120, 20):
        await store.write(steady[start:start + 20], thresholds)
        await engine.evaluate({"acme": steady[start + 19].post.created_at})
    if before_spike:
        before_spike()
    end = T0 + 120 * 30_000
    spike = [_classified(1000 + i, "acme", end + i * 10_000, i % 5 != 0) for i in range(25)]
    await store.write(spike, thresholds)
    try:
        return await engine.evaluate({"acme": spike[-1].post.created_at})
    except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
        return exc


def test_alert_is_not_lost_when_storing_fails_after_the_cooldown_claim(redis_server, redis_client):
    """The cooldown SET NX used to be claimed before the MULTI/EXEC that stores the alert: when that write failed,
    the batch's retry found the cooldown taken and the alert was never stored, published or sent."""
    cfg = settings(redis_url=redis_server.url, alert_cooldown_ms=900_000)
    sent = []

    async def publish(topic, key, value):
        sent.append(value)

    def break_brand_index():  # any write failure of the store step; here a key of the wrong type
        redis_client.set("em:alerts:brand:acme", "not a sorted set")

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        thresholds = np.full(3, 0.5, dtype=np.float32)
        try:
            failed = await _steady_then_spike(store, engine, thresholds, before_spike=break_brand_index)
            redis_client.delete("em:alerts:brand:acme")  # the fault passes; the batch is retried
            end = T0 + 120 * 30_000 + 24 * 10_000
            retried = await engine.evaluate({"acme": end})
            again = await engine.evaluate({"acme": end})  # a redelivery: the cooldown holds now
            return failed, retried, again
        finally:
            await store.close()

    failed, retried, again = asyncio.run(run())
    assert isinstance(failed, Exception) and "WRONGTYPE" in str(failed)
    assert [(a.brand, a.emotion) for a in retried] == [("acme", "anger")]
    assert again == []
    assert len(sent) == 1
    assert redis_client.zcard("em:alerts") == 1 and redis_client.zcard("em:alerts:brand:acme") == 1
    assert redis_client.pttl("em:alert:last:acme:anger") > 0


class _RedirectingServer:
    """A real local HTTP server answering every POST with ``status`` and ``Location: target``."""

    def __init__(self, target: str, status: int = 307):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hits.append(self.path)
                self.send_response(status)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.hits = hits
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=SECRET-TOKEN-1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _post_webhook(cfg) -> bool:
    async def run():
        store = RedisStore(cfg, EMOTIONS)
        try:
            return await AlertEngine(cfg, store, None, "test").post_webhook('{"brand": "acme"}')
        finally:
            await store.close()

    return asyncio.run(run())


def test_webhook_redirect_to_a_host_off_the_allow_list_is_not_followed(redis_server, caplog):
    """aiohttp followed a 307/308 and re-POSTed the alert to any host, past the allow-list."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class Outside(BaseHTTPRequestHandler):  # another loopback address: reachable, but not allow-listed
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    try:
        outside = ThreadingHTTPServer(("127.0.0.2", 0), Outside)
    except OSError as exc:  # pragma: no cover - every Linux routes 127.0.0.0/8 to loopback
        pytest.fail(f"cannot bind 127.0.0.2: {exc}")
    threading.Thread(target=outside.serve_forever, daemon=True).start()
    redirect = _RedirectingServer(f"http://127.0.0.2:{outside.server_address[1]}/steal")
    try:
        cfg = settings(redis_url=redis_server.url, webhook_url=redirect.url, webhook_retries=2, webhook_backoff=0.01,
                       webhook_allowed_hosts=["127.0.0.1"])
        with caplog.at_level("WARNING", logger="monitor.alerts"):
            assert _post_webhook(cfg) is False
        assert received == []
        assert len(redirect.hits) == 1  # a refused redirect is not retried
        assert "redirected to http://127.0.0.2" in caplog.text and "SECRET-TOKEN-1" not in caplog.text
    finally:
        redirect.close()
        outside.shutdown()
        outside.server_close()


def test_webhook_redirect_to_an_allow_listed_host_is_followed(redis_server, webhook):
    hook = webhook()
    redirect = _RedirectingServer(hook.url, status=308)
    try:
        cfg = settings(redis_url=redis_server.url, webhook_url=redirect.url, webhook_allowed_hosts=["127.0.0.1"])
        assert _post_webhook(cfg) is True
        assert hook.received == [{"brand": "acme"}]
    finally:
        redirect.close()
