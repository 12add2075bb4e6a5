"""The Streamlit page: ``streamlit run dashboard/app.py`` (``emotion-monitor dashboard`` does that for you).

Controls (brands, range, measure, chart style, grouping, emotions, time zone) live in the sidebar and every one of them
is kept in the URL (``?brand=acme&range=24h&measure=share&grouping=sentiment&emotions=negative&view=lines&tz=utc``),
read on load, so a view can be shared. The panels below them (KPI header, emotion over time with the alerts as markers,
brand comparison, shifts, alerts with their evidence, post explorer) are one ``st.fragment`` with ``run_every``, so
they refresh in place without reloading the page. All data comes from :mod:`dashboard.queries`; the numbers from
:mod:`dashboard.transforms`. Redis unreachable, no data yet and unknown brands are messages, never tracebacks.

Times are shown in one format, ``YYYY-MM-DD HH:MM <zone>``, in the viewer's time zone (the browser's, from
``st.context.timezone``) or UTC.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import altair as alt
import pandas as pd
import streamlit as st
from pydantic import ValidationError

from dashboard import queries
from dashboard.auth import gate
from dashboard.settings import DashboardSettings
from dashboard.taxonomy import EMOTIONS, colour_of, group_members, group_names, group_of
from dashboard.transforms import (MEASURES, NO_HISTORY, VIEWS, apply_grouping, chart_frame, kpis, shift_table,
                                  top_emotions)
from dashboard.transforms import estimate_trust
from monitor.schema import ALL_EMOTIONS

RANGE_LABELS = {"1h": "Last hour", "24h": "Last 24 h", "7d": "Last 7 days", "custom": "Custom"}
GROUPING_LABELS = {"emotions": "28 emotions", "ekman": "Ekman (6 + neutral)", "sentiment": "Sentiment"}
TZ_CHOICES = ("local", "utc")
KPI_WIDTH = 176
# Streamlit collapses its sidebar by itself only at phone widths (<= 768 px); on a narrow laptop window the controls
# took a third of the page. Collapse it once per browser tab below this width (the chevron reopens it).
NARROW_PX = 1000
_COLLAPSE_SIDEBAR_WHEN_NARROW = f"""<script>
(() => {{
  const doc = window.parent ? window.parent.document : document;
  const win = window.parent || window;
  if (win.innerWidth >= {NARROW_PX} || win.sessionStorage.getItem("em_sidebar_auto")) return;
  const collapse = (tries) => {{
    const open = doc.querySelector('[data-testid="stSidebar"][data-collapsed="false"]');
    const button = doc.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (open && button) {{ button.click(); win.sessionStorage.setItem("em_sidebar_auto", "1"); }}
    else if (tries > 0) setTimeout(() => collapse(tries - 1), 200);
  }};
  collapse(25);
}})();
</script>"""


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@st.cache_resource(show_spinner=False)
def _client(url: str, timeout: float):
    return queries.connect(url, timeout)


# ---------------------------------------------------------------- time zone: one format everywhere


def _zone(choice: str) -> ZoneInfo:
    """UTC, or the browser's zone (``st.context.timezone``; UTC when the browser did not say or named another)."""
    if choice == "local":
        try:
            name = st.context.timezone
            if name:
                return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, AttributeError):
            pass
    return ZoneInfo("UTC")


def _is_utc(zone: ZoneInfo) -> bool:
    return zone.key in ("UTC", "Etc/UTC", "GMT")


