"""Pure pandas steps between the Redis replies (:mod:`dashboard.queries`) and what the page draws.

Grouping (Ekman / sentiment) sums the member emotions' counts, so a post labelled with two emotions of one group counts
twice in that group — the same convention as the per-emotion counts, where a post counts once per label. Shares are
``count / posts`` of the same brand and bucket, in percent.
"""

from __future__ import annotations

import pandas as pd

from monitor.schema import ALL_EMOTIONS

from .taxonomy import GROUPINGS

__all__ = ["MEASURES", "apply_grouping", "chart_frame", "shift_table", "top_emotions"]

# measure key -> axis title
MEASURES = {"count": "posts with the emotion", "share": "share of posts (%)"}


def apply_grouping(frame: pd.DataFrame, grouping: str) -> pd.DataFrame:
    """Rename each emotion to its group under ``grouping`` and sum; ``_all`` (the post count) is kept as is."""
    if grouping == "emotions" or frame.empty:
        return frame
    mapping = GROUPINGS[grouping]
    grouped = frame.assign(emotion=frame["emotion"].map(lambda e: e if e == ALL_EMOTIONS else mapping.get(e, e)))
    keys = [column for column in grouped.columns if column != "count"]
    return grouped.groupby(keys, as_index=False, sort=False)["count"].sum()


def top_emotions(frame: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` emotions (or groups) with the most posts in ``frame``, most first."""
    emotions = frame[(frame["emotion"] != ALL_EMOTIONS) & (frame["count"] > 0)]
    if emotions.empty:
        return []
    totals = emotions.groupby("emotion")["count"].sum().sort_values(ascending=False, kind="stable")
    return [str(name) for name in totals.index[:n]]


def chart_frame(frame: pd.DataFrame, emotions: list[str], measure: str,
                buckets: list[int] | None = None) -> pd.DataFrame:
    """Long frame ``brand, emotion, time (UTC), value`` for the chosen emotions, as counts or shares of posts.

    With ``buckets`` (bucket start times, ms), a bucket without posts is drawn as 0 posts rather than skipped (the
    server leaves empty buckets out); its share stays empty, as there is nothing to divide by.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {tuple(MEASURES)}")
    chosen = frame[frame["emotion"].isin(emotions)].copy()
    if buckets is not None and not chosen.empty:
        full = pd.MultiIndex.from_product(
            [sorted(frame["brand"].unique()), list(dict.fromkeys(emotions)), buckets], names=["brand", "emotion", "ts"])
        chosen = (chosen.set_index(["brand", "emotion", "ts"])["count"].reindex(full, fill_value=0.0).reset_index())
    if measure == "share":
        posts = frame[frame["emotion"] == ALL_EMOTIONS][["brand", "ts", "count"]].rename(columns={"count": "posts"})
        chosen = chosen.merge(posts, on=["brand", "ts"], how="left")
        chosen["value"] = (100.0 * chosen["count"] / chosen["posts"]).where(chosen["posts"] > 0)
    else:
        chosen["value"] = chosen["count"]
    chosen["time"] = pd.to_datetime(chosen["ts"], unit="ms", utc=True)
    return chosen[["brand", "emotion", "time", "value"]].sort_values(["brand", "emotion", "time"]).reset_index(drop=True)


SHIFT_COLUMNS = ["brand", "emotion", "previous", "current", "previous_share", "current_share", "change_pp",
                 "change_pct"]


def shift_table(totals: pd.DataFrame, grouping: str = "emotions") -> pd.DataFrame:
    """Emotions ranked by how much their share of posts moved from the previous period to the current one.

    ``previous`` / ``current``: posts with the emotion; ``*_share``: percent of that period's posts; ``change_pp``:
    the share's change in percentage points (the ranking key, by absolute size); ``change_pct``: relative change of
    the count (NaN when the emotion was absent before). Shares make brands and periods of different volume comparable.
    """
    if totals.empty:
        return pd.DataFrame(columns=SHIFT_COLUMNS)
    grouped = apply_grouping(totals, grouping).astype({"count": float})
    wide = grouped.pivot_table(index=["brand", "emotion"], columns="period", values="count", aggfunc="sum",
                               fill_value=0.0)
    for period in ("previous", "current"):
        if period not in wide.columns:
            wide[period] = 0.0
    wide = wide[["previous", "current"]].reset_index()
    posts = wide[wide["emotion"] == ALL_EMOTIONS].set_index("brand")
    table = wide[wide["emotion"] != ALL_EMOTIONS].copy()
    for period in ("previous", "current"):
        denominator = table["brand"].map(posts[period]) if not posts.empty else pd.Series(float("nan"), table.index)
        table[f"{period}_share"] = (100.0 * table[period] / denominator).where(denominator > 0, 0.0)
    table["change_pp"] = table["current_share"] - table["previous_share"]
    table["change_pct"] = (100.0 * (table["current"] - table["previous"]) / table["previous"]).where(
        table["previous"] > 0)
    table = table.assign(_rank=table["change_pp"].abs()).sort_values(
        ["_rank", "current"], ascending=False, kind="stable")
    return table[SHIFT_COLUMNS].reset_index(drop=True)
