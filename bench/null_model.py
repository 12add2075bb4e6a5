"""A stand-in classifier for benchmarks: fixed probabilities, returned at once. Never part of the product.

``bench/throughput.py --model null`` and ``bench/sources.py --model null`` start the real worker with
``EM_MONITOR_MODEL_LOADER=bench.null_model:load_classifier`` (and the repository root on ``PYTHONPATH``), so the
worker's inference child loads this instead of a model and every figure measures the pipeline's own cost: Kafka,
parsing, the inference-process round trip, the Redis script, the produced records and the commits.

Labels and thresholds are the shipped model's (read from its artifact folder, no weights loaded), so alert emotions,
group series and the Redis layout are exactly what the real worker writes. Every text gets the same row: a few
emotions above their thresholds, the rest below, so count and score series are both written.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

_DEFAULT_ARTIFACT = Path(__file__).resolve().parents[1] / "trainer" / "default_model"


class NullClassifier:
    """The classifier interface the worker uses (``labels``, ``thresholds``, ``version``, ``precision``, ``device``,
    ``max_length``, ``predict_proba``), without a model."""

    precision = "null"
    max_length = 128

    def __init__(self, folder: Path):
        self.labels = json.loads((folder / "labels.json").read_text())
        threshold_map = json.loads((folder / "thresholds.json").read_text())
        self.thresholds = np.array([threshold_map[name] for name in self.labels], dtype=np.float32)
        self.version = "null-model"
        self.device = SimpleNamespace(type="cpu")
        # every third emotion a little above its threshold, the others well below
        above = np.arange(len(self.labels)) % 3 == 0
        self._row = np.where(above, np.minimum(self.thresholds + 0.05, 0.99), self.thresholds * 0.5).astype(np.float32)

    def predict_proba(self, texts, batch_size: int = 32) -> np.ndarray:
        return np.broadcast_to(self._row, (len(texts), len(self._row)))


def load_classifier(path=None, device=None, int8: bool = False) -> NullClassifier:
    """The loader signature ``EM_MONITOR_MODEL_LOADER`` calls; ``path`` is the artifact whose labels to use."""
    folder = Path(path) if path else _DEFAULT_ARTIFACT
    if not (folder / "labels.json").exists():
        folder = _DEFAULT_ARTIFACT
    return NullClassifier(folder)
