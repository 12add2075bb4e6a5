"""``emotion-monitor source bluesky``: new Bluesky posts from a Jetstream WebSocket.

Jetstream (github.com/bluesky-social/jetstream) turns the AT Protocol firehose into JSON frames, one event per
WebSocket message::

    {"did": "did:plc:…", "time_us": 1725911162329308, "kind": "commit",
     "commit": {"rev": "…", "operation": "create", "collection": "app.bsky.feed.post", "rkey": "3l3qo2vuowo2b",
                "record": {"$type": "app.bsky.feed.post", "text": "…", "createdAt": "2024-09-09T19:46:02.102Z",
                           "langs": ["en"]},
                "cid": "bafy…"}}

``kind`` is ``commit`` (``operation`` create/update/delete; a delete has no ``record``), ``identity`` or ``account``
(sent to every subscriber whatever the filters). Query parameters used: ``wantedCollections=app.bsky.feed.post``,
``wantedDids`` (repeated), ``cursor`` (unix microseconds: replay from that time) and ``compress=true`` (each frame is
then a zstd frame compressed with Jetstream's own dictionary, which the client must load).

A ``create`` of an ``app.bsky.feed.post`` becomes a post: ``id`` = the at-uri ``at://<did>/app.bsky.feed.post/<rkey>``,
``text``, ``created_at`` = the record's ``createdAt`` (the event's ``time_us`` when missing or unreadable), ``lang`` =
the first of ``langs``, ``author`` = the did, ``source`` = ``bluesky``, ``url`` = the bsky.app link. Everything else
(updates, deletes, other collections, identity/account events, posts with no text or outside ``--lang``, malformed
frames) is skipped and counted by reason.

Checkpoint: the cursor ``time_us`` of the last event whose post (and every earlier one) Kafka acknowledged. A restart
asks Jetstream for ``cursor=<checkpoint>``; Jetstream replays from that time, so the last few events come again and
are counted once by ``id``. A malformed frame has no cursor and does not move the checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from emotion_monitor.sources.base import Item
from emotion_monitor.sources.settings import SourceSettings

__all__ = ["POST_COLLECTION", "JetstreamParser", "jetstream_url", "probe_endpoint", "stream_jetstream"]

log = logging.getLogger(__name__)

POST_COLLECTION = "app.bsky.feed.post"


def jetstream_url(settings: SourceSettings, cursor: int | None) -> str:
    """The subscribe URL with the query parameters Jetstream documents."""
    params: list[tuple[str, str]] = [("wantedCollections", POST_COLLECTION)]
    params += [("wantedDids", did) for did in settings.bluesky_wanted_dids]
    if cursor is not None:
        params.append(("cursor", str(int(cursor))))
    if settings.bluesky_compress:
        params.append(("compress", "true"))
    separator = "&" if "?" in settings.bluesky_endpoint else "?"
    return f"{settings.bluesky_endpoint}{separator}{urlencode(params)}"


def checkpoint_key(settings: SourceSettings) -> str:
    return settings.checkpoint_key or f"em:source:bluesky:{urlsplit(settings.bluesky_endpoint).netloc}"


class JetstreamParser:
    """Frame (text, or zstd bytes with ``compress``) -> :class:`Item`. Pure: no I/O, tested on its own."""

    def __init__(self, languages: list[str] | None = None, zstd_dictionary: bytes | None = None) -> None:
        self.languages = {lang.lower() for lang in languages or []}
        self._decompressor = None
        if zstd_dictionary is not None:
            import zstandard

            self._decompressor = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(zstd_dictionary))

    def _decode(self, frame: str | bytes) -> Any:
        if isinstance(frame, bytes):
            if self._decompressor is not None:
                frame = self._decompressor.decompressobj().decompress(frame)
            frame = frame.decode("utf-8")
        return json.loads(frame)

    def parse(self, frame: str | bytes) -> Item:
        try:
            event = self._decode(frame)
        except Exception:  # noqa: BLE001 - bad JSON, bad UTF-8, bad zstd: one reason, counted
            return Item(None, skipped="malformed")
        if not isinstance(event, dict):
            return Item(None, skipped="malformed")
        time_us = event.get("time_us")
        if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us <= 0:
            return Item(None, skipped="malformed")
        event_time = time_us / 1e6
        if event.get("kind") != "commit":
            return Item(time_us, skipped=f"kind_{event.get('kind')}" if event.get("kind") in ("identity", "account")
                        else "other_kind", event_time=event_time)
        commit, did = event.get("commit"), event.get("did")
        if not isinstance(commit, dict) or not isinstance(did, str) or not did:
            return Item(time_us, skipped="malformed", event_time=event_time)
        if commit.get("collection") != POST_COLLECTION:
            return Item(time_us, skipped="other_collection", event_time=event_time)
        operation = commit.get("operation")
        if operation != "create":
            return Item(time_us, skipped=operation if operation in ("update", "delete") else "malformed",
                        event_time=event_time)
        record, rkey = commit.get("record"), commit.get("rkey")
        if not isinstance(record, dict) or not isinstance(rkey, str) or not rkey:
            return Item(time_us, skipped="malformed", event_time=event_time)
        text = record.get("text")
        if not isinstance(text, str):
            return Item(time_us, skipped="malformed", event_time=event_time)
        if not text.strip():
            return Item(time_us, skipped="no_text", event_time=event_time)
        langs = [lang for lang in record.get("langs") or [] if isinstance(lang, str)]
        if self.languages and not any(lang.lower().split("-")[0] in self.languages or lang.lower() in self.languages
                                      for lang in langs):
            return Item(time_us, skipped="language", event_time=event_time)
        post = {
            "id": f"at://{did}/{POST_COLLECTION}/{rkey}",
            "text": text,
            "created_at": _created_at_ms(record.get("createdAt"), time_us),
            "author": did,
            "source": "bluesky",
            "url": f"https://bsky.app/profile/{did}/post/{rkey}",
        }
        if langs:
            post["lang"] = langs[0]
        return Item(time_us, post=post, event_time=event_time)


def _created_at_ms(created_at: Any, time_us: int) -> int:
    """The record's own ``createdAt`` (ISO 8601), or the event time when it is missing or not a readable time."""
    from monitor.post import to_epoch_ms

    if isinstance(created_at, str):
        try:
            return to_epoch_ms(created_at)
        except (TypeError, ValueError):
            pass
    return time_us // 1000


