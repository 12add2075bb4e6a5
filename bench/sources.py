"""Source benchmark: a local Jetstream server replays posts at a fixed rate to `emotion-monitor source bluesky`,
which feeds a real worker; measures the delay from the moment the server sends a post to the moment it is counted
in Redis, and the source's own CPU per 1,000 posts. Prints the figures and writes JSON (+ a PNG) to bench/results/.

    python bench/sources.py                          # 500 posts/s for 60 s after 10 s of warm-up, CPU worker
    python bench/sources.py --rate 1000 --seconds 30 --no-worker   # the source alone (delay to the posts topic)
    python bench/sources.py --model null             # the worker with bench/null_model.py: source + pipeline delay
                                                     # apart from the model's capacity (~330 posts/s on 2 CPU cores)

Everything is real: tansu + Redis Stack started here, the WebSocket server of the tests (tests/sources/servers.py,
Jetstream's protocol), the source and the worker as subprocesses. Each frame's ``time_us`` and ``createdAt`` are
stamped when the server sends it, so per post:

* source -> Kafka:  arrival on the ``posts`` topic (read by this script) - createdAt;
* source -> Redis:  arrival on ``posts.classified`` (the worker publishes it right after its Redis write) - createdAt;
* source CPU:       user + system CPU seconds of the source process (/proc/<pid>/stat) over the measured window,
                    per 1,000 posts it had acknowledged in that window.

Posts are tagged ``--brand bench`` so today's worker (which needs a brand) counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion_monitor.servers import free_port, http_ok, start_redis, start_tansu  # noqa: E402
from emotion_monitor.topics import ensure_topics  # noqa: E402
from tests.sources.servers import JetstreamServer, post_event  # noqa: E402

DATA = Path(os.environ.get("EMOTION_MONITOR_DATA_DIR", ROOT.parent / "shared" / "data" / "goemotions")) / "dev.tsv"


def load_texts(n: int) -> list[str]:
    if DATA.exists():
        lines = [line.split("\t")[0] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:  # a clone without the shared data: varied synthetic texts of tweet length
        lines = [f"post {i}: the new flat white is {'great' if i % 3 else 'awful'} " + "word " * (i % 20)
                 for i in range(500)]
    return [lines[i % len(lines)] for i in range(n)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{")
               or line.startswith(name + " "))


async def collect(bootstrap: str, topics: list[str], start_ms: float, end_ms: float, timeout: float) -> dict:
    """Delay (arrival - createdAt) of every post created in [start_ms, end_ms), per topic."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                fetch_max_wait_ms=50, enable_auto_commit=False)
    await consumer.start()
    delays: dict[str, dict[str, float]] = {topic: {} for topic in topics}
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for tp, rows in batch.items():
                for row in rows:
                    body = json.loads(row.value)
                    created = body.get("created_at")
                    if isinstance(created, (int, float)) and start_ms <= created < end_ms:
                        delays[tp.topic].setdefault(body["id"], (now_ms - created) / 1000)  # first arrival counts
            if time.time() * 1000 > end_ms + 2000:
                window = len(delays[topics[0]])
                if all(len(delays[topic]) >= window for topic in topics):  # every post of the window arrived
                    break
    finally:
        await consumer.stop()
    return {topic: list(values.values()) for topic, values in delays.items()}


def warm_up_worker(kafka_url: str, redis_url: str, texts: list[str], worker: subprocess.Popen) -> None:
    """Posts straight to the topic until the worker has counted them all: it has joined its group and built its
    kernels before the measured stream starts (as bench/throughput.py does)."""
    import redis
    from aiokafka import AIOKafkaProducer

    from emotion_monitor.topics import bootstrap_servers
    from monitor import schema

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url), acks="all", linger_ms=10)
        await producer.start()
        try:
            for i, text in enumerate(texts):
                await producer.send("posts", json.dumps({"id": f"warm-{i}", "brand": "bench", "text": text}).encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    client = redis.Redis.from_url(redis_url)
    key = schema.series_key("bench", schema.ALL_EMOTIONS, "posts")
    deadline = time.time() + 600
    while time.time() < deadline:
        if client.exists(key):
            rows = client.ts().range(key, 0, "+", aggregation_type="sum", bucket_size_msec=10**13)
            if sum(value for _, value in rows) >= len(texts):
                return
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}")
        time.sleep(0.5)
    raise TimeoutError("the worker did not count the warm-up posts within 600 s")


