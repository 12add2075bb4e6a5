"""Alert rules against a real Redis: the CLI, the worker's engine reading the same counts as the offline replay, and
rules edited while the engine runs reaching it."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main
from monitor import schema
from monitor.alert_rules import AlertRule, LiveRules, delete_rule, read_rules, set_rule
from monitor.alerts import AlertEngine
from monitor.detector import DetectorParams, detection_at, replay_inputs
from monitor.settings import MonitorSettings
from monitor.store import RedisStore

T0_MIN = 29_927_580  # 2026-11-25 00:00 UTC in epoch minutes
DAY = 1440


def cli(monkeypatch, redis_server, *args):
    monkeypatch.setenv("EM_MONITOR_REDIS_URL", redis_server.url)
    return CliRunner().invoke(main, ["alerts", "rules", *args])


def test_rules_cli_set_list_delete(monkeypatch, redis_server, redis_client):
    out = cli(monkeypatch, redis_server, "set", "Acme", "anger", "--sensitivity", "high", "--min-effect",
              "at least 2x and +5 points", "--min-volume", "8", "--cooldown", "600", "--windows", "5m,1h",
              "--channels", "slack,email")
    assert out.exit_code == 0, out.output
    assert "rule acme x anger saved (version 1)" in out.output
    assert cli(monkeypatch, redis_server, "set", "*", "sentiment:negative", "--sensitivity", "low").exit_code == 0
    rules, version = read_rules(redis_client)
    assert version == 2
    assert rules == [AlertRule("*", "sentiment:negative", "low"),
                     AlertRule("acme", "anger", "high", "at least 2x and +5 points", 8, 600, (300, 3600),
                               ("slack", "email"))]
    listed = cli(monkeypatch, redis_server, "list")
    assert listed.exit_code == 0
    assert "acme" in listed.output and "at least 2x and +5 points" in listed.output and "5m,1h" in listed.output
    as_json = [json.loads(line) for line in cli(monkeypatch, redis_server, "list", "--json").output.splitlines()]
    assert as_json[1]["channels"] == ["slack", "email"] and as_json[1]["windows"] == [300, 3600]

    bad = cli(monkeypatch, redis_server, "set", "acme", "anger", "--min-effect", "loud")
    assert bad.exit_code != 0 and "expected e.g. 'at least 1.5x and +5 points'" in bad.output
    unknown = cli(monkeypatch, redis_server, "set", "acme", "rage")
    assert unknown.exit_code != 0 and "unknown emotion 'rage'" in unknown.output
    # a channel no deployment can deliver to is refused when the rule is set, not when its alert fires
    no_channel = cli(monkeypatch, redis_server, "set", "acme", "anger", "--channels", "ops")
    assert no_channel.exit_code != 0 and "unknown channel(s) ops" in no_channel.output
    assert read_rules(redis_client)[1] == 2  # refused edits changed nothing

    assert cli(monkeypatch, redis_server, "delete", "acme", "anger").exit_code == 0
    assert [r.brand for r in read_rules(redis_client)[0]] == ["*"] and read_rules(redis_client)[1] == 3
    missing = cli(monkeypatch, redis_server, "delete", "acme", "anger")
    assert missing.exit_code != 0 and "no rule for acme x anger" in missing.output


def _history(seed: int, days: int, spike_at: int | None = None):
    """Per-minute posts and angry posts: 30 posts/min, 5 % angry, x4 for 20 minutes from ``spike_at``."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(30, size=days * DAY)
    share = np.full(n.shape, 0.05)
    if spike_at is not None:
        share[spike_at:spike_at + 20] = 0.2
    return n, rng.binomial(n, share)


