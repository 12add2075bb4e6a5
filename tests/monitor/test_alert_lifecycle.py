"""Alert lifecycle (open -> updated -> resolved) and explanation on a real Redis, with a real local webhook; the
dashboard's reader of the alert timeline on the same records."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from dashboard import queries
from monitor.alerts import AlertEngine
from monitor.post import Post
from monitor.settings import MonitorSettings
from monitor.store import ClassifiedPost, RedisStore

EMOTIONS = ["anger", "joy", "neutral"]
T0 = 1_795_654_800_000
MIN = 60_000
END = T0 + 120 * 30_000  # end of the steady hour
THRESHOLDS = np.full(3, 0.5, dtype=np.float32)


def _settings(**extra) -> MonitorSettings:
    # the threshold rule by default: these tests pin its exact window figures (the statistical detector reads whole
    # minutes of the 1-minute tier; test_statistical_episode_... runs the same story through it)
    extra.setdefault("alert_detector", "threshold")
    return MonitorSettings(alert_window_ms=5 * MIN, alert_baseline_ms=60 * MIN, alert_min_volume=10,
                           alert_min_baseline_posts=20, alert_ratio=3.0, alert_min_share=0.2, **extra)


def _post(i: int, created_at: int, angry: bool, text: str) -> ClassifiedPost:
    scores = {"anger": 0.9 if angry else 0.05, "joy": 0.1 if angry else 0.7, "neutral": 0.2}
    post = Post(id=f"acme-{i}", brands=["acme"], text=text, created_at=created_at)
    return ClassifiedPost(post, scores, [k for k, v in scores.items() if v >= 0.5], "test")


CALM_TEXTS = ["love the new coffee blend", "store opens at nine on sunday", "great service today thanks",
              "the latte was lovely"]
STEADY = [_post(i, T0 + i * 30_000, i % 10 == 0, CALM_TEXTS[i % 4]) for i in range(120)]  # one hour, 10% angry
# five minutes of mostly angry posts about a refund and an outage
SPIKE = [_post(1000 + i, END + i * 10_000, i % 5 != 0,
               "still no refund after the #outage, furious" if i % 5 else CALM_TEXTS[i % 4]) for i in range(25)]
# then ten calm minutes again
AFTER = [_post(2000 + i, END + 250_000 + i * 10_000, i % 10 == 0, CALM_TEXTS[i % 4]) for i in range(60)]


async def _steady_hour_then_spike(store: RedisStore, engine: AlertEngine) -> list:
    """The story's first part, written and evaluated batch by batch: the steady hour, the five angry minutes, then
    (the cooldown run out) one more evaluation at the spike's last post. Returns the transitions so far."""
    transitions = []
    for start in range(0, 120, 20):
        await store.write(STEADY[start:start + 20], THRESHOLDS)
        transitions += await engine.evaluate({"acme": STEADY[start + 19].post.created_at})
    for start in range(0, 25, 5):
        await store.write(SPIKE[start:start + 5], THRESHOLDS)
        transitions += await engine.evaluate({"acme": SPIKE[start + 4].post.created_at})
    # the cooldown (wall-clock TTL; test_alerts.py waits one out) runs out
    assert await store.redis.delete("em:alert:last:acme:anger") == 1
    # the spike still stands at its last post: one update
    transitions += await engine.evaluate({"acme": SPIKE[-1].post.created_at})
    return transitions


