"""Inference for the stream: the trainer's classifier behind ONE dedicated thread, so the event loop never blocks.

Torch releases the GIL inside its kernels, so while a batch runs on the inference thread the event loop keeps
fetching, writing to Redis and heartbeating the consumer group. One thread (not a pool) keeps batches in order and
the model's memory single; torch still uses every core inside that thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from monitor.settings import MonitorSettings

__all__ = ["Inference", "load_inference", "share_cores_politely"]

log = logging.getLogger(__name__)


class Inference:
    """Wraps a loaded classifier (``labels``, ``thresholds``, ``version``, ``max_length``, ``predict_proba``)."""

    def __init__(self, classifier: Any, batch_size: int, threshold_overrides: dict[str, float] | None = None):
        self.classifier = classifier
        self.labels: list[str] = list(classifier.labels)
        # the served arithmetic is part of the version: int8 scores differ slightly from the fp32 ones
        precision = getattr(classifier, "precision", "fp32")
        self.version: str = str(classifier.version) + (f"+{precision}" if precision == "int8" else "")
        self.batch_size = batch_size
        thresholds = np.asarray(classifier.thresholds, dtype=np.float32).copy()
        for emotion, value in (threshold_overrides or {}).items():
            if emotion not in self.labels:
                raise ValueError(f"threshold override for unknown emotion {emotion!r}; known: {self.labels}")
            thresholds[self.labels.index(emotion)] = float(value)
        self.thresholds = thresholds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def predict_blocking(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.classifier.predict_proba(texts, batch_size=self.batch_size), dtype=np.float32)

    def _timed(self, texts: list[str]) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        return self.predict_blocking(texts), time.perf_counter() - started

    async def predict(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """Probabilities ``[n, n_labels]`` computed on the inference thread, and the seconds the model took (not
        counting the wait behind an earlier batch on that thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def load_inference(settings: MonitorSettings, classifier: Any | None = None) -> Inference:
    """Load the classifier named by the settings (the shipped default when ``model_path`` is empty)."""
    if classifier is None:
        from trainer import load_classifier

        device = None if settings.device == "auto" else settings.device
        started = time.perf_counter()
        classifier = load_classifier(settings.model_path or None, device=device,
                                     int8=settings.cpu_precision == "int8")
        log.warning("loaded model %s (%s on %s) in %.1f s", classifier.version, classifier.precision,
                    classifier.device, time.perf_counter() - started)
    if hasattr(classifier, "max_length"):
        classifier.max_length = min(int(classifier.max_length), settings.max_tokens)
    return Inference(classifier, inference_batch(settings, classifier), settings.threshold_overrides)


def inference_batch(settings: MonitorSettings, classifier: Any) -> int:
    """Texts per model call. The classifier sorts a micro-batch by length and pads each call to its longest text;
    on CPU compute grows with the padded size, so small calls of similar lengths beat one call of mixed lengths
    (measured here, micro-batches of 64 from GoEmotions dev: fp32 234/s in calls of 16 vs 118/s in one call; int8
    845/s in calls of 32 vs 526/s in one call, see bench/inference_precision.py); a GPU pads for free, so it takes the
    whole batch."""
    if settings.inference_batch:
        return min(settings.inference_batch, settings.max_batch)
    on_gpu = getattr(getattr(classifier, "device", None), "type", "cpu") == "cuda"
    if on_gpu:
        return settings.max_batch
    return min(32 if getattr(classifier, "precision", "fp32") == "int8" else 16, settings.max_batch)


def share_cores_politely() -> None:
    """Ask OpenMP (torch's CPU threads) to sleep rather than spin between parallel regions, unless the user chose.

    Why: the worker's event loop, Faust's consumer thread, and often the broker and Redis share the cores with the
    inference thread; spinning OpenMP threads keep a core busy that those need. Measured on the 2-core machine:
    end to end 639 vs 484 posts/s at the same batch. Must run before torch is imported (OpenMP reads it once)."""
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