def fmt_time(ms: float, zone: ZoneInfo) -> str:
    """The page's one timestamp format: ``2026-11-27 14:05 CET``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M ") + (moment.tzname() or zone.key)


def _fmt_series(times: pd.Series, zone: ZoneInfo) -> pd.Series:
    return times.dt.tz_convert(zone).dt.strftime("%Y-%m-%d %H:%M %Z")


def _bucket_label(bucket_ms: int) -> str:
    minutes = bucket_ms // 60_000
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"


# ---------------------------------------------------------------- states without data


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


# ---------------------------------------------------------------- URL state


def _param(name: str) -> str:
    return ",".join(st.query_params.get_all(name)).strip()


def _brand_defaults(known: list[str]) -> list[str]:
    requested = [b.strip().lower() for b in st.query_params.get_all("brand") for b in b.split(",") if b.strip()]
    unknown = [b for b in requested if b not in known]
    if unknown:
        shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        st.warning(f"Unknown brand: {', '.join(unknown)}. No posts have been seen for it. Known brands: {shown}")
    chosen = [b for b in requested if b in known]
    return chosen if requested else known[:1]


def _parse_instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _url_instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _emotion_options(grouping: str, extra: list[str]) -> list[str]:
    names = group_names(grouping)
    return names + [e for e in extra if e not in names] if grouping == "emotions" else names


def _read_url_once(settings: DashboardSettings, extra_emotions: list[str]) -> None:
    """On the session's first run, turn the URL's parameters into the widgets' starting values; anything it cannot use
    is said on the page and left at its default."""
    state = st.session_state
    if state.get("em_url_read"):
        return
    state["em_url_read"] = True
    problems = []
    tz = _param("tz").lower()
    if tz:
        if tz in TZ_CHOICES:
            state["em_tz"] = tz
        else:
            problems.append(f"tz={tz} (use local or utc)")
    zone = _zone(state.get("em_tz", "local"))
    range_value = _param("range")
    if range_value in queries.RANGES:
        state["em_range"] = range_value
    elif ".." in range_value:
        try:
            start, end = (_parse_instant(part) for part in range_value.split("..", 1))
            state["em_range"] = "custom"
            state["em_from"] = start.astimezone(zone).replace(tzinfo=None)
            state["em_to"] = end.astimezone(zone).replace(tzinfo=None)
        except ValueError:
            problems.append(f"range={range_value} (use 1h, 24h, 7d or <from>..<to> in ISO 8601)")
    elif range_value:
        problems.append(f"range={range_value} (use 1h, 24h, 7d or <from>..<to> in ISO 8601)")
    for name, choices, key in (("measure", MEASURES, "em_measure"), ("grouping", GROUPING_LABELS, "em_grouping"),
                               ("view", VIEWS, "em_view")):
        value = _param(name).lower()
        if value in choices:
            state[key] = value
        elif value:
            problems.append(f"{name}={value} (use {' | '.join(choices)})")
    grouping = state.get("em_grouping", "emotions")
    wanted = [e.strip().lower() for e in _param("emotions").split(",") if e.strip()]
    options = _emotion_options(grouping, extra_emotions)
    unknown = [e for e in wanted if e not in options]
    if unknown:
        problems.append(f"unknown emotion {', '.join(unknown)} for grouping {grouping}")
    state["em_emotions"] = [e for e in wanted if e in options]
    state["em_prev_grouping"] = grouping
    if problems:
        st.warning("Ignored from the URL: " + "; ".join(problems) + ".")


def _write_url(brands: list[str], range_key: str, custom, measure: str, grouping: str, emotions: list[str],
               view: str, tz: str) -> None:
    params = {"brand": ",".join(brands), "range": range_key, "measure": measure, "grouping": grouping, "view": view,
              "tz": tz}
    if range_key == "custom" and custom:
        params["range"] = f"{_url_instant(custom[0])}..{_url_instant(custom[1])}"
    if emotions:
        params["emotions"] = ",".join(emotions)
    if dict(st.query_params.to_dict()) != params:
        st.query_params.from_dict(params)


def convert_picks(picks: list[str], old: str, new: str) -> list[str]:
    """Emotion picks carried across a change of grouping: groups expand to their emotions, emotions map to their
    group (anger + annoyance -> Ekman anger -> sentiment negative); names outside the taxonomy stay as they are."""
    base: list[str] = []
    for pick in picks:
        members = group_members(old, pick) if old != "emotions" else []
        base += members or [pick]
    converted = base if new == "emotions" else [group_of(e, new) for e in base]
    return list(dict.fromkeys(converted))


@st.cache_data(ttl=60, show_spinner=False)
def _extra_emotions(url: str, timeout: float, brands: tuple[str, ...]) -> list[str]:
    """Emotion names the brands' series carry beyond the 28 GoEmotions ones (a model trained on another label set):
    they can be picked; a name nobody wrote (``rage``) cannot."""
    return queries.emotion_names(_client(url, timeout), list(brands), exclude=EMOTIONS)


def _time_range(range_key: str, custom: tuple[datetime, datetime] | None, now_ms: int) -> tuple[int, int]:
    if range_key == "custom" and custom:
        return int(custom[0].timestamp() * 1000), int(custom[1].timestamp() * 1000)
    return now_ms - queries.RANGES[range_key], now_ms


def check_custom_range(start: datetime, end: datetime, now: datetime, zone: ZoneInfo) -> str | None:
    """What is wrong with a custom range, in words (None: nothing)."""
    if start >= end:
        return (f"“From” ({start.astimezone(zone):%Y-%m-%d %H:%M}) must be before “To” "
                f"({end.astimezone(zone):%Y-%m-%d %H:%M}).")
    if end > now + timedelta(minutes=1):
        return (f"“To” ({end.astimezone(zone):%Y-%m-%d %H:%M}) is in the future; the newest data is from now "
                f"({now.astimezone(zone):%Y-%m-%d %H:%M}).")
    return None


# ---------------------------------------------------------------- charts


def draw(chart: alt.TopLevelMixin) -> None:
    """Draw an Altair chart without Altair's JSON-schema validation of the spec, which took longer than the rest of a
    chart's refresh. The frames travel as named Arrow datasets, as ``st.altair_chart`` sends them."""
    datasets = {}
    for i, part in enumerate([chart, *getattr(chart, "layer", [])]):
        if isinstance(getattr(part, "data", None), pd.DataFrame):
            datasets[f"data{i}"] = part.data
            part.data = alt.NamedData(name=f"data{i}")
    spec = chart.to_dict(validate=False)
    spec.pop("config", None)  # Altair's default theme sizes; the page sets heights and stretches to the width
    spec["datasets"] = datasets
    st.vega_lite_chart(spec=spec, width="stretch")


