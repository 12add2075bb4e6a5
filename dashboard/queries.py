"""Everything the dashboard asks Redis, as plain functions returning pandas frames (no Streamlit here).

Each refresh costs a fixed number of round trips, independent of how much data is stored and with no key scans:

* the brand list: ``SMEMBERS em:brands``;
* emotion over time: one ``TS.MRANGE ... AGGREGATION sum <bucket> FILTER app=.. brand=.. metric=(count,posts)
  tier=.. GROUPBY emotion REDUCE sum`` per brand, all brands in one pipeline (one round trip);
* shifts: the same query with one bucket per period (two buckets: previous and current), again one pipeline;
* when each brand's monitoring started: ``TS.INFO`` of its raw and hourly post-count series, one pipeline;
* the stream-adjusted shares: one ``TS.MREVRANGE ... COUNT 1 FILTER app=.. brand=.. tier=estimate`` per brand and
  one for all brands (``_all``), in one pipeline (the latest estimate of :mod:`monitor.priors` at the range's end);
* alerts: one ``ZREVRANGEBYSCORE em:alerts:brand:{brand}`` per brand, in one pipeline (plus one scan of the shared
  ``em:alerts`` only for alerts stored before the brand indexes existed); the posts behind an alert: one
  ``ZRANGEBYSCORE em:posts:{brand}`` (for alerts stored before alerts carried their evidence); the post explorer: one
  ``ZREVRANGEBYSCORE em:posts:{brand} <to> <from> LIMIT 0 <n>``.

Aggregation happens on the server; only the bucketed sums travel. Every query filters on ``tier`` so a compaction is
never counted together with its source (see :mod:`monitor.schema`). Redis being unreachable raises
:class:`RedisUnavailable`; a reply the dashboard cannot use raises :class:`QueryError` — the page turns both into
messages. Malformed alert/post JSON is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import redis

from monitor import schema

__all__ = [
    "RANGES",
    "QueryError",
    "RedisUnavailable",
    "TimeWindow",
    "alert_posts",
    "connect",
    "emotion_names",
    "emotion_series",
    "list_alerts",
    "list_brands",
    "list_posts",
    "monitoring_start",
    "period_totals",
    "plan_window",
    "post_rows",
    "stream_estimates",
]

MINUTE = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
RANGES: dict[str, int] = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}
# Bucket sizes offered, smallest first; the first one giving at most MAX_POINTS points per line wins.
BUCKET_LADDER: tuple[int, ...] = (MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY)
MAX_POINTS = 200
# Raw samples are read only for windows that start this recently: the raw tier is the freshest (no compaction lag)
# but has the shortest retention and the most samples per bucket.
RAW_HORIZON_MS = 6 * HOUR
SERIES_COLUMNS = ["brand", "emotion", "ts", "count"]


class RedisUnavailable(RuntimeError):
    """Redis could not be reached (refused, timed out, wrong address)."""


class QueryError(RuntimeError):
    """Redis answered, but not as the schema expects (e.g. no TimeSeries module)."""


@dataclass(frozen=True)
class TimeWindow:
    """A query window: ``[start_ms, end_ms]`` read from ``tier`` in buckets of ``bucket_ms``."""

    start_ms: int
    end_ms: int
    bucket_ms: int
    tier: str

    @property
    def span_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def buckets(self) -> list[int]:
        """Start times of every bucket in the window (what the server would return if none were empty)."""
        return list(range(self.start_ms, self.end_ms + 1, self.bucket_ms))


def choose_bucket(span_ms: int) -> int:
    for bucket in BUCKET_LADDER:
        if span_ms / bucket <= MAX_POINTS:
            return bucket
    return BUCKET_LADDER[-1]


def choose_tier(start_ms: int, bucket_ms: int, now_ms: int) -> str:
    if start_ms >= now_ms - RAW_HORIZON_MS and bucket_ms < HOUR:
        return "raw"
    return "1h" if bucket_ms % HOUR == 0 else "1m"


def plan_window(start_ms: int, end_ms: int, now_ms: int) -> TimeWindow:
    """Bucket size from the span (at most MAX_POINTS buckets), tier from bucket and age; start aligned to a bucket."""
    if end_ms <= start_ms:
        raise ValueError(f"time range is empty: start {start_ms} is not before end {end_ms}")
    bucket = choose_bucket(end_ms - start_ms)
    aligned_start = (start_ms // bucket) * bucket
    return TimeWindow(aligned_start, end_ms, bucket, choose_tier(aligned_start, bucket, now_ms))


def connect(url: str, timeout_seconds: float = 2.0) -> redis.Redis:
    """A client with short timeouts, so an unreachable Redis becomes a message within seconds, not a hang."""
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_seconds,
                                socket_timeout=timeout_seconds, health_check_interval=30)


def _guard(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
    except redis.ResponseError as exc:
        raise QueryError(str(exc)) from exc


def list_brands(client: redis.Redis) -> list[str]:
    return sorted(_guard(client.smembers, schema.BRANDS_KEY))


def _filters(brand: str, tier: str) -> list[str]:
    return [f"app={schema.APP_LABEL}", f"brand={brand}", "metric=(count,posts)", f"tier={tier}"]


def _grouped_mrange(client: redis.Redis, brands: list[str], start_ms: int, end_ms: int, bucket_ms: int, tier: str,
                    align: int | str | None = None) -> list[Any]:
    pipe = client.ts().pipeline(transaction=False)
    for brand in brands:
        pipe.mrange(start_ms, end_ms, _filters(brand, tier), aggregation_type="sum", bucket_size_msec=bucket_ms,
                    groupby="emotion", reduce="sum", latest=tier != "raw", align=align)
    return _guard(pipe.execute)


def _rows(brand: str, reply: Any) -> list[tuple[str, str, int, float]]:
    """Rows from one GROUPBY reply: ``[{'emotion=joy': [labels, [(ts, value), ...]]}, ...]`` (RESP2)."""
    rows: list[tuple[str, str, int, float]] = []
    if not isinstance(reply, list):
        raise QueryError(f"unexpected TS.MRANGE reply of type {type(reply).__name__}")
    for group in reply:
        for key, (_labels, samples) in group.items():
            emotion = key.split("=", 1)[1] if "=" in key else key
            rows.extend((brand, emotion, int(ts), float(value)) for ts, value in samples
                        if not math.isnan(float(value)))
    return rows


def emotion_series(client: redis.Redis, brands: list[str], window: TimeWindow) -> pd.DataFrame:
    """Per brand, emotion and bucket: how many posts carried the emotion (``_all``: how many posts there were).

    Long format with columns ``brand, emotion, ts (bucket start, ms), count``; empty buckets are absent.
    """
    if not brands:
        return pd.DataFrame(columns=SERIES_COLUMNS)
    replies = _grouped_mrange(client, brands, window.start_ms, window.end_ms, window.bucket_ms, window.tier)
    rows = [row for brand, reply in zip(brands, replies) for row in _rows(brand, reply)]
    return pd.DataFrame(rows, columns=SERIES_COLUMNS)


def period_totals(client: redis.Redis, brands: list[str], end_ms: int, period_ms: int, now_ms: int) -> pd.DataFrame:
    """Totals per brand and emotion for the previous and the current period of ``period_ms`` ending at ``end_ms``.

    One bucket per period (aggregation aligned to the start of the previous period), so the server returns at most
    two numbers per emotion. Columns ``brand, emotion, period ('previous' | 'current'), count``.
    """
    columns = ["brand", "emotion", "period", "count"]
    if not brands:
        return pd.DataFrame(columns=columns)
    start = end_ms - 2 * period_ms
    tier = choose_tier(start, choose_bucket(2 * period_ms), now_ms)
    # The current period ends at end_ms inclusive; the previous one covers [start, start + period).
    replies = _grouped_mrange(client, brands, start, end_ms, period_ms, tier, align=start)
    rows = []
    for brand, reply in zip(brands, replies):
        for _brand, emotion, ts, value in _rows(brand, reply):
            rows.append((brand, emotion, "previous" if ts < start + period_ms else "current", value))
    frame = pd.DataFrame(rows, columns=columns)
    return frame.groupby(["brand", "emotion", "period"], as_index=False)["count"].sum()


def emotion_names(client: redis.Redis, brands: list[str], exclude=()) -> list[str]:
    """The emotion names the brands' raw count series carry (group series and ``exclude`` left out), sorted: one
    ``TS.QUERYINDEX`` per brand. A model trained on another label set writes names outside the 28 GoEmotions ones."""
    names: set[str] = set()
    for brand in brands:
        prefix = f"{schema.PREFIX}:ts:{brand}:"
        keys = _guard(client.ts().queryindex, [f"app={schema.APP_LABEL}", f"brand={brand}", "metric=count",
                                               "tier=raw"])
        for key in keys:
            if key.startswith(prefix) and key.endswith(":count"):
                name = key[len(prefix):-len(":count")]
                if name and ":" not in name and name not in exclude:
                    names.add(name)
    return sorted(names)


def monitoring_start(client: redis.Redis, brands: list[str]) -> dict[str, int]:
    """Per brand, when the monitor first counted a post for it (ms), or absent when it never did.

    The raw post-count series is exact until its retention trims it; the hourly one keeps 400 days but starts at the
    hour of the first post. So: the raw series' first sample unless it lies over an hour after the hourly one's.
    Time before this is drawn as no data, not as 0 posts.
    """
    if not brands:
        return {}
    pipe = client.ts().pipeline(transaction=False)
    for brand in brands:
        for tier in ("raw", "1h"):
            pipe.info(schema.series_key(brand, schema.ALL_EMOTIONS, "posts", tier))
    replies = _guard(pipe.execute, raise_on_error=False)
    started = {}
    for i, brand in enumerate(brands):
        firsts = []
        for reply in replies[2 * i:2 * i + 2]:
            first = getattr(reply, "first_timestamp", None) if not isinstance(reply, Exception) else None
            firsts.append(int(first) if first else None)  # 0: an empty series
        raw, hourly = firsts
        if raw is not None and (hourly is None or raw < hourly + HOUR):
            started[brand] = raw
        elif hourly is not None:
            started[brand] = hourly
    return started


def _parse_members(members: list[str]) -> tuple[list[dict], int]:
    parsed, malformed = [], 0
    for member in members:
        try:
            item = json.loads(member)
        except (TypeError, ValueError):
            malformed += 1
            continue
        if isinstance(item, dict):
            parsed.append(item)
        else:
            malformed += 1
    return parsed, malformed


ALERT_FIELDS = ("brand", "emotion", "ts", "window_start", "window_end")


def _indexed_since(raw: Any) -> int | None:
    try:
        return int(float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None  # a garbled marker: trust no index, scan the shared timeline as before


def _valid_alert(alert: dict) -> bool:
    """Normalise the alert's times to int in place; False when it lacks a field or has an odd type."""
    try:
        if any(alert.get(name) is None for name in ALERT_FIELDS):
            return False
        if not isinstance(alert["brand"], str) or not isinstance(alert["emotion"], str):
            return False  # a list brand would break the posts lookup
        alert.update({name: int(alert[name]) for name in ("ts", "window_start", "window_end")})
        # lifecycle status of this record (open, updated, resolved); alerts stored before the lifecycle only opened
        alert["status"] = alert.get("status") if isinstance(alert.get("status"), str) else "open"
    except (TypeError, ValueError):
        return False
    return True


