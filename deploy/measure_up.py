"""Time the newcomer's experience of ``emotion-monitor up``: how long until the dashboard URL, the first counted post,
the demo's spike alert, and a clean stop after Ctrl-C. Runs ``up`` as a user does (free ports, the shipped model,
the demo with its defaults); prints the figures and writes them to JSON (default ``deploy/up-timing.json``).

    python deploy/measure_up.py [--day-pattern] [--out deploy/up-timing.json]

By default the demo's day pattern is off, so the figures do not depend on the hour the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import redis

    from monitor import schema

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day-pattern", action="store_true", help="keep the demo's hour-of-day rate scaling")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "deploy" / "up-timing.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        env = {**os.environ, "EM_UP_KAFKA_PORT": "0", "EM_UP_REDIS_PORT": "0", "EM_UP_DASHBOARD_PORT": "0",
               "EM_UP_RUN_DIR": str(run_dir), "EM_UP_STATUS_INTERVAL_S": "1",
               "EM_UP_DEMO_DAY_PATTERN": "true" if args.day_pattern else "false"}
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "emotion_monitor", "up"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[tuple[float, str]] = []
        reader = threading.Thread(
            target=lambda: [lines.append((time.monotonic() - started, line)) for line in iter(proc.stdout.readline, "")],
            daemon=True)
        reader.start()
        figures: dict[str, float | str | None] = {}

        def first(marker: str) -> float | None:
            return next((t for t, line in lines if marker in line), None)

        try:
            while first("Ctrl-C stops everything") is None:
                if proc.poll() is not None or time.monotonic() - started > args.timeout:
                    raise SystemExit("up did not start:\n" + "".join(line for _, line in lines[-40:]))
                time.sleep(0.2)
            figures["dashboard_url_s"] = round(first("Ctrl-C stops everything"), 1)
            demo_started = first("demo: ")
            info = json.loads((run_dir / "run.json").read_text())
            client = redis.Redis.from_url(info["redis_url"], decode_responses=True)
            while time.monotonic() - started < args.timeout:
                if "first_post_counted_s" not in figures and client.scard(schema.BRANDS_KEY):
                    figures["first_post_counted_s"] = round(time.monotonic() - started, 1)
                if client.zcard(schema.ALERTS_KEY):
                    figures["first_alert_s"] = round(time.monotonic() - started, 1)
                    break
                time.sleep(0.2)
            from emotion_monitor.settings import UpSettings

            spike_after = UpSettings().demo_spike_after_s
            if "first_alert_s" in figures and demo_started is not None:
                figures["alert_after_spike_start_s"] = round(figures["first_alert_s"] - demo_started - spike_after, 1)
            alerts = [json.loads(raw) for raw in client.zrange(schema.ALERTS_KEY, 0, -1)]
            figures["alerts"] = [f"{a.get('brand')}/{a.get('emotion')}" for a in alerts]
        finally:
            stop_sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
            figures["stop_after_sigint_s"] = round(time.monotonic() - stop_sent, 1)
            figures["exit_code"] = code
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    figures["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(figures, indent=2))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
