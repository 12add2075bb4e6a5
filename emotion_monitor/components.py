"""How the runtime reaches the other components' settings: their env var names and the topic names of the worker.

``up`` configures the worker and the dashboard only through their documented env vars (``EM_MONITOR_*``,
``EM_DASHBOARD_*``), exactly as a deployment does; the names come from the settings classes, never typed twice.
"""

from __future__ import annotations

__all__ = ["dashboard_env", "monitor_env", "monitor_settings", "monitor_topics", "source_env"]


def monitor_settings():
    from monitor.settings import MonitorSettings

    return MonitorSettings()


def monitor_topics() -> dict[str, str]:
    """The worker's topics by role: posts, dlq, classified, alerts (from ``EM_MONITOR_*`` or their defaults)."""
    settings = monitor_settings()
    return {
        "posts": settings.posts_topic,
        "dlq": settings.dlq_topic,
        "classified": settings.classified_topic,
        "alerts": settings.alerts_topic,
    }


def _env(settings_cls, values: dict[str, object]) -> dict[str, str]:
    import json

    from emotion_monitor.config_table import env_var_names

    names = env_var_names(settings_cls)
    env = {}
    for field, value in values.items():
        if field not in names:
            raise KeyError(f"{settings_cls.__name__} has no setting {field!r}")
        env[names[field]] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return env


def monitor_env(**values: object) -> dict[str, str]:
    """Env vars that set these MonitorSettings fields, e.g. ``monitor_env(redis_url=...)``."""
    from monitor.settings import MonitorSettings

    return _env(MonitorSettings, values)


def dashboard_env(**values: object) -> dict[str, str]:
    """Env vars that set these DashboardSettings fields."""
    from dashboard.settings import DashboardSettings

    return _env(DashboardSettings, values)


def source_env(**values: object) -> dict[str, str]:
    """Env vars that set these SourceSettings fields (``emotion-monitor source ...``)."""
    from emotion_monitor.sources.settings import SourceSettings

    return _env(SourceSettings, values)