def test_alert_opens_updates_and_resolves_with_one_id(redis_server, redis_client, webhook):
    hook = webhook()
    cfg = _settings(redis_url=redis_server.url, alert_cooldown_ms=900_000, webhook_url=hook.url,
                    alert_resolve_evaluations=3, alert_resolve_margin=0.02, alert_evidence_posts=3)
    published = []

    async def publish(topic, key, value):
        published.append((topic, json.loads(value)))

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        try:
            transitions = await _steady_hour_then_spike(store, engine)
            calm_evaluations = []
            for start in range(0, 60, 5):
                await store.write(AFTER[start:start + 5], THRESHOLDS)
                now = AFTER[start + 4].post.created_at
                counts = await engine.counts("acme", "anger", now)
                fired = await engine.evaluate({"acme": now})
                if counts.window_share <= counts.baseline_share + 0.02:
                    calm_evaluations.append(now)
                    again = await engine.evaluate({"acme": now})  # a retried batch: the same evaluation again
                    assert again == []
                transitions += fired
            episode = await store.alert_episode("acme", "anger")
            await engine.drain(10)
            return transitions, calm_evaluations, episode
        finally:
            await store.close()

    transitions, calm_evaluations, episode = asyncio.run(run())
    assert [a.status for a in transitions] == ["open", "updated", "resolved"]
    opened, updated, resolved = transitions
    assert len({a.id for a in transitions}) == 1 and len(opened.id) == 16
    # open: the figures of the spike rule, its effect and its explanation
    assert (opened.count, opened.posts, opened.value) == (12, 20, 0.6)
    # the hour before the window holds steady posts 0..114, 12 of them angry
    assert opened.effect_ratio == round(0.6 / (12 / 115), 3)
    assert opened.effect_points == round(100 * (0.6 - 12 / 115), 2)
    assert opened.confidence is None  # the count rule gives no confidence
    assert opened.opened_at == opened.updated_at == opened.window_end and opened.resolved_at is None
    assert [p["text"] for p in opened.evidence] == ["still no refund after the #outage, furious"] * 3
    terms = [t["term"] for t in opened.terms]
    assert {"refund", "#outage", "furious"} <= set(terms) and "coffee" not in terms
    assert all(t["z"] >= 1.96 and t["posts"] >= 2 for t in opened.terms)
    # updated: the same episode, opened when it opened, later figures, the peak so far
    assert updated.opened_at == opened.opened_at and updated.window_end == SPIKE[-1].post.created_at
    # 25 spike posts, 20 angry, and 1 steady post in the window
    assert updated.peak == max(opened.value, updated.value) and updated.value == round(20 / 26, 4)
    assert "continues" in updated.message
    # resolved: on the third consecutive calm evaluation, counted once per event time
    assert resolved.window_end == calm_evaluations[2] == resolved.resolved_at
    assert resolved.value <= resolved.baseline + 0.02 and resolved.peak == updated.peak
    assert resolved.evidence == () and "back to baseline" in resolved.message
    assert episode["status"] == "resolved" and episode["id"] == opened.id
    assert int(episode["opened_at"]) == opened.opened_at and int(episode["resolved_at"]) == resolved.resolved_at
    assert float(episode["peak"]) == resolved.peak and episode["calm"] == "3"
    # every transition on the topic, in Redis and at the webhook, with its status
    assert [(topic, body["status"]) for topic, body in published] == [
        ("alerts", "open"), ("alerts", "updated"), ("alerts", "resolved")]
    assert sorted(body["status"] for body in hook.received) == ["open", "resolved", "updated"]
    assert redis_client.zcard("em:alerts") == 3 and redis_client.zcard("em:alerts:brand:acme") == 3
    listed, malformed = queries.list_alerts(queries.connect(redis_server.url), ["acme"], 0, 2 ** 62)
    assert malformed == 0 and sorted(a["status"] for a in listed) == ["open", "resolved", "updated"]
    assert {a["id"] for a in listed} == {opened.id}


def test_statistical_episode_opens_updates_and_resolves_against_the_detectors_baseline(redis_server):
    """The same story through the default statistical detector: one episode, open -> updated -> resolved, each
    record carrying the detector's verdict; the resolution is judged on the latest 5-minute share against the
    detector's baseline (the 1-hour window that may have fired stays high long after the posts calm down)."""
    cfg = _settings(redis_url=redis_server.url, alert_detector="statistical", alert_cooldown_ms=900_000,
                    alert_resolve_evaluations=3, alert_resolve_margin=0.02, alert_evidence_posts=3)

    async def publish(topic, key, value):
        pass

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        try:
            transitions = await _steady_hour_then_spike(store, engine)
            for start in range(0, 60, 5):
                await store.write(AFTER[start:start + 5], THRESHOLDS)
                transitions += await engine.evaluate({"acme": AFTER[start + 4].post.created_at})
            return transitions, await store.alert_episode("acme", "anger")
        finally:
            await engine.drain(5)
            await store.close()

    transitions, episode = asyncio.run(run())
    assert [a.status for a in transitions] == ["open", "updated", "resolved"]
    opened, updated, resolved = transitions
    assert len({a.id for a in transitions}) == 1 and episode["status"] == "resolved"
    assert opened.detection["fired"] and opened.confidence == opened.detection["confidence"] > 0.999
    assert opened.effect_ratio == round(opened.detection["ratio"], 3) and opened.effect_ratio >= 1.5
    # the firing window starts on a minute of the 1-minute tier and ends at the newest post
    assert opened.window_start % MIN == 0 and opened.window_end in {p.post.created_at for p in SPIKE}
    assert "refund" in {t["term"] for t in opened.terms}
    assert AFTER[0].post.created_at < resolved.resolved_at <= AFTER[-1].post.created_at
    # reported as judged: the latest 5 minutes against the detector's baseline
    assert resolved.window_end - resolved.window_start + 1 == 5 * MIN and resolved.value <= resolved.baseline + 0.02
    assert "back to baseline" in resolved.message


