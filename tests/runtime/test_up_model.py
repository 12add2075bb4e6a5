"""The model `up`'s workers load is an UpSettings field like every other `up` option: EM_UP_MODEL_PATH, overridden by
`up --model`, checked before anything starts, and handed to each worker as its EM_MONITOR_MODEL_PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from emotion_monitor.settings import UpSettings
from emotion_monitor.up import Runtime

ROOT = Path(__file__).resolve().parents[2]


def test_model_path_from_the_environment_reaches_the_worker(monkeypatch, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    monkeypatch.setenv("EM_UP_MODEL_PATH", str(model))
    monkeypatch.delenv("EM_MONITOR_MODEL_PATH", raising=False)
    settings = UpSettings(run_dir=tmp_path / "run")
    assert settings.model_path == model
    assert Runtime(settings)._worker_env(metrics_port=0)["EM_MONITOR_MODEL_PATH"] == str(model)


def test_the_cli_option_overrides_the_environment(monkeypatch, tmp_path):
    """`up` builds its settings from the options it was given over the environment (as for every option)."""
    from_env, from_cli = tmp_path / "env-model", tmp_path / "cli-model"
    from_env.mkdir()
    from_cli.mkdir()
    monkeypatch.setenv("EM_UP_MODEL_PATH", str(from_env))
    settings = UpSettings(model_path=from_cli, run_dir=tmp_path / "run")
    assert Runtime(settings)._worker_env(metrics_port=0)["EM_MONITOR_MODEL_PATH"] == str(from_cli)


def test_unset_leaves_the_worker_its_own_model_setting(monkeypatch, tmp_path):
    elsewhere = str(tmp_path / "worker-model")
    monkeypatch.delenv("EM_UP_MODEL_PATH", raising=False)
    monkeypatch.setenv("EM_MONITOR_MODEL_PATH", elsewhere)
    env = Runtime(UpSettings(run_dir=tmp_path / "run"))._worker_env(metrics_port=0)
    assert env["EM_MONITOR_MODEL_PATH"] == elsewhere


def test_a_model_path_that_is_no_folder_fails_before_anything_starts(tmp_path):
    env = {**os.environ, "EM_UP_RUN_DIR": str(tmp_path / "run"), "EM_UP_MODEL_PATH": str(tmp_path / "nowhere")}
    result = subprocess.run([sys.executable, "-m", "emotion_monitor", "up", "--kafka-port", "0", "--redis-port", "0"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "model_path" in result.stderr and "nowhere" in result.stderr and "is not a folder" in result.stderr
    assert "broker:" not in result.stdout  # nothing was started
