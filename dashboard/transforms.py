"""Pure pandas steps between the Redis replies (:mod:`dashboard.queries`) and what the page draws.

Counts are posts: an emotion's count is the posts labelled with it; a **group's** count (Ekman / sentiment) is the
posts with *at least one* of its emotions, read from the group's own series that the monitor writes (see
:mod:`monitor.schema`). Summing the member emotions instead would count a post once per member emotion (a post both
angry and annoyed twice in "anger"), which made "negative" read 68-83 % where 47-52 % of posts carried any negative
emotion. That sum is used only for buckets written before the monitor kept group series, and such values are
flagged ``estimated``. Shares are ``count / posts`` of the same brand and bucket, in percent.
"""

from __future__ import annotations

import pandas as pd

from monitor.schema import ALL_EMOTIONS

from .taxonomy import GROUPINGS, group_members, group_names

__all__ = ["MEASURES", "VIEWS", "apply_grouping", "chart_frame", "estimate_trust", "kpis", "net_sentiment",
           "shift_table", "top_emotions"]

# measure key -> axis title
MEASURES = {"count": "posts with the emotion", "share": "share of posts (%)"}
# chart style key -> label
VIEWS = {"lines": "Lines", "stacked": "Stacked area", "mix": "100 % mix"}


def _is_group_series(names: pd.Series) -> pd.Series:
    return names.astype(str).str.contains(":", regex=False)


def apply_grouping(frame: pd.DataFrame, grouping: str) -> pd.DataFrame:
    """Per group of ``grouping``: posts with at least one of its emotions; ``_all`` (the post count) kept as is.

    ``frame`` holds per-emotion rows and the monitor's group-series rows (``emotion`` ``sentiment:negative``...).
    Under ``emotions`` the group rows are dropped. Under a grouping, a group of two or more emotions takes its group
    series; where that series has no sample but members do (posts counted before the monitor wrote group series), the
    members' sum stands in and the row's ``estimated`` is True. An emotion outside the taxonomy keeps its own name.
    """
    if frame.empty:
        return frame.assign(estimated=pd.Series(dtype=bool))
    group_rows = _is_group_series(frame["emotion"])
    plain = frame[~group_rows]
    if grouping == "emotions":
        return plain.assign(estimated=False).reset_index(drop=True)
    prefix = f"{grouping}:"
    exact = frame[frame["emotion"].astype(str).str.startswith(prefix)]
    exact = exact.assign(emotion=exact["emotion"].str[len(prefix):], estimated=False)
    mapping = GROUPINGS[grouping]
    mapped = plain.assign(emotion=plain["emotion"].map(lambda e: e if e == ALL_EMOTIONS else mapping.get(e, e)))
    keys = [column for column in frame.columns if column != "count"]
    summed = mapped.groupby(keys, as_index=False, sort=False)["count"].sum()
    multi = {group for group in group_names(grouping) if len(group_members(grouping, group)) > 1}
    summed["estimated"] = summed["emotion"].isin(multi)
    merged = pd.concat([exact, summed], ignore_index=True).drop_duplicates(subset=keys, keep="first")
    return merged.reset_index(drop=True)


