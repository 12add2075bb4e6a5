"""The Redis sink: TimeSeries counts and mean scores per brand x emotion, recent posts, brands — written idempotently.

Delivery guarantee: each post is counted at most once per idempotency marker lifetime, however often Kafka delivers
it. One Lua script call per micro-batch sets each post's ``em:seen:{id}`` (``SET NX``) and, only for the posts where
that succeeded, adds their samples — summed per series and ``raw_bucket_ms`` bucket, ``TS.ADD ... ON_DUPLICATE SUM``
— their recent-post entries and their brands, all inside one atomic script, so a crash can never leave a post half
counted. Combined with at-least-once delivery from Kafka (offsets committed only after :meth:`RedisStore.write`
returns) every post is counted exactly once.

Series are created with labels (``r.ts().create``) and compaction rules raw -> 1m -> 1h (``r.ts().createrule``,
SUM) before the first sample of a brand is written; see :mod:`monitor.schema` for the keys and labels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from monitor import schema
from monitor.post import Post
from monitor.metrics import METRICS
from monitor.retry import Backoff, RedisUnavailable, is_redis_outage
from monitor.settings import MonitorSettings

__all__ = ["ClassifiedPost", "RedisStore", "RedisUnavailable"]

log = logging.getLogger(__name__)


# One call per micro-batch. Why aggregate inside the script: ~30 TS.ADD per post made Redis (not the model) the
# worker's bottleneck on a GPU; summing a batch's samples per series x raw bucket first turns them into ~60 TS.ADD
# per brand and bucket. The aggregation must happen after each post's SET NX, in the same atomic call, or a crash
# between "marked" and "written" would lose the post.
#
# KEYS: 1 brands set, then n_brands blocks of the brand's series keys (count, score per emotion, then posts: the
#       RedisStore._series order), then n_brands recent-post zsets, then one seen marker per post.
# ARGV: 1 marker ttl ms, 2 recent bound, 3 n emotions, 4 n_brands, 5 n_posts, 6..5+n_brands brand names, then per post
#       5 values: raw bucket ms, created_at ms, post JSON, its brand numbers (1-based, comma separated), and its
#       scores as n emotions little-endian doubles, each followed by one byte '1' (at or above threshold) or '0'.
# Why packed bytes: ~60 separate arguments per post made redis-py's encoding cost more than the script itself.
# Returns {status, refused samples, fresh flag per post}; status -1 = a brand's series are missing (Redis lost its
# data since they were created): nothing was written, the caller recreates them and calls again.
_WRITE_BATCH = """
local ttl, bound = ARGV[1], tonumber(ARGV[2])
local n_emotions, n_brands, n_posts = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local per_brand = 2 * n_emotions + 1
local zsets, seen = 1 + per_brand * n_brands, 1 + per_brand * n_brands + n_brands
for b = 1, n_brands do
  if redis.call('EXISTS', KEYS[1 + per_brand * b]) == 0 then return {-1, b} end
end
local result = {1, 0}
local sums, touched = {}, {}
local function add(k, bucket, value)
  local per = sums[k]
  if not per then per = {}; sums[k] = per end
  per[bucket] = (per[bucket] or 0) + value
end
local a = 6 + n_brands
for p = 1, n_posts do
  local bucket, created, body, brands, scores = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  a = a + 5
  local fresh = redis.call('SET', KEYS[seen + p], '1', 'NX', 'PX', ttl)
  result[2 + p] = fresh and 1 or 0
  if fresh then
    for b in string.gmatch(brands, '%d+') do
      b = tonumber(b)
      redis.call('ZADD', KEYS[zsets + b], created, body)
      touched[b] = true
      local base = 1 + per_brand * (b - 1)  -- KEYS index before the brand's first series
      local pos = 1
      for j = 1, n_emotions do
        local score
        score, pos = struct.unpack('<d', scores, pos)
        if string.byte(scores, pos) == 49 then add(base + 2 * j - 1, bucket, 1) end
        add(base + 2 * j, bucket, score)
        pos = pos + 1
      end
      add(base + per_brand, bucket, 1)
    end
  end
end
for b in pairs(touched) do
  redis.call('SADD', KEYS[1], ARGV[5 + b])
  redis.call('ZREMRANGEBYRANK', KEYS[zsets + b], 0, -(bound + 1))
end
for k, per in pairs(sums) do
  for ts, value in pairs(per) do
    local ok = redis.pcall('TS.ADD', KEYS[k], ts, string.format('%.17g', value), 'ON_DUPLICATE', 'SUM')
    if type(ok) == 'table' and ok.err then result[2] = result[2] + 1 end
  end
