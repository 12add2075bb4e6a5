"""The Redis sink: TimeSeries counts and mean scores per brand x emotion, recent posts, brands — written idempotently.

Delivery guarantee: each post is counted at most once per idempotency marker lifetime, however often Kafka delivers
it. One Lua script call per micro-batch sets each post's ``em:seen:{id}`` (``SET NX``) and, only for the posts where
that succeeded, adds their samples to every retention tier (raw, 1m, 1h) that can keep them — summed per series and
tier bucket, ``TS.ADD ... ON_DUPLICATE SUM`` — their recent-post entries and their brands, all inside one atomic
script, so a crash can never leave a post half counted. Combined with at-least-once delivery from Kafka (offsets
committed only after :meth:`RedisStore.write` returns) every post is counted exactly once.

Per post the write reports an outcome: counted now (``True``), already counted (``False``) or refused
(a :class:`monitor.post.PostRejected`: ``too_old`` when no tier's retention covers its age, ``brand_limit`` when it
names a brand beyond the limits). A refused post is never marked seen and never counted; the pipeline dead-letters it.

Why the script writes each tier itself instead of compaction rules: Redis TimeSeries refuses a sample older than a
series' newest sample minus its retention, and compaction rules only see samples the raw series accepted — so a
post older than raw retention was lost from every tier, and the refusal was invisible. Writing each tier directly,
the script first decides per post, brand and tier with Redis' own rule (the tier's newest sample, or the batch's
newest post if later, minus the tier's retention) and writes only where Redis keeps the sample. A tier's newest
bucket is readable at once (a compaction shows a bucket only once it closed).

Series are created with labels (``r.ts().create``); see :mod:`monitor.schema` for keys and labels. Series created by
an earlier version with compaction rules are migrated when first used (:meth:`RedisStore.ensure_brand`).
"""

from __future__ import annotations

import json
import logging
import operator
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import compress

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from monitor import schema
from monitor.metrics import METRICS
from monitor.post import Post, PostRejected
from monitor.retry import REDIS_OUTAGE_ERRORS, Backoff, is_redis_outage
from monitor.settings import MonitorSettings
from monitor.taxonomy import group_series

__all__ = ["ClassifiedPost", "ClearRefused", "RecomputeInProgress", "RedisStore", "TIER_ORDER", "round_scores"]

log = logging.getLogger(__name__)

TIER_ORDER = ("raw", "1m", "1h")