def _write_minutes(client, brand: str, emotion: str, n, k, first_min: int) -> None:
    """The 1-minute tier as the worker's store writes it (one sample per minute with posts)."""
    posts_key = schema.series_key(brand, "_all", "posts", "1m")
    have_posts = client.exists(posts_key)
    client.ts().create(schema.series_key(brand, emotion, "count", "1m"), duplicate_policy="sum")
    if not have_posts:
        client.ts().create(posts_key, duplicate_policy="sum")
    ts_posts = [] if have_posts else [(posts_key, (first_min + i) * 60_000, int(v)) for i, v in enumerate(n) if v]
    ts_count = [(schema.series_key(brand, emotion, "count", "1m"), (first_min + i) * 60_000, int(v))
                for i, v in enumerate(k) if v]
    for start in range(0, max(len(ts_posts), len(ts_count)), 5000):
        if ts_posts[start:start + 5000]:
            client.ts().madd(ts_posts[start:start + 5000])
        if ts_count[start:start + 5000]:
            client.ts().madd(ts_count[start:start + 5000])


# rolling baseline (0: flat, else the half-life) x the daily-bias correction (windows from this length; 0: none)
_BASELINE_VARIANTS = [(0, 0), (30 * 60_000, 0), (0, 5 * 60_000), (30 * 60_000, 30 * 60_000)]
_BASELINE_VARIANT_IDS = ["flat", "ewma", "flat-daily-bias", "ewma-daily-bias"]


def _engine(cfg):
    async def publish(topic, key, value):
        pass

    store = RedisStore(cfg, ["anger", "joy"])
    return store, AlertEngine(cfg, store, publish, "test")


@pytest.mark.parametrize("halflife_ms, bias_ms", _BASELINE_VARIANTS, ids=_BASELINE_VARIANT_IDS)
def test_the_worker_reads_the_same_counts_as_the_replay(redis_server, redis_client, halflife_ms, bias_ms):
    """Eight days in the 1-minute tier: the engine's Detection at several minutes (seasonal spans, rolling baseline
    — flat, or exponentially weighted from per-minute reads —, 72 hours of history for overdispersion, both windows)
    equals the replay's from the same arrays."""
    days = 8
    spike = 7 * DAY + 600
    n, k = _history(11, days, spike_at=spike)
    _write_minutes(redis_client, "acme", "anger", n, k, T0_MIN)
    cfg = MonitorSettings(redis_url=redis_server.url, alert_baseline_halflife_ms=halflife_ms,
                          alert_daily_bias_min_window_ms=bias_ms)
    params = DetectorParams.from_settings(cfg)
    minutes = [spike - 30, spike + 3, spike + 12]

    async def worker_view():
        store, engine = _engine(cfg)
        try:
            from monitor.detector import read_inputs

            out = []
            for m in minutes:
                inputs = await read_inputs(store, schema.series_key("acme", "anger", "count", "1m"),
                                           schema.series_key("acme", "_all", "posts", "1m"),
                                           (T0_MIN + m) * 60_000 + 42_000, params)
                out.append([detection_at(inp, params) for inp in inputs])
            return out
        finally:
            await store.close()

    worker = asyncio.run(worker_view())
    for m, seen in zip(minutes, worker):
        for window, detection in zip(params.windows_min, seen):
            replayed = detection_at(replay_inputs(n, k, params, window, times=np.array([m])), params, 0)
            assert detection.fired == replayed.fired and detection.reason == replayed.reason, (m, window)
            assert (detection.count, detection.posts, detection.baseline_kind) == \
                (replayed.count, replayed.posts, replayed.baseline_kind)
            assert detection.baseline_share == pytest.approx(replayed.baseline_share, rel=1e-12)
            assert detection.p_value == pytest.approx(replayed.p_value, rel=1e-9, abs=1e-300)
    assert not any(d.fired for d in worker[0]) and any(d.fired for d in worker[1])
    assert worker[1][0].baseline_kind == "seasonal"  # seven earlier days at this hour


