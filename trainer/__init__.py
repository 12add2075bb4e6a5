"""trainer: a LoRA multi-label emotion classifier on GoEmotions with class-imbalance handling.

Public interface used by the monitor::

    from trainer import load_classifier
    clf = load_classifier()              # the shipped default (trainer/default_model), or load_classifier(path)
    clf.labels, clf.thresholds, clf.version, clf.max_length, clf.device
    clf.predict_proba(["I love it"])     # float32 [n, n_labels] sigmoid probabilities

``Classifier`` is that interface as a ``typing.Protocol`` (``trainer/protocol.py``; importing it loads no torch);
``load_classifier`` returns an ``ArtifactClassifier``, which implements it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["load_classifier", "save_classifier", "make_untrained_artifact", "ArtifactClassifier", "Classifier",
           "DEFAULT_MODEL_DIR", "MPNET_MODEL_DIR", "default_model_dir"]

if TYPE_CHECKING:  # pragma: no cover
    from .artifact import (DEFAULT_MODEL_DIR, MPNET_MODEL_DIR, ArtifactClassifier, default_model_dir, load_classifier,
                           make_untrained_artifact, save_classifier)
    from .protocol import Classifier


def __getattr__(name: str):
    # Lazy: `import trainer` stays cheap (no torch/transformers) until a model is actually needed.
    if name == "Classifier":
        from .protocol import Classifier

        return Classifier
    if name in __all__:
        from . import artifact

        return getattr(artifact, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
