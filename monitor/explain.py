"""Why an alert fired: the words and hashtags over-represented in the alert's window versus its baseline.

Pure functions (no Redis): :class:`monitor.alerts.AlertEngine` feeds them the posts it read from the recent-posts
store. The comparison is the weighted log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn
2008, "Fightin' Words", eq. 22): for a term ``w`` used by ``y_i`` of the window's posts and ``y_j`` of the baseline's,

    delta_w = log((y_i + a_w) / (n_i + a_0 - y_i - a_w)) - log((y_j + a_w) / (n_j + a_0 - y_j - a_w))
    z_w     = delta_w / sqrt(1 / (y_i + a_w) + 1 / (y_j + a_w))

where the prior ``a_w`` is the term's count in both corpora together (``a_0`` their total): a term seen a few times
is shrunk towards its overall rate, so one odd post does not make a "driver". Counts are per post (a post repeating a
word counts once), so one spammer cannot either. Terms are lower-cased words of two or more letters and hashtags
(``#outage``, kept apart from ``outage``); URLs, @mentions, numbers and English stop-words are left out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["over_represented", "terms_of"]

# scikit-learn's English list (a dependency already) plus what social posts add
_EXTRA_STOP = {"rt", "amp", "via", "im", "ive", "dont", "didnt", "doesnt", "cant", "wont", "isnt", "thats", "youre",
               "u", "ur", "lol", "just", "like", "got", "get", "really", "still", "one", "would", "could"}
_URL = re.compile(r"https?://\S+|www\.\S+", re.I)
_MENTION = re.compile(r"(?<!\w)@\w+")
_TOKEN = re.compile(r"#?[^\W\d_][\w']*")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | _EXTRA_STOP


_STOP: frozenset[str] | None = None


def terms_of(text: str) -> set[str]:
    """The distinct terms of one post (see the module docstring)."""
    global _STOP
    if _STOP is None:
        _STOP = _stop_words()
    text = _MENTION.sub(" ", _URL.sub(" ", text or "")).lower()
    terms = set()
    for token in _TOKEN.findall(text):
        token = token.replace("'", "")
        word = token.lstrip("#")
        if len(word) < 2 or word in _STOP:
            continue
        terms.add(token)
    return terms


def over_represented(window_texts: Iterable[str], baseline_texts: Iterable[str], limit: int = 10,
                     min_z: float = 1.96, min_posts: int = 2) -> list[dict]:
    """At most ``limit`` terms of the window's posts over-represented against the baseline's, strongest first:
    ``{"term", "posts" (window posts using it), "baseline_posts", "z"}``. Only terms used by at least ``min_posts``
    window posts with a z-score of at least ``min_z`` (1.96: one-sided, about 2.5 % of chance terms pass) — fewer
    than ``limit``, or none, when nothing stands out."""
    window = Counter(term for text in window_texts for term in terms_of(text))
    baseline = Counter(term for text in baseline_texts for term in terms_of(text))
    if not window or not baseline or limit <= 0:  # no baseline posts: nothing to be over-represented against
        return []
    n_i, n_j = sum(window.values()), sum(baseline.values())
    a_0 = n_i + n_j
    found = []
    for term, y_i in window.items():
        if y_i < min_posts:
            continue
        y_j = baseline.get(term, 0)
        a_w = y_i + y_j
        rest_i, rest_j = n_i + a_0 - y_i - a_w, n_j + a_0 - y_j - a_w
        if rest_i <= 0 or rest_j <= 0:  # the term is all either corpus says: no odds to compare
            continue
        delta = math.log((y_i + a_w) / rest_i) - math.log((y_j + a_w) / rest_j)
        z = delta / math.sqrt(1 / (y_i + a_w) + 1 / (y_j + a_w))
        if z >= min_z:
            found.append({"term": term, "posts": y_i, "baseline_posts": y_j, "z": round(z, 2)})
    found.sort(key=lambda item: (-item["z"], item["term"]))
    return found[:limit]
