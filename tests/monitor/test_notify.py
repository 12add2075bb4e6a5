"""Alert delivery channels: Slack / Teams payload shapes (their documented structure), email through a real local
SMTP server (aiosmtpd), per-rule routing and the allow-list over real local HTTP servers; the explanation terms
against hand-computed log-odds."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import math
from urllib.parse import parse_qs, urlparse

import pytest

from emotion_monitor.servers import free_port
from monitor.alerts import Alert
from monitor.explain import over_represented, terms_of
from monitor.notify import Notifier, dashboard_link, email_message, slack_payload, teams_payload
from monitor.settings import MonitorSettings

WINDOW_END = 1_795_658_540_000
DASHBOARD = "https://monitor.example.com/"


def _alert(**extra) -> Alert:
    fields = dict(
        brand="acme", emotion="anger", ts=WINDOW_END + 500, window_start=WINDOW_END - 300_000 + 1,
        window_end=WINDOW_END, value=0.6, baseline=0.1043, count=12, posts=20,
        message="anger spike for acme: 60% of 20 posts in the last 5 min vs 10% before", model_version="m1",
        evidence=({"id": "p1", "text": "still no refund <b>after</b> the #outage & I'm furious", "scores": {}},
                  {"id": "p2", "text": "worst   app\never", "scores": {}}),
        id="0123456789abcdef", status="open", opened_at=WINDOW_END, updated_at=WINDOW_END, peak=0.6,
        effect_ratio=5.753, effect_points=49.57, confidence=0.9993,
        terms=({"term": "refund", "posts": 12, "baseline_posts": 0, "z": 3.67},
               {"term": "#outage", "posts": 12, "baseline_posts": 0, "z": 3.67}))
    fields.update(extra)
    return Alert(**fields)


def test_slack_payload_is_block_kit():
    link = dashboard_link(_alert(), DASHBOARD)
    payload = slack_payload(_alert(), link)
    assert payload["text"].startswith("Anger spike for acme: anger spike for acme: 60%")
    blocks = payload["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context", "actions"]
    header = blocks[0]["text"]
    assert header["type"] == "plain_text" and header["text"] == "Anger spike for acme" and len(header["text"]) <= 150
    fields = blocks[1]["fields"]
    assert blocks[1]["text"]["type"] == "mrkdwn" and 1 <= len(fields) <= 10
    assert all(f["type"] == "mrkdwn" and len(f["text"]) <= 2000 for f in fields)
    shown = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in fields}
    assert shown["*Brand*"] == "acme" and shown["*Emotion*"] == "anger" and shown["*Status*"] == "open"
    assert shown["*Effect*"] == "60% vs 10% baseline (5.8x, +50 points)" and shown["*Confidence*"] == "99.9%"
    # top posts quoted, whitespace folded, Slack's mrkdwn control characters escaped
    posts = blocks[2]["text"]["text"]
    assert posts == ("*Top posts*\n> still no refund &lt;b&gt;after&lt;/b&gt; the #outage &amp; I'm furious\n"
                     "> worst app ever")
    assert blocks[3]["elements"] == [{"type": "mrkdwn", "text": "Over-represented: refund, #outage"}]
    (button,) = blocks[4]["elements"]
    assert button["type"] == "button" and button["text"]["type"] == "plain_text" and button["url"] == link


def test_slack_payload_without_link_terms_or_posts_has_no_empty_blocks():
    payload = slack_payload(_alert(evidence=(), terms=(), confidence=None, status="resolved"), None)
    assert [b["type"] for b in payload["blocks"]] == ["header", "section"]
    assert payload["blocks"][0]["text"]["text"] == "Anger for acme is back to baseline"
    assert "*Confidence*\nn/a" in [f["text"] for f in payload["blocks"][1]["fields"]]


def test_teams_payload_is_an_adaptive_card_in_a_message_attachment():
    link = dashboard_link(_alert(), DASHBOARD)
    payload = teams_payload(_alert(status="updated"), link)
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert {b["type"] for b in card["body"]} == {"TextBlock", "FactSet"}
    assert card["body"][0]["text"] == "Anger spike for acme is still going" and card["body"][0]["weight"] == "Bolder"
    (facts,) = [b["facts"] for b in card["body"] if b["type"] == "FactSet"]
    assert {f["title"]: f["value"] for f in facts}["Effect"] == "60% vs 10% baseline (5.8x, +50 points)"
    assert [f["title"] for f in facts] == ["Brand", "Emotion", "Status", "Effect", "Confidence", "Window"]
    texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    assert "“worst app ever”" in texts and "Over-represented: refund, #outage" in texts
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open dashboard", "url": link}]
    json.dumps(payload)  # serialisable as sent


def test_dashboard_link_opens_the_alerts_brand_emotion_and_time():
    link = dashboard_link(_alert(), DASHBOARD)
    query = parse_qs(urlparse(link).query)
    assert link.startswith(DASHBOARD + "?")
    assert query["brand"] == ["acme"] and query["emotions"] == ["anger"] and query["tz"] == ["utc"]
    # from an hour before the window to a window (rounded up to the minute) after it, as the dashboard's URL says
    assert query["range"] == ["2026-11-26T00:57Z..2026-11-26T02:08Z"]  # window 01:57:20 - 02:02:20 UTC
    group = parse_qs(urlparse(dashboard_link(_alert(emotion="sentiment:negative"), DASHBOARD)).query)
    assert (group["grouping"], group["emotions"]) == (["sentiment"], ["negative"])
    assert dashboard_link(_alert(), None) is None


class _SmtpSink:
    """A real SMTP server (aiosmtpd) on a free port; ``replies`` are answered to DATA first, then 250."""

    def __init__(self, replies=()):
        from aiosmtpd.controller import Controller

        sink = self
        self.messages, self.attempts, self.replies = [], 0, list(replies)

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
                sink.attempts += 1
                if sink.replies:
                    return sink.replies.pop(0)
                sink.messages.append((envelope.rcpt_tos,
                                      email.message_from_bytes(envelope.content, policy=email.policy.default)))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self):
        self.controller.stop()


@pytest.fixture()
def smtp_sink():
    sinks = []

    def make(replies=()):
        sinks.append(_SmtpSink(replies))
        return sinks[-1]

    yield make
    for sink in sinks:
        sink.close()


def _deliver(cfg: MonitorSettings, alert: Alert, channels=None) -> tuple[list[bool], int]:
    async def run():
        notifier = Notifier(cfg)
        tasks = notifier.deliver(alert, channels)
        results = await asyncio.gather(*tasks)
        return list(results), await notifier.drain(5)

    return asyncio.run(run())


def test_email_is_sent_through_a_real_smtp_server(smtp_sink):
    sink = smtp_sink()
    cfg = MonitorSettings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_from="monitor@example.com",
                          smtp_to=["brand-team@example.com", "oncall@example.com"], dashboard_url=DASHBOARD)
    results, left = _deliver(cfg, _alert(), ["email"])
    assert results == [True] and left == 0
    ((recipients, message),) = sink.messages
    assert recipients == ["brand-team@example.com", "oncall@example.com"]
    assert message["Subject"] == "[emotion-monitor] Anger spike for acme"
    assert message["From"] == "monitor@example.com"
    body = message.get_body(("plain",)).get_content()
    assert "anger spike for acme: 60% of 20 posts" in body
    assert "Effect:     60% vs 10% baseline (5.8x, +50 points)" in body and "Confidence: 99.9%" in body
    assert "  > still no refund <b>after</b> the #outage & I'm furious" in body
    assert "Over-represented: refund, #outage" in body
    assert f"Dashboard: {dashboard_link(_alert(), DASHBOARD)}" in body and "Alert 0123456789abcdef" in body


def test_email_retries_a_temporary_refusal_and_gives_up_on_a_permanent_one(smtp_sink):
    sink = smtp_sink(["451 4.3.0 try again later"])
    cfg = MonitorSettings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_to=["a@example.com"],
                          webhook_backoff=0.05, webhook_retries=2)
    assert _deliver(cfg, _alert(), ["email"]) == ([True], 0)
    assert sink.attempts == 2 and len(sink.messages) == 1
    refusing = smtp_sink(["554 5.7.1 rejected"] * 5)
    cfg = cfg.model_copy(update={"smtp_port": refusing.port})
    assert _deliver(cfg, _alert(), ["email"]) == ([False], 0)
    assert refusing.attempts == 1 and refusing.messages == []


def test_email_message_of_a_resolution_says_when_it_resolved():
    msg = email_message(_alert(status="resolved", resolved_at=WINDOW_END + 600_000, evidence=(), terms=()), None,
                        "m@example.com", ["a@example.com"])
    body = msg.get_body(("plain",)).get_content()
    assert msg["Subject"] == "[emotion-monitor] Anger for acme is back to baseline"
    assert "Resolved:   2026-11-26 02:12 UTC" in body and "Dashboard" not in body


def test_routing_sends_to_the_rules_channels_else_the_default_ones(webhook):
    slack, teams, generic = webhook(), webhook(), webhook()
    cfg = MonitorSettings(slack_webhook_url=slack.url, teams_webhook_url=teams.url, webhook_url=generic.url,
                          alert_channels=["teams", "webhook"], dashboard_url=DASHBOARD)
    # a rule routing to Slack (and to email, which is not configured here: skipped)
    assert _deliver(cfg, _alert(), ("slack", "email")) == ([True], 0)
    assert len(slack.received) == 1 and teams.received == [] and generic.received == []
    assert slack.received[0]["blocks"][0]["type"] == "header"
    # no rule: the deployment's default channels
    assert _deliver(cfg, _alert(), None) == ([True, True], 0)
    assert len(slack.received) == 1 and len(teams.received) == 1 and len(generic.received) == 1
    assert teams.received[0]["attachments"][0]["content"]["type"] == "AdaptiveCard"
    assert generic.received[0]["id"] == "0123456789abcdef" and generic.received[0]["status"] == "open"


def test_every_http_channel_keeps_the_allow_list_and_retries(webhook, caplog):
    slack = webhook(fail_first=2)
    teams = webhook()
    cfg = MonitorSettings(slack_webhook_url=slack.url, teams_webhook_url=teams.url.replace("127.0.0.1", "localhost"),
                          webhook_allowed_hosts=["127.0.0.1"], webhook_backoff=0.05, webhook_retries=3)
    with caplog.at_level("ERROR", logger="monitor.notify"):
        assert _deliver(cfg, _alert(), ("slack", "teams")) == ([True, False], 0)
    assert slack.state["attempts"] == 3 and len(slack.received) == 1
    assert teams.state["attempts"] == 0 and "not in EM_MONITOR_WEBHOOK_ALLOWED_HOSTS" in caplog.text


def test_unknown_channel_is_refused_by_the_settings():
    with pytest.raises(ValueError, match="unknown alert channel"):
        MonitorSettings(alert_channels=["pager"])


def test_terms_of_a_post():
    assert terms_of("RT @acme Your #Outage is the WORST, can't log in!! https://x.co/a 2024 ok") == {
        "#outage", "worst", "log", "ok"}


def test_over_represented_terms_match_hand_computed_log_odds():
    window = ["refund outage"] * 3 + ["hello"]
    baseline = ["hello"] * 5 + ["refund"]
    # per-post counts: window refund 3, outage 3, hello 1 (7 in all); baseline hello 5, refund 1 (6 in all)
    # refund: a_w = 4, a_0 = 13; delta = ln(7 / (7 + 13 - 3 - 4)) - ln(5 / (6 + 13 - 1 - 4)); var = 1/7 + 1/5
    z_refund = (math.log(7 / 13) - math.log(5 / 14)) / math.sqrt(1 / 7 + 1 / 5)
    # outage: a_w = 3; delta = ln(6 / 14) - ln(3 / 16); var = 1/6 + 1/3
    z_outage = (math.log(6 / 14) - math.log(3 / 16)) / math.sqrt(1 / 6 + 1 / 3)
    assert over_represented(window, baseline, min_z=0.0, min_posts=1) == [
        {"term": "outage", "posts": 3, "baseline_posts": 0, "z": round(z_outage, 2)},
        {"term": "refund", "posts": 3, "baseline_posts": 1, "z": round(z_refund, 2)}]
    # at the default 1.96 neither stands out in so few posts; nothing without a baseline
    assert over_represented(window, baseline) == [] and over_represented(window, []) == []
    assert len(over_represented(["#outage refund now"] * 40, ["coffee great"] * 40, limit=2)) == 2