def list_alerts(client: redis.Redis, brands: list[str], start_ms: int, end_ms: int,
                limit: int = 200) -> tuple[list[dict], int]:
    """Newest first, at most ``limit`` alerts of ``brands`` raised in ``[start_ms, end_ms]``; and how many were
    malformed.

    Exact per brand: each brand's own index ``em:alerts:brand:{brand}`` (one pipeline, ``limit`` newest per brand), so
    a brand is never crowded out by others that alert more. Alerts stored before the indexes existed (older than
    ``em:alerts:indexed_since``, or all of them when that marker is absent) are only in the shared ``em:alerts``; for
    that older part of the range only, the shared timeline is scanned as before (the newest ``limit x 20``, then
    filtered by brand).

    An alert missing one of ``brand, emotion, ts, window_start, window_end`` (or with a non-string brand or emotion,
    or a non-numeric time) counts as malformed. Each alert record is one transition of its episode: ``status`` is
    ``open``, ``updated`` or ``resolved`` (``open`` for alerts stored before the lifecycle), ``id`` names the episode.
    """
    if not brands:
        return [], 0
    pipe = client.pipeline(transaction=False)
    pipe.get(schema.ALERTS_INDEXED_SINCE_KEY)
    for brand in brands:
        pipe.zrevrangebyscore(schema.brand_alerts_key(brand), end_ms, start_ms, start=0, num=limit)
    since_raw, *indexed = _guard(pipe.execute)
    members = [member for brand_members in indexed for member in brand_members]
    since = _indexed_since(since_raw)
    legacy_end = end_ms if since is None else min(end_ms, since - 1)
    if legacy_end >= start_ms:
        # Older alerts of other brands share this zset, so read more than ``limit`` before filtering by brand.
        seen = set(members)
        legacy = _guard(client.zrevrangebyscore, schema.ALERTS_KEY, legacy_end, start_ms, start=0, num=limit * 20)
        members += [member for member in legacy if member not in seen]
    parsed, malformed = _parse_members(members)
    wanted = set(brands)
    alerts = []
    for alert in parsed:
        if not _valid_alert(alert):
            malformed += 1
        elif alert["brand"] in wanted:
            alerts.append(alert)
    alerts.sort(key=lambda alert: alert["ts"], reverse=True)
    return alerts[:limit], malformed


