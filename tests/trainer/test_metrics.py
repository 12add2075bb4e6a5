"""Threshold tuning (dev only) and multi-label metrics."""

from __future__ import annotations

import numpy as np

from trainer.metrics import evaluate_predictions, grouped, tune_thresholds


def test_tuning_finds_the_separating_threshold():
    rng = np.random.default_rng(0)
    y = np.zeros((300, 3), dtype=int)
    y[:60, 0] = 1
    y[:150, 1] = 1
    proba = rng.random((300, 3)) * 0.2
    proba[:60, 0] = 0.25 + rng.random(60) * 0.05  # label 0 positives sit in (0.25, 0.30): cut near 0.21..0.25
    proba[:150, 1] = 0.9  # label 1 separable at anything in (0.2, 0.9]
    thresholds = tune_thresholds(y, proba)
    assert 0.2 < thresholds[0] <= 0.25
    assert 0.2 < thresholds[1] <= 0.9 and abs(thresholds[1] - 0.5) < 0.01  # tie-break towards 0.5
    assert thresholds[2] == 0.5  # no positives: untouched
    report = evaluate_predictions(y, proba, ["a", "b", "c"], thresholds)
    assert report["per_label"]["a"]["f1"] == 1.0 and report["per_label"]["a"]["f1_at_0.5"] == 0.0
    assert report["per_label"]["a"]["support"] == 60
    assert np.isclose(report["macro_f1_tuned"], 2 / 3)  # label c: no positives, F1 0


def test_grouping_projects_any_member():
    labels = ["joy", "love", "anger", "neutral"]
    y_true = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    y_pred = np.array([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    g = grouped(y_true, y_pred, labels, {"positive": ["joy", "love"], "negative": ["anger"]})
    assert g["per_group"]["positive"]["f1"] == 1.0  # joy predicted as love is still positive
    assert g["per_group"]["negative"]["recall"] == 0.0
    assert set(g["per_group"]) == {"positive", "negative", "neutral"}