# One call per micro-batch. Why aggregate inside the script: ~30 TS.ADD per post made Redis (not the model) the
# worker's bottleneck on a GPU; summing a batch's samples per series x tier bucket first turns them into ~60 TS.ADD
# per brand, tier and bucket. The aggregation must happen after each post's SET NX, in the same atomic call, or a
# crash between "marked" and "written" would lose the post.
#
# KEYS: 1 brands set, 2 recompute fence, then n_brands blocks of 3 x n_series keys (tier raw, 1m, 1h; in each the
#       brand's series: count, score per emotion, then posts: the RedisStore._series order), then n_brands
#       recent-post zsets, then one seen marker per post.
# ARGV: 1 marker ttl ms, 2 recent bound, 3 n emotions, 4 n_brands, 5 n_posts, 6 fence token (this caller's; '-' for
#       none), 7..9 retention of raw, 1m, 1h (0 = forever), 10..12 bucket width of raw, 1m, 1h, 13..12+n_brands brand
#       names, then 5 values for the whole batch, post after post in each: created_at ms as little-endian doubles
#       (exact below 2^53), each post's brand numbers (1-based, comma separated, each list ended by ';'), the post
#       JSONs back to back, where each JSON ends (little-endian doubles: the end offset in that string), and the
#       scores: per post n emotions little-endian doubles, each followed by one byte '1' (at or above threshold) or '0'.
# Why packed bytes: ~60 separate arguments per post made redis-py's encoding cost more than the script itself, and
# 4 per post still cost ~5 µs per post (one packed argument per batch and field: a few µs per batch).
# Returns {status, refused samples, first refusal, outcome per post: 1 counted, 0 already counted, 2 too old}.
# status -1 = a brand's series are missing (Redis lost its data since they were created): nothing was written, the
# caller recreates them and calls again. status -2 = a post lies in the span a recompute (another fence token) is
# clearing and recounting: nothing was written, the caller waits until the recompute ends.
_WRITE_BATCH = """
local ttl, bound = ARGV[1], tonumber(ARGV[2])
local n_emotions, n_brands, n_posts = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local token = ARGV[6]
local retention = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local width = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])}
local n_series = 2 * n_emotions + 1
local per_brand = 3 * n_series
local zsets = 2 + per_brand * n_brands
local seen = zsets + n_brands
local first = 13 + n_brands
local created_of, brands_of, bodies, ends, scores = {}, {}, ARGV[first + 2], ARGV[first + 3], ARGV[first + 4]
for p = 1, n_posts do created_of[p] = struct.unpack('<d', ARGV[first], 8 * (p - 1) + 1) end
for list in string.gmatch(ARGV[first + 1], '([^;]*);') do brands_of[#brands_of + 1] = list end
local record = 9 * n_emotions
local function key(b, t, j) return 2 + per_brand * (b - 1) + n_series * (t - 1) + j end
for b = 1, n_brands do
  for t = 1, 3 do
    if redis.call('EXISTS', KEYS[key(b, t, n_series)]) == 0 then return {-1, b} end
  end
end
local newest_post = 0
for p = 1, n_posts do
  local created = created_of[p]
  if created > newest_post then newest_post = created end
end
local fence = redis.call('GET', KEYS[2])
if fence then
  local owner, lo, hi = string.match(fence, '^(%S+) (%-?%d+) (%-?%d+)$')
  if owner ~= token then
    lo, hi = tonumber(lo), tonumber(hi)
    for p = 1, n_posts do
      local created = created_of[p]
      if created >= lo and created <= hi then return {-2, p} end
    end
  end
end
-- the oldest sample each brand's tier keeps: Redis refuses a sample older than the series' newest minus retention;
-- the posts series has every bucket the brand's other series have, and this batch may move it up to newest_post
local oldest = {}
for b = 1, n_brands do
  oldest[b] = {}
  for t = 1, 3 do
    if retention[t] == 0 then
      oldest[b][t] = -math.huge
    else
      local last = redis.call('TS.GET', KEYS[key(b, t, n_series)])
      local newest = newest_post
      if last[1] and tonumber(last[1]) > newest then newest = tonumber(last[1]) end
      oldest[b][t] = newest - retention[t]
    end
  end
end
local result = {1, 0, ''}
local sums, touched = {}, {}
local function add(k, bucket, value)
  local per = sums[k]
  if not per then per = {}; sums[k] = per end
  per[bucket] = (per[bucket] or 0) + value
end
local score, above, buckets, groups = {}, {}, {}, {}
local body_start = 1
for p = 1, n_posts do
  local created, brands = created_of[p], brands_of[p]
  local body_end = struct.unpack('<d', ends, 8 * (p - 1) + 1)
  local body = string.sub(bodies, body_start, body_end)
  body_start = body_end + 1
  for t = 1, 3 do buckets[t] = created - created % width[t] end
  local plan, keep = {}, true
  for b in string.gmatch(brands, '%d+') do
    b = tonumber(b)
    local tiers = {}
    for t = 1, 3 do
      if buckets[t] >= oldest[b][t] then tiers[#tiers + 1] = t end
    end
    if #tiers == 0 then keep = false; break end
    plan[#plan + 1] = {b, tiers}
  end
  if not keep then
    result[3 + p] = 2
  else
    local fresh = redis.call('SET', KEYS[seen + p], '1', 'NX', 'PX', ttl)
    result[3 + p] = fresh and 1 or 0
    if fresh then
      local pos = record * (p - 1) + 1
      for j = 1, n_emotions do
        score[j], pos = struct.unpack('<d', scores, pos)
        above[j] = string.byte(scores, pos) == 49
        pos = pos + 1
      end
      for _, entry in ipairs(plan) do
        local b, tiers = entry[1], entry[2]
        redis.call('ZADD', KEYS[zsets + b], created, body)
        touched[b] = true
        -- summed once per brand, tiers and buckets, spread over the tiers after the loop (not once per tier here)
        local gk = b .. ':' .. table.concat(tiers, '') .. ':' .. buckets[1] .. ':' .. buckets[2] .. ':' .. buckets[3]
        local g = groups[gk]
        if not g then
          g = {b = b, tiers = tiers, buckets = {buckets[1], buckets[2], buckets[3]}, v = {}}
          for j = 1, n_series do g.v[j] = 0 end
          groups[gk] = g
        end
        local v = g.v
        for j = 1, n_emotions do
          if above[j] then v[2 * j - 1] = v[2 * j - 1] + 1 end
          v[2 * j] = v[2 * j] + score[j]
        end
        v[n_series] = v[n_series] + 1
      end
    end
  end
end
for _, g in pairs(groups) do
  for _, t in ipairs(g.tiers) do
    local bucket = g.buckets[t]
    for j = 1, n_series do
      -- a count series gets no sample where no post reached the threshold (a missing sample counts 0)
      if g.v[j] ~= 0 or j % 2 == 0 then add(key(g.b, t, j), bucket, g.v[j]) end
    end
  end
end
for b in pairs(touched) do
  redis.call('SADD', KEYS[1], ARGV[12 + b])
  redis.call('ZREMRANGEBYRANK', KEYS[zsets + b], 0, -(bound + 1))
end
-- TS.ADD with an explicit ON_DUPLICATE SUM (not TS.MADD, which applies whatever duplicate policy the series has:
-- a series created elsewhere with LAST would silently overwrite a bucket instead of adding to it)
for k, per in pairs(sums) do
  for ts, value in pairs(per) do
    local ok = redis.pcall('TS.ADD', KEYS[k], string.format('%d', ts), string.format('%.17g', value),
                           'ON_DUPLICATE', 'SUM')
    if type(ok) == 'table' and ok.err then
      result[2] = result[2] + 1
      if result[3] == '' then result[3] = KEYS[k] .. ' @' .. string.format('%d', ts) .. ': ' .. ok.err end
    end
  end
end
return result
"""

