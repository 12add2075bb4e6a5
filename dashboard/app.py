"""The Streamlit page: ``streamlit run dashboard/app.py`` (``emotion-monitor dashboard`` does that for you).

Controls (brands, range, measure, grouping, emotions) live in the sidebar and rerun the page; the panels below them
(emotion over time, shifts, alerts and the posts behind one) are one ``st.fragment`` with ``run_every``, so they
refresh in place every ``refresh_seconds`` without reloading the page. All data comes from :mod:`dashboard.queries`.
Redis unreachable, no data yet and unknown brands are messages on the page, never tracebacks.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import altair as alt
import pandas as pd
import streamlit as st
from pydantic import ValidationError

from dashboard import queries
from dashboard.auth import gate
from dashboard.settings import DashboardSettings
from dashboard.taxonomy import group_names
from dashboard.transforms import MEASURES, apply_grouping, chart_frame, shift_table, top_emotions

RANGE_LABELS = {"1h": "Last hour", "24h": "Last 24 h", "7d": "Last 7 days", "custom": "Custom"}
GROUPING_LABELS = {"emotions": "28 emotions", "ekman": "Ekman (6 + neutral)", "sentiment": "Sentiment"}


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@st.cache_resource(show_spinner=False)
def _client(url: str, timeout: float):
    return queries.connect(url, timeout)


def _fmt_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bucket_label(bucket_ms: int) -> str:
    minutes = bucket_ms // 60_000
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"


def _unreachable(settings: DashboardSettings, exc: Exception) -> None:
    st.error(f"Redis is unreachable at {_redacted(settings.redis_url)} ({exc}). Is the monitor's Redis running? "
             "The page keeps retrying." if settings.refresh_seconds else
             f"Redis is unreachable at {_redacted(settings.redis_url)} ({exc}). Reload the page to retry.")


def _retry_later(settings: DashboardSettings, check) -> None:
    """While waiting for Redis or first data, poll quietly and rerun the whole page once it is there."""
    if not settings.refresh_seconds:
        return

    @st.fragment(run_every=settings.refresh_seconds)
    def _poll() -> None:
        try:
            if check():
                st.rerun(scope="app")
        except (queries.RedisUnavailable, queries.QueryError):
            pass

    _poll()


def _brand_defaults(known: list[str]) -> list[str]:
    requested = [b.strip().lower() for b in st.query_params.get_all("brand") for b in b.split(",") if b.strip()]
    unknown = [b for b in requested if b not in known]
    if unknown:
        shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        st.warning(f"Unknown brand: {', '.join(unknown)}. No posts have been seen for it. Known brands: {shown}")
    chosen = [b for b in requested if b in known]
    return chosen if requested else known[:1]


def _time_range(range_key: str, custom: tuple[datetime, datetime] | None, now_ms: int) -> tuple[int, int]:
    if range_key == "custom" and custom:
        return int(custom[0].timestamp() * 1000), int(custom[1].timestamp() * 1000)
    return now_ms - queries.RANGES[range_key], now_ms


def _emotion_chart(frame: pd.DataFrame, measure: str, several_brands: bool) -> alt.TopLevelMixin:
    chart = alt.Chart(frame).mark_line().encode(
        x=alt.X("time:T", title="time (UTC)", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%b %d %H:%M")),
        y=alt.Y("value:Q", title=MEASURES[measure]),
        color=alt.Color("emotion:N", title="emotion"),
        tooltip=["brand:N", "emotion:N", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC", formatType="utc"),
                 alt.Tooltip("value:Q", format=".1f")],
    ).properties(height=260)
    return chart.facet(row=alt.Row("brand:N", title=None)) if several_brands else chart


def _alerts_panel(client, settings: DashboardSettings, alerts: list[dict], malformed: int) -> None:
    st.subheader("Alerts")
    if malformed:
        st.caption(f"{malformed} malformed alert record(s) ignored.")
    if not alerts:
        st.info("No alerts in this range.")
        return
    table = pd.DataFrame([{
        "time": pd.to_datetime(a["ts"], unit="ms", utc=True), "brand": a["brand"], "emotion": a["emotion"],
        "value": a.get("value"), "baseline": a.get("baseline"), "count": a.get("count"), "posts": a.get("posts"),
        "message": a.get("message", ""),
    } for a in alerts])
    timeline = alt.Chart(table).mark_point(filled=True, size=90).encode(
        x=alt.X("time:T", title="time (UTC)", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%b %d %H:%M")),
        y=alt.Y("emotion:N"), color=alt.Color("brand:N"),
        tooltip=["time:T", "brand:N", "emotion:N", "value:Q", "baseline:Q", "count:Q", "message:N"],
    ).properties(height=max(80, 28 * table["emotion"].nunique()))
    st.altair_chart(timeline, width="stretch")
    st.dataframe(table, hide_index=True, width="stretch")
    ids = [f"{a['ts']}|{a['brand']}|{a['emotion']}" for a in alerts]
    by_id = dict(zip(ids, alerts))
    chosen = st.selectbox(
        "Show the posts behind alert", ids, key="em_alert",
        format_func=lambda i: f"{_fmt_ms(by_id[i]['ts'])} · {by_id[i]['brand']} · {by_id[i]['emotion']}",
    )
    alert = by_id[chosen]
    posts, bad = queries.alert_posts(client, alert, settings.posts_limit)
    st.caption(f"{alert.get('message', '')} — window {_fmt_ms(alert['window_start'])} → "
               f"{_fmt_ms(alert['window_end'])}; {len(posts)} post(s), most {alert['emotion']} first"
               + (f"; {bad} malformed ignored" if bad else ""))
    if posts.empty:
        st.info("The posts of this window are no longer stored (the recent-posts store is bounded).")
    else:
        st.dataframe(posts, hide_index=True, width="stretch",
                     column_config={"score": st.column_config.NumberColumn(format="%.2f")})


def _panels(settings: DashboardSettings, brands: list[str], range_key: str, custom, measure: str, grouping: str,
            requested: list[str]) -> None:
    client = _client(settings.redis_url, settings.redis_timeout_seconds)
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    start_ms, end_ms = _time_range(range_key, custom, now_ms)
    try:
        window = queries.plan_window(start_ms, end_ms, now_ms)
        series = apply_grouping(queries.emotion_series(client, brands, window), grouping)
        totals = queries.period_totals(client, brands, end_ms, end_ms - start_ms, now_ms)
        alerts, malformed = queries.list_alerts(client, brands, start_ms, end_ms, settings.alerts_limit)
    except ValueError as exc:
        st.error(f"Invalid time range: {exc}")
        return
    except queries.RedisUnavailable as exc:
        _unreachable(settings, exc)
        return
    except queries.QueryError as exc:
        st.error(f"Redis answered with an error ({exc}). Does it have the TimeSeries module?")
        return

    st.subheader("Emotion over time")
    if series.empty:
        st.info(f"No posts for {', '.join(brands)} between {_fmt_ms(start_ms)} and {_fmt_ms(end_ms)} yet.")
    else:
        emotions = requested or top_emotions(series, settings.top_n)
        posts = series[series["emotion"] == "_all"].groupby("brand")["count"].sum()
        st.caption(" · ".join(f"{brand}: {int(posts.get(brand, 0)):,} posts" for brand in brands)
                   + f" · bucket {_bucket_label(window.bucket_ms)} (tier {window.tier})")
        frame = chart_frame(series, emotions, measure, window.buckets)
        if frame.empty:
            st.info(f"None of {', '.join(emotions)} appears in this range.")
        else:
            st.altair_chart(_emotion_chart(frame, measure, len(brands) > 1), width="stretch")

    st.subheader(f"Shifts vs the previous {RANGE_LABELS[range_key].lower().replace('last ', '')}"
                 if range_key != "custom" else "Shifts vs the previous period of the same length")
    shifts = shift_table(totals, grouping)
    if shifts.empty:
        st.info("Not enough posts to compare periods yet.")
    else:
        st.dataframe(shifts.head(15), hide_index=True, width="stretch", column_config={
            "previous_share": st.column_config.NumberColumn("previous share %", format="%.1f"),
            "current_share": st.column_config.NumberColumn("current share %", format="%.1f"),
            "change_pp": st.column_config.NumberColumn("change (pp)", format="%+.1f"),
            "change_pct": st.column_config.NumberColumn("change (%)", format="%+.0f"),
        })

    try:
        _alerts_panel(client, settings, alerts, malformed)
    except queries.RedisUnavailable as exc:
        _unreachable(settings, exc)
    except queries.QueryError as exc:
        st.error(f"Could not read the posts behind the alert ({exc}).")
    refresh_ms = (time.perf_counter() - started) * 1000
    st.caption(f"Updated {_fmt_ms(now_ms)} · refresh took {refresh_ms:.0f} ms"
               + (f" · live every {settings.refresh_seconds:g} s" if settings.refresh_seconds else ""))


def main() -> None:
    st.set_page_config(page_title="emotion-monitor · brand mood", layout="wide")
    try:
        settings = DashboardSettings()
    except ValidationError as exc:
        st.error(f"Invalid dashboard settings (EM_DASHBOARD_* env vars):\n\n{exc}")
        return
    if not gate(settings):
        return
    client = _client(settings.redis_url, settings.redis_timeout_seconds)
    if st.sidebar.radio("Page", ["Brand mood", "Brands"], key="em_page", horizontal=True) == "Brands":
        from dashboard.brands_page import render as brands_page

        brands_page(settings, client)
        return
    st.title("Brand mood")
    try:
        known = queries.list_brands(client)
    except queries.RedisUnavailable as exc:
        _unreachable(settings, exc)
        _retry_later(settings, lambda: queries.list_brands(client) is not None)
        return
    except queries.QueryError as exc:
        st.error(f"Redis answered with an error ({exc}).")
        return
    if not known:
        st.info("No data yet: the monitor has not recorded any post. Start it with `emotion-monitor worker` "
                "(or `emotion-monitor up`); this page updates by itself.")
        _retry_later(settings, lambda: bool(queries.list_brands(client)))
        return

    with st.sidebar:
        brands = st.multiselect("Brands (several to compare)", known, default=_brand_defaults(known), key="em_brands")
        if brands:  # keep the URL shareable: ?brand=a,b reopens this selection
            st.query_params["brand"] = ",".join(brands)
        range_keys = list(RANGE_LABELS)
        range_key = st.radio("Time range", range_keys, index=range_keys.index(settings.default_range),
                             format_func=RANGE_LABELS.get, key="em_range")
        custom = None
        if range_key == "custom":
            now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
            start = st.datetime_input("From (UTC)", now - timedelta(days=1), key="em_from")
            end = st.datetime_input("To (UTC)", now, key="em_to")
            if start and end:
                custom = tuple(d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in (start, end))
        measure = st.radio("Measure", list(MEASURES), format_func=lambda m: MEASURES[m].capitalize(), key="em_measure")
        grouping = st.radio("Grouping", list(GROUPING_LABELS), format_func=GROUPING_LABELS.get, key="em_grouping")
        # new options accepted: a model trained on another label set writes emotions outside the 28 GoEmotions names
        requested = st.multiselect(f"Emotions (empty: top {settings.top_n})", group_names(grouping),
                                   key=f"em_emotions_{grouping}", accept_new_options=True)
        live = st.toggle("Live refresh", value=settings.refresh_seconds > 0, disabled=not settings.refresh_seconds,
                         key="em_live")

    if not brands:
        st.info("Pick one or more brands in the sidebar.")
        return
    if range_key == "custom" and custom is None:
        st.info("Pick the start and end of the custom range.")
        return
    run_every = settings.refresh_seconds if live and settings.refresh_seconds else None
    st.fragment(_panels, run_every=run_every)(settings, brands, range_key, custom, measure, grouping, requested)


main()
