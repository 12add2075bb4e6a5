"""An anger spike through the whole product: the shipped default model, a worker process, a local webhook, `alerts`."""

from __future__ import annotations

import pytest

import json
import re
import time
import urllib.request

from emotion_monitor.servers import free_port

from tests.monitor.conftest import consume_all, create_topic, monitor_env, posts_total, produce, wait_until

T0 = 1_795_654_800_000
CALM = [
    "The package arrived on Tuesday as planned.",
    "I love the new design, great job!",
    "Thanks for the quick reply, that solved it.",
    "What time does the store open on Sundays?",
    "This is the best coffee I have had in years.",
    "I switched plans last month and it works fine.",
    "Very happy with the battery life so far.",
    "Is there a student discount?",
    "The update looks nice.",
    "Thank you so much for the help!",
]
ANGRY = [
    "I am so angry right now!!",
    "This makes me furious. I hate you.",
    "I'm so pissed off at this company.",
    "Absolutely furious, I hate this so much!",
    "I am angry and fed up with this crap.",
    "Damn you, I'm so angry!",
    "You make me so mad, stop it!",
    "I hate this stupid app, it makes me so angry",
]


def post(i: int, brand: str, text: str, created_at: int) -> bytes:
    return json.dumps({"id": f"{brand}-{i}", "brand": brand, "text": text, "created_at": created_at}).encode()


def test_anger_spike_fires_exactly_one_alert_and_steady_traffic_none(
        kafka_broker, redis_server, redis_client, start_worker, webhook):
    hook = webhook()
    port = free_port()
    create_topic(kafka_broker, "posts", 3)
    # one hour of steady traffic for two brands (one post every 30 s each): calm texts only
    steady = [post(i, brand, CALM[i % len(CALM)], T0 + i * 30_000) for i in range(120) for brand in ("acme", "globex")]
    produce(kafka_broker, "posts", steady)
    env = monitor_env(kafka_broker, redis_server.url, None, webhook_url=hook.url, alert_window_ms="300000",
                      alert_baseline_ms="3600000", alert_min_volume="10", alert_cooldown_ms="900000",
                      metrics_port=str(port))
    worker = start_worker(env)  # model_path unset: the trainer's shipped default model
    wait_until(lambda: posts_total(redis_client, "acme") + posts_total(redis_client, "globex") >= 240, 150,
               what="steady traffic", worker=worker)
    time.sleep(1)
    assert redis_client.zcard("em:alerts") == 0 and hook.received == []
    # a rule set while the worker runs (as `emotion-monitor alerts rules set` does) reaches it: its alert carries the
    # rule's channels
    from monitor.alert_rules import AlertRule, set_rule

    set_rule(redis_client, AlertRule("acme", "anger", min_effect="at least 2x and +10 points", channels=("webhook",)))
    # the worker checks the rules' version at most every 2 s (alert_rules_reload_seconds): a spike produced sooner
    # could be judged under the old rules, without the rule's channel (seen once in a loaded run)
    time.sleep(2.5)
    # then five minutes in which acme gets 24 unmistakably angry posts; globex stays calm
    end = T0 + 120 * 30_000
    spike = [post(1000 + i, "acme", ANGRY[i % len(ANGRY)], end + i * 12_000) for i in range(24)]
    calm = [post(1000 + i, "globex", CALM[i % len(CALM)], end + i * 12_000) for i in range(24)]
    produce(kafka_broker, "posts", spike + calm)
    wait_until(lambda: posts_total(redis_client, "acme") >= 144 and posts_total(redis_client, "globex") >= 144, 120,
               what="spike traffic", worker=worker)
    wait_until(lambda: len(hook.received) >= 1, 30, what="webhook call", worker=worker)
    time.sleep(2)
    assert len(hook.received) == 1
    alert = hook.received[0]
    assert (alert["brand"], alert["emotion"]) == ("acme", "anger")
    assert alert["window_end"] > end and alert["count"] >= 10 and alert["value"] > alert["baseline"]
    assert alert["channels"] == ["webhook"] and alert["detection"]["fired"] and alert["detection"]["p_value"] < 1e-4
    on_topic = consume_all(kafka_broker, "alerts", 2, timeout=8)
    assert len(on_topic) == 1 and json.loads(on_topic[0].value)["brand"] == "acme"
    assert redis_client.zcard("em:alerts") == 1
    # the worker's own counter of alerts fired, by emotion (em_alerts_total): exactly the one alert
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert dict(re.findall(r'^em_alerts_total\{emotion="(\w+)"\} (\S+)$', metrics, re.M)) == {"anger": "1.0"}


@pytest.mark.slow  # long (a real worker or `up` run); CI runs it with -m slow
def test_worker_shutdown_delivers_the_webhook_still_in_flight(kafka_broker, redis_server, redis_client, start_worker,
                                                              webhook):
    """The worker never called AlertEngine.drain: a webhook delivery waiting for its retry when SIGTERM came was
    dropped with the event loop. Now the agent drains deliveries at shutdown (up to alert_drain_timeout)."""
    import signal

    hook = webhook(fail_first=1)  # the first attempt fails: the retry waits out a 6 s back-off
    create_topic(kafka_broker, "posts", 3)
    steady = [post(i, "acme", CALM[i % len(CALM)], T0 + i * 60_000) for i in range(40)]
    end = T0 + 40 * 60_000
    spike = [post(1000 + i, "acme", ANGRY[i % len(ANGRY)], end + i * 10_000) for i in range(16)]
    produce(kafka_broker, "posts", steady + spike)
    env = monitor_env(kafka_broker, redis_server.url, None, webhook_url=hook.url, alert_window_ms="300000",
                      alert_baseline_ms="3600000", alert_min_volume="10", alert_cooldown_ms="900000",
                      webhook_backoff="6", webhook_retries="1", alert_drain_timeout="30")
    worker = start_worker(env)
    wait_until(lambda: hook.state["attempts"] >= 1, 150, what="first webhook attempt", worker=worker)
    assert hook.received == []
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log_tail()
    assert len(hook.received) == 1 and (hook.received[0]["brand"], hook.received[0]["status"]) == ("acme", "open")
    assert hook.state["attempts"] == 2
