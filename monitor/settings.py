"""All monitor settings: one typed object, every field with a default, a description and an env var (``EM_MONITOR_*``).

Lists are given as JSON in the environment (``EM_MONITOR_ALERT_EMOTIONS='["anger","disgust"]'``), mappings too
(``EM_MONITOR_THRESHOLD_OVERRIDES='{"anger": 0.4}'``).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.post import DEFAULT_MAX_BYTES

__all__ = ["ALERT_CHANNELS", "MonitorSettings", "RENAMED_ENV_VARS"]

log = logging.getLogger(__name__)

# where an alert can be delivered besides Redis and the alerts topic (monitor/notify.py)
ALERT_CHANNELS = ("webhook", "slack", "teams", "email")

#: field -> the env var it had before it was renamed; read for one more release when the new one is unset
#: (the back-offs govern broker and commit retries too, not only Redis).
RENAMED_ENV_VARS = {"retry_initial_s": "EM_MONITOR_REDIS_RETRY_INITIAL", "retry_max_s": "EM_MONITOR_REDIS_RETRY_MAX"}

_MINUTE_MS = 60_000
_DAY_MS = 24 * 60 * _MINUTE_MS


class MonitorSettings(BaseSettings):
    """Settings of the worker and of replay (``EM_MONITOR_`` + the upper-cased field name)."""

    model_config = SettingsConfigDict(env_prefix="EM_MONITOR_", extra="ignore")

    # --- connections and topics
    broker_url: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap URL (kafka://host:port)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis (with TimeSeries) URL")
    posts_topic: str = Field("posts", description="Input topic of JSON posts")
    dlq_topic: str = Field("posts.dlq", description="Dead-letter topic: rejected records with reason + original bytes")
    classified_topic: str = Field("posts.classified", description="Output topic: post + scores + labels + model")
    alerts_topic: str = Field("alerts", description="Output topic of spike alerts")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the input topic when the worker creates it")
    group_id: str = Field("emotion-monitor", description="Consumer group (Faust app id) shared by all workers")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=5000, description="Longest a fetch waits for data (tansu always waits this long; see faust_tuning)"
    )
    consumer: Literal["batch", "faust"] = Field(
        "batch", description="How the worker reads the posts topic: batch = micro-batches straight from an aiokafka "
        "consumer (getmany) inside the Faust app; faust = a Faust agent's stream (noack_take), whose per-event "
        "machinery alone costs ~130 us of CPU per post (bench/consume_ceiling.py). Same delivery guarantees"
    )

    # --- batching and inference
    max_batch: int = Field(
        256, ge=1, description="Micro-batch size: most posts taken from Kafka and processed together (a partial batch "
        "goes after max_wait). Large batches sort by length better and spread per-batch costs: on 2 CPU cores end to "
        "end was 95% of the bare model at 256 vs 62% at 64"
    )
    max_wait: float = Field(0.25, gt=0, description="Seconds to wait for a micro-batch to fill before running it")
    inference_batch: int = Field(
        0, ge=0, description="Texts per model call inside a micro-batch, length-sorted (0 = auto: on CPU 32 in int8, "
        "16 in fp32; max_batch on GPU). On CPU, small length-sorted calls pad far less than one call of max_batch"
    )
    pipeline_depth: int = Field(
        2, ge=1, description="Micro-batches in flight: with 2, one writes to Redis/Kafka while the next is classified "
        "(acks stay in order); 1 = one batch at a time"
    )
    inference_isolation: Literal["process", "thread"] = Field(
        "process", description="Where the model runs: process = one child process (no GIL shared with the event "
        "loop, which slowed a GPU model ~6x in-process); thread = a thread of the worker (less memory, one process)"
    )
    max_tokens: int = Field(128, ge=8, description="Token limit per text; longer texts are truncated")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Inference device; auto = cuda when present")
    cpu_precision: Literal["int8", "fp32"] = Field(
        "int8", description="CPU arithmetic: int8 = dynamic per-channel int8 Linear layers, ~3x the posts/s of fp32 "
        "within 0.01 test macro-F1 (bench/inference_precision.py); fp32 = exactly the trained model. CUDA runs bf16"
    )
    model_path: str | None = Field(
        None, description="Model artifact folder; empty = the trainer's shipped default for the device (on CUDA the "
        "MPNet artifact, trainer/mpnet_model, when emotion-monitor[mpnet] is installed; else the MiniLM one)")
    model_loader: str = Field(
        "", description="Import path 'module:function' of a classifier loader used instead of the trainer's "
        "artifact loader, called as function(model_path, device, int8) in the inference process; empty = the "
        "trainer's. For models packaged elsewhere and for benchmarks (bench/null_model.py measures the pipeline "
        "without a model)")
    threshold_overrides: dict[str, float] = Field(
        default_factory=dict, description="Per-emotion decision thresholds replacing the model's tuned ones"
    )
    max_post_bytes: int = Field(DEFAULT_MAX_BYTES, ge=256, description="Records larger than this go to the DLQ")

    # --- brand matching (monitor.brands)
    brand_matching: Literal["untagged", "all", "off"] = Field(
        "untagged", description="Brand queries at ingest: untagged = posts without brand/brands get the brands whose "
        "query they match (tagged posts keep their tags); all = tags plus matches; off = every post must be tagged. "
        "A post matching nothing is not stored, only counted (em:unmatched, em_unmatched_total)"
    )
    brand_reload_seconds: float = Field(
        2.0, gt=0, description="How often a worker checks the brand registry's version and reloads it when changed"
    )

    # --- Redis storage
    raw_bucket_ms: int = Field(
        1000, ge=1, description="Raw samples are summed per bucket of this many ms (1 = one sample per post's "
        "millisecond): fewer Redis writes and samples under load; the dashboard and alerts read sums"
    )
    retention_raw_ms: int = Field(
        7 * _DAY_MS, ge=1, description="Retention of raw samples (ms, counted back from a series' newest sample; "
        "finite, so that idempotency markers can outlive it)"
    )
    retention_1m_ms: int = Field(30 * _DAY_MS, ge=0, description="Retention of the 1-minute tier (ms; 0 = forever)")
    retention_1h_ms: int = Field(400 * _DAY_MS, ge=0, description="Retention of the 1-hour tier (ms; 0 = forever)")
    seen_ttl_ms: int = Field(
        7 * _DAY_MS, ge=_MINUTE_MS, description="Lifetime of a post's idempotency marker; must be >= raw retention "
        "(checked at start). replay --mode fill refuses records older than it (the marker horizon)"
    )
    # --- time policy and brand limits (monitor/timepolicy.py, monitor/store.py)
    max_future_ms: int = Field(
        5 * _MINUTE_MS, ge=0, description="A post whose created_at is more than this ahead of the worker's clock goes "
        "to the DLQ (future_timestamp): one far-future sample would make Redis trim the brand's history"
    )
    min_created_at_ms: int = Field(
        946_684_800_000, ge=0, description="created_at before this (epoch ms; default 2000-01-01) is invalid_value: "
        "epoch seconds sent as milliseconds"
    )
    max_brands: int = Field(
        10_000, ge=0, description="Most brands Redis holds (each costs ~219 series); a post naming a new brand beyond "
        "it goes to the DLQ (brand_limit); 0 = no limit"
    )
    max_new_brands_per_minute: int = Field(
        600, ge=0, description="Most new brands admitted per minute, all workers together; beyond it -> DLQ "
        "(brand_limit); 0 = no limit"
    )
    brand_allow_list: list[str] = Field(
        default_factory=list, description="If set, the only brands counted (normalised names); others -> DLQ "
        "(brand_limit)"
    )
    recent_posts_per_brand: int = Field(
        10_000, ge=1, description="Most recent classified posts kept per brand (a memory cap: ~1 KB each)"
    )
    recent_posts_max_age_ms: int = Field(
        7 * _DAY_MS, ge=0, description="Recent posts older than this (before the brand's newest) are dropped too, so "
        "the store holds the last N days or the cap, whichever is less (ms; 0 = count cap only)"
    )
    retry_initial_s: float = Field(
        0.2, gt=0, description="First back-off (s) when Redis or the broker is unreachable, a batch failed or a commit "
        "failed (was EM_MONITOR_REDIS_RETRY_INITIAL, still read with a warning)"
    )
    retry_max_s: float = Field(
        5.0, gt=0, description="Longest back-off (s) between those retries (was EM_MONITOR_REDIS_RETRY_MAX, still read "
        "with a warning)"
    )
    poison_retries: int = Field(
        3, ge=1, description="Attempts at a batch failing for another reason than an unreachable Redis or broker "
        "(e.g. a text that crashes the model) before it is bisected; records failing alone go to the DLQ "
        "(reason processing_failed). Outages are retried forever, never dead-lettered"
    )

    # --- alerts
    alert_emotions: list[str] = Field(["anger"], description="Emotions watched for spikes, per brand")
    alert_window_ms: int = Field(5 * _MINUTE_MS, ge=1000, description="Current window compared with the baseline")
    alert_baseline_ms: int = Field(60 * _MINUTE_MS, ge=1000, description="Rolling baseline just before the window")
    alert_min_volume: int = Field(10, ge=1, description="Fewest posts with the emotion in the window to alert")
    alert_min_baseline_posts: int = Field(20, ge=1, description="Fewest baseline posts needed to judge a spike")
    alert_ratio: float = Field(3.0, gt=1, description="Spike when window share >= ratio x baseline share")
    alert_min_share: float = Field(0.2, ge=0, le=1, description="... and the window share is at least this")
    alert_evidence_posts: int = Field(
        20, ge=0, description="Posts snapshotted into each alert as its evidence (the window's highest scores for the "
        "alert's emotion), so they outlive the recent-posts store; 0 = none"
    )
    alert_cooldown_ms: int = Field(
        15 * _MINUTE_MS, ge=0, description="No new alert (open) or update for the same brand x emotion within this "
        "after the last one; a resolution is not held back"
    )
    alert_detector: Literal["statistical", "threshold"] = Field(
        "statistical", description="Spike detector: statistical = a one-sided beta-binomial test of the window's "
        "share against its baseline with a false-alert budget (monitor/detector.py); threshold = the older fixed rule "
        "(alert_ratio, alert_min_share), kept for comparison"
    )
    alert_sensitivity: Literal["low", "normal", "high"] = Field(
        "normal", description="Default false-alert budget of the statistical detector per brand x emotion x week: "
        "low 0.25, normal 1, high 4 (each window's alpha spends its share on the expected upcrossings of a "
        "moving-window test, monitor/detector.py); alert rules may override it"
    )
    alert_min_effect: str = Field(
        "at least 1.5x and +2 points", description="Default minimum effect, in words: the window share must be at "
        "least this ratio and this many points above the baseline share ('at least 2x', '+5 points')"
    )
    alert_windows_ms: list[int] = Field(
        [5 * _MINUTE_MS, 15 * _MINUTE_MS, 30 * _MINUTE_MS, 60 * _MINUTE_MS], description="Windows of the "
        "statistical detector (whole minutes): 5 min for sudden spikes, 15 and 30 min for 10-60 min spikes at low "
        "volume, 1 h for slow build-ups; they share the false-alert budget evenly; the rolling baseline of a window "
        "W is max(alert_baseline_ms, 2 W)"
    )
    alert_baseline: Literal["auto", "seasonal", "rolling"] = Field(
        "auto", description="Baseline of the statistical detector: seasonal = median share of the same clock hour on "
        "previous days (or weeks, with 3+ of them); rolling = the span just before the window; auto = seasonal when "
        "alert_seasonal_min_days such spans exist, else rolling"
    )
    alert_baseline_halflife_ms: int = Field(
        0, ge=0, description="Rolling baseline of the statistical detector: 0 = the flat share of the "
        "alert_baseline_ms (2 W for a window W) before the window; > 0 = exponentially weighted over the minutes "
        "before the window with this half-life (effective posts from the weights, monitor/detector.py ewma_counts)"
    )
    alert_wander: Literal["lognormal", "beta"] = Field(
        "lognormal", description="Law of an emotion share's wander beyond binomial noise in the statistical "
        "detector's null: lognormal = multiplicative (right-skewed, heavier upper tail), beta = a beta of the same "
        "mean and variance (monitor/detector.py null_sf)"
    )
    alert_daily_bias_min_window_ms: int = Field(
        0, ge=0, description="Windows of the statistical detector at least this long expect their share to differ "
        "from their rolling baseline as it did at the same clock time on the previous 3 days (median; the daily "
        "rhythm a lagging baseline misses, monitor/detector.py daily_bias); 0 = no window"
    )
    alert_seasonal_days: int = Field(7, ge=1, le=28, description="Previous days (and weeks) the seasonal baseline "
                                     "looks back")
    alert_seasonal_min_days: int = Field(3, ge=1, description="Fewest earlier spans with enough posts for a "
                                         "seasonal baseline")
    alert_detect_interval_seconds: float = Field(
        5.0, ge=0, description="The statistical detector re-runs for a brand x emotion when a batch brings a new "
        "minute (event time) or the alert rules changed, else at most this often (wall clock): under sustained load "
        "most batches skip its Redis reads and test. A skipped detection runs once the interval passed (a timer "
        "every half interval), also when no post follows, and at shutdown; 0 = detect on every batch"
    )
    alert_rules_reload_seconds: float = Field(
        2.0, gt=0, description="How often a worker checks the alert rules' version (em:alert_rules:version) and "
        "reloads them when changed"
    )
    webhook_url: str | None = Field(None, description="HTTP endpoint POSTed a JSON alert (the webhook channel); empty "
                                    "= no webhook")
    webhook_timeout: float = Field(3.0, gt=0, description="Seconds per webhook attempt")
    webhook_retries: int = Field(3, ge=0, description="Webhook retries after the first attempt (exponential back-off)")
    webhook_backoff: float = Field(0.5, gt=0, description="First webhook back-off in seconds, doubled each retry")
    webhook_allowed_hosts: list[str] = Field(
        ["127.0.0.1", "localhost"], description="Hosts the webhook, Slack and Teams channels may target; others are "
        "refused and logged"
    )
    # --- alert lifecycle, explanation and delivery (monitor/alerts.py, monitor/explain.py, monitor/notify.py)
    alert_resolve_margin: float = Field(
        0.02, ge=0, le=1, description="An open alert's brand x emotion counts as back to baseline when its window "
        "share is at most the baseline share plus this (absolute share, 0.02 = 2 points)"
    )
    alert_resolve_evaluations: int = Field(
        3, ge=1, description="Consecutive evaluations (each at a newer post time) back at baseline that resolve an "
        "open alert; any evaluation above it starts the count again"
    )
    alert_explain_terms: int = Field(
        10, ge=0, description="Words/hashtags over-represented in the window vs the baseline carried by each alert "
        "(weighted log-odds, informative Dirichlet prior); 0 = none"
    )
    alert_explain_posts: int = Field(
        2000, ge=1, description="Most posts read from the recent-posts store per side (window, baseline; the newest) "
        "to pick an alert's top posts and terms: bounds the cost of explaining a busy brand"
    )
    alert_channels: list[str] = Field(
        list(ALERT_CHANNELS), description="Default delivery channels of an alert (a rule's channels replace them): "
        "webhook, slack, teams, email. A channel without its URL / SMTP host is skipped. Redis and the alerts topic "
        "always get every alert"
    )
    alert_drain_timeout: float = Field(
        10.0, ge=0, description="At shutdown, seconds the worker waits for alert deliveries in flight before it "
        "cancels them"
    )
    dashboard_url: str | None = Field(
        None, description="The dashboard's address (e.g. https://monitor.example.com/); alert messages link to the "
        "alert's brand, emotion and time there. Empty = no link"
    )
    slack_webhook_url: str | None = Field(
        None, description="Slack incoming-webhook URL (Block Kit message); its host must be in "
        "EM_MONITOR_WEBHOOK_ALLOWED_HOSTS (hooks.slack.com). Empty = no Slack"
    )
    teams_webhook_url: str | None = Field(
        None, description="Microsoft Teams incoming-webhook / Workflows URL (Adaptive Card); its host must be in "
        "EM_MONITOR_WEBHOOK_ALLOWED_HOSTS. Empty = no Teams"
    )
    smtp_host: str | None = Field(None, description="SMTP server for alert emails; empty = no email")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port (587 with STARTTLS is usual)")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS before logging in")
    smtp_user: str | None = Field(None, description="SMTP login user; empty = no login")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password")
    smtp_from: str = Field("emotion-monitor@localhost", description="Sender address of alert emails")
    smtp_to: list[str] = Field(default_factory=list, description="Recipients of alert emails (JSON list)")
    smtp_timeout: float = Field(10.0, gt=0, description="Seconds per SMTP attempt (retried like the webhook)")

    # --- stream label priors (monitor.priors; derived estimates, never part of the exactly-once counts)
    prior_tracking: bool = Field(
        True, description="Estimate the stream's label priors (EM, Saerens et al. 2002) and a prevalence-corrected "
        "share per emotion (adjusted classify-and-count) over a rolling window, per brand with enough volume and for "
        "all brands together, written as em:ts:{brand|_all}:{emotion}:prior / :adjusted series. Needs a model "
        "artifact with label_priors, tpr and fpr (emotion-monitor calibrate); without them nothing is computed"
    )
    prior_window_ms: int = Field(
        60 * _MINUTE_MS, ge=_MINUTE_MS, description="Rolling window (ms, whole minutes of created_at) the prior and "
        "adjusted-share estimates cover"
    )
    prior_min_posts: int = Field(
        500, ge=1, description="Fewest posts of a brand in the window for its own estimate (fewer: the brand is only "
        "in the all-brands estimate); also the minimum for the all-brands estimate"
    )
    prior_update_ms: int = Field(
        10_000, ge=0, description="How often (ms of wall time) a worker re-estimates and writes the prior series; "
        "0 = after every batch"
    )

    # --- operations
    metrics_port: int = Field(9108, ge=0, description="Port of /metrics (Prometheus) and /health; 0 = off")
    metrics_host: str = Field(
        "127.0.0.1", description="Address /metrics and /health listen on: loopback by default (they reveal volumes "
        "and errors); 0.0.0.0 where a scraper on another host or container must reach them (docker-compose sets it)"
    )
    log_level: str = Field("warning", description="Worker log level")

    @model_validator(mode="before")
    @classmethod
    def _renamed_env_vars(cls, data: Any) -> Any:
        """Env names of renamed fields still work for one release: used (with a warning) when the new one is unset."""
        if not isinstance(data, dict):
            return data
        for field, old in RENAMED_ENV_VARS.items():
            if old not in os.environ:
                continue
            new = f"EM_MONITOR_{field.upper()}"
            if field not in data:
                data = {**data, field: os.environ[old]}
                log.warning("%s is deprecated and will be removed in the next release: use %s (read it now)", old, new)
            elif new in os.environ:
                log.warning("%s is deprecated and ignored: %s is set too and wins", old, new)
        return data

    @field_validator("brand_allow_list")
    @classmethod
    def _normalise_allowed(cls, value: list[str]) -> list[str]:
        from monitor.post import normalise_brand

        return [normalise_brand(item) for item in value]

    @model_validator(mode="after")
    def _markers_outlive_raw(self) -> "MonitorSettings":
        # a post may be delivered again (uncommitted offsets after a crash, replay fill) as long as its samples are
        # kept: its marker must still be there, or it is counted twice (docs/monitor.md, "Time policy")
        if self.seen_ttl_ms < self.retention_raw_ms:
            raise ValueError(
                f"seen_ttl_ms ({self.seen_ttl_ms}) is shorter than retention_raw_ms ({self.retention_raw_ms}): a post "
                "redelivered after its marker expired would be counted twice; raise EM_MONITOR_SEEN_TTL_MS"
            )
        if self.seen_ttl_ms <= self.max_future_ms:
            raise ValueError(f"seen_ttl_ms ({self.seen_ttl_ms}) must exceed max_future_ms ({self.max_future_ms})")
        return self

    @field_validator("alert_channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        channels = [item.strip().lower() for item in value if item.strip()]
        unknown = [item for item in channels if item not in ALERT_CHANNELS]
        if unknown:
            raise ValueError(f"unknown alert channel(s) {unknown}; use {', '.join(ALERT_CHANNELS)}")
        return channels

    @field_validator("alert_min_effect")
    @classmethod
    def _effect_parses(cls, value: str) -> str:
        from monitor.detector import parse_min_effect

        parse_min_effect(value)
        return value

    @field_validator("alert_windows_ms")
    @classmethod
    def _whole_minutes(cls, value: list[int]) -> list[int]:
        if not value or any(ms <= 0 or ms % _MINUTE_MS for ms in value):
            raise ValueError("alert windows must be whole minutes (multiples of 60000 ms), at least one")
        return sorted(set(value))

    @field_validator("alert_emotions")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [item.strip().lower() for item in value if item.strip()]

    def broker_host_port(self) -> str:
        """``host:port`` list for aiokafka, from ``kafka://host:port[;kafka://...]``."""
        hosts = []
        for part in self.broker_url.replace(";", ",").split(","):
            parsed = urlparse(part.strip() if "://" in part else f"kafka://{part.strip()}")
            hosts.append(f"{parsed.hostname}:{parsed.port or 9092}")
        return ",".join(hosts)