def _colour_scale(names: list[str]) -> alt.Scale:
    names = list(dict.fromkeys(names))
    return alt.Scale(domain=names, range=[colour_of(name) for name in names])


def _x(zone: ZoneInfo) -> alt.X:
    # Vega draws times in the browser's zone unless the scale is UTC; "local" is that zone.
    scale = alt.Scale(type="utc") if _is_utc(zone) else alt.Undefined
    title = "time (UTC)" if _is_utc(zone) else f"time ({zone.key})"
    return alt.X("time:T", title=title, scale=scale, axis=alt.Axis(format="%b %d %H:%M", labelOverlap=True))


def _bucket_tooltips(frame: pd.DataFrame, measure: str, bucket_ms: int) -> alt.Chart:
    """An invisible band per bucket over the whole plot: pointing anywhere in it shows the bucket's time, each
    emotion's value and the posts (a thin line alone is hard to point at)."""
    wide = frame.groupby(["time", "when", "emotion"])["value"].sum().unstack("emotion").reset_index()
    wide.columns.name = None
    posts = frame.groupby("time")["posts"].max()
    wide["posts in bucket"] = wide["time"].map(posts)
    wide["end"] = wide["time"] + pd.Timedelta(milliseconds=bucket_ms)
    emotions = [c for c in wide.columns if c not in ("time", "when", "end", "posts in bucket")]
    digits = ".1f" if measure == "share" else ",.0f"
    wide[emotions] = wide[emotions].fillna(0.0)
    tooltip = [alt.Tooltip("when:N", title="time")] + [alt.Tooltip(f"{e}:Q", format=digits) for e in emotions] + [
        alt.Tooltip("posts in bucket:Q", format=",.0f")]
    return alt.Chart(wide).mark_rect(color="white", opacity=0.01).encode(
        x=alt.X("time:T"), x2=alt.X2("end:T"), tooltip=tooltip)


def emotion_chart(frame: pd.DataFrame, markers: pd.DataFrame, measure: str, view: str, zone: ZoneInfo,
                  bucket_ms: int, height: int = 260) -> alt.LayerChart:
    """One brand's emotions over time (lines, stacked areas or the 100 % mix) with its alerts as marked rules."""
    frame = frame.assign(when=_fmt_series(frame["time"], zone))
    colour = alt.Color("emotion:N", title=None, scale=_colour_scale(list(frame["emotion"])),
                       legend=alt.Legend(orient="bottom", columns=4, labelLimit=140))
    tooltip = [alt.Tooltip("brand:N"), alt.Tooltip("emotion:N"), alt.Tooltip("when:N", title="time"),
               alt.Tooltip("value:Q", title=MEASURES[measure], format=".1f"),
               alt.Tooltip("posts:Q", title="posts in bucket", format=",.0f")]
    base = alt.Chart(frame).encode(x=_x(zone), color=colour, tooltip=tooltip)
    if view == "lines":
        # dots where buckets are few or far apart (a bucket alone would otherwise draw nothing)
        dots = alt.OverlayMarkDef(size=30, filled=True) if frame["time"].nunique() <= 40 else False
        layer = base.mark_line(point=dots).encode(y=alt.Y("value:Q", title=MEASURES[measure]))
    elif view == "stacked":
        layer = base.mark_area(opacity=0.85).encode(
            y=alt.Y("value:Q", title=f"{MEASURES[measure]} (stacked)", stack="zero"))
    else:
        layer = base.mark_area(opacity=0.9).encode(
            y=alt.Y("value:Q", title="mix of the chosen emotions", stack="normalize", axis=alt.Axis(format="%")))
    layers = [layer, _bucket_tooltips(frame, measure, bucket_ms)]
    if not markers.empty:
        marks = markers.assign(when=_fmt_series(markers["time"], zone))
        alert_tooltip = [alt.Tooltip("when:N", title="alert"), alt.Tooltip("emotion:N"),
                         alt.Tooltip("message:N")]
        rule = alt.Chart(marks).mark_rule(color="#222222", strokeDash=[4, 3], strokeWidth=2).encode(
            x=alt.X("time:T"), tooltip=alert_tooltip)
        # a wide transparent band on the rule, so the marker is easy to point at
        band = alt.Chart(marks).mark_rule(color="#222222", strokeWidth=12, opacity=0.08).encode(
            x=alt.X("time:T"), tooltip=alert_tooltip)
        flag = alt.Chart(marks).mark_point(shape="triangle-down", size=150, filled=True, opacity=1).encode(
            x=alt.X("time:T"), y=alt.value(6), color=alt.value("#222222"), tooltip=alert_tooltip)
        layers += [rule, band, flag]
    return alt.layer(*layers).properties(height=height)