@pytest.mark.parametrize("halflife_ms, bias_ms", _BASELINE_VARIANTS, ids=_BASELINE_VARIANT_IDS)
def test_the_worker_reuses_its_overdispersion_estimate_for_a_few_minutes(redis_server, redis_client, halflife_ms,
                                                                          bias_ms):
    """With a cache, the 72 h of history are read once per TAU2_REFRESH_MIN; the window, baseline and seasonal
    counts are still read fresh every time (they equal the replay's)."""
    from monitor.detector import TAU2_REFRESH_MIN, read_inputs

    n, k = _history(13, 4)
    _write_minutes(redis_client, "acme", "anger", n, k, T0_MIN)
    cfg = MonitorSettings(redis_url=redis_server.url, alert_baseline_halflife_ms=halflife_ms,
                          alert_daily_bias_min_window_ms=bias_ms)
    params = DetectorParams.from_settings(cfg)
    first, later = 3 * DAY + 100, 3 * DAY + 100 + TAU2_REFRESH_MIN - 1
    cache: dict = {}

    async def reads():
        store = RedisStore(cfg, ["anger"])
        keys = (schema.series_key("acme", "anger", "count", "1m"), schema.series_key("acme", "_all", "posts", "1m"))
        try:
            return [await read_inputs(store, *keys, (T0_MIN + m) * 60_000, params, cache)
                    for m in (first, later, first + TAU2_REFRESH_MIN)]
        finally:
            await store.close()

    at_first, at_later, refreshed = asyncio.run(reads())
    for window, a, b, c in zip(params.windows_min, at_first, at_later, refreshed):
        replay_later = replay_inputs(n, k, params, window, times=np.array([later]))
        replay_refreshed = replay_inputs(n, k, params, window, times=np.array([first + TAU2_REFRESH_MIN]))
        assert b.tau2[0] == a.tau2[0]  # reused
        assert (b.k[0], b.n[0]) == (replay_later.k[0], replay_later.n[0])
        assert (b.kb[0], b.nb[0]) == pytest.approx((replay_later.kb[0], replay_later.nb[0]), rel=1e-12)
        assert np.array_equal(b.span_n[:, 0], replay_later.span_n[:, 0])
        assert c.tau2[0] == pytest.approx(replay_refreshed.tau2[0], rel=1e-9, abs=1e-15)  # re-estimated
        if params.corrects_bias(window):  # the daily bias is cached with tau2, re-estimated with it
            assert b.bias[0] == a.bias[0]
            assert c.bias[0] == pytest.approx(replay_refreshed.bias[0], rel=1e-9, abs=1e-15)
            assert replay_refreshed.bias[0] != 0.0  # estimated from the previous days, not the fallback
        else:
            assert b.bias is None and replay_later.bias is None


def test_rules_edited_at_runtime_reach_the_running_engine(redis_server, redis_client):
    """A spike the default settings alert on; a rule set from another client (as the CLI does) silences it within
    the reload interval, deleting it brings the alert back, and a rule for another emotion adds it to the watch."""
    days = 2
    spike = DAY + 700
    n, k = _history(12, days, spike_at=spike)
    _write_minutes(redis_client, "acme", "anger", n, k, T0_MIN)
    _write_minutes(redis_client, "acme", "joy", n, k, T0_MIN)  # joy spikes the same way, but is not watched
    cfg = MonitorSettings(redis_url=redis_server.url, alert_rules_reload_seconds=0.2, alert_cooldown_ms=0,
                          alert_emotions=["anger"], alert_evidence_posts=0)
    now_ms = (T0_MIN + spike + 10) * 60_000 + 30_000

    async def run():
        store, engine = _engine(cfg)
        try:
            results = {"default": await engine.evaluate({"acme": now_ms})}
            set_rule(redis_client, AlertRule("acme", "anger", sensitivity="off"))
            await asyncio.sleep(0.3)
            results["off"] = await engine.evaluate({"acme": now_ms})
            delete_rule(redis_client, "acme", "anger")
            set_rule(redis_client, AlertRule("*", "joy", cooldown_s=0, channels=("teams",)))
            await asyncio.sleep(0.3)
            results["joy"] = await engine.evaluate({"acme": now_ms})
            return results
        finally:
            await store.close()

    results = asyncio.run(run())
    assert [a.emotion for a in results["default"]] == ["anger"]
    assert results["off"] == []
    assert sorted(a.emotion for a in results["joy"]) == ["anger", "joy"]
    joy = next(a for a in results["joy"] if a.emotion == "joy")
    assert joy.channels == ("teams",) and joy.detection["fired"] and joy.detection["confidence"] > 0.999
    assert joy.detection["window_share"] > 2 * joy.detection["baseline_share"]
    stored = [json.loads(m) for m in redis_client.zrange("em:alerts", 0, -1)]
    assert {a["emotion"] for a in stored} == {"anger", "joy"}
    assert all(a["detection"]["p_value"] < 1e-3 for a in stored)


