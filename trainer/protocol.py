"""The classifier interface the rest of the project relies on (the worker, replay, the bench, evaluation).

A :class:`Classifier` is anything with these attributes and ``predict_proba``; the trainer's artifact
(:class:`trainer.artifact.ArtifactClassifier`, what :func:`trainer.load_classifier` returns) is one. It is a
``typing.Protocol``: types only, nothing to inherit, and importing it costs no torch.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Classifier"]


@runtime_checkable
class Classifier(Protocol):
    """A multi-label emotion classifier.

    ``labels`` name the output columns in order; ``thresholds`` (float32, one per label) turn probabilities into
    labels; ``version`` identifies the weights (it is stored with every score); texts longer than ``max_length``
    tokens are truncated, never rejected (the worker lowers it to its token limit); ``precision`` is the arithmetic
    the model runs in (``fp32``, ``bf16`` or ``int8``) and ``device`` where (a ``torch.device``)."""

    labels: list[str]
    thresholds: np.ndarray
    version: str
    max_length: int

    @property
    def precision(self) -> str: ...

    @property
    def device(self) -> Any: ...

    def predict_proba(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Sigmoid probability per label, ``float32 [len(texts), len(labels)]``, rows in input order."""
        ...
