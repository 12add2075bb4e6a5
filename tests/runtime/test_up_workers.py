"""`up --workers N` runs N workers in one consumer group; a child that dies mid-run stops `up` with its exit code and
log tail; a worker that cannot start is reported the same way during start-up. Nothing is left running either way."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.monitor.conftest import create_topic, produce
from tests.runtime.test_up_e2e import _proc_start_time

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from trainer import make_untrained_artifact

    return make_untrained_artifact(tmp_path_factory.mktemp("model") / "untrained", max_length=32)


def _start_up(args: list[str], kafka_broker, redis_server, run_dir: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "EM_UP_RUN_DIR": str(run_dir), "EM_UP_DASHBOARD_PORT": "0", "EM_UP_STATUS_INTERVAL_S": "0.5",
           "EM_MONITOR_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "emotion_monitor", "up", "--kafka-url", kafka_broker.url,
                             "--redis-url", redis_server.url, "--no-demo", *args], cwd=ROOT, env=env,
                            stdout=out.open("w"), stderr=subprocess.STDOUT)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, out: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"`up` exited ({proc.returncode}) waiting for {what}:\n{out.read_text()[-4000:]}"
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{out.read_text()[-4000:]}")


def _counted(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    match = re.search(r'em_posts_total\{outcome="counted"\} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_two_workers_share_the_stream_and_a_dead_worker_stops_up_with_its_log_tail(
        kafka_broker, redis_server, model_dir, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "up.out"
    create_topic(kafka_broker, "posts", 4)
    proc = _start_up(["--workers", "2", "--model", str(model_dir)], kafka_broker, redis_server, run_dir, out)
    try:
        _wait_for(lambda: "Ctrl-C stops everything" in out.read_text(), 240, "up ready", proc, out)
        info = json.loads((run_dir / "run.json").read_text())
        assert set(info["pids"]) == {"worker-0", "worker-1", "dashboard", "up"} and len(info["metrics_ports"]) == 2
        text = out.read_text()
        assert "worker-0: ready" in text and "worker-1: ready" in text and "workers: 2" in text
        started = {name: (pid, _proc_start_time(pid)) for name, pid in info["pids"].items() if name != "up"}
        # one consumer group: 200 posts over 4 partitions, each worker counts its share, together all of them
        n = 200
        produce(kafka_broker, "posts", [json.dumps({"id": f"w{i}", "brand": "acme", "text": f"post number {i}"})
                                        .encode() for i in range(n)], keys=[str(i).encode() for i in range(n)])
        ports = info["metrics_ports"]
        _wait_for(lambda: sum(_counted(p) for p in ports) >= n, 120, "all posts counted", proc, out)
        shares = [_counted(p) for p in ports]
        assert sum(shares) == n and all(share > 0 for share in shares), shares

        # worker-1 dies mid-run: `up` reports which child, its exit code and the end of its log, then stops the rest
        worker_log = run_dir / "worker-1.log"
        with worker_log.open("a") as handle:
            handle.write("last words of worker-1 before the kill\n")
        os.kill(info["pids"]["worker-1"], signal.SIGKILL)
        code = proc.wait(timeout=120)
    finally:
        _stop(proc)
    text = out.read_text()
    assert code == 1, text[-3000:]
    assert "worker-1 exited with code -9; its log ends with:" in text
    reported = text.split("worker-1 exited with code -9; its log ends with:", 1)[1]
    # the log as it was when `up` noticed (the killed worker's own children may add lines while they are stopped)
    assert "last words of worker-1 before the kill" in reported
    assert "loaded model untrained-test-model" in reported  # the worker's own log lines, not up's
    assert "stopped: worker-0, worker-1, dashboard" in text
    left = [name for name, (pid, start) in started.items() if _proc_start_time(pid) == start]
    assert not left, f"still running after `up` exited: {left}"


def test_a_worker_that_fails_to_start_is_reported_and_nothing_is_left(kafka_broker, redis_server, model_dir,
                                                                       tmp_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(model_dir, broken)
    (broken / "thresholds.json").unlink()
    run_dir, out = tmp_path / "run", tmp_path / "up.out"
    proc = _start_up(["--model", str(broken)], kafka_broker, redis_server, run_dir, out)
    try:
        code = proc.wait(timeout=240)
    finally:
        _stop(proc)
    text = out.read_text()
    assert code == 1, text[-3000:]
    assert f"worker-0 exited with code 1 during start-up; its log ({run_dir / 'worker-0.log'}) ends with:" in text
    assert "thresholds.json: missing" in text  # the worker's own error, from its log
    assert "stopped: worker-0, dashboard" in text
    info = json.loads((run_dir / "run.json").read_text())
    for name in ("worker-0", "dashboard"):
        pid = info["pids"][name]
        assert _proc_start_time(pid) is None or not Path(f"/proc/{pid}/cmdline").read_text(), name