def test_live_rules_keep_serving_when_redis_fails_after_the_first_load(redis_server, redis_client):
    set_rule(redis_client, AlertRule("acme", "anger", sensitivity="low"))

    async def run():
        store = RedisStore(MonitorSettings(redis_url=redis_server.url), ["anger"])
        live = LiveRules(store, reload_seconds=0.0)
        first = await live.current()
        await store.close()
        dead = RedisStore(MonitorSettings(redis_url="redis://127.0.0.1:1/0"), ["anger"])
        live.store = dead
        second = await live.current()
        await dead.close()
        return first, second

    first, second = asyncio.run(run())
    assert second is first and first.rule_for("acme", "anger").sensitivity == "low"
    assert first.rule_for("globex", "anger") is None


@pytest.mark.parametrize("brand, emotion, expected", [("acme", "anger", "high"), ("globex", "anger", "low"),
                                                      ("globex", "joy", None)])
def test_brand_rule_wins_over_the_wildcard(brand, emotion, expected):
    from monitor.alert_rules import RuleBook

    book = RuleBook([AlertRule("*", "anger", "low"), AlertRule("acme", "anger", "high"),
                     AlertRule("acme", "joy", "off")])
    rule = book.rule_for(brand, emotion)
    assert (rule.sensitivity if rule else None) == expected
    assert book.emotions_for("acme", ["anger"]) == ["anger"]  # joy is off for acme
    assert book.emotions_for("globex", ["neutral"]) == ["neutral", "anger"]


def test_batches_within_a_minute_reuse_the_detection_and_a_spike_still_alerts(redis_server, redis_client):
    """alert_detect_interval_seconds: batches whose event time stays in a minute already tested skip the statistical
    detection (no Redis range read at all) until the interval passed; a batch reaching a new minute runs it at once,
    so the spike alerts on its first batch; after the interval the same minute is tested again."""
    spike = DAY + 700
    n, k = _history(12, 2, spike_at=spike)
    _write_minutes(redis_client, "acme", "anger", n, k, T0_MIN)
    cfg = MonitorSettings(redis_url=redis_server.url, alert_detect_interval_seconds=60, alert_cooldown_ms=0,
                          alert_emotions=["anger"], alert_evidence_posts=0)
    quiet_ms, spike_ms = (T0_MIN + spike - 30) * 60_000, (T0_MIN + spike + 10) * 60_000

    def range_reads() -> int:
        stats = redis_client.info("commandstats")
        return sum(v["calls"] for key, v in stats.items() if key.lower() in ("cmdstat_ts.range", "cmdstat_ts.mrange"))

    async def run():
        store, engine = _engine(cfg)
        try:
            start = range_reads()
            quiet = await engine.evaluate({"acme": quiet_ms + 1_000})
            reads = range_reads()
            first_reads = reads - start
            repeated = [await engine.evaluate({"acme": quiet_ms + 2_000 + i * 5_000}) for i in range(5)]
            skipped_reads = range_reads() - reads
            runs_before_spike = engine.detections_run
            alerted = await engine.evaluate({"acme": spike_ms + 5_000})  # a new minute: tested at once
            runs_at_spike = engine.detections_run
            await engine.evaluate({"acme": spike_ms + 9_000})  # same minute, inside the interval
            return quiet, repeated, (first_reads, skipped_reads), runs_before_spike, alerted, runs_at_spike, engine
        finally:
            await store.close()

    quiet, repeated, skipped_reads, runs_before_spike, alerted, runs_at_spike, engine = asyncio.run(run())
    assert quiet == [] and repeated == [[]] * 5
    assert skipped_reads[0] > 0 and skipped_reads[1] == 0  # the first detection read ranges, the repeats none
    assert runs_before_spike == 1 and engine.detections_skipped == 6
    assert [a.emotion for a in alerted] == ["anger"] and alerted[0].detection["fired"]
    assert runs_at_spike == 2 and engine.detections_run == 2

    # once the interval passed, the same minute is tested again (a spike building up inside one minute is seen
    # at most that late)
    short = cfg.model_copy(update={"alert_detect_interval_seconds": 0.2})

    async def after_interval():
        store, engine = _engine(short)
        try:
            await engine.evaluate({"acme": quiet_ms + 1_000})
            await engine.evaluate({"acme": quiet_ms + 2_000})  # skipped
            await asyncio.sleep(0.3)
            await engine.evaluate({"acme": quiet_ms + 3_000})  # re-run
            return engine.detections_run, engine.detections_skipped
        finally:
            await store.close()

    assert asyncio.run(after_interval()) == (2, 1)


