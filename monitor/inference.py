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

__all__ = ["Inference", "load_inference"]

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

    async def predict(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """Probabilities ``[n, n_labels]`` computed on the inference thread, and the seconds it took."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        proba = await loop.run_in_executor(self._executor, self.predict_blocking, texts)
        return proba, time.perf_counter() - started

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
    on CPU compute grows with the padded size, so calls of 16 similar lengths beat one call of 64 mixed lengths
    (measured here: ~145 vs ~70-90 texts/s on GoEmotions dev); a GPU pads for free, so it takes the whole batch."""
    if settings.inference_batch:
        return min(settings.inference_batch, settings.max_batch)
    on_gpu = getattr(getattr(classifier, "device", None), "type", "cpu") == "cuda"
    return settings.max_batch if on_gpu else min(16, settings.max_batch)