def _members(emotion: str) -> list[str]:
    """The emotions an emotion or group name stands for (``sentiment:negative`` or ``negative`` -> its members)."""
    from .taxonomy import GROUPINGS, group_members

    grouping, _, group = emotion.partition(":")
    if group and grouping in GROUPINGS:
        return group_members(grouping, group) or [emotion]
    return [emotion]


def _post_row(post: dict, emotion: str | list[str]) -> dict:
    scores = {str(k): float(v) for k, v in post.get("scores", {}).items()} if isinstance(post.get("scores"), dict) \
        else {}
    labels = post.get("labels") if isinstance(post.get("labels"), list) else []
    top = sorted(scores.items(), key=lambda item: -item[1])[:3]
    names = _members(emotion) if isinstance(emotion, str) else list(emotion)
    url = post.get("url")
    return {
        "time": pd.to_datetime(int(post["created_at"]), unit="ms", utc=True),
        "score": max((scores.get(name, 0.0) for name in names), default=0.0),
        "labelled": any(name in labels for name in names),
        "text": str(post.get("text", "")),
        "source": post.get("source"),
        "author": post.get("author"),
        "labels": ", ".join(map(str, labels)),
        "top_scores": ", ".join(f"{name} {value:.2f}" for name, value in top),
        "id": post.get("id"),
        "url": url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
    }