# ---------------------------------------------------------------- panels


def _kpi_header(totals: pd.DataFrame, brands: list[str], alerts: list[dict], period: str) -> None:
    st.subheader("Key figures")
    st.caption(f"This {period} against the one before. Net sentiment: (positive − negative) / (positive + negative) "
               "posts, in percent, counting posts with any positive or any negative emotion.")
    # alerts opened in the range: an episode's updates and resolution are records of the same alert
    alert_counts = pd.Series([a["brand"] for a in alerts if a.get("status", "open") == "open"],
                             dtype=object).value_counts()
    for brand in brands:
        k = kpis(totals, brand)
        # fixed-width cards in a wrapping row: on a narrow window they flow onto more lines instead of truncating
        row = st.container(horizontal=True, gap="small")
        cols = [row] * 4
        volume, before = k["volume"], k["volume_before"]
        change = (f"{100 * (volume - before) / before:+.0f} %" if before else None)
        cols[0].metric(f"{brand} · posts", f"{volume:,.0f}", change, border=True, width=KPI_WIDTH)
        net, net_before = k["net"], k["net_before"]
        cols[1].metric(f"{brand} · net sentiment", "—" if net is None else f"{net:+.0f}",
                       None if net is None or net_before is None else f"{net - net_before:+.0f} pts",
                       border=True, width=KPI_WIDTH)
        if k["top"]:
            emotion, share, delta = k["top"][0]
            cols[2].metric(f"{brand} · top emotion", emotion,
                           f"{share:.0f} % of posts, " + (NO_HISTORY if delta is None else f"{delta:+.1f} pp"),
                           delta_color="off", delta_arrow="off", border=True, width=KPI_WIDTH)
        else:
            cols[2].metric(f"{brand} · top emotion", "—", border=True, width=KPI_WIDTH)
        cols[3].metric(f"{brand} · alerts in range", f"{int(alert_counts.get(brand, 0))}", border=True,
                       width=KPI_WIDTH)
        if k["top"]:
            st.caption(f"{brand} top emotions: " + " · ".join(
                f"{e} {s:.0f} % ({'no earlier data' if d is None else f'{d:+.1f} pp'})" for e, s, d in k["top"]))
        if not before:
            st.caption(f"{brand}: {NO_HISTORY} for the previous {period}; changes are shown as —.")


