"""The 28 GoEmotions labels and their two coarser groupings (Ekman's six, and sentiment).

The monitor writes one ``count`` series per group of two or more member emotions (``sentiment:negative``, see
:mod:`monitor.schema`), because a group's share of posts (posts with *at least one* of its emotions) cannot be derived
from the per-emotion series; the dashboard draws the groupings.

The groupings are the ones published with the GoEmotions dataset (``ekman_mapping.json`` and ``sentiment_dict.json``,
Demszky et al., 2020, https://github.com/google-research/google-research/tree/master/goemotions, Apache-2.0). They
are embedded here because they are tiny and neither the monitor nor the dashboard may read a dataset folder at run
time. ``neutral`` belongs to no group in either file; it is kept as its own group so no post disappears from a
grouped view.
"""

from __future__ import annotations

__all__ = ["EMOTIONS", "GROUPINGS", "group_members", "group_of", "group_names", "group_series", "group_series_name"]

EMOTIONS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity", "desire",
    "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude", "grief", "joy",
    "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)

_EKMAN: dict[str, tuple[str, ...]] = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": ("joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
            "admiration", "desire", "caring"),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
}

_SENTIMENT: dict[str, tuple[str, ...]] = {
    "positive": ("amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride", "admiration",
                 "gratitude", "relief", "approval"),
    "negative": ("fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief", "disgust",
                 "anger", "annoyance", "disapproval"),
    "ambiguous": ("realization", "surprise", "curiosity", "confusion"),
}


def _invert(groups: dict[str, tuple[str, ...]]) -> dict[str, str]:
    mapping = {emotion: group for group, members in groups.items() for emotion in members}
    mapping["neutral"] = "neutral"
    missing = set(EMOTIONS) - set(mapping)
    if missing:  # pragma: no cover - guards the tables above
        raise AssertionError(f"grouping misses {sorted(missing)}")
    return mapping


# grouping name -> {emotion -> group}; "emotions" is the identity (no grouping)
GROUPINGS: dict[str, dict[str, str]] = {
    "emotions": {emotion: emotion for emotion in EMOTIONS},
    "ekman": _invert(_EKMAN),
    "sentiment": _invert(_SENTIMENT),
}


def group_of(emotion: str, grouping: str) -> str:
    """The group ``emotion`` belongs to under ``grouping``; an emotion outside the table keeps its own name."""
    return GROUPINGS[grouping].get(emotion, emotion)


def group_names(grouping: str) -> list[str]:
    """The groups of ``grouping`` in a stable order (table order, neutral last)."""
    seen: dict[str, None] = {}
    for emotion in EMOTIONS:
        seen.setdefault(GROUPINGS[grouping][emotion], None)
    names = [name for name in seen if name != "neutral"]
    return names + ["neutral"]


def group_members(grouping: str, group: str) -> list[str]:
    """The emotions of ``group`` under ``grouping`` (table order)."""
    return [emotion for emotion in EMOTIONS if GROUPINGS[grouping][emotion] == group]


def group_series(emotions: list[str]) -> list[tuple[str, list[int]]]:
    """The group series a model with labels ``emotions`` gets: ``(series emotion name, member indices)`` for every
    Ekman / sentiment group with at least two members among ``emotions`` (a one-member group is its emotion's series).
    """
    position = {emotion: i for i, emotion in enumerate(emotions)}
    series = []
    for grouping in ("ekman", "sentiment"):
        for group in group_names(grouping):
            members = [position[e] for e in group_members(grouping, group) if e in position]
            if len(members) >= 2:
                series.append((group_series_name(grouping, group), members))
    return series


def group_series_name(grouping: str, group: str) -> str:
    """The ``emotion`` label of a group's series: ``<grouping>:<group>`` (a ':' no emotion name has)."""
    return f"{grouping}:{group}"