POST_COLUMNS = ["time", "score", "labelled", "text", "source", "author", "labels", "top_scores", "id", "url"]


def post_rows(posts: list, emotion: str | list[str]) -> tuple[pd.DataFrame, int]:
    """Post JSON objects -> a frame of :data:`POST_COLUMNS` scored for ``emotion``; and how many were malformed."""
    rows, malformed = [], 0
    for post in posts:
        try:
            rows.append(_post_row(post, emotion))
        except (KeyError, TypeError, ValueError, AttributeError):  # KeyError: no created_at
            malformed += 1
    return pd.DataFrame(rows, columns=POST_COLUMNS), malformed


def list_posts(client: redis.Redis, brand: str, start_ms: int, end_ms: int, emotion: str | list[str] | None = None,
               limit: int = 2000) -> tuple[pd.DataFrame, int, bool]:
    """The newest ``limit`` stored posts of ``brand`` created in ``[start_ms, end_ms]`` (the post explorer).

    ``emotion`` (a name, a group such as ``negative`` given as its members, or None for all) sets ``score`` and
    ``labelled``. Returns the frame (newest first), the number of malformed members skipped, and whether ``limit``
    cut the range (older posts of the range exist but were not read).
    """
    members = _guard(client.zrevrangebyscore, schema.posts_key(brand), end_ms, start_ms, start=0, num=limit)
    posts, malformed = _parse_members(members)
    frame, bad = post_rows(posts, emotion or [])
    return frame, malformed + bad, len(members) >= limit