def _alert_markers(alerts: list[dict], brand: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    rows = [{"time": pd.Timestamp(a["ts"], unit="ms", tz="UTC"), "emotion": a["emotion"],
             "message": str(a.get("message", ""))} for a in alerts
            if a["brand"] == brand and start_ms <= a["ts"] <= end_ms]
    return pd.DataFrame(rows, columns=["time", "emotion", "message"])


def _emotion_panel(series: pd.DataFrame, brands: list[str], window, now_ms: int, end_ms: int, started: dict,
                   measure: str, view: str, requested: list[str], alerts: list[dict], settings: DashboardSettings,
                   zone: ZoneInfo) -> None:
    st.subheader("Emotion over time")
    complete_until = min(now_ms, end_ms)
    newest = (complete_until // window.bucket_ms) * window.bucket_ms
    posts = series[series["emotion"] == ALL_EMOTIONS]
    for brand in brands:
        mine = series[series["brand"] == brand]
        brand_posts = posts[posts["brand"] == brand]
        total = int(brand_posts["count"].sum())
        emotions = requested or top_emotions(mine, settings.top_n)
        notes = [f"{brand}: {total:,} posts", f"bucket {_bucket_label(window.bucket_ms)} (tier {window.tier})"]
        partial = brand_posts[brand_posts["ts"] + window.bucket_ms - 1 > complete_until]
        if newest + window.bucket_ms - 1 > complete_until:
            notes.append(f"the newest bucket (from {fmt_time(newest, zone)}, "
                         f"{int(partial['count'].sum()):,} posts so far) is drawn once complete")
        first = started.get(brand)
        if first is not None and first > window.start_ms:
            notes.append(f"monitoring started {fmt_time(first, zone)}; nothing is drawn before")
        if mine.empty:
            st.caption(" · ".join(notes))
            st.info(f"No posts for {brand} between {fmt_time(window.start_ms, zone)} and "
                    f"{fmt_time(end_ms, zone)} yet.")
            continue
        estimated = bool(mine.get("estimated", pd.Series(dtype=bool)).fillna(False).any())
        if estimated:
            notes.append("some grouped counts predate the monitor's group series: there a post with two emotions "
                         "of a group counts twice (estimated)")
        if requested == [] and emotions:
            notes.append("top " + ", ".join(emotions))
        st.caption(" · ".join(notes))
        frame = chart_frame(mine, emotions, measure, window.buckets, bucket_ms=window.bucket_ms,
                            complete_until=complete_until, started=started, min_posts=settings.min_share_posts)
        if frame.empty:
            st.info(f"None of {', '.join(emotions)} appears for {brand} in this range"
                    + (f" in a bucket of at least {settings.min_share_posts} posts." if measure == "share" else "."))
            continue
        markers = _alert_markers(alerts, brand, window.start_ms, end_ms)
        draw(emotion_chart(frame, markers, measure, view, zone, window.bucket_ms))


def _comparison_panel(series: pd.DataFrame, brands: list[str], window, now_ms: int, end_ms: int, started: dict,
                      grouping: str, settings: DashboardSettings, zone: ZoneInfo) -> None:
    st.subheader("Brands compared")
    complete_until = min(now_ms, end_ms)
    posts = series[(series["emotion"] == ALL_EMOTIONS)]
    volume = posts.groupby("brand")["count"].sum().reindex(brands, fill_value=0.0)
    voice = pd.DataFrame({"brand": volume.index, "posts": volume.values})
    voice["share"] = 100 * voice["posts"] / voice["posts"].sum() if voice["posts"].sum() else 0.0
    left, right = st.columns(2)
    with left:
        st.caption("Share of voice: posts per brand in the range")
        bars = alt.Chart(voice).mark_bar().encode(
            x=alt.X("posts:Q", title="posts"), y=alt.Y("brand:N", title=None, sort="-x"),
            color=alt.Color("brand:N", legend=None),
            tooltip=["brand:N", alt.Tooltip("posts:Q", format=",.0f"), alt.Tooltip("share:Q", format=".1f",
                                                                                    title="share of voice %")])
        draw(bars.properties(height=max(80, 34 * len(brands))))
    with right:
        present = set(series["emotion"].unique())
        options = [e for e in group_names(grouping) if e in present] or group_names(grouping)
        emotion = st.selectbox("One emotion across brands (share of posts)", options, key="em_compare_emotion")
        frame = chart_frame(series, [emotion], "share", window.buckets, bucket_ms=window.bucket_ms,
                            complete_until=complete_until, started=started, min_posts=settings.min_share_posts)
        if frame.empty:
            st.info(f"No bucket with at least {settings.min_share_posts} posts carries {emotion}.")
        else:
            frame = frame.assign(when=_fmt_series(frame["time"], zone))
            lines = alt.Chart(frame).mark_line().encode(
                x=_x(zone), y=alt.Y("value:Q", title=f"{emotion}, share of posts (%)"),
                color=alt.Color("brand:N", title=None, legend=alt.Legend(orient="bottom")),
                tooltip=["brand:N", alt.Tooltip("when:N", title="time"),
                         alt.Tooltip("value:Q", format=".1f", title="share %")])
            draw(lines.properties(height=220))


def _shifts_panel(totals: pd.DataFrame, grouping: str, title: str) -> None:
    st.subheader(title)
    shifts = shift_table(totals, grouping)
    if shifts.empty:
        st.info("Not enough posts to compare periods yet.")
        return
    shown = shifts.head(15)
    table = pd.DataFrame({
        "brand": shown["brand"], "emotion": shown["emotion"],
        "previous": _texts(shown["previous"], "{:,.0f}"), "current": _texts(shown["current"], "{:,.0f}"),
        "previous share %": _texts(shown["previous_share"], "{:.1f}"),
        "current share %": _texts(shown["current_share"], "{:.1f}"),
        "change (pp)": _texts(shown["change_pp"], "{:+.1f}"), "change (%)": _texts(shown["change_pct"], "{:+.0f}"),
        "note": shown["note"],
    })
    st.dataframe(table, hide_index=True, width="stretch")


def _adjusted_panel(client, brands: list[str], end_ms: int, now_ms: int, requested: list[str], zone: ZoneInfo,
                    top: int = 8) -> None:
    """The raw share beside the share adjusted for this stream (monitor.priors), with when to trust it."""
    estimates = queries.stream_estimates(client, brands, end_ms)
    st.subheader("Share, adjusted for this stream")
    st.caption("The model's thresholds were fitted on Reddit comments; where a stream carries an emotion more (or "
               "less) often, the raw share under- (or over-) counts it. The adjusted share corrects the raw share of "
               "the monitor's last window with the model's measured true/false-positive rates; the EM prior "
               "estimates the same from the probabilities. Trust it when the note says ok: the brand's own estimate "
               "(enough posts), recent, and both estimators agree. Estimates, not counts.")
    if estimates.empty:
        st.info("No stream estimate yet: the monitor writes one once a window holds enough posts, and only for a "
                "model calibrated with label priors and rates (emotion-monitor calibrate).")
        return
    estimates = estimates.assign(note=estimate_trust(estimates, now_ms))
    for brand in brands:
        mine = estimates[estimates["brand"] == brand]
        if mine.empty:
            continue
        picked = mine[mine["emotion"].isin(requested)]
        if picked.empty:
            picked = mine.assign(_rank=mine[["share", "adjusted"]].max(axis=1)).sort_values(
                "_rank", ascending=False).head(top)
        first = picked.iloc[0]
        whose = brand if first["scope"] == "brand" else f"all brands ({brand} has too few posts)"
        st.caption(f"{whose}: window of {_whole(first['window_posts'])} posts ending "
                   f"{fmt_time(first['ts'] + 60_000, zone)}")
        st.dataframe(pd.DataFrame({
            "brand": brand, "emotion": picked["emotion"],
            "raw share %": _texts(100 * picked["share"], "{:.1f}"),
            "share, adjusted for this stream %": _texts(100 * picked["adjusted"], "{:.1f}"),
            "EM prior %": _texts(100 * picked["prior"], "{:.1f}"),
            "trust": picked["note"],
        }), hide_index=True, width="stretch")


def _texts(values: pd.Series, pattern: str) -> pd.Series:
    """Numbers as display text, a dash where there is none (a table cell must never read None or NaN)."""
    return values.map(lambda v: "—" if v is None or pd.isna(v) else pattern.format(v))


def _alerts_panel(client, settings: DashboardSettings, alerts: list[dict], malformed: int, zone: ZoneInfo) -> None:
    st.subheader("Alerts")
    if malformed:
        st.caption(f"{malformed} malformed alert record(s) ignored.")
    if not alerts:
        st.info("No alerts in this range.")
        return
    st.caption("Each alert is a dashed marker on its brand's emotion chart; its figures are the ones the monitor "
               "measured when it fired.")
    table = pd.DataFrame([{
        "time": fmt_time(a["ts"], zone), "brand": a["brand"], "emotion": a["emotion"],
        "status": a.get("status", "open"),
        "share %": _percent(a.get("value")), "baseline %": _percent(a.get("baseline")),
        "posts with it": _whole(a.get("count")), "posts": _whole(a.get("posts")), "message": a.get("message", ""),
    } for a in alerts])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"message": st.column_config.TextColumn(width="large")})
    ids = [f"{a['ts']}|{a['brand']}|{a['emotion']}" for a in alerts]
    by_id = dict(zip(ids, alerts))
    chosen = st.selectbox(
        "Evidence of alert", ids, key="em_alert",
        format_func=lambda i: f"{fmt_time(by_id[i]['ts'], zone)} · {by_id[i]['brand']} · {by_id[i]['emotion']}",
    )
    alert = by_id[chosen]
    st.markdown(f"> {alert.get('message', '')}")
    window = f"window {fmt_time(alert['window_start'], zone)} → {fmt_time(alert['window_end'], zone)}"
    evidence = alert.get("evidence")
    if isinstance(evidence, list) and evidence:
        posts, bad = queries.post_rows(evidence, alert["emotion"])
        counted = alert.get("count")
        st.caption(f"{window}; the {len(posts)} post(s) most {alert['emotion']} of the "
                   f"{counted if counted is not None else '?'} counted, kept with the alert when it fired"
                   + (f"; {bad} malformed ignored" if bad else ""))
    else:  # alerts stored before they carried their evidence: whatever the bounded store still holds
        posts, bad = queries.alert_posts(client, alert, settings.posts_limit)
        st.caption(f"{window}; this alert has no kept evidence: {len(posts)} post(s) of the window still in the "
                   f"recent-posts store, most {alert['emotion']} first" + (f"; {bad} malformed ignored" if bad else ""))
    if posts.empty:
        st.info("The posts of this window are no longer stored (the recent-posts store is bounded).")
    else:
        _posts_table(posts, zone)


