"""What every live source shares: the Kafka producer with ordered acknowledgements, the Redis checkpoint, metrics,
back-off and a clean SIGTERM.

A source is an async generator of :class:`Item`: a *position* (where a restart would resume after this item: a
Jetstream cursor, a file offset, a Mastodon status id) and either a post (a dict, see ``monitor.post``) or the
reason it was skipped. :class:`SourceRunner` sends the posts, and advances the checkpoint only over items whose
posts the broker has acknowledged, in order.

Delivery guarantee: **at-least-once**. The checkpoint in Redis is written only for positions whose posts (and every
earlier one) were acknowledged by Kafka (acks=all), so a crash, ``kill -9`` or lost connection replays from at most
``checkpoint_interval_s`` + the in-flight window before the failure; nothing is skipped. Replayed posts keep their
``id`` and the worker counts each id once. A skipped item (a delete, another collection, a malformed frame) moves
the position too, and is counted in ``em_source_skipped_total`` by reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from emotion_monitor.sources.settings import SourceSettings
from emotion_monitor.topics import bootstrap_servers

__all__ = ["AckTracker", "CheckpointStore", "DeliveryFailed", "Item", "SourceMetrics", "SourceRunner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One event of a stream. ``position`` None: it does not move the checkpoint (e.g. a frame without a cursor)."""

    position: Any
    post: dict | None = None
    skipped: str | None = None  # reason, when ``post`` is None
    event_time: float | None = None  # unix seconds the network stamped the event (for the lag gauge)
    dead_letter: bytes | None = None  # a record for the dead-letter topic instead of a post (jsonl's bad lines)


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a post: the stream restarts from the last checkpoint."""


class AckTracker:
    """Positions in stream order with their delivery futures; :meth:`advance` returns the newest position whose item
    and every earlier item are acknowledged (raising :class:`DeliveryFailed` at the first failed one)."""

    def __init__(self) -> None:
        self._pending: deque[tuple[Any, asyncio.Future | None, bool]] = deque()
        self.acked_position: Any = None
        self.acked_posts = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, position: Any, delivery: asyncio.Future | None, is_post: bool = True) -> None:
        """Track one item; ``is_post`` False: a delivery that is not a post (a dead letter), not counted as one."""
        self._pending.append((position, delivery, is_post and delivery is not None))

    def advance(self) -> Any:
        while self._pending:
            position, delivery, is_post = self._pending[0]
            if delivery is not None:
                if not delivery.done():
                    break
                if delivery.cancelled() or delivery.exception() is not None:
                    error = "cancelled" if delivery.cancelled() else repr(delivery.exception())
                    self._pending.clear()
                    raise DeliveryFailed(f"a post was not acknowledged by the broker: {error}")
                self.acked_posts += is_post
            self._pending.popleft()
            if position is not None:
                self.acked_position = position
        return self.acked_position

    async def wait_oldest(self) -> None:
        """Wait until the oldest pending delivery completes (back-pressure when too many are in flight)."""
        for _, delivery, _ in self._pending:
            if delivery is not None and not delivery.done():
                await asyncio.wait([delivery])
                return

    async def drain(self, timeout: float | None = None) -> Any:
        """Wait for every pending delivery (up to ``timeout``), then :meth:`advance`."""
        waiting = [delivery for _, delivery, _ in self._pending if delivery is not None and not delivery.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        return self.advance()

    def forget(self) -> None:
        self._pending.clear()


class CheckpointStore:
    """The resume position of one source, as JSON at one Redis key. Writes only move it; a failed write is logged
    and retried at the next interval (a stale checkpoint means more replay, never a loss)."""

    def __init__(self, redis_url: str, key: str) -> None:
        import redis.asyncio as aioredis

        self.key = key
        self._client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    async def load(self) -> Any:
        raw = await self._client.get(self.key)
        return None if raw is None else json.loads(raw)["position"]

    async def save(self, position: Any) -> None:
        await self._client.set(self.key, json.dumps({"position": position, "saved_at": time.time()}))

    async def close(self) -> None:
        await self._client.aclose()


class SourceMetrics:
    """Prometheus metrics of one source process (own registry, so several runners can live in one test process)."""

    def __init__(self, source: str) -> None:
        self.registry = CollectorRegistry()
        self.source = source
        self.posts = Counter("em_source_posts_total", "Posts acknowledged by the broker", ["source"],
                             registry=self.registry).labels(source)
        self.skipped = Counter("em_source_skipped_total", "Events skipped (not a new post), by reason",
                               ["source", "reason"], registry=self.registry)
        self.dead_letters = Counter("em_source_dead_letters_total", "Unreadable input sent to the dead-letter topic",
                                    ["source"], registry=self.registry).labels(source)
        self.reconnects = Counter("em_source_reconnects_total", "Stream restarts after a disconnect or failure",
                                  ["source", "cause"], registry=self.registry)
        self.checkpoints = Counter("em_source_checkpoint_writes_total", "Checkpoint writes to Redis", ["source"],
                                   registry=self.registry).labels(source)
        self.checkpoint_errors = Counter("em_source_checkpoint_errors_total", "Failed checkpoint writes", ["source"],
                                         registry=self.registry).labels(source)
        self.in_flight = Gauge("em_source_in_flight", "Posts sent and not yet acknowledged", ["source"],
                               registry=self.registry).labels(source)
        self.connected = Gauge("em_source_connected", "1 while the stream is connected", ["source"],
                               registry=self.registry).labels(source)
        self.lag = Histogram("em_source_lag_seconds", "Event time stamped by the network -> sent to Kafka", ["source"],
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600), registry=self.registry
                             ).labels(source)

    def skip(self, reason: str) -> None:
        self.skipped.labels(self.source, reason).inc()

    def reconnect(self, cause: str) -> None:
        self.reconnects.labels(self.source, cause).inc()

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"source": self.source, **labels}) or 0.0


class Backoff:
    """Exponential back-off, reset after a connection that delivered events."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.delay = initial

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


