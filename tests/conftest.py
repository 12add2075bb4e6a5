"""Shared fixtures: real servers (tansu broker, Redis with TimeSeries) on free ports, stopped by PID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emotion_monitor.servers import start_redis, start_tansu

ROOT = Path(__file__).resolve().parents[1]
GOEMOTIONS_DIR = Path(os.environ.get("EMOTION_MONITOR_DATA_DIR", ROOT.parent / "shared" / "data" / "goemotions"))


@pytest.fixture(scope="session")
def goemotions_dir() -> Path:
    if not (GOEMOTIONS_DIR / "train.tsv").exists():
        pytest.fail(f"GoEmotions not found at {GOEMOTIONS_DIR} (set EMOTION_MONITOR_DATA_DIR)")
    return GOEMOTIONS_DIR


@pytest.fixture()
def redis_server(tmp_path):
    """A fresh redis-server with the TimeSeries module, per test."""
    server = start_redis(log_dir=tmp_path)
    yield server
    server.stop()


@pytest.fixture()
def kafka_broker(tmp_path):
    """A fresh tansu broker (memory storage), per test."""
    server = start_tansu(log_dir=tmp_path)
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()
