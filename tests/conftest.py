"""Shared fixtures: real servers (tansu broker, Redis with TimeSeries) on free ports, stopped as process groups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emotion_monitor.servers import start_redis, start_tansu

ROOT = Path(__file__).resolve().parents[1]
# The full GoEmotions folder: EMOTION_MONITOR_DATA_DIR, else ../shared/data/goemotions beside the clone (CI has it).
GOEMOTIONS_DIR = Path(os.environ.get("EMOTION_MONITOR_DATA_DIR", ROOT.parent / "shared" / "data" / "goemotions"))
# The seeded sample shipped in the package (deploy/make_goemotions_sample.py): what a fresh clone has.
SAMPLE_DIR = ROOT / "emotion_monitor" / "data" / "goemotions_sample"
ON_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def full_goemotions_present() -> bool:
    return (GOEMOTIONS_DIR / "train.tsv").exists()


def goemotions_data_dir() -> Path:
    """The full GoEmotions folder when present, else the shipped sample -- except on CI (``CI=true``), where the
    full data is expected and its absence fails the test instead of quietly testing on less."""
    if full_goemotions_present():
        return GOEMOTIONS_DIR
    if ON_CI:
        pytest.fail(f"CI=true but the full GoEmotions is not at {GOEMOTIONS_DIR} (set EMOTION_MONITOR_DATA_DIR); "
                    "CI runs the full-data tests and never falls back to the shipped sample")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def goemotions_dir() -> Path:
    """GoEmotions in its TSV layout: the full data when present, else the shipped sample (never on CI)."""
    return goemotions_data_dir()


@pytest.fixture(scope="session")
def goemotions_full_dir() -> Path:
    """The full GoEmotions, for tests of facts about the whole dataset: skipped only off CI when it is absent."""
    path = goemotions_data_dir()
    if path != GOEMOTIONS_DIR:
        pytest.skip(f"needs the full GoEmotions at {GOEMOTIONS_DIR} (set EMOTION_MONITOR_DATA_DIR); CI runs it")
    return path


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
