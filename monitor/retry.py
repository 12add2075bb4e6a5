"""Which failures are waited out, and the back-off used while waiting.

A *transient* failure says nothing about the records being processed: Redis unreachable, Redis answering that it
cannot write now (out of memory at ``maxmemory``, a read-only replica, a failed snapshot, loading its data, a busy
script, a cluster reconfiguring: :func:`is_redis_outage`), or a Kafka error the client marks retriable (connection
lost, leader moving, request timed out; Faust wraps them in ``ProducerSendError`` and keeps the original as
``__cause__``). Those are retried for as long as they last, so no record is ever dead-lettered
because a server was away. Every other failure (a text that crashes the model, a record the broker refuses as too
large, a bug) is *persistent*; :class:`monitor.pipeline.BatchProcessor` isolates it with its poison policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from monitor.metrics import METRICS

from aiokafka.errors import KafkaError, KafkaTimeoutError
from redis import exceptions as redis_exceptions
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Backoff", "REDIS_OUTAGE_ERRORS", "is_redis_outage", "is_transient", "retry_transient"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The exception classes redis-py raises when the server is away (connection refused or dropped, timed out): a tuple
# for ``except``/``isinstance``, not an exception of its own (dashboard.queries.RedisUnavailable is one)
REDIS_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# Error codes of a Redis that is up but cannot write now; they pass when memory is freed, the primary is back, the
# snapshot works again, the data is loaded, the script ends or the cluster settles. redis-py strips the code off the
# ones it maps to classes (OutOfMemoryError, ReadOnlyError, BusyLoadingError, TryAgainError, ClusterDownError,
# MasterDownError) and leaves it on the others (MISCONF, BUSY); inside a Lua script the reply keeps the code.
_CANNOT_WRITE_CODES = frozenset({"OOM", "READONLY", "MISCONF", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN",
                                 "MASTERDOWN"})
_CANNOT_WRITE_CLASSES = tuple(getattr(redis_exceptions, name) for name in (
    "OutOfMemoryError", "ReadOnlyError", "BusyLoadingError", "TryAgainError", "ClusterDownError", "MasterDownError")
    if hasattr(redis_exceptions, name))


def is_redis_outage(error: BaseException) -> bool:
    """True when ``error`` means "Redis cannot be written now" (away, or refusing writes until something passes)."""
    if isinstance(error, REDIS_OUTAGE_ERRORS) or isinstance(error, _CANNOT_WRITE_CLASSES):
        return True
    return isinstance(error, ResponseError) and str(error).split(" ", 1)[0] in _CANNOT_WRITE_CODES


def is_transient(error: BaseException) -> bool:
    """True when ``error`` (or an exception it was raised ``from``) means "a server is unreachable", not "bad data"."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if is_redis_outage(current) or isinstance(current, KafkaTimeoutError):
            return True
        if isinstance(current, KafkaError) and current.retriable:
            return True
        current = current.__cause__
    return False


class Backoff:
    """Exponential back-off: ``initial`` seconds, doubled after each wait, capped at ``maximum``."""

    def __init__(self, initial: float, maximum: float):
        self.delay = initial
        self.maximum = maximum

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.maximum)


async def retry_transient(action: Callable[[], Awaitable[T]], backoff: Backoff, what: str) -> T:
    """``await action()``, repeated with back-off for as long as it fails transiently; other errors propagate."""
    while True:
        try:
            return await action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if is_redis_outage(exc):
                METRICS.redis_down(exc)
            log.warning("%s: %r (a server is unreachable); retrying in %.1f s", what, exc, backoff.delay)
            await backoff.wait()
