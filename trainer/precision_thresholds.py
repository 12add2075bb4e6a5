"""Decision thresholds tuned for the arithmetic a model is served in (``thresholds_<precision>.json``).

Why: ``thresholds.json`` is tuned on dev with fp32 outputs, but the CPU worker serves the backbone in dynamic int8
(activation scales per model call), whose sigmoid outputs sit systematically off the fp32 ones. At the fp32 thresholds
the shipped MiniLM lost 0.014 dev and 0.006 test macro-F1 in int8; thresholds re-tuned on dev with the int8 outputs
themselves, in the worker's calls of 32 texts, won that back and more on test: 0.5076 -> 0.5200 (``emotion-monitor
evaluate --int8``). The same holds for any precision a model is served in (bf16 on a GPU), so the file is per
precision.

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
when the folder has one; fp32 always uses ``thresholds.json``. ``emotion-monitor tune-thresholds``
(:mod:`trainer.tune_thresholds`) writes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["PRECISIONS", "profile_path", "write_precision_thresholds", "load_precision_thresholds"]

PRECISIONS = ("int8", "bf16")


def profile_path(folder: str | Path, precision: str) -> Path:
    if precision not in PRECISIONS:
        raise ValueError(f"no threshold profile for precision {precision!r} (one of {', '.join(PRECISIONS)})")
    return Path(folder) / f"thresholds_{precision}.json"


def write_precision_thresholds(folder: str | Path, precision: str, labels: list[str], raw: np.ndarray, y: np.ndarray,
                               json_thresholds: np.ndarray, call_size: int, data: str) -> dict:
    """Tune per-label thresholds for F1 on ``raw`` (dev sigmoid outputs of ``precision``, ``[n, labels]``) against
    ``y``, and write them with the rule's rates as ``thresholds_<precision>.json``; returns what it wrote.
    ``json_thresholds``: the folder's ``thresholds.json`` values, scored for the record."""
    from .adaptation import rates_at_thresholds
    from .calibration import ROC_GRID, _roc, compact_json
    from .metrics import macro_f1, tune_thresholds

    path = profile_path(folder, precision)
    raw = np.asarray(raw, dtype=np.float32)
    y = np.asarray(y, dtype=np.uint8)
    tuned = tune_thresholds(y, raw)
    tpr, fpr = rates_at_thresholds(raw, y, tuned, smoothing=0.5)
    roc_tpr, roc_fpr = _roc(raw, y)

    def per_label(values, digits):
        return {name: round(float(v), digits) for name, v in zip(labels, values)}

    record = {"precision": precision, "call_size": int(call_size),
              "fitted_on": {"data": data, "rows": len(y), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
              "dev_macro_f1": {"at_thresholds_json": round(macro_f1(y, raw >= json_thresholds), 4),
                               "tuned": round(macro_f1(y, raw >= tuned), 4)},
              "thresholds": per_label(tuned, 4), "tpr": per_label(tpr, 4), "fpr": per_label(fpr, 5),
              "roc": {"grid": [float(g) for g in ROC_GRID],
                      "tpr": {n: [round(float(v), 4) for v in row] for n, row in zip(labels, roc_tpr)},
                      "fpr": {n: [round(float(v), 5) for v in row] for n, row in zip(labels, roc_fpr)}}}
    path.write_text(compact_json(record))
    return record


def load_precision_thresholds(folder: str | Path, precision: str, labels: list[str]) -> dict | None:
    """``{"thresholds", "tpr", "fpr", "roc_tpr", "roc_fpr", "roc_grid"}`` (numpy, ``labels`` order) from the folder's
    profile for ``precision``, or None when it has none (or the precision has no profiles: fp32). A file that does
    not cover every label fails naming the file and the label."""
    if precision not in PRECISIONS:
        return None
    from .calibration import label_column, read_json

    path = profile_path(folder, precision)
    if not path.exists():
        return None
    data = read_json(path)
    if data.get("precision") != precision:
        raise ValueError(f"{path}: made for precision {data.get('precision')!r}, not {precision!r}")

    def column(key: str, record: dict = data) -> np.ndarray:
        return label_column(path, labels, record, key)

    roc = data.get("roc") or {}
    return {"thresholds": column("thresholds").astype(np.float32), "tpr": column("tpr"), "fpr": column("fpr"),
            "roc_tpr": column("tpr", roc), "roc_fpr": column("fpr", roc),
            "roc_grid": np.asarray(roc.get("grid", []), dtype=np.float64)}
