"""The alert record: one lifecycle transition of a brand x emotion alert, as stored in Redis (``em:alerts``), sent
on the ``alerts`` topic and delivered (:mod:`monitor.notify`). Its own module so the delivery code and the engine
(:mod:`monitor.alerts`) both depend on it without depending on each other."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ["Alert"]


@dataclass(frozen=True)
class Alert:
    brand: str
    emotion: str
    ts: int
    window_start: int
    window_end: int
    value: float
    baseline: float
    count: int
    posts: int
    message: str
    model_version: str
    # the window's posts with the highest score for the emotion, snapshotted when the alert fires (post JSON objects)
    evidence: tuple = ()
    # lifecycle: the episode's id (the same for its open, updates and resolution), this transition's status (open,
    # updated, resolved), the episode's event times (ms) and its peak window share so far
    id: str = ""
    status: str = "open"
    opened_at: int = 0
    updated_at: int = 0
    resolved_at: int | None = None
    peak: float = 0.0
    # effect: window share / baseline share (None when the baseline share is 0) and the difference in points; the
    # detector's confidence (1 - p-value) when it gives one
    effect_ratio: float | None = None
    effect_points: float | None = None
    confidence: float | None = None
    # the terms over-represented in the window vs the baseline: {"term", "posts", "baseline_posts", "z"}
    terms: tuple = ()
    # the statistical detector's verdict for the window that fired (monitor.detector.Detection.to_dict(): p_value,
    # confidence, ratio, points, window/baseline share, baseline_kind, window_min); None for the threshold rule
    detection: dict | None = None
    # the delivery channels of the rule that fired (monitor.alert_rules.AlertRule.channels); empty = default delivery
    channels: tuple = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))
