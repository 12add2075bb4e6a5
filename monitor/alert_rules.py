"""Alert rules per brand x emotion, stored in Redis and read by every worker.

A rule says, for one brand (or ``*``: every brand) and one emotion, how sensitive the detector is, the minimum effect
(in words), the minimum volume, the cooldown, the windows and where its alerts go (``channels``: names the delivery
code routes on; empty = the default delivery). Fields left unset (``None`` / empty) take the worker's settings
(``EM_MONITOR_ALERT_*``). Lookup for a brand x emotion: the brand's own rule, else the ``*`` rule, else the settings.
A rule also adds its emotion to the emotions watched for its brand(s); ``sensitivity: off`` silences one.

Storage: the hash ``em:alert_rules`` (field ``{brand}|{emotion}``, value the rule's JSON) and the counter
``em:alert_rules:version``, bumped in the same MULTI/EXEC as every change. Workers (:class:`LiveRules`) check the
counter at most every ``EM_MONITOR_ALERT_RULES_RELOAD_SECONDS`` and reload the hash when it moved, so an edit from the
CLI (``emotion-monitor alerts rules ...``) or the dashboard reaches running workers within that time.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field

from monitor import schema
from monitor.detector import parse_min_effect
from monitor.settings import ALERT_CHANNELS

__all__ = [
    "ANY_BRAND",
    "RULES_KEY",
    "RULES_VERSION_KEY",
    "SENSITIVITIES",
    "AlertRule",
    "LiveRules",
    "RuleBook",
    "delete_rule",
    "format_windows",
    "parse_windows",
    "read_rules",
    "rules_version",
    "set_rule",
]

log = logging.getLogger(__name__)

RULES_KEY = schema.ALERT_RULES_KEY
RULES_VERSION_KEY = schema.ALERT_RULES_VERSION_KEY
ANY_BRAND = "*"
SENSITIVITIES = ("low", "normal", "high", "off")
_WINDOW = re.compile(r"^\s*(\d+)\s*(s|m|min|h)?\s*$", re.I)


def parse_windows(text: str) -> tuple[int, ...]:
    """``"5m,1h"`` -> ``(300, 3600)`` (seconds; whole minutes only; bare numbers are minutes)."""
    out = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        match = _WINDOW.match(part)
        if not match:
            raise ValueError(f"window {part.strip()!r}: expected e.g. 5m, 1h, 90m")
        value, unit = int(match.group(1)), (match.group(2) or "m").lower()
        seconds = value * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]
        if seconds <= 0 or seconds % 60:
            raise ValueError(f"window {part.strip()!r}: windows are whole minutes")
        out.append(seconds)
    return tuple(sorted(set(out)))


def format_windows(seconds: tuple[int, ...]) -> str:
    return ",".join(f"{s // 3600}h" if s % 3600 == 0 else f"{s // 60}m" for s in seconds)


@dataclass(frozen=True)
class AlertRule:
    """One brand x emotion's alerting. ``None`` / empty fields fall back to the worker's settings."""

    brand: str
    emotion: str
    sensitivity: str = "normal"  # low | normal | high | off
    min_effect: str | None = None  # e.g. "at least 1.5x and +5 points"
    min_volume: int | None = None  # fewest emotion posts in a window
    cooldown_s: int | None = None
    windows: tuple[int, ...] = ()  # seconds, whole minutes
    channels: tuple[str, ...] = field(default_factory=tuple)  # delivery names; empty = the default delivery

    def __post_init__(self):
        from monitor.post import normalise_brand

        brand = ANY_BRAND if self.brand.strip() == ANY_BRAND else normalise_brand(self.brand)
        if not brand:
            raise ValueError("a rule needs a brand (or '*' for every brand)")
        emotion = self.emotion.strip().lower()
        if not emotion:
            raise ValueError("a rule needs an emotion")
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(f"sensitivity {self.sensitivity!r}: expected one of {', '.join(SENSITIVITIES)}")
        if self.min_effect:
            parse_min_effect(self.min_effect)  # raises with the reason
        if self.min_volume is not None and self.min_volume < 1:
            raise ValueError("min_volume must be at least 1")
        if self.cooldown_s is not None and self.cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        windows = tuple(sorted({int(w) for w in self.windows}))
        if any(w <= 0 or w % 60 for w in windows):
            raise ValueError("windows are whole minutes (seconds divisible by 60)")
        channels = tuple(c.strip().lower() for c in self.channels if c and c.strip())
        unknown = [c for c in channels if c not in ALERT_CHANNELS]
        if unknown:  # refused when the rule is set, not discovered when an alert cannot be delivered
            raise ValueError(f"unknown channel(s) {', '.join(unknown)}: expected any of {', '.join(ALERT_CHANNELS)}")
        object.__setattr__(self, "brand", brand)
        object.__setattr__(self, "emotion", emotion)
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "channels", channels)

    @property
    def field_name(self) -> str:
        return f"{self.brand}|{self.emotion}"

    def to_json(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k not in ("brand", "emotion")}
        body["windows"], body["channels"] = list(self.windows), list(self.channels)
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_field(cls, name: str, raw: str) -> "AlertRule":
        brand, _, emotion = name.rpartition("|")
        body = json.loads(raw)
        return cls(brand=brand, emotion=emotion, sensitivity=body.get("sensitivity", "normal"),
                   min_effect=body.get("min_effect"), min_volume=body.get("min_volume"),
                   cooldown_s=body.get("cooldown_s"), windows=tuple(body.get("windows") or ()),
                   channels=tuple(body.get("channels") or ()))


class RuleBook:
    """An immutable set of rules with the lookup order brand rule > ``*`` rule > none."""

    def __init__(self, rules=(), version: int = 0):
        self.version = version
        self.rules = {(r.brand, r.emotion): r for r in rules}

    def __len__(self) -> int:
        return len(self.rules)

    def rule_for(self, brand: str, emotion: str) -> AlertRule | None:
        return self.rules.get((brand, emotion)) or self.rules.get((ANY_BRAND, emotion))

    def emotions_for(self, brand: str, defaults) -> list[str]:
        """The emotions watched for ``brand``: the settings' plus those of its rules and the ``*`` rules, minus
        those whose rule is ``off`` (order kept, no duplicates)."""
        names = list(dict.fromkeys([*defaults, *(e for (b, e) in self.rules if b in (brand, ANY_BRAND))]))
        return [e for e in names if (r := self.rule_for(brand, e)) is None or r.sensitivity != "off"]


def _decode_all(stored: dict) -> list[AlertRule]:
    rules = []
    for name, raw in stored.items():
        try:
            rules.append(AlertRule.from_field(name, raw))
        except (ValueError, TypeError, KeyError) as exc:  # a hand-edited bad rule is skipped, loudly
            log.error("alert rule %r in %s is invalid and ignored: %s", name, RULES_KEY, exc)
    return sorted(rules, key=lambda r: (r.brand != ANY_BRAND, r.brand, r.emotion))


def read_rules(client) -> tuple[list[AlertRule], int]:
    """All rules and the version, read together (sync redis client with ``decode_responses=True``)."""
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(RULES_KEY)
    pipe.get(RULES_VERSION_KEY)
    stored, version = pipe.execute()
    return _decode_all(stored), int(version or 0)


def rules_version(client) -> int:
    return int(client.get(RULES_VERSION_KEY) or 0)


def set_rule(client, rule: AlertRule) -> int:
    """Add or replace a rule; returns the new version."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(RULES_KEY, rule.field_name, rule.to_json())
    pipe.incr(RULES_VERSION_KEY)
    return int(pipe.execute()[-1])


