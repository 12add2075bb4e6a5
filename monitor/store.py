"""The Redis sink: TimeSeries counts and mean scores per brand x emotion, recent posts, brands — written idempotently.

Delivery guarantee: each post is counted at most once per idempotency marker lifetime, however often Kafka delivers
it. One Lua script per post sets ``em:seen:{id}`` (``SET NX``) and, only if that succeeded, writes every sample
(``TS.ADD ... ON_DUPLICATE SUM``), the recent-post entry and the brand — all inside one atomic script, so a crash can
never leave a post half counted. Combined with at-least-once delivery from Kafka (offsets committed only after
:meth:`RedisStore.write` returns) every post is counted exactly once.

Series are created with labels (``r.ts().create``) and compaction rules raw -> 1m -> 1h (``r.ts().createrule``,
SUM) before the first sample of a brand is written; see :mod:`monitor.schema` for the keys and labels.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor import schema
from monitor.post import Post
from monitor.settings import MonitorSettings

__all__ = ["ClassifiedPost", "RedisStore", "RedisUnavailable"]

log = logging.getLogger(__name__)

RedisUnavailable = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

# KEYS: 1 seen marker, 2 brands set, 3..2+n recent-post zsets (one per brand), then the series keys.
# ARGV: 1 marker ttl ms, 2 timestamp ms, 3 n brands, 4 post JSON, 5 recent bound, 6..5+n brand names,
#       then one value per series key (same order as the keys).
_WRITE_POST = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return {0, 0}
end
local n = tonumber(ARGV[3])
local ts = ARGV[2]
local bound = tonumber(ARGV[5])
local errors = 0
for i = 1, n do
  redis.call('SADD', KEYS[2], ARGV[5 + i])
  redis.call('ZADD', KEYS[2 + i], ts, ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[2 + i], 0, -(bound + 1))
end
for k = 3 + n, #KEYS do
  local ok = redis.pcall('TS.ADD', KEYS[k], ts, ARGV[3 + k], 'ON_DUPLICATE', 'SUM')
  if type(ok) == 'table' and ok.err then errors = errors + 1 end
end
return {1, errors}
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
        self._script = self.redis.register_script(_WRITE_POST)
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
        """After a Redis outage the server may have lost data: check the series again before writing."""
        self._ready_brands.clear()

    # ------------------------------------------------------------------ writes

    async def write(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list[bool]:
        """Count each post once (atomic check-and-write); returns, per post, whether it was new."""
        for brand in {b for item in posts for b in item.post.brands}:
            await self.ensure_brand(brand)
        s = self.settings
        pipe = self.redis.pipeline(transaction=False)
        for item in posts:
            brands = item.post.brands
            keys = [schema.seen_key(item.post.id), schema.BRANDS_KEY] + [schema.posts_key(b) for b in brands]
            values: list[str] = []
            for brand in brands:
                for j, emotion in enumerate(self.emotions):
                    score = item.scores[emotion]
                    if score >= thresholds[j]:  # a zero adds nothing to a SUM: skip it (half the writes)
                        keys.append(schema.series_key(brand, emotion, "count"))
                        values.append("1")
                    keys.append(schema.series_key(brand, emotion, "score"))
                    values.append(repr(round(score, 6)))
                keys.append(schema.series_key(brand, schema.ALL_EMOTIONS, "posts"))
                values.append("1")
            args = [s.seen_ttl_ms, item.post.created_at, len(brands), item.to_json(), s.recent_posts_per_brand]
            await self._script(keys=keys, args=[*args, *brands, *values], client=pipe)
        results = await pipe.execute()
        fresh = []
        for item, (written, errors) in zip(posts, results):
            if errors:
                log.warning("post %s: %d samples refused (older than retention?)", item.post.id, errors)
            fresh.append(bool(written))
        return fresh

    async def write_with_retry(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list[bool]:
        """:meth:`write`, retried with exponential back-off for as long as Redis is unreachable (never dropped)."""
        delay = self.settings.redis_retry_initial
        while True:
            try:
                return await self.write(posts, thresholds)
            except RedisUnavailable as exc:
                log.warning("Redis unavailable (%s); retrying %d posts in %.1f s", exc, len(posts), delay)
                self.forget_series_cache()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.redis_retry_max)

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
        that range and the idempotency markers of ``post_ids``. Returns the number of markers removed."""
        raw_keys = await self.redis.ts().queryindex([f"app={schema.APP_LABEL}", "tier=raw"])
        for key in raw_keys:
            try:
                await self.redis.ts().delete(key, start_ms, end_ms)
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
