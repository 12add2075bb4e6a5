"""Bad configuration fails fast with the variable named, before the worker touches Kafka or Redis."""

from __future__ import annotations

import subprocess

from tests.monitor.conftest import EMOTION_MONITOR, ROOT


def run(command: str, env_extra: dict[str, str], small_model_dir) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_MONITOR_")}
    env.update({"EM_MONITOR_MODEL_PATH": str(small_model_dir), **env_extra})
    return subprocess.run([EMOTION_MONITOR, command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_invalid_setting_is_named(small_model_dir):
    out = run("worker", {"EM_MONITOR_MAX_BATCH": "lots"}, small_model_dir)
    assert out.returncode != 0 and "EM_MONITOR_MAX_BATCH" in out.stderr
    out = run("replay", {"EM_MONITOR_DEVICE": "tpu"}, small_model_dir)
    assert out.returncode != 0 and "EM_MONITOR_DEVICE" in out.stderr


def test_unknown_alert_emotion_is_refused(small_model_dir):
    out = run("worker", {"EM_MONITOR_ALERT_EMOTIONS": '["rage"]'}, small_model_dir)
    assert out.returncode != 0 and "EM_MONITOR_ALERT_EMOTIONS" in out.stderr and "rage" in out.stderr
