"""Write data in the monitor's Redis schema without running the monitor: for the tests, the benchmark and demos.

This writes exactly what :mod:`monitor.schema` documents (labelled series per brand x emotion x metric x tier, the
brand set, the posts and alerts zsets, the alerts' brand indexes); it does not classify anything. Series are created
with their labels before the first ``TS.MADD`` (which would otherwise create them unlabelled), and with
``DUPLICATE_POLICY SUM`` as the monitor uses, so seeding the same bucket twice adds up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice

import redis

from monitor import schema

__all__ = ["add_alert", "add_post", "ensure_series", "write_counts"]


def ensure_series(client: redis.Redis, brand: str, emotion: str, metric: str, tier: str) -> str:
    """Create the series (with the schema's labels) unless it exists; returns its key."""
    key = schema.series_key(brand, emotion, metric, tier)
    if not client.exists(key):
        client.ts().create(key, labels=schema.series_labels(brand, emotion, metric, tier), duplicate_policy="sum")
    client.sadd(schema.BRANDS_KEY, brand)
    return key


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def write_counts(client: redis.Redis, brand: str, tier: str, samples: Iterable[tuple[int, str, float]],
                 batch: int = 10_000, pipeline_depth: int = 8) -> int:
    """Write ``(ts_ms, emotion, value)`` samples to the ``count`` series (``emotion == '_all'``: the ``posts``
    series) of ``brand`` in ``tier`` with TS.MADD, ``batch`` samples per command, several commands per round trip.
    Returns the number of samples written."""
    created: set[str] = set()
    written = 0
    pipe = client.ts().pipeline(transaction=False)
    queued = 0
    for chunk in _chunks(samples, batch):
        triples = []
        for ts, emotion, value in chunk:
            metric = "posts" if emotion == schema.ALL_EMOTIONS else "count"
            key = schema.series_key(brand, emotion, metric, tier)
            if key not in created:
                ensure_series(client, brand, emotion, metric, tier)
                created.add(key)
            triples.append((key, int(ts), float(value)))
        pipe.madd(triples)
        written += len(triples)
        queued += 1
        if queued >= pipeline_depth:
            pipe.execute()
            queued = 0
    if queued:
        pipe.execute()
    return written


def add_post(client: redis.Redis, post: dict) -> None:
    """Store a classified post (JSON) in ``em:posts:{brand}`` of each of its brands, scored by ``created_at``."""
    member = json.dumps(post, sort_keys=True)
    for brand in post["brands"]:
        client.zadd(schema.posts_key(brand), {member: int(post["created_at"])})
        client.sadd(schema.BRANDS_KEY, brand)


def add_alert(client: redis.Redis, alert: dict) -> None:
    """Store an alert (JSON) as the monitor's alert engine does: in ``em:alerts`` and the brand's index, scored by its
    ``ts``."""
    from monitor.alerts import queue_alert_store

    pipe = client.pipeline(transaction=True)
    queue_alert_store(pipe, json.dumps(alert, sort_keys=True), alert["brand"], int(alert["ts"]))
    pipe.execute()
