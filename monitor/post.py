"""The typed input model for one post on the ``posts`` topic, and the parser that turns raw Kafka bytes into it.

A post is JSON with ``id`` (string, required), ``brand`` (string) or ``brands`` (list of strings; required unless
brand matching tags untagged posts, see :mod:`monitor.brands`), ``text`` (string, required), ``created_at`` (ISO 8601 or epoch milliseconds; default the Kafka record timestamp) and optional ``source``,
``lang``, ``author``. Unknown fields are ignored.

``parse_post`` never lets bad input escape as anything but :class:`PostRejected`, whose ``reason`` is one of
:data:`REASONS` and whose ``detail`` says what exactly is wrong. The worker sends such a record to the dead-letter
topic (see :func:`rejection_envelope`), the ``produce`` command reports the row; nothing is silently dropped.

Texts are never rejected for length: the model keeps the first :data:`MAX_TEXT_CHARS` characters (the classifier
truncates further, to its token limit). Only a record larger than ``max_bytes`` as a whole is rejected (``oversize``).

Brand names are normalised (whitespace stripped and collapsed, lower-cased) and must match :data:`BRAND_PATTERN`:
letters, digits, single inner spaces and ``_ - . & + '``. Anything else (``=``, ``,``, ``(``, ``)``, ``!``, quotes,
``:``, braces, wildcards, control characters) would break a ``TS.MRANGE ... FILTER brand=...`` expression or the
``em:ts:{brand}:...`` key layout of :mod:`monitor.schema`, so it is rejected.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "BRAND_PATTERN",
    "DEFAULT_MAX_BYTES",
    "MAX_BRANDS",
    "MAX_ENVELOPE_BYTES",
    "MAX_TEXT_CHARS",
    "REASONS",
    "Post",
    "PostRejected",
    "normalise_brand",
    "parse_post",
    "rejection_envelope",
    "to_epoch_ms",
]

DEFAULT_MAX_BYTES = 256 * 1024
MAX_TEXT_CHARS = 5_000
MAX_BRANDS = 16
MAX_BRAND_CHARS = 64
MAX_ID_CHARS = 256
BRAND_PATTERN = re.compile(r"^[^\W_](?:[\w.&+'-]| (?! ))*$")
# Reasons a record is rejected; stable strings, so DLQ consumers can group by them.
REASONS = ("oversize", "not_json", "not_object", "missing_field", "wrong_type", "invalid_value",
           # the time policy (monitor.timepolicy) and the store's refusals (monitor.store)
           "future_timestamp", "too_old", "brand_limit")
# Largest dead-letter record: under the 1,000,000-byte request limit of the Faust/aiokafka producer (and the broker's
# default message size), with room for the key and the record framing. A bigger original is truncated in it.
MAX_ENVELOPE_BYTES = 900_000
# a lone UTF-16 surrogate (JSON "\ud800" or CESU-style bytes): valid to json.loads, unencodable as UTF-8 later
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


class PostRejected(ValueError):
    """A record that is not a valid post. ``reason`` is one of :data:`REASONS`; ``detail`` is human readable."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def normalise_brand(value: Any) -> str:
    """Strip, collapse inner whitespace, lower-case; raise ``ValueError`` for names a label filter cannot hold."""
    if not isinstance(value, str):
        raise TypeError(f"brand must be a string, got {type(value).__name__}")
    return _normalised_brand(value)


@functools.lru_cache(maxsize=4096)
def _normalised_brand(value: str) -> str:
    """:func:`normalise_brand` of a string, cached: a stream names the same few brands over and over (a name it
    refuses raises, and a raise is never cached)."""
    brand = " ".join(value.split()).lower()
    if not brand:
        raise ValueError("brand is empty")
    if len(brand) > MAX_BRAND_CHARS:
        raise ValueError(f"brand {brand[:20]!r}... is longer than {MAX_BRAND_CHARS} characters")
    if not BRAND_PATTERN.match(brand):
        raise ValueError(
            f"brand {brand!r} has characters that break TimeSeries label filters "
            "(allowed: letters, digits, single spaces and _ - . & + ')"
        )
    return brand


@functools.lru_cache(maxsize=4096)
def _normalised_brand_list(brands: tuple) -> tuple[str, ...]:
    """The normalised, de-duplicated brands of a list (a refused name raises, and a raise is never cached)."""
    return tuple(dict.fromkeys(normalise_brand(item) for item in brands))