def _percent(fraction) -> str:
    """An alert's share (a fraction) as the message writes it: whole percent."""
    try:
        return f"{100 * float(fraction):.0f}"
    except (TypeError, ValueError):
        return "—"


def _whole(value) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


def _posts_table(posts: pd.DataFrame, zone: ZoneInfo) -> None:
    shown = posts.assign(time=_fmt_series(posts["time"], zone))
    columns = ["time", "score", "labelled", "text", "source", "author", "labels", "top_scores", "url", "id"]
    st.dataframe(shown[columns], hide_index=True, width="stretch", column_config={
        "score": st.column_config.NumberColumn(format="%.2f"),
        "text": st.column_config.TextColumn(width="large"),
        "url": st.column_config.LinkColumn("link", display_text="open"),
    })


def _explorer_panel(client, settings: DashboardSettings, brands: list[str], start_ms: int, end_ms: int,
                    grouping: str, zone: ZoneInfo) -> None:
    st.subheader("Posts")
    cols = st.columns([1, 1, 2, 1])
    brand = cols[0].selectbox("Brand", brands, key="em_x_brand")
    emotions = ["(any)"] + group_names(grouping)
    emotion = cols[1].selectbox("Emotion", emotions, key="em_x_emotion")
    search = cols[2].text_input("Text contains", key="em_x_search", placeholder="search the posts' text")
    order = cols[3].radio("Sort by", ["score", "time"], key="em_x_sort", horizontal=True,
                          disabled=emotion == "(any)")
    members = None
    if emotion != "(any)":
        members = group_members(grouping, emotion) if grouping != "emotions" else [emotion]
        members = members or [emotion]
    posts, malformed, cut = queries.list_posts(client, brand, start_ms, end_ms, members, settings.explorer_limit)
    read = len(posts)
    if members is not None:
        posts = posts[posts["labelled"]]
    if search.strip():
        posts = posts[posts["text"].str.contains(search.strip(), case=False, regex=False)]
    if members is not None and order == "score":
        posts = posts.sort_values(["score", "time"], ascending=False, kind="stable")
    posts = posts.reset_index(drop=True)
    what = f"labelled {emotion}" if members is not None else "all"
    containing = f", containing “{search.strip()}”" if search.strip() else ""
    st.caption(f"{len(posts):,} post(s) ({what}{containing}) "
               f"of the {read:,} newest stored for {brand} in the range"
               + (f" (the newest {settings.explorer_limit:,} only)" if cut else "")
               + (f"; {malformed} malformed ignored" if malformed else "")
               + ". The monitor keeps a bounded number of recent posts per brand.")
    if posts.empty:
        st.info("No stored post matches.")
        return
    _posts_table(posts.head(settings.posts_limit), zone)
    # the options are the labels themselves (not row numbers), so a new filter never shows a stale label
    labels = {f"{i + 1}. {fmt_time(row.time.timestamp() * 1000, zone)} · {row.author or 'unknown author'} · "
              f"{row.text[:60]}": i for i, row in enumerate(posts.head(settings.posts_limit).itertuples())}
    pick = st.selectbox("Read a post in full", list(labels), key="em_x_read")
    if pick is not None:
        row = posts.iloc[labels[pick]]
        source = " · ".join(str(x) for x in (row["source"], row["author"]) if x)
        with st.container(border=True):
            st.caption(f"{fmt_time(row['time'].timestamp() * 1000, zone)}" + (f" · {source}" if source else "")
                       + f" · {row['labels'] or 'no emotion'}")
            st.text(row["text"])
            if row["url"]:
                st.markdown(f"[Open the original]({row['url']})")


