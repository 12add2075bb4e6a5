"""``emotion-monitor up``: the whole product on one machine, in one command.

Starts (or reuses, given their URLs) the broker and Redis, creates the topics, then starts the worker(s), the demo
post source and the dashboard, prints the dashboard URL and keeps a live status line (posts/s, alerts) until Ctrl-C.

Children: the servers, every worker, the dashboard and a live source run as subprocesses, each in its own session (so
its process group id is its pid and a terminal Ctrl-C reaches only ``up``); each is a
:class:`~emotion_monitor.children.ChildProcess`. Shutdown goes in data-flow order: the source stops producing, the
workers get SIGTERM (they finish the batch, write, commit) and SIGKILL after ``stop_timeout_s``, then the dashboard,
then the servers. Each child is stopped by its process group, so whatever it spawned goes too; ``up`` waits until
every group is empty. ``<run_dir>/run.json`` lists the URLs and pids while it runs.

With ``--persist DIR`` the broker stores its log in an on-disk S3 server (s3rver, ``DIR/s3``) and Redis keeps an
append-only file and snapshots in ``DIR/redis``, so a restart of ``up`` continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from pydantic import ValidationError

from emotion_monitor.children import ChildProcess, spawn
from emotion_monitor.servers import ServerUnavailable, free_port, http_ok, listening
from emotion_monitor.settings import UpSettings
from emotion_monitor.topics import bootstrap_servers
from monitor.redact import redact

__all__ = ["Runtime", "up"]

log = logging.getLogger("emotion_monitor.up")

# Alert settings handed to the worker while the demo runs, unless the user's environment sets them: the worker's
# defaults (5-minute window against a 1-hour baseline) need an hour of history before a spike can show, but a
# newcomer should see the injected spike alert within a minute of starting.
DEMO_ALERT_SETTINGS: dict[str, object] = {
    # the statistical detector (the default) works on whole minutes with hours of history; the demo lasts a minute
    "alert_detector": "threshold",
    "alert_window_ms": 20_000,
    "alert_baseline_ms": 600_000,
    "alert_min_volume": 5,
    "alert_min_baseline_posts": 10,
    "alert_cooldown_ms": 120_000,
}

# Dashboard settings while the demo runs (again unless the environment sets them): the last hour, refreshed every
# 5 s, shows the demo's minutes of data as a moving chart rather than a sliver at the edge of 24 hours.
DEMO_DASHBOARD_SETTINGS: dict[str, object] = {"default_range": "1h", "refresh_seconds": 5}


def _cli_args(*subcommand: str) -> list[str]:
    return [sys.executable, "-m", "emotion_monitor", *subcommand]


def _pick_port(port: int, what: str, flag: str) -> int:
    if port == 0:
        return free_port()
    if listening(port):
        raise click.ClickException(
            f"port {port} for the {what} is already in use (another `emotion-monitor up`?). "
            f"Stop it, or pass {flag} 0 for a free port."
        )
    return port


@dataclass
class Runtime:
    """The started servers and children of one ``up`` run."""

    settings: UpSettings
    servers: list[ChildProcess] = field(default_factory=list)
    workers: list[ChildProcess] = field(default_factory=list)
    dashboard: ChildProcess | None = None
    source: ChildProcess | None = None  # the live post source (`--source bluesky`), stopped first
    kafka_url: str = ""
    redis_url: str = ""
    dashboard_url: str = ""
    topics: dict[str, str] = field(default_factory=dict)
    metrics_ports: list[int] = field(default_factory=list)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    _demo: object | None = None
    _demo_thread: threading.Thread | None = None
    _demo_stop: threading.Event | None = None

    # ---- start -------------------------------------------------------------------------------------------------
    def start(self, echo=click.echo) -> None:
        settings = self.settings
        log_dir = settings.run_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        if settings.source == "bluesky":  # the demo corpus is only the fallback here: missing data is not fatal
            corpus = self._load_demo_corpus(required=False) if settings.demo else None
        else:
            corpus = self._load_demo_corpus() if settings.demo else None  # a wrong data path fails before anything starts
        self._start_servers(log_dir, echo)
        self._create_topics(echo)
        self._start_workers(log_dir, echo)
        self._start_dashboard(log_dir)
        self._write_pids()
        self._wait_ready(echo)
        if settings.source == "bluesky" and not self.stop_requested.is_set():
            self._start_source(corpus, log_dir, echo)
        elif corpus is not None and not self.stop_requested.is_set():
            self._start_demo(corpus, echo)

    def _start_servers(self, log_dir: Path, echo) -> None:
        from emotion_monitor.servers import start_redis, start_s3rver, start_tansu

        settings = self.settings
        persist = settings.persist_dir.resolve() if settings.persist_dir else None
        if settings.kafka_url:
            try:
                bootstrap_servers(settings.kafka_url)  # a malformed URL fails here, before anything starts
            except ValueError as exc:
                raise click.ClickException(f"--kafka-url / EM_UP_KAFKA_URL: {exc}") from exc
            self.kafka_url = settings.kafka_url
            echo(f"broker: using {redact(self.kafka_url)}" + (" (--persist does not apply to it)" if persist else ""))
        else:
            port = _pick_port(settings.kafka_port, "broker", "--kafka-port")
            if persist:
                s3 = start_s3rver(persist / "s3", install_dir=settings.s3rver_dir, log_dir=log_dir)
                self.servers.append(s3)
                broker = start_tansu(port, storage_url="s3://tansu/", extra_env=s3.env, log_dir=log_dir)
                where = f"log in {persist / 's3'} (s3rver, on disk)"
            else:
                broker = start_tansu(port, log_dir=log_dir)
                where = "memory only: lost on stop (use --persist DIR to keep it)"
            self.servers.append(broker)
            self.kafka_url = broker.url
            echo(f"broker: tansu at {broker.url}, {where}")
        if settings.redis_url:
            self.redis_url = settings.redis_url
            echo(f"redis: using {redact(self.redis_url)}" + (" (--persist does not apply to it)" if persist else ""))
        else:
            port = _pick_port(settings.redis_port, "Redis", "--redis-port")
            data_dir = persist / "redis" if persist else None
            redis_server = start_redis(port, data_dir=data_dir, log_dir=log_dir)
            self.servers.append(redis_server)
            self.redis_url = redis_server.url
            where = f"append-only file + snapshots in {data_dir}" if data_dir else "memory only: lost on stop"
            echo(f"redis: Redis Stack with TimeSeries at {redis_server.url}, {where}")

    def _create_topics(self, echo) -> None:
        from aiokafka.errors import KafkaError

        from emotion_monitor.components import monitor_topics
        from emotion_monitor.topics import ensure_topics

        self.topics = monitor_topics()
        wanted = max(self.settings.partitions, self.settings.workers)
        counts = {self.topics["posts"]: wanted, self.topics["dlq"]: 1, self.topics["classified"]: wanted,
                  self.topics["alerts"]: 1}
        try:
            have = ensure_topics(self.kafka_url, counts)
        except KafkaError as exc:
            raise click.ClickException(f"cannot create the topics on Kafka at {redact(self.kafka_url)}: {exc}") from exc
        posts = have[self.topics["posts"]]
        echo(f"topics: {', '.join(f'{name} ({count}p)' for name, count in have.items())}")
        if posts < self.settings.workers:
            echo(f"warning: {self.topics['posts']} has {posts} partitions, fewer than {self.settings.workers} "
                 "workers: the extra workers will idle", err=True)

    def _worker_env(self, metrics_port: int) -> dict[str, str]:
        from emotion_monitor.components import monitor_env, monitor_settings

        known = set(type(monitor_settings()).model_fields)
        values: dict[str, object] = {
            "broker_url": self.kafka_url, "redis_url": self.redis_url, "metrics_port": metrics_port,
            "topic_partitions": max(self.settings.partitions, self.settings.workers),
        }
        if self.settings.model_path:  # else the worker's own EM_MONITOR_MODEL_PATH, or the shipped model
            values["model_path"] = str(self.settings.model_path)
        defaults = DEMO_ALERT_SETTINGS if self.settings.demo else {}
        extra = monitor_env(**{name: value for name, value in defaults.items() if name in known})
        env = {**os.environ, **{name: value for name, value in extra.items() if name not in os.environ}}
        env.update(monitor_env(**values))
        return env

    def _start_workers(self, log_dir: Path, echo) -> None:
        for index in range(self.settings.workers):
            metrics_port = free_port()
            cwd = self.settings.run_dir / f"worker-{index}"  # Faust keeps its table data in the working folder
            cwd.mkdir(parents=True, exist_ok=True)
            name = f"worker-{index}"
            child = spawn(name, _cli_args("worker"), log_dir / f"{name}.log", self._worker_env(metrics_port), cwd=cwd)
            self.workers.append(child)
            self.metrics_ports.append(metrics_port)
        echo(f"workers: {len(self.workers)} (logs in {log_dir}), metrics on "
             + ", ".join(f"http://127.0.0.1:{port}/metrics" for port in self.metrics_ports))

    def _start_dashboard(self, log_dir: Path) -> None:
        from emotion_monitor.components import dashboard_env

        port = _pick_port(self.settings.dashboard_port, "dashboard", "--dashboard-port")
        demo_env = dashboard_env(**DEMO_DASHBOARD_SETTINGS) if self.settings.demo else {}
        env = {**os.environ, **{name: value for name, value in demo_env.items() if name not in os.environ}}
        env.update(dashboard_env(redis_url=self.redis_url, port=port, host="127.0.0.1"))
        self.dashboard = spawn("dashboard", _cli_args("dashboard"), log_dir / "dashboard.log", env)
        self.dashboard_url = f"http://127.0.0.1:{port}"

    def _write_pids(self) -> None:
        """``<run_dir>/run.json``: the URLs and the pid of every server and child, for scripts and tests."""
        pids = {server.name: server.pid for server in self.servers}
        pids.update({child.name: child.pid for child in self.children()})
        pids["up"] = os.getpid()
        info = {"kafka_url": self.kafka_url, "redis_url": self.redis_url, "dashboard_url": self.dashboard_url,
                "metrics_ports": self.metrics_ports, "pids": pids}
        (self.settings.run_dir / "run.json").write_text(json.dumps(info, indent=2))

    def children(self) -> list[ChildProcess]:
        return [*([self.source] if self.source else []), *self.workers, *([self.dashboard] if self.dashboard else [])]

    def _wait_ready(self, echo) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        pending = {"dashboard": f"{self.dashboard_url}/_stcore/health"}
        pending.update({worker.name: f"http://127.0.0.1:{port}/health"
                        for worker, port in zip(self.workers, self.metrics_ports)})
        while pending and time.monotonic() < deadline and not self.stop_requested.is_set():
            for child in self.children():
                if not child.alive():
                    raise click.ClickException(
                        f"{child.name} exited with code {child.process.returncode} during start-up; "
                        f"its log ({child.log_path}) ends with:\n{child.log_tail()}")
            for name, url in list(pending.items()):
                if http_ok(url):
                    del pending[name]
                    echo(f"{name}: ready")
            time.sleep(0.5)
        if pending and not self.stop_requested.is_set():
            raise click.ClickException(f"not ready within {self.settings.start_timeout_s:.0f} s: {', '.join(pending)} "
                                       f"(logs in {self.settings.run_dir})")

    def _load_demo_corpus(self, required: bool = True):
        from emotion_monitor.demo import load_corpus

        try:
            return load_corpus(self.settings.demo_data_dir)
        except (OSError, ValueError) as exc:
            if not required:
                return None
            raise click.ClickException(str(exc)) from exc

    def _start_source(self, corpus, log_dir: Path, echo) -> None:
        """``--source bluesky``: the live source as a child when its endpoint answers, else the demo, saying why."""
        from emotion_monitor.components import source_env
        from emotion_monitor.sources.bluesky import probe_endpoint
        from emotion_monitor.sources.settings import SourceSettings

        try:
            endpoint = SourceSettings().bluesky_endpoint
        except ValidationError as exc:
            raise click.ClickException(f"invalid EM_SOURCE_* settings:\n{exc}") from exc
        problem = probe_endpoint(endpoint)
        if problem is None:
            metrics_port = free_port()
            env = {**os.environ, **source_env(kafka_url=self.kafka_url, redis_url=self.redis_url,
                                              topic=self.topics["posts"], metrics_port=metrics_port)}
            self.source = spawn("source-bluesky", _cli_args("source", "bluesky"), log_dir / "source-bluesky.log", env)
            self._write_pids()
            echo(f"source: Bluesky Jetstream {endpoint} (untagged posts: the worker's brand queries assign brands), "
                 f"metrics on http://127.0.0.1:{metrics_port}/metrics")
            return
        if corpus is None:
            echo(f"source: cannot reach Bluesky Jetstream at {endpoint} ({problem}), and the demo is off "
                 "(--no-demo) or its data is missing: no posts will flow", err=True)
            return
        echo(f"source: cannot reach Bluesky Jetstream at {endpoint} ({problem}); offline? "
             "Falling back to the demo source.", err=True)
        self._start_demo(corpus, echo)

    def _start_demo(self, corpus, echo) -> None:
        from emotion_monitor.demo import DemoSource

        self._demo = DemoSource(self.settings, corpus)
        self._demo_thread, self._demo_stop = self._demo.run_in_thread(self.kafka_url, self.topics["posts"])
        echo(f"demo: ~{self._demo.rate_now():.1f} posts/s for {', '.join(self.settings.demo_brands)}; "
             f"an anger spike for {self.settings.demo_spike_brand} starts in {self.settings.demo_spike_after_s:.0f} s")

    # ---- run ---------------------------------------------------------------------------------------------------
    def first_dead_child(self) -> ChildProcess | None:
        return next((child for child in self.children() if not child.alive()), None)

    # ---- stop --------------------------------------------------------------------------------------------------
    def stop(self, echo=click.echo) -> None:
        """Stop in data-flow order; bounded by the timeouts, never leaves a child behind."""
        if self.source is not None:
            self.source.stop(self.settings.stop_timeout_s)
        if self._demo_stop is not None:
            self._demo_stop.set()
            self._demo_thread.join(timeout=10)
        threads = [threading.Thread(target=worker.stop, args=(self.settings.stop_timeout_s,)) for worker in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.dashboard is not None:
            self.dashboard.stop(5.0)
        # the broker after the s3 server would lose its last writes: stop in reverse start order (redis, broker, s3)
        for server in reversed(self.servers):
            server.stop()
        stopped = [child.name for child in self.children()] + [server.name for server in self.servers]
        if stopped:
            echo("stopped: " + ", ".join(stopped))


def _run_loop(runtime: Runtime, stop: threading.Event) -> int:
    from emotion_monitor.status import StatusReader

    reader = StatusReader(runtime.redis_url, runtime.metrics_ports)
    interactive = sys.stdout.isatty()
    while not stop.wait(runtime.settings.status_interval_s):
        dead = runtime.first_dead_child()
        if dead is not None:
            click.echo(f"\n{dead.name} exited with code {dead.process.returncode}; its log ends with:\n"
                       f"{dead.log_tail()}", err=True)
            return 1
        status = reader.read()
        for alert in status.new_alerts:
            click.echo(("\n" if interactive else "") + f"ALERT {alert}")
        line = status.line()
        if interactive:
            click.echo(f"\r{line:<100}", nl=False)
        else:
            click.echo(line)
    return 0


@click.command("up")
@click.option("--kafka-url", help="Use this Kafka (kafka://host:port) instead of starting a broker [EM_UP_KAFKA_URL].")
@click.option("--redis-url", help="Use this Redis with TimeSeries instead of starting one [EM_UP_REDIS_URL].")
@click.option("--persist", "persist_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep broker and Redis data in DIR across restarts [EM_UP_PERSIST_DIR].")
@click.option("--workers", type=int, help="Worker processes in one consumer group [EM_UP_WORKERS; default 1].")
@click.option("--partitions", type=int, help="Partitions of the posts topic (>= workers) [EM_UP_PARTITIONS; default 4].")
@click.option("--kafka-port", type=int, help="Port of the started broker, 0 = free [EM_UP_KAFKA_PORT; default 9092].")
@click.option("--redis-port", type=int, help="Port of the started Redis, 0 = free [EM_UP_REDIS_PORT; default 6379].")
@click.option("--dashboard-port", type=int, help="Dashboard port, 0 = free [EM_UP_DASHBOARD_PORT; default 8501].")
@click.option("--demo/--no-demo", default=None, help="Run the demo post source [EM_UP_DEMO; default on].")
@click.option("--source", type=click.Choice(["demo", "bluesky"]), default=None,
              help="Post source: the demo, or live Bluesky (falls back to the demo when offline) "
                   "[EM_UP_SOURCE; default demo].")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model artifact for the workers [EM_UP_MODEL_PATH; default: EM_MONITOR_MODEL_PATH, else the "
                   "trainer's shipped model].")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for logs and run.json (URLs, pids) [EM_UP_RUN_DIR].")
def up(**options) -> None:
    """Start the whole product locally: broker, Redis, topics, worker, demo source and dashboard.

    \b
    Examples:
      emotion-monitor up                                  # everything, data in memory
      emotion-monitor up --persist ~/.emotion-monitor     # data survives a restart
      emotion-monitor up --kafka-url kafka://k:9092 --redis-url redis://r:6379/0 --no-demo
    Ctrl-C stops every process it started.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = UpSettings(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from exc
    runtime = Runtime(settings)
    stop = runtime.stop_requested

    def request_stop(signum, frame) -> None:  # noqa: ARG001
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        runtime.start()
        click.echo(f"\ndashboard: {runtime.dashboard_url}\n"
                   f"send your own posts: emotion-monitor produce FILE --kafka-url {redact(runtime.kafka_url)}\n"
                   "Ctrl-C stops everything\n")
        if not stop.is_set():
            code = _run_loop(runtime, stop)
    except ServerUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    finally:
        for sig, handler in previous.items():  # a second Ctrl-C during shutdown must not skip the cleanup
            signal.signal(sig, signal.SIG_IGN)
        click.echo("")
        runtime.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code)
