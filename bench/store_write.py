"""Cost of the Redis write per post: this version's script (every tier written directly, retention checked per post,
brand admission, recompute fence) against a baseline version of ``monitor/store.py`` from git (default: the commit
before the change, one script writing raw samples with compaction rules raw -> 1m -> 1h doing the tiers).

    python bench/store_write.py                      # 28 emotions, batches of 256, 3 brands, 60 batches per variant
    python bench/store_write.py --baseline-rev 1029ab0 --batches 100 --brands 1

Both variants write the same batches, interleaved batch by batch (so machine load hits both alike), each into its
own database of one Redis with TimeSeries started here. Per post: wall time of ``RedisStore.write`` (argument
packing in Python + the script call) and the server's own time for the script (INFO commandstats, evalsha).
Scenarios: ``live`` (posts of the last seconds) and ``backfill`` (posts 20 days old for brands with current data:
the baseline silently drops them, this version writes them to the 1m / 1h tiers). Prints a table and writes
bench/results/store_write.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion_monitor.servers import start_redis  # noqa: E402
from monitor.post import Post  # noqa: E402
from monitor.settings import MonitorSettings  # noqa: E402
from trainer.data import GOEMOTIONS_LABELS  # noqa: E402

DAY = 86_400_000


def load_baseline(rev: str):
    """monitor/store.py as of ``rev``, imported as its own module (it uses today's monitor.* helpers)."""
    source = subprocess.run(["git", "show", f"{rev}:monitor/store.py"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_store.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_store", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_batches(module, n_batches: int, size: int, brands: list[str], start_ms: int, step_ms: int, prefix: str):
    rng = np.random.default_rng(7)
    thresholds = np.full(len(GOEMOTIONS_LABELS), 0.3)
    batches = []
    for b in range(n_batches):
        rows = []
        for i in range(size):
            n = b * size + i
            post = Post(id=f"{prefix}{n}", brands=[brands[n % len(brands)]], text="bench text",
                        created_at=start_ms + n * step_ms)
            rows.append(module.ClassifiedPost.from_probabilities(post, rng.random(len(GOEMOTIONS_LABELS)) * 0.6,
                                                                 GOEMOTIONS_LABELS, thresholds, "bench"))
        batches.append(rows)
    return batches, thresholds


async def evalsha_usec(client) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def run(args) -> dict:
    import monitor.store as current

    baseline = load_baseline(args.baseline_rev)
    server = start_redis(log_dir=Path(tempfile.mkdtemp()))
    base_url = server.url.rsplit("/", 1)[0]
    brands = [f"brand{i}" for i in range(args.brands)]
    results = {}
    try:
        for scenario in ("live", "backfill"):
            variants = {}
            for name, module, db in (("baseline", baseline, 1), ("this", current, 2)):
                url = f"{base_url}/{db}"
                settings = MonitorSettings(redis_url=url)
                store = module.RedisStore(settings, GOEMOTIONS_LABELS)
                await store.redis.flushdb()
                variants[name] = {"store": store, "wall": [], "server": [], "counted": 0}
            now = int(time.time() * 1000)
            if scenario == "backfill":  # the brands have current data; then 20-day-old posts arrive
                for variant in variants.values():
                    warm, thresholds = make_batches(current, 1, args.batch, brands, now - 1000, 1, "warm")
                    await variant["store"].write(warm[0], thresholds)
                start = now - 20 * DAY
            else:
                start = now - args.batches * args.batch * args.step_ms
            for name, variant in variants.items():
                module = baseline if name == "baseline" else current
                variant["batches"], variant["thresholds"] = make_batches(
                    module, args.batches, args.batch, brands, start, args.step_ms, f"{scenario}-")
            for i in range(args.batches):
                for variant in variants.values():
                    store = variant["store"]
                    before = await evalsha_usec(store.redis)
                    t0 = time.perf_counter()
                    out = await store.write(variant["batches"][i], variant["thresholds"])
                    wall = time.perf_counter() - t0
                    server_us = await evalsha_usec(store.redis) - before
                    variant["counted"] += sum(1 for flag in out if flag is True)
                    if i:  # the first batch creates the brands' series
                        variant["wall"].append(wall * 1e6 / args.batch)
                        variant["server"].append(server_us / args.batch)
            results[scenario] = {}
            for name, variant in variants.items():
                client = variant["store"].redis
                total_1h = 0.0
                for brand in brands:
                    rows = await client.ts().range(f"em:ts:{brand}:_all:posts:1h", "-", "+")
                    total_1h += sum(float(v) for _, v in rows)
                results[scenario][name] = {
                    "us_per_post_median": round(statistics.median(variant["wall"]), 1),
                    "us_per_post_p90": round(float(np.percentile(variant["wall"], 90)), 1),
                    "redis_us_per_post_median": round(statistics.median(variant["server"]), 1),
                    "posts_reported_counted": variant["counted"],
                    "posts_in_1h_tier": int(total_1h),
                }
                await variant["store"].close()
    finally:
        server.stop()
    return {
        "batch": args.batch, "batches": args.batches, "brands": args.brands, "emotions": len(GOEMOTIONS_LABELS),
        "step_ms": args.step_ms, "baseline_rev": args.baseline_rev, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-rev", default="1029ab0", help="git revision of the baseline monitor/store.py")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--brands", type=int, default=3)
    parser.add_argument("--step-ms", type=int, default=4, help="created_at step between posts (4 ms: ~1 s a batch)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "store_write.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"batch {args.batch}, {args.brands} brands, {report['emotions']} emotions; us per post (median, p90) / "
          "Redis script time per post")
    for scenario, variants in report["results"].items():
        for name, r in variants.items():
            print(f"  {scenario:8s} {name:8s} {r['us_per_post_median']:7.1f} {r['us_per_post_p90']:7.1f}   "
                  f"redis {r['redis_us_per_post_median']:6.1f}   counted {r['posts_reported_counted']:6d}   "
                  f"in 1h tier {r['posts_in_1h_tier']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
