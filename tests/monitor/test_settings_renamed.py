"""Renamed monitor settings: the old env names keep working for one release, with a warning, and lose to the new."""

from __future__ import annotations

import logging

import pytest

from monitor.settings import RENAMED_ENV_VARS, MonitorSettings

OLD_INITIAL, OLD_MAX = "EM_MONITOR_REDIS_RETRY_INITIAL", "EM_MONITOR_REDIS_RETRY_MAX"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (OLD_INITIAL, OLD_MAX, "EM_MONITOR_RETRY_INITIAL_S", "EM_MONITOR_RETRY_MAX_S"):
        monkeypatch.delenv(name, raising=False)


def test_new_env_names_set_the_back_off(monkeypatch, caplog):
    monkeypatch.setenv("EM_MONITOR_RETRY_INITIAL_S", "0.05")
    monkeypatch.setenv("EM_MONITOR_RETRY_MAX_S", "2.5")
    with caplog.at_level(logging.WARNING, logger="monitor.settings"):
        settings = MonitorSettings()
    assert (settings.retry_initial_s, settings.retry_max_s) == (0.05, 2.5)
    assert "deprecated" not in caplog.text


def test_old_env_names_still_work_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv(OLD_INITIAL, "0.07")
    monkeypatch.setenv(OLD_MAX, "3")
    with caplog.at_level(logging.WARNING, logger="monitor.settings"):
        settings = MonitorSettings()
    assert (settings.retry_initial_s, settings.retry_max_s) == (0.07, 3.0)
    warned = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert any(OLD_INITIAL in m and "EM_MONITOR_RETRY_INITIAL_S" in m for m in warned), warned
    assert any(OLD_MAX in m and "EM_MONITOR_RETRY_MAX_S" in m for m in warned), warned


def test_new_env_name_wins_over_the_old_one(monkeypatch, caplog):
    monkeypatch.setenv(OLD_INITIAL, "0.07")
    monkeypatch.setenv("EM_MONITOR_RETRY_INITIAL_S", "0.3")
    with caplog.at_level(logging.WARNING, logger="monitor.settings"):
        settings = MonitorSettings()
    assert settings.retry_initial_s == 0.3
    assert settings.retry_max_s == MonitorSettings.model_fields["retry_max_s"].default
    assert any(OLD_INITIAL in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)


def test_old_env_name_is_validated_like_the_new_one(monkeypatch):
    monkeypatch.setenv(OLD_MAX, "-1")
    with pytest.raises(ValueError, match="retry_max_s"):
        MonitorSettings()


def test_explicit_value_wins_over_an_old_env_name(monkeypatch):
    """A value given in code (or by a CLI option) is the new field: the old env name never overrides it."""
    monkeypatch.setenv(OLD_INITIAL, "0.07")
    assert MonitorSettings(retry_initial_s=0.9).retry_initial_s == 0.9
    # what the worker hands its inference child: settings dumped and re-read keep their value
    dumped = MonitorSettings(retry_initial_s=0.9).model_dump_json()
    assert MonitorSettings.model_validate_json(dumped).retry_initial_s == 0.9


def test_every_renamed_field_exists():
    assert set(RENAMED_ENV_VARS) <= set(MonitorSettings.model_fields)
