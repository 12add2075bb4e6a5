"""The one time policy for a post's ``created_at`` (documented in docs/monitor.md, "Time policy").

Checked for every parsed post, by the worker and by replay, before anything is counted:

* before ``min_created_at_ms`` (default 2000-01-01): ``invalid_value`` — almost always epoch *seconds* sent where
  milliseconds are expected (1.7e9 ms is January 1970);
* more than ``max_future_ms`` ahead of the worker's clock: ``future_timestamp`` — or ``invalid_value`` when it is
  so far ahead that it is epoch *microseconds* or nanoseconds sent as milliseconds. Why refuse future posts: Redis
  TimeSeries counts retention back from a series' newest sample, so one sample a year ahead would trim the brand's
  whole history and make Redis refuse every later sample.

Negative and non-numeric values are already refused by :func:`monitor.post.parse_post`. How old a post may be is not
decided here but by :mod:`monitor.store`, per retention tier (``too_old`` when no tier can keep it).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from monitor.post import Post, PostRejected

__all__ = ["MICROSECONDS_FROM_MS", "check_created_at"]

# created_at at or above this many "ms" (year 5138) is not a time in ms at all: microseconds or nanoseconds
MICROSECONDS_FROM_MS = 10**14


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def check_created_at(post: Post, settings, now_ms: int | None = None) -> Post:
    """Return ``post`` when its ``created_at`` passes the time policy, else raise :class:`PostRejected`."""
    created = post.created_at
    if created < settings.min_created_at_ms:
        raise PostRejected(
            "invalid_value",
            f"created_at {created} is before {_iso(settings.min_created_at_ms)}: expected epoch milliseconds "
            f"(epoch seconds would be {created * 1000}?) or ISO 8601",
        )
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if created > now + settings.max_future_ms:
        if created >= MICROSECONDS_FROM_MS:
            raise PostRejected(
                "invalid_value",
                f"created_at {created} is not epoch milliseconds (microseconds or nanoseconds?): expected about {now}",
            )
        raise PostRejected(
            "future_timestamp",
            f"created_at {_iso(created)} is {(created - now) / 1000:.0f} s ahead of the worker's clock "
            f"({_iso(now)}); at most EM_MONITOR_MAX_FUTURE_MS = {settings.max_future_ms} ms is accepted",
        )
    return post
