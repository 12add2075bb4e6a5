"""Smoke test of ``./em up`` as a newcomer runs it: the dashboard URL is printed, a demo post is counted in Redis,
the demo's anger spike raises its alert (in Redis and as an ``ALERT`` line), and Ctrl-C (SIGINT) stops every process
``up`` started. Prints the timings as JSON (and writes them with ``--out``); exits 1 naming the step that failed.

    deploy/smoke_up.py [--timeout 300] [--out FILE] [-- COMMAND ...]      (default command: ./em up)

Free ports (``EM_UP_*_PORT=0``) and the demo's day pattern off, so it runs beside other servers at any hour; every
other setting is the default a user gets. Used by deploy/bare_clone_check.sh on a fresh clone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _descendants(root_pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    found, todo = set(), [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300, help="seconds for each step")
    parser.add_argument("--out", type=Path, default=None, help="also write the timings to this JSON file")
    parser.add_argument("command", nargs="*", default=["./em", "up"])
    args = parser.parse_args(argv)

    run_dir = Path(tempfile.mkdtemp(prefix="em-smoke-"))
    env = {**os.environ, "EM_UP_KAFKA_PORT": "0", "EM_UP_REDIS_PORT": "0", "EM_UP_DASHBOARD_PORT": "0",
           "EM_UP_RUN_DIR": str(run_dir), "EM_UP_STATUS_INTERVAL_S": "1", "EM_UP_DEMO_DAY_PATTERN": "false"}
    started = time.monotonic()
    proc = subprocess.Popen(args.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []

    def read() -> None:
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            sys.stdout.write(f"  | {line}")
            sys.stdout.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    figures: dict[str, object] = {"command": " ".join(args.command)}
    failure = None
    seen: set[int] = set()

    def wait(what: str, predicate):
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                figures[what] = round(time.monotonic() - started, 1)
                return value
            if proc.poll() is not None:
                raise RuntimeError(f"`up` exited with {proc.returncode} while waiting for {what}")
            time.sleep(0.3)
        raise RuntimeError(f"no {what} within {args.timeout:.0f} s")

    try:
        wait("dashboard_url_s", lambda: any("dashboard: http" in line for line in lines)
             and (run_dir / "run.json").exists())
        info = json.loads((run_dir / "run.json").read_text())
        import redis  # from the project's venv: run this script with its python

        from monitor import schema

        client = redis.Redis.from_url(info["redis_url"], decode_responses=True)
        wait("first_post_counted_s", lambda: client.scard(schema.BRANDS_KEY))
        raw = wait("alert_in_redis_s", lambda: client.zrange(schema.ALERTS_KEY, 0, -1))
        figures["alerts"] = sorted({f"{a.get('brand')}/{a.get('emotion')}" for a in map(json.loads, raw)})
        wait("alert_line_s", lambda: any("ALERT " in line for line in lines))
        seen = _descendants(proc.pid)
    except Exception as exc:  # noqa: BLE001 - reported with the step, after a clean stop
        failure = str(exc)
    finally:
        seen |= _descendants(proc.pid)
        sigint = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            figures["exit_code"] = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            figures["exit_code"] = "killed after 120 s"
        figures["stop_after_sigint_s"] = round(time.monotonic() - sigint, 1)
        reader.join(timeout=5)
    left = sorted(pid for pid in seen if _alive(pid))
    figures["left_after_stop"] = left
    if failure is None and figures["exit_code"] != 0:
        failure = f"`up` exited with {figures['exit_code']} after Ctrl-C"
    if failure is None and left:
        failure = f"processes left after Ctrl-C: {left}"
    if failure is None and "anger" not in " ".join(figures.get("alerts", [])):
        failure = f"the alerts were {figures.get('alerts')}, not the demo's anger spike"
    figures["ok"] = failure is None
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    if failure:
        print(f"smoke_up: FAILED: {failure}", file=sys.stderr)
        return 1
    print("smoke_up: ok (URL printed, posts counted, the spike's alert, clean Ctrl-C)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
