"""``emotion-monitor worker`` and ``emotion-monitor replay`` (both configured by ``EM_MONITOR_*`` env vars)."""

from __future__ import annotations

import gc
import logging

import click

__all__ = ["replay", "worker"]


def _settings():
    """The settings from the environment, or a clear error naming the bad EM_MONITOR_* variable."""
    from pydantic import ValidationError

    from monitor.settings import MonitorSettings

    try:
        return MonitorSettings()
    except ValidationError as exc:
        problems = "; ".join(f"EM_MONITOR_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise click.ClickException(f"invalid monitor settings: {problems}") from None


@click.command("worker")
@click.option("--log-level", default=None, help="Override EM_MONITOR_LOG_LEVEL (debug, info, warning, error).")
def worker(log_level: str | None) -> None:
    """Run a stream worker: Kafka posts -> classify in micro-batches -> Redis TimeSeries, posts.classified, alerts.

    Start several with the same EM_MONITOR_GROUP_ID to share the partitions. Stop with SIGTERM (Ctrl-C): the
    batch in hand is finished, written and committed.
    """
    from monitor.inference import load_inference, share_cores_politely

    share_cores_politely()
    import faust

    from monitor.app import create_app
    from monitor.pipeline import check_alert_emotions

    settings = _settings()
    level = (log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inference = load_inference(settings)
    try:
        try:
            check_alert_emotions(settings, inference.labels)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        app = create_app(settings, inference)
        faust_worker = faust.Worker(app, loglevel=level, quiet=True)
        # Faust's terminal spinner sets the root logger to DEBUG (its handler shows every record), so every
        # debug line of aiokafka and Faust — several per produced record — was built and redacted, then dropped:
        # a third of the worker's CPU per post (bench/throughput.py --model null). No spinner: the level holds.
        faust_worker.spinner = None
        # Everything imported and built so far lives as long as the worker: out of the collector's sight, so its
        # full collections (every few seconds under load, each walking ~175,000 objects: ~0.2 s, ~20 µs per post
        # in bench/throughput.py --model null) only walk what the stream creates
        gc.freeze()
        # and young collections every 20,000 allocations instead of 700: a batch allocates ~50 objects per post, most
        # freed by reference counting anyway; fewer passes over the batch in flight (~6 µs per post at 700)
        gc.set_threshold(20_000, 10, 10)
        faust_worker.execute_from_commandline()
    finally:  # after Faust finished its batches: stop the inference process
        inference.close()


@click.command("replay")
@click.option("--mode", type=click.Choice(["fill", "recompute"]), default="fill", show_default=True,
              help="fill: count only posts not yet counted; recompute: clear the time range, then reprocess.")
@click.option("--from-time", "from_time", default=None, help="Start at this record time (ISO 8601 or epoch ms).")
@click.option("--from-offset", "from_offset", type=int, default=None, help="Start at this offset in every partition.")
@click.option("--to-time", "to_time", default=None, help="Stop at this record time (default: the current end).")
@click.option("--group-id", default=None, help="Replay consumer group (default: <EM_MONITOR_GROUP_ID>-replay).")
@click.option("--publish/--no-publish", default=False, show_default=True,
              help="Also send replayed posts to posts.classified.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def replay(mode: str, from_time: str | None, from_offset: int | None, to_time: str | None, group_id: str | None,
           publish: bool, progress: bool) -> None:
    """Replay/backfill the posts topic (from the beginning by default) up to a time or the current end."""
    import asyncio

    from monitor.inference import share_cores_politely

    share_cores_politely()
    from monitor.replay import ReplayRange, run_replay

    settings = _settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if from_time is not None and from_offset is not None:
        raise click.UsageError("give --from-time or --from-offset, not both")
    span = ReplayRange.parse(from_time=from_time, from_offset=from_offset, to_time=to_time)
    from monitor.replay import ReplayRefused
    from monitor.store import ClearRefused

    try:
        summary = asyncio.run(run_replay(settings, span, mode=mode, group_id=group_id, publish=publish,
                                         progress=progress))
    except (ReplayRefused, ClearRefused) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.describe())
