"""``emotion-monitor produce FILE``: send your own posts (JSONL or CSV) to the posts topic.

Every row is checked with the worker's own validation (:func:`monitor.post.parse_post`) before it is sent, with the
worker's own size limit (``EM_MONITOR_MAX_POST_BYTES``, read from the same settings object), so a row the worker would
dead-letter is reported here instead, with its line number and the reason; the good rows are sent.

* JSONL: one JSON object per line (blank lines are skipped); the line is sent byte for byte.
* CSV: a header row naming the fields (``id``, ``brand`` or ``brands``, ``text``, optional ``created_at``, ``source``,
  ``lang``, ``author``); several brands in one cell are separated by ``|``; empty cells count as absent.

Untagged rows (no ``brand``/``brands``) are accepted unless the worker's brand matching is off
(``EM_MONITOR_BRAND_MATCHING=off``): the worker gives them the brands whose queries they match (:mod:`monitor.brands`).
Such a row may even be text only: a missing ``id`` is then made from the file name, the line number and the row's
bytes (so sending the same file again is deduplicated by the worker, not counted twice).

Delivery: at-least-once per good row (acks=all; the broker confirms each record before the command reports it sent).
Records are keyed by post id. Exit status 0 when every row was sent, 1 when any row was rejected or not delivered.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import click

from emotion_monitor.settings import UpSettings
from monitor.redact import redact
from emotion_monitor.topics import bootstrap_servers

__all__ = ["ProduceReport", "Rejected", "produce", "read_rows", "send_file"]

BRANDS_SEPARATOR = "|"


@dataclass(frozen=True)
class Rejected:
    """A row that was not sent: its line in the file, the reason (one of monitor.post.REASONS or 'not_delivered')."""

    line: int
    reason: str
    detail: str


@dataclass
class ProduceReport:
    sent: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise click.UsageError(f"cannot tell the format of {path.name} from its suffix: pass --format jsonl or --format csv")


def _csv_row_to_json(row: dict) -> bytes:
    if None in row:  # csv.DictReader puts cells beyond the header under the key None
        raise ValueError(f"{len(row[None])} more cell(s) than the header has columns")
    post = {key.strip(): value for key, value in row.items() if key is not None and value not in (None, "")}
    if "brands" in post:
        post["brands"] = [brand for brand in post["brands"].split(BRANDS_SEPARATOR) if brand.strip()]
    return json.dumps(post, ensure_ascii=False).encode("utf-8")


def _with_id(record: bytes, path: Path, line_no: int) -> bytes:
    """A text-only row for brand matching gets a stable id; any other record is returned as it is."""
    import hashlib

    try:
        data = json.loads(record)
        if not isinstance(data, dict) or "id" in data or "brand" in data or "brands" in data:
            return record
        data["id"] = f"{path.name}:{line_no}:{hashlib.sha1(record).hexdigest()[:12]}"
        return json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # bad UTF-8/JSON, deep nesting, huge numbers, lone surrogates
        return record  # as it is: parse_post reports it


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, bytes | None, str | None]]:
    """(line number, record bytes, None) per row, or (line, None, detail) for a row that is not even a record."""
    if fmt == "jsonl":
        with path.open("rb") as raw:
            for line_no, line in enumerate(raw, start=1):
                if line.strip():
                    yield line_no, line.rstrip(b"\r\n"), None  # bytes as given: parse_post reports bad UTF-8
        return
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames:
            raise click.ClickException(f"{path}: the CSV file has no header row")
        for row in reader:
            try:
                yield reader.line_num, _csv_row_to_json(row), None
            except (ValueError, UnicodeEncodeError) as exc:
                yield reader.line_num, None, str(exc)


async def send_file(path: Path, fmt: str, kafka_url: str, topic: str, progress: bool = True, *,
                    max_bytes: int, require_brand: bool = True) -> ProduceReport:
    """Validate every row of ``path`` (records over ``max_bytes`` are ``oversize``: pass the worker's
    ``max_post_bytes``; ``require_brand=False`` when its brand matching tags untagged posts) and send the good ones
    to ``topic``; the report lists the rest."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError
    from tqdm import tqdm

    from monitor.post import PostRejected, parse_post

    report = ProduceReport()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url), acks="all", linger_ms=10)
    try:
        await producer.start()
    except KafkaConnectionError as exc:
        await producer.stop()
        raise click.ClickException(
            f"cannot reach Kafka at {redact(kafka_url)} ({exc}); is `emotion-monitor up` running? Pass --kafka-url otherwise."
        ) from None
    with path.open("rb") as counting:  # for the progress bar's total
        total_lines = sum(1 for _ in counting)
    pending: list[tuple[int, asyncio.Future]] = []
    try:
        with tqdm(total=total_lines, unit="line", desc=f"producing {path.name}", disable=not progress,
                  file=sys.stderr) as bar:
            last_line = 0
            for line_no, record, problem in read_rows(path, fmt):
                bar.update(line_no - last_line)
                last_line = line_no
                if record is None:
                    report.rejected.append(Rejected(line_no, "invalid_row", problem or "unreadable row"))
                    continue
                try:
                    if not require_brand:
                        record = _with_id(record, path, line_no)
                    post = parse_post(record, None, max_bytes=max_bytes, require_brand=require_brand)
                except PostRejected as exc:
                    report.rejected.append(Rejected(line_no, exc.reason, exc.detail))
                    continue
                pending.append((line_no, await producer.send(topic, record, key=post.id.encode("utf-8"))))
            bar.update(total_lines - last_line)
        await producer.flush()
        for line_no, future in pending:
            try:
                await future
                report.sent += 1
            except Exception as exc:  # noqa: BLE001 - reported per row, not lost silently
                report.rejected.append(Rejected(line_no, "not_delivered", str(exc)))
    finally:
        await producer.stop()
    report.rejected.sort(key=lambda item: item.line)
    return report