# A new brand is admitted once, by every worker together: the allow-list is checked in Python, the count and rate
# limits here, atomically with adding the brand to the brand set (so two workers cannot both take the last place).
# KEYS: 1 brands set, 2 this minute's new-brand counter. ARGV: 1 brand, 2 max brands (0 = none), 3 max per minute
# (0 = none). Returns 1 admitted (new or known), 0 over the brand limit, 2 over the rate limit.
_ADMIT_BRAND = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
local max_brands, max_rate = tonumber(ARGV[2]), tonumber(ARGV[3])
if max_brands > 0 and redis.call('SCARD', KEYS[1]) >= max_brands then return 0 end
if max_rate > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= max_rate then return 2 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 120000)
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# One-time migration of a series created by an earlier version with compaction rules raw -> tier: drop the rule
# and add the bucket the rule had not closed yet (a compaction writes a bucket only when a later one starts), in one
# atomic call so no sample is lost or doubled. KEYS: 1 raw series, 2 tier series. ARGV: 1 bucket width.
# Returns 1 migrated, 0 when the rule was already gone (another worker migrated it).
_DROP_RULE = """
local ok = redis.pcall('TS.DELETERULE', KEYS[1], KEYS[2])
if type(ok) == 'table' and ok.err then return 0 end
local last = redis.call('TS.GET', KEYS[1])
if not last[1] then return 1 end
local width = tonumber(ARGV[1])
local start = tonumber(last[1]) - tonumber(last[1]) % width
local rows = redis.call('TS.RANGE', KEYS[1], string.format('%d', start), '+')
local total = 0
for _, row in ipairs(rows) do
  local value = row[2]
  if type(value) == 'table' then value = value.ok end  -- a simple-string reply reaches Lua as {ok = ...}
  total = total + tonumber(value)
end
if #rows > 0 then
  redis.call('TS.ADD', KEYS[2], string.format('%d', start), string.format('%.17g', total), 'ON_DUPLICATE', 'SUM')
end
return 1
"""

# The recompute fence: "token lo hi" while a recompute clears and recounts [lo, hi] (expires if it crashes)
# One alert lifecycle transition of a brand x emotion, all or nothing (monitor.alerts): compare the episode's version
# with the one the caller read (another worker moved it: nothing is written), optionally claim the cooldown, store the
# alert JSON in the timeline and the brand's index, write the episode's new state. The type checks come before the
# first write because a script is not rolled back when a command fails halfway.
# KEYS: 1 episode hash, 2 cooldown marker, 3 all-brands alerts zset, 4 the brand's alerts zset, 5 indexed-since marker
# ARGV: 1 expected version ('' = no episode yet), 2 cooldown value ('' = claim none), 3 cooldown ms, 4 alert JSON
# ('' = store none), 5 alert ts, 6.. field, value pairs of the episode's new state.
# Returns 1 written, 0 the episode moved or the cooldown is taken (nothing written).
_ALERT_TRANSITION = """
local want = {'hash', 'string', 'zset', 'zset', 'string'}
for i = 1, 5 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= want[i] then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ' .. want[i])
  end
end
local version = redis.call('HGET', KEYS[1], 'version') or ''
if version ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
  redis.call('SET', KEYS[5], ARGV[5], 'NX')
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
return 1
"""

_FENCE_TTL_MS = 120_000


class RecomputeInProgress(Exception):
    """A post of the batch lies in the span a recompute is clearing and recounting: wait, then write."""


