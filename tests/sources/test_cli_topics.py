"""``emotion-monitor source``'s topics: its own ``EM_SOURCE_TOPIC`` / ``EM_SOURCE_DLQ_TOPIC``, else the worker's."""

from __future__ import annotations

import os

import click
import pytest

from emotion_monitor.sources.cli import _topics
from emotion_monitor.sources.settings import SourceSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("EM_MONITOR_", "EM_SOURCE_")):
            monkeypatch.delenv(name)


def test_the_worker_topics_are_the_default(monkeypatch):
    assert _topics(SourceSettings()) == ("posts", "posts.dlq")
    monkeypatch.setenv("EM_MONITOR_POSTS_TOPIC", "brand-posts")
    monkeypatch.setenv("EM_MONITOR_DLQ_TOPIC", "brand-posts.dlq")
    assert _topics(SourceSettings()) == ("brand-posts", "brand-posts.dlq")


def test_the_source_settings_win(monkeypatch):
    monkeypatch.setenv("EM_MONITOR_POSTS_TOPIC", "brand-posts")
    assert _topics(SourceSettings(topic="mine", dlq_topic="mine.dlq")) == ("mine", "mine.dlq")


def test_invalid_worker_settings_are_a_clear_error(monkeypatch):
    monkeypatch.setenv("EM_MONITOR_MAX_POST_BYTES", "not a number")
    with pytest.raises(click.ClickException, match="invalid EM_MONITOR_\\* settings") as raised:
        _topics(SourceSettings())
    assert "max_post_bytes" in raised.value.message
