"""Settings of the local runtime (``emotion-monitor up``, the demo source and ``emotion-monitor produce``).

One typed object, :class:`UpSettings`; every field has a default, a description and an env var ``EM_UP_<FIELD>``.
Command-line flags of ``up`` and ``produce`` override the env vars, which override the defaults.

The worker and the dashboard keep their own settings (``EM_MONITOR_*``, ``EM_DASHBOARD_*``); ``up`` passes them the
broker and Redis URLs it started through those env vars, and leaves every other ``EM_MONITOR_*`` / ``EM_DASHBOARD_*``
variable of its own environment untouched, so they can be tuned the same way as in a deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["UpSettings"]


class UpSettings(BaseSettings):
    """The embedded runtime: which servers to start or reuse, the demo traffic, and where things are kept."""

    model_config = SettingsConfigDict(env_prefix="EM_UP_", extra="ignore")

    kafka_url: str | None = Field(
        default=None,
        description="URL of an existing Kafka (kafka://host:port[,host:port]); unset: `up` starts the tansu broker",
    )
    redis_url: str | None = Field(
        default=None,
        description="URL of an existing Redis with TimeSeries (redis://host:port/db); unset: `up` starts Redis Stack",
    )
    kafka_port: int = Field(default=9092, ge=0, le=65535, description="Port of the broker `up` starts (0: a free port)")
    redis_port: int = Field(default=6379, ge=0, le=65535, description="Port of the Redis `up` starts (0: a free port)")
    dashboard_port: int = Field(default=8501, ge=0, le=65535, description="Port of the dashboard (0: a free port)")
    partitions: int = Field(
        default=4, ge=1, description="Partitions of the posts topic when `up` creates it (raised to `workers` if fewer)"
    )
    workers: int = Field(
        default=1, ge=1,
        description="Worker processes `up` starts in one consumer group; an existing posts topic with fewer partitions "
                    "leaves the extra ones idle",
    )
    persist_dir: Path | None = Field(
        default=None,
        description="Keep broker and Redis data in this folder across restarts of `up` (unset: memory only, lost on stop)",
    )
    run_dir: Path = Field(
        default=Path.home() / ".cache" / "emotion-monitor" / "run",
        description="Folder for the logs of the servers and children of `up` and its run.json (URLs and pids)",
    )
    s3rver_dir: Path = Field(
        default=Path.home() / ".cache" / "emotion-monitor" / "s3rver",
        description="Where `up --persist` installs the on-disk S3 server s3rver (npm) for the broker's s3 storage",
    )
    model_path: Path | None = Field(
        default=None,
        description="Model artifact folder the workers load (unset: EM_MONITOR_MODEL_PATH when set, else the trainer's "
                    "shipped model)",
    )
    demo: bool = Field(default=True, description="Run the demo post source (GoEmotions test texts for fictional brands)")
    source: Literal["demo", "bluesky"] = Field(
        default="demo",
        description="Post source `up` runs: the demo, or the live Bluesky source (EM_SOURCE_* settings); bluesky falls "
                    "back to the demo when its Jetstream endpoint cannot be reached",
    )
    demo_data_dir: Path | None = Field(
        default=None,
        description="GoEmotions folder whose test.tsv the demo replays (unset: the 1,800-text GoEmotions sample "
                    "shipped in the package, emotion_monitor/data/goemotions_sample)",
    )
    demo_brands: list[str] = Field(
        default=["acme coffee", "nimbus air", "velora"],
        description="Fictional brands of the demo posts (JSON list in the env var)",
    )
    demo_rate: float = Field(default=10.0, gt=0, description="Mean demo posts per second at the daily peak (Poisson)")
    demo_day_pattern: bool = Field(
        default=True, description="Scale the demo rate by the hour of day (quiet at night, busy in the evening)"
    )
    demo_spike_brand: str = Field(default="nimbus air", description="Brand that gets the injected anger spike")
    demo_spike_after_s: float = Field(default=30.0, ge=0, description="Seconds after the demo starts that the spike begins")
    demo_spike_duration_s: float = Field(default=40.0, gt=0, description="How long the anger spike lasts, seconds")
    demo_spike_rate: float = Field(default=6.0, gt=0, description="Extra angry posts per second during the spike")
    demo_spike_every_s: float = Field(
        default=0.0, ge=0, description="Repeat the spike every this many seconds (0: once per demo run)"
    )
    status_interval_s: float = Field(default=2.0, gt=0, description="Seconds between refreshes of the live status line")
    start_timeout_s: float = Field(
        default=180.0, gt=0, description="Seconds to wait for the worker and dashboard to come up before giving up"
    )
    stop_timeout_s: float = Field(
        default=20.0, gt=0, description="Seconds a child gets after SIGTERM to finish its batch before SIGKILL"
    )

    @field_validator("model_path", mode="after")
    @classmethod
    def _model_folder_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():  # fail before anything starts, not in the worker's log
            raise ValueError(f"model_path {str(path)!r} is not a folder (a model artifact folder is needed)")
        return path

    @field_validator("demo_brands", mode="after")
    @classmethod
    def _brands_not_empty(cls, brands: list[str]) -> list[str]:
        brands = [" ".join(brand.split()).lower() for brand in brands]  # as the worker normalises them
        if not brands or not all(brands):
            raise ValueError("demo_brands must name at least one brand, none empty")
        return brands

    @field_validator("demo_spike_brand", mode="after")
    @classmethod
    def _normalise_spike_brand(cls, brand: str) -> str:
        return " ".join(brand.split()).lower()

    @model_validator(mode="after")
    def _spike_brand_is_a_demo_brand(self) -> "UpSettings":
        if self.demo_spike_brand not in self.demo_brands:
            raise ValueError(f"demo_spike_brand {self.demo_spike_brand!r} is not one of demo_brands {self.demo_brands}")
        return self
