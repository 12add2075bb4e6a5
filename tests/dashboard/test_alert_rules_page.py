"""The Alert rules page through ``streamlit.testing.v1.AppTest`` against a real Redis: list, add, edit, delete —
written where the workers read them (``monitor.alert_rules``)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from monitor.alert_rules import AlertRule, read_rules, set_rule

from .conftest import APP_FILE

pytestmark = pytest.mark.timeout(120)


def open_page() -> AppTest:
    at = AppTest.from_file(APP_FILE, default_timeout=30)
    at.run()
    at.radio(key="em_page").set_value("Alert rules").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_add_edit_and_delete_a_rule(dashboard_env, redis_client):
    set_rule(redis_client, AlertRule("*", "anger", "low"))
    at = open_page()
    listed = next(d.value for d in at.dataframe if "sensitivity" in d.value.columns)
    assert list(listed["brand"]) == ["*"] and list(listed["sensitivity"]) == ["low"]

    new = "➕ new rule"
    at.text_input(key=f"em_rule_brand_{new}").set_value("Acme").run()
    at.text_input(key=f"em_rule_emotion_{new}").set_value("anger").run()
    at.selectbox(key=f"em_rule_sensitivity_{new}").set_value("high").run()
    at.text_input(key=f"em_rule_effect_{new}").set_value("nonsense").run()
    assert any("expected e.g. 'at least 1.5x and +5 points'" in e.value for e in at.error)
    assert at.button(key="em_rule_save").disabled
    at.text_input(key=f"em_rule_effect_{new}").set_value("at least 2x and +5 points").run()
    at.text_input(key=f"em_rule_windows_{new}").set_value("5m, 1h").run()
    at.multiselect(key=f"em_rule_channels_{new}").set_value(["slack", "email"]).run()
    at.button(key="em_rule_save").click().run()
    assert not at.exception, [e.message for e in at.exception]
    rules, version = read_rules(redis_client)
    assert version == 2
    assert rules[1] == AlertRule("acme", "anger", "high", "at least 2x and +5 points", None, None, (300, 3600),
                                 ("slack", "email"))

    at = open_page()
    at.selectbox(key="em_rule_edit").set_value("acme × anger").run()
    at.text_input(key="em_rule_cooldown_acme × anger").set_value("600").run()
    at.button(key="em_rule_save").click().run()
    assert read_rules(redis_client)[0][1].cooldown_s == 600
    at.button(key="em_rule_delete").click().run()
    assert [r.brand for r in read_rules(redis_client)[0]] == ["*"]
