"""Where the worker's input ceiling comes from: the same pre-filled posts topic in tansu read three ways.

    python bench/consume_ceiling.py                    # 40,000 posts, batch 256; writes bench/results/consume-ceiling.json
    python bench/consume_ceiling.py --posts 20000 --skip-worker

* ``aiokafka``: a bare ``AIOKafkaConsumer`` in its own process, ``getmany`` in a loop, no processing, the worker's
  fetch wait (``EM_MONITOR_FETCH_MAX_WAIT_MS``) and aiokafka's default fetch sizes: what the broker and the client
  library can deliver to one Python process here.
* ``faust``: the worker's own Faust app (``monitor.app.new_app``: the same configuration and consumer) with one agent
  that only does ``stream.noack_take(max_batch, within=max_wait)`` and acks every event, no processing: Faust's
  ceiling.
* ``worker``: the real ``emotion-monitor worker`` with ``bench/null_model.py`` (as ``bench/throughput.py --model
  null``): everything but the model; once with ``EM_MONITOR_CONSUMER=faust`` (the Faust agent's stream) and once with
  the default ``batch`` (``monitor/batch_consumer.py``: aiokafka ``getmany`` inside the Faust app).

Every reader starts in a fresh consumer group at the topic's start, so each reads the same posts. Rates are timed from
the first record (or first counted post) to the last, so joining the group is left out; CPU is the reader's process
(all its threads; for the worker, without its inference child) over the same span. tansu's CPU over each whole run
is reported beside it: on 2 cores the broker competes with the reader.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPIC = "posts"


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def _result(posts: int, first_wall: float, first_cpu: float, **extra) -> dict:
    seconds = time.perf_counter() - first_wall
    cpu = _cpu_self() - first_cpu
    return {"posts": posts, "seconds": seconds, "posts_per_s": posts / seconds, "cpu_us_per_post": cpu / posts * 1e6,
            **extra}


# ---- readers (each runs in its own process: ``--role``) --------------------------------------------------------------

async def read_aiokafka(bootstrap: str, n: int, fetch_max_wait_ms: int, max_records: int | None,
                        partition_fetch_bytes: int, partitions: int) -> dict:
    """Partitions assigned by hand (no group to join); timed from the first ``getmany`` call: a consumer's first fetch
    of a full topic brings up to ``partition_fetch_bytes`` per partition at once."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=fetch_max_wait_ms, max_partition_fetch_bytes=partition_fetch_bytes)
    await consumer.start()
    consumer.assign([TopicPartition(TOPIC, p) for p in range(partitions)])
    await consumer.seek_to_beginning()
    seen, calls = 0, 0
    try:
        first_wall, first_cpu = time.perf_counter(), _cpu_self()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            got = sum(len(rows) for rows in batch.values())
            seen += got
            calls += 1 if got else 0
        return _result(seen, first_wall, first_cpu, getmany_calls=calls, mean_batch=seen / calls)
    finally:
        await consumer.stop()


