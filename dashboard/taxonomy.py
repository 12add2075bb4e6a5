"""The 28 GoEmotions labels and the two coarser groupings the dashboard offers (Ekman's six, and sentiment).

The labels and groupings are defined once, in :mod:`trainer.taxonomy` (the groupings published with the dataset).
``neutral`` belongs to no group in either grouping; here it is kept as its own group so no post disappears from a
grouped view.
"""

from __future__ import annotations

from trainer.taxonomy import EKMAN, GOEMOTIONS_LABELS, SENTIMENT

__all__ = ["EMOTIONS", "GROUPINGS", "group_of", "group_names"]

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
