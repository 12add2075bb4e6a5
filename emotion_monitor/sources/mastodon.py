"""``emotion-monitor source mastodon --instance URL [--token T]``: new statuses from a Mastodon streaming timeline.

Protocol (docs.joinmastodon.org/methods/streaming): ``GET /api/v1/streaming/public`` (``/public/local`` for one
server) or ``/api/v1/streaming/hashtag?tag=NAME`` (``/hashtag/local``), ``Authorization: Bearer <token>`` where the
server requires it. The response is server-sent events: ``event: update`` with a Status JSON as ``data``,
``event: delete`` with a status id, ``event: status.update`` for an edit, and ``:`` comment lines as heartbeats.

An ``update`` becomes a post: ``id`` = the status ``uri`` (the same on every server, so one status federated to two
instances is counted once), ``text`` = the HTML ``content`` as plain text (paragraphs and line breaks kept, links'
hidden parts dropped as Mastodon's own clients do; a content warning comes first), ``created_at``, ``lang`` =
``language``, ``author`` = ``account.acct``, ``url``, ``source`` = ``mastodon``. Reblogs (the reblogged status is
not a new post), edits, deletes, other events and unreadable data are skipped and counted by reason.

Resuming: the streaming API has no cursor; it sends only what happens while connected. The checkpoint is the
largest status id acknowledged by Kafka, and on every (re)connect the source first pages the same timeline through
the REST API (``GET /api/v1/timelines/public`` or ``/timelines/tag/NAME`` with ``min_id=<checkpoint>``, 40 per page,
at most ``mastodon_backfill_pages`` pages) after the stream is open, so the gap while it was away is filled and
nothing between the two is missed. What it cannot do: statuses older than the server's timeline cache or beyond
the page limit are not recovered; a status federated late whose id sorts below the checkpoint is missed by the
backfill; a server that refuses the REST timeline without a token (some do) gives no backfill (logged, counted as
``backfill_refused``) — the stream still works.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

from emotion_monitor.sources.base import Item
from emotion_monitor.sources.settings import SourceSettings

__all__ = ["html_to_text", "parse_sse_event", "status_to_item", "stream_mastodon", "streaming_path"]

log = logging.getLogger(__name__)

_BLOCKS = {"p", "div", "blockquote", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre"}


class _TextExtractor(HTMLParser):
    """Mastodon status HTML -> plain text: block ends and <br> become line breaks; ``span.invisible`` (the hidden
    ``https://`` and tail of a shortened link) is dropped; ``span.ellipsis`` gets its "…"."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden_depth = 0
        self._span_stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "span":
            kind = "invisible" if "invisible" in classes else "ellipsis" if "ellipsis" in classes else ""
            self._span_stack.append(kind)
            if kind == "invisible":
                self._hidden_depth += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCKS and self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._span_stack:
            kind = self._span_stack.pop()
            if kind == "invisible":
                self._hidden_depth -= 1
            elif kind == "ellipsis" and not self._hidden_depth:
                self.parts.append("…")
        elif tag in _BLOCKS:
            self.parts.append("\n\n" if tag == "p" else "\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.parts.append(data)


def html_to_text(content: str) -> str:
    """A status' HTML ``content`` as the plain text a reader sees."""
    extractor = _TextExtractor()
    extractor.feed(content)
    extractor.close()
    lines = "".join(extractor.parts).replace("\xa0", " ").split("\n")
    text = "\n".join(line.strip() for line in lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def streaming_path(settings: SourceSettings) -> str:
    local = "/local" if settings.mastodon_local_only else ""
    if settings.mastodon_timeline == "hashtag":
        return f"/api/v1/streaming/hashtag{local}?tag={quote(_tag(settings))}"
    return f"/api/v1/streaming/public{local}"


def timeline_path(settings: SourceSettings) -> str:
    local = "local=true&" if settings.mastodon_local_only else ""
    if settings.mastodon_timeline == "hashtag":
        return f"/api/v1/timelines/tag/{quote(_tag(settings))}?{local}limit=40"
    return f"/api/v1/timelines/public?{local}limit=40"


def _tag(settings: SourceSettings) -> str:
    if not settings.mastodon_tag:
        raise ValueError("mastodon_timeline=hashtag needs mastodon_tag (--tag NAME)")
    return settings.mastodon_tag.lstrip("#")


def checkpoint_key(settings: SourceSettings) -> str:
    where = urlsplit(settings.mastodon_instance).netloc or settings.mastodon_instance
    timeline = settings.mastodon_timeline + (f":{_tag(settings)}" if settings.mastodon_timeline == "hashtag" else "")
    return settings.checkpoint_key or f"em:source:mastodon:{where}:{timeline}" + (
        ":local" if settings.mastodon_local_only else "")


def _id_key(status_id: Any) -> tuple[int, str]:
    """Mastodon ids are decimal strings that sort by time as numbers; compare them as such."""
    text = str(status_id)
    return (len(text), text) if text.isdigit() else (0, text)


def newer(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if _id_key(a) >= _id_key(b) else b


def status_to_item(status: Any, last_id: str | None) -> Item:
    """A Status JSON -> an item whose position is the largest status id seen so far."""
    from monitor.post import to_epoch_ms

    if not isinstance(status, dict) or not isinstance(status.get("id"), str):
        return Item(last_id, skipped="malformed")
    position = newer(last_id, status["id"])
    if status.get("reblog"):
        return Item(position, skipped="reblog")
    uri, content = status.get("uri"), status.get("content")
    account = status.get("account") if isinstance(status.get("account"), dict) else {}
    if not isinstance(uri, str) or not uri or not isinstance(content, str):
        return Item(position, skipped="malformed")
    text = html_to_text(content)
    spoiler = status.get("spoiler_text")
    if isinstance(spoiler, str) and spoiler.strip():
        text = f"{spoiler.strip()}\n\n{text}".strip()
    if not text:
        return Item(position, skipped="no_text")
    try:
        created_ms = to_epoch_ms(status.get("created_at"))
    except (TypeError, ValueError):
        return Item(position, skipped="malformed")
    post = {"id": uri, "text": text, "created_at": created_ms, "source": "mastodon"}
    if isinstance(status.get("language"), str):
        post["lang"] = status["language"]
    if isinstance(account.get("acct"), str):
        post["author"] = account["acct"]
    if isinstance(status.get("url"), str):
        post["url"] = status["url"]
    return Item(position, post=post, event_time=created_ms / 1000)


def parse_sse_event(event: str, data: str, last_id: str | None) -> Item:
    if event == "update":
        try:
            status = json.loads(data)
        except json.JSONDecodeError:
            return Item(last_id, skipped="malformed")
        return status_to_item(status, last_id)
    if event == "delete":
        return Item(last_id, skipped="delete")
    if event == "status.update":
        return Item(last_id, skipped="update")
    return Item(last_id, skipped="other_event")


async def _sse_events(response, idle_timeout_s: float) -> AsyncIterator[tuple[str, str]]:
    """(event, data) per server-sent event (WHATWG rules: ``field: value`` lines, blank line ends an event)."""
    import asyncio

    event, data = "message", []
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):  # not wait_for: see bluesky.stream_jetstream
                raw = await response.content.readline()
        except TimeoutError:
            raise ConnectionError(f"no data (not even a heartbeat) for {idle_timeout_s:.0f} s") from None
        if not raw:
            raise ConnectionError("the server closed the stream")
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # heartbeat / comment
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def stream_mastodon(settings: SourceSettings):
    """A stream factory: open the streaming timeline, backfill from the checkpoint through REST, then stream."""
    import aiohttp

    headers = {"Accept": "text/event-stream", "User-Agent": "emotion-monitor"}
    if settings.mastodon_token:
        headers["Authorization"] = f"Bearer {settings.mastodon_token}"
    base = settings.mastodon_instance
    stream_url, timeline_url = base + streaming_path(settings), base + timeline_path(settings)

    async def backfill(session, since: str) -> AsyncIterator[Item]:
        last = since
        for _ in range(settings.mastodon_backfill_pages):
            async with session.get(f"{timeline_url}&min_id={quote(last)}",
                                   headers={**headers, "Accept": "application/json"}) as response:
                if response.status in (401, 403, 404, 422):
                    log.warning("mastodon: the server refused the timeline backfill (HTTP %d); statuses from while "
                                "the source was away are not recovered", response.status)
                    yield Item(last, skipped="backfill_refused")
                    return
                response.raise_for_status()
                page = await response.json()
            if not page:
                return
            for status in sorted(page, key=lambda s: _id_key(s.get("id", "")) if isinstance(s, dict) else (0, "")):
                item = status_to_item(status, last)
                last = item.position
                yield item

    async def stream(last_id: str | None) -> AsyncIterator[Item]:
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        # read_bufsize: one SSE data line holds a whole Status JSON, which can exceed aiohttp's 64 KiB line default
        async with aiohttp.ClientSession(timeout=timeout, read_bufsize=2**20) as session:
            log.info("mastodon: connecting to %s", stream_url)
            async with session.get(stream_url, headers=headers) as response:
                if response.status != 200:
                    body = (await response.text())[:300]
                    raise ConnectionError(f"HTTP {response.status} from {stream_url}: {body}")
                # The stream is open (and buffering): now fetch what was missed, so nothing falls in between.
                position = last_id
                if last_id is not None:
                    async for item in backfill(session, last_id):
                        position = newer(position, item.position)
                        yield item
                async for event, data in _sse_events(response, settings.idle_timeout_s):
                    item = parse_sse_event(event, data, position)
                    position = item.position
                    yield item

    return stream
