"""Spike alerts per brand x emotion: the current window against a rolling baseline, a minimum volume and a cooldown;
each alert a lifecycle (open -> updated -> resolved) with its explanation, delivered to Redis, the topic and channels.

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

Lifecycle (one episode per brand x emotion at a time, its state in ``em:alert:episode:{brand}:{emotion}``):

* **open**: a spike while no episode is open, and the cooldown is free: a new alert id; the cooldown is claimed.
* **updated**: the spike is still declared while the episode is open and the cooldown has run out since the last
  message: one update per cooldown at most, with the current figures and the episode's peak share.
* **resolved**: while open, the window share is back within ``alert_resolve_margin`` of the baseline share
  (``share <= baseline + margin``) for ``alert_resolve_evaluations`` consecutive evaluations, each at a newer event
  time (a retried batch does not count twice); an evaluation above that restarts the count. Not held back by the
  cooldown; a new episode opens only once the cooldown claimed by the last open/update has run out.

An episode is evaluated when its brand's posts are written: one whose brand falls silent stays open until posts come.
Every transition is one atomic Redis script (:meth:`monitor.store.RedisStore.record_alert_transition`): it checks
the episode's version (two workers never both move one episode), claims the cooldown when the transition has one,
stores the alert JSON in ``em:alerts`` and ``em:alerts:brand:{brand}`` and writes the episode's new state — all or
nothing: a store that fails leaves the cooldown unclaimed, so the retried batch fires the alert again instead of
finding the cooldown taken and losing it.

Each stored transition carries its status, the episode's times and peak, the effect (ratio and points; a confidence
when the detector gives one), its evidence (the window's posts with the highest score for the emotion) and the terms
over-represented in the window (:mod:`monitor.explain`). Then it is logged, sent to the ``alerts`` topic (a broker
outage is waited out; a refusal is logged, the alert stays stored) and delivered to the channels (:mod:`monitor.notify`:
webhook, Slack, Teams, email; timeout, retries with back-off, allow-listed hosts only) — best effort, never blocking
posts. :meth:`AlertEngine.drain` waits for deliveries in flight (the worker calls it at shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from monitor import schema
from monitor.alert_record import Alert
from monitor.alert_rules import AlertRule, LiveRules, RuleBook
from monitor.detector import Detection, DetectorParams, detection_at, read_inputs, replay_detector, strongest
from monitor.explain import over_represented
from monitor.notify import Notifier
from monitor.settings import MonitorSettings
from monitor.taxonomy import group_members

__all__ = ["Alert", "AlertEngine", "WindowCounts", "is_spike", "replay_detector"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes | None, bytes], Awaitable[None]]


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

    @property
    def effect_ratio(self) -> float | None:
        """Window share / baseline share; None when the baseline share is 0 (no finite ratio)."""
        return self.window_share / self.baseline_share if self.baseline_share else None

    @property
    def effect_points(self) -> float:
        """Window share minus baseline share, in percentage points."""
        return 100 * (self.window_share - self.baseline_share)


def is_spike(counts: WindowCounts, settings: MonitorSettings) -> bool:
    """The spike rule (pure): volume, enough baseline, absolute share and ratio against the baseline share."""
    if counts.window_count < settings.alert_min_volume:
        return False
    if counts.baseline_posts < settings.alert_min_baseline_posts:
        return False
    if counts.window_share < settings.alert_min_share:
        return False
    return counts.window_share >= settings.alert_ratio * counts.baseline_share


def queue_alert_store(pipe, body: str, brand: str, ts: int) -> None:
    """Queue on ``pipe`` (a sync or asyncio redis-py pipeline, ideally ``transaction=True``) the writes that store one
    alert: the all-brands timeline, the brand's own index (same member and score, so the dashboard reads a brand's
    alerts exactly) and, the first time only, the marker saying from when the brand indexes are complete."""
    pipe.zadd(schema.ALERTS_KEY, {body: ts})
    pipe.zadd(schema.brand_alerts_key(brand), {body: ts})
    pipe.set(schema.ALERTS_INDEXED_SINCE_KEY, ts, nx=True)


def _duration(ms: int) -> str:
    """A window length as people say it: whole minutes as "N min", anything else in seconds."""
    return f"{ms // 60_000} min" if ms >= 60_000 and ms % 60_000 == 0 else f"{ms / 1000:g} s"


def _float(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


class AlertEngine:
    """Evaluates the spike rule after each batch, moves each brand x emotion's alert episode through its lifecycle and
    dispatches every transition to Redis, the log, Kafka and the delivery channels."""

    def __init__(self, settings: MonitorSettings, store, publish: Publish, model_version: str, on_alert=None):
        self.settings = settings
        self.store = store
        self.publish = publish
        self.model_version = model_version
        self.on_alert = on_alert or (lambda alert: None)
        self.notifier = Notifier(settings)
        # per brand x emotion rules from Redis (monitor.alert_rules), reloaded when their version moves
        self.rules = LiveRules(store, settings.alert_rules_reload_seconds)
        self._tau2: dict = {}  # overdispersion per series x window, re-estimated every few minutes (detector.py)
        # brand x emotion -> (event minute, rules version, monotonic time) of its last statistical detection: the
        # throttle of alert_detect_interval_seconds (_detection_due); counters for tests and logs
        self._detected_at: dict[tuple[str, str], tuple[int, int, float]] = {}
        # brand x emotion -> the newest event time whose detection the throttle skipped and nothing has run since:
        # run_skipped() runs them once their interval passed (the worker's timer) and all of them at shutdown, so a
        # spike whose last posts were skipped alerts even when the stream then goes quiet
        self._skipped: dict[tuple[str, str], int] = {}
        self.detections_run = 0
        self.detections_skipped = 0

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
        self.detections_run += 1
        inputs = await read_inputs(self.store, schema.series_key(brand, emotion, "count", "1m"),
                                   schema.series_key(brand, schema.ALL_EMOTIONS, "posts", "1m"), now_ms, params,
                                   self._tau2)
        return strongest([detection_at(inp, params) for inp in inputs])

    async def evaluate(self, latest_by_brand: dict[str, int]) -> list[Alert]:
        """Check every watched emotion of the brands just written, at each brand's newest ``created_at``: the
        settings' ``alert_emotions`` plus the emotions of the brand's rules (``em:alert_rules``), each with its rule.
        Returns the transitions (open, updated, resolved) this call stored and dispatched."""
        emitted = []
        statistical = self.settings.alert_detector == "statistical"
        book = await self.rules.current() if statistical else RuleBook()
        for brand, now_ms in latest_by_brand.items():
            for emotion in book.emotions_for(brand, self.settings.alert_emotions):
                if statistical and not self._detection_due(brand, emotion, now_ms, book.version):
                    self.detections_skipped += 1
                    key = (brand, emotion)
                    self._skipped[key] = max(now_ms, self._skipped.get(key, now_ms))
                    continue
                alert = await self._evaluate_one(brand, emotion, now_ms, book, statistical)
                if alert is not None:
                    emitted.append(alert)
        return emitted

    async def run_skipped(self, due_only: bool = True) -> list[Alert]:
        """Run the statistical detections the throttle skipped and no later batch ran: those whose interval has
        passed (``due_only``; the worker's timer calls this every half interval), or all of them (shutdown). Each
        runs at the newest event time skipped. Never raises: a detection that fails (Redis refused) is logged and
        stays pending for the next call. Returns the transitions stored and dispatched."""
        if not self._skipped:
            return []
        try:
            book = await self.rules.current()
        except Exception as exc:  # noqa: BLE001 - Redis down: the timer tries again
            log.warning("skipped alert detections wait: alert rules unreadable (%s)", exc)
            return []
        emitted = []
        for (brand, emotion), now_ms in list(self._skipped.items()):
            if due_only and not self._detection_due(brand, emotion, now_ms, book.version):
                continue
            self._skipped.pop((brand, emotion), None)
            if emotion not in book.emotions_for(brand, self.settings.alert_emotions):
                continue  # no longer watched (its rule was removed meanwhile)
            try:
                alert = await self._evaluate_one(brand, emotion, now_ms, book, True)
            except Exception as exc:  # noqa: BLE001 - keep it for the next call, unless a batch ran a newer one
                log.warning("skipped alert detection %s/%s failed, retried later: %s", brand, emotion, exc)
                self._skipped.setdefault((brand, emotion), now_ms)
                continue
            if alert is not None:
                emitted.append(alert)
        return emitted

    async def _evaluate_one(self, brand: str, emotion: str, now_ms: int, book: RuleBook,
                            statistical: bool) -> Alert | None:
        """One brand x emotion's evaluation at event time ``now_ms``: detect, move the episode, dispatch."""
        rule = book.rule_for(brand, emotion)
        counts = await self.counts(brand, emotion, now_ms)
        if statistical:
            detection = await self.detect(brand, emotion, now_ms, rule)
            alert = await self.step(brand, emotion, now_ms, counts, detection.fired, detection=detection, rule=rule)
            self._record_detection(brand, emotion, now_ms, book.version)
            if self._skipped.get((brand, emotion), now_ms + 1) <= now_ms:  # this run covered the skipped one
                del self._skipped[(brand, emotion)]
        else:
            alert = await self.step(brand, emotion, now_ms, counts, is_spike(counts, self.settings))
        if alert is not None:
            await self._dispatch(alert, rule.channels if rule is not None and rule.channels else None)
        return alert

    def _detection_due(self, brand: str, emotion: str, now_ms: int, rules_version: int) -> bool:
        """Whether this batch re-runs the statistical detection of ``brand`` x ``emotion``: always when its event time
        reached a minute not tested yet (a new 1-minute bucket has data) or the rules changed, else only once
        ``alert_detect_interval_seconds`` passed since the last run. Within a minute only the current bucket grows,
        so skipping trades at most that interval of alert delay for most of the stage's cost under load (one
        detection: several Redis ranges and a beta-binomial tail per window). A failed evaluation is not recorded,
        so the batch's retry runs it again."""
        interval = self.settings.alert_detect_interval_seconds
        last = self._detected_at.get((brand, emotion))
        if interval <= 0 or last is None:
            return True
        minute, version, at = last
        return now_ms // 60_000 > minute or rules_version != version or time.monotonic() - at >= interval

    def _record_detection(self, brand: str, emotion: str, now_ms: int, rules_version: int) -> None:
        if self.settings.alert_detect_interval_seconds <= 0:  # no throttle: _detection_due never reads the record
            return
        if len(self._detected_at) > 100_000:  # brands come and go: a bounded memory
            self._detected_at.clear()
        last = self._detected_at.get((brand, emotion))
        minute = max(now_ms // 60_000, last[0] if last else 0)  # a late batch (older event time) brings no new minute
        self._detected_at[(brand, emotion)] = (minute, rules_version, time.monotonic())

    async def step(self, brand: str, emotion: str, now_ms: int, counts: WindowCounts, fired: bool,
                   confidence: float | None = None, effect_ratio: float | None = None,
                   effect_points: float | None = None, baseline_share: float | None = None,
                   detection: Detection | None = None, rule: AlertRule | None = None) -> Alert | None:
        """Move the brand x emotion's episode by one evaluation at event time ``now_ms`` (``fired``: the detector
        declared a spike); the transition stored, or None when there is nothing to say (or another worker moved
        the episode first). Raises (nothing stored) when Redis refuses: the batch's retry evaluates again.

        ``confidence`` and the effect come from the detector when it has them (e.g. against a seasonal baseline);
        without them the effect is computed from ``counts`` and the confidence stays None. ``baseline_share``: the
        detector's baseline (e.g. the same hour on earlier days) that "back to baseline" is judged against, instead
        of the rolling one in ``counts``.

        ``detection``: the statistical detector's verdict (:mod:`monitor.detector`); when given, the alert's window,
        figures, confidence and effect are the firing window's and "back to baseline" is judged against its baseline.
        ``rule``: the brand x emotion's alert rule (its cooldown and channels)."""
        s = self.settings
        has_own_cooldown = rule is not None and rule.cooldown_s is not None
        cooldown_ms = rule.cooldown_s * 1000 if has_own_cooldown else s.alert_cooldown_ms
        if detection is not None:
            confidence = detection.confidence if confidence is None else confidence
            effect_ratio = round(detection.ratio, 3) if effect_ratio is None else effect_ratio
            effect_points = round(100 * detection.points, 2) if effect_points is None else effect_points
            baseline_share = detection.baseline_share if baseline_share is None else baseline_share
        episode = await self.store.alert_episode(brand, emotion)
        is_open = episode.get("status") == "open"
        version = episode.get("version", "")
        # the latest rolling window's share (the 5-minute one), also with the detector: its firing window may be the
        # hour, which stays high long after the posts calmed down; "back to baseline" uses the detector's baseline,
        # which (unlike the rolling one in counts) has not taken the spike in
        share = round(counts.window_share, 4)
        peak = max(_float(episode.get("peak")), share) if is_open else share
        next_version = str(int(_float(version)) + 1)
        if fired:
            if cooldown_ms > 0 and await self.store.alert_cooldown_active(brand, emotion):
                # a spike that persists inside its cooldown: nothing to send, but the episode keeps its peak
                if is_open and (peak > _float(episode.get("peak")) or episode.get("calm", "0") != "0"):
                    await self.store.record_alert_transition(
                        brand, emotion, expected_version=version,
                        state={"peak": peak, "calm": 0, "calm_at": "", "version": next_version})
                return None
            status = "updated" if is_open else "open"
            episode_id = episode["id"] if is_open else secrets.token_hex(8)
            opened_at = int(_float(episode.get("opened_at"))) if is_open else now_ms
            made = self._make(brand, emotion, now_ms, counts, status, peak, opened_at, detection, rule)
            evidence, terms = await self.explain(brand, emotion, now_ms, made.window_end - made.window_start + 1)
            alert = replace(made, id=episode_id, evidence=evidence, terms=terms,
                            **self._detected(confidence, effect_ratio, effect_points))
            state = {"id": episode_id, "status": "open", "opened_at": opened_at, "updated_at": now_ms,
                     "resolved_at": "", "peak": peak, "calm": 0, "calm_at": "", "version": next_version}
            stored = await self.store.record_alert_transition(
                brand, emotion, expected_version=version, state=state, alert_json=alert.to_json(), alert_ts=alert.ts,
                cooldown=(now_ms, cooldown_ms))
            return alert if stored else None
        if not is_open:
            return None
        baseline = counts.baseline_share if baseline_share is None else baseline_share
        if share > baseline + s.alert_resolve_margin:  # still above the baseline: not calm yet
            if peak > _float(episode.get("peak")) or episode.get("calm", "0") != "0":
                await self.store.record_alert_transition(
                    brand, emotion, expected_version=version,
                    state={"peak": peak, "calm": 0, "calm_at": "", "version": next_version})
            return None
        if now_ms <= int(_float(episode.get("calm_at"), -1)):  # this evaluation's event time was counted already
            return None
        calm = int(_float(episode.get("calm"))) + 1
        if calm < s.alert_resolve_evaluations:
            await self.store.record_alert_transition(
                brand, emotion, expected_version=version,
                state={"calm": calm, "calm_at": now_ms, "version": next_version})
            return None
        opened_at = int(_float(episode.get("opened_at")))
        alert = replace(self._make(brand, emotion, now_ms, counts, "resolved", peak, opened_at, detection, rule),
                        id=episode["id"], resolved_at=now_ms, **self._detected(confidence, effect_ratio, effect_points))
        state = {"status": "resolved", "updated_at": now_ms, "resolved_at": now_ms, "calm": calm, "calm_at": now_ms,
                 "version": next_version}
        stored = await self.store.record_alert_transition(
            brand, emotion, expected_version=version, state=state, alert_json=alert.to_json(), alert_ts=alert.ts)
        return alert if stored else None

    @staticmethod
    def _detected(confidence: float | None, effect_ratio: float | None, effect_points: float | None) -> dict:
        """The detector's figures that replace the count-based ones (only those it gave)."""
        given = {"confidence": confidence, "effect_ratio": effect_ratio, "effect_points": effect_points}
        return {name: value for name, value in given.items() if value is not None}

    async def explain(self, brand: str, emotion: str, now_ms: int,
                      window_ms: int | None = None) -> tuple[tuple, tuple]:
        """The alert's evidence and terms, read from the recent-posts store now, before it ages the posts out.

        Evidence: the window's ``alert_evidence_posts`` posts with the highest score for ``emotion`` (a group series
        such as ``sentiment:negative``: the highest member score). Terms: the ``alert_explain_terms`` words/hashtags
        over-represented in the window's posts carrying the emotion (all the window's posts when none is labelled
        with it) against the baseline's posts (:func:`monitor.explain.over_represented`). Each side is read up to
        its newest ``alert_explain_posts`` posts. The window (``window_ms``, default ``alert_window_ms``) is widened
        to the raw buckets its counts were read from, so these are posts the alert counted."""
        s = self.settings
        if not s.alert_evidence_posts and not s.alert_explain_terms:
            return (), ()
        bucket = s.raw_bucket_ms
        start = now_ms - (window_ms or s.alert_window_ms) + 1
        window_start, window_end = start + (-start) % bucket, now_ms - now_ms % bucket + bucket - 1
        window = await self.store.recent_posts(brand, window_start, window_end, limit=s.alert_explain_posts,
                                               newest_first=True)
        window.reverse()  # oldest first, so posts of equal score keep their time order
        grouping, _, group = emotion.partition(":")
        names = (group_members(grouping, group) if group and grouping in ("ekman", "sentiment") else []) or [emotion]
        scored = []
        for post in window:
            try:
                score = max(float(post.get("scores", {}).get(name, 0.0)) for name in names)
            except (TypeError, ValueError, AttributeError):
                continue  # a malformed stored post is not evidence
            scored.append((score, post))
        scored.sort(key=lambda pair: pair[0], reverse=True)
        evidence = tuple(post for _score, post in scored[:s.alert_evidence_posts])
        terms: tuple = ()
        if s.alert_explain_terms:
            baseline = await self.store.recent_posts(brand, window_start - s.alert_baseline_ms, window_start - 1,
                                                     limit=s.alert_explain_posts, newest_first=True)
            wanted = set(names)
            labelled = [post for _score, post in scored
                        if isinstance(post.get("labels"), list) and wanted.intersection(post["labels"])]
            terms = tuple(over_represented([str(p.get("text", "")) for p in labelled or [p for _s, p in scored]],
                                           [str(p.get("text", "")) for p in baseline], limit=s.alert_explain_terms))
        return evidence, terms

    async def evidence(self, brand: str, emotion: str, now_ms: int, window_ms: int | None = None) -> tuple:
        """The evidence part of :meth:`explain`."""
        return (await self.explain(brand, emotion, now_ms, window_ms))[0]

    def _make(self, brand: str, emotion: str, now_ms: int, counts: WindowCounts, status: str = "open",
              peak: float = 0.0, opened_at: int = 0, detection: Detection | None = None,
              rule: AlertRule | None = None) -> Alert:
        """The alert record for one transition: the threshold rule's window and counts, or, with ``detection``, the
        statistical detector's firing window (whole minutes of the 1-minute tier, the last one holding the posts
        counted so far) and its verdict."""
        if detection is None or status == "resolved":
            # a resolution reports the latest rolling window (what was judged calm) against the baseline it was
            # judged against: the detector's when there is one
            window_start, window_end = now_ms - self.settings.alert_window_ms + 1, now_ms
            value = counts.window_share
            baseline = counts.baseline_share if detection is None else detection.baseline_share
            count, posts = int(counts.window_count), int(counts.window_posts)
            figures = (f"{value:.0%} of {posts} posts in the last {_duration(self.settings.alert_window_ms)} vs "
                       f"{baseline:.0%} {'before' if detection is None else 'baseline'}")
            ratio = value / baseline if baseline else None
            points = 100 * (value - baseline)
        else:
            minute_end = (now_ms // 60_000 + 1) * 60_000 - 1
            window_start, window_end = minute_end - detection.window_min * 60_000 + 1, min(now_ms, minute_end)
            value, baseline = detection.window_share, detection.baseline_share
            count, posts = detection.count, detection.posts
            usual = "usual at this hour" if detection.baseline_kind == "seasonal" else "before"
            figures = (f"{value:.0%} of {posts} posts in the last {_duration(detection.window_min * 60_000)} vs "
                       f"{baseline:.0%} {usual} (x{detection.ratio:.1f}, {detection.points * 100:+.0f} points, "
                       f"p = {detection.p_value:.1g})")
            ratio, points = detection.ratio, 100 * detection.points
        if status == "resolved":
            message = (f"{emotion} for {brand} back to baseline: {figures} (peak {peak:.0%}, open "
                       f"{_duration(max(0, now_ms - opened_at) // 60_000 * 60_000 or 60_000)})")
        elif status == "updated":
            message = f"{emotion} spike for {brand} continues: {figures} (peak {peak:.0%})"
        else:
            message = f"{emotion} spike for {brand}: {figures}"
        return Alert(brand, emotion, int(time.time() * 1000), window_start, window_end, round(value, 4),
                     round(baseline, 4), count, posts, message, self.model_version, status=status,
                     opened_at=opened_at or now_ms, updated_at=now_ms, peak=peak or round(value, 4),
                     effect_ratio=round(ratio, 3) if ratio is not None else None, effect_points=round(points, 2),
                     detection=detection.to_dict() if detection is not None else None,
                     channels=tuple(rule.channels) if rule is not None else ())

    async def _dispatch(self, alert: Alert, channels: Iterable[str] | None = None) -> None:
        """Log, publish and deliver an alert already stored (its cooldown claimed): nothing here may fail the batch,
        whose retry would find the cooldown taken."""
        body = alert.to_json()
        log.warning("ALERT %s %s", alert.status.upper(), alert.message)
        try:
            await self.publish(self.settings.alerts_topic, alert.brand.encode(), body.encode())
        except Exception:  # noqa: BLE001 - outages are waited out inside publish; this is a refusal
            log.exception("alert %s/%s stored in Redis but refused by the broker (not on the %s topic)",
                          alert.brand, alert.emotion, self.settings.alerts_topic)
        self.on_alert(alert)
        self.notifier.deliver(alert, channels)

    def webhook_allowed(self, url: str) -> bool:
        return self.notifier.allowed(url)

    async def post_webhook(self, body: str) -> bool:
        """POST ``body`` to ``EM_MONITOR_WEBHOOK_URL`` (:meth:`monitor.notify.Notifier.post_json`: retries, allow-list,
        checked redirects)."""
        return await self.notifier.post_json(self.settings.webhook_url or "", body)

    async def drain(self, timeout: float | None = None) -> int:
        """Wait for deliveries still in flight (graceful shutdown), at most ``timeout`` seconds (default
        ``EM_MONITOR_ALERT_DRAIN_TIMEOUT``); returns how many were still unfinished and so cancelled. First the
        detections the throttle skipped run (within the same bound), so their alerts are delivered too."""
        timeout = self.settings.alert_drain_timeout if timeout is None else timeout
        if self._skipped:
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.run_skipped(due_only=False), timeout)
            except asyncio.TimeoutError:
                log.warning("shutdown: %d skipped alert detections not run within %.1f s", len(self._skipped), timeout)
            timeout = max(0.0, timeout - (time.monotonic() - started))
        return await self.notifier.drain(timeout)
