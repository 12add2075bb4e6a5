"""The Redis key and label schema shared by the monitor (writer) and the dashboard (reader) — the one place it is defined.

TimeSeries (one per brand x emotion x metric, plus one per brand for the total), all under the ``em:`` prefix:

==========================================  ==============================================================================
key                                         meaning
==========================================  ==============================================================================
``em:ts:{brand}:{emotion}:count``           1 per post whose probability for ``emotion`` is at or above its threshold
                                            (posts below it add no sample: a missing sample counts 0)
``em:ts:{brand}:{emotion}:score``           the post's probability for ``emotion`` (sum it, divide by ``posts``: mean)
``em:ts:{brand}:_all:posts``                1 per post mentioning ``brand`` (the denominator for shares and means)
``em:ts:{brand}:{grouping}:{group}:count``  1 per post with at least one emotion of the group at or above threshold
                                            (``sentiment:negative``, ``ekman:anger``: every Ekman / sentiment group
                                            of 2+ emotions, :mod:`monitor.taxonomy`); ``...:score``: the highest
                                            member score. A group's share of posts cannot be derived from the
                                            per-emotion series (a post with two of its emotions would count twice)
``...:{metric}:1m`` / ``...:{metric}:1h``   the same sums per 1-minute / 1-hour bucket (written by the same
                                            script as the raw series, not by compaction rules)
==========================================  ==============================================================================

Every series carries the labels ``app=emotion-monitor``, ``brand``, ``emotion`` (``_all`` for posts), ``metric``
(``count`` | ``score`` | ``posts``) and ``tier`` (``raw`` | ``1m`` | ``1h``). Readers always filter on ``tier`` so a
tier is never counted together with another (TS.MRANGE would otherwise double count; see docs/platform.md). A post is in every tier whose
retention covers its age: a post older than raw retention is only in the 1m/1h tiers.
A dashboard query for a brand is therefore one call, aggregated on the server, with no key scans::

    TS.MRANGE from to AGGREGATION sum 60000 FILTER app=emotion-monitor brand=acme metric=count tier=1m GROUPBY emotion REDUCE sum

Raw samples are sums per ``EM_MONITOR_RAW_BUCKET_MS`` bucket (1 s by default; 1 = the post's own millisecond), at the
bucket's start, written with ``ON_DUPLICATE SUM``: posts of the same bucket add up (one sample per series and second
however busy the brand), and an out-of-order (replayed) post is accepted, which ``TS.INCRBY`` would reject.

Other keys:

Estimate series (:mod:`monitor.priors`; derived from the classifier's probabilities by one worker's in-memory
aggregates, NOT exactly-once counts: a worker restart loses its open window, and with several workers each writes the
estimate over the posts it saw, last writer per minute wins):

==========================================  ==============================================================================
``em:ts:{brand}:{emotion}:prior``           EM estimate of the emotion's prevalence in the brand's stream over the rolling
                                            window ``EM_MONITOR_PRIOR_WINDOW_MS`` ending at the sample's minute
``em:ts:{brand}:{emotion}:adjusted``        adjusted classify-and-count share over that window: ``(share - fpr) /
                                            (tpr - fpr)``, clipped to [0, 1]
``em:ts:{brand}:{emotion}:share``           the raw share it corrects: posts at or above threshold / posts, same window
``em:ts:{brand}:_all:window_posts``         posts in that window (how much the estimate rests on)
==========================================  ==============================================================================

``{brand}`` is ``_all`` for the estimate over every brand's posts together (each post once); a brand gets its own
estimates only with ``EM_MONITOR_PRIOR_MIN_POSTS`` posts in the window. Labels: ``app``, ``brand``, ``emotion``,
``metric`` (``prior`` | ``adjusted`` | ``share`` | ``window_posts``) and ``tier=estimate``, so no count query (which filters on
``tier=raw|1m|1h``) ever sees them. One sample per minute (``ON_DUPLICATE LAST``: a later re-estimate of the same
minute replaces it), kept as long as the 1-minute tier.

* ``em:seen:{post_id}`` (string, TTL = ``EM_MONITOR_SEEN_TTL_MS``, at least raw retention): the idempotency marker. A post is counted only by the atomic
  Lua script (one call per batch) that sets this marker *and* adds its samples, so a redelivered post is never
  counted twice.
* ``em:brands`` (set): every brand seen — the dashboard's brand selector. ``em:brands:new:{minute}`` (string, TTL
  2 min): brands admitted in that minute, for ``EM_MONITOR_MAX_NEW_BRANDS_PER_MINUTE``.
* ``em:recompute:fence`` (string ``token from_ms to_ms``, TTL 2 min, refreshed): a recompute is clearing and
  recounting that ``created_at`` span; workers wait with posts inside it.
* ``em:posts:{brand}`` (sorted set, score = created_at ms, member = JSON of the classified post): the bounded store
  of recent posts behind a spike and of the dashboard's post explorer; ``ZRANGEBYSCORE`` by time range. Bounded by
  count (``EM_MONITOR_RECENT_POSTS_PER_BRAND``, in the write script) and by age (``EM_MONITOR_RECENT_POSTS_MAX_AGE_MS``
  before the newest post, trimmed right after each write).
  Post JSON fields: ``id``, ``text``, ``brands``, ``created_at`` (ms), ``source``, ``author``, ``scores``
  (emotion -> probability), ``labels`` (emotions at or above threshold), ``model_version``; ``source``, ``lang``,
  ``author`` and ``url`` only when the post had them. The same JSON is the value of the ``posts.classified`` topic.
* ``em:alerts`` (sorted set, score = alert time ms, member = JSON of the alert): the alert timeline.
  Alert JSON fields: ``brand``, ``emotion``, ``ts`` (ms), ``window_start`` / ``window_end`` (ms, the spike's window;
  its posts are ``ZRANGEBYSCORE em:posts:{brand} window_start window_end``), ``value`` (the emotion's share of the
  window's posts), ``baseline`` (its share in the baseline before), ``count`` (posts with the emotion in the
  window), ``posts`` (all posts in the window), ``message``, ``model_version``, ``evidence`` (the window's
  ``EM_MONITOR_ALERT_EVIDENCE_POSTS`` posts with the highest score for the emotion, as post JSON objects, snapshotted
  when the alert fired: the alert keeps its evidence after the recent-posts store has dropped the posts).
  Lifecycle fields (each record is one transition of an episode; absent in alerts stored before the lifecycle, which
  read as ``open``): ``id`` (the episode's, shared by its records), ``status`` (``open``, ``updated``,
  ``resolved``), ``opened_at`` / ``updated_at`` / ``resolved_at`` (event-time ms; ``resolved_at`` null unless
  resolved), ``peak`` (highest window share of the episode so far), ``effect_ratio`` (window / baseline share, null
  when the baseline share is 0), ``effect_points`` (their difference in points), ``confidence`` (the detector's, null
  when it gives none), ``terms`` (words/hashtags over-represented in the window: ``term``, ``posts``,
  ``baseline_posts``, ``z``). A resolution carries no evidence or terms.
* ``em:alerts:brand:{brand}`` (sorted set, same score and member as ``em:alerts``): the brand's own alert index, so
  the dashboard reads one brand's alerts exactly, however many other brands alert. The alert engine writes it in the
  same atomic step as ``em:alerts``; like ``em:alerts`` it is not trimmed (alerts are rare: an open or update at most
  once per brand x emotion per cooldown, and one resolution per episode).
* ``em:alerts:indexed_since`` (string, ms): the ``ts`` of the first alert written to the brand indexes (``SET NX`` in
  that same transaction). Alerts older than it were stored before the indexes existed and are only in ``em:alerts``;
  readers scan ``em:alerts`` for that older range only. Absent: no alert has been indexed yet.
* ``em:alert:last:{brand}:{emotion}`` (string, TTL = cooldown): the alert cooldown marker (value: the event time of
  the evaluation that claimed it).
* ``em:alert:episode:{brand}:{emotion}`` (hash): the brand x emotion's latest alert episode (:mod:`monitor.alerts`,
  "Lifecycle"): ``id``, ``status`` (``open`` / ``resolved``), ``opened_at`` / ``updated_at`` / ``resolved_at``
  (event-time ms; ``resolved_at`` empty while open), ``peak`` (highest window share seen while open), ``calm``
  (consecutive evaluations back at baseline), ``calm_at`` (event time of the last one), ``version`` (bumped by every
  write, compared by the next: two workers never both move one episode). Written only by one atomic script.
* ``em:brand_queries`` (hash, field = brand name, value = JSON ``{"any": [...], "none": [...], "langs": [...]}``,
  the last two only when set): the brand registry (:mod:`monitor.brands`), written by ``emotion-monitor brands`` and
  the dashboard's Brands page, read by every worker.
* ``em:brand_queries:version`` (integer): bumped in the same transaction as every registry change; workers poll it
  and rebuild their matcher when it moves.
* ``em:unmatched`` (hash, field = input topic, value = integer): posts that brand matching tagged with no brand, so
  were not stored. At-least-once: a batch retried after a failure may add its unmatched posts again.
* Post JSON field ``matched`` (object brand -> term, only when brand matching tagged the post): which query term
  matched each brand it was given.
"""

