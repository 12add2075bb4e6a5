"""Decision thresholds tuned for the arithmetic a model is served in (``thresholds_<precision>.json``).

Why: ``thresholds.json`` is tuned on dev with fp32 outputs, but the CPU worker serves the backbone in dynamic int8
(activation scales per model call), whose sigmoid outputs sit systematically off the fp32 ones. At the fp32 thresholds
the shipped MiniLM lost 0.014 dev and 0.006 test macro-F1 in int8; thresholds re-tuned on dev with the int8 outputs
themselves, in the worker's calls of 32 texts, won that back and more on test (``bench/student_select.py``). The same
holds for any precision a model is served in (bf16 on a GPU), so the file is per precision.

Layout of ``thresholds_<precision>.json`` (everything per label, in ``labels.json`` order; thresholds on the *raw*
sigmoid scale like ``thresholds.json``)::

    precision         "int8" (or "bf16")
    call_size         texts per model call the outputs were computed in (int8 scales are per call)
    fitted_on         {"data", "rows", "date"}
    dev_macro_f1      {"at_thresholds_json": ..., "tuned": ...} on the dev outputs of this precision
    thresholds        per-label raw thresholds, tuned on dev for best F1 (``trainer.metrics.tune_thresholds``)
    tpr, fpr          rates of that rule on dev (Laplace-smoothed), for the worker's prevalence correction
    roc               {"grid", "tpr", "fpr"}: the rule's rates at every grid threshold on these outputs

``trainer.artifact.load_classifier`` uses the file of the precision it really loads (``ArtifactClassifier.precision``)
when the folder has one; fp32 always uses ``thresholds.json``. ``emotion-monitor tune-thresholds`` writes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["PRECISIONS", "profile_path", "fit_precision_thresholds", "load_precision_thresholds"]

PRECISIONS = ("int8", "bf16")


def profile_path(folder: str | Path, precision: str) -> Path:
    if precision not in PRECISIONS:
        raise ValueError(f"no threshold profile for precision {precision!r} (one of {', '.join(PRECISIONS)})")
    return Path(folder) / f"thresholds_{precision}.json"


def fit_precision_thresholds(folder: str | Path, precision: str = "int8", data: str | Path | None = None,
                             call_size: int = 32, progress: bool = False) -> dict:
    """Load the artifact in ``precision``, score the dataset's dev split in calls of ``call_size`` texts, tune the
    thresholds on those outputs and write ``thresholds_<precision>.json`` into the folder. Returns what it wrote.

    ``int8`` runs on this CPU; ``bf16`` needs CUDA (RuntimeError otherwise)."""
    import torch

    from .adaptation import rates_at_thresholds
    from .artifact import load_classifier
    from .calibration import ROC_GRID, _roc
    from .data import load_dataset_splits
    from .metrics import macro_f1, tune_thresholds
    from .settings import default_data_dir

    path = profile_path(folder, precision)
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
    y = np.asarray(dataset.dev.labels, dtype=np.uint8)
    tuned = tune_thresholds(y, raw)
    tpr, fpr = rates_at_thresholds(raw, y, tuned, smoothing=0.5)
    roc_tpr, roc_fpr = _roc(raw, y)
    labels = classifier.labels

    def per_label(values, digits):
        return {name: round(float(v), digits) for name, v in zip(labels, values)}

    record = {"precision": precision, "call_size": int(call_size),
              "fitted_on": {"data": f"{Path(source).name} dev", "rows": len(y),
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
              "dev_macro_f1": {"at_thresholds_json": round(macro_f1(y, raw >= classifier.raw_thresholds), 4),
                               "tuned": round(macro_f1(y, raw >= tuned), 4)},
              "thresholds": per_label(tuned, 4), "tpr": per_label(tpr, 4), "fpr": per_label(fpr, 5),
              "roc": {"grid": [float(g) for g in ROC_GRID],
                      "tpr": {n: [round(float(v), 4) for v in row] for n, row in zip(labels, roc_tpr)},
                      "fpr": {n: [round(float(v), 5) for v in row] for n, row in zip(labels, roc_fpr)}}}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def load_precision_thresholds(folder: str | Path, precision: str, labels: list[str]) -> dict | None:
    """``{"thresholds", "tpr", "fpr", "roc_tpr", "roc_fpr", "roc_grid"}`` (numpy, ``labels`` order) from the folder's
    profile for ``precision``, or None when it has none (or the precision has no profiles: fp32). A file that does
    not cover every label fails naming the file and the label."""
    if precision not in PRECISIONS:
        return None
    path = profile_path(folder, precision)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON file: {exc}") from None
    if data.get("precision") != precision:
        raise ValueError(f"{path}: made for precision {data.get('precision')!r}, not {precision!r}")

    def column(values) -> np.ndarray:
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a per-label field is missing")
        missing = [name for name in labels if name not in values]
        if missing:
            raise ValueError(f"{path}: no value for {missing}")
        return np.asarray([values[name] for name in labels], dtype=np.float64)

    roc = data.get("roc") or {}
    return {"thresholds": column(data.get("thresholds")).astype(np.float32), "tpr": column(data.get("tpr")),
            "fpr": column(data.get("fpr")), "roc_tpr": column(roc.get("tpr")), "roc_fpr": column(roc.get("fpr")),
            "roc_grid": np.asarray(roc.get("grid", []), dtype=np.float64)}