def _panels(settings: DashboardSettings, brands: list[str], range_key: str, custom, measure: str, grouping: str,
            requested: list[str], view: str, tz_choice: str, live_every: float | None) -> None:
    client = _client(settings.redis_url, settings.redis_timeout_seconds)
    zone = _zone(tz_choice)
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    start_ms, end_ms = _time_range(range_key, custom, now_ms)
    try:
        window = queries.plan_window(start_ms, end_ms, now_ms)
        series = apply_grouping(queries.emotion_series(client, brands, window), grouping)
        totals = queries.period_totals(client, brands, end_ms, end_ms - start_ms, now_ms)
        alerts, malformed = queries.list_alerts(client, brands, start_ms, end_ms, settings.alerts_limit)
        first_seen = queries.monitoring_start(client, brands)
    except ValueError as exc:
        st.error(f"Invalid time range: {exc}")
        return
    except queries.RedisUnavailable as exc:
        _unreachable(settings, exc)
        return
    except queries.QueryError as exc:
        st.error(f"Redis answered with an error ({exc}). Does it have the TimeSeries module?")
        return

    period = RANGE_LABELS[range_key].lower().replace("last ", "") if range_key != "custom" else "period"
    _kpi_header(totals, brands, alerts, period)
    _emotion_panel(series, brands, window, now_ms, end_ms, first_seen, measure, view, requested, alerts, settings,
                   zone)
    if len(brands) > 1 and not series.empty:
        _comparison_panel(series, brands, window, now_ms, end_ms, first_seen, grouping, settings, zone)
    _shifts_panel(totals, grouping, f"Shifts vs the previous {period}" if range_key != "custom"
                  else "Shifts vs the previous period of the same length")
    try:
        _adjusted_panel(client, brands, end_ms, now_ms, requested, zone)
        _alerts_panel(client, settings, alerts, malformed, zone)
        _explorer_panel(client, settings, brands, start_ms, end_ms, grouping, zone)
    except queries.RedisUnavailable as exc:
        _unreachable(settings, exc)
    except queries.QueryError as exc:
        st.error(f"Could not read the stored posts ({exc}).")
    refresh_ms = (time.perf_counter() - started) * 1000
    st.caption(f"Updated {fmt_time(now_ms, zone)} · refresh took {refresh_ms:.0f} ms"
               + (f" · live every {live_every:g} s" if live_every else " · live refresh off"))


