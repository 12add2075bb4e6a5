"""``emotion-monitor tune-thresholds``: score an artifact's dev split in the precision it is served in and store
thresholds tuned on those outputs (the file format and why: :mod:`trainer.precision_thresholds`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .precision_thresholds import profile_path, write_precision_thresholds

__all__ = ["fit_precision_thresholds"]


def fit_precision_thresholds(folder: str | Path, precision: str = "int8", data: str | Path | None = None,
                             call_size: int = 32, progress: bool = False) -> dict:
    """Load the artifact in ``precision``, score the dataset's dev split in calls of ``call_size`` texts, tune the
    thresholds on those outputs and write ``thresholds_<precision>.json`` into the folder. Returns what it wrote.

    ``int8`` runs on this CPU; ``bf16`` needs CUDA (RuntimeError otherwise)."""
    import torch

    from .artifact import load_classifier
    from .calibrate import dev_dataset

    profile_path(folder, precision)  # refuses a precision without profiles before any loading
    if call_size < 1:
        raise ValueError(f"call_size must be >= 1, got {call_size}")
    if precision == "bf16" and not torch.cuda.is_available():
        raise RuntimeError("bf16 thresholds need a CUDA device (bf16 is what the worker serves on a GPU)")
    classifier = load_classifier(folder, device="cuda" if precision == "bf16" else "cpu", int8=precision == "int8",
                                 precision_thresholds=False)
    if classifier.precision != precision:
        raise RuntimeError(f"{folder}: loaded in {classifier.precision}, not {precision}")
    dataset, name = dev_dataset(classifier, data)
    raw = classifier.predict_proba(dataset.dev.texts, batch_size=call_size, progress=progress, calibrated=False)
    return write_precision_thresholds(folder, precision, classifier.labels, raw, np.asarray(dataset.dev.labels),
                                      classifier.raw_thresholds, call_size, f"{name} dev")