def alert_posts(client: redis.Redis, alert: dict, limit: int = 200) -> tuple[pd.DataFrame, int]:
    """The posts of the alert's brand inside its window, those most typical of its emotion first.

    Columns: ``time`` (UTC), ``score`` (probability of the alert's emotion), ``labelled`` (emotion among the post's
    labels), ``text``, ``source``, ``author``, ``labels``, ``top_scores`` (three highest emotions), ``id``.
    Returns the frame and the number of malformed members skipped.
    """
    members = _guard(client.zrangebyscore, schema.posts_key(alert["brand"]), int(alert["window_start"]),
                     int(alert["window_end"]))
    posts, malformed = _parse_members(members)
    frame, bad = post_rows(posts, alert["emotion"])
    malformed += bad
    if not frame.empty:
        frame = frame.sort_values(["labelled", "score"], ascending=False).head(limit).reset_index(drop=True)
    return frame, malformed


ESTIMATE_COLUMNS = ["brand", "emotion", "scope", "ts", "share", "adjusted", "prior", "window_posts"]


def stream_estimates(client: redis.Redis, brands: list[str], end_ms: int, lookback_ms: int = DAY) -> pd.DataFrame:
    """Per brand and emotion, the monitor's latest stream-prior estimate at or before ``end_ms`` (no older than
    ``lookback_ms``; :mod:`monitor.priors`): ``share`` (raw: posts at or above threshold / posts over the estimate's
    window), ``adjusted`` (that share corrected for this stream: adjusted classify-and-count; NaN where the monitor
    wrote none), ``prior`` (the EM estimate), ``window_posts`` and ``ts`` (the window's last minute).

    ``scope`` is ``brand`` where the brand had enough posts for its own estimate, else ``all brands``: the rows then
    hold the estimate over every brand's posts together (not this brand's share), or nothing when there is none.
    Derived estimates, not exactly-once counts (see :mod:`monitor.schema`).
    """
    if not brands:
        return pd.DataFrame(columns=ESTIMATE_COLUMNS)
    scopes = [*brands, schema.ALL_BRANDS]
    pipe = client.ts().pipeline(transaction=False)
    for scope in scopes:
        pipe.mrevrange(max(0, end_ms - lookback_ms), end_ms,
                       [f"app={schema.APP_LABEL}", f"brand={scope}", f"tier={schema.ESTIMATE_TIER}"],
                       count=1, with_labels=True)
    replies = _guard(pipe.execute)
    latest: dict[str, dict[str, dict[str, tuple[int, float]]]] = {}
    for scope, reply in zip(scopes, replies):
        if not isinstance(reply, list):
            raise QueryError(f"unexpected TS.MREVRANGE reply of type {type(reply).__name__}")
        per_emotion: dict[str, dict[str, tuple[int, float]]] = {}
        for series in reply:
            for _key, (labels, samples) in series.items():
                if samples and labels.get("metric") in schema.ESTIMATE_METRICS:
                    ts, value = samples[0]
                    per_emotion.setdefault(labels.get("emotion", ""), {})[labels["metric"]] = (int(ts), float(value))
        latest[scope] = per_emotion
    rows = []
    for brand in brands:
        own = latest.get(brand, {})
        scope, source = ("brand", own) if own else ("all brands", latest.get(schema.ALL_BRANDS, {}))
        window = source.get(schema.ALL_EMOTIONS, {}).get("window_posts")
        for emotion, metrics in sorted(source.items()):
            if emotion == schema.ALL_EMOTIONS or "prior" not in metrics:
                continue
            rows.append((brand, emotion, scope, metrics["prior"][0],
                         *(metrics[m][1] if m in metrics else math.nan for m in ("share", "adjusted", "prior")),
                         window[1] if window else math.nan))
    return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
