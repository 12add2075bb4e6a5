"""The page through ``streamlit.testing.v1.AppTest`` against a real Redis with TimeSeries seeded with known data."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from emotion_monitor.servers import free_port

from .conftest import APP_FILE

pytestmark = pytest.mark.timeout(120)


def run_app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP_FILE, default_timeout=30)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _datasets(element) -> dict[str, pd.DataFrame]:
    return {d.name: pa.ipc.open_stream(io.BytesIO(d.data.data)).read_pandas() for d in element.proto.datasets}


def _emotion_charts(at: AppTest) -> list:
    """The per-brand emotion charts (layered; their first layer is coloured by emotion)."""
    charts = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        first = (spec.get("layer") or [spec])[0]
        if first.get("encoding", {}).get("color", {}).get("field") == "emotion":
            charts.append((element, spec))
    return charts


def chart_data(at: AppTest, y_field: str = "value") -> pd.DataFrame:
    """The data drawn as emotion lines on all brand charts, decoded from their Arrow datasets."""
    frames = []
    for element, spec in _emotion_charts(at):
        first = spec["layer"][0]
        name = first.get("data", {}).get("name") or spec.get("data", {}).get("name")
        frames.append(_datasets(element)[name])
    if not frames:
        raise AssertionError(f"no emotion chart among {len(at.get('vega_lite_chart'))} charts")
    return pd.concat(frames, ignore_index=True)


def alert_markers(at: AppTest) -> pd.DataFrame:
    """The alert markers layered on the emotion charts."""
    frames = []
    for element, spec in _emotion_charts(at):
        for layer in spec["layer"][2:]:  # after the lines and the bucket tooltips
            frames.append(_datasets(element)[layer["data"]["name"]])
    return pd.concat(frames, ignore_index=True).drop_duplicates() if frames else pd.DataFrame()


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "subheader", "title")
             for e in getattr(at, kind)]
    return "\n".join(map(str, parts))


def at_time(frame: pd.DataFrame, emotion: str, ts_ms: int, brand: str = "acme") -> float:
    time = pd.Timestamp(ts_ms, unit="ms", tz="UTC")
    rows = frame[(frame["emotion"] == emotion) & (frame["brand"] == brand) & (frame["time"] == time)]
    assert len(rows) == 1, (emotion, ts_ms, frame)
    return float(rows["value"].iloc[0])


def test_chart_data_equals_seeded_counts(dashboard_env, seeded):
    at = run_app()
    frame = chart_data(at)
    # top emotions by count; one line per emotion with a point for every minute of the hour (empty minutes are 0)
    assert set(frame["emotion"]) == {"anger", "joy", "annoyance"}
    assert frame.groupby("emotion").size().unique().tolist() in ([60], [61])
    for emotion in ("anger", "joy", "annoyance"):
        line = frame[frame["emotion"] == emotion]
        drawn = {int(t.timestamp() * 1000): v for t, v in zip(line["time"], line["value"]) if v}
        seeded_in_hour = {ts: v for (b, e, ts), v in seeded.counts.items()
                          if (b, e) == ("acme", emotion) and ts > seeded.now_ms - 3_600_000}
        assert drawn == seeded_in_hour
    assert at_time(frame, "anger", seeded.t1) == 20 and at_time(frame, "anger", seeded.t2) == 10
    assert "acme: 50 posts" in texts(at)


def test_share_of_posts(dashboard_env, seeded):
    at = run_app()
    at.radio(key="em_measure").set_value("share").run()
    frame = chart_data(at)
    assert at_time(frame, "anger", seeded.t1) == pytest.approx(100 * 20 / 30)
    assert at_time(frame, "joy", seeded.t2) == pytest.approx(100 * 2 / 20)


def test_ekman_grouping_counts_posts_with_any_member_emotion(dashboard_env, seeded):
    at = run_app()
    at.radio(key="em_grouping").set_value("ekman").run()
    frame = chart_data(at)
    assert at_time(frame, "anger", seeded.t1) == 22  # the group series: not anger 20 + annoyance 4
    assert at_time(frame, "joy", seeded.t1) == 3
    assert "annoyance" not in set(frame["emotion"])


def test_any_emotion_on_request(dashboard_env, seeded):
    at = run_app()
    at.multiselect(key="em_emotions").set_value(["joy"]).run()
    frame = chart_data(at)
    assert set(frame["emotion"]) == {"joy"}
    assert at_time(frame, "joy", seeded.t1) == 3


def test_compare_several_brands(dashboard_env, seeded):
    at = run_app({"brand": "acme,globex"})
    assert at.multiselect(key="em_brands").value == ["acme", "globex"]
    frame = chart_data(at)
    assert at_time(frame, "gratitude", seeded.t1, brand="globex") == 7
    assert at_time(frame, "anger", seeded.t1, brand="acme") == 20


def test_shift_table_ranks_the_seeded_change_first(dashboard_env, seeded):
    at = run_app()
    shifts = next(d.value for d in at.dataframe if "change (pp)" in d.value.columns)
    top = shifts.iloc[0]
    assert (top["brand"], top["emotion"]) == ("acme", "anger")
    assert top["previous"] == "1" and top["current"] == "30"
    assert top["change (pp)"] == "+58.0" and top["previous share %"] == "2.0" and top["current share %"] == "60.0"
    joy = shifts[shifts["emotion"] == "joy"].iloc[0]
    assert joy["change (pp)"] == "+0.0" and joy["previous"] == "5" and joy["current"] == "5"
    annoyance = shifts[shifts["emotion"] == "annoyance"].iloc[0]
    assert annoyance["change (%)"] == "—"  # absent before: no relative change, and never "None"


def test_alert_is_listed_and_its_posts_show(dashboard_env, seeded):
    at = run_app()
    alerts = next(d.value for d in at.dataframe if "message" in d.value.columns)
    assert list(alerts["brand"]) == ["acme"]  # globex's alert is not for the selected brand
    assert alerts.iloc[0]["message"] == seeded.alert["message"]
    posts = next(d.value for d in at.dataframe if "text" in d.value.columns)
    assert list(posts["text"]) == seeded.window_texts  # most angry first; the post outside the window is absent
    assert seeded.outside_text not in set(posts["text"])
    assert list(posts["source"]) == ["demo"] * 3
    assert posts["score"].iloc[0] == pytest.approx(0.9)
    assert seeded.alert["message"] in texts(at)


def test_no_data_yet(dashboard_env, redis_client):
    at = run_app()
    assert "No data yet" in texts(at)
    assert not at.get("vega_lite_chart")


def test_known_brand_without_posts_in_range(dashboard_env, redis_client, seeded):
    redis_client.sadd("em:brands", "initech")  # seen once, but nothing in the last hour
    at = run_app({"brand": "initech"})
    assert "No posts for initech" in texts(at)
    assert "Not enough posts" in texts(at)
    assert not at.get("vega_lite_chart")


@pytest.mark.parametrize("range_key, bucket_ms, tier", [("24h", 15 * 60_000, "1m"), ("7d", 3_600_000, "1h")])
def test_longer_ranges_read_the_compaction_tiers(dashboard_env, seeded, range_key, bucket_ms, tier):
    at = run_app()
    at.radio(key="em_range").set_value(range_key).run()
    frame = chart_data(at)
    source = seeded.counts if tier == "1m" else seeded.hourly
    expected: dict = {}
    for (brand, emotion, ts), value in source.items():
        if brand == "acme" and emotion == "anger":
            expected[ts // bucket_ms * bucket_ms] = expected.get(ts // bucket_ms * bucket_ms, 0) + value
    # drawn: the buckets from the one where monitoring started (t0) to the last complete one; the still-filling
    # newest bucket and the time before monitoring started are not drawn (neither as 0)
    first, newest = seeded.t0 // bucket_ms * bucket_ms, seeded.now_ms // bucket_ms * bucket_ms
    expected = {ts: v for ts, v in expected.items() if ts < newest}
    anger = frame[frame["emotion"] == "anger"]
    assert {int(t.timestamp() * 1000): v for t, v in zip(anger["time"], anger["value"]) if v} == expected
    assert sorted(int(t.timestamp() * 1000) for t in anger["time"]) == list(range(first, newest, bucket_ms))
    assert f"(tier {tier})" in texts(at)


def test_unknown_brand(dashboard_env, seeded):
    at = run_app({"brand": "nosuchbrand"})
    assert "Unknown brand: nosuchbrand" in texts(at)
    assert "acme" in texts(at)  # the known brands are listed
    assert not at.get("vega_lite_chart")


def test_redis_unreachable(dashboard_env):
    dashboard_env.setenv("EM_DASHBOARD_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    at = run_app()
    errors = " ".join(e.value for e in at.error)
    assert "Redis is unreachable" in errors
    assert not at.get("vega_lite_chart")


def test_redis_goes_away_while_open(dashboard_env, seeded, redis_server):
    at = run_app()
    assert at.get("vega_lite_chart")
    redis_server.stop()
    at.run()
    assert not at.exception
    assert "Redis is unreachable" in " ".join(e.value for e in at.error)


def _button(at: AppTest, label: str):
    (button,) = [b for b in at.button if b.label == label]
    return button


def test_password_gate(dashboard_env, seeded):
    open_frame = chart_data(run_app())  # the same data without a gate, for comparison
    dashboard_env.setenv("EM_DASHBOARD_PASSWORD", "s3cret")
    at = run_app()
    assert not at.get("vega_lite_chart") and not at.dataframe
    at.text_input[0].input("wrong")
    _button(at, "Enter").click().run()
    assert "Wrong password." in " ".join(e.value for e in at.error)
    assert not at.get("vega_lite_chart")
    at.text_input[0].input("s3cret")
    _button(at, "Enter").click().run()
    assert not at.exception
    frame = chart_data(at)
    # the chart's hour ends at the current minute: when a minute began between the open run and this one (a bare
    # clone's run failed so at 14:19:00), both windows moved; so the open page is read again, after, and the gated
    # frame must equal the open one of the same minute, exactly
    dashboard_env.delenv("EM_DASHBOARD_PASSWORD")
    open_after = chart_data(run_app())
    dashboard_env.setenv("EM_DASHBOARD_PASSWORD", "s3cret")
    same_minute = open_frame if frame["ts"].iloc[0] == open_frame["ts"].iloc[0] else open_after
    pd.testing.assert_frame_equal(frame, same_minute)
    assert at_time(frame, "anger", seeded.t1) == 20
    # remembered for the session: the next run (a refresh, a widget change) shows data without asking again ...
    at.run()
    assert "Password" not in [t.label for t in at.text_input] and chart_data(at) is not None and not at.exception
    # ... but only for that session: a new visitor is asked
    other = run_app()
    assert [t.label for t in other.text_input] == ["Password"] and not other.get("vega_lite_chart")


def test_password_and_oidc_together_need_both(dashboard_env, seeded):
    dashboard_env.setenv("EM_DASHBOARD_PASSWORD", "s3cret")
    dashboard_env.setenv("EM_DASHBOARD_OIDC_PROVIDER", "default")
    at = AppTest.from_file(APP_FILE, default_timeout=30)
    at.user = {"is_logged_in": False}
    at.run()
    # signed out: only the login step, no password field yet, no data
    assert [b.label for b in at.button] == ["Log in"] and not at.text_input
    assert not at.get("vega_lite_chart") and not at.dataframe
    # signed in through OIDC: the password is still required
    at.user = {"is_logged_in": True, "email": "ana@example.com"}
    at.run()
    assert not at.exception
    assert "Signed in as ana@example.com" in " ".join(c.value for c in at.sidebar.caption)
    assert [t.label for t in at.text_input] == ["Password"] and not at.get("vega_lite_chart")
    at.text_input[0].input("wrong")
    _button(at, "Enter").click().run()
    assert not at.get("vega_lite_chart")
    at.text_input[0].input("s3cret")
    _button(at, "Enter").click().run()
    assert not at.exception
    assert at_time(chart_data(at), "anger", seeded.t1) == 20
    # signed out again (the password still remembered in this session): nothing but the login step
    at.user = {"is_logged_in": False}
    at.run()
    assert [b.label for b in at.button] == ["Log in"] and not at.get("vega_lite_chart") and not at.dataframe


def test_oidc_gate_asks_for_login(dashboard_env, seeded):
    dashboard_env.setenv("EM_DASHBOARD_OIDC_PROVIDER", "default")
    at = run_app()
    assert [b.label for b in at.button] == ["Log in"]
    assert not at.get("vega_lite_chart") and not at.dataframe
    at.button[0].click().run()  # no [auth] secrets here: a clear message, not a traceback
    assert not at.exception
    assert "not usable" in " ".join(e.value for e in at.error)


def test_malformed_alerts_and_posts_are_skipped_and_counted(dashboard_env, seeded, redis_client):
    redis_client.zadd("em:alerts", {"not json": seeded.t1, '{"brand": "acme", "emotion": "fear"}': seeded.t1,
                                    '{"brand": "acme", "emotion": "fear", "ts": "soon", "window_start": 1, '
                                    '"window_end": 2}': seeded.t1})
    redis_client.zadd("em:posts:acme", {"{broken": seeded.t1 + 5, '{"created_at": "x", "text": "bad"}': seeded.t1 + 6})
    at = run_app()
    assert "3 malformed alert record(s) ignored" in texts(at)
    assert "2 malformed ignored" in texts(at)
    posts = next(d.value for d in at.dataframe if "text" in d.value.columns)
    assert list(posts["text"]) == seeded.window_texts


def test_custom_range(dashboard_env, seeded):
    from datetime import datetime, timezone

    at = run_app()
    at.radio(key="em_range").set_value("custom").run()
    start = datetime.fromtimestamp((seeded.t0 - 60_000) / 1000, tz=timezone.utc).replace(tzinfo=None)
    end = datetime.fromtimestamp((seeded.t0 + 20 * 60_000) / 1000, tz=timezone.utc).replace(tzinfo=None)
    at.datetime_input(key="em_from").set_value(start).run()
    at.datetime_input(key="em_to").set_value(end).run()
    assert not at.exception
    frame = chart_data(at)
    assert at_time(frame, "joy", seeded.t0) == 5  # only the previous hour's spike is inside this window
    assert frame["time"].max() < pd.Timestamp(seeded.t1, unit="ms", tz="UTC")
    assert "Shifts vs the previous period of the same length" in texts(at)


def test_emotion_outside_the_goemotions_names_can_be_requested(dashboard_env, seeded, redis_client):
    from dashboard.seed import write_counts

    write_counts(redis_client, "acme", "raw", [(seeded.t2, "trust", 6)])  # a model with another label set
    at = run_app()
    at.multiselect(key="em_emotions").set_value(["trust"]).run()
    frame = chart_data(at)
    assert set(frame["emotion"]) == {"trust"} and at_time(frame, "trust", seeded.t2) == 6


def test_post_without_a_time_and_alert_with_an_odd_brand_are_counted_not_fatal(dashboard_env, seeded, redis_client):
    redis_client.zadd("em:alerts", {'{"brand": ["acme"], "emotion": "fear", "ts": 1, "window_start": 1, '
                                    '"window_end": 2}': seeded.t1})
    redis_client.zadd("em:posts:acme", {'{"text": "no created_at"}': seeded.t1 + 5})
    at = run_app()  # asserts no exception on the page
    assert "1 malformed alert record(s) ignored" in texts(at)
    assert "1 malformed ignored" in texts(at)
    posts = next(d.value for d in at.dataframe if "text" in d.value.columns)
    assert list(posts["text"]) == seeded.window_texts