from __future__ import annotations

__all__ = [
    "ALERTS_INDEXED_SINCE_KEY",
    "ALERTS_KEY",
    "ALL_EMOTIONS",
    "APP_LABEL",
    "BRANDS_KEY",
    "BRAND_QUERIES_KEY",
    "BRAND_QUERIES_VERSION_KEY",
    "UNMATCHED_KEY",
    "ESTIMATE_METRICS",
    "ESTIMATE_TIER",
    "ALL_BRANDS",
    "estimate_key",
    "estimate_labels",
    "METRICS",
    "RECOMPUTE_FENCE_KEY",
    "TIERS",
    "alert_cooldown_key",
    "alert_episode_key",
    "brand_alerts_key",
    "posts_key",
    "seen_key",
    "series_key",
    "series_labels",
]

PREFIX = "em"
APP_LABEL = "emotion-monitor"
ALL_EMOTIONS = "_all"
METRICS = ("count", "score", "posts")
TIERS = {"raw": None, "1m": 60_000, "1h": 3_600_000}
ESTIMATE_METRICS = ("prior", "adjusted", "share", "window_posts")
ESTIMATE_TIER = "estimate"
ALL_BRANDS = "_all"  # no brand can be named this (monitor.post.BRAND_PATTERN: a brand starts with a letter or digit)
BRANDS_KEY = f"{PREFIX}:brands"
BRAND_QUERIES_KEY = f"{PREFIX}:brand_queries"
BRAND_QUERIES_VERSION_KEY = f"{PREFIX}:brand_queries:version"
UNMATCHED_KEY = f"{PREFIX}:unmatched"
ALERTS_KEY = f"{PREFIX}:alerts"
ALERTS_INDEXED_SINCE_KEY = f"{PREFIX}:alerts:indexed_since"
ALERT_RULES_KEY = f"{PREFIX}:alert_rules"  # hash {brand}|{emotion} -> rule JSON (monitor.alert_rules)
ALERT_RULES_VERSION_KEY = f"{PREFIX}:alert_rules:version"  # bumped with every rule change
RECOMPUTE_FENCE_KEY = f"{PREFIX}:recompute:fence"


