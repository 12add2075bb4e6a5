"""The demo post source: GoEmotions test texts replayed as posts about a few fictional brands.

Arrivals are a Poisson process whose rate follows the hour of day (quiet at 04:00, busiest at 16:00 local time) and
is split over the brands by fixed shares. After ``demo_spike_after_s`` seconds, one brand gets an extra stream of
angry posts (texts the GoEmotions raters labelled *anger*) for ``demo_spike_duration_s`` seconds, so the worker's
spike detector fires an alert: a newcomer sees posts flowing, charts moving and an alert within a minute.

Posts carry ``source="demo"`` and ids ``demo-<run>-<n>`` that are unique per run, so a restarted demo never collides
with the posts a persisted earlier run already counted. Delivery: each post is sent once (acks=all); a send that
fails is logged and the demo goes on — it is a demo, not a source of record.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from emotion_monitor.settings import UpSettings
from emotion_monitor.topics import bootstrap_servers

__all__ = ["DemoCorpus", "DemoSource", "SAMPLE_DIR", "day_factor", "load_corpus"]

log = logging.getLogger(__name__)

_TICK_S = 0.1

#: The GoEmotions sample shipped in the package (made by deploy/make_goemotions_sample.py; LICENSE and README.md
#: there): a fresh install runs the demo without any dataset beside it.
SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "goemotions_sample"


@dataclass(frozen=True)
class DemoCorpus:
    """Texts to replay: every test text, and the subset the raters labelled anger (for the spike)."""

    texts: tuple[str, ...]
    angry_texts: tuple[str, ...]


def load_corpus(data_dir: Path | None = None) -> DemoCorpus:
    """Read ``test.tsv`` and ``emotions.txt`` of a GoEmotions folder (None: the shipped sample, :data:`SAMPLE_DIR`);
    fail fast naming the file that is wrong."""
    data_dir = SAMPLE_DIR if data_dir is None else Path(data_dir)
    emotions_path, test_path = data_dir / "emotions.txt", data_dir / "test.tsv"
    for path in (emotions_path, test_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"demo data: {path} not found (set EM_UP_DEMO_DATA_DIR to a GoEmotions folder, or run with --no-demo)"
            )
    emotions = emotions_path.read_text().split()
    if "anger" not in emotions:
        raise ValueError(f"demo data: {emotions_path} does not list the emotion 'anger'")
    anger_id = str(emotions.index("anger"))
    texts: list[str] = []
    angry: list[str] = []
    with test_path.open(newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if len(row) != 3:
                raise ValueError(f"demo data: {test_path} line {line_no} has {len(row)} fields, expected 3")
            text, labels = row[0].strip(), row[1].split(",")
            if not text:
                continue
            texts.append(text)
            if anger_id in labels:
                angry.append(text)
    if not texts or not angry:
        raise ValueError(f"demo data: {test_path} holds no usable texts (or none labelled anger)")
    return DemoCorpus(tuple(texts), tuple(angry))


def day_factor(hour: float) -> float:
    """Relative arrival rate at a local hour of day: 0.2 at 04:00 rising to 1.0 at 16:00 (a smooth daily cycle)."""
    return 0.6 - 0.4 * math.cos(2 * math.pi * (hour - 4.0) / 24.0)


@dataclass
class DemoSource:
    """Generates demo posts tick by tick; :meth:`run` sends them to Kafka until stopped."""

    settings: UpSettings
    corpus: DemoCorpus
    seed: int | None = None
    run_id: str = field(default_factory=lambda: format(int(time.time()), "x"))
    sent: int = 0
    spike_sent: int = 0
    failed: int = 0  # sent but not confirmed by the broker

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        brands = self.settings.demo_brands
        # Zipf-like shares: the first brand is the most talked about.
        weights = [1.0 / (rank + 1) for rank in range(len(brands))]
        total = sum(weights)
        self._shares = [weight / total for weight in weights]
        self._seq = 0

    def rate_now(self, now: float | None = None) -> float:
        """Background posts per second at this moment (all brands together)."""
        if not self.settings.demo_day_pattern:
            return self.settings.demo_rate
        local = time.localtime(now if now is not None else time.time())
        return self.settings.demo_rate * day_factor(local.tm_hour + local.tm_min / 60.0)

    def spiking(self, elapsed_s: float) -> bool:
        """Whether the anger spike is on ``elapsed_s`` seconds after the start."""
        start, duration = self.settings.demo_spike_after_s, self.settings.demo_spike_duration_s
        if elapsed_s < start:
            return False
        since = elapsed_s - start
        every = self.settings.demo_spike_every_s
        if every > 0:
            since %= max(every, duration)
        return since < duration

    def _poisson(self, mean: float) -> int:
        # Knuth's method: fine for the small means of one tick.
        limit, count, product = math.exp(-mean), 0, self._random.random()
        while product > limit:
            count += 1
            product *= self._random.random()
        return count

    def _post(self, brand: str, text: str, created_ms: int, angry: bool) -> dict:
        self._seq += 1
        return {
            "id": f"demo-{self.run_id}-{self._seq}",
            "brand": brand,
            "text": text,
            "created_at": created_ms,
            "source": "demo-spike" if angry else "demo",
            "lang": "en",
            "author": f"user{self._random.randrange(1, 5000)}",
        }

    def tick(self, elapsed_s: float, now: float, dt: float = _TICK_S) -> Iterator[dict]:
        """The posts that arrive in the ``dt`` seconds after ``elapsed_s`` (wall time ``now``)."""
        created_ms = int(now * 1000)
        for _ in range(self._poisson(self.rate_now(now) * dt)):
            brand = self._random.choices(self.settings.demo_brands, self._shares)[0]
            yield self._post(brand, self._random.choice(self.corpus.texts), created_ms, angry=False)
        if self.spiking(elapsed_s):
            for _ in range(self._poisson(self.settings.demo_spike_rate * dt)):
                self.spike_sent += 1
                yield self._post(self.settings.demo_spike_brand, self._random.choice(self.corpus.angry_texts),
                                 created_ms, angry=True)

    def _note_delivery(self, delivery: asyncio.Future) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self.failed += 1
            log.warning("demo: a post was not delivered: %s", delivery.exception())

    async def run(self, kafka_url: str, topic: str, stop: threading.Event | asyncio.Event) -> None:
        """Send posts to ``topic`` until ``stop`` is set. Keyed by brand, so one brand's posts stay in order."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url), acks="all", linger_ms=20)
        await producer.start()
        started = time.monotonic()
        try:
            while not stop.is_set():
                tick_start = time.monotonic()
                for post in self.tick(tick_start - started, time.time()):
                    try:
                        delivery = await producer.send(topic, json.dumps(post).encode(), key=post["brand"].encode())
                        delivery.add_done_callback(self._note_delivery)  # a broker-side failure shows up only here
                        self.sent += 1
                    except Exception as exc:  # noqa: BLE001 - a demo keeps going; the log says why
                        log.warning("demo: could not send a post: %s", exc)
                await asyncio.sleep(max(0.0, _TICK_S - (time.monotonic() - tick_start)))
        finally:
            await producer.stop()

    def run_in_thread(self, kafka_url: str, topic: str) -> tuple[threading.Thread, threading.Event]:
        """Start :meth:`run` on a daemon thread with its own event loop; set the returned event to stop it."""
        stop = threading.Event()

        def target() -> None:
            try:
                asyncio.run(self.run(kafka_url, topic, stop))
            except Exception:  # noqa: BLE001 - reported, the runtime goes on without demo traffic
                log.exception("demo source stopped")

        thread = threading.Thread(target=target, name="demo-source", daemon=True)
        thread.start()
        return thread, stop
