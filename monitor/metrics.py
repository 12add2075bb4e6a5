"""Prometheus metrics and the ``/health`` + ``/metrics`` HTTP endpoint of a worker.

Posts per second is ``rate(em_posts_total[1m])``; batch size, batch latency, inference time and the end-to-end
delay (Kafka record timestamp -> Redis write) are histograms; DLQ records and alerts are counters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

__all__ = ["METRICS", "observe_many", "start_http"]

log = logging.getLogger(__name__)


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for every amount: the same bucket counts and sum, with one bucket search over them all
    (numpy) instead of a lock and a linear search per value (a batch's delays: ~1.5 µs per post). For a histogram
    without labels (or one labelled child); relies on prometheus_client's ``_upper_bounds``, ``_buckets``, ``_sum``."""
    if not len(amounts):
        return
    values = np.asarray(amounts, dtype=np.float64)
    bounds = histogram._upper_bounds
    # observe() counts a value in the first bucket whose upper bound is >= it, i.e. searchsorted's left side
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts.tolist()):  # a NaN lands past the last bound: no bucket
        if count:
            bucket.inc(count)


class _Metrics:
    def __init__(self) -> None:
        self.posts = Counter("em_posts_total", "Posts processed, by outcome", ["outcome"])
        self.dlq = Counter("em_dlq_total", "Records sent to the dead-letter topic, by reason", ["reason"])
        self.dlq_undeliverable = Counter(
            "em_dlq_undeliverable_total", "Records skipped because the broker kept refusing their dead letter")
        self.alerts = Counter("em_alerts_total", "Spike alerts fired", ["emotion"])
        self.batch_size = Histogram("em_batch_size", "Records per micro-batch", buckets=(1, 4, 16, 32, 64, 128, 256, 512))
        self.batch_seconds = Histogram("em_batch_seconds", "Wall time per micro-batch (parse..commit-ready)")
        self.inference_seconds = Histogram("em_inference_seconds", "Model time per micro-batch")
        self.delay_seconds = Histogram(
            "em_end_to_end_delay_seconds", "Kafka record timestamp -> Redis write",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )
        # where a batch's time goes, per stage (consume, parse, brands, model, redis, produce, alerts, ack,
        # commit): sum / posts = seconds per post. Wall time: with pipeline_depth > 1 the stages of two batches
        # overlap on the event loop, so the per-stage sums add up to more than the elapsed time
        self.stage_seconds = Histogram("em_stage_seconds", "Wall time per micro-batch in each pipeline stage",
                                       ["stage"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                           0.25, 0.5, 1, 2.5, 5, 10))
        self.redis_up = Gauge("em_redis_up", "1 when the last Redis write succeeded, 0 while Redis is unreachable "
                              "or refuses writes (OOM, READONLY, MISCONF, LOADING, BUSY, ...)")
        self.unmatched = Counter("em_unmatched_total", "Posts brand matching gave no brand (not stored)", ["topic"])
        self.brand_queries = Gauge("em_brand_queries", "Brand queries in the matcher this worker uses")
        self.brand_registry_version = Gauge("em_brand_registry_version", "Version of the brand registry loaded")
        self.last_batch = Gauge("em_last_batch_timestamp_seconds", "Unix time of the last finished batch")
        # why Redis cannot be written now (None = the last write worked): /health is not ok while it is set
        self.redis_problem: str | None = None
        self._stages: dict = {}

    def stage(self, name: str):
        """The ``em_stage_seconds`` child of one stage (cached: a labels() lookup per batch costs more)."""
        child = self._stages.get(name)
        if child is None:
            child = self._stages[name] = self.stage_seconds.labels(name)
        return child

    def redis_down(self, error: BaseException) -> None:
        self.redis_problem = f"{type(error).__name__}: {error}"[:300]
        self.redis_up.set(0)

    def redis_ok(self) -> None:
        self.redis_problem = None
        self.redis_up.set(1)


METRICS = _Metrics()


async def start_http(port: int, health, host: str = "127.0.0.1", registry=None) -> object | None:
    """Serve ``/metrics`` (``registry``, default the process-wide one) and ``/health`` on ``host:port`` (``health``
    is an async callable returning a dict with ``ok``); None when the port is taken (logged, processing goes on)."""
    from aiohttp import web

    async def metrics(_request):
        return web.Response(body=generate_latest(registry or REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request):
        state = await health()
        return web.Response(text=json.dumps(state), status=200 if state.get("ok") else 503,
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:  # another worker on this host holds the port: keep processing, say so
        log.warning("metrics/health %s:%d unavailable (%s); endpoint disabled for this worker", host, port, exc)
        await runner.cleanup()
        return None
    return runner
