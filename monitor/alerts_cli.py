"""``emotion-monitor alerts rules list|set|delete``: the alert rules (:mod:`monitor.alert_rules`) in the Redis of
``EM_MONITOR_REDIS_URL``. Every change bumps the rules' version; running workers apply it within
``EM_MONITOR_ALERT_RULES_RELOAD_SECONDS``."""

from __future__ import annotations

import json

import click

__all__ = ["alerts"]


@click.group("alerts")
def alerts() -> None:
    """Spike alerts: per brand x emotion rules (sensitivity, minimum effect, volume, cooldown, windows, channels)."""


@alerts.group("rules")
def rules() -> None:
    """List, set or delete alert rules (brand '*' = every brand)."""


def _client():
    from monitor.brands_cli import _client as brands_client

    return brands_client()


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule instead of a table.")
def list_(as_json: bool) -> None:
    """Print every rule (fields left empty use the worker's EM_MONITOR_ALERT_* settings)."""
    from monitor.alert_rules import format_windows, read_rules

    found, version = read_rules(_client())
    if as_json:
        for rule in found:
            click.echo(json.dumps({"brand": rule.brand, "emotion": rule.emotion, **json.loads(rule.to_json())}))
        return
    if not found:
        click.echo(f"no alert rules (version {version}): every brand uses the settings' defaults")
        return
    click.echo(f"{'brand':<20} {'emotion':<18} {'sensitivity':<11} {'min effect':<30} {'volume':>6} "
               f"{'cooldown':>8} {'windows':<8} channels")
    for r in found:
        click.echo(f"{r.brand:<20} {r.emotion:<18} {r.sensitivity:<11} {r.min_effect or '-':<30} "
                   f"{r.min_volume if r.min_volume is not None else '-':>6} "
                   f"{f'{r.cooldown_s}s' if r.cooldown_s is not None else '-':>8} "
                   f"{format_windows(r.windows) or '-':<8} {','.join(r.channels) or '-'}")
    click.echo(f"(version {version})")


@rules.command("set")
@click.argument("brand")
@click.argument("emotion")
@click.option("--sensitivity", type=click.Choice(["low", "normal", "high", "off"]), default="normal",
              show_default=True, help="False-alert budget: low 0.25, normal 1, high 4 per week; off = no alerts.")
@click.option("--min-effect", default=None, help="e.g. 'at least 1.5x and +5 points' (default: the settings').")
@click.option("--min-volume", type=int, default=None, help="Fewest emotion posts in a window.")
@click.option("--cooldown", "cooldown_s", type=int, default=None, help="Seconds before the same rule alerts again.")
@click.option("--windows", default=None, help="Windows, e.g. '5m,1h' (default: the settings').")
@click.option("--channels", default=None, help="Comma-separated delivery channels (default: the default delivery).")
def set_(brand: str, emotion: str, sensitivity: str, min_effect: str | None, min_volume: int | None,
         cooldown_s: int | None, windows: str | None, channels: str | None) -> None:
    """Add or replace the rule for BRAND ('*' = every brand) x EMOTION."""
    from monitor.alert_rules import AlertRule, parse_windows, set_rule

    try:
        rule = AlertRule(brand=brand, emotion=emotion, sensitivity=sensitivity, min_effect=min_effect,
                         min_volume=min_volume, cooldown_s=cooldown_s, windows=parse_windows(windows or ""),
                         channels=tuple((channels or "").split(",")))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _check_emotion(rule.emotion)
    version = set_rule(_client(), rule)
    click.echo(f"rule {rule.brand} x {rule.emotion} saved (version {version}); workers apply it within "
               f"EM_MONITOR_ALERT_RULES_RELOAD_SECONDS")


def _check_emotion(emotion: str) -> None:
    """An emotion the monitor does not write would never alert: refuse it with the names that exist."""
    from monitor.taxonomy import EMOTIONS, group_series

    known = set(EMOTIONS) | {name for name, _members in group_series(list(EMOTIONS))}
    if emotion not in known:
        raise click.ClickException(f"unknown emotion {emotion!r}: expected a GoEmotions label (anger, joy, ...) or "
                                   "a group series such as sentiment:negative or ekman:anger")


@rules.command("delete")
@click.argument("brand")
@click.argument("emotion")
def delete(brand: str, emotion: str) -> None:
    """Remove the rule for BRAND x EMOTION (the brand then uses the '*' rule or the settings)."""
    from monitor.alert_rules import delete_rule

    if not delete_rule(_client(), brand, emotion):
        raise click.ClickException(f"no rule for {brand} x {emotion}")
    click.echo(f"rule {brand} x {emotion} deleted")
