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
    from .data import load_dataset_splits
    from .settings import default_data_dir

    profile_path(folder, precision)  # refuses a precision without profiles before any loading
    if call_size < 1:
        raise ValueError(f"call_size must be >= 1, got {call_size}")
    if precision == "bf16" and not torch.cuda.is_available():
        raise RuntimeError("bf16 thresholds need a CUDA device (bf16 is what the worker serves on a GPU)")
    classifier = load_classifier(folder, device="cuda" if precision == "bf16" else "cpu", int8=precision == "int8",
                                 precision_thresholds=False)
    if classifier.precision != precision:
        raise RuntimeError(f"{folder}: loaded in {classifier.precision}, not {precision}")
    source = str(data or classifier.config.get("data") or default_data_dir())
    if not data and not Path(source).exists():
        source = str(default_data_dir())
    dataset = load_dataset_splits(source, classifier.config.get("taxonomy", "goemotions"))
    if dataset.labels != classifier.labels:
        raise ValueError(f"model labels {classifier.labels} differ from the dataset's {dataset.labels}")
    raw = classifier.predict_proba(dataset.dev.texts, batch_size=call_size, progress=progress, calibrated=False)
    return write_precision_thresholds(folder, precision, classifier.labels, raw, np.asarray(dataset.dev.labels),
                                      classifier.raw_thresholds, call_size, f"{Path(source).name} dev")
