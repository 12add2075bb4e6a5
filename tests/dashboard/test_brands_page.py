"""The Brands page through ``streamlit.testing.v1.AppTest`` against a real Redis: list, add, edit, remove, preview."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.seed import add_post
from monitor.brands import BrandQuery, read_registry, replace_registry

from .conftest import APP_FILE

pytestmark = pytest.mark.timeout(120)


def open_brands_page() -> AppTest:
    at = AppTest.from_file(APP_FILE, default_timeout=30)
    at.run()
    at.radio(key="em_page").set_value("Brands").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def seed_posts(client) -> None:
    for i, (text, brand) in enumerate([("Loving #AcmeCoffee today", "acme"), ("acme coffee is cold", "acme"),
                                       ("acmeville fair", "globex"), ("globex rocks", "globex")]):
        add_post(client, {"id": f"s{i}", "text": text, "brands": [brand], "created_at": 1_795_654_800_000 + i,
                          "scores": {}, "labels": [], "model_version": "test"})


def test_lists_the_registry_and_previews_the_edited_query(dashboard_env, redis_client):
    replace_registry(redis_client, [BrandQuery.parse({"name": "globex", "any": ["globex"], "langs": ["en"]})])
    seed_posts(redis_client)
    at = open_brands_page()
    listed = table(at, "any")
    assert list(listed["brand"]) == ["globex"] and list(listed["langs"]) == ["en"]

    at.selectbox(key="em_brand_edit").set_value("➕ new brand").run()
    at.text_input(key="em_bq_name_➕ new brand").set_value("Acme Coffee").run()
    at.text_area(key="em_bq_any_➕ new brand").set_value("acme coffee\n#acmecoffee").run()
    assert not at.exception, [e.message for e in at.exception]
    preview = table(at, "term")
    assert sorted(preview["text"]) == ["Loving #AcmeCoffee today", "acme coffee is cold"]  # not "acmeville"
    assert set(preview["term"]) == {"#acmecoffee", "acme coffee"}
    assert any("2 of the 4 most recent stored posts" in c.value for c in at.caption)

    at.button(key="em_bq_save").click().run()
    assert any("Saved 'acme coffee'" in s.value for s in at.success)
    queries, version = read_registry(redis_client)
    assert [q.name for q in queries] == ["acme coffee", "globex"] and version == 2
    assert queries[0].any == ["acme coffee", "#acmecoffee"]


def test_edit_and_remove_an_existing_query(dashboard_env, redis_client):
    replace_registry(redis_client, [BrandQuery.parse({"name": "globex", "any": ["globex"]})])
    at = open_brands_page()
    at.selectbox(key="em_brand_edit").set_value("globex").run()
    assert at.text_area(key="em_bq_any_globex").value == "globex"
    at.text_area(key="em_bq_none_globex").set_value("globex anvil").run()
    at.button(key="em_bq_save").click().run()
    assert read_registry(redis_client)[0][0].none == ["globex anvil"]

    at.text_area(key="em_bq_any_globex").set_value("!!!").run()  # invalid: a message, Save disabled
    assert any("no word to match" in e.value for e in at.error)
    assert at.button(key="em_bq_save").disabled

    at.button(key="em_bq_remove").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert read_registry(redis_client)[0] == []
    assert any("Removed 'globex'" in s.value for s in at.success)


def test_empty_registry_says_what_to_do(dashboard_env, redis_client):
    at = open_brands_page()
    assert any("No brand queries yet" in i.value for i in at.info)
    assert any("Give a name and at least one term" in i.value for i in at.info)
