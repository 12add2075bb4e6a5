"""The GoEmotions label set and its two published groupings — defined once, read by the trainer and the dashboard.

The groupings are the ones published with the GoEmotions dataset (``ekman_mapping.json`` and ``sentiment_dict.json``,
Demszky et al., 2020, https://github.com/google-research/google-research/tree/master/goemotions, Apache-2.0). They
are embedded because they are tiny and neither the dashboard nor a model trained on the HF dataset or on a user's
files can count on a dataset folder that holds them. ``neutral`` belongs to no group in either file.
"""

from __future__ import annotations

__all__ = ["EKMAN", "GOEMOTIONS_LABELS", "SENTIMENT", "TARGET_15"]

# The 28 labels in emotions.txt order (ids 0..27); also used when the data comes from the HF hub.
GOEMOTIONS_LABELS = (
    "admiration amusement anger annoyance approval caring confusion curiosity desire disappointment disapproval "
    "disgust embarrassment excitement fear gratitude grief joy love nervousness optimism pride realization relief "
    "remorse sadness surprise neutral"
).split()

EKMAN: dict[str, list[str]] = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": ["joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
            "admiration", "desire", "caring"],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
}
SENTIMENT: dict[str, list[str]] = {
    "positive": ["amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride", "admiration",
                 "gratitude", "relief", "approval"],
    "negative": ["fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief", "disgust",
                 "anger", "annoyance", "disapproval"],
    "ambiguous": ["realization", "surprise", "curiosity", "confusion"],
}
# The 15-label subset some published GoEmotions results use (``--taxonomy target15``).
TARGET_15 = ("fear sadness disgust disapproval annoyance anger disappointment optimism amusement surprise admiration "
             "excitement confusion joy love").split()
