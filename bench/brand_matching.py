"""Brand-matching benchmark: posts/s per core of the matcher against 10,000 brand queries, and the worker's end-to-end
rate with matching on vs off. Prints a table and writes JSON to bench/results/brand_matching.json.

    python bench/brand_matching.py                      # matcher + end to end (CPU worker, default model)
    python bench/brand_matching.py --skip-e2e           # the matcher only (seconds)

* matcher: ``--queries`` synthetic brand queries (each: the name, "<name> coffee", "#<name>", "@<name>_hq", and one
  exclusion "<name> anvil"), compiled into the worker's :class:`monitor.brands.Matcher`. Texts: GoEmotions dev
  (``EMOTION_MONITOR_DATA_DIR``), every 10th with a brand mentioned as "<Name>'s". Rate = posts / CPU seconds of this
  one thread (``time.process_time``), so other jobs on a shared machine do not lower it: posts/s per core.
  ``match_and_assign`` adds what the worker does per untagged post beyond matching (a tagged copy of the post).
* e2e: real tansu + Redis + ``emotion-monitor worker`` (bench/throughput.py's harness), the same texts each ending in
  " #bench" so every post counts for brand ``bench``; ``off``: posts tagged ``bench``, EM_MONITOR_BRAND_MATCHING=off;
  ``on``: the same posts untagged, matching on (``untagged``) with the 10,000 queries plus ``bench`` in the registry.
  Runs alternate off/on ``--rounds`` times; the median of each is compared. Two rates per run: wall (posts / seconds
  from the first send until Redis holds them all) and CPU (posts / CPU seconds the worker and its model process
  used meanwhile, from psutil). On a machine shared with other jobs the wall rate follows their load; the CPU rate
  is what a dedicated, CPU-bound worker would deliver, so the on/off verdict uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import load_texts, posts_total, produce, start_worker, wait_total  # noqa: E402
from monitor.brands import BrandQuery, Matcher, assign, replace_registry  # noqa: E402
from monitor.post import parse_post  # noqa: E402

SYLLABLES = ["ka", "lo", "mi", "zu", "ter", "bex", "qua", "ron", "vin", "sol", "dra", "pex", "nu", "tor", "wy"]


def synthetic_queries(n: int, seed: int = 0) -> list[BrandQuery]:
    rng = random.Random(seed)
    queries = []
    for i in range(n):
        name = "".join(rng.choice(SYLLABLES) for _ in range(3)) + str(i)
        queries.append(BrandQuery.parse({"name": name, "any": [name, f"{name} coffee", f"#{name}", f"@{name}_hq"],
                                         "none": [f"{name} anvil"]}))
    return queries


def matcher_rates(queries: list[BrandQuery], texts: list[str], seed: int = 1) -> dict:
    rng = random.Random(seed)
    mixed = [f"{t} love {rng.choice(queries).name.title()}'s stuff" if i % 10 == 0 else t
             for i, t in enumerate(texts)]
    started, cpu = time.perf_counter(), time.process_time()
    matcher = Matcher(queries, version=1)
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    posts = [parse_post(json.dumps({"id": str(i), "text": t}).encode(), 0, require_brand=False)
             for i, t in enumerate(mixed)]

    def best_of(fn, rounds: int = 3) -> float:
        rates = []
        for _ in range(rounds):
            cpu = time.process_time()
            fn()
            rates.append(len(mixed) / (time.process_time() - cpu))
        return max(rates)

    hits = sum(1 for t in mixed if matcher.match(t))
    match_rate = best_of(lambda: [matcher.match(t) for t in mixed])
    assign_rate = best_of(lambda: [assign(matcher, p, "untagged") for p in posts])
    wall = time.perf_counter()
    for t in mixed:
        matcher.match(t)
    wall_rate = len(mixed) / (time.perf_counter() - wall)
    return {"queries": len(queries), "automaton_keys": len(matcher._automaton), "build_seconds": build_s,
            "build_cpu_seconds": build_cpu_s,
            "texts": len(mixed), "texts_matching": hits, "mean_text_chars": sum(map(len, mixed)) / len(mixed),
            "match_posts_per_cpu_s": match_rate, "match_and_assign_posts_per_cpu_s": assign_rate,
            "match_posts_per_wall_s": wall_rate}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its living descendants."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def e2e(args, queries: list[BrandQuery], texts: list[str]) -> dict:
    import redis

    from emotion_monitor.servers import start_redis, start_tansu

    workdir = Path(tempfile.mkdtemp(prefix="em-bench-brands-"))
    kafka, redis_server = start_tansu(log_dir=workdir), start_redis(log_dir=workdir)
    bootstrap = f"127.0.0.1:{kafka.port}"
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    registry = [*queries, BrandQuery.parse({"name": "bench", "any": ["#bench"]})]
    texts = [f"{t} #bench" for t in texts]
    runs: dict[str, list[float]] = {"off": [], "on": []}
    cpu_runs: dict[str, list[float]] = {"off": [], "on": []}
    worker_args = argparse.Namespace(max_wait=0.25, device="cpu", metrics_port=0, inference_batch=0,
                                     cpu_precision="int8", partitions=4, model=args.model)
    try:
        for round_no in range(args.rounds):
            for mode in ("off", "on"):
                client.flushdb()
                replace_registry(client, registry)
                os.environ["EM_MONITOR_BRAND_MATCHING"] = "off" if mode == "off" else "untagged"
                worker = start_worker(kafka, redis_server.url, worker_args, args.batch,
                                      workdir / f"worker-{mode}-{round_no}.log")
                os.environ.pop("EM_MONITOR_BRAND_MATCHING")
                try:
                    def post(prefix: str, i: int, text: str) -> dict:
                        body = {"id": f"{prefix}-{mode}-{round_no}-{i}", "text": text}
                        return {**body, "brand": "bench"} if mode == "off" else body

                    warm = [post("w", i, t) for i, t in enumerate(texts[: args.posts // 2])]
                    asyncio.run(produce(bootstrap, warm))
                    wait_total(client, len(warm), 300, worker)
                    posts = [post("e", i, t) for i, t in enumerate(texts[: args.posts])]
                    cpu_before = tree_cpu_seconds(worker.pid)
                    first = asyncio.run(produce(bootstrap, posts))
                    done = wait_total(client, len(warm) + len(posts), 300 + args.posts / 2, worker)
                    cpu_rate = len(posts) / (tree_cpu_seconds(worker.pid) - cpu_before)
                    rate = len(posts) / (done - first)
                    assert posts_total(client) == len(warm) + len(posts)
                    runs[mode].append(rate)
                    cpu_runs[mode].append(cpu_rate)
                    print(f"  round {round_no + 1} matching {mode:3s}: {rate:7.1f} posts/s wall, {cpu_rate:7.1f} "
                          f"posts per worker CPU second (load {os.getloadavg()[0]:.1f})", flush=True)
                finally:
                    worker.terminate()
                    worker.wait(60)
    finally:
        client.close()
        kafka.stop()
        redis_server.stop()
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    cpu_off, cpu_on = statistics.median(cpu_runs["off"]), statistics.median(cpu_runs["on"])
    return {"posts": args.posts, "batch": args.batch, "rounds": args.rounds, "registry_queries": len(registry),
            "off_posts_per_s": runs["off"], "on_posts_per_s": runs["on"], "off_median": off, "on_median": on,
            "wall_on_slower_pct": 100 * (off - on) / off,
            "off_posts_per_cpu_s": cpu_runs["off"], "on_posts_per_cpu_s": cpu_runs["on"],
            "off_cpu_median": cpu_off, "on_cpu_median": cpu_on, "on_slower_pct": 100 * (cpu_off - cpu_on) / cpu_off}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=10_000, help="Brand queries in the registry")
    parser.add_argument("--texts", type=int, default=20_000, help="Texts for the matcher rate")
    parser.add_argument("--skip-e2e", action="store_true", help="Only the matcher rate")
    parser.add_argument("--posts", type=int, default=1000, help="Posts per end-to-end run")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs of end-to-end runs")
    parser.add_argument("--batch", type=int, default=256, help="EM_MONITOR_MAX_BATCH of the worker")
    parser.add_argument("--model", default=None, help="Model artifact folder (default: the shipped default model)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "brand_matching.json"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still stops its servers and worker

    queries = synthetic_queries(args.queries)
    texts = load_texts(args.texts)
    results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                 "load_avg_before": os.getloadavg()[0]}}
    results["matcher"] = matcher_rates(queries, texts)
    m = results["matcher"]
    print(f"matcher: {m['queries']:,} queries ({m['automaton_keys']:,} automaton keys, built in "
          f"{m['build_seconds']:.2f} s, {m['build_cpu_seconds']:.2f} CPU s); {m['match_posts_per_cpu_s']:,.0f} posts/s per core "
          f"(match + assign {m['match_and_assign_posts_per_cpu_s']:,.0f}; wall {m['match_posts_per_wall_s']:,.0f})",
          flush=True)
    if not args.skip_e2e:
        results["e2e"] = e2e(args, queries, texts)
        e = results["e2e"]
        print(f"worker end to end (medians): off {e['off_cpu_median']:.1f}, on {e['on_cpu_median']:.1f} posts per "
              f"worker CPU second ({e['on_slower_pct']:+.1f} % slower with matching); wall off {e['off_median']:.1f}, "
              f"on {e['on_median']:.1f} posts/s ({e['wall_on_slower_pct']:+.1f} %)")
    results["targets"] = {"matcher_ge_50k_posts_per_s_per_core": m["match_posts_per_cpu_s"] >= 50_000}
    if "e2e" in results:
        e = results["e2e"]
        # what matching adds per post, as a share of what the worker spends per post with matching off: the cost
        # model behind the measured difference, which on a shared machine is dominated by noise
        e["matching_share_of_worker_cpu_pct"] = 100 * e["off_cpu_median"] / m["match_and_assign_posts_per_cpu_s"]
        print(f"matching costs {e['matching_share_of_worker_cpu_pct']:.2f} % of the worker's CPU per post")
        results["targets"]["e2e_on_at_most_5pct_slower"] = e["on_slower_pct"] <= 5
    results["machine"]["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(results["targets"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
