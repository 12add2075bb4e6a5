"""The page's numbers and state (issue 16) through AppTest against a real Redis: grouped shares from posts the monitor's
own store wrote, counted by hand; the still-filling bucket; shifts and KPIs without history; URL state round trips;
time-zone formatting; custom-range errors in words; alert figures that agree; the post explorer."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from dashboard.seed import add_alert, write_counts

from .conftest import MINUTE
from .test_app import alert_markers, chart_data, run_app, texts
from .test_monitor_contract import _write

pytestmark = pytest.mark.timeout(120)


def _metric(at, label: str):
    for metric in at.metric:
        if metric.label == label:
            return metric
    raise AssertionError(f"no metric {label!r} among {[m.label for m in at.metric]}")


def _frame(at, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in getattr(d.value, "columns", []))


# posts of one minute, 20 minutes ago, with the emotions at or above threshold
POSTS = [
    ("n1", {"anger": 0.9, "annoyance": 0.8, "disgust": 0.7}),  # 3 negative emotions (2 of Ekman anger)
    ("n2", {"sadness": 0.9, "fear": 0.6}),                      # 2 negative
    ("n3", {"annoyance": 0.9, "joy": 0.6}),                     # negative and positive
    ("p1", {"joy": 0.9, "love": 0.8, "gratitude": 0.7}),        # 3 positive
    ("p2", {"admiration": 0.9}),                                # positive
    ("z1", {"neutral": 0.9}),
]


def test_grouped_shares_and_net_sentiment_match_the_posts_counted_by_hand(dashboard_env, redis_server):
    now = int(time.time() * 1000)
    minute = (now - 20 * MINUTE) // MINUTE * MINUTE
    _write(redis_server.url, [(pid, minute + 1000 * i, s) for i, (pid, s) in enumerate(POSTS)])
    # by hand: negative = n1, n2, n3 (3 of 6 = 50 %); positive = n3, p1, p2 (50 %); neutral = z1 (16.7 %)
    # the old per-emotion sum would have said negative 6 of 6 = 100 %
    at = run_app({"brand": "acme", "grouping": "sentiment", "measure": "share",
                  "emotions": "negative,positive,neutral"})
    frame = chart_data(at)
    shares = {e: v for e, v, t in zip(frame["emotion"], frame["value"], frame["ts"]) if t == minute}
    assert shares == pytest.approx({"negative": 50.0, "positive": 50.0, "neutral": 100 / 6})
    assert "estimated" not in texts(at)
    # Ekman: anger = n1, n3 (2 of 6), joy = n3, p1, p2 (3 of 6)
    at.radio(key="em_grouping").set_value("ekman").run()
    assert set(at.multiselect(key="em_emotions").value) == {"anger", "disgust", "fear", "sadness", "joy", "neutral"}
    frame = chart_data(at)
    shares = {e: v for e, v, t in zip(frame["emotion"], frame["value"], frame["ts"]) if t == minute}
    assert shares["anger"] == pytest.approx(100 * 2 / 6) and shares["joy"] == pytest.approx(50.0)
    # net sentiment = (positive - negative) / (positive + negative) posts = (3 - 3) / 6 = 0; no earlier hour
    net = _metric(at, "acme · net sentiment")
    assert net.value == "+0" and not net.delta
    assert _metric(at, "acme · posts").value == "6"
    assert "no earlier data" in texts(at)


def test_grouped_counts_of_data_without_group_series_are_flagged_estimated(dashboard_env, seeded, redis_client):
    # counts written before the monitor kept group series: the member sum stands in, flagged
    write_counts(redis_client, "oldco", "raw", [(seeded.t1, "_all", 10), (seeded.t1, "anger", 4),
                                                 (seeded.t1, "annoyance", 3)])
    at = run_app({"brand": "oldco", "grouping": "ekman"})
    frame = chart_data(at)
    assert frame[(frame["emotion"] == "anger") & (frame["ts"] == seeded.t1)]["value"].item() == 4 + 3
    assert "estimated" in texts(at)
    at = run_app({"brand": "acme", "grouping": "ekman"})  # the seeded brand has its group series
    assert "estimated" not in texts(at)


def test_newest_bucket_is_held_back_until_complete(dashboard_env, seeded, redis_client):
    current = int(time.time() * 1000) // MINUTE * MINUTE
    write_counts(redis_client, "acme", "raw", [(current, "_all", 3), (current, "anger", 1)])
    at = run_app({"measure": "share"})
    ran_at = int(time.time() * 1000)
    frame = chart_data(at)
    # nothing drawn for a bucket that had not ended when the page ran (3 posts would read 33 % anger)
    assert (frame["ts"] + MINUTE - 1 <= ran_at).all()
    assert "posts so far) is drawn once complete" in texts(at)
    assert frame[(frame["emotion"] == "anger") & (frame["ts"] == seeded.t1)]["value"].item() == pytest.approx(
        100 * 20 / 30)


def test_time_before_monitoring_started_is_not_drawn_as_zero(dashboard_env, seeded):
    at = run_app({"range": "24h"})
    frame = chart_data(at)
    # the first post was counted at t0 (90 min ago): nothing drawn before its bucket, not 22 h of zeros
    assert frame["ts"].min() == seeded.t0 // (15 * MINUTE) * (15 * MINUTE)
    assert "monitoring started" in texts(at)


def test_shifts_and_kpis_without_history_say_so(dashboard_env, seeded):
    at = run_app({"brand": "globex"})  # globex: posts only in the current hour
    shifts = _frame(at, "change (pp)")
    row = shifts.iloc[0]
    assert row["emotion"] == "gratitude" and row["current"] == "7" and row["current share %"] == "70.0"
    assert row["previous share %"] == "—" and row["change (pp)"] == "—" and row["note"] == "no earlier data"
    posts = _metric(at, "globex · posts")
    assert posts.value == "10" and not posts.delta
    assert "globex: no earlier data for the previous hour" in texts(at)


def test_url_state_round_trip(dashboard_env, seeded):
    query = {"brand": "acme,globex", "range": "24h", "measure": "share", "grouping": "ekman",
             "emotions": "anger,joy", "view": "stacked", "tz": "utc"}
    at = run_app(query)
    assert at.multiselect(key="em_brands").value == ["acme", "globex"]
    assert at.radio(key="em_range").value == "24h" and at.radio(key="em_measure").value == "share"
    assert at.radio(key="em_grouping").value == "ekman" and at.radio(key="em_view").value == "stacked"
    assert at.multiselect(key="em_emotions").value == ["anger", "joy"] and at.radio(key="em_tz").value == "utc"
    assert {k: at.query_params[k][0] if isinstance(at.query_params[k], list) else at.query_params[k]
            for k in query} == query
    # a change is written back; picks survive a change of grouping (Ekman anger + joy -> sentiment)
    at.radio(key="em_grouping").set_value("sentiment").run()
    assert at.multiselect(key="em_emotions").value == ["negative", "positive"]
    assert at.query_params["grouping"] in ("sentiment", ["sentiment"])
    assert at.query_params["emotions"] in ("negative,positive", ["negative,positive"])
    # a custom range travels as <from>..<to> in UTC and comes back the same
    custom = {"brand": "acme", "range": "2026-11-20T08:00Z..2026-11-20T10:30Z", "tz": "utc"}
    at = run_app(custom)
    assert at.radio(key="em_range").value == "custom"
    assert at.datetime_input(key="em_from").value == datetime(2026, 11, 20, 8, 0)
    assert at.query_params["range"] in (custom["range"], [custom["range"]])


def test_unknown_emotion_in_the_url_is_refused(dashboard_env, seeded):
    at = run_app({"emotions": "anger,rage"})
    assert at.multiselect(key="em_emotions").value == ["anger"]
    assert "unknown emotion rage" in texts(at)
    assert set(chart_data(at)["emotion"]) == {"anger"}


@pytest.mark.parametrize("zone, suffix", [("America/New_York", None), ("Asia/Tokyo", "JST")])
def test_times_in_the_viewers_zone_or_utc(dashboard_env, seeded, zone, suffix):
    at = AppTestWithZone(zone)
    alerts = _frame(at, "message")
    expected = datetime.fromtimestamp(seeded.alert["ts"] / 1000, tz=ZoneInfo(zone))
    assert alerts.iloc[0]["time"] == expected.strftime("%Y-%m-%d %H:%M ") + expected.tzname()
    footer = next(c.value for c in at.caption if "refresh took" in c.value)
    assert footer.split(" · ")[0].endswith(expected.tzname())
    at.radio(key="em_tz").set_value("utc").run()
    alerts = _frame(at, "message")
    utc = datetime.fromtimestamp(seeded.alert["ts"] / 1000, tz=timezone.utc)
    assert alerts.iloc[0]["time"] == utc.strftime("%Y-%m-%d %H:%M UTC")
    assert at.query_params["tz"] in ("utc", ["utc"])


def AppTestWithZone(zone: str):
    from streamlit.testing.v1 import AppTest

    from .conftest import APP_FILE

    at = AppTest.from_file(APP_FILE, default_timeout=30)
    at.context["timezone"] = zone
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_custom_range_errors_are_said_in_words(dashboard_env, seeded):
    at = run_app({"tz": "utc"})
    at.radio(key="em_range").set_value("custom").run()
    at.datetime_input(key="em_from").set_value(datetime(2026, 11, 20, 12, 0)).run()
    at.datetime_input(key="em_to").set_value(datetime(2026, 11, 20, 9, 0)).run()
    errors = " ".join(e.value for e in at.error)
    assert "“From” (2026-11-20 12:00) must be before “To” (2026-11-20 09:00)" in errors
    assert "1795" not in errors and not at.get("vega_lite_chart")
    future = datetime.now(timezone.utc).replace(tzinfo=None, second=0, microsecond=0) + pd.Timedelta(days=2)
    at.datetime_input(key="em_from").set_value(future - pd.Timedelta(days=4)).run()
    at.datetime_input(key="em_to").set_value(future).run()
    assert "is in the future" in " ".join(e.value for e in at.error)


def test_live_refresh_off_says_so_in_the_footer(dashboard_env, seeded):
    at = run_app()
    assert "live every 10 s" in texts(at)
    at.toggle(key="em_live").set_value(False).run()
    assert "live refresh off" in texts(at) and "live every" not in texts(at)


def test_alert_figures_agree_and_kept_evidence_is_shown(dashboard_env, seeded, redis_client):
    at = run_app()
    row = _frame(at, "message").iloc[0]
    assert (row["share %"], row["baseline %"]) == ("67", "2")  # the message says 67% vs 2%
    assert row["status"] == "open"  # an alert stored before the lifecycle: it opened
    markers = alert_markers(at)
    assert list(markers["message"].unique()) == [seeded.alert["message"]]
    # an alert carrying its evidence shows it even when the store no longer holds the posts
    evidence = [{"id": "e1", "text": "gone from the store but kept", "brands": ["acme"], "created_at": seeded.t2,
                 "scores": {"anger": 0.95}, "labels": ["anger"], "source": "demo", "author": "x",
                 "url": "https://example.com/e1"}]
    add_alert(redis_client, {"brand": "acme", "emotion": "anger", "ts": seeded.t2 + MINUTE,
                             "window_start": seeded.t2 - 5 * MINUTE, "window_end": seeded.t2 + MINUTE,
                             "value": 0.5, "baseline": 0.1, "count": 10, "posts": 20, "message": "kept",
                             "evidence": evidence})
    at = run_app()
    posts = _frame(at, "top_scores")
    assert list(posts["text"]) == ["gone from the store but kept"] and posts["url"].iloc[0] == "https://example.com/e1"
    assert "kept with the alert when it fired" in texts(at)


def test_post_explorer_filters_by_emotion_and_text(dashboard_env, seeded):
    at = run_app()
    at.selectbox(key="em_x_emotion").set_value("anger").run()
    posts = next(d.value for d in at.dataframe if "top_scores" in d.value.columns and "furious" in
                 " ".join(d.value["text"]) and seeded.outside_text not in set(d.value["text"])
                 and len(d.value) == 3)
    assert list(posts["text"]) == seeded.window_texts  # labelled anger, highest score first
    at.text_input(key="em_x_search").input("billing").run()
    frames = [d.value for d in at.dataframe if "top_scores" in d.value.columns]
    assert list(frames[-1]["text"]) == ["acme billing is a scam"]
    read = at.selectbox(key="em_x_read")
    assert read.options == [o for o in read.options if "acme billing is a scam" in o]  # no stale option
    read.set_value(read.options[0]).run()
    assert "acme billing is a scam" in [t.value for t in at.text]
