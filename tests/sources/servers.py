"""Local servers that speak the real protocols, for the source tests and the source benchmark.

* :class:`JetstreamServer`: a WebSocket ``/subscribe`` endpoint as Jetstream documents it (query parameters
  ``wantedCollections`` with ``prefix.*`` wildcards, ``wantedDids``, ``cursor`` in unix microseconds to replay from,
  ``compress=true`` for zstd frames made with a dictionary). Identity and account events go to every subscriber,
  as in Jetstream. It can drop a connection mid-stream, and drops a subscriber that stops reading (as Jetstream does
  with slow consumers).
* :class:`MastodonServer`: ``/api/v1/streaming/public`` and ``/api/v1/streaming/hashtag?tag=`` as server-sent
  events (``event: update`` + Status JSON, ``event: delete`` + id, ``:thump`` heartbeats), plus the REST timelines
  ``/api/v1/timelines/public`` and ``/api/v1/timelines/tag/:tag`` with ``min_id`` / ``limit`` paging.

Each runs its own event loop on a thread, so a test can drive a source in-process or as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


# ---- Jetstream -------------------------------------------------------------------------------------------------------
def post_event(did: str, rkey: str, time_us: int, text: str, *, langs=("en",), created_at: str | None = None,
               operation: str = "create") -> dict:
    """A commit event of ``app.bsky.feed.post`` exactly as Jetstream sends it."""
    commit: dict[str, Any] = {"rev": f"3l{rkey}rev", "operation": operation, "collection": "app.bsky.feed.post",
                              "rkey": rkey}
    if operation != "delete":
        record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text,
                                  "createdAt": created_at or time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                                           time.gmtime(time_us / 1e6))}
        if langs is not None:
            record["langs"] = list(langs)
        commit["record"] = record
        commit["cid"] = f"bafyreib{rkey}"
    return {"did": did, "time_us": time_us, "kind": "commit", "commit": commit}


def like_event(did: str, rkey: str, time_us: int) -> dict:
    return {"did": did, "time_us": time_us, "kind": "commit",
            "commit": {"rev": f"3l{rkey}rev", "operation": "create", "collection": "app.bsky.feed.like", "rkey": rkey,
                       "record": {"$type": "app.bsky.feed.like", "createdAt": "2024-09-09T19:46:02.102Z",
                                  "subject": {"cid": "bafyreidc", "uri": f"at://{did}/app.bsky.feed.post/x"}},
                       "cid": f"bafyreil{rkey}"}}


def identity_event(did: str, time_us: int) -> dict:
    return {"did": did, "time_us": time_us, "kind": "identity",
            "identity": {"did": did, "handle": "alice.bsky.social", "seq": 1409752997,
                         "time": "2024-09-05T06:11:04.870Z"}}


def account_event(did: str, time_us: int) -> dict:
    return {"did": did, "time_us": time_us, "kind": "account",
            "account": {"active": True, "did": did, "seq": 1409753013, "time": "2024-09-05T06:11:04.870Z"}}


@dataclass
class _Frame:
    time_us: int | None
    collection: str | None
    did: str | None
    text: str


@dataclass
class JetstreamServer:
    """Serves ``frames`` (dicts, or raw strings for malformed frames) in order, then whatever :meth:`publish` adds."""

    zstd_dictionary: bytes | None = None
    drop_after: int | None = None  # abort the first connection after this many frames
    slow_timeout_s: float = 2.0  # a send blocked this long (the client stopped reading): drop the subscriber
    rate: float | None = None  # frames per second (None: as fast as possible)
    stamp_now: bool = False  # the benchmark: time_us and createdAt are the moment of sending
    write_limit: int = 65536
    requests: list[str] = field(default_factory=list)
    connections: int = 0
    dropped_slow: int = 0
    sent: int = 0

    def __post_init__(self) -> None:
        self._frames: list[_Frame] = []
        self._handlers: set[asyncio.Task] = set()
        self._thread = _LoopThread()
        self._new = None
        self._server = None
        self.port = self._thread.call(self._start())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/subscribe"

    async def _start(self) -> int:
        from websockets.asyncio.server import serve

        self._new = asyncio.Condition()
        self._server = await serve(self._handle, "127.0.0.1", 0, write_limit=self.write_limit, max_queue=4,
                                   ping_interval=None)
        return self._server.sockets[0].getsockname()[1]

    def publish(self, *events: dict | str) -> None:
        self._thread.call(self._publish(events))

    async def _publish(self, events) -> None:
        for event in events:
            if isinstance(event, dict):
                commit = event.get("commit") or {}
                self._frames.append(_Frame(event.get("time_us"), commit.get("collection"), event.get("did"),
                                           json.dumps(event)))
            else:
                self._frames.append(_Frame(None, None, None, event))
        async with self._new:
            self._new.notify_all()

    def _wanted(self, frame: _Frame, query: dict[str, list[str]], cursor: int | None) -> bool:
        if frame.time_us is not None and cursor is not None and frame.time_us < cursor:
            return False
        if frame.collection is not None:  # identity/account/malformed frames reach everyone
            collections = query.get("wantedCollections", [])
            if collections and not any(frame.collection == c or (c.endswith(".*") and
                                       frame.collection.startswith(c[:-1])) for c in collections):
                return False
            dids = query.get("wantedDids", [])
            if dids and frame.did not in dids:
                return False
        return True

    async def _handle(self, websocket) -> None:
        self._handlers.add(asyncio.current_task())
        try:
            await self._serve_one(websocket)
        finally:
            self._handlers.discard(asyncio.current_task())

    async def _serve_one(self, websocket) -> None:
        path = websocket.request.path
        self.requests.append(path)
        self.connections += 1
        first = self.connections == 1
        query = parse_qs(urlsplit(path).query)
        sock = websocket.transport.get_extra_info("socket")
        if sock is not None:  # a small kernel send buffer, so a subscriber that stops reading blocks our sends soon
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        compress = query.get("compress", ["false"])[0] == "true"
        compressor = None
        if compress:
            import zstandard

            compressor = zstandard.ZstdCompressor(dict_data=zstandard.ZstdCompressionDict(self.zstd_dictionary))
        index, sent_here, started = 0, 0, time.monotonic()
        try:
            while True:
                async with self._new:
                    await self._new.wait_for(lambda: index < len(self._frames))
                frame = self._frames[index]
                index += 1
                if not self._wanted(frame, query, cursor):
                    continue
                if first and self.drop_after is not None and sent_here >= self.drop_after:
                    websocket.transport.abort()  # the network drops: no close frame
                    return
                if self.rate:
                    await asyncio.sleep(max(0.0, started + sent_here / self.rate - time.monotonic()))
                text = frame.text
                if self.stamp_now:
                    now_us = int(time.time() * 1e6)
                    event = json.loads(text)
                    event["time_us"] = now_us
                    event["commit"]["record"]["createdAt"] = time.strftime(
                        "%Y-%m-%dT%H:%M:%S", time.gmtime(now_us / 1e6)) + f".{now_us % 1_000_000 // 1000:03d}Z"
                    text = json.dumps(event)
                message = compressor.compress(text.encode()) if compressor else text
                try:
                    await asyncio.wait_for(websocket.send(message), timeout=self.slow_timeout_s)
                except asyncio.TimeoutError:
                    self.dropped_slow += 1  # Jetstream drops subscribers that cannot keep up
                    websocket.transport.abort()
                    return
                sent_here += 1
                self.sent += 1
        except Exception:  # noqa: BLE001 - the client went away
            return

    def close(self) -> None:
        async def stop():
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 3)
            except asyncio.TimeoutError:
                pass

        try:
            self._thread.call(stop())
        finally:
            self._thread.close()


# ---- Mastodon --------------------------------------------------------------------------------------------------------
def status(status_id: int, content: str, *, tag: str | None = None, language: str | None = "en",
           acct: str = "alice@example.social", reblog: dict | None = None, spoiler: str = "") -> dict:
    """A Status entity as the Mastodon API returns it (the fields a source reads, and a few it ignores)."""
    return {
        "id": str(status_id),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "in_reply_to_id": None, "sensitive": bool(spoiler), "spoiler_text": spoiler, "visibility": "public",
        "language": language,
        "uri": f"https://example.social/users/alice/statuses/{status_id}",
        "url": f"https://example.social/@alice/{status_id}",
        "replies_count": 0, "reblogs_count": 0, "favourites_count": 0,
        "content": content, "reblog": reblog,
        "account": {"id": "1", "username": acct.split("@")[0], "acct": acct, "display_name": "Alice"},
        "media_attachments": [], "mentions": [], "tags": [{"name": tag, "url": f"https://example.social/tags/{tag}"}]
        if tag else [], "emojis": [],
    }


@dataclass
class MastodonServer:
    token: str | None = None  # when set, requests without "Authorization: Bearer <token>" get 401
    heartbeat_s: float = 0.5
    requests: list[str] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._statuses: list[dict] = []  # every status ever published, in id order (the REST timeline)
        self._events: list[tuple[str, str, dict | None]] = []  # the stream: (event, data, status)
        self._thread = _LoopThread()
        self._new = None
        self._runner = None
        self._streams: list[Any] = []
        self.port = self._thread.call(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        from aiohttp import web

        self._new = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/api/v1/streaming/public", self._stream)
        app.router.add_get("/api/v1/streaming/public/local", self._stream)
        app.router.add_get("/api/v1/streaming/hashtag", self._stream)
        app.router.add_get("/api/v1/streaming/hashtag/local", self._stream)
        app.router.add_get("/api/v1/timelines/public", self._timeline)
        app.router.add_get("/api/v1/timelines/tag/{tag}", self._timeline)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the only way to read an ephemeral port

    def _authorised(self, request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    def publish(self, item: dict | tuple[str, str], *, live: bool = True) -> None:
        """A status (``update``) or an (event, data) pair; ``live=False``: only in the REST timeline (posted while
        no stream was connected)."""
        self._thread.call(self._publish(item, live))

    async def _publish(self, item, live: bool) -> None:
        if isinstance(item, dict):
            self._statuses.append(item)
            event = ("update", json.dumps(item), item)
        else:
            event = (item[0], item[1], None)
        if live:
            self._events.append(event)
        else:
            self._events.append(("__skip__", "", None))
        async with self._new:
            self._new.notify_all()

    def drop_streams(self) -> None:
        """Cut every open stream (the network drops)."""
        async def drop():
            for response in self._streams:
                transport = response._req.transport  # noqa: SLF001
                if transport is not None:
                    transport.abort()
        self._thread.call(drop())

    def _matches(self, request, status_json: dict | None) -> bool:
        if status_json is None:
            return True
        tag = request.query.get("tag") or request.match_info.get("tag")
        if request.path.startswith("/api/v1/streaming/hashtag") or request.path.startswith("/api/v1/timelines/tag"):
            return any(t["name"].lower() == (tag or "").lower() for t in status_json.get("tags", []))
        return True

    async def _stream(self, request):
        from aiohttp import web

        self.requests.append(str(request.rel_url))
        if not self._authorised(request):
            return web.json_response({"error": "The access token is invalid"}, status=401)
        self.connections += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        self._streams.append(response)
        index = len(self._events)  # a stream sends only what happens from now on
        try:
            while True:
                async with self._new:
                    try:
                        await asyncio.wait_for(self._new.wait_for(lambda: index < len(self._events)),
                                               timeout=self.heartbeat_s)
                    except asyncio.TimeoutError:
                        await response.write(b":thump\n")
                        continue
                event, data, status_json = self._events[index]
                index += 1
                if event == "__skip__" or not self._matches(request, status_json):
                    continue
                await response.write(f"event: {event}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass
        finally:
            if response in self._streams:
                self._streams.remove(response)
        return response

    async def _timeline(self, request):
        from aiohttp import web

        self.requests.append(str(request.rel_url))
        if not self._authorised(request):
            return web.json_response({"error": "This method requires an authenticated user"}, status=422)
        limit = min(int(request.query.get("limit", 20)), 40)
        matching = [s for s in self._statuses if self._matches(request, s)]
        if "min_id" in request.query:  # the page just above min_id, returned newest first
            min_id = int(request.query["min_id"])
            newer = [s for s in matching if int(s["id"]) > min_id]
            page = newer[:limit]
        else:
            page = matching[-limit:]
        return web.json_response(list(reversed(page)))

    def close(self) -> None:
        try:
            self._thread.call(self._runner.cleanup())
        except Exception:  # noqa: BLE001
            pass
        finally:
            self._thread.close()