def summary(delays: list[float]) -> dict:
    if not delays:
        return {"posts": 0}
    array = np.array(delays)
    return {"posts": int(array.size), "p50_s": float(np.percentile(array, 50)),
            "p95_s": float(np.percentile(array, 95)), "p99_s": float(np.percentile(array, 99)),
            "max_s": float(array.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="Posts per second the server sends")
    parser.add_argument("--seconds", type=float, default=60.0, help="Measured seconds")
    parser.add_argument("--warmup-seconds", type=float, default=10.0, help="Seconds sent before measuring")
    parser.add_argument("--no-worker", action="store_true", help="The source alone: delay to the posts topic only")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="The worker's device")
    parser.add_argument("--model", default=None, help="'null': the worker loads bench/null_model.py (fixed "
                        "probabilities at once, through EM_MONITOR_MODEL_LOADER), so the delay is the source's and "
                        "the pipeline's alone; default: the worker's shipped model")
    parser.add_argument("--out", default=None, help="JSON output (default bench/results/sources.json)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    total = int(args.rate * (args.warmup_seconds + args.seconds))
    texts = load_texts(total)
    kafka, redis_server = start_tansu(log_dir=work), start_redis(log_dir=work)
    server = JetstreamServer(rate=args.rate, stamp_now=True)
    children: list[subprocess.Popen] = []
    exe = str(Path(sys.executable).parent / "emotion-monitor")
    try:
        ensure_topics(kafka.url, {"posts": 4, "posts.dlq": 1, "posts.classified": 4, "alerts": 1})
        worker_port, source_port = free_port(), free_port()
        if not args.no_worker:
            env = {k: v for k, v in os.environ.items() if not k.startswith("EM_MONITOR_")}
            env.update({"EM_MONITOR_BROKER_URL": kafka.url, "EM_MONITOR_REDIS_URL": redis_server.url,
                        "EM_MONITOR_METRICS_PORT": str(worker_port), "EM_MONITOR_DEVICE": args.device,
                        "EM_MONITOR_TOPIC_PARTITIONS": "4", "TOKENIZERS_PARALLELISM": "false"})
            if args.model == "null":  # importable from the repository root in the worker's inference child
                env["EM_MONITOR_MODEL_LOADER"] = "bench.null_model:load_classifier"
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            elif args.model:
                env["EM_MONITOR_MODEL_PATH"] = args.model
            worker = subprocess.Popen([exe, "worker"], env=env, stdout=open(work / "worker.log", "ab"),
                                      stderr=subprocess.STDOUT, start_new_session=True, cwd=work)
            children.append(worker)
            deadline = time.time() + 300
            while not http_ok(f"http://127.0.0.1:{worker_port}/health"):
                if worker.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"worker did not start: {(work / 'worker.log').read_text()[-2000:]}")
                time.sleep(0.5)
            warm_up_worker(kafka.url, redis_server.url, texts[:1000], worker)
        env = {**os.environ, "EM_SOURCE_KAFKA_URL": kafka.url, "EM_SOURCE_REDIS_URL": redis_server.url,
               "EM_SOURCE_BLUESKY_ENDPOINT": server.url, "EM_SOURCE_METRICS_PORT": str(source_port),
               "EM_SOURCE_BRAND": "bench"}
        source = subprocess.Popen([exe, "source", "bluesky"], env=env, stdout=open(work / "source.log", "ab"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        children.append(source)
        while not http_ok(f"http://127.0.0.1:{source_port}/health"):
            if source.poll() is not None:
                raise RuntimeError(f"source exited: {(work / 'source.log').read_text()[-2000:]}")
            time.sleep(0.2)

        start_ms = time.time() * 1000 + args.warmup_seconds * 1000
        end_ms = start_ms + args.seconds * 1000
        topics = ["posts"] + ([] if args.no_worker else ["posts.classified"])

        async def run() -> dict:
            collector = asyncio.create_task(collect(kafka.url.split("//")[-1], topics, start_ms, end_ms,
                                                    args.warmup_seconds + args.seconds + 300))
            await asyncio.sleep(1.0)  # the consumer is assigned before the first frame is sent
            base = 1_725_911_162_000_000
            server.publish(*[post_event("did:plc:bench", f"3kb{i:07d}", base + i, text)
                             for i, text in enumerate(texts)])
            sent_at = time.time()
            await asyncio.sleep(max(0.0, start_ms / 1000 - time.time()))
            cpu0, posts0 = cpu_seconds(source.pid), scrape(source_port, "em_source_posts_total")
            await asyncio.sleep(max(0.0, end_ms / 1000 - time.time()))
            cpu1, posts1 = cpu_seconds(source.pid), scrape(source_port, "em_source_posts_total")
            delays = await collector
            return {"delays": delays, "cpu_s": cpu1 - cpu0, "posts": posts1 - posts0,
                    "send_seconds": time.time() - sent_at}

        measured = asyncio.run(run())
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        server.close()
        kafka.stop()
        redis_server.stop()

    to_kafka = summary(measured["delays"]["posts"])
    to_redis = summary(measured["delays"].get("posts.classified", []))
    if not args.no_worker:  # posts of the window not classified before the collection timeout are not in the delays
        to_redis["posts_sent_in_window"] = to_kafka.get("posts", 0)
    cpu_per_1000 = 1000 * measured["cpu_s"] / measured["posts"] if measured["posts"] else None
    results = {
        "command": " ".join(["python", "bench/sources.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]},
        "rate_posts_per_s": args.rate, "measured_seconds": args.seconds, "warmup_seconds": args.warmup_seconds,
        "worker_device": None if args.no_worker else args.device,
        "worker_model": None if args.no_worker else (args.model or "shipped default"),
        "source_to_kafka": to_kafka, "source_to_redis": to_redis,
        "source_cpu_seconds": measured["cpu_s"], "source_posts_in_window": measured["posts"],
        "source_cpu_seconds_per_1000_posts": cpu_per_1000,
        "target": {"p95_source_to_redis_s": 2.0,
                   "met": bool(to_redis.get("p95_s") is not None and to_redis["p95_s"] < 2.0)},
    }
    print(json.dumps(results, indent=2))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / "sources.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        for topic, label in (("posts", "source -> Kafka"), ("posts.classified", "source -> Redis (worker)")):
            values = np.sort(measured["delays"].get(topic) or [])
            if values.size:  # cumulative share of posts by delay; log scale: seconds and minutes on one axis
                ax.plot(values, np.arange(1, values.size + 1) / values.size,
                        label=f"{label}: p95 {np.percentile(values, 95):.2f} s ({values.size} of "
                              f"{len(measured['delays']['posts'])} posts)")
        ax.axvline(2.0, color="red", linestyle="--", label="target p95 < 2 s")
        ax.axhline(0.95, color="grey", linewidth=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("delay after the Jetstream server sent the post (s)")
        ax.set_ylabel("share of posts")
        ax.set_title(f"Bluesky source at {args.rate:.0f} posts/s{', null model' if args.model == 'null' else ''} "
                     f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.0f})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=110)
    except Exception as exc:  # noqa: BLE001 - the JSON is the result; the plot is a convenience
        print(f"no plot: {exc}", file=sys.stderr)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