def _worker_settings():
    """The worker's settings (EM_MONITOR_*): its posts topic and its size limit apply here too."""
    from emotion_monitor.components import monitor_settings

    try:
        return monitor_settings()
    except ValueError as exc:  # pydantic's ValidationError: name the field, no traceback
        raise click.ClickException(f"invalid EM_MONITOR_* settings:\n{exc}") from exc


@click.command("produce")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kafka-url", envvar="EM_UP_KAFKA_URL", default=None,
              help="Kafka to send to (default: the broker `emotion-monitor up` starts, kafka://127.0.0.1:EM_UP_KAFKA_PORT).")
@click.option("--topic", default=None, help="Topic to send to (default: the worker's posts topic, EM_MONITOR_* settings).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="File format (default: from the suffix: .jsonl/.ndjson/.json or .csv/.tsv).")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rejected rows (line, reason, detail) to this JSONL file.")
@click.option("--no-progress", is_flag=True, help="No progress bar (e.g. in scripts).")
def produce(file: Path, kafka_url: str | None, topic: str | None, fmt: str | None, rejects_path: Path | None,
            no_progress: bool) -> None:
    """Send the posts in FILE (JSONL or CSV) to the posts topic, reporting every rejected row with its reason."""
    if kafka_url is None:
        try:
            kafka_url = f"kafka://127.0.0.1:{UpSettings().kafka_port}"
        except ValueError as exc:  # pydantic's ValidationError: name the field, no traceback
            raise click.ClickException(f"invalid EM_UP_* settings:\n{exc}") from exc
    worker = _worker_settings()
    topic = topic or worker.posts_topic
    report = asyncio.run(send_file(file, _detect_format(file, fmt), kafka_url, topic, progress=not no_progress,
                                   max_bytes=worker.max_post_bytes,
                                   require_brand=worker.brand_matching == "off"))
    for item in report.rejected:
        click.echo(f"{file}:{item.line}: rejected ({item.reason}): {item.detail}", err=True)
    if rejects_path is not None:
        with rejects_path.open("w", encoding="utf-8") as out:
            for item in report.rejected:
                out.write(json.dumps({"line": item.line, "reason": item.reason, "detail": item.detail}) + "\n")
    click.echo(f"sent {report.sent} post(s) to {topic} at {redact(kafka_url)}; rejected {len(report.rejected)} row(s)")
    if report.rejected:
        sys.exit(1)
