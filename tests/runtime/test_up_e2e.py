"""`emotion-monitor up` end to end, as a user runs it: a real broker, Redis, worker (with the shipped default model),
demo source and dashboard on free ports; posts reach Redis, the dashboard answers, the injected anger spike fires an
alert, and after SIGINT (Ctrl-C) no process that `up` started is left — checked by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from monitor import schema

ROOT = Path(__file__).resolve().parents[2]
SPIKE_BRAND = "velora"


def _proc_start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when gone or a zombie: (pid, start) names a process
    even if its pid is reused later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _descendants(root_pid: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            start = _proc_start_time(child)
            if start is not None:
                found[child] = start
                todo.append(child)
    return found


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen, output: list[str]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"`up` exited with {proc.returncode} while waiting for {what}:\n" + "".join(output[-60:]))
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n" + "".join(output[-60:]))


def _posts_total(client: redis.Redis) -> int:
    rows = client.ts().mrange("-", "+", filters=[f"app={schema.APP_LABEL}", "metric=posts", "tier=raw"],
                              aggregation_type="sum", bucket_size_msec=10**13)
    return int(sum(value for row in rows for _k, (_l, samples) in row.items() for _t, value in samples))


# slow (~55 s, the default suite's longest): CI runs it with -m slow, and its bare-clone check runs `./em up` to the
# demo's alert again (deploy/smoke_up.py), so the default run stays near its ~15-minute aim
@pytest.mark.slow
def test_up_runs_everything_fires_the_demo_alert_and_stops_cleanly(tmp_path, goemotions_dir):
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "EM_UP_KAFKA_PORT": "0", "EM_UP_REDIS_PORT": "0", "EM_UP_DASHBOARD_PORT": "0",
        "EM_UP_RUN_DIR": str(run_dir), "EM_UP_DEMO_DATA_DIR": str(goemotions_dir),
        "EM_UP_STATUS_INTERVAL_S": "1", "EM_UP_DEMO_DAY_PATTERN": "false",  # same rate at any hour CI runs
        "EM_UP_DEMO_SPIKE_BRAND": SPIKE_BRAND, "EM_UP_DEMO_SPIKE_AFTER_S": "20", "EM_UP_DEMO_SPIKE_DURATION_S": "60",
    }
    proc = subprocess.Popen([sys.executable, "-m", "emotion_monitor", "up"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    seen: dict[int, str] = {}
    try:
        info = _wait(lambda: "dashboard: http" in "".join(output) and json.loads((run_dir / "run.json").read_text()),
                     240, "the dashboard URL", proc, output)
        assert set(info["pids"]) >= {"kafka", "redis", "worker-0", "dashboard", "up"}
        assert info["pids"]["up"] == proc.pid
        client = redis.Redis.from_url(info["redis_url"], decode_responses=True)
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{info['pids']['dashboard']}/environ").read_text().split("\0") if "=" in item)
        assert environ["EM_DASHBOARD_DEFAULT_RANGE"] == "1h"  # the demo's minutes fill the chart
        assert environ["EM_DASHBOARD_REDIS_URL"] == info["redis_url"]

        with urllib.request.urlopen(f"{info['dashboard_url']}/_stcore/health", timeout=5) as response:
            assert response.status == 200 and response.read().decode().strip() == "ok"

        _wait(lambda: _posts_total(client) >= 30, 90, "30 demo posts counted in Redis", proc, output)
        assert client.smembers(schema.BRANDS_KEY) == {"acme coffee", "nimbus air", "velora"}

        raw_alerts = _wait(lambda: client.zrange(schema.ALERTS_KEY, 0, -1), 150, "the spike alert", proc, output)
        alerts = [json.loads(raw) for raw in raw_alerts]
        assert {(alert["brand"], alert["emotion"]) for alert in alerts} == {(SPIKE_BRAND, "anger")}
        _wait(lambda: "ALERT velora / anger" in "".join(output), 10, "the alert on the status output", proc, output)
        assert any(line.startswith("posts/s") for line in output)

        for _ in range(3):  # every process up started, and whatever those started
            seen.update(_descendants(proc.pid))
            time.sleep(0.3)
        started = {pid for name, pid in info["pids"].items() if name != "up"}
        assert started <= set(seen), f"run.json pids {started} not all children of up {sorted(seen)}"
    finally:
        seen.update(_descendants(proc.pid))
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(timeout=5)
    assert code == 0, "".join(output[-40:])
    assert "stopped: worker-0, dashboard" in "".join(output)
    left = {pid for pid, start in seen.items() if _proc_start_time(pid) == start}
    assert not left, f"processes left after Ctrl-C: {left}"