def top_emotions(frame: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` emotions (or groups) with the most posts in ``frame``, most first."""
    emotions = frame[(frame["emotion"] != ALL_EMOTIONS) & (frame["count"] > 0)]
    if emotions.empty:
        return []
    totals = emotions.groupby("emotion")["count"].sum().sort_values(ascending=False, kind="stable")
    return [str(name) for name in totals.index[:n]]


def chart_frame(frame: pd.DataFrame, emotions: list[str], measure: str, buckets: list[int] | None = None, *,
                bucket_ms: int | None = None, complete_until: int | None = None,
                started: dict[str, int] | None = None, min_posts: int = 0) -> pd.DataFrame:
    """Long frame ``brand, emotion, ts, time (UTC), value, posts`` for the chosen emotions, counts or shares of posts.

    * ``buckets`` (bucket starts, ms): a bucket without posts is drawn as 0 posts rather than skipped (the server leaves
      empty buckets out) — but only from the bucket where the brand's monitoring ``started`` (brand -> first sample
      ms): before it there is no data, not zero posts, so nothing is drawn.
    * ``complete_until``: buckets ending after it (with ``bucket_ms``: the still-filling newest one) are left out, so
      lines do not drop towards 0 at the right edge.
    * ``share``: a bucket with fewer than ``min_posts`` posts has no share (3 posts make a 33 % swing), and none without
      posts; such rows are dropped, never drawn as NaN.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {tuple(MEASURES)}")
    chosen = frame[frame["emotion"].isin(emotions)][["brand", "emotion", "ts", "count"]].copy()
    posts = frame[frame["emotion"] == ALL_EMOTIONS][["brand", "ts", "count"]].rename(columns={"count": "posts"})
    if buckets is not None and not chosen.empty:
        full = pd.MultiIndex.from_product(
            [sorted(frame["brand"].unique()), list(dict.fromkeys(emotions)), buckets], names=["brand", "emotion", "ts"])
        chosen = chosen.set_index(["brand", "emotion", "ts"])["count"].reindex(full, fill_value=0.0).reset_index()
        if started is not None:
            first = chosen["brand"].map(lambda b: started.get(b))
            bucket = bucket_ms or 1
            # a bucket counts from its start when monitoring began inside it
            chosen = chosen[first.notna() & (chosen["ts"] + bucket > first.fillna(float("inf")))]
    if complete_until is not None and bucket_ms:
        chosen = chosen[chosen["ts"] + bucket_ms - 1 <= complete_until]
    chosen = chosen.merge(posts, on=["brand", "ts"], how="left")
    chosen["posts"] = chosen["posts"].fillna(0.0)
    if measure == "share":
        enough = chosen["posts"] >= max(1, min_posts)
        chosen = chosen[enough].copy()
        chosen["value"] = 100.0 * chosen["count"] / chosen["posts"]
    else:
        chosen["value"] = chosen["count"].astype(float)
    chosen["time"] = pd.to_datetime(chosen["ts"], unit="ms", utc=True)
    columns = ["brand", "emotion", "ts", "time", "value", "posts"]
    return chosen[columns].sort_values(["brand", "emotion", "time"]).reset_index(drop=True)


SHIFT_COLUMNS = ["brand", "emotion", "previous", "current", "previous_share", "current_share", "change_pp",
                 "change_pct", "note"]
NO_HISTORY = "no earlier data"


def _period_wide(totals: pd.DataFrame, grouping: str) -> pd.DataFrame:
    grouped = apply_grouping(totals, grouping).astype({"count": float})
    # groupby + unstack: several times faster than pivot_table on every refresh
    wide = grouped.groupby(["brand", "emotion", "period"])["count"].sum().unstack("period", fill_value=0.0)
    for period in ("previous", "current"):
        if period not in wide.columns:
            wide[period] = 0.0
    return wide[["previous", "current"]].reset_index()


def shift_table(totals: pd.DataFrame, grouping: str = "emotions") -> pd.DataFrame:
    """Emotions ranked by how much their share of posts moved from the previous period to the current one.

    ``previous`` / ``current``: posts with the emotion; ``*_share``: percent of that period's posts; ``change_pp``:
    the share's change in percentage points (the ranking key, by absolute size); ``change_pct``: relative change of
    the count (NaN when the emotion was absent before). A brand without posts in the previous period has no previous
    share and no change (NaN, shown as a dash) and ``note`` says "no earlier data"; it ranks after measured changes.
    """
    if totals.empty:
        return pd.DataFrame(columns=SHIFT_COLUMNS)
    wide = _period_wide(totals, grouping)
    posts = wide[wide["emotion"] == ALL_EMOTIONS].set_index("brand")
    table = wide[wide["emotion"] != ALL_EMOTIONS].copy()
    for period in ("previous", "current"):
        denominator = table["brand"].map(posts[period]) if not posts.empty else pd.Series(0.0, table.index)
        denominator = denominator.fillna(0.0)
        table[f"{period}_share"] = (100.0 * table[period] / denominator).where(denominator > 0)
    table["change_pp"] = table["current_share"] - table["previous_share"]
    table["change_pct"] = (100.0 * (table["current"] - table["previous"]) / table["previous"]).where(
        table["previous"] > 0)
    table["note"] = table["previous_share"].isna().map({True: NO_HISTORY, False: ""})
    table = table.assign(_rank=table["change_pp"].abs().fillna(-1.0)).sort_values(
        ["_rank", "current"], ascending=False, kind="stable")
    return table[SHIFT_COLUMNS].reset_index(drop=True)


def net_sentiment(positive: float, negative: float) -> float | None:
    """(positive − negative) / (positive + negative) in percent (−100..+100), the social-listening convention;
    None without any positive or negative post."""
    total = positive + negative
    return None if total <= 0 else 100.0 * (positive - negative) / total


def kpis(totals: pd.DataFrame, brand: str, top: int = 3) -> dict:
    """The KPI header of one brand for the current period against the previous one.

    ``volume`` / ``volume_before``: posts; ``net`` / ``net_before``: net sentiment (posts with any positive vs any
    negative emotion, from the sentiment group series); ``top``: the ``top`` emotions by current share as
    ``(emotion, share %, change pp or None)``. Values without data are None.
    """
    mine = totals[totals["brand"] == brand] if not totals.empty else totals
    out: dict = {"volume": 0.0, "volume_before": 0.0, "net": None, "net_before": None, "top": []}
    if mine.empty:
        return out
    # plain dict arithmetic on a few dozen rows: this runs for every brand on every refresh
    sentiment = apply_grouping(mine, "sentiment")
    grouped = {(e, p): float(c) for e, p, c in zip(sentiment["emotion"], sentiment["period"], sentiment["count"])}
    plain = apply_grouping(mine, "emotions")
    counts = {(e, p): float(c) for e, p, c in zip(plain["emotion"], plain["period"], plain["count"])}
    volume, before = counts.get((ALL_EMOTIONS, "current"), 0.0), counts.get((ALL_EMOTIONS, "previous"), 0.0)
    out["volume"], out["volume_before"] = volume, before
    out["net"] = net_sentiment(grouped.get(("positive", "current"), 0.0), grouped.get(("negative", "current"), 0.0))
    out["net_before"] = net_sentiment(grouped.get(("positive", "previous"), 0.0),
                                      grouped.get(("negative", "previous"), 0.0))
    if volume > 0:
        current = sorted(((c, e) for (e, p), c in counts.items()
                          if p == "current" and c > 0 and e not in (ALL_EMOTIONS, "neutral")), reverse=True)[:top]
        for count, emotion in current:
            change = (100 * count / volume - 100 * counts.get((emotion, "previous"), 0.0) / before) if before else None
            out["top"].append((emotion, 100 * count / volume, change))
    return out


# Where EM (needs calibrated probabilities) and adjusted classify-and-count (needs only the dev tpr/fpr) differ by
# more than this, the label-shift assumption both rest on is in doubt for the emotion (docs/dashboard.md).
ESTIMATE_MAX_GAP = 0.05


def estimate_trust(estimates: pd.DataFrame, now_ms: int, stale_ms: int = 30 * 60_000,
                   max_gap: float = ESTIMATE_MAX_GAP) -> pd.Series:
    """Per row of :func:`dashboard.queries.stream_estimates`, why its adjusted share should (not) be trusted, in
    words; ``"ok"`` when the brand had its own estimate, it is recent, and EM and adjusted classify-and-count agree
    within ``max_gap``. Volume is already guaranteed for a brand's own estimate (the monitor writes one only with
    ``EM_MONITOR_PRIOR_MIN_POSTS`` posts in the window)."""
    notes = []
    for scope, ts, adjusted, prior in zip(estimates["scope"], estimates["ts"], estimates["adjusted"],
                                          estimates["prior"]):
        problems = []
        if scope != "brand":
            problems.append("too few posts for this brand: all brands together")
        if now_ms - ts > stale_ms:
            problems.append(f"estimate {int((now_ms - ts) // 60_000)} min old")
        if pd.isna(adjusted):
            problems.append("no adjusted share (threshold overridden)")
        elif abs(adjusted - prior) > max_gap:
            problems.append(f"estimators disagree by {100 * abs(adjusted - prior):.0f} pp: wording may differ "
                            "from training")
        notes.append("; ".join(problems) or "ok")
    return pd.Series(notes, index=estimates.index, dtype=object)