_DELETE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n == 1 then redis.call('INCR', KEYS[2]) end
return n
"""


def delete_rule(client, brand: str, emotion: str) -> bool:
    """Remove a rule (the version moves only when one was removed); False when there was none."""
    name = AlertRule(brand, emotion).field_name  # normalised like the stored name
    return bool(client.eval(_DELETE, 2, RULES_KEY, RULES_VERSION_KEY, name))


class LiveRules:
    """The worker's view of the rules, read through its store (:meth:`monitor.store.RedisStore.alert_rules_version`,
    :meth:`~monitor.store.RedisStore.alert_rules`): reloaded when the version moves, checked at most every
    ``reload_seconds`` (one ``GET``). A failed check keeps the rules already loaded (a Redis outage never stalls
    alerting); a failure before the first load propagates (the batch is retried like any Redis outage)."""

    def __init__(self, store, reload_seconds: float):
        self.store = store
        self.reload_seconds = reload_seconds
        self.book: RuleBook | None = None
        self._checked_at = 0.0

    async def current(self) -> RuleBook:
        now = time.monotonic()
        if self.book is not None and now - self._checked_at < self.reload_seconds:
            return self.book
        try:
            version = await self.store.alert_rules_version()
            if self.book is None or version != self.book.version:
                stored, version = await self.store.alert_rules()
                self.book = RuleBook(_decode_all(stored), version)
                log.info("alert rules version %s loaded: %d rules", self.book.version, len(self.book))
        except Exception:
            if self.book is None:
                raise
            log.warning("alert rules check failed; using version %s meanwhile", self.book.version, exc_info=True)
        self._checked_at = now
        return self.book
