"""Spike alerts per brand x emotion: the current window against a rolling baseline, with a minimum volume and a cooldown.

Detection works in event time (the posts' ``created_at``), read back from the Redis TimeSeries the worker just
wrote, so every worker sees the same counts whichever partitions it owns. A spike is declared when, in the window
``(t - window, t]``:

* at least ``alert_min_volume`` posts carry the emotion, and the baseline ``(t - window - baseline, t - window]``
  holds at least ``alert_min_baseline_posts`` posts (no history, no judgement), and
* the emotion's share of the window's posts is at least ``alert_min_share`` and at least ``alert_ratio`` times its
  share in the baseline.

That is the ``threshold`` detector (``EM_MONITOR_ALERT_DETECTOR=threshold``). The default, ``statistical``, is
:mod:`monitor.detector`: a beta-binomial test of each window's share (5 min and 1 h by default, read from the 1-minute
tier) against a rolling or seasonal baseline, with a false-alert budget and a minimum effect; per brand x emotion
rules (:mod:`monitor.alert_rules`, reloaded when their version moves) set its sensitivity, effect, volume, cooldown,
windows and channels, and can add emotions to watch. The firing window's verdict travels in ``Alert.detection``.

The cooldown marker makes the alert fire once per brand x emotion per cooldown, across all workers.
Delivery: the cooldown is claimed and the alert stored in Redis (``em:alerts`` and its brand's index
``em:alerts:brand:{brand}``) by one script, all or nothing: a store that fails leaves the cooldown unclaimed, so the
retried batch fires the alert again instead of finding the cooldown taken and losing it. Then the alert is logged,
sent to the ``alerts`` topic (a broker outage is waited out; a refusal is logged, the alert stays stored) and POSTed
to the webhook (timeout, retries with exponential back-off, allow-listed hosts only, redirects only to allow-listed
hosts) — best effort, never blocking posts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from urllib.parse import urljoin, urlparse

from monitor import schema
from monitor.alert_rules import AlertRule, LiveRules, RuleBook
from monitor.detector import Detection, DetectorParams, detection_at, read_inputs, replay_detector, strongest
from monitor.redact import safe_url
from monitor.settings import MonitorSettings
from monitor.taxonomy import group_members

__all__ = ["Alert", "AlertEngine", "WindowCounts", "is_spike", "queue_alert_store", "replay_detector"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes | None, bytes], Awaitable[None]]
_MAX_REDIRECTS = 3


@dataclass(frozen=True)
class WindowCounts:
    window_count: float
    window_posts: float
    baseline_count: float
    baseline_posts: float

    @property
    def window_share(self) -> float:
        return self.window_count / self.window_posts if self.window_posts else 0.0

    @property
    def baseline_share(self) -> float:
        return self.baseline_count / self.baseline_posts if self.baseline_posts else 0.0


def is_spike(counts: WindowCounts, settings: MonitorSettings) -> bool:
    """The spike rule (pure): volume, enough baseline, absolute share and ratio against the baseline share."""
    if counts.window_count < settings.alert_min_volume:
        return False
    if counts.baseline_posts < settings.alert_min_baseline_posts:
        return False
    if counts.window_share < settings.alert_min_share:
        return False
    return counts.window_share >= settings.alert_ratio * counts.baseline_share


@dataclass(frozen=True)
class Alert:
    brand: str
    emotion: str
    ts: int
    window_start: int
    window_end: int
    value: float
    baseline: float
    count: int
    posts: int
    message: str
    model_version: str
    # the window's posts with the highest score for the emotion, snapshotted when the alert fires (post JSON objects)
    evidence: tuple = ()
    # the statistical detector's verdict for the window that fired (monitor.detector.Detection.to_dict(): p_value,
    # confidence, ratio, points, window/baseline share, baseline_kind, window_min); None for the threshold rule
    detection: dict | None = None
    # the delivery channels of the rule that fired (monitor.alert_rules.AlertRule.channels); empty = default delivery
    channels: tuple = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def queue_alert_store(pipe, body: str, brand: str, ts: int) -> None:
    """Queue on ``pipe`` (a sync or asyncio redis-py pipeline, ideally ``transaction=True``) the writes that store one
    alert: the all-brands timeline, the brand's own index (same member and score, so the dashboard reads a brand's
    alerts exactly) and, the first time only, the marker saying from when the brand indexes are complete."""
    pipe.zadd(schema.ALERTS_KEY, {body: ts})
    pipe.zadd(schema.brand_alerts_key(brand), {body: ts})
    pipe.set(schema.ALERTS_INDEXED_SINCE_KEY, ts, nx=True)


# Claim the cooldown and store the alert, all or nothing. The type checks come before the first write because a
# script is not rolled back when a command fails halfway (a Redis at maxmemory refuses the first write, so then nothing
# is written either).
# KEYS: 1 cooldown marker, 2 all-brands alerts zset, 3 the brand's alerts zset, 4 indexed-since marker
# ARGV: 1 cooldown value, 2 cooldown ms, 3 alert JSON, 4 alert ts.  Returns 1 stored, 0 cooldown already taken.
_CLAIM_AND_STORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local want = {nil, 'zset', 'zset', 'string'}
for i = 2, 4 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= want[i] then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. want[i])
  end
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('SET', KEYS[4], ARGV[4], 'NX')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def _duration(ms: int) -> str:
    """A window length as people say it: whole minutes as "N min", anything else in seconds."""
    return f"{ms // 60_000} min" if ms >= 60_000 and ms % 60_000 == 0 else f"{ms / 1000:g} s"


class AlertEngine:
    """Evaluates the spike rule after each batch and dispatches alerts to Redis, the log, Kafka and a webhook."""

    def __init__(self, settings: MonitorSettings, store, publish: Publish, model_version: str, on_alert=None):
        self.settings = settings
        self.store = store
        self.publish = publish
        self.model_version = model_version
        self.on_alert = on_alert or (lambda alert: None)
        self._webhooks: set[asyncio.Task] = set()
        # per brand x emotion rules from Redis (monitor.alert_rules), reloaded when their version moves
        self.rules = LiveRules(store.redis, settings.alert_rules_reload_seconds)
        self._tau2: dict = {}  # overdispersion per series x window, re-estimated every few minutes (detector.py)

    async def counts(self, brand: str, emotion: str, now_ms: int) -> WindowCounts:
        s = self.settings
        window_start = now_ms - s.alert_window_ms + 1
        base_start = window_start - s.alert_baseline_ms
        count_key = schema.series_key(brand, emotion, "count")
        posts_key = schema.series_key(brand, schema.ALL_EMOTIONS, "posts")
        return WindowCounts(
            await self.store.window_sum(count_key, window_start, now_ms),
            await self.store.window_sum(posts_key, window_start, now_ms),
            await self.store.window_sum(count_key, base_start, window_start - 1),
            await self.store.window_sum(posts_key, base_start, window_start - 1),
        )

    async def detect(self, brand: str, emotion: str, now_ms: int, rule: AlertRule | None = None) -> Detection:
        """The statistical detector (:mod:`monitor.detector`) at ``now_ms`` with ``rule`` (or the settings): every
        window's counts read from the 1-minute tier in one round trip; the strongest window's verdict."""
        params = DetectorParams.from_settings(self.settings, rule)
        inputs = await read_inputs(self.store.redis, schema.series_key(brand, emotion, "count", "1m"),
                                   schema.series_key(brand, schema.ALL_EMOTIONS, "posts", "1m"), now_ms, params,
                                   self._tau2)
        return strongest([detection_at(inp, params) for inp in inputs])

    async def evaluate(self, latest_by_brand: dict[str, int]) -> list[Alert]:
        """Check every watched emotion of the brands just written, at each brand's newest ``created_at``: the
        settings' ``alert_emotions`` plus the emotions of the brand's rules (``em:alert_rules``), each with its rule."""
        fired = []
        book = await self.rules.current() if self.settings.alert_detector == "statistical" else RuleBook()
        for brand, now_ms in latest_by_brand.items():
            for emotion in book.emotions_for(brand, self.settings.alert_emotions):
                rule = book.rule_for(brand, emotion)
                if self.settings.alert_detector == "threshold":
                    counts = await self.counts(brand, emotion, now_ms)
                    if not is_spike(counts, self.settings):
                        continue
                    alert = self._make(brand, emotion, now_ms, counts)
                else:
                    detection = await self.detect(brand, emotion, now_ms, rule)
                    if not detection.fired:
                        continue
                    alert = self._make_detected(brand, emotion, now_ms, detection, rule)
                # evidence before the claim: the stored alert carries it (a spike that persists inside its cooldown
                # reads it again only to find the cooldown taken)
                alert = replace(alert, evidence=await self.evidence(brand, emotion, now_ms,
                                                                    alert.window_end - alert.window_start + 1))
                cooldown_ms = rule.cooldown_s * 1000 if rule is not None and rule.cooldown_s is not None else None
                if not await self._claim_and_store(alert, cooldown_ms):
                    continue
                await self._dispatch(alert)
                fired.append(alert)
        return fired

    async def evidence(self, brand: str, emotion: str, now_ms: int, window_ms: int | None = None) -> tuple:
        """The window's ``alert_evidence_posts`` posts with the highest score for ``emotion`` (a group series such as
        ``sentiment:negative``: the highest member score), read from the recent-posts store now, before it ages them
        out. The range is the window widened to the raw buckets its counts were read from, so these are posts the
        alert counted."""
        n = self.settings.alert_evidence_posts
        if not n:
            return ()
        bucket = self.settings.raw_bucket_ms
        start = now_ms - (window_ms or self.settings.alert_window_ms) + 1
        members = await self.store.redis.zrangebyscore(
            schema.posts_key(brand), start + (-start) % bucket, now_ms - now_ms % bucket + bucket - 1)
        grouping, _, group = emotion.partition(":")
        names = (group_members(grouping, group) if group and grouping in ("ekman", "sentiment") else []) or [emotion]
        posts = []
        for member in members:
            try:
                post = json.loads(member)
                score = max(float(post.get("scores", {}).get(name, 0.0)) for name in names)
            except (TypeError, ValueError, AttributeError, KeyError):
                continue  # a malformed stored post is not evidence
            posts.append((score, post))
        posts.sort(key=lambda pair: pair[0], reverse=True)
        return tuple(post for _score, post in posts[:n])

    async def _claim_and_store(self, alert: Alert, cooldown_ms: int | None = None) -> bool:
        """Claim the cooldown (``cooldown_ms``, default the settings') and store the alert in one atomic step; False
        when the cooldown was already taken. Raises (nothing claimed, nothing stored) when Redis refuses: the batch's
        retry evaluates again."""
        body = alert.to_json()
        cooldown_ms = self.settings.alert_cooldown_ms if cooldown_ms is None else cooldown_ms
        if cooldown_ms <= 0:  # no cooldown: nothing to claim
            async with self.store.redis.pipeline(transaction=True) as pipe:
                queue_alert_store(pipe, body, alert.brand, alert.ts)
                await pipe.execute()
            return True
        keys = [schema.alert_cooldown_key(alert.brand, alert.emotion), schema.ALERTS_KEY,
                schema.brand_alerts_key(alert.brand), schema.ALERTS_INDEXED_SINCE_KEY]
        args = [alert.window_end, cooldown_ms, body, alert.ts]
        return bool(await self.store.redis.eval(_CLAIM_AND_STORE, len(keys), *keys, *args))

    def _make(self, brand: str, emotion: str, now_ms: int, counts: WindowCounts) -> Alert:
        window_start = now_ms - self.settings.alert_window_ms + 1
        message = (
            f"{emotion} spike for {brand}: {counts.window_share:.0%} of {int(counts.window_posts)} posts in the last "
            f"{_duration(self.settings.alert_window_ms)} vs {counts.baseline_share:.0%} before"
        )
        return Alert(brand, emotion, int(time.time() * 1000), window_start, now_ms, round(counts.window_share, 4),
                     round(counts.baseline_share, 4), int(counts.window_count), int(counts.window_posts), message,
                     self.model_version)

    def _make_detected(self, brand: str, emotion: str, now_ms: int, detection: Detection,
                       rule: AlertRule | None) -> Alert:
        """An alert from the statistical detector: the window that fired (whole minutes of the 1-minute tier, the
        last one holding the posts counted so far) and its verdict."""
        window_end = (now_ms // 60_000 + 1) * 60_000 - 1
        window_start = window_end - detection.window_min * 60_000 + 1
        message = (
            f"{emotion} spike for {brand}: {detection.window_share:.0%} of {detection.posts} posts in the last "
            f"{_duration(detection.window_min * 60_000)} vs {detection.baseline_share:.0%} "
            f"{'usual at this hour' if detection.baseline_kind == 'seasonal' else 'before'} "
            f"(x{detection.ratio:.1f}, {detection.points * 100:+.0f} points, p = {detection.p_value:.1g})"
        )
        return Alert(brand, emotion, int(time.time() * 1000), window_start, min(now_ms, window_end),
                     round(detection.window_share, 4), round(detection.baseline_share, 4), detection.count,
                     detection.posts, message, self.model_version, detection=detection.to_dict(),
                     channels=rule.channels if rule is not None else ())

    async def _dispatch(self, alert: Alert) -> None:
        """Log, publish and POST an alert already stored (its cooldown claimed): nothing here may fail the batch,
        whose retry would find the cooldown taken."""
        body = alert.to_json()
        log.warning("ALERT %s", alert.message)
        try:
            await self.publish(self.settings.alerts_topic, alert.brand.encode(), body.encode())
        except Exception:  # noqa: BLE001 - outages are waited out inside publish; this is a refusal
            log.exception("alert %s/%s stored in Redis but refused by the broker (not on the %s topic)",
                          alert.brand, alert.emotion, self.settings.alerts_topic)
        self.on_alert(alert)
        if self.settings.webhook_url:
            task = asyncio.create_task(self.post_webhook(body))
            self._webhooks.add(task)
            task.add_done_callback(self._webhooks.discard)

    def webhook_allowed(self, url: str) -> bool:
        host = urlparse(url).hostname or ""
        return urlparse(url).scheme in ("http", "https") and host in self.settings.webhook_allowed_hosts

    async def post_webhook(self, body: str) -> bool:
        """POST the alert JSON; retries with exponential back-off; refuses hosts outside the allow-list, also as a
        redirect target (redirects are followed by hand, at most 3, each checked; only 307/308, which keep the POST).
        Logs name the webhook by scheme, host and port only: its path and query often hold its secret."""
        import aiohttp

        s = self.settings
        url = s.webhook_url or ""
        shown = safe_url(url)
        if not self.webhook_allowed(url):
            log.error("webhook %s refused: host not in EM_MONITOR_WEBHOOK_ALLOWED_HOSTS %s", shown,
                      s.webhook_allowed_hosts)
            return False
        delay = s.webhook_backoff
        timeout = aiohttp.ClientTimeout(total=s.webhook_timeout)
        for attempt in range(s.webhook_retries + 1):
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    status = await self._post_checked(session, url, body)
                if status is None:  # a redirect we may not follow: retrying would be refused the same way
                    return False
                if status < 300:
                    return True
                log.warning("webhook %s answered %s (attempt %d)", shown, status, attempt + 1)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("webhook %s failed (attempt %d): %s", shown, attempt + 1, type(exc).__name__)
            if attempt < s.webhook_retries:
                await asyncio.sleep(delay)
                delay *= 2
        log.error("webhook %s gave up after %d attempts", shown, s.webhook_retries + 1)
        return False

    async def _post_checked(self, session, url: str, body: str) -> int | None:
        """POST without aiohttp's own redirect following; the final status, or None for a refused redirect."""
        for _hop in range(_MAX_REDIRECTS + 1):
            async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                    allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status not in (307, 308) or not location:
                    return resp.status
            target = urljoin(url, location)
            if not self.webhook_allowed(target):
                log.error("webhook %s redirected to %s, a host not in EM_MONITOR_WEBHOOK_ALLOWED_HOSTS: not followed",
                          safe_url(url), safe_url(target))
                return None
            url = target
        log.error("webhook %s: more than %d redirects; not followed", safe_url(url), _MAX_REDIRECTS)
        return None

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for webhook deliveries still in flight (graceful shutdown)."""
        if self._webhooks:
            await asyncio.wait(set(self._webhooks), timeout=timeout)
