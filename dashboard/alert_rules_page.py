"""The dashboard's **Alert rules** page: the per brand x emotion alert rules (:mod:`monitor.alert_rules`) listed, one
added or edited, one deleted.

The rules are the ones in Redis that workers read (``em:alert_rules``): saving here bumps their version, so running
workers apply the change within ``EM_MONITOR_ALERT_RULES_RELOAD_SECONDS``. Fields left empty use the worker's
``EM_MONITOR_ALERT_*`` settings.
"""

from __future__ import annotations

import pandas as pd
import redis
import streamlit as st

from monitor.alert_rules import (SENSITIVITIES, AlertRule, delete_rule, format_windows, parse_windows, read_rules,
                                 set_rule)
from monitor.settings import ALERT_CHANNELS

__all__ = ["render"]

NEW = "➕ new rule"


def _int_or_none(text: str, what: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be a whole number, not {text!r}") from None


def render(settings, client: redis.Redis) -> None:
    """Draw the page; Redis errors and invalid rules become messages."""
    st.title("Alert rules")
    st.caption("Per brand x emotion: how sensitive spike alerts are (false-alert budget: low 0.25, normal 1, high 4 "
               "per week), the smallest spike worth an alert, the fewest posts, the cooldown, the windows and the "
               "delivery channels. Brand '*' applies to every brand without its own rule. Empty fields use the "
               "worker's settings. Workers apply changes within seconds.")
    try:
        rules, version = read_rules(client)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        st.error(f"Redis is unreachable ({exc}). Reload the page to retry.")
        return
    if rules:
        st.dataframe(pd.DataFrame([{
            "brand": r.brand, "emotion": r.emotion, "sensitivity": r.sensitivity, "min effect": r.min_effect or "",
            "min volume": "" if r.min_volume is None else str(r.min_volume),
            "cooldown (s)": "" if r.cooldown_s is None else str(r.cooldown_s),
            "windows": format_windows(r.windows), "channels": ", ".join(r.channels)} for r in rules]),
            hide_index=True, width="stretch")
    else:
        st.info("No alert rules: every brand is watched with the worker's settings. Add one below, or "
                "`emotion-monitor alerts rules set BRAND EMOTION ...`.")
    st.caption(f"Rules version {version} · {len(rules)} rule{'' if len(rules) == 1 else 's'}")

    by_name = {f"{r.brand} × {r.emotion}": r for r in rules}
    chosen = st.selectbox("Add or edit", [NEW, *by_name], key="em_rule_edit")
    current = by_name.get(chosen)
    suffix = chosen
    left, right = st.columns(2)
    brand = left.text_input("Brand ('*' = every brand)", value=current.brand if current else "",
                            key=f"em_rule_brand_{suffix}", disabled=current is not None)
    emotion = right.text_input("Emotion (e.g. anger, sentiment:negative)", value=current.emotion if current else "",
                               key=f"em_rule_emotion_{suffix}", disabled=current is not None)
    sensitivity = left.selectbox("Sensitivity", SENSITIVITIES,
                                 index=SENSITIVITIES.index(current.sensitivity) if current else 1,
                                 key=f"em_rule_sensitivity_{suffix}")
    min_effect = right.text_input("Minimum effect (e.g. 'at least 1.5x and +5 points')",
                                  value=(current.min_effect or "") if current else "", key=f"em_rule_effect_{suffix}")
    min_volume = left.text_input("Minimum volume (emotion posts in a window)",
                                 value="" if current is None or current.min_volume is None else str(current.min_volume),
                                 key=f"em_rule_volume_{suffix}")
    cooldown = right.text_input("Cooldown (seconds)",
                                value="" if current is None or current.cooldown_s is None else str(current.cooldown_s),
                                key=f"em_rule_cooldown_{suffix}")
    windows = left.text_input("Windows (e.g. 5m,1h)", value=format_windows(current.windows) if current else "",
                              key=f"em_rule_windows_{suffix}")
    channels = right.multiselect("Channels (none = the deployment's default delivery)", ALERT_CHANNELS,
                                 default=[c for c in current.channels if c in ALERT_CHANNELS] if current else [],
                                 key=f"em_rule_channels_{suffix}")
    rule = None
    if brand.strip() and emotion.strip():
        try:
            rule = AlertRule(brand=brand, emotion=emotion, sensitivity=sensitivity,
                             min_effect=min_effect.strip() or None,
                             min_volume=_int_or_none(min_volume, "minimum volume"),
                             cooldown_s=_int_or_none(cooldown, "cooldown"), windows=parse_windows(windows),
                             channels=tuple(channels))
        except ValueError as exc:
            st.error(str(exc))
    save, remove = st.columns(2)
    if save.button("Save", key="em_rule_save", disabled=rule is None, type="primary"):
        new_version = set_rule(client, rule)
        st.success(f"Saved {rule.brand} × {rule.emotion} (rules version {new_version}); workers apply it within "
                   "seconds.")
    if current is not None and remove.button("Delete", key="em_rule_delete"):
        delete_rule(client, current.brand, current.emotion)
        st.success(f"Deleted {current.brand} × {current.emotion}.")
