"""Dashboard benchmark: time to first chart and refresh time with 7 days of 1-minute data, 20 brands x 28 emotions.

Seeds a fresh Redis (TimeSeries) in the monitor's schema — the 1-minute tier for 7 days with TS.MADD through a
pipeline, the hourly tier with its sums, and the raw tier for the last 6 hours (what the "last hour" view reads) —
then measures:

* queries: the page's refresh path (emotion over time + shift totals + alerts + monitoring start + the post
  explorer's read of the newest stored posts) in process, per range and for 1 and 5 compared brands (median and p95
  of repeated runs);
* browser: ``emotion-monitor dashboard`` in a subprocess driven by headless Debian chromium (Playwright):
  time from navigation to the first drawn chart, and the refresh time the page itself reports for each live refresh
  ("refresh took N ms": all queries plus building the page's elements on the server).

Prints a table, writes ``bench/results/dashboard.json``, ``bench/results/dashboard_timings.png`` and a screenshot
``bench/results/dashboard_screenshot.png``. Run: ``.venv/bin/python bench/dashboard.py [--days 7 --brands 20]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard import queries  # noqa: E402
from dashboard.seed import add_alert, add_post, write_counts  # noqa: E402
from dashboard.taxonomy import EMOTIONS  # noqa: E402
from monitor.taxonomy import group_series  # noqa: E402
from emotion_monitor.servers import start_redis  # noqa: E402
from tests.dashboard.browser import CHART, dashboard_page  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MINUTE, HOUR = 60_000, 3_600_000


def seed(client: redis.Redis, brands: list[str], days: int, now_ms: int, rng: np.random.Generator) -> dict:
    minutes = days * 24 * 60
    start = (now_ms // HOUR) * HOUR - days * 24 * HOUR + HOUR
    ts = start + MINUTE * np.arange(minutes)
    ts = ts[ts <= now_ms]
    raw_from = now_ms - 6 * HOUR
    base_p = rng.dirichlet(np.ones(len(EMOTIONS))) * 0.6
    written = 0
    groups = group_series(list(EMOTIONS))  # the monitor's group series (posts with any emotion of the group)
    bar = tqdm(total=len(brands) * (len(EMOTIONS) + 1 + len(groups)), desc="seeding series", unit="series")
    t0 = time.perf_counter()
    for b, brand in enumerate(brands):
        posts = rng.poisson(20 + 5 * b, size=len(ts))
        p = np.clip(base_p * rng.uniform(0.5, 1.5, len(EMOTIONS)), 0, 1)
        member_counts = {}
        for e, emotion in enumerate(["_all", *EMOTIONS, *(name for name, _ in groups)]):
            if emotion == "_all":
                counts = posts
            elif e > len(EMOTIONS):  # a group: at least its largest member, at most all posts (synthetic)
                members = np.array([member_counts[i] for i in groups[e - len(EMOTIONS) - 1][1]])
                counts = np.minimum(posts, np.maximum(members.max(axis=0), np.round(0.8 * members.sum(axis=0))))
            else:
                prob = np.full(len(ts), p[e - 1])
                if b == 0 and emotion == "anger":
                    prob[ts > now_ms - 24 * HOUR] = 0.5  # the shift the table should rank first for brand 0
                counts = rng.binomial(posts, prob)
                member_counts[e - 1] = counts
            hours = (ts // HOUR) * HOUR
            hourly_ts, index = np.unique(hours, return_inverse=True)
            hourly = np.bincount(index, weights=counts)
            recent = ts >= raw_from
            for tier, times, values in (("1m", ts, counts), ("1h", hourly_ts, hourly),
                                        ("raw", ts[recent], counts[recent])):
                # dense: every minute of every series holds a sample (zeros too) — more than the monitor, which
                # writes only when a post arrives, stores; an upper bound for the queries
                written += write_counts(client, brand, tier, zip(times.tolist(), [emotion] * len(times),
                                                                 values.tolist()))
            bar.update()
    bar.close()
    for b, brand in enumerate(brands):
        for k in range(5):
            alert_ts = now_ms - (k * 30 + 5) * MINUTE
            add_alert(client, {"brand": brand, "emotion": "anger", "ts": alert_ts, "window_start": alert_ts - 5 * MINUTE,
                               "window_end": alert_ts, "value": 0.5, "baseline": 0.05, "count": 40,
                               "message": f"anger spiked for {brand}"})
            for i in range(20):
                add_post(client, {"id": f"{brand}-{k}-{i}", "text": f"post {i} about {brand}", "brands": [brand],
                                  "created_at": alert_ts - i * 10_000, "source": "bench", "author": "bench",
                                  "scores": {"anger": 0.8, "joy": 0.1}, "labels": ["anger"], "model_version": "b"})
    seconds = time.perf_counter() - t0
    return {"samples": written, "seconds": round(seconds, 1), "samples_per_s": round(written / seconds)}


def time_queries(client: redis.Redis, brands: list[str], repeats: int) -> list[dict]:
    rows = []
    for range_key in ("1h", "24h", "7d"):
        for n_brands in (1, 5):
            chosen = brands[:n_brands]
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                now = int(time.time() * 1000)
                window = queries.plan_window(now - queries.RANGES[range_key], now, now)
                series = queries.emotion_series(client, chosen, window)
                queries.period_totals(client, chosen, now, queries.RANGES[range_key], now)
                alerts, _ = queries.list_alerts(client, chosen, window.start_ms, now)
                queries.monitoring_start(client, chosen)
                queries.list_posts(client, chosen[0], window.start_ms, now, ["anger"])  # the post explorer
                samples.append((time.perf_counter() - started) * 1000)
            rows.append({"range": range_key, "brands": n_brands, "tier": window.tier, "bucket_ms": window.bucket_ms,
                         "points": int(len(series)), "median_ms": round(statistics.median(samples), 1),
                         "p95_ms": round(float(np.percentile(samples, 95)), 1)})
    # worst case: the week read from the 1-minute tier (10,080 samples per series aggregated on the server)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        now = int(time.time() * 1000)
        queries.emotion_series(client, brands[:1], queries.TimeWindow(now - 7 * 24 * HOUR, now, HOUR, "1m"))
        samples.append((time.perf_counter() - started) * 1000)
    rows.append({"range": "7d from 1m tier", "brands": 1, "tier": "1m", "bucket_ms": HOUR, "points": None,
                 "median_ms": round(statistics.median(samples), 1),
                 "p95_ms": round(float(np.percentile(samples, 95)), 1)})
    return rows


def time_browser(redis_url: str, range_key: str, brand_query: str, refreshes: int, workdir: Path,
                 screenshot: Path | None) -> dict:
    with dashboard_page(redis_url, workdir, default_range=range_key, refresh_seconds=2) as (server, page):
        started = time.perf_counter()
        page.goto(f"{server.url}/?brand={brand_query}", wait_until="commit")
        page.wait_for_selector(CHART, timeout=120_000)
        first_chart_s = time.perf_counter() - started
        refresh_ms, seen = [], set()
        deadline = time.monotonic() + 10 * refreshes + 30
        while len(refresh_ms) < refreshes and time.monotonic() < deadline:
            for caption in page.locator('[data-testid="stCaptionContainer"]').all_inner_texts():
                match = re.search(r"Updated (.+?) · refresh took (\d+) ms", caption)
                if match and match.group(1) not in seen:
                    seen.add(match.group(1))
                    refresh_ms.append(int(match.group(2)))
            page.wait_for_timeout(500)
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
    return {"range": range_key, "brands": brand_query, "first_chart_s": round(first_chart_s, 2),
            "refresh_ms": refresh_ms,
            "refresh_median_ms": statistics.median(refresh_ms) if refresh_ms else None,
            "refresh_max_ms": max(refresh_ms) if refresh_ms else None}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['range']}\n{r['brands']} brand(s)" for r in result["queries"]]
    left.bar(labels, [r["median_ms"] for r in result["queries"]], color="#4c78a8", label="median")
    left.scatter(labels, [r["p95_ms"] for r in result["queries"]], color="#e45756", zorder=3, label="p95")
    left.set_ylabel("ms"); left.set_title("refresh path queries (in process)"); left.legend()
    left.tick_params(axis="x", labelsize=7)
    browser = result["browser"]
    names = [f"{b['range']}\n{len(b['brands'].split(','))} brand(s)" for b in browser]
    right.bar([f"{n}\nfirst chart" for n in names], [b["first_chart_s"] * 1000 for b in browser], color="#72b7b2")
    right.bar([f"{n}\nrefresh" for n in names], [b["refresh_median_ms"] or 0 for b in browser], color="#f58518")
    right.axhline(1000, color="grey", linestyle="--", linewidth=1)
    right.set_ylabel("ms"); right.set_title("browser: first chart and live refresh (target < 1 s)")
    right.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"dashboard, {result['config']['days']} d x 1 min, {result['config']['brands']} brands x 28 emotions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--brands", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--refreshes", type=int, default=5)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    brands = [f"brand{i:02d}" for i in range(args.brands)]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = start_redis(log_dir=workdir)
        try:
            client = queries.connect(server.url, 10)
            now = int(time.time() * 1000)
            seeding = seed(client, brands, args.days, now, rng)
            print(f"seeded {seeding['samples']:,} samples in {seeding['seconds']} s ({seeding['samples_per_s']:,}/s)")
            memory_mb = round(client.info("memory")["used_memory"] / 2**20, 1)
            query_rows = time_queries(client, brands, args.repeats)
            browser = []
            for range_key, brand_query, shot in (("7d", brands[0], None), ("24h", ",".join(brands[:3]), None),
                                                 ("1h", brands[0], RESULTS / "dashboard_screenshot.png")):
                print(f"browser: {range_key} {brand_query} ...", flush=True)
                browser.append(time_browser(server.url, range_key, brand_query, args.refreshes, workdir, shot))
        finally:
            server.stop()
    result = {
        "config": {"days": args.days, "brands": args.brands, "emotions": len(EMOTIONS), "repeats": args.repeats},
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "note": "shared 2-core VM, other jobs running"},
        "seeding": seeding, "redis_used_memory_mb": memory_mb, "queries": query_rows, "browser": browser,
        "target_refresh_ms": 1000,
    }
    (RESULTS / "dashboard.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / "dashboard_timings.png")
    print(f"\nRedis memory {memory_mb} MB")
    print(f"{'range':<18}{'brands':>7}{'tier':>6}{'bucket':>10}{'median ms':>11}{'p95 ms':>9}")
    for row in query_rows:
        print(f"{row['range']:<18}{row['brands']:>7}{row['tier']:>6}{row['bucket_ms'] // 60_000:>8} m"
              f"{row['median_ms']:>11}{row['p95_ms']:>9}")
    for b in browser:
        print(f"browser {b['range']:<4} {b['brands']:<30} first chart {b['first_chart_s']:.2f} s, "
              f"refresh median {b['refresh_median_ms']} ms, max {b['refresh_max_ms']} ms ({b['refresh_ms']})")
    print(f"wrote {RESULTS / 'dashboard.json'}")


if __name__ == "__main__":
    main()
