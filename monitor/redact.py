"""Secrets out of every log line: URL passwords (``redis://:pw@host``), secret-looking query parameters
(``?token=…``, ``api_key=…``, ``sig=…``) and ``password=…``-style pairs.

:func:`redact` cleans one string (for ``click.echo`` and messages built by hand); :func:`install_log_redaction` makes
every log record pass through it — the message with its arguments and the formatted traceback — whichever library
logged it (Faust, aiokafka, redis-py, aiohttp), because it hooks record creation rather than one handler. The
``emotion-monitor`` entry point installs it before any subcommand runs.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

__all__ = ["install_log_redaction", "redact", "safe_url"]

MASK = "***"
_SECRET_WORDS = r"(?:token|key|secret|password|passwd|pwd|pass|sig|signature|auth|credential|session|code)"
# scheme://user:password@host -> scheme://user:***@host (user names are not secret; ports are not passwords)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<secret>[^@/?#\s]+)@")
# ?token=abc&x=1 -> ?token=***&x=1 (any parameter whose name contains a secret word)
_QUERY = re.compile(rf"(?P<head>[?&;][\w.-]*{_SECRET_WORDS}[\w.-]*=)(?P<secret>[^&;#\s'\"]+)", re.IGNORECASE)
# password=abc, "token": "abc", --requirepass abc
_PAIR = re.compile(
    r"(?P<head>\b(?:(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)[\"']?\s*[=:]"
    r"|(?:requirepass|masterauth)\s)\s*[\"']?)(?P<secret>[^\s&;,'\"}]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL passwords, secret query parameters and password-like pairs replaced by ``***``."""
    if not text or ("@" not in text and "=" not in text and ":" not in text and " " not in text):
        return text
    text = _USERINFO.sub(lambda m: m["head"] + MASK + "@", text)
    text = _QUERY.sub(lambda m: m["head"] + MASK, text)
    return _PAIR.sub(lambda m: m["head"] + MASK, text)


def safe_url(url: str | None) -> str:
    """A URL as it may be shown: scheme, host and port only (a webhook's path and query often are its secret)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    elided = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{elided}"


_installed = False


def install_log_redaction() -> None:
    """Redact every log record from now on (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it as usual
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            # format the traceback now, redacted; formatters use exc_text when it is set
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacting_record)
    _installed = True
