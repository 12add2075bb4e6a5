"""The live status line of ``up``: posts/s and alerts, read from what the worker wrote to Redis (:mod:`monitor.schema`).

Reading Redis rather than a worker's memory makes the line right for any number of workers, and for workers that
``up`` did not start. posts/s is the sum of every brand's ``posts`` series over the last complete seconds (one
``TS.MRANGE`` aggregated on the server); alerts are the ``em:alerts`` sorted set, and alerts newer than the last read
are returned so ``up`` can print them as they fire.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from monitor.schema import ALERTS_KEY, APP_LABEL, BRANDS_KEY

__all__ = ["Status", "StatusReader"]

_RATE_WINDOW_MS = 10_000
_LAG_MS = 2_000  # the newest seconds are still in the worker's current batch


@dataclass
class Status:
    posts_per_s: float | None = None
    posts_last_hour: int | None = None
    brands: int | None = None
    alerts: int | None = None
    new_alerts: list[str] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"status: Redis unreachable ({self.error})"
        return (f"posts/s {self.posts_per_s:6.1f} | posts (1 h) {self.posts_last_hour:7d} | brands {self.brands} "
                f"| alerts {self.alerts}")


def _describe(raw: str) -> str:
    try:
        alert = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if alert.get("message"):
        return f"{alert.get('brand')} / {alert.get('emotion')}: {alert['message']}"
    return f"{alert.get('brand')} / {alert.get('emotion')}: value {alert.get('value')} vs baseline {alert.get('baseline')}"


class StatusReader:
    """Reads :class:`Status` from Redis; never raises (a Redis error becomes ``Status.error``)."""

    def __init__(self, redis_url: str, metrics_ports: list[int] | None = None):
        import redis

        self._client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=2)
        self._last_alert_ms: float = time.time() * 1000 - 3_600_000

    def _posts_sum(self, start_ms: int, end_ms: int) -> int:
        rows = self._client.ts().mrange(
            start_ms, end_ms, filters=[f"app={APP_LABEL}", "metric=posts", "tier=raw"],
            aggregation_type="sum", bucket_size_msec=max(1, end_ms - start_ms),
        )
        total = 0.0
        for row in rows:
            for _key, (_labels, samples) in row.items():
                total += sum(value for _ts, value in samples)
        return int(total)

    def read(self) -> Status:
        import redis

        now_ms = int(time.time() * 1000)
        try:
            window = self._posts_sum(now_ms - _LAG_MS - _RATE_WINDOW_MS, now_ms - _LAG_MS)
            hour = self._posts_sum(now_ms - 3_600_000, now_ms)
            brands = self._client.scard(BRANDS_KEY)
            alerts = self._client.zcard(ALERTS_KEY)
            fresh = self._client.zrangebyscore(ALERTS_KEY, f"({self._last_alert_ms}", "+inf", withscores=True)
        except (redis.RedisError, OSError) as exc:
            return Status(error=str(exc))
        if fresh:
            self._last_alert_ms = max(score for _member, score in fresh)
        return Status(window / (_RATE_WINDOW_MS / 1000), hour, brands, alerts, [_describe(m) for m, _ in fresh])
