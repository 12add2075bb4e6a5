"""All monitor settings: one typed object, every field with a default, a description and an env var (``EM_MONITOR_*``).

Lists are given as JSON in the environment (``EM_MONITOR_ALERT_EMOTIONS='["anger","disgust"]'``), mappings too
(``EM_MONITOR_THRESHOLD_OVERRIDES='{"anger": 0.4}'``).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.post import DEFAULT_MAX_BYTES

__all__ = ["MonitorSettings"]

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
        "MPNet artifact when it ships and emotion-monitor[mpnet] is installed, else the MiniLM one)")
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
    redis_retry_initial: float = Field(
        0.2, gt=0, description="First back-off (s) when Redis or the broker is unreachable, or a batch failed"
    )
    redis_retry_max: float = Field(5.0, gt=0, description="Longest back-off (s) between those retries")
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
    alert_cooldown_ms: int = Field(15 * _MINUTE_MS, ge=0, description="No new alert for the same brand x emotion")
    webhook_url: str | None = Field(None, description="HTTP endpoint POSTed a JSON alert; empty = no webhook")
    webhook_timeout: float = Field(3.0, gt=0, description="Seconds per webhook attempt")
    webhook_retries: int = Field(3, ge=0, description="Webhook retries after the first attempt (exponential back-off)")
    webhook_backoff: float = Field(0.5, gt=0, description="First webhook back-off in seconds, doubled each retry")
    webhook_allowed_hosts: list[str] = Field(
        ["127.0.0.1", "localhost"], description="Hosts the webhook may target; others are refused and logged"
    )

    # --- operations
    metrics_port: int = Field(9108, ge=0, description="Port of /metrics (Prometheus) and /health; 0 = off")
    metrics_host: str = Field(
        "127.0.0.1", description="Address /metrics and /health listen on: loopback by default (they reveal volumes "
        "and errors); 0.0.0.0 where a scraper on another host or container must reach them (docker-compose sets it)"
    )
    log_level: str = Field("warning", description="Worker log level")

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
