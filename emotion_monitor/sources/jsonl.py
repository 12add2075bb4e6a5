"""``emotion-monitor source jsonl FILE [--follow]``: posts from a JSON Lines file, optionally tailed as it grows
(what a vendor export or another pipeline writes).

Each line is one post as ``monitor.post`` defines it (``id`` and ``text`` required; a brand is optional: ``--brand``
tags untagged lines, the worker's brand queries do the rest). A line that is not a JSON object with a string ``id``
goes to the dead-letter topic with its reason, file and byte offset; the worker validates the rest as usual.

Checkpoint: ``{"inode", "offset"}`` — the byte offset after the last line Kafka acknowledged (with every earlier
line). A restart on the same file (same inode) seeks there; a different inode (the file was replaced or rotated) or a
file now shorter than the offset (truncated) starts from the beginning. With ``--follow`` the source waits at the end
of the file for new lines and notices replacement and truncation; a last line without its newline is read only once
it is complete. Without ``--follow`` it stops at the end of the file after everything is acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from emotion_monitor.sources.base import Item

__all__ = ["checkpoint_key", "parse_line", "stream_jsonl"]

log = logging.getLogger(__name__)


def checkpoint_key(path: Path, explicit: str | None) -> str:
    return explicit or f"em:source:jsonl:{Path(path).resolve()}"


def parse_line(line: bytes, path: Path, offset: int, next_offset: int, inode: int) -> Item:
    """One line -> an item with the post, or a dead-letter record naming what is wrong."""
    from monitor.post import PostRejected, rejection_envelope

    position = {"inode": inode, "offset": next_offset}
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = PostRejected("not_json", f"not valid UTF-8 JSON: {exc}")
    else:
        if not isinstance(data, dict):
            problem = PostRejected("not_object", f"expected a JSON object, got {type(data).__name__}")
        elif not isinstance(data.get("id"), str) or not data["id"]:
            problem = PostRejected("missing_field", "field 'id' (a non-empty string) is required")
        else:
            return Item(position, post=data)
    return Item(position, dead_letter=rejection_envelope(line, problem, topic=f"file:{path}", offset=offset))


def stream_jsonl(path: Path, follow: bool, poll_interval_s: float):
    """A stream factory: open ``path`` at a checkpoint ``{"inode", "offset"}`` and yield its lines as items."""
    path = Path(path)

    async def stream(position: dict | None) -> AsyncIterator[Item]:
        while True:  # waits for the file to appear when following
            try:
                handle = path.open("rb")
                break
            except FileNotFoundError:
                if not follow:
                    raise
                await asyncio.sleep(poll_interval_s)
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            offset = 0
            if position and position.get("inode") == inode and position.get("offset", 0) <= os.fstat(
                    handle.fileno()).st_size:
                offset = int(position["offset"])
            elif position:
                log.warning("jsonl: %s was replaced or truncated since checkpoint %r; reading it from the start",
                            path, position)
            handle.seek(offset)
            partial = b""
            while True:
                line = handle.readline()
                if line.endswith(b"\n"):
                    line, partial = partial + line, b""
                    start = offset
                    offset += len(line)
                    if line.strip():
                        yield parse_line(line.rstrip(b"\r\n"), path, start, offset, inode)
                    continue
                partial += line  # an incomplete last line: wait for its newline (or the end, without --follow)
                if not follow:
                    if partial.strip():
                        start, offset = offset, offset + len(partial)
                        yield parse_line(partial.rstrip(b"\r\n"), path, start, offset, inode)
                    return
                await asyncio.sleep(poll_interval_s)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    continue  # being replaced: keep reading the old one until the new one appears
                if current.st_ino != inode or current.st_size < offset + len(partial):
                    log.info("jsonl: %s was replaced or truncated; reopening it", path)
                    return  # the runner reopens; the checkpoint's inode/offset no longer match, so from the start

    return stream
