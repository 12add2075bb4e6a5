"""A Faust app whose Kafka consumer asks for short fetch waits (and that keeps no per-event statistics).

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. A real Kafka broker answers a fetch as soon as
``fetch_min_bytes`` arrive, so that value only matters for idle topics; the tansu broker (docs/platform.md) does not
answer early — it holds every fetch for the full wait. Measured here: one record sent every 0.37 s reached a consumer
after 0.5-1.3 s with a 1500 ms wait, 0.01-0.02 s with 100 ms. This subclass only lowers that one number.
"""

from __future__ import annotations

import time

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from monitor.metrics import METRICS

__all__ = ["MonitorApp"]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms = 100

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read when the consumer's fetcher starts
        group = getattr(self.app, "faust_consumer_group", None)
        if group:  # read when the consumer starts (its coordinator)
            consumer._group_id = group
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def force_commit(self, *args, **kwargs) -> bool:
        started = time.perf_counter()
        try:
            return await super().force_commit(*args, **kwargs)
        finally:  # the worker's em_stage_seconds{stage="commit"}: offset commits (Faust's own, every commit_interval)
            METRICS.stage("commit").observe(time.perf_counter() - started)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class MonitorApp(faust.App):
    """``faust.App`` with the short-fetch-wait consumer (``kafka://`` brokers only)."""

    def __init__(self, *args, fetch_max_wait_ms: int = 100, **kwargs):
        self._fetch_max_wait_ms = fetch_max_wait_ms
        # services started after Faust's own and stopped before them (monitor.batch_consumer.BatchConsumer)
        self.extra_services: list = []
        # when set, Faust's own consumer joins this group instead of the app id's: with the posts topic read by
        # BatchConsumer in the app id's group, Faust's consumer (no topics of its own) would be a member there that
        # reads nothing, and every join would wait for it (before BatchConsumer used Faust's assignor, tansu refused
        # the joins outright: InconsistentGroupProtocolError)
        self.faust_consumer_group: str | None = None
        super().__init__(*args, **kwargs)

    def on_init_dependencies(self):
        dependencies = super().on_init_dependencies()
        # Faust's Monitor sensor keeps statistics per event (counters, timings, per-stream lookups) for its web views
        # and stats sensors, which the worker does not run (web_enabled=False; its own metrics are em_*): a few
        # percent of the worker's CPU per post, for nothing
        self.sensors.remove(self.monitor)
        return [*dependencies, *self.extra_services]

    def _new_transport(self):
        _ConsumerThread.fetch_max_wait_ms = getattr(self, "_fetch_max_wait_ms", 100)
        return _Transport(self.conf.broker_consumer, self)