def main() -> None:
    st.set_page_config(page_title="emotion-monitor · brand mood", layout="wide", initial_sidebar_state="auto")
    try:
        settings = DashboardSettings()
    except ValidationError as exc:
        st.error(f"Invalid dashboard settings (EM_DASHBOARD_* env vars):\n\n{exc}")
        return
    if not gate(settings):
        return
    st.html(_COLLAPSE_SIDEBAR_WHEN_NARROW, unsafe_allow_javascript=True)
    client = _client(settings.redis_url, settings.redis_timeout_seconds)
    page = st.sidebar.radio("Page", ["Brand mood", "Brands", "Alert rules"], key="em_page", horizontal=True)
    if page == "Brands":
        from dashboard.brands_page import render as brands_page

        brands_page(settings, client)
        return
    if page == "Alert rules":
        from dashboard.alert_rules_page import render as alert_rules_page

        alert_rules_page(settings, client)
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

    defaults = _brand_defaults(known)
    try:
        extra = _extra_emotions(settings.redis_url, settings.redis_timeout_seconds, tuple(defaults or known[:1]))
    except (queries.RedisUnavailable, queries.QueryError):
        extra = []
    _read_url_once(settings, extra)
    state = st.session_state
    with st.sidebar:
        brands = st.multiselect("Brands (several to compare)", known, default=defaults, key="em_brands")
        range_keys = list(RANGE_LABELS)
        state.setdefault("em_range", settings.default_range)
        range_key = st.radio("Time range", range_keys, format_func=RANGE_LABELS.get, key="em_range")
        tz_choice = st.radio("Times in", TZ_CHOICES, key="em_tz", horizontal=True,
                             format_func=lambda c: "UTC" if c == "utc" else f"my time zone ({_zone('local').key})")
        zone = _zone(tz_choice)
        custom, custom_problem = None, None
        if range_key == "custom":
            now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
            local_now = now.astimezone(zone).replace(tzinfo=None)
            state.setdefault("em_from", local_now - timedelta(days=1))
            state.setdefault("em_to", local_now)
            start = st.datetime_input(f"From ({zone.key})", key="em_from", format="YYYY-MM-DD")
            end = st.datetime_input(f"To ({zone.key})", key="em_to", format="YYYY-MM-DD")
            if start and end:
                custom = tuple((d if d.tzinfo else d.replace(tzinfo=zone)).astimezone(timezone.utc)
                               for d in (start, end))
                custom_problem = check_custom_range(custom[0], custom[1], datetime.now(timezone.utc), zone)
        measure = st.radio("Measure", list(MEASURES), format_func=lambda m: MEASURES[m].capitalize(), key="em_measure")
        view = st.radio("Chart", list(VIEWS), format_func=VIEWS.get, key="em_view", horizontal=True)
        grouping = st.radio("Grouping", list(GROUPING_LABELS), format_func=GROUPING_LABELS.get, key="em_grouping")
        previous = state.get("em_prev_grouping", grouping)
        if previous != grouping:  # keep the picks: anger + annoyance become Ekman anger, then sentiment negative
            state["em_emotions"] = convert_picks(state.get("em_emotions", []), previous, grouping)
        state["em_prev_grouping"] = grouping
        options = _emotion_options(grouping, extra)
        state["em_emotions"] = [e for e in state.get("em_emotions", []) if e in options]
        requested = st.multiselect(f"Emotions (empty: each brand's top {settings.top_n})", options, key="em_emotions")
        live = st.toggle("Live refresh", value=settings.refresh_seconds > 0, disabled=not settings.refresh_seconds,
                         key="em_live")
    _write_url(brands, range_key, custom, measure, grouping, requested, view, tz_choice)

    if not brands:
        st.info("Pick one or more brands in the sidebar.")
        return
    if range_key == "custom" and custom is None:
        st.info("Pick the start and end of the custom range.")
        return
    if custom_problem:
        st.error(f"Invalid time range: {custom_problem}")
        return
    run_every = settings.refresh_seconds if live and settings.refresh_seconds else None
    st.fragment(_panels, run_every=run_every)(settings, brands, range_key, custom, measure, grouping, requested,
                                              view, tz_choice, run_every)


main()
