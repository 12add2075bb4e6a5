"""Pure logic: window planning, grouping and shift ranking, the taxonomy, and the CLI's settings hand-over."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from dashboard import queries
from dashboard.cli import _settings_env, dashboard, streamlit_command
from dashboard.settings import DashboardSettings
from dashboard.taxonomy import EMOTIONS, GROUPINGS, group_names
from dashboard.transforms import apply_grouping, chart_frame, shift_table, top_emotions

NOW = 1_800_000_000_000
H = queries.HOUR


@pytest.mark.parametrize("span, bucket, tier", [
    (H, queries.MINUTE, "raw"),                      # last hour: freshest tier, 60 points
    (24 * H, 15 * queries.MINUTE, "1m"),             # last day: 96 points from the 1-minute compaction
    (7 * 24 * H, H, "1h"),                           # last week: 168 points from the hourly compaction
    (90 * 24 * H, queries.DAY, "1h"),
])
def test_plan_window_picks_bucket_and_tier_from_the_range(span, bucket, tier):
    window = queries.plan_window(NOW - span, NOW, NOW)
    assert (window.bucket_ms, window.tier) == (bucket, tier)
    assert window.start_ms % bucket == 0 and window.start_ms <= NOW - span
    assert window.span_ms / bucket <= queries.MAX_POINTS + 1


def test_short_window_in_the_past_avoids_the_raw_tier():
    window = queries.plan_window(NOW - 30 * 24 * H, NOW - 30 * 24 * H + H, NOW)
    assert window.tier == "1m"


def test_empty_range_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        queries.plan_window(NOW, NOW, NOW)


def test_taxonomy_covers_every_emotion_once():
    assert len(EMOTIONS) == 28 == len(set(EMOTIONS))
    for grouping, mapping in GROUPINGS.items():
        assert set(mapping) == set(EMOTIONS), grouping
    assert set(group_names("ekman")) == {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}
    assert group_names("ekman")[-1] == "neutral"
    assert GROUPINGS["ekman"]["annoyance"] == "anger" and GROUPINGS["sentiment"]["curiosity"] == "ambiguous"
    assert set(group_names("sentiment")) == {"positive", "negative", "ambiguous", "neutral"}


def _series(rows):
    return pd.DataFrame(rows, columns=["brand", "emotion", "ts", "count"])


def test_grouping_top_and_share():
    series = _series([("a", "joy", 0, 2), ("a", "love", 0, 3), ("a", "anger", 0, 4), ("a", "_all", 0, 10)])
    grouped = apply_grouping(series, "sentiment")
    assert dict(zip(grouped["emotion"], grouped["count"])) == {"positive": 5, "negative": 4, "_all": 10}
    assert top_emotions(grouped, 1) == ["positive"]
    shares = chart_frame(grouped, ["positive", "negative"], "share")
    assert dict(zip(shares["emotion"], shares["value"])) == {"negative": 40.0, "positive": 50.0}


def test_shift_table_ranks_by_share_change_and_handles_new_emotions():
    totals = pd.DataFrame([
        ("a", "_all", "previous", 100), ("a", "_all", "current", 200),
        ("a", "joy", "previous", 50), ("a", "joy", "current", 60),      # 50% -> 30%: -20 pp
        ("a", "fear", "current", 10),                                   # new: 0% -> 5%
        ("a", "anger", "previous", 10), ("a", "anger", "current", 20),  # 10% -> 10%: 0 pp
    ], columns=["brand", "emotion", "period", "count"])
    table = shift_table(totals)
    assert list(table["emotion"]) == ["joy", "fear", "anger"]
    assert table["change_pp"].tolist() == pytest.approx([-20.0, 5.0, 0.0])
    assert pd.isna(table.loc[1, "change_pct"]) and table.loc[2, "change_pct"] == pytest.approx(100.0)


def test_settings_defaults_and_env(monkeypatch):
    monkeypatch.setenv("EM_DASHBOARD_TOP_N", "7")
    settings = DashboardSettings()
    assert settings.top_n == 7 and settings.host == "127.0.0.1" and not settings.auth_configured
    for name, field in DashboardSettings.model_fields.items():
        assert field.description, name


def test_cli_hands_settings_to_streamlit_as_env():
    settings = DashboardSettings(port=9999, password="pw", refresh_seconds=2)
    env = _settings_env(settings)
    assert env["EM_DASHBOARD_PORT"] == "9999" and env["EM_DASHBOARD_PASSWORD"] == "pw"
    assert env["EM_DASHBOARD_ALLOW_OPEN_REMOTE"] == "false"
    command = streamlit_command(settings)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[command.index("--server.port") + 1] == "9999"


def test_cli_refuses_open_dashboard_on_a_public_address(monkeypatch):
    for name in ("PASSWORD", "OIDC_PROVIDER"):
        monkeypatch.delenv(f"EM_DASHBOARD_{name}", raising=False)
    result = CliRunner().invoke(dashboard, ["--host", "0.0.0.0"])
    assert result.exit_code != 0 and "without access control" in result.output


def test_cli_rejects_bad_settings_clearly():
    result = subprocess.run([sys.executable, "-m", "emotion_monitor", "dashboard", "--top-n", "99"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "top_n" in result.stderr and "Traceback" not in result.stderr