StreamFactory = Callable[[Any], AsyncIterator[Item]]


def partition_by_key(key: bytes, all_partitions: list[int], available: list[int]) -> int:
    """A post's partition from its id: CRC-32 (C, in zlib) instead of aiokafka's pure-Python murmur2, the largest
    single cost in a profile of the source (measured here: 62 µs per at-uri key vs 0.8 µs, of ~250-300 µs of CPU per
    post). Deterministic, so a replayed post goes to the partition its first copy went to."""
    if key is None:
        return (available or all_partitions)[0]
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


class SourceRunner:
    """Runs one source until SIGTERM/SIGINT (or, for a finite source, its end): stream -> Kafka -> checkpoint.

    ``stream(position)`` opens the source at a checkpoint position (None: the source's own start) and yields items;
    returning or raising means "disconnected": the runner waits for the in-flight posts, saves the checkpoint, backs
    off and opens the stream again from the checkpoint. ``finite=True`` (jsonl without --follow): a stream that
    returns normally ends the run.
    """

    def __init__(self, name: str, settings: SourceSettings, stream: StreamFactory, checkpoint_key: str, *,
                 topic: str, dlq_topic: str | None = None, finite: bool = False) -> None:
        self.name = name
        self.settings = settings
        self.stream = stream
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.finite = finite
        self.metrics = SourceMetrics(name)
        self.checkpoints = CheckpointStore(settings.redis_url, checkpoint_key)
        self.tracker = AckTracker()
        self.stop_requested = asyncio.Event()
        self._saved_position: Any = None
        self._producer = None
        self._http = None

    # ---- main loop -----------------------------------------------------------------------------------------------
    async def run(self, install_signal_handlers: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop_requested.set)
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        await self._start_http()
        try:
            position = await self._retry("reading the checkpoint from Redis", self.checkpoints.load, backoff)
            if self.stop_requested.is_set():
                return 0
            self._saved_position = position
            log.info("%s: starting from checkpoint %r (%s)", self.name, position, self.checkpoints.key)
            await self._retry("connecting to Kafka", self._start_producer, backoff)
            checkpointer = asyncio.create_task(self._checkpoint_loop())
            try:
                while not self.stop_requested.is_set():
                    consumer = asyncio.create_task(self._consume(position, backoff))
                    stopper = asyncio.create_task(self.stop_requested.wait())
                    await asyncio.wait([consumer, stopper], return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if not consumer.done():
                        consumer.cancel()
                    finished, cause = await self._outcome(consumer)
                    self.metrics.connected.set(0)
                    position = await self._settle()
                    if self.stop_requested.is_set() or (finished and self.finite):
                        break
                    self.metrics.reconnect(cause)
                    delay = backoff.next()
                    log.warning("%s: stream ended (%s); resuming from %r in %.1f s", self.name, cause, position, delay)
                    try:
                        await asyncio.wait_for(self.stop_requested.wait(), timeout=delay)
                    except asyncio.TimeoutError:
                        pass
            finally:
                checkpointer.cancel()
                await asyncio.gather(checkpointer, return_exceptions=True)
                await self._settle(final=True)
        finally:
            await self._close()
        log.info("%s: stopped at %r after %d posts", self.name, self._saved_position, self.tracker.acked_posts)
        return 0

    async def _outcome(self, consumer: asyncio.Task) -> tuple[bool, str]:
        """(the stream ended normally, why it ended) of a finished or cancelled consume task."""
        try:
            await consumer
            return True, "closed"
        except asyncio.CancelledError:
            if self.stop_requested.is_set():
                return False, "stop"
            raise
        except DeliveryFailed as exc:
            log.warning("%s: %s", self.name, exc)
            return False, "delivery"
        except Exception as exc:  # noqa: BLE001 - any stream failure means: reconnect from the checkpoint
            log.warning("%s: stream failed: %r", self.name, exc)
            return False, type(exc).__name__

    async def _consume(self, position: Any, backoff: Backoff) -> None:
        received = 0
        async for item in self.stream(position):
            if self.stop_requested.is_set():  # besides the task's cancellation, which a library may swallow
                return
            if item.post is not None:
                await self._send(item)
            elif item.dead_letter is not None:
                await self._dead_letter(item)
            else:
                self.metrics.skip(item.skipped or "unknown")
                self.tracker.add(item.position, None)
            received += 1
            if received == 1:
                self.metrics.connected.set(1)
                backoff.reset()
            if len(self.tracker) > self.settings.max_in_flight:
                await self.tracker.wait_oldest()  # back-pressure: stop reading until the broker catches up
            if received % 256 == 0:
                self.tracker.advance()  # raises DeliveryFailed promptly; keeps the pending queue short
                self.metrics.in_flight.set(len(self.tracker))

    async def _send(self, item: Item) -> None:
        post = item.post
        if self.settings.brand and "brand" not in post and "brands" not in post:
            post = {**post, "brand": self.settings.brand}
        value = json.dumps(post, ensure_ascii=False).encode("utf-8")
        delivery = await self._producer.send(self.topic, value, key=str(post["id"]).encode("utf-8"))
        if item.event_time is not None:
            self.metrics.lag.observe(max(0.0, time.time() - item.event_time))
        self.tracker.add(item.position, delivery)

    async def _dead_letter(self, item: Item) -> None:
        delivery = await self._producer.send(self.dlq_topic or self.topic, item.dead_letter)
        self.metrics.dead_letters.inc()
        self.tracker.add(item.position, delivery, is_post=False)

    async def _settle(self, final: bool = False) -> Any:
        """Wait for in-flight posts, save the checkpoint; returns the position to resume from."""
        timeout = self.settings.stop_timeout_s if (final or self.stop_requested.is_set()) else None
        try:
            await self.tracker.drain(timeout)
        except DeliveryFailed as exc:
            log.warning("%s: %s; resuming from the last acknowledged position", self.name, exc)
        self.tracker.forget()  # undelivered after the timeout: not acknowledged, so replayed on the next start
        await self._save_checkpoint()
        return self.tracker.acked_position if self.tracker.acked_position is not None else self._saved_position

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            try:
                self.tracker.advance()
            except DeliveryFailed as exc:  # the consume loop hits the same failure and restarts the stream
                log.warning("%s: %s", self.name, exc)
            self.metrics.in_flight.set(len(self.tracker))
            self._sync_posts_metric()
            await self._save_checkpoint()

    def _sync_posts_metric(self) -> None:
        delta = self.tracker.acked_posts - self.metrics.value("em_source_posts_total")
        if delta > 0:
            self.metrics.posts.inc(delta)

    async def _save_checkpoint(self) -> None:
        position = self.tracker.acked_position
        self._sync_posts_metric()
        if position is None or position == self._saved_position:
            return
        try:
            await self.checkpoints.save(position)
        except Exception as exc:  # noqa: BLE001 - Redis away: keep streaming, the next write catches up
            self.metrics.checkpoint_errors.inc()
            log.warning("%s: checkpoint not saved (%r); retrying in %.1f s", self.name, exc,
                        self.settings.checkpoint_interval_s)
            return
        self._saved_position = position
        self.metrics.checkpoints.inc()

    # ---- set-up and tear-down ---------------------------------------------------------------------------------------
    async def _retry(self, what: str, action, backoff: Backoff):
        while True:
            try:
                result = await action()
                backoff.reset()
                return result
            except Exception as exc:  # noqa: BLE001 - a server away at start-up is waited for, with back-off
                delay = backoff.next()
                log.warning("%s: %s failed (%r); retrying in %.1f s", self.name, what, exc, delay)
                try:
                    await asyncio.wait_for(self.stop_requested.wait(), timeout=delay)
                    return None
                except asyncio.TimeoutError:
                    pass

    async def _start_producer(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(self.settings.kafka_url), acks="all",
                                    linger_ms=5, max_batch_size=256 * 1024, partitioner=partition_by_key)
        try:
            await producer.start()
        except Exception:
            await producer.stop()
            raise
        self._producer = producer

    async def _start_http(self) -> None:
        if not self.settings.metrics_port:
            return
        from monitor.metrics import start_http

        async def health() -> dict:
            return {"ok": self._producer is not None, "source": self.name,
                    "connected": bool(self.metrics.value("em_source_connected")),
                    "checkpoint": self._saved_position}

        self._http = await start_http(self.settings.metrics_port, health, "127.0.0.1", self.metrics.registry)

    async def _close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self.checkpoints.close()
        if self._http is not None:
            await self._http.cleanup()