def series_key(brand: str, emotion: str, metric: str, tier: str = "raw") -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {tuple(TIERS)}")
    base = f"{PREFIX}:ts:{brand}:{emotion}:{metric}"
    return base if tier == "raw" else f"{base}:{tier}"


def series_labels(brand: str, emotion: str, metric: str, tier: str = "raw") -> dict[str, str]:
    return {"app": APP_LABEL, "brand": brand, "emotion": emotion, "metric": metric, "tier": tier}


def estimate_key(brand: str, emotion: str, metric: str) -> str:
    """An estimate series (:mod:`monitor.priors`): ``brand`` may be :data:`ALL_BRANDS`."""
    if metric not in ESTIMATE_METRICS:
        raise ValueError(f"unknown estimate metric {metric!r}; expected one of {ESTIMATE_METRICS}")
    return f"{PREFIX}:ts:{brand}:{emotion}:{metric}"


def estimate_labels(brand: str, emotion: str, metric: str) -> dict[str, str]:
    return {"app": APP_LABEL, "brand": brand, "emotion": emotion, "metric": metric, "tier": ESTIMATE_TIER}


def seen_key(post_id: str) -> str:
    return f"{PREFIX}:seen:{post_id}"


def posts_key(brand: str) -> str:
    return f"{PREFIX}:posts:{brand}"


def brand_alerts_key(brand: str) -> str:
    return f"{PREFIX}:alerts:brand:{brand}"


def alert_cooldown_key(brand: str, emotion: str) -> str:
    return f"{PREFIX}:alert:last:{brand}:{emotion}"


def alert_episode_key(brand: str, emotion: str) -> str:
    return f"{PREFIX}:alert:episode:{brand}:{emotion}"
