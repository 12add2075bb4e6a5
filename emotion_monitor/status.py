"""The live status line of ``up``: posts/s, dead letters and alerts.

* posts/s: the processing rate, from the workers' Prometheus counters (``em_posts_total{outcome="counted"}``,
  summed over the workers ``up`` started, differenced between reads). Without reachable workers it falls back to
  Redis: every brand's ``posts`` series over the last complete seconds of event time (one ``TS.MRANGE``).
* posts (1 h), brands, alerts: from Redis (:mod:`monitor.schema`), so they are right for any number of workers;
  alerts newer than the last read are returned so ``up`` can print them as they fire.
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
    dead_letters: int | None = None
    posts_last_hour: int | None = None
    brands: int | None = None
    alerts: int | None = None
    new_alerts: list[str] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"status: Redis unreachable ({self.error})"
        dlq = "" if self.dead_letters is None else f" | dead letters {self.dead_letters}"
        return (f"posts/s {self.posts_per_s:6.1f} | posts (1 h) {self.posts_last_hour:7d} | brands {self.brands} "
                f"| alerts {self.alerts}{dlq}")


def _describe(raw: str) -> str:
    try:
        alert = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if not isinstance(alert, dict):  # valid JSON but not an alert object: show it as stored rather than crash `up`
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
        self._metrics_ports = list(metrics_ports or [])
        self._last_counted: tuple[float, float] | None = None  # (monotonic time, counted posts)

    def _scrape(self) -> tuple[float, int] | None:
        """(posts counted, dead letters) summed over the workers' /metrics; None when none answers."""
        import urllib.request

        counted, dead, answered = 0.0, 0.0, False
        for port in self._metrics_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:  # noqa: S310
                    text = response.read().decode()
            except OSError:
                continue
            answered = True
            for line in text.splitlines():
                if line.startswith('em_posts_total{') and 'outcome="counted"' in line:
                    counted += float(line.rsplit(" ", 1)[1])
                elif line.startswith("em_dlq_total{"):
                    dead += float(line.rsplit(" ", 1)[1])
        return (counted, int(dead)) if answered else None

    def _processing_rate(self) -> tuple[float | None, int | None]:
        scraped = self._scrape()
        if scraped is None:
            return None, None
        now, (counted, dead) = time.monotonic(), scraped
        previous, self._last_counted = self._last_counted, (now, counted)
        if previous is None or now <= previous[0]:
            return None, dead
        return max(0.0, counted - previous[1]) / (now - previous[0]), dead

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
        rate, dead = self._processing_rate()
        if rate is None:
            rate = window / (_RATE_WINDOW_MS / 1000)
        return Status(rate, dead, hour, brands, alerts, [_describe(m) for m, _ in fresh])