def _history_before_a_skipped_spike(redis_client, redis_url: str, interval: float):
    """History with no spike, written to Redis; the caller detects at its last minute, then that same minute's anger
    jumps and the batch that brought it is skipped by the throttle (same minute, inside ``interval``).
    Returns (the engine's settings, the last minute in ms)."""
    n, k = _history(13, 2)
    _write_minutes(redis_client, "acme", "anger", n, k, T0_MIN)
    cfg = MonitorSettings(redis_url=redis_url, alert_cooldown_ms=0, alert_detect_interval_seconds=interval,
                          alert_emotions=["anger"], alert_evidence_posts=0)
    return cfg, (T0_MIN + 2 * DAY - 1) * 60_000


def _add_spike(redis_client, minute_ms: int) -> None:
    redis_client.ts().add(schema.series_key("acme", "anger", "count", "1m"), minute_ms, 40)
    redis_client.ts().add(schema.series_key("acme", "_all", "posts", "1m"), minute_ms, 40)


def test_a_skipped_detection_runs_once_its_interval_passed_though_no_batch_follows(redis_server, redis_client):
    """Reproduces the alert the -m slow shutdown test lost with the throttle on (stop 10): the spike's posts came in a
    batch skipped within the interval, the stream went quiet, and nothing ran the skipped detection. run_skipped
    (the worker's timer) runs it once the interval passed: the spike alerts without another post."""
    cfg, last_ms = _history_before_a_skipped_spike(redis_client, redis_server.url, 0.5)

    async def run():
        store, engine = _engine(cfg)
        try:
            quiet = await engine.evaluate({"acme": last_ms + 1_000})
            _add_spike(redis_client, last_ms)
            skipped = await engine.evaluate({"acme": last_ms + 2_000})
            early = await engine.run_skipped()  # the interval has not passed: nothing runs yet
            await asyncio.sleep(0.6)
            late = await engine.run_skipped()
            again = await engine.run_skipped()  # nothing left pending
            return quiet, skipped, early, late, again, engine.detections_run, engine.detections_skipped
        finally:
            await store.close()

    quiet, skipped, early, late, again, runs, skips = asyncio.run(run())
    assert quiet == [] and skipped == [] and early == [] and again == []
    assert [(a.emotion, a.status) for a in late] == [("anger", "open")] and late[0].detection["fired"]
    assert late[0].window_end >= last_ms  # tested at the skipped batch's event time
    assert (runs, skips) == (2, 1)


def test_shutdown_runs_the_skipped_detections_before_draining(redis_server, redis_client):
    """drain() (SIGTERM) runs every skipped detection at once, interval or not, so its alert is stored (and sent)
    before the worker exits, and nothing is left pending."""
    cfg, last_ms = _history_before_a_skipped_spike(redis_client, redis_server.url, 600)

    async def run():
        store, engine = _engine(cfg)
        try:
            await engine.evaluate({"acme": last_ms + 1_000})
            _add_spike(redis_client, last_ms)
            assert await engine.evaluate({"acme": last_ms + 2_000}) == []  # skipped
            assert await engine.run_skipped() == []  # due in 600 s
            cancelled = await engine.drain(5)
            return cancelled, engine.detections_run, await engine.run_skipped(due_only=False)
        finally:
            await store.close()

    cancelled, runs, left = asyncio.run(run())
    assert cancelled == 0 and runs == 2 and left == []
    stored = [json.loads(body) for body in redis_client.zrange(schema.ALERTS_KEY, 0, -1)]
    assert [(a["brand"], a["emotion"], a["status"]) for a in stored] == [("acme", "anger", "open")]
