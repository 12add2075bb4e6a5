"""Secret redaction (pure logic) and its hook into every log record."""

from __future__ import annotations

import logging

import pytest

from monitor.redact import install_log_redaction, redact, safe_url


@pytest.mark.parametrize("text, secret", [
    ("redis: using redis://:pw-1@10.0.0.5:6379/0", "pw-1"),
    ("redis://default:pw-2@redis:6379/0 and kafka://kafka:9092", "pw-2"),
    ("rediss://user:p%40ss-3@host/0", "p%40ss-3"),
    ("webhook http://127.0.0.1:8000/hook?token=tok-4&x=1 answered 500", "tok-4"),
    ("https://h/x?a=1&api_key=key-5", "key-5"),
    ("https://h/x?sig=sig-6;auth_token=tok-7", "tok-7"),
    ("config password=pw-8 set", "pw-8"),
    ('{"access_token": "tok-9"}', "tok-9"),
    ("redis-server --requirepass pw-10", "pw-10"),
])
def test_secrets_are_masked(text, secret):
    clean = redact(text)
    assert secret not in clean and "***" in clean


@pytest.mark.parametrize("text", [
    "Error 111 connecting to 127.0.0.1:6379. Connection refused.",
    "batch of 32 failed (1/3); retrying in 0.2 s",
    "max_tokens=128 at 12:30:01",
    "kafka://127.0.0.1:9092",
])
def test_ordinary_lines_are_untouched(text):
    assert redact(text) == text


def test_safe_url_keeps_scheme_host_port_only():
    assert safe_url("https://hooks.example.com/services/T0/B0/secret?token=x") == "https://hooks.example.com/…"
    assert safe_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"


def test_installed_redaction_covers_arguments_and_tracebacks(caplog):
    install_log_redaction()
    logger = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO, logger="some.library"):
        logger.info("connecting to %s", "redis://:pw-11@h:6379/0")
        try:
            raise ValueError("bad url http://h/?token=tok-12")
        except ValueError:
            logger.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "pw-11" not in text and "tok-12" not in text
    assert "redis://:***@h:6379/0" in text and "token=***" in text
