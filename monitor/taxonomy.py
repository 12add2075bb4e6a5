"""The 28 GoEmotions labels and their two coarser groupings (Ekman's six, and sentiment).

The monitor writes one ``count`` series per group of two or more member emotions (``sentiment:negative``, see
:mod:`monitor.schema`), because a group's share of posts (posts with *at least one* of its emotions) cannot be derived
from the per-emotion series; the dashboard draws the groupings.

The labels and groupings are defined once, in :mod:`trainer.taxonomy` (those published with the dataset).
``neutral`` belongs to no group in either grouping; it is kept as its own group so no post disappears from a grouped
view.
"""

from __future__ import annotations

from trainer.taxonomy import EKMAN, GOEMOTIONS_LABELS, SENTIMENT

__all__ = ["EMOTIONS", "GROUPINGS", "group_members", "group_of", "group_names", "group_series", "group_series_name"]

EMOTIONS: tuple[str, ...] = tuple(GOEMOTIONS_LABELS)


def _invert(groups: dict[str, list[str]]) -> dict[str, str]:
    mapping = {emotion: group for group, members in groups.items() for emotion in members}
    mapping["neutral"] = "neutral"
    missing = set(EMOTIONS) - set(mapping)
    if missing:  # pragma: no cover - guards the tables above
        raise AssertionError(f"grouping misses {sorted(missing)}")
    return mapping


# grouping name -> {emotion -> group}; "emotions" is the identity (no grouping)
GROUPINGS: dict[str, dict[str, str]] = {
    "emotions": {emotion: emotion for emotion in EMOTIONS},
    "ekman": _invert(EKMAN),
    "sentiment": _invert(SENTIMENT),
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
