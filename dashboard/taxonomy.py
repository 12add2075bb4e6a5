"""The emotion taxonomy (defined in :mod:`monitor.taxonomy`, which the monitor needs for its group series) and the one
fixed colour per emotion and group that every dashboard chart uses."""

from __future__ import annotations

from monitor.taxonomy import EMOTIONS, GROUPINGS, group_members, group_names, group_of, group_series_name

__all__ = ["COLOURS", "EMOTIONS", "GROUPINGS", "colour_of", "group_members", "group_names", "group_of",
           "group_series_name"]

# Fixed colours, the same on every chart: anger red, joy yellow, sadness blue, fear purple, disgust green, surprise
# orange, neutral grey; each emotion a shade of its Ekman group's hue; sentiment groups green / red / amber / grey.
COLOURS: dict[str, str] = {
    # Ekman groups (also the names of the emotions anger, disgust, fear, joy, sadness, surprise)
    "anger": "#d62728", "disgust": "#2ca02c", "fear": "#7b4fa6", "joy": "#f2c400", "sadness": "#1f77b4",
    "surprise": "#ff7f0e", "neutral": "#8c8c8c",
    # anger family
    "annoyance": "#ef6f6c", "disapproval": "#a31515",
    # fear family
    "nervousness": "#b39ddb",
    # joy family (yellows, golds, pinks for love/caring)
    "amusement": "#ffd54f", "approval": "#c9a800", "excitement": "#ffb300", "gratitude": "#e6ae00",
    "love": "#e377c2", "optimism": "#fbe26b", "relief": "#d4c26a", "pride": "#b8860b", "admiration": "#f5a623",
    "desire": "#c2185b", "caring": "#f48fb1",
    # sadness family
    "disappointment": "#5b9bd5", "embarrassment": "#9ecae1", "grief": "#0b3c6f", "remorse": "#3f6fa0",
    # surprise family
    "realization": "#ffbb78", "confusion": "#c7661c", "curiosity": "#e8a35c",
    # sentiment groups
    "positive": "#2e9e44", "negative": "#d62728", "ambiguous": "#f0a202",
}
OTHER_COLOUR = "#5f6b7a"


def colour_of(name: str) -> str:
    """The fixed colour of an emotion or group; one neutral slate for names outside the taxonomy."""
    return COLOURS.get(name, OTHER_COLOUR)