class ClearRefused(RuntimeError):
    """Redis refused to delete samples that a recompute must clear; nothing else (markers included) was touched
    after the refusal."""


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
        # Python floats (exact copies of float32 values) compare as the arrays would, without a numpy scalar each
        values = probabilities.tolist() if hasattr(probabilities, "tolist") else [float(p) for p in probabilities]
        limits = thresholds.tolist() if hasattr(thresholds, "tolist") else list(thresholds)
        return cls(
            post,
            dict(zip(emotions, values)),
            [name for name, value, limit in zip(emotions, values, limits) if value >= limit],
            model_version,
        )

    @classmethod
    def many(cls, posts: Sequence[Post], probabilities, emotions: Sequence[str], thresholds: Sequence[float],
             model_version: str) -> list["ClassifiedPost"]:
        """:meth:`from_probabilities` for a whole batch (row ``i`` of ``probabilities`` is ``posts[i]``), each post's
        JSON built at once: the same objects and the same JSON, but the thresholds and the 4-digit rounding run once
        over the batch's matrix instead of once per score in Python (which cost ~20 µs per post)."""
        matrix = np.asarray(probabilities)
        if matrix.ndim != 2 or len(matrix) != len(posts):
            raise ValueError(f"probabilities of shape {matrix.shape} for {len(posts)} posts")
        values = matrix.tolist()  # Python floats, exact copies of the float32 values (as from_probabilities)
        above = (matrix >= np.asarray(thresholds)).tolist()  # float32 vs float32 (or exactly widened): the same
        shown = round_scores(matrix)
        items = []
        new = object.__new__
        for post, row, flags, rounded in zip(posts, values, above, shown):
            # the fields set straight into the instance dict: what the frozen dataclass' __init__ does with one
            # object.__setattr__ per field (~2 µs per post); _json_bytes is what the cached_property would hold
            item = new(cls)
            labels = list(compress(emotions, flags))
            item.__dict__.update(post=post, scores=dict(zip(emotions, row)), labels=labels,
                                 model_version=model_version,
                                 _json_bytes=_encode_classified(post, dict(zip(emotions, rounded)), labels,
                                                                model_version))
            items.append(item)
        return items

    def to_json(self) -> str:
        """The JSON of the recent-posts store and of ``posts.classified`` (built once: both use it)."""
        return self._json_bytes.decode()

    def to_json_bytes(self) -> bytes:
        """:meth:`to_json` as UTF-8 bytes, as Redis and the producer take it (no str round trip per post)."""
        return self._json_bytes

    @cached_property
    def _json_bytes(self) -> bytes:  # cached_property writes __dict__ directly, so it works on a frozen dataclass
        return _encode_classified(self.post, {k: round(v, 4) for k, v in self.scores.items()}, self.labels,
                                  self.model_version)


def _encode_classified(post: Post, rounded_scores: dict[str, float], labels: list[str], model_version: str) -> bytes:
    # Post.to_dict() without pydantic's copying dump: the fields as they are, None left out (orjson only reads them)
    body = {name: value for name, value in post.__dict__.items() if value is not None}
    body["scores"] = rounded_scores
    body["labels"] = labels
    body["model_version"] = model_version
    try:  # orjson: the same compact UTF-8 JSON (shortest float repr) at a fraction of json.dumps' cost
        return orjson.dumps(body)
    except TypeError:  # what orjson refuses (an int beyond 64 bits): the standard encoder's output
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def round_scores(matrix) -> list[list[float]]:
    """``[[round(v, 4) for v in row] for row in matrix]``, exactly, at numpy speed: ``rint(x * 1e4) / 1e4`` is the
    double nearest ``k / 10^4`` as ``round`` gives it, except where ``x * 1e4`` lies so near a half that its own
    rounding error could pick the other ``k``; those few values go through ``round`` itself."""
    x = np.asarray(matrix, dtype=np.float64)
    scaled = x * 1e4
    rows = (np.rint(scaled) / 1e4).tolist()
    for i, j in zip(*np.nonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)):
        rows[i][j] = round(float(x[i, j]), 4)
    return rows