def read_faust(bootstrap: str, n: int, group: str, max_batch: int, max_wait: float, result_path: Path,
               overrides: dict) -> None:
    import faust

    from monitor.app import new_app
    from monitor.settings import MonitorSettings

    settings = MonitorSettings(broker_url=f"kafka://{bootstrap}", group_id=group, max_batch=max_batch,
                               max_wait=max_wait, metrics_port=0)
    app = new_app(settings, **overrides)
    topic = app.topic(TOPIC, partitions=settings.topic_partitions, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    state = {"seen": 0, "batches": 0}

    @app.agent(topic)
    async def take_and_ack(stream):
        async for events in stream.noack_take(max_batch, within=max_wait):
            if "first_wall" not in state:
                state["first_wall"], state["first_cpu"] = time.perf_counter(), _cpu_self()
                state["seen"] -= 1  # timed from the first record on
            for event in events:
                await stream.ack(event)
            state["seen"] += len(events)
            state["batches"] += 1
            if state["seen"] >= n - 1:  # every post read (the first one only started the clock)
                result = _result(state["seen"], state["first_wall"], state["first_cpu"],
                                 batches=state["batches"], mean_batch=(state["seen"] + 1) / state["batches"])
                result_path.write_text(json.dumps(result))
                os._exit(0)  # a measurement, not a service: no graceful stop needed

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.spinner = None  # as the worker: the spinner sets the root logger to DEBUG
    worker.execute_from_commandline()


# ---- the driver ------------------------------------------------------------------------------------------------------

def load_posts(n: int) -> list[bytes]:
    from bench.throughput import BRAND, DATA, load_texts

    if DATA.exists():
        texts = load_texts(n)
    else:  # a checkout without the data set: texts of a similar length
        texts = [f"post number {i} about the bench brand and how it made someone feel today" for i in range(1000)]
    return [json.dumps({"id": f"c-{i}", "brand": BRAND, "text": texts[i % len(texts)]}).encode() for i in range(n)]


async def prefill(bootstrap: str, posts: list[bytes], partitions: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(TOPIC, value) for value in posts]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_role(role_args: list[str], broker_pid: int, timeout: float) -> dict:
    """One reader in its own process; its JSON result plus tansu's CPU over the whole run."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    broker_cpu = _cpu_of(broker_pid)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *role_args, "--result", str(result_path)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - started
    text = result_path.read_text() if result_path.exists() else ""
    result_path.unlink(missing_ok=True)
    if not text:
        raise RuntimeError(f"{role_args[:2]} gave no result (rc {proc.returncode}):\n{proc.stdout[-2000:]}"
                           f"\n{proc.stderr[-4000:]}")
    result = json.loads(text)
    result["process_wall_s"] = wall
    result["tansu_cpu_us_per_post_whole_run"] = (_cpu_of(broker_pid) - broker_cpu) / result["posts"] * 1e6
    return result


def run_worker(kafka, redis_server, n: int, batch: int, max_wait: float, port: int, workdir: Path,
               consumer: str) -> dict:
    """The real worker with the null model, started on the pre-filled topic; timed from its first counted post."""
    import psutil
    import redis

    from bench.throughput import posts_total, start_worker

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    args = SimpleNamespace(max_wait=max_wait, device="cpu", inference_batch=0, cpu_precision="int8", partitions=4,
                           model="null", consumer=consumer, group_id=f"ceil-worker-{consumer}")
    broker_cpu = _cpu_of(kafka.pid)
    worker = start_worker(kafka, redis_server.url, args, batch, workdir / f"worker-{consumer}.log", port)
    try:
        deadline = time.time() + 120 + n / 100
        first = None
        while True:
            total = posts_total(client)
            now = time.perf_counter()
            if total and first is None:
                first = (now, total, sum(psutil.Process(worker.pid).cpu_times()[:2]))
            if total >= n:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode} (log {workdir / f'worker-{consumer}.log'})")
            if time.time() > deadline:
                raise TimeoutError(f"only {total} of {n} posts counted")
            time.sleep(0.02)
        cpu = sum(psutil.Process(worker.pid).cpu_times()[:2]) - first[2]
        posts = total - first[1]
        return {"posts": posts, "seconds": now - first[0], "posts_per_s": posts / (now - first[0]),
                "cpu_us_per_post": cpu / posts * 1e6,
                "tansu_cpu_us_per_post_whole_run": (_cpu_of(kafka.pid) - broker_cpu) / n * 1e6}
    finally:
        worker.terminate()
        worker.wait(60)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["aiokafka", "faust"], help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-records", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--partition-fetch-bytes", type=int, default=1024**2, help=argparse.SUPPRESS)
    parser.add_argument("--faust-settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--posts", type=int, default=40000)
    parser.add_argument("--batch", type=int, default=256, help="EM_MONITOR_MAX_BATCH of the Faust reader and worker")
    parser.add_argument("--max-wait", type=float, default=0.25, help="EM_MONITOR_MAX_WAIT of the Faust reader and worker")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=100, help="the consumers' fetch wait")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--skip-worker", action="store_true", help="only the two bare readers")
    parser.add_argument("--metrics-port", type=int, default=9128)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "consume-ceiling.json")
    args = parser.parse_args()

    if args.role == "aiokafka":
        result = asyncio.run(read_aiokafka(args.bootstrap, args.posts, args.fetch_max_wait_ms,
                                           args.max_records or None, args.partition_fetch_bytes, args.partitions))
        args.result.write_text(json.dumps(result))
        return
    if args.role == "faust":
        read_faust(args.bootstrap, args.posts, args.group, args.batch, args.max_wait, args.result,
                   json.loads(args.faust_settings))
        return

    from emotion_monitor.servers import start_redis, start_tansu

    workdir = Path(tempfile.mkdtemp(prefix="em-ceiling-"))
    kafka = start_tansu(log_dir=workdir)
    redis_server = None if args.skip_worker else start_redis(log_dir=workdir)
    bootstrap = f"127.0.0.1:{kafka.port}"
    results: dict = {"command": " ".join(["python", "bench/consume_ceiling.py", *sys.argv[1:]]),
                     "cpus": os.cpu_count(), "posts": args.posts, "batch": args.batch, "max_wait": args.max_wait,
                     "fetch_max_wait_ms": args.fetch_max_wait_ms, "partitions": args.partitions, "readers": {}}
    try:
        posts = load_posts(args.posts)
        results["mean_post_bytes"] = sum(map(len, posts)) / len(posts)
        asyncio.run(prefill(bootstrap, posts, args.partitions))
        common = ["--bootstrap", bootstrap, "--posts", str(args.posts), "--fetch-max-wait-ms",
                  str(args.fetch_max_wait_ms), "--partitions", str(args.partitions)]
        readers = {
            "aiokafka_getmany": ["--role", "aiokafka", *common],
            "aiokafka_getmany_256_records": ["--role", "aiokafka", "--max-records", str(args.batch), *common],
            "faust_noack_take_ack": ["--role", "faust", "--group", "ceil-faust", "--batch", str(args.batch),
                                     "--max-wait", str(args.max_wait), *common],
            "faust_noack_take_ack_buffer_65536": ["--role", "faust", "--group", "ceil-faust-buf", "--batch",
                                                  str(args.batch), "--max-wait", str(args.max_wait), *common,
                                                  "--faust-settings", json.dumps({"stream_buffer_maxsize": 65536})],
        }
        for name, role_args in readers.items():
            load = os.getloadavg()[0]
            results["readers"][name] = {**run_role(role_args, kafka.pid, timeout=90 + args.posts / 500),
                                        "load_avg_before": load}
            _print(name, results["readers"][name])
        for consumer in [] if args.skip_worker else ["faust", "batch"]:
            name = f"worker_null_model_{consumer}_consumer"
            load = os.getloadavg()[0]
            results["readers"][name] = {
                **run_worker(kafka, redis_server, args.posts, args.batch, args.max_wait, args.metrics_port, workdir,
                             consumer),
                "load_avg_before": load}
            _print(name, results["readers"][name])
    finally:
        kafka.stop()
        if redis_server:
            redis_server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


def _print(name: str, row: dict) -> None:
    print(f"{name:40s} {row['posts_per_s']:9,.0f} posts/s  {row['cpu_us_per_post']:7.1f} µs CPU/post  "
          f"(tansu {row['tansu_cpu_us_per_post_whole_run']:.1f} µs/post over the run, load {row['load_avg_before']:.1f})",
          flush=True)


if __name__ == "__main__":
    main()
