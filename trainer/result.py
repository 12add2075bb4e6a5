"""What a training run returns: stage 1 (:func:`trainer.trainer.train`) and stage 2 alone
(:func:`trainer.stage2.stage2_from_artifact`) both give a :class:`TrainResult`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """``path``: the artifact folder written; ``metrics``: what its ``metrics.json`` holds (dev/test figures, tuned
    thresholds, ``loss_history``); ``config``: what its ``config.json`` holds; ``seconds_per_epoch``: stage-1 seconds
    per full epoch of the training split (None for a stage-2-only run, which trains no encoder)."""

    path: Path
    metrics: dict
    config: dict
    seconds_per_epoch: float | None = None

    @property
    def loss_history(self) -> list[dict]:
        """Stage-1 training loss, ``[{"step": ..., "loss": ...}, ...]`` (a stage-2 run keeps its source's)."""
        return self.metrics.get("loss_history", [])