def test_no_reopen_inside_the_cooldown_and_a_spike_after_it_opens_a_new_episode(redis_server, redis_client):
    """A resolved episode does not reopen while the cooldown its open claimed holds; after that a new spike is a new
    episode with a new id. The episode is only ever moved by one of two engines evaluating at once."""
    cfg = _settings(redis_url=redis_server.url, alert_cooldown_ms=900_000, alert_resolve_evaluations=1)

    async def publish(topic, key, value):
        pass

    async def run():
        stores = [RedisStore(cfg, EMOTIONS), RedisStore(cfg, EMOTIONS)]
        engines = [AlertEngine(cfg, store, publish, "test") for store in stores]
        try:
            await stores[0].write(STEADY + SPIKE[:15], THRESHOLDS)
            opened = await asyncio.gather(*(e.evaluate({"acme": SPIKE[14].post.created_at}) for e in engines))
            await stores[0].write(SPIKE[15:] + AFTER, THRESHOLDS)
            resolved = await asyncio.gather(*(e.evaluate({"acme": AFTER[-1].post.created_at}) for e in engines))
            # the same spike again, as if it came back: the cooldown (15 min, claimed at the open) holds it
            held = await engines[0].step("acme", "anger", AFTER[-1].post.created_at + 1,
                                         await engines[0].counts("acme", "anger", SPIKE[14].post.created_at), True)
            await stores[0].redis.delete("em:alert:last:acme:anger")  # the cooldown runs out
            # a detector that gives its confidence and effect (against its own baseline): they replace the fallback
            reopened = await engines[0].step("acme", "anger", AFTER[-1].post.created_at + 2,
                                             await engines[0].counts("acme", "anger", SPIKE[14].post.created_at), True,
                                             confidence=0.97, effect_ratio=2.5)
            return opened, resolved, held, reopened
        finally:
            for store in stores:
                await store.close()

    opened, resolved, held, reopened = asyncio.run(run())
    opened = [a for per_engine in opened for a in per_engine]
    resolved = [a for per_engine in resolved for a in per_engine]
    assert [a.status for a in opened] == ["open"] and [a.status for a in resolved] == ["resolved"]
    assert resolved[0].id == opened[0].id
    assert held is None
    assert reopened is not None and reopened.status == "open" and reopened.id != opened[0].id
    assert (reopened.confidence, reopened.effect_ratio) == (0.97, 2.5)
    # not given: from the counts (value and baseline are rounded to 4 places, the points to 2)
    assert reopened.effect_points == pytest.approx(100 * (reopened.value - reopened.baseline), abs=0.02)
    assert opened[0].confidence is None
    assert redis_client.hget("em:alert:episode:acme:anger", "id") == reopened.id
    assert redis_client.zcard("em:alerts") == 3


def test_resolution_is_judged_against_the_detectors_baseline_when_given(redis_server):
    cfg = _settings(redis_url=redis_server.url, alert_resolve_evaluations=1)

    async def publish(topic, key, value):
        pass

    async def run():
        store = RedisStore(cfg, EMOTIONS)
        engine = AlertEngine(cfg, store, publish, "test")
        try:
            await store.write(STEADY + SPIKE[:15], THRESHOLDS)
            now = SPIKE[14].post.created_at
            counts = await engine.counts("acme", "anger", now)  # 60% against 10% before
            opened = await engine.step("acme", "anger", now, counts, True)
            above = await engine.step("acme", "anger", now + 1, counts, False)  # not a spike, yet far above 10%
            # a detector whose baseline (say, this hour on earlier days) is 59%: 60% is back within 2 points
            resolved = await engine.step("acme", "anger", now + 2, counts, False, baseline_share=0.59)
            return opened, above, resolved
        finally:
            await store.close()

    opened, above, resolved = asyncio.run(run())
    assert opened.status == "open" and above is None
    assert resolved.status == "resolved" and resolved.id == opened.id and resolved.resolved_at == opened.window_end + 2
