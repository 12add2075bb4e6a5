"""What the detection throttle (``EM_MONITOR_ALERT_DETECT_INTERVAL_SECONDS``) saves in the worker's alerts stage.

    python bench/alerts_throttle.py                 # 10 brands, 60 s per setting, 500 posts every 0.5 s

A real Redis with TimeSeries (:func:`emotion_monitor.servers.start_redis`) holds two days of 1-minute counts for
``--brands`` brands (30 posts/min, 5 % angry, as the worker writes its 1-minute tier). The alerts stage
(:meth:`monitor.alerts.AlertEngine.evaluate`, every brand in every batch, anger watched, cooldown off) then runs
``--seconds`` of wall clock per setting, a batch every ``--batch-every`` seconds (back to back when the stage falls
behind), the batches' event time following the wall clock (a live stream with no lag: event minutes turn over every
60 s as they would), once with the throttle off (0: a detection per brand x
emotion per batch, the behaviour before it) and once at the default interval. Prints and writes
bench/results/alerts_throttle.json: batches evaluated, detections run, milliseconds per batch (and per post for
``--batch-posts`` posts a batch). The machine is shared: compare the two rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion_monitor.servers import start_redis  # noqa: E402
from monitor import schema  # noqa: E402
from monitor.alerts import AlertEngine  # noqa: E402
from monitor.settings import MonitorSettings  # noqa: E402
from monitor.store import RedisStore  # noqa: E402

DAY = 1440


def write_history(client, brands: list[str], first_min: int, days: int, seed: int = 0) -> None:
    """The 1-minute tier of every brand's posts and anger counts (one sample per minute with posts)."""
    rng = np.random.default_rng(seed)
    for brand in brands:
        n = rng.poisson(30, size=days * DAY)
        k = rng.binomial(n, 0.05)
        for key, values in ((schema.series_key(brand, schema.ALL_EMOTIONS, "posts", "1m"), n),
                            (schema.series_key(brand, "anger", "count", "1m"), k)):
            client.ts().create(key, duplicate_policy="sum")
            samples = [(key, (first_min + i) * 60_000, int(v)) for i, v in enumerate(values) if v]
            for start in range(0, len(samples), 5000):
                client.ts().madd(samples[start:start + 5000])


async def measure(url: str, brands: list[str], interval: float, seconds: float, start_ms: int,
                  batch_every: float) -> dict:
    cfg = MonitorSettings(redis_url=url, alert_detect_interval_seconds=interval, alert_emotions=["anger"],
                          alert_cooldown_ms=0, alert_evidence_posts=0)

    async def publish(topic, key, value):
        pass

    store = RedisStore(cfg, ["anger"])
    engine = AlertEngine(cfg, store, publish, "bench")
    batches, spent = 0, []
    began = time.perf_counter()
    try:
        while time.perf_counter() - began < seconds:
            now_ms = start_ms + int((time.perf_counter() - began) * 1000)  # event time follows the wall clock
            t = time.perf_counter()
            await engine.evaluate({brand: now_ms for brand in brands})
            spent.append(time.perf_counter() - t)
            batches += 1
            # the next batch arrives batch_every after this one started (at once when the stage fell behind)
            await asyncio.sleep(max(0.0, t + batch_every - time.perf_counter()))
    finally:
        await engine.drain(5)
        await store.close()
    return {"interval_s": interval, "batches": batches, "detections": engine.detections_run,
            "skipped": engine.detections_skipped, "ms_per_batch_mean": 1000 * float(np.mean(spent)),
            "ms_per_batch_median": 1000 * float(np.median(spent)),
            "stage_share_of_wall": float(np.sum(spent) / (time.perf_counter() - began))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brands", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch-posts", type=int, default=500, help="Posts a batch stands for (per-post figures)")
    parser.add_argument("--batch-every", type=float, default=0.5, help="Seconds between batches (500 posts every "
                        "0.5 s: 1000 posts/s)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "alerts_throttle.json"))
    args = parser.parse_args()
    import redis

    server = start_redis()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        first_min = int(time.time() // 60) - 2 * DAY
        brands = [f"brand{i}" for i in range(args.brands)]
        write_history(client, brands, first_min, 2)
        start_ms = (first_min + 2 * DAY - 1) * 60_000 + 30_000
        rows = [asyncio.run(measure(server.url, brands, interval, args.seconds, start_ms, args.batch_every))
                for interval in (0.0, MonitorSettings().alert_detect_interval_seconds)]
    finally:
        server.stop()
    for row in rows:
        row["us_per_post"] = 1000 * row["ms_per_batch_mean"] / args.batch_posts
        print(f"interval {row['interval_s']:>4g} s: {row['batches']} batches, {row['detections']} detections, "
              f"{row['ms_per_batch_mean']:.1f} ms per batch of {args.brands} brands (median "
              f"{row['ms_per_batch_median']:.1f}), {row['us_per_post']:.0f} us per post at {args.batch_posts} a batch, "
              f"{100 * row['stage_share_of_wall']:.0f} % of the wall clock in the stage")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python bench/alerts_throttle.py " + " ".join(sys.argv[1:]),
                               "brands": args.brands, "seconds": args.seconds, "batch_posts": args.batch_posts,
                               "batch_every_s": args.batch_every,
                               "rows": rows, "machine": platform.platform()}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
