"""Multi-label metrics (scikit-learn) and per-label threshold tuning.

Thresholds are tuned on dev only (each label's F1-maximising cut on a fixed grid) and then *applied* to test;
test never influences a threshold.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

__all__ = ["THRESHOLD_GRID", "tune_thresholds", "evaluate_predictions", "grouped", "macro_f1"]

THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)


def tune_thresholds(y_true: np.ndarray, proba: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per label, the grid threshold with the highest F1 on (y_true, proba); ties go to the value nearest 0.5.

    A label without positives in ``y_true`` keeps 0.5 (nothing to tune on).
    """
    y_true = np.asarray(y_true).astype(bool)
    proba = np.asarray(proba, dtype=np.float32)
    thresholds = np.full(y_true.shape[1], 0.5, dtype=np.float32)
    for j in range(y_true.shape[1]):
        truth = y_true[:, j]
        positives = truth.sum()
        if positives == 0:
            continue
        predicted = proba[:, j][None, :] >= grid[:, None]  # [grid, n]
        tp = (predicted & truth[None, :]).sum(axis=1)
        fp = (predicted & ~truth[None, :]).sum(axis=1)
        f1 = 2 * tp / np.maximum(2 * tp + fp + (positives - tp), 1)
        best = np.flatnonzero(f1 == f1.max())
        thresholds[j] = grid[best[np.argmin(np.abs(grid[best] - 0.5))]]
    return thresholds


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def evaluate_predictions(y_true: np.ndarray, proba: np.ndarray, labels: list[str], thresholds: np.ndarray) -> dict:
    """Per-label P/R/F1/support at the given thresholds, macro/micro F1 at those and at 0.5."""
    y_true = np.asarray(y_true).astype(int)
    tuned = (proba >= np.asarray(thresholds)[None, :]).astype(int)
    flat = (proba >= 0.5).astype(int)
    p, r, f, s = precision_recall_fscore_support(y_true, tuned, average=None, zero_division=0)
    f_flat = f1_score(y_true, flat, average=None, zero_division=0)
    per_label = {
        name: {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j]),
               "threshold": float(thresholds[j]), "f1_at_0.5": float(f_flat[j])}
        for j, name in enumerate(labels)
    }
    return {
        "n": int(len(y_true)),
        "macro_f1_tuned": macro_f1(y_true, tuned),
        "micro_f1_tuned": float(f1_score(y_true, tuned, average="micro", zero_division=0)),
        "macro_f1_at_0.5": macro_f1(y_true, flat),
        "micro_f1_at_0.5": float(f1_score(y_true, flat, average="micro", zero_division=0)),
        "per_label": per_label,
    }


def grouped(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], mapping: dict[str, list[str]]) -> dict:
    """Project truth and (thresholded) predictions onto groups (a group is on when any member is) and score them."""
    index = {name: i for i, name in enumerate(labels)}
    groups = {g: [index[m] for m in members if m in index] for g, members in mapping.items()}
    groups = {g: idx for g, idx in groups.items() if idx}
    if "neutral" in index and "neutral" not in groups:
        groups["neutral"] = [index["neutral"]]
    names = list(groups)
    t = np.stack([np.asarray(y_true)[:, idx].max(axis=1) for idx in groups.values()], axis=1)
    pr = np.stack([np.asarray(y_pred)[:, idx].max(axis=1) for idx in groups.values()], axis=1)
    p, r, f, s = precision_recall_fscore_support(t, pr, average=None, zero_division=0)
    return {
        "macro_f1": macro_f1(t, pr),
        "micro_f1": float(f1_score(t, pr, average="micro", zero_division=0)),
        "per_group": {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, n in enumerate(names)},
    }
