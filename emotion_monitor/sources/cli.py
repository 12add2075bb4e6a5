"""``emotion-monitor source bluesky|mastodon|jsonl``: run one live source until SIGTERM / Ctrl-C.

Options override the ``EM_SOURCE_*`` env vars (:class:`~emotion_monitor.sources.settings.SourceSettings`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from emotion_monitor.sources.settings import SourceSettings

__all__ = ["source"]


def _settings(**options) -> SourceSettings:
    try:
        return SourceSettings(**{name: value for name, value in options.items()
                                 if value is not None and value != ()})
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from exc


def _topics(settings: SourceSettings) -> tuple[str, str]:
    """The posts and dead-letter topics: the source's own settings, else the worker's (``EM_MONITOR_*``).

    Read from ``MonitorSettings`` directly, not through ``emotion_monitor.components`` (which imports this package's
    settings): the sources subpackage stays below the runtime modules that compose it.
    """
    from monitor.settings import MonitorSettings

    try:
        worker = MonitorSettings()
    except ValueError as exc:
        raise click.ClickException(f"invalid EM_MONITOR_* settings:\n{exc}") from exc
    return settings.topic or worker.posts_topic, settings.dlq_topic or worker.dlq_topic


def _run(name: str, settings: SourceSettings, stream, key: str, finite: bool = False) -> None:
    from emotion_monitor.sources.base import SourceRunner

    topic, dlq = _topics(settings)
    click.echo(f"source {name}: posts to {topic} at {settings.kafka_url}, checkpoint {key} in {settings.redis_url}"
               + (f", metrics on http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port else ""),
               err=True)
    runner = SourceRunner(name, settings, stream, key, topic=topic, dlq_topic=dlq, finite=finite)
    code = asyncio.run(runner.run())
    click.echo(f"source {name}: stopped; {runner.tracker.acked_posts} post(s) acknowledged, "
               f"checkpoint {runner.tracker.acked_position!r}", err=True)
    sys.exit(code)


def _common(function):
    options = [
        click.option("--kafka-url",
                     help="Kafka to send posts to [EM_SOURCE_KAFKA_URL; default kafka://127.0.0.1:9092]."),
        click.option("--redis-url",
                     help="Redis for the checkpoint [EM_SOURCE_REDIS_URL; default redis://127.0.0.1:6379/0]."),
        click.option("--topic", help="Posts topic [EM_SOURCE_TOPIC; default the worker's posts topic]."),
        click.option("--brand", help="Tag every post with this brand [EM_SOURCE_BRAND; default untagged]."),
        click.option("--checkpoint-key", help="Redis key of the checkpoint [EM_SOURCE_CHECKPOINT_KEY]."),
        click.option("--metrics-port", type=int, help="Port of /metrics and /health, 0 = none [EM_SOURCE_METRICS_PORT; "
                                                      "default 9310]."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group("source")
def source() -> None:
    """Run a live post source (Bluesky Jetstream, Mastodon streaming, a followed JSONL file) into the posts topic."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)


@source.command("bluesky")
@_common
@click.option("--endpoint", "bluesky_endpoint", help="Jetstream URL [EM_SOURCE_BLUESKY_ENDPOINT].")
@click.option("--lang", "bluesky_languages", multiple=True, help="Keep posts in this language (repeatable).")
@click.option("--did", "bluesky_wanted_dids", multiple=True, help="Only posts by this DID (repeatable; wantedDids).")
@click.option("--compress/--no-compress", "bluesky_compress", default=None,
              help="zstd-compressed frames [EM_SOURCE_BLUESKY_COMPRESS; default off].")
@click.option("--zstd-dictionary", "bluesky_zstd_dictionary", type=click.Path(exists=True, dir_okay=False),
              help="Jetstream's zstd dictionary file, needed with --compress.")
def bluesky(**options) -> None:
    """New Bluesky posts from the public Jetstream WebSocket (no account needed)."""
    from emotion_monitor.sources import bluesky as module

    options = {name: list(value) if isinstance(value, tuple) and value else value for name, value in options.items()}
    settings = _settings(**options)
    try:
        stream = module.stream_jetstream(settings)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    _run("bluesky", settings, stream, module.checkpoint_key(settings))


@source.command("mastodon")
@_common
@click.option("--instance", "mastodon_instance", help="Server base URL, e.g. https://mastodon.social.")
@click.option("--token", "mastodon_token", help="Access token [EM_SOURCE_MASTODON_TOKEN].")
@click.option("--tag", "mastodon_tag", help="Stream this hashtag's timeline instead of the public one.")
@click.option("--local/--federated", "mastodon_local_only", default=None, help="Only this server's posts.")
def mastodon(mastodon_tag: str | None, **options) -> None:
    """New statuses from a Mastodon server's streaming API (public or hashtag timeline)."""
    from emotion_monitor.sources import mastodon as module

    if mastodon_tag:
        options.update(mastodon_tag=mastodon_tag, mastodon_timeline="hashtag")
    settings = _settings(**options)
    try:
        key = module.checkpoint_key(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    _run("mastodon", settings, module.stream_mastodon(settings), key)


@source.command("jsonl")
@_common
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--follow", is_flag=True, help="Keep reading lines appended to FILE (like tail -F).")
def jsonl(file: Path, follow: bool, **options) -> None:
    """Posts from a JSON Lines file; with --follow, also every line appended later."""
    from emotion_monitor.sources import jsonl as module

    if not follow and not file.is_file():
        raise click.ClickException(f"{file}: no such file")
    settings = _settings(**options)
    stream = module.stream_jsonl(file, follow, settings.jsonl_poll_interval_s)
    _run("jsonl", settings, stream, module.checkpoint_key(file, settings.checkpoint_key), finite=not follow)
