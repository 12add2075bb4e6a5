"""Monitor test helpers: a real model artifact, a real worker subprocess, real Kafka produce/consume."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from emotion_monitor.children import spawn

ROOT = Path(__file__).resolve().parents[2]
EMOTION_MONITOR = str(Path(sys.executable).parent / "emotion-monitor")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A real artifact written by the trainer's save function (untrained head): loads and predicts like a trained
    one. Used where only counting matters; quality-dependent tests use the shipped default model."""
    from trainer import make_untrained_artifact

    return make_untrained_artifact(tmp_path_factory.mktemp("model") / "untrained", max_length=64)


def kafka_bootstrap(broker) -> str:
    return f"127.0.0.1:{broker.port}"


def monitor_env(broker, redis_url: str, model_dir: Path | None, **overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_MONITOR_")}
    env.update({
        "EM_MONITOR_BROKER_URL": broker.url,
        "EM_MONITOR_REDIS_URL": redis_url,
        "EM_MONITOR_MAX_BATCH": "32",
        "EM_MONITOR_MAX_WAIT": "0.2",
        "EM_MONITOR_METRICS_PORT": "0",
        "EM_MONITOR_TOPIC_PARTITIONS": "3",
        "EM_MONITOR_LOG_LEVEL": "warning",
        "TOKENIZERS_PARALLELISM": "false",
    })
    if model_dir is not None:
        env["EM_MONITOR_MODEL_PATH"] = str(model_dir)
    for key, value in overrides.items():
        env[f"EM_MONITOR_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


class Worker:
    """``emotion-monitor worker`` as a real child process: a :class:`~emotion_monitor.children.ChildProcess` (own
    session; ``stop`` takes the whole group, so the worker's inference child goes too). ``signal`` reaches the worker
    alone, as a ``kill`` of its pid would."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.child = spawn("worker", [EMOTION_MONITOR, "worker"], log_path, env, cwd=ROOT)
        self.process = self.child.process

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        self.child.stop(timeout=20)

    def log_tail(self, n: int = 4000) -> str:
        return self.child.log_tail(n)


@pytest.fixture()
def start_worker(tmp_path):
    workers: list[Worker] = []

    def start(env: dict[str, str]) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def create_topic(broker, topic: str, partitions: int = 3) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap(broker))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(run())


def produce(broker, topic: str, values: list[bytes], timestamps_ms: list[int] | None = None,
            keys: list[bytes | None] | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap(broker), linger_ms=5)
        await producer.start()
        try:
            futures = []
            for i, value in enumerate(values):
                futures.append(await producer.send(
                    topic, value, key=keys[i] if keys else None,
                    timestamp_ms=timestamps_ms[i] if timestamps_ms else None))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


def consume_all(broker, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Read a topic from the beginning (no group) until ``expected`` records arrived or the timeout passed."""
    from aiokafka import AIOKafkaConsumer

    async def run():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap(broker), auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        records = []
        try:
            deadline = time.monotonic() + timeout
            while len(records) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for rows in batch.values():
                    records.extend(rows)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(run())


def committed_total(broker, topic: str = "posts", partitions: int = 3, group: str = "emotion-monitor") -> int:
    """Sum of the consumer group's committed offsets on ``topic`` (OffsetFetch with explicit partitions, which tansu
    answers; the consumer never subscribes, so it does not join or disturb the group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap(broker), group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
        finally:
            await consumer.stop()
        return sum(o for o in offsets if o is not None and o > 0)

    return asyncio.run(run())


def committed_offsets(broker, topic: str = "posts", partitions: int = 3, group: str = "emotion-monitor") -> dict:
    """The consumer group's committed offset per partition of ``topic`` (0 where none), read like committed_total."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap(broker), group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            offsets = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
        finally:
            await consumer.stop()
        return {p: o if o is not None and o > 0 else 0 for p, o in offsets.items()}

    return asyncio.run(run())


def prefilled_posts_env(broker, redis_url: str, model_dir: Path, n: int, brands, **overrides) -> dict[str, str]:
    """A fresh 3-partition ``posts`` topic holding ``n`` posts spread over ``brands``, and the worker env to count
    them (small batches, so a kill or a stop lands between batches)."""
    from tests.monitor.posts_data import encode, make_posts

    create_topic(broker, "posts", 3)
    produce(broker, "posts", encode(make_posts(n, brands)))
    return monitor_env(broker, redis_url, model_dir, **{"max_batch": "16", **overrides})


def written_total(redis_client, brands) -> int:
    """Posts counted in Redis over ``brands``."""
    return sum(posts_total(redis_client, b) for b in brands)


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition", worker: Worker | None = None):
    from redis.exceptions import ConnectionError as RedisConnectionError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except RedisConnectionError:  # includes "loading the dataset" right after a Redis restart
            value = None
        if value:
            return value
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker exited ({worker.process.returncode}) waiting for {what}:\n{worker.log_tail()}")
        time.sleep(interval)
    tail = f"\n{worker.log_tail()}" if worker else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def predicted(inference, texts):
    """Probabilities from a loaded :class:`monitor.inference.Inference`, through the worker's own (async) path."""
    proba, _seconds = asyncio.run(inference.predict(list(texts)))
    return proba


def posts_total(redis_client, brand: str) -> int:
    from monitor import schema

    key = schema.series_key(brand, schema.ALL_EMOTIONS, "posts")
    if not redis_client.exists(key):
        return 0
    rows = redis_client.ts().range(key, 0, "+")
    return int(sum(v for _, v in rows))


def emotion_totals(redis_client, brand: str, metric: str = "count") -> dict[str, float]:
    """Per-emotion totals through the dashboard's own query shape (MRANGE FILTER ... tier=raw GROUPBY emotion)."""
    from monitor import schema

    rows = redis_client.ts().mrange(
        0, "+", [f"app={schema.APP_LABEL}", f"brand={brand}", f"metric={metric}", "tier=raw"],
        aggregation_type="sum", bucket_size_msec=10**13, groupby="emotion", reduce="sum",
    )
    totals = {}
    for row in rows:
        for name, (labels, samples) in row.items():
            totals[name.split("=", 1)[1]] = sum(v for _, v in samples)
    return totals


class WebhookServer:
    """A real local HTTP server recording POSTed JSON bodies; ``fail_first`` answers 500 that many times first."""

    def __init__(self, fail_first: int = 0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received, state = [], {"fail": fail_first, "attempts": 0}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                state["attempts"] += 1
                if state["fail"] > 0:
                    state["fail"] -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received, self.state = received, state
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def webhook():
    servers: list[WebhookServer] = []

    def make(fail_first: int = 0) -> WebhookServer:
        servers.append(WebhookServer(fail_first))
        return servers[-1]

    yield make
    for server in servers:
        server.close()