def load_dictionary(settings: SourceSettings) -> bytes | None:
    if not settings.bluesky_compress:
        return None
    if settings.bluesky_zstd_dictionary is None:
        raise ValueError("bluesky_compress needs bluesky_zstd_dictionary: the zstd_dictionary file of the Jetstream "
                         "repository (EM_SOURCE_BLUESKY_ZSTD_DICTIONARY or --zstd-dictionary)")
    return Path(settings.bluesky_zstd_dictionary).read_bytes()


def stream_jetstream(settings: SourceSettings):
    """A stream factory for :class:`~emotion_monitor.sources.base.SourceRunner`: connect at a cursor, yield items."""
    import asyncio

    from websockets.asyncio.client import connect

    parser = JetstreamParser(settings.bluesky_languages, load_dictionary(settings))

    async def stream(cursor: int | None) -> AsyncIterator[Item]:
        url = jetstream_url(settings, cursor)
        log.info("bluesky: connecting to %s", url)
        async with connect(url, max_size=settings.bluesky_max_message_bytes, open_timeout=10, ping_interval=20,
                           ping_timeout=20, close_timeout=2, max_queue=64) as websocket:
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation (SIGTERM) that
                # arrives as a frame does, and the stream would go on
                try:
                    async with asyncio.timeout(settings.idle_timeout_s):
                        frame = await websocket.recv()
                except TimeoutError:
                    raise ConnectionError(f"no frame for {settings.idle_timeout_s:.0f} s") from None
                yield parser.parse(frame)

    return stream


def probe_endpoint(endpoint: str, timeout_s: float = 5.0) -> str | None:
    """None when a Jetstream WebSocket at ``endpoint`` accepts a subscription, else why not (offline, refused...)."""
    from websockets.sync.client import connect

    url = f"{endpoint}{'&' if '?' in endpoint else '?'}wantedCollections={POST_COLLECTION}"
    try:
        with connect(url, open_timeout=timeout_s, close_timeout=1):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure to open means "not reachable now"; say which
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
