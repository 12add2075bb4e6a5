"""Settings of the live post sources (``emotion-monitor source bluesky|mastodon|jsonl``).

One typed object, :class:`SourceSettings`; every field has a default, a description and an env var
``EM_SOURCE_<FIELD>``. Command-line options of ``emotion-monitor source ...`` override the env vars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_JETSTREAM", "SourceSettings"]

DEFAULT_JETSTREAM = "wss://jetstream2.us-east.bsky.network/subscribe"


class SourceSettings(BaseSettings):
    """Where a source writes (Kafka, its checkpoint in Redis), how it recovers, and each source's own options."""

    model_config = SettingsConfigDict(env_prefix="EM_SOURCE_", extra="ignore")

    kafka_url: str = Field(default="kafka://127.0.0.1:9092", description="Kafka the posts are sent to")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis that keeps the resume checkpoints")
    topic: str | None = Field(default=None, description="Topic to write posts to (unset: the worker's posts topic)")
    dlq_topic: str | None = Field(
        default=None, description="Dead-letter topic for unreadable jsonl lines (unset: the worker's dead-letter topic)"
    )
    brand: str | None = Field(
        default=None,
        description="Tag every post with this brand (e.g. a hashtag timeline about one brand); unset: posts go "
                    "untagged and the worker's brand queries assign brands",
    )
    checkpoint_key: str | None = Field(
        default=None,
        description="Redis key of this source's checkpoint (unset: em:source:<source>:<endpoint, instance or file>)",
    )
    checkpoint_interval_s: float = Field(
        default=0.5, gt=0, description="Seconds between checkpoint writes (only positions the broker acknowledged)"
    )
    max_in_flight: int = Field(
        default=2000, ge=1, description="Posts sent but not yet acknowledged before the source stops reading"
    )
    backoff_initial_s: float = Field(default=0.5, gt=0, description="First wait after a disconnect or failure, seconds")
    backoff_max_s: float = Field(default=30.0, gt=0, description="Longest wait between reconnects, seconds")
    idle_timeout_s: float = Field(
        default=60.0, gt=0, description="Reconnect when a stream sends nothing (not even a heartbeat) for this long"
    )
    stop_timeout_s: float = Field(
        default=10.0, gt=0, description="On SIGTERM, seconds to wait for in-flight posts to be acknowledged"
    )
    metrics_port: int = Field(
        default=9310, ge=0, le=65535, description="Port of the source's /metrics and /health endpoint (0: none)"
    )

    bluesky_endpoint: str = Field(default=DEFAULT_JETSTREAM, description="Jetstream WebSocket URL (…/subscribe)")
    bluesky_languages: list[str] = Field(
        default=[], description="Keep only posts whose langs include one of these (JSON list; empty: every language)"
    )
    bluesky_wanted_dids: list[str] = Field(
        default=[], description="Only posts by these DIDs (Jetstream's wantedDids; JSON list; empty: everyone)"
    )
    bluesky_compress: bool = Field(
        default=False, description="Ask Jetstream for zstd-compressed frames (needs bluesky_zstd_dictionary)"
    )
    bluesky_zstd_dictionary: Path | None = Field(
        default=None, description="Jetstream's zstd dictionary file (zstd_dictionary in the Jetstream repository)"
    )
    bluesky_max_message_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest WebSocket frame accepted from Jetstream, bytes"
    )

    mastodon_instance: str = Field(default="https://mastodon.social", description="Mastodon server base URL")
    mastodon_token: str | None = Field(
        default=None, description="Access token (many servers require one for their public streams)"
    )
    mastodon_timeline: Literal["public", "hashtag"] = Field(default="public", description="Timeline to stream")
    mastodon_tag: str | None = Field(default=None, description="Hashtag (without #) when mastodon_timeline=hashtag")
    mastodon_local_only: bool = Field(default=False, description="Only posts made on this server (…/local streams)")
    mastodon_backfill_pages: int = Field(
        default=25, ge=0,
        description="On (re)connect, fetch at most this many REST pages (40 posts each) newer than the checkpoint",
    )

    jsonl_poll_interval_s: float = Field(
        default=0.2, gt=0, description="With --follow, seconds between looks for new lines at the end of the file"
    )

    @field_validator("brand", mode="after")
    @classmethod
    def _normalise_brand(cls, brand: str | None) -> str | None:
        if brand is None:
            return None
        from monitor.post import normalise_brand

        return normalise_brand(brand)

    @field_validator("mastodon_instance", "bluesky_endpoint", mode="after")
    @classmethod
    def _strip_slash(cls, url: str) -> str:
        return url.rstrip("/")