class RedisStore:
    """Owns the asyncio Redis client; every method raises one of ``REDIS_OUTAGE_ERRORS`` when Redis is down."""

    def __init__(self, settings: MonitorSettings, emotions: Sequence[str]):
        self.settings = settings
        self.emotions = list(emotions)
        self.redis = aioredis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        self._script = self.redis.register_script(_WRITE_BATCH)
        self._admit_script = self.redis.register_script(_ADMIT_BRAND)
        self._drop_rule_script = self.redis.register_script(_DROP_RULE)
        self._alert_script = self.redis.register_script(_ALERT_TRANSITION)
        self._ready_brands: set[str] = set()
        self._allowed = set(settings.brand_allow_list)
        # Group series (``sentiment:negative``, ...): 1 per post with at least one emotion of the group, so a group's
        # share of posts is exact; a sum of its members' counts would count a post once per member emotion. To the
        # write script they are just more emotion columns (score = the highest member score).
        self._groups = group_series(self.emotions)
        columns = self.emotions + [name for name, _members in self._groups]
        # (emotion, metric) of every series a brand has: the same list for every brand
        self._series = [(emotion, metric) for emotion in columns for metric in ("count", "score")]
        self._series.append((schema.ALL_EMOTIONS, "posts"))
        # set by a recompute (monitor.replay): its own writes pass the fence it holds
        self.fence_token = "-"

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except REDIS_OUTAGE_ERRORS:
            return False

    # ------------------------------------------------------------------ series creation

    def _retention(self, tier: str) -> int:
        s = self.settings
        return {"raw": s.retention_raw_ms, "1m": s.retention_1m_ms, "1h": s.retention_1h_ms}[tier]

    def _width(self, tier: str) -> int:
        return self.settings.raw_bucket_ms if tier == "raw" else schema.TIERS[tier]

    def brand_keys(self, brand: str) -> list[str]:
        """Every series key of a brand, tier by tier (the order of the write script's KEYS)."""
        return [schema.series_key(brand, emotion, metric, tier)
                for tier in TIER_ORDER for emotion, metric in self._series]

    async def _create(self, key: str, retention: int, labels: dict[str, str]) -> None:
        try:
            await self.redis.ts().create(key, retention_msecs=retention, labels=labels, duplicate_policy="sum")
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    async def _rules(self, raw_key: str) -> list[str] | None:
        """The targets of the raw series' compaction rules (created by an earlier version), or None when the series
        is missing."""
        try:
            rules = (await self.redis.ts().info(raw_key)).rules
        except ResponseError:  # no such key yet
            return None
        # redis-py returns a dict {target: [bucket, aggregation, ...]} (RESP3) or a list of [target, ...]
        targets = rules.keys() if isinstance(rules, dict) else (rule[0] for rule in rules or ())
        return [t.decode() if isinstance(t, bytes) else str(t) for t in targets]

    async def ensure_brand(self, brand: str) -> None:
        """Create the brand's series in every tier (idempotent; cached per process), and migrate series an earlier
        version created with compaction rules: each rule is dropped and its open bucket written (atomically), so the
        tiers keep every count and this version's direct tier writes are not doubled by a compaction."""
        if brand in self._ready_brands:
            return
        for emotion, metric in self._series:
            raw_key = schema.series_key(brand, emotion, metric)
            rules = await self._rules(raw_key)
            for tier in TIER_ORDER:
                if rules is None or tier != "raw":
                    await self._create(schema.series_key(brand, emotion, metric, tier), self._retention(tier),
                                       schema.series_labels(brand, emotion, metric, tier))
            for tier in ("1m", "1h"):
                target = schema.series_key(brand, emotion, metric, tier)
                if rules and target in rules:
                    migrated = await self._drop_rule_script(keys=[raw_key, target], args=[schema.TIERS[tier]])
                    if migrated:
                        log.info("migrated %s: compaction rule to %s replaced by direct tier writes", raw_key, target)
        self._ready_brands.add(brand)

    def forget_series_cache(self) -> None:
        """The server lost the series this process created (the write script noticed): check them all again."""
        self._ready_brands.clear()

    async def _admit(self, brands: Iterable[str]) -> dict[str, str]:
        """The brands a post may not use, each with why (the allow-list, the brand count, the new-brand rate)."""
        refused = {}
        s = self.settings
        for brand in brands:
            if brand in self._ready_brands:
                continue
            if self._allowed and brand not in self._allowed:
                refused[brand] = "is not in EM_MONITOR_BRAND_ALLOW_LIST"
                continue
            minute_key = f"{schema.BRANDS_KEY}:new:{int(await self._server_time_ms()) // 60_000}"
            verdict = await self._admit_script(keys=[schema.BRANDS_KEY, minute_key],
                                               args=[brand, s.max_brands, s.max_new_brands_per_minute])
            if verdict == 0:
                refused[brand] = f"is new and Redis already holds EM_MONITOR_MAX_BRANDS = {s.max_brands} brands"
            elif verdict == 2:
                refused[brand] = (f"is new and EM_MONITOR_MAX_NEW_BRANDS_PER_MINUTE = "
                                  f"{s.max_new_brands_per_minute} new brands were admitted this minute")
        return refused

    async def _server_time_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # ------------------------------------------------------------------ writes

    async def write(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list[bool | PostRejected]:
        """Count each post once (atomic check-and-write of the whole batch). Per post: ``True`` counted now,
        ``False`` already counted, or a :class:`PostRejected` (``too_old``, ``brand_limit``): refused, not counted,
        not marked — the caller dead-letters it. Raises :class:`RecomputeInProgress` (nothing written) while a post
        lies in a span a recompute is recounting."""
        if not posts:
            return []
        outcomes: list[bool | PostRejected | None] = [None] * len(posts)
        refused_brands = await self._admit(sorted({b for item in posts for b in item.post.brands}))
        kept = []
        for i, item in enumerate(posts):
            bad = [b for b in item.post.brands if b in refused_brands]
            if bad:
                outcomes[i] = PostRejected("brand_limit", "; ".join(f"brand {b!r} {refused_brands[b]}" for b in bad))
            else:
                kept.append(i)
        if kept:
            for i, flag in zip(kept, await self._write_admitted([posts[i] for i in kept], thresholds)):
                outcomes[i] = flag
        return outcomes

    async def _write_admitted(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list:
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
        if reply[0] == -2:
            raise RecomputeInProgress(f"post {posts[reply[1] - 1].post.id!r} lies in a span being recomputed")
        if reply[1]:
            # cannot happen for series only this monitor writes (the script checks Redis' retention rule first);
            # a series changed from outside (a foreign newer sample) is reported, never hidden
            log.error("Redis refused %d aggregated samples the time policy admitted (first: %s); those posts are "
                      "counted in the other tiers only", reply[1], reply[2])
        outcomes = []
        for item, code in zip(posts, reply[3:]):
            if code == 2:
                outcomes.append(PostRejected("too_old", self._too_old_detail(item.post)))
            else:
                outcomes.append(bool(code))
        await self._trim_recent_posts_by_age(posts)
        return outcomes

    def _too_old_detail(self, post: Post) -> str:
        kept = ", ".join(f"{tier} {self._retention(tier) // 1000} s" for tier in TIER_ORDER)
        return (f"created_at {post.created_at} is older than every retention tier keeps (counted back from each "
                f"brand's newest sample: {kept})")

    async def _trim_recent_posts_by_age(self, posts: Sequence[ClassifiedPost]) -> None:
        """The recent-posts store is bounded by age (``recent_posts_max_age_ms`` before the newest post of the batch,
        like TimeSeries retention) as well as by count (the script's trim). Outside the atomic script on purpose:
        trimming is idempotent, so a crash before it only leaves old posts until the next batch."""
        max_age = self.settings.recent_posts_max_age_ms
        if not max_age:
            return
        newest: dict[str, int] = {}
        for item in posts:
            for brand in item.post.brands:
                newest[brand] = max(newest.get(brand, 0), item.post.created_at)
        pipe = self.redis.pipeline(transaction=False)
        for brand, created in newest.items():
            pipe.zremrangebyscore(schema.posts_key(brand), "-inf", f"({created - max_age}")
        await pipe.execute()

    def _batch_call(self, posts: Sequence[ClassifiedPost], brands: list[str],
                    thresholds: np.ndarray) -> tuple[list[str], list]:
        """KEYS and ARGV of :data:`_WRITE_BATCH` (layout documented there)."""
        s = self.settings
        number = {brand: str(i + 1) for i, brand in enumerate(brands)}
        keys = [schema.BRANDS_KEY, schema.RECOMPUTE_FENCE_KEY]
        for brand in brands:
            keys += self.brand_keys(brand)
        keys += [schema.posts_key(brand) for brand in brands]
        keys += [schema.seen_key(item.post.id) for item in posts]
        n_columns = len(self.emotions) + len(self._groups)
        args: list = [s.seen_ttl_ms, s.recent_posts_per_brand, n_columns, len(brands), len(posts),
                      self.fence_token, *(self._retention(t) for t in TIER_ORDER),
                      *(self._width(t) for t in TIER_ORDER), *brands]
        in_order = operator.itemgetter(*self.emotions)
        scores = np.array([in_order(item.scores) for item in posts], dtype="<f8").reshape(len(posts), -1)
        above = scores >= np.asarray(thresholds, dtype=np.float64)
        if self._groups:  # group columns: any member at or above its threshold; the highest member score
            scores = np.hstack([scores, *(scores[:, m].max(axis=1, keepdims=True) for _name, m in self._groups)])
            above = np.hstack([above, *(above[:, m].any(axis=1, keepdims=True) for _name, m in self._groups)])
        packed = np.empty((len(posts), n_columns), dtype=[("score", "<f8"), ("above", "u1")])
        packed["score"] = scores
        packed["above"] = np.where(above, ord("1"), ord("0"))
        bodies = [item.to_json_bytes() for item in posts]
        lists: dict[tuple[str, ...], str] = {}  # a batch names the same few brand lists over and over
        for item in posts:
            brand_list = tuple(item.post.brands)
            if brand_list not in lists:
                lists[brand_list] = ",".join(number[b] for b in brand_list) + ";"
        args += (np.array([item.post.created_at for item in posts], dtype="<f8").tobytes(),
                 "".join([lists[tuple(item.post.brands)] for item in posts]),
                 b"".join(bodies),
                 np.cumsum(np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))).astype("<f8").tobytes(),
                 packed.tobytes())
        return keys, args

    async def write_with_retry(self, posts: Sequence[ClassifiedPost], thresholds: np.ndarray) -> list:
        """:meth:`write`, retried with exponential back-off for as long as Redis is unreachable or refuses writes
        (OOM, READONLY, MISCONF, LOADING, BUSY, ...: :func:`monitor.retry.is_redis_outage`; never dropped) or a
        recompute holds a post's span (then counted once, after it: see docs/monitor.md "Replay").

        Only the write is retried, not the batch (its classification stands). A Redis that comes back empty is
        handled by :meth:`write` itself: its script reports missing series and they are recreated."""
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                return await self.write(posts, thresholds)
            except RecomputeInProgress as exc:
                log.warning("%s; waiting for the recompute (%.1f s)", exc, backoff.delay)
                await backoff.wait()
            except Exception as exc:
                if not is_redis_outage(exc):
                    raise
                METRICS.redis_down(exc)  # em_redis_up 0 and /health not ok until a write works again
                log.warning("Redis unavailable (%s); retrying %d posts in %.1f s", exc, len(posts), backoff.delay)
                await backoff.wait()

    # ------------------------------------------------------------------ reads and recompute

    async def range_sums(self, queries: Sequence[tuple[str, int, int, int, int]]) -> list:
        """``TS.RANGE key start end ALIGN align AGGREGATION sum bucket_ms`` for each ``(key, start, end, bucket_ms,
        align)``, in one pipelined round trip (the spike detector's reads); a series that does not exist yet gives
        its error in place of the rows (read as nothing counted)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, start, end, bucket_ms, align in queries:
                pipe.execute_command("TS.RANGE", key, start, end, "AGGREGATION", "sum", bucket_ms, "ALIGN", align)
            return await pipe.execute(raise_on_error=False)

    async def alert_rules_version(self) -> int:
        """The alert rules' version counter (``em:alert_rules:version``; 0 before any rule)."""
        return int(await self.redis.get(schema.ALERT_RULES_VERSION_KEY) or 0)

    async def alert_rules(self) -> tuple[dict, int]:
        """The stored alert rules (``{brand}|{emotion}`` -> JSON) and their version, read together."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(schema.ALERT_RULES_KEY)
            pipe.get(schema.ALERT_RULES_VERSION_KEY)
            stored, version = await pipe.execute()
        return stored, int(version or 0)

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

    def whole_buckets(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """The smallest span around ``[start_ms, end_ms]`` that every tier's buckets fill whole: clearing it clears
        exactly the posts whose ``created_at`` lies in it, in every tier."""
        widths = [self._width(t) for t in TIER_ORDER]
        lo, hi = start_ms, end_ms
        while True:
            new_lo = min(lo - lo % w for w in widths)
            new_hi = max(hi - hi % w + w - 1 for w in widths)
            if (new_lo, new_hi) == (lo, hi):
                return lo, hi
            lo, hi = new_lo, new_hi

    async def hold_fence(self, start_ms: int, end_ms: int) -> None:
        """Recompute: from now until :meth:`release_fence` (or its expiry), workers writing a post whose
        ``created_at`` lies in ``[start_ms, end_ms]`` wait, so a recount and a live write never interleave."""
        if self.fence_token == "-":
            self.fence_token = secrets.token_hex(8)
        await self.redis.set(schema.RECOMPUTE_FENCE_KEY, f"{self.fence_token} {start_ms} {end_ms}",
                             px=_FENCE_TTL_MS)

    async def release_fence(self) -> None:
        value = await self.redis.get(schema.RECOMPUTE_FENCE_KEY)
        if value and value.split(" ", 1)[0] == self.fence_token:
            await self.redis.delete(schema.RECOMPUTE_FENCE_KEY)

    async def counted_in_span(self, brand: str, start_ms: int, end_ms: int) -> int:
        """Posts of ``brand`` counted with ``created_at`` in the span: the most any tier holds (tiers older than
        their retention hold fewer)."""
        return int(max([await self.window_sum(schema.series_key(brand, schema.ALL_EMOTIONS, "posts", tier),
                                              start_ms, end_ms) for tier in TIER_ORDER]))

    async def clear(self, start_ms: int, end_ms: int, brands: Iterable[str], post_ids: Iterable[str]) -> int:
        """Recompute support: delete the samples of ``brands`` in ``[start_ms, end_ms]`` in every tier, their recent
        posts in that span, then the idempotency markers of ``post_ids``. Returns the number of markers removed.

        Give a span from :meth:`whole_buckets` and the ids of every post in it, or a bucket at an edge keeps other
        posts' samples. Raises :class:`ClearRefused` — before any marker is touched — when Redis refuses a delete
        (samples already deleted stay deleted; with their markers kept, running the recompute again repairs it)."""
        brands = sorted(set(brands))
        keys = [key for brand in brands for key in self.brand_keys(brand)]
        refused = []
        for key in keys:
            try:
                await self.redis.ts().delete(key, start_ms, end_ms)
            except ResponseError as exc:
                if "key does not exist" in str(exc):
                    continue
                refused.append(f"{key}: {exc}")
        if refused:
            raise ClearRefused(f"Redis refused to clear {len(refused)} series in [{start_ms}, {end_ms}] (first: "
                               f"{refused[0]}); no marker was removed, nothing recounted")
        for brand in brands:
            await self.redis.zremrangebyscore(schema.posts_key(brand), start_ms, end_ms)
        removed = 0
        ids = list(post_ids)
        for start in range(0, len(ids), 500):
            chunk = [schema.seen_key(i) for i in ids[start:start + 500]]
            if chunk:
                removed += await self.redis.delete(*chunk)
        return removed

    # ------------------------------------------------------------------ alerts (monitor.alerts)

    async def recent_posts(self, brand: str, start_ms: int, end_ms: int, limit: int | None = None,
                           newest_first: bool = False) -> list[dict]:
        """The brand's stored posts with ``created_at`` in ``[start_ms, end_ms]`` (post JSON objects, oldest first or
        newest first), at most ``limit``. A stored member that is not a JSON object is skipped."""
        key = schema.posts_key(brand)
        paging = {"start": 0, "num": limit} if limit is not None else {}
        if newest_first:
            members = await self.redis.zrevrangebyscore(key, end_ms, start_ms, **paging)
        else:
            members = await self.redis.zrangebyscore(key, start_ms, end_ms, **paging)
        posts = []
        for member in members:
            try:
                post = json.loads(member)
            except ValueError:
                continue
            if isinstance(post, dict):
                posts.append(post)
        return posts

    async def alert_episode(self, brand: str, emotion: str) -> dict[str, str]:
        """The alert episode state of ``brand`` x ``emotion`` (:func:`monitor.schema.alert_episode_key`); empty when
        the pair never alerted."""
        return await self.redis.hgetall(schema.alert_episode_key(brand, emotion))

    async def alert_cooldown_active(self, brand: str, emotion: str) -> bool:
        return bool(await self.redis.exists(schema.alert_cooldown_key(brand, emotion)))

    async def record_alert_transition(self, brand: str, emotion: str, *, expected_version: str,
                                      state: dict[str, str | int | float], alert_json: str | None = None,
                                      alert_ts: int = 0, cooldown: tuple[int, int] | None = None) -> bool:
        """Atomically: check that the episode is still at ``expected_version`` ("" = none yet), claim ``cooldown``
        (``(value, ms)``; refused while the marker exists), store ``alert_json`` at ``alert_ts`` in the alert timeline
        and the brand's index, and write ``state`` into the episode. False (nothing written) when the episode moved
        or the cooldown is taken; raises (nothing written) when Redis refuses, e.g. a key of the wrong type."""
        keys = [schema.alert_episode_key(brand, emotion), schema.alert_cooldown_key(brand, emotion), schema.ALERTS_KEY,
                schema.brand_alerts_key(brand), schema.ALERTS_INDEXED_SINCE_KEY]
        claim_value, claim_ms = cooldown if cooldown and cooldown[1] > 0 else ("", 0)
        args: list = [expected_version, claim_value, claim_ms, alert_json or "", alert_ts]
        for field_name, value in state.items():
            args += [field_name, "" if value is None else value]
        return bool(await self._alert_script(keys=keys, args=args))
