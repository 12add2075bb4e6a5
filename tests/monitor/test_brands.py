"""Brand queries: matching semantics (each rule, both directions), the query model, the YAML file, the registry in a
real Redis (round trip through the CLI), hot reload of :class:`monitor.brands.LiveMatcher`."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main
from monitor import schema
from monitor.brands import (
    BrandQuery, LiveMatcher, Matcher, RegistryError, assign, dump_yaml, load_yaml, read_registry, replace_registry,
    upsert_queries,
)
from monitor.post import parse_post

ISSUE_YAML = textwrap.dedent("""\
    brands:
      - name: acme coffee            # the brand's series name (normalised as today)
        any: ["acme coffee", "acmecoffee", "#acmecoffee", "@acme_coffee"]   # a post matches if it contains any of these
        none: ["acme anvil"]         # ...and none of these
        langs: [en]                  # optional: only posts in these languages
    """)


def matcher(*queries: dict) -> Matcher:
    return Matcher([BrandQuery.parse(q) for q in queries], version=1)


def brands_of(m: Matcher, text: str, lang: str | None = None) -> list[str]:
    return [hit.brand for hit in m.match(text, lang)]


ACME = {"name": "Acme", "any": ["acme"]}

# (query, text, matches?) — every rule of the issue, each with a text that must match and one that must not
SEMANTICS = [
    # whole words only
    (ACME, "I love acme", True),
    (ACME, "welcome to acmeville", False),
    (ACME, "megaacme is different", False),
    (ACME, "acme_corp is a handle-like word", False),
    # phrases: the words in order, whatever lies between them
    ({"name": "acme coffee", "any": ["acme coffee"]}, "ACME   coffee, finally", True),
    ({"name": "acme coffee", "any": ["acme coffee"]}, "acme-coffee!", True),
    ({"name": "acme coffee", "any": ["acme coffee"]}, "coffee from acme", False),
    ({"name": "acme coffee", "any": ["acme coffee"]}, "acme great coffee", False),
    # case and accents
    (ACME, "ACME rules", True),
    ({"name": "cafe", "any": ["Café Olé"]}, "cafe ole in town", True),
    ({"name": "cafe", "any": ["cafe ole"]}, "CAFÉ OLÉ in town", True),
    ({"name": "cafe", "any": ["cafe ole"]}, "cafeole in town", False),
    ({"name": "strasse", "any": ["straße"]}, "STRASSE", True),
    # hashtags and handles
    ({"name": "acme", "any": ["#acmecoffee"]}, "#AcmeCoffee is back", True),
    ({"name": "acme", "any": ["#acmecoffee"]}, "acmecoffee is back", False),
    ({"name": "acme", "any": ["#acmecoffee"]}, "@acmecoffee is back", False),
    ({"name": "acme", "any": ["@acme_coffee"]}, "thanks @Acme_Coffee!", True),
    ({"name": "acme", "any": ["@acme_coffee"]}, "thanks @acme", False),
    (ACME, "#acme all day", True),  # a plain term also matches the hashtag ...
    (ACME, "cc @acme", True),  # ... and the handle
    (ACME, "mail info@acme.com", False),  # an @ inside a word is not a handle
    # possessives
    (ACME, "Acme's new roast", True),
    (ACME, "Acme\u2019s new roast", True),
    ({"name": "mcd", "any": ["McDonald's"]}, "lunch at mcdonald's", True),
    ({"name": "mcd", "any": ["McDonald's"]}, "lunch at mcdonald", True),
    ({"name": "mcd", "any": ["McDonald's"]}, "lunch at mcdonalds", False),
    (ACME, "acmes are animals", False),
    # punctuation, quotes and emoji around terms
    (ACME, "\U0001F525acme\U0001F525!!!", True),
    (ACME, "'acme' (acme) [acme] acme?", True),
    (ACME, "\"acme\"", True),
    (ACME, "a.c.m.e", False),
]


@pytest.mark.parametrize(("query", "text", "expected"), SEMANTICS)
def test_matching_rules(query, text, expected):
    m = matcher(query)
    assert bool(m.match(text)) is expected, (query, text)


def test_exclusions_veto_only_their_brand():
    m = matcher({"name": "acme", "any": ["acme"], "none": ["acme anvil", "#wile"]},
                {"name": "anvils", "any": ["anvil"]})
    assert brands_of(m, "acme roasts well") == ["acme"]
    assert brands_of(m, "an acme anvil fell") == ["anvils"]
    assert brands_of(m, "acme again #Wile") == []
    assert brands_of(m, "acme and wile") == ["acme"]  # "#wile" excludes the hashtag only


def test_languages():
    m = matcher({"name": "acme", "any": ["acme"], "langs": ["en", "pt-BR"]})
    assert brands_of(m, "acme", "en") == ["acme"]
    assert brands_of(m, "acme", "EN-us") == ["acme"]  # primary subtag, any case
    assert brands_of(m, "acme", "pt") == ["acme"]
    assert brands_of(m, "acme", "de") == []
    assert brands_of(m, "acme", None) == []  # unknown language is not "in these languages"
    assert brands_of(matcher(ACME), "acme", None) == ["acme"]  # no langs: any post


def test_matched_term_is_the_most_specific():
    m = matcher({"name": "acme coffee", "any": ["acme", "acme coffee", "acmecoffee", "#acmecoffee"]})
    assert m.match("ACME coffee is great")[0].term == "acme coffee"
    assert m.match("#acmecoffee")[0].term == "#acmecoffee"
    assert m.match("acmecoffee")[0].term == "acmecoffee"
    assert m.match("just acme")[0].term == "acme"


def test_many_brands_in_one_text_and_shared_terms():
    m = matcher({"name": "a", "any": ["shared", "alpha"]}, {"name": "b", "any": ["shared"]},
                {"name": "c", "any": ["gamma"]})
    assert brands_of(m, "shared thing") == ["a", "b"]
    assert brands_of(m, "alpha and gamma") == ["a", "c"]
    assert brands_of(m, "nothing here") == []
    assert brands_of(Matcher([]), "anything") == []


def test_explain_says_why():
    m = matcher({"name": "acme", "any": ["acme"], "none": ["anvil"], "langs": ["en"]})
    assert m.explain("acme anvil", "en") == [{"brand": "acme", "matched": False, "terms": ["acme"],
                                               "excluded_by": ["anvil"], "reason": "excluded by 'anvil'"}]
    assert m.explain("acme", "de")[0]["reason"] == "language de not in en"
    assert m.explain("acme", "en")[0] == {"brand": "acme", "matched": True, "terms": ["acme"], "excluded_by": [],
                                          "reason": "contains 'acme'"}


@pytest.mark.parametrize(("query", "problem"), [
    ({"name": "acme", "any": []}, "any"),
    ({"name": "acme"}, "any"),
    ({"name": "a=b", "any": ["x"]}, "name"),
    ({"name": "acme", "any": ["!!!"]}, "no word"),
    ({"name": "acme", "any": ["#"]}, "no word"),
    ({"name": "acme", "any": ["acme"], "none": ["ACME"]}, "both any and none"),
    ({"name": "acme", "any": ["acme"], "color": "red"}, "color"),
    ({"name": "acme", "any": [3]}, "strings"),
])
def test_invalid_queries_are_refused_with_the_reason(query, problem):
    with pytest.raises(RegistryError, match=problem):
        BrandQuery.parse(query)


def test_query_names_and_terms_are_normalised():
    query = BrandQuery.parse({"name": "  ACME   Coffee ", "any": ["acme  coffee", "acme  coffee", "acme"],
                              "langs": ["EN"]})
    assert query.name == "acme coffee" and query.any == ["acme coffee", "acme"] and query.langs == ["en"]


def test_issue_yaml_loads_and_round_trips():
    queries = load_yaml(ISSUE_YAML)
    assert [q.to_dict() for q in queries] == [{
        "name": "acme coffee", "any": ["acme coffee", "acmecoffee", "#acmecoffee", "@acme_coffee"],
        "none": ["acme anvil"], "langs": ["en"]}]
    again = load_yaml(dump_yaml(queries))
    assert again == queries
    assert dump_yaml(again) == dump_yaml(queries)


@pytest.mark.parametrize(("text", "problem"), [
    ("brands: {}", "list"),
    ("brand: []", "one key"),
    ("brands: [{name: a, any: [x]}, {name: A, any: [y]}]", "more than once"),
    ("brands: [{name: a, any: [x]}, {name: b}]", "brand 'b'"),
    ("brands: [", "not valid YAML"),
])
def test_bad_registry_files(text, problem):
    with pytest.raises(RegistryError, match=problem):
        load_yaml(text)


def test_assign_modes():
    m = matcher(ACME, {"name": "globex", "any": ["globex"]})
    untagged = parse_post(b'{"id": "1", "text": "acme vs globex"}', 0, require_brand=False)
    tagged = parse_post(b'{"id": "2", "brand": "initech", "text": "acme again"}', 0)
    nothing = parse_post(b'{"id": "3", "text": "no brand here"}', 0, require_brand=False)
    got = assign(m, untagged, "untagged")
    assert got.brands == ["acme", "globex"] and got.matched == {"acme": "acme", "globex": "globex"}
    assert assign(m, tagged, "untagged") is tagged  # tagged posts keep their tags
    both = assign(m, tagged, "all")
    assert both.brands == ["initech", "acme"] and both.matched == {"acme": "acme"}
    assert assign(m, nothing, "untagged") is None and assign(m, nothing, "all") is None
    assert assign(m, parse_post(b'{"id": "4", "brand": "x", "text": "none"}', 0), "all").brands == ["x"]
    assert '"matched":{"acme":"acme"' in __import__("json").dumps(got.to_dict(), separators=(",", ":"))


def test_producers_cannot_claim_a_match():
    post = parse_post(b'{"id": "1", "brand": "acme", "text": "x", "matched": {"acme": "forged"}}', 0)
    assert post.matched is None and "matched" not in post.to_dict()


def test_untagged_posts_need_matching_on():
    from monitor.post import PostRejected

    with pytest.raises(PostRejected) as info:
        parse_post(b'{"id": "1", "text": "x"}', 0)
    assert info.value.reason == "missing_field"
    assert parse_post(b'{"id": "1", "text": "x"}', 0, require_brand=False).brands == []


# ------------------------------------------------------------------------------------------- registry in real Redis

@pytest.fixture()
def cli_env(monkeypatch, redis_server):
    for name in ("BRAND_MATCHING",):
        monkeypatch.delenv(f"EM_MONITOR_{name}", raising=False)
    monkeypatch.setenv("EM_MONITOR_REDIS_URL", redis_server.url)
    return redis_server


def run_cli(*args: str, code: int = 0):
    result = CliRunner().invoke(main, ["brands", *args])
    assert result.exit_code == code, result.output
    return result


def test_registry_round_trip_yaml_redis_yaml(cli_env, redis_client, tmp_path):
    source = tmp_path / "brands.yaml"
    source.write_text(ISSUE_YAML + '  - name: Globex\n    any: [globex, "#globex"]\n')
    assert "imported 2 brand queries (2 new" in run_cli("import", str(source)).output
    assert redis_client.hlen(schema.BRAND_QUERIES_KEY) == 2
    assert int(redis_client.get(schema.BRAND_QUERIES_VERSION_KEY)) == 1
    exported = run_cli("export").output
    assert load_yaml(exported) == load_yaml(source.read_text())
    assert exported == dump_yaml(load_yaml(source.read_text()))
    (tmp_path / "out.yaml").unlink(missing_ok=True)
    run_cli("export", "-o", str(tmp_path / "out.yaml"))
    assert (tmp_path / "out.yaml").read_text() == exported

    # import replaces by default (globex gone), --merge only adds/replaces
    source.write_text(ISSUE_YAML)
    assert "1 removed" in run_cli("import", str(source)).output
    assert [q.name for q in read_registry(redis_client)[0]] == ["acme coffee"]
    merge = tmp_path / "more.yaml"
    merge.write_text("brands:\n  - {name: initech, any: [initech]}\n")
    run_cli("import", "--merge", str(merge))
    assert [q.name for q in read_registry(redis_client)[0]] == ["acme coffee", "initech"]
    assert read_registry(redis_client)[1] == 3

    bad = tmp_path / "bad.yaml"
    bad.write_text("brands:\n  - {name: x, any: ['???']}\n")
    assert "no word to match" in run_cli("import", str(bad), code=1).output
    assert read_registry(redis_client)[1] == 3  # a bad file changes nothing


def test_cli_add_list_test_remove(cli_env, redis_client):
    run_cli("add", "Acme Coffee", "--any", "acme coffee", "--any", "#acmecoffee", "--none", "anvil", "--lang", "en")
    listed = run_cli("list").output
    assert "acme coffee  any: acme coffee, #acmecoffee  none: anvil  langs: en" in listed
    hit = run_cli("test", "Loving #AcmeCoffee today", "--lang", "en").output
    assert "acme coffee: match (contains '#acmecoffee')" in hit
    miss = run_cli("test", "#acmecoffee anvil", "--lang", "en", code=1).output
    assert "acme coffee: no match (excluded by 'anvil')" in miss and "no brand matches" in miss
    assert "no brand matches (of 1 queries)" in run_cli("test", "acmeville", code=1).output
    run_cli("add", "acme coffee", "--any", "acme")  # replaces
    assert read_registry(redis_client)[0][0].any == ["acme"]
    assert "brand 'acme coffee' removed" in run_cli("remove", "ACME coffee").output
    assert "no brand query named" in run_cli("remove", "acme coffee", code=1).output
    assert read_registry(redis_client) == ([], 3)
    assert "'!!!' has no word" in run_cli("add", "x", "--any", "!!!", code=1).output


def test_cli_says_when_redis_is_unreachable(monkeypatch):
    from emotion_monitor.servers import free_port

    monkeypatch.setenv("EM_MONITOR_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert "cannot reach Redis" in run_cli("list", code=1).output


def test_invalid_entry_in_redis_is_skipped_not_fatal(redis_client, caplog):
    upsert_queries(redis_client, [BrandQuery.parse(ACME)])
    redis_client.hset(schema.BRAND_QUERIES_KEY, "broken", "{not json")
    queries, _ = read_registry(redis_client)
    assert [q.name for q in queries] == ["acme"]
    assert "'broken' in Redis is not valid" in caplog.text


def test_live_matcher_reloads_when_the_version_moves(redis_server, redis_client):
    import redis.asyncio as aioredis

    replace_registry(redis_client, [BrandQuery.parse(ACME)])

    async def run():
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        live = LiveMatcher(client, reload_seconds=0.2)
        try:
            first = await live.current()
            assert [m.brand for m in first.match("acme and globex")] == ["acme"]
            upsert_queries(redis_client, [BrandQuery.parse({"name": "globex", "any": ["globex"]})])
            assert await live.current() is first  # within reload_seconds: no Redis read at all
            await asyncio.sleep(0.3)
            second = await live.current()
            assert [m.brand for m in second.match("acme and globex")] == ["acme", "globex"]
            assert second.version == first.version + 1
            await asyncio.sleep(0.3)
            assert await live.current() is second  # version unchanged: not rebuilt
        finally:
            await client.aclose()

    asyncio.run(run())
