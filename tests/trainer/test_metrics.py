"""Threshold tuning (dev only) and multi-label metrics."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_tuning_on_a_hand_computed_case():
    # label 0: cuts in (0.30, 0.437] predict {0.9, 0.6, 0.437}: tp 2, fp 1, fn 0 -> F1 0.8, the best
    #   ((0.6, 0.9]: 0.667; (0.437, 0.6]: 0.5; (0.1, 0.3]: 0.667; lower: 0.571); nearest 0.5 on the grid: 0.43
    # label 1: every cut in (0.2, 0.355] separates perfectly (F1 1); nearest 0.5: 0.35
    # label 2: its positive sits under the grid (0.01): F1 0 at every cut, a tie everywhere -> 0.5
    # label 3: no positives -> stays 0.5
    y = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    proba = np.array([[0.9, 0.355, 0.01, 0.7],
                      [0.6, 0.2, 0.6, 0.1],
                      [0.437, 0.1, 0.1, 0.1],
                      [0.3, 0.1, 0.1, 0.1],
                      [0.1, 0.1, 0.1, 0.1]])
    assert tune_thresholds(y, proba).tolist() == pytest.approx([0.43, 0.35, 0.5, 0.5], abs=1e-6)
