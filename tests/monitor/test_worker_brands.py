"""Brand queries end to end on real servers: untagged posts counted per brand by a real worker, the unmatched counted
(Redis + metric), ``matched`` on posts.classified, a registry change reaching the running worker, and replay."""

from __future__ import annotations

import json
import re
import urllib.request

from click.testing import CliRunner

from emotion_monitor.cli import main
from emotion_monitor.servers import free_port
from monitor import schema
from tests.monitor.conftest import consume_all, create_topic, monitor_env, posts_total, produce, wait_until

REGISTRY = """\
brands:
  - name: acme coffee
    any: ["acme coffee", "acmecoffee", "#acmecoffee", "@acme_coffee"]
    none: ["acme anvil"]
  - name: globex
    any: [globex]
    langs: [en]
"""

BASE_MS = 1_795_654_800_000


def post(i: int, text: str, **extra) -> dict:
    return {"id": f"b{i}", "text": text, "created_at": BASE_MS + i * 1000, **extra}


def unmatched_metric(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r'em_unmatched_total\{topic="posts"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_untagged_posts_are_counted_per_brand_and_registry_changes_reach_the_worker(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_MONITOR_REDIS_URL", redis_server.url)
    registry = tmp_path / "brands.yaml"
    registry.write_text(REGISTRY)
    assert CliRunner().invoke(main, ["brands", "import", str(registry)]).exit_code == 0

    acme = [post(i, t) for i, t in enumerate([
        "Acme Coffee's new roast is great", "#AcmeCoffee all morning", "thanks @acme_coffee for nothing",
        "ACME-coffee again??", "acmecoffee 🔥🔥", "I love acme coffee"])]
    globex = [post(10 + i, f"globex shipped it {i}", lang="en") for i in range(4)]
    unmatched = [post(20, "acme anvil coffee"), post(21, "acmecoffeeville"), post(22, "globex in german", lang="de"),
                 post(23, "nothing to see"), post(24, "zeta zeta")]
    tagged = [post(30 + i, "acme coffee mention", brand="initech") for i in range(3)]  # tags are kept
    create_topic(kafka_broker, "posts", 3)
    produce(kafka_broker, "posts", [json.dumps(p).encode() for p in acme + globex + unmatched + tagged])

    port = free_port()
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir, metrics_port=str(port),
                                      brand_reload_seconds="0.5"))
    wait_until(lambda: posts_total(redis_client, "acme coffee") == 6 and posts_total(redis_client, "globex") == 4
               and posts_total(redis_client, "initech") == 3, 120, what="matched posts counted", worker=worker)
    wait_until(lambda: redis_client.hget(schema.UNMATCHED_KEY, "posts") == "5", 30, what="unmatched total",
               worker=worker)
    wait_until(lambda: unmatched_metric(port) == 5, 30, what="em_unmatched_total", worker=worker)
    assert redis_client.smembers(schema.BRANDS_KEY) == {"acme coffee", "globex", "initech"}

    classified = {json.loads(r.value)["id"]: json.loads(r.value) for r in consume_all(kafka_broker,
                                                                                       "posts.classified", 13)}
    assert set(classified) == {p["id"] for p in acme + globex + tagged}  # the unmatched are not published
    assert classified["b0"]["brands"] == ["acme coffee"] and classified["b0"]["matched"] == {
        "acme coffee": "acme coffee"}
    assert classified["b1"]["matched"] == {"acme coffee": "#acmecoffee"}
    assert classified["b2"]["matched"] == {"acme coffee": "@acme_coffee"}
    assert classified["b10"]["matched"] == {"globex": "globex"}
    assert classified["b30"]["brands"] == ["initech"] and "matched" not in classified["b30"]
    stored = [json.loads(m) for m in redis_client.zrange(schema.posts_key("acme coffee"), 0, -1)]
    assert {p["matched"]["acme coffee"] for p in stored} >= {"acme coffee", "#acmecoffee", "@acme_coffee"}

    # a new brand, added while the worker runs, applies to the next posts within seconds (no restart)
    result = CliRunner().invoke(main, ["brands", "add", "Zeta", "--any", "zeta"])
    assert result.exit_code == 0, result.output
    produce(kafka_broker, "posts", [json.dumps(post(40 + i, f"zeta number {i}")).encode() for i in range(3)])
    wait_until(lambda: posts_total(redis_client, "zeta") == 3, 120, what="zeta counted after hot reload",
               worker=worker)
    assert redis_client.hget(schema.UNMATCHED_KEY, "posts") == "5"  # the earlier "zeta zeta" stays unmatched
    assert worker.process.poll() is None


def test_replay_matches_untagged_posts_too(kafka_broker, redis_server, redis_client, small_model_dir):
    import asyncio

    from monitor.brands import BrandQuery, replace_registry
    from monitor.inference import load_inference
    from monitor.replay import ReplayRange, run_replay
    from monitor.settings import MonitorSettings

    replace_registry(redis_client, [BrandQuery.parse({"name": "acme", "any": ["acme"]})])
    create_topic(kafka_broker, "posts", 1)
    produce(kafka_broker, "posts", [json.dumps(p).encode() for p in
                                    [post(1, "acme one"), post(2, "acme two"), post(3, "nobody")]])
    settings = MonitorSettings(broker_url=kafka_broker.url, redis_url=redis_server.url, metrics_port=0,
                               model_path=str(small_model_dir), device="cpu")
    inference = load_inference(settings)
    try:
        summary = asyncio.run(run_replay(settings, ReplayRange(), mode="recompute", progress=False,
                                         inference=inference))
        assert (summary.counted, summary.unmatched) == (2, 1), summary.describe()
        assert posts_total(redis_client, "acme") == 2
        assert "1 matched no brand" in summary.describe()
        # a second recompute clears what the first counted for the matched brand (the untagged posts' brands come
        # from the registry, as in the recount) instead of adding on top of it
        again = asyncio.run(run_replay(settings, ReplayRange(), mode="recompute", progress=False,
                                       group_id="second-recompute", inference=inference))
    finally:
        inference.close()
    assert (again.counted, again.cleared_markers) == (2, 2), again.describe()
    assert posts_total(redis_client, "acme") == 2
