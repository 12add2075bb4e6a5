"""Alert delivery beyond Redis and the ``alerts`` topic: the generic JSON webhook, Slack, Microsoft Teams and email.

Channels (``EM_MONITOR_ALERT_CHANNELS``, or a rule's ``channels``): ``webhook`` (the alert JSON POSTed to
``EM_MONITOR_WEBHOOK_URL``), ``slack`` (a Block Kit message POSTed to ``EM_MONITOR_SLACK_WEBHOOK_URL``), ``teams`` (an
Adaptive Card 1.4 in a message attachment, POSTed to ``EM_MONITOR_TEAMS_WEBHOOK_URL``) and ``email`` (plain text
through ``EM_MONITOR_SMTP_HOST``). A channel without its URL or SMTP host is skipped. Each message names the
transition (opened / still going / resolved), brand, emotion, effect, confidence when known, the top posts, the
over-represented terms and a dashboard link (``EM_MONITOR_DASHBOARD_URL``).

Delivery guarantee: best effort, after the alert is stored in Redis and published on the topic (the record of it).
Every HTTP channel has a per-attempt timeout, retries with exponential back-off, posts only to hosts in
``EM_MONITOR_WEBHOOK_ALLOWED_HOSTS`` and follows redirects only to those hosts; email retries the same way on
temporary failures (connection errors, 4xx replies) and gives up on permanent ones (5xx). Deliveries run as tasks
beside the batches (never blocking posts); :meth:`Notifier.drain` waits for those in flight (the worker calls it at
shutdown). Logs name a URL by scheme, host and port only: its path and query often hold its secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
from collections.abc import Iterable
from datetime import datetime, timezone
from email.message import EmailMessage
from urllib.parse import urlencode, urljoin, urlparse

from monitor.alert_record import Alert
from monitor.redact import safe_url
from monitor.settings import ALERT_CHANNELS, MonitorSettings

__all__ = ["ALERT_CHANNELS", "Notifier", "dashboard_link", "email_message", "slack_payload", "teams_payload"]

log = logging.getLogger(__name__)

_MAX_REDIRECTS = 3
_TITLES = {"open": "{emotion} spike for {brand}", "updated": "{emotion} spike for {brand} is still going",
           "resolved": "{emotion} for {brand} is back to baseline"}
_POST_CHARS = 280  # a quoted post in a message: enough to read it, short enough for Slack's 3,000-char sections


def _title(alert: Alert) -> str:
    return _TITLES.get(alert.status, _TITLES["open"]).format(emotion=alert.emotion.capitalize(), brand=alert.brand)


def _effect(alert: Alert) -> str:
    """The effect as people say it: "12% vs 4% baseline (3.0x, +8 points)"."""
    parts = [f"{alert.value:.0%} vs {alert.baseline:.0%} baseline"]
    extra = []
    if alert.effect_ratio is not None:
        extra.append(f"{alert.effect_ratio:.1f}x")
    if alert.effect_points is not None:
        extra.append(f"{alert.effect_points:+.0f} points")
    return parts[0] + (f" ({', '.join(extra)})" if extra else "")


def _confidence(alert: Alert) -> str:
    return f"{alert.confidence:.1%}" if alert.confidence is not None else "n/a"


def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _posts(alert: Alert, n: int = 3) -> list[str]:
    texts = []
    for post in alert.evidence[:n]:
        text = " ".join(str(post.get("text", "")).split()) if isinstance(post, dict) else ""
        if text:
            texts.append(text if len(text) <= _POST_CHARS else text[:_POST_CHARS - 1] + "…")
    return texts


def _terms(alert: Alert, n: int = 8) -> list[str]:
    return [str(item.get("term")) for item in alert.terms[:n] if isinstance(item, dict) and item.get("term")]


def _minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def dashboard_link(alert: Alert, base_url: str | None, context_ms: int = 3_600_000) -> str | None:
    """The dashboard showing the alert's brand and emotion from ``context_ms`` before its window to one window after
    it (the dashboard's own URL parameters: brand, range, grouping, emotions, tz). None without a base URL."""
    if not base_url:
        return None
    span = alert.window_end - alert.window_start + 1
    start = alert.window_start - context_ms
    end = alert.window_end + span + 60_000  # the URL has minute precision: round the end up
    grouping, _, group = alert.emotion.partition(":")
    params = {"brand": alert.brand, "range": f"{_minute(start)}..{_minute(end)}", "tz": "utc"}
    params.update({"grouping": grouping, "emotions": group} if group else {"emotions": alert.emotion})
    return f"{base_url}{'&' if '?' in base_url else '?'}{urlencode(params)}"


def _mrkdwn(text: str) -> str:
    """Slack's mrkdwn escapes: &, <, > (everything else is shown as typed)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert, link: str | None) -> dict:
    """A Slack incoming-webhook message: ``text`` (the notification's fallback) and Block Kit ``blocks``: a header,
    a section with the message and fields (brand, emotion, status, effect, confidence, window), the top posts as
    quotes, the over-represented terms as context, and a button to the dashboard."""
    fields = [("Brand", alert.brand), ("Emotion", alert.emotion), ("Status", alert.status),
              ("Effect", _effect(alert)), ("Confidence", _confidence(alert)),
              ("Window", f"{_when(alert.window_start)} → {_when(alert.window_end)}")]
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": _title(alert)[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(alert.message)[:3000]},
         "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_mrkdwn(value)}"[:2000]} for name, value in fields]},
    ]
    posts = _posts(alert)
    if posts:
        quoted = "\n".join(f"> {_mrkdwn(text)}" for text in posts)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Top posts*\n{quoted}"[:3000]}})
    terms = _terms(alert)
    if terms:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": ("Over-represented: " + ", ".join(_mrkdwn(t) for t in terms))[:3000]}]})
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": link[:3000]}]})
    return {"text": f"{_title(alert)}: {alert.message}", "blocks": blocks}


def teams_payload(alert: Alert, link: str | None) -> dict:
    """A Microsoft Teams incoming-webhook message: one attachment of content type
    ``application/vnd.microsoft.card.adaptive`` holding an Adaptive Card (schema 1.4, the newest Teams webhooks
    render): a title, the message, a FactSet (brand, emotion, status, effect, confidence, window), the top posts, the
    terms and an ``Action.OpenUrl`` to the dashboard."""
    facts = [("Brand", alert.brand), ("Emotion", alert.emotion), ("Status", alert.status), ("Effect", _effect(alert)),
             ("Confidence", _confidence(alert)),
             ("Window", f"{_when(alert.window_start)} → {_when(alert.window_end)}")]
    body: list[dict] = [
        {"type": "TextBlock", "text": _title(alert), "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "TextBlock", "text": alert.message, "wrap": True},
        {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in facts]},
    ]
    posts = _posts(alert)
    if posts:
        body.append({"type": "TextBlock", "text": "Top posts", "weight": "Bolder", "wrap": True})
        body += [{"type": "TextBlock", "text": f"“{text}”", "wrap": True, "isSubtle": True} for text in posts]
    terms = _terms(alert)
    if terms:
        body.append({"type": "TextBlock", "text": "Over-represented: " + ", ".join(terms), "wrap": True})
    card: dict = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                  "version": "1.4", "body": body}
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open dashboard", "url": link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def email_message(alert: Alert, link: str | None, sender: str, recipients: list[str]) -> EmailMessage:
    """A plain-text email: the title as subject; the message, figures, top posts, terms and dashboard link."""
    msg = EmailMessage()
    msg["Subject"] = f"[emotion-monitor] {_title(alert)}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    lines = [alert.message, "",
             f"Brand:      {alert.brand}", f"Emotion:    {alert.emotion}", f"Status:     {alert.status}",
             f"Effect:     {_effect(alert)}", f"Confidence: {_confidence(alert)}",
             f"Window:     {_when(alert.window_start)} -> {_when(alert.window_end)}",
             f"Opened:     {_when(alert.opened_at)}", f"Peak share: {alert.peak:.0%}"]
    if alert.resolved_at:
        lines.append(f"Resolved:   {_when(alert.resolved_at)}")
    posts = _posts(alert, 5)
    if posts:
        lines += ["", "Top posts:"] + [f"  > {text}" for text in posts]
    terms = _terms(alert)
    if terms:
        lines += ["", "Over-represented: " + ", ".join(terms)]
    if link:
        lines += ["", f"Dashboard: {link}"]
    lines += ["", f"Alert {alert.id} · model {alert.model_version}"]
    msg.set_content("\n".join(lines))
    return msg


class Notifier:
    """Sends alerts to the channels asked for, as background tasks; :meth:`drain` waits for them."""

    def __init__(self, settings: MonitorSettings):
        self.settings = settings
        self._tasks: set[asyncio.Task] = set()

    def url(self, channel: str) -> str | None:
        s = self.settings
        return {"webhook": s.webhook_url, "slack": s.slack_webhook_url, "teams": s.teams_webhook_url}.get(channel)

    def configured(self, channel: str) -> bool:
        if channel == "email":
            return bool(self.settings.smtp_host and self.settings.smtp_to)
        return bool(self.url(channel))

    def deliver(self, alert: Alert, channels: Iterable[str] | None = None) -> list[asyncio.Task]:
        """Start one delivery per configured channel of ``channels`` (default ``EM_MONITOR_ALERT_CHANNELS``); a
        channel named but not configured is skipped (logged at debug level: an unset URL means "not used")."""
        chosen = self.settings.alert_channels if channels is None else list(channels)
        started = []
        for channel in dict.fromkeys(chosen):
            if channel not in ALERT_CHANNELS:
                log.error("alert %s/%s: unknown channel %r (known: %s)", alert.brand, alert.emotion, channel,
                          ", ".join(ALERT_CHANNELS))
                continue
            if not self.configured(channel):
                log.debug("alert channel %s not configured; skipped", channel)
                continue
            task = asyncio.create_task(self.send(channel, alert))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def send(self, channel: str, alert: Alert) -> bool:
        """One delivery, retried inside; True when the channel accepted it."""
        link = dashboard_link(alert, self.settings.dashboard_url)
        if channel == "email":
            return await self.send_email(alert, link)
        if channel == "slack":
            body = json.dumps(slack_payload(alert, link))
        elif channel == "teams":
            body = json.dumps(teams_payload(alert, link))
        else:
            body = alert.to_json()
        return await self.post_json(self.url(channel) or "", body)

    # ------------------------------------------------------------------ HTTP

    def allowed(self, url: str) -> bool:
        host = urlparse(url).hostname or ""
        return urlparse(url).scheme in ("http", "https") and host in self.settings.webhook_allowed_hosts

    async def post_json(self, url: str, body: str) -> bool:
        """POST ``body`` as JSON; retries with exponential back-off; refuses hosts outside the allow-list, also as a
        redirect target (redirects are followed by hand, at most 3, each checked; only 307/308, which keep the
        POST)."""
        import aiohttp

        s = self.settings
        shown = safe_url(url)
        if not self.allowed(url):
            log.error("webhook %s refused: host not in EM_MONITOR_WEBHOOK_ALLOWED_HOSTS %s", shown,
                      s.webhook_allowed_hosts)
            return False
        delay = s.webhook_backoff
        timeout = aiohttp.ClientTimeout(total=s.webhook_timeout)
        for attempt in range(s.webhook_retries + 1):
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    status = await self._post_checked(session, url, body)
                if status is None:  # a redirect we may not follow: retrying would be refused the same way
                    return False
                if status < 300:
                    return True
                log.warning("webhook %s answered %s (attempt %d)", shown, status, attempt + 1)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("webhook %s failed (attempt %d): %s", shown, attempt + 1, type(exc).__name__)
            if attempt < s.webhook_retries:
                await asyncio.sleep(delay)
                delay *= 2
        log.error("webhook %s gave up after %d attempts", shown, s.webhook_retries + 1)
        return False

    async def _post_checked(self, session, url: str, body: str) -> int | None:
        """POST without aiohttp's own redirect following; the final status, or None for a refused redirect."""
        for _hop in range(_MAX_REDIRECTS + 1):
            async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                    allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status not in (307, 308) or not location:
                    return resp.status
            target = urljoin(url, location)
            if not self.allowed(target):
                log.error("webhook %s redirected to %s, a host not in EM_MONITOR_WEBHOOK_ALLOWED_HOSTS: not followed",
                          safe_url(url), safe_url(target))
                return None
            url = target
        log.error("webhook %s: more than %d redirects; not followed", safe_url(url), _MAX_REDIRECTS)
        return None

    # ------------------------------------------------------------------ email

    async def send_email(self, alert: Alert, link: str | None) -> bool:
        s = self.settings
        msg = email_message(alert, link, s.smtp_from, s.smtp_to)
        delay = s.webhook_backoff
        for attempt in range(s.webhook_retries + 1):
            try:
                await asyncio.to_thread(self._smtp_send, msg)
                return True
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code >= 500:  # permanent: the same message would be refused again
                    log.error("email to %s refused by %s: %s %s", s.smtp_to, s.smtp_host, exc.smtp_code,
                              exc.smtp_error)
                    return False
                log.warning("email via %s failed (attempt %d): %s", s.smtp_host, attempt + 1, exc.smtp_code)
            except smtplib.SMTPRecipientsRefused as exc:
                log.error("email via %s: every recipient refused: %s", s.smtp_host, list(exc.recipients))
                return False
            except (smtplib.SMTPException, OSError) as exc:
                log.warning("email via %s failed (attempt %d): %s", s.smtp_host, attempt + 1, type(exc).__name__)
            if attempt < s.webhook_retries:
                await asyncio.sleep(delay)
                delay *= 2
        log.error("email via %s gave up after %d attempts", s.smtp_host, s.webhook_retries + 1)
        return False

    def _smtp_send(self, msg: EmailMessage) -> None:
        """Blocking (runs in a thread): connect, STARTTLS when asked, log in when a user is set, send."""
        s = self.settings
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                smtp.login(s.smtp_user, password)
            smtp.send_message(msg)

    # ------------------------------------------------------------------ shutdown

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for deliveries in flight; the number still unfinished (then cancelled,
        and logged: those alerts are in Redis and on the topic, but not delivered to their channel)."""
        if not self._tasks:
            return 0
        pending = set(self._tasks)
        _done, left = await asyncio.wait(pending, timeout=timeout)
        if left:
            log.error("%d alert deliveries still in flight after %.1f s at shutdown: cancelled", len(left), timeout)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        return len(left)