end
return result
"""


@dataclass(frozen=True)
class ClassifiedPost:
    """A post with its probabilities and the emotions at or above threshold."""

    post: Post
    scores: dict[str, float]
    labels: list[str]
    model_version: str

    @classmethod
    def from_probabilities(cls, post: Post, probabilities: Sequence[float], emotions: Sequence[str],
                           thresholds: Sequence[float], model_version: str) -> "ClassifiedPost":
        """One row of model probabilities (in ``emotions`` order) -> scores and the emotions at or above threshold."""
        return cls(
            post,
            {name: float(probabilities[j]) for j, name in enumerate(emotions)},
            [name for j, name in enumerate(emotions) if probabilities[j] >= thresholds[j]],
            model_version,
        )

    def to_json(self) -> str:
        """The JSON of the recent-posts store and of ``posts.classified`` (built once: both use it)."""
        return self._json

    @cached_property
    def _json(self) -> str:  # cached_property writes __dict__ directly, so it works on a frozen dataclass
        body = self.post.to_dict() | {
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "labels": self.labels,
            "model_version": self.model_version,
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


class RedisStore:
    """Owns the asyncio Redis client; every method raises ``RedisUnavailable`` members when Redis is down."""

    def __init__(self, settings: MonitorSettings, emotions: Sequence[str]):
        self.settings = settings
        self.emotions = list(emotions)
        self.redis = aioredis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        self._script = self.redis.register_script(_WRITE_BATCH)
        self._ready_brands: set[str] = set()
        # (emotion, metric) of every series a brand has: the same list for every brand
        self._series = [(emotion, metric) for emotion in self.emotions for metric in ("count", "score")]
        self._series.append((schema.ALL_EMOTIONS, "posts"))

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisUnavailable:
            return False

    # ------------------------------------------------------------------ series creation

    async def _create(self, key: str, retention: int, labels: dict[str, str]) -> None:
        try:
            await self.redis.ts().create(key, retention_msecs=retention, labels=labels, duplicate_policy="sum")
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    async def _has_rules(self, raw_key: str) -> bool:
        try:
            return len((await self.redis.ts().info(raw_key)).rules) >= 2
        except ResponseError:  # no such key yet
            return False

    async def ensure_brand(self, brand: str) -> None:
        """Create the brand's raw series and their 1m/1h compactions (idempotent; cached per process)."""
        if brand in self._ready_brands:
            return
        s = self.settings
        retention = {"raw": s.retention_raw_ms, "1m": s.retention_1m_ms, "1h": s.retention_1h_ms}
        for emotion, metric in self._series:
            raw_key = schema.series_key(brand, emotion, metric)
            if await self._has_rules(raw_key):
                continue  # created, rules included, by this or another worker
            for tier in ("raw", "1m", "1h"):
                await self._create(
                    schema.series_key(brand, emotion, metric, tier),
                    retention[tier],
                    schema.series_labels(brand, emotion, metric, tier),
                )
            for tier, bucket in (("1m", schema.TIERS["1m"]), ("1h", schema.TIERS["1h"])):
                try:
                    await self.redis.ts().createrule(raw_key, schema.series_key(brand, emotion, metric, tier), "sum", bucket)
                except ResponseError as exc:
                    if "already" not in str(exc) and "exists" not in str(exc):
                        raise
        self._ready_brands.add(brand)

    def forget_series_cache(self) -> None:
        """The server lost the series this process created (the write script noticed): check them all again."""
        self._ready_brands.clear()

    # ------------------------------------------------------------------ writes

    async def write(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list[bool]:
        """Count each post once (atomic check-and-write of the whole batch); returns, per post, whether it was new."""
        if not posts:
            return []
        brands = sorted({b for item in posts for b in item.post.brands})
        for brand in brands:
            await self.ensure_brand(brand)
        keys, args = self._batch_call(posts, brands, thresholds)
        reply = await self._script(keys=keys, args=args)
        if reply[0] == -1:  # the server lost the brand's series (FLUSHALL, restart without persistence)
            log.warning("series of brand %r are gone from Redis; recreating them", brands[reply[1] - 1])
            self.forget_series_cache()
            for brand in brands:
                await self.ensure_brand(brand)
            reply = await self._script(keys=keys, args=args)
            if reply[0] == -1:
                raise RuntimeError(f"series of brand {brands[reply[1] - 1]!r} vanish as soon as they are created")
        if reply[1]:
            log.warning("%d aggregated samples refused (older than retention?)", reply[1])
        return [bool(flag) for flag in reply[2:]]

    def _batch_call(self, posts: Sequence[ClassifiedPost], brands: list[str],
                    thresholds: np.ndarray) -> tuple[list[str], list]:
        """KEYS and ARGV of :data:`_WRITE_BATCH` (layout documented there)."""
        s = self.settings
        number = {brand: str(i + 1) for i, brand in enumerate(brands)}
        keys = [schema.BRANDS_KEY]
        for brand in brands:
            keys += [schema.series_key(brand, emotion, metric) for emotion, metric in self._series]
        keys += [schema.posts_key(brand) for brand in brands]
        keys += [schema.seen_key(item.post.id) for item in posts]
        args: list = [s.seen_ttl_ms, s.recent_posts_per_brand, len(self.emotions), len(brands), len(posts), *brands]
        scores = np.array([[item.scores[e] for e in self.emotions] for item in posts], dtype="<f8")
        packed = np.empty((len(posts), len(self.emotions)), dtype=[("score", "<f8"), ("above", "u1")])
        packed["score"] = scores
        packed["above"] = np.where(scores >= np.asarray(thresholds, dtype=np.float64), ord("1"), ord("0"))
        bucket_ms = s.raw_bucket_ms
        for item, row in zip(posts, packed):
            created = item.post.created_at
            args += (created - created % bucket_ms, created, item.to_json(),
                     ",".join(number[b] for b in item.post.brands), row.tobytes())
        return keys, args

    async def write_with_retry(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list[bool]:
        """:meth:`write`, retried with exponential back-off for as long as Redis is unreachable or refuses writes
        (OOM, READONLY, MISCONF, LOADING, BUSY, ...: :func:`monitor.retry.is_redis_outage`); never dropped.

        Only the write is retried, not the batch (its classification stands). A Redis that comes back empty is
        handled by :meth:`write` itself: its script reports missing series and they are recreated."""
        backoff = Backoff(self.settings.redis_retry_initial, self.settings.redis_retry_max)
        while True:
            try:
                return await self.write(posts, thresholds)
            except Exception as exc:
                if not is_redis_outage(exc):
                    raise
                METRICS.redis_down(exc)  # em_redis_up 0 and /health not ok until a write works again
                log.warning("Redis unavailable (%s); retrying %d posts in %.1f s", exc, len(posts), backoff.delay)
                await backoff.wait()

    # ------------------------------------------------------------------ reads and recompute

    async def window_sum(self, key: str, start_ms: int, end_ms: int) -> float:
        """Sum of a series' samples in ``[start_ms, end_ms]`` (0 when missing)."""
        try:
            rows = await self.redis.ts().range(
                key, start_ms, end_ms, aggregation_type="sum", bucket_size_msec=max(1, end_ms - start_ms + 1),
                align=start_ms,
            )
        except ResponseError:
            return 0.0
        return float(sum(value for _, value in rows))

    async def clear(self, start_ms: int, end_ms: int, post_ids: Iterable[str]) -> int:
        """Recompute support: delete raw samples in ``[start_ms, end_ms]`` (compactions follow), the recent posts in
        that range and the idempotency markers of ``post_ids``. Returns the number of markers removed.

        Raw samples are per ``raw_bucket_ms`` bucket, so the sample range widens to whole buckets: a post outside
        ``post_ids`` counted in an edge bucket (at most one bucket each side) is cleared with it — replay whole spans."""
        bucket = self.settings.raw_bucket_ms
        samples_from, samples_to = start_ms - start_ms % bucket, end_ms - end_ms % bucket + bucket - 1
        raw_keys = await self.redis.ts().queryindex([f"app={schema.APP_LABEL}", "tier=raw"])
        for key in raw_keys:
            try:
                await self.redis.ts().delete(key, samples_from, samples_to)
            except ResponseError as exc:
                log.warning("TS.DEL %s: %s", key, exc)
        for brand in await self.redis.smembers(schema.BRANDS_KEY):
            await self.redis.zremrangebyscore(schema.posts_key(brand), start_ms, end_ms)
        removed = 0
        ids = list(post_ids)
        for start in range(0, len(ids), 500):
            chunk = [schema.seen_key(i) for i in ids[start:start + 500]]
            if chunk:
                removed += await self.redis.delete(*chunk)
        return removed