def to_epoch_ms(value: Any) -> int:
    """ISO 8601 (naive = UTC), digits or a number of epoch milliseconds -> epoch ms."""
    if isinstance(value, bool):
        raise TypeError("created_at must be an ISO 8601 string or epoch milliseconds, got a boolean")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):  # Infinity, NaN, 1e400: int() would raise
            raise ValueError(f"created_at {value} is not a finite number of epoch milliseconds")
        if value < 0:
            raise ValueError(f"created_at {value} is negative")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(f"created_at {value!r} is neither ISO 8601 nor epoch milliseconds") from None
        if moment.tzinfo is None:  # a naive time is taken as UTC, the only unambiguous choice for a stream
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)
    raise TypeError(f"created_at must be an ISO 8601 string or epoch milliseconds, got {type(value).__name__}")


class Post(BaseModel):
    """One valid post. ``brands`` is normalised and de-duplicated; ``created_at`` is epoch ms (UTC)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_ID_CHARS, strict=True, description="Unique post id (dedup key)")
    brands: list[str] = Field(default_factory=list, max_length=MAX_BRANDS,
                              description="Normalised brand names (empty: untagged, for brand matching)")
    text: str = Field(strict=True, description=f"The text, cut to {MAX_TEXT_CHARS} characters")
    created_at: int = Field(description="Creation time, epoch milliseconds UTC")
    source: str | None = Field(default=None, strict=True, max_length=256)
    lang: str | None = Field(default=None, strict=True, max_length=32)
    author: str | None = Field(default=None, strict=True, max_length=256)
    matched: dict[str, str] | None = Field(default=None, description="Set only by brand matching at ingest "
                                           "(monitor.brands): brand -> the query term that matched")
    url: str | None = Field(default=None, strict=True, max_length=2048,
                            description="Link to the original post, as the source gave it (shown by the dashboard)")

    @model_validator(mode="before")
    @classmethod
    def _merge_brand_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "brands" not in data and "brand" in data:
            data = {**data, "brands": [data["brand"]]}
        return data

    @field_validator("brands", mode="before")
    @classmethod
    def _normalise_brands(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise PydanticCustomError("wrong_type", "must be a string or a list of strings, got {got}",
                                      {"got": type(value).__name__})
        try:  # a stream names the same few brand lists over and over: one cached lookup instead of a call per brand
            return list(_normalised_brand_list(tuple(value)))
        except (TypeError, ValueError):  # unhashable, or refused: the same checks below, with the error pydantic wants
            pass
        return list(dict.fromkeys(_checked(normalise_brand, item) for item in value))

    @field_validator("matched", mode="before")
    @classmethod
    def _not_from_input(cls, value: Any) -> None:
        return None  # the worker's matching sets it (model_copy); a producer cannot claim a match

    @field_validator("text", mode="after")
    @classmethod
    def _truncate_text(cls, value: str) -> str:
        return value[:MAX_TEXT_CHARS]

    @field_validator("text", "source", "lang", "author", mode="after")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # a lone surrogate would only fail later, when the post is encoded for Redis or Kafka (a poison batch)
        if value is not None and _SURROGATE.search(value):
            raise PydanticCustomError("invalid_value", "holds a lone UTF-16 surrogate (not encodable as UTF-8)")
        return value

    @field_validator("created_at", mode="before")
    @classmethod
    def _parse_created_at(cls, value: Any) -> int:
        return _checked(to_epoch_ms, value)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _checked(convert, value: Any) -> Any:
    """Run a plain converter inside a validator: pydantic only wraps ValueError, so map TypeError explicitly."""
    try:
        return convert(value)
    except TypeError as exc:
        raise PydanticCustomError("wrong_type", "{message}", {"message": str(exc)}) from None
    except ValueError as exc:
        raise PydanticCustomError("invalid_value", "{message}", {"message": str(exc)}) from None


def _classify_validation_error(error: ValidationError) -> PostRejected:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or "post"
    kind = first.get("type", "")
    message = first.get("msg", str(error))
    if kind == "missing":
        if field == "brands":
            return PostRejected("missing_field", "one of 'brand' or 'brands' is required")
        return PostRejected("missing_field", f"field {field!r} is required")
    reason = "wrong_type" if kind == "wrong_type" or kind.endswith("_type") else "invalid_value"
    return PostRejected(reason, f"{field}: {message}")


def parse_post(raw: bytes, record_timestamp_ms: int | None, *, max_bytes: int = DEFAULT_MAX_BYTES,
               require_brand: bool = True) -> Post:
    """Parse one record value into a :class:`Post`, or raise :class:`PostRejected` with the reason; never anything
    else (a parser bug surfaces as ``invalid_value`` naming the exception, not as a poison batch).

    ``record_timestamp_ms`` (the Kafka record timestamp) is the default ``created_at``; without one, now.
    ``require_brand=False`` accepts untagged posts (no ``brand``/``brands``), for brand matching to tag.
    """
    try:
        return _parse_post(raw, record_timestamp_ms, max_bytes, require_brand)
    except PostRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: bad input is a rejection, whatever it trips over
        raise PostRejected("invalid_value", f"unparseable post ({type(exc).__name__}: {str(exc)[:200]})") from None


def _parse_post(raw: bytes, record_timestamp_ms: int | None, max_bytes: int, require_brand: bool) -> Post:
    if raw is None:
        raise PostRejected("not_json", "the record has no value")
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > max_bytes:
        raise PostRejected("oversize", f"record is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:  # orjson for what it accepts (the same objects, ~4x faster); anything it refuses gets json's own verdict,
        # so what is rejected and why stays the standard parser's (lone surrogates, NaN, BOMs, deep nesting). orjson
        # reads an integer beyond 64 bits as a float: a record with 20 digits in a row goes to json too
        if _LONG_DIGITS.search(raw):
            raise orjson.JSONDecodeError("may hold an integer beyond 64 bits", "", 0)
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(raw)
        except RecursionError:
            raise PostRejected("not_json", "JSON nested too deeply to parse") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
            raise PostRejected("not_json", f"not valid UTF-8 JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise PostRejected("not_object", f"expected a JSON object, got {type(data).__name__}")
    if data.get("created_at") is None:
        data["created_at"] = record_timestamp_ms if record_timestamp_ms is not None else int(time.time() * 1000)
    try:
        post = Post.model_validate(data)
    except ValidationError as exc:
        raise _classify_validation_error(exc) from None
    if require_brand and not post.brands:
        if "brand" in data or "brands" in data:
            raise PostRejected("invalid_value", "brands: the list is empty")
        raise PostRejected("missing_field", "one of 'brand' or 'brands' is required (brand matching is off)")
    return post


def rejection_envelope(
    raw: bytes | None,
    error: PostRejected,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """The dead-letter record: JSON with the reason, the detail, where it came from and the original bytes (base64,
    plus the text when it is valid UTF-8 so a person can read it), never more than ``max_bytes``.

    ``original_size`` and ``original_sha256`` always describe the whole original. When the envelope would be larger
    than ``max_bytes`` (a 450 KB record; a record of control characters, each escaped to six characters in JSON), the
    readable ``original_text`` is left out first, then ``original_b64`` keeps only a prefix and ``original_truncated``
    is true: the record can still be found at ``source_topic``/``source_partition``/``source_offset``."""
    raw = raw or b""
    envelope: dict[str, Any] = {
        "reason": error.reason,
        "detail": error.detail[:2000],
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "rejected_at": int(time.time() * 1000),
        "original_size": len(raw),
        "original_sha256": hashlib.sha256(raw).hexdigest(),
        "original_truncated": False,
        "original_b64": base64.b64encode(raw).decode("ascii"),
    }
    try:
        envelope["original_text"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    encoded = _json_bytes(envelope)
    if len(encoded) <= max_bytes:
        return encoded
    envelope.pop("original_text", None)
    envelope["original_b64"] = ""
    envelope["original_truncated"] = True
    room = max_bytes - len(_json_bytes(envelope))
    keep = max(0, room) // 4 * 3  # base64 turns 3 bytes into 4 ASCII characters (no escaping needed)
    envelope["original_b64"] = base64.b64encode(raw[:keep]).decode("ascii")
    return _json_bytes(envelope)


def _json_bytes(value: Any) -> bytes:
    # backslashreplace: a lone surrogate in a detail message must not make the dead letter itself unsendable
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace")
