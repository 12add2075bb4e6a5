"""`emotion-monitor evaluate` reports test metrics at the artifact's stored thresholds (what `classify` and the worker
apply) by default, and at thresholds re-tuned on dev only with --retune-thresholds; the report says which."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main

EVAL_LIMIT = 40


@pytest.fixture(scope="module")
def thresholded_artifact(untrained_artifact, tmp_path_factory):
    """The untrained artifact with distinct stored thresholds per label (0.30, 0.31, ...), none a grid optimum by
    design, so re-tuning on dev is bound to move some of them."""
    folder = tmp_path_factory.mktemp("thr") / "model"
    shutil.copytree(untrained_artifact, folder)
    labels = json.loads((folder / "labels.json").read_text())
    stored = {name: round(0.30 + 0.01 * j, 2) for j, name in enumerate(labels)}
    (folder / "thresholds.json").write_text(json.dumps(stored))
    return folder, stored


def _evaluate(folder, out, data, *extra):
    # --data: the full GoEmotions or the shipped sample (tests/conftest.py); evaluate's own default needs ../shared
    result = CliRunner().invoke(main, ["evaluate", "--model", str(folder), "--out", str(out), "--data", str(data),
                                       "--eval-limit", str(EVAL_LIMIT), "--batch-size", str(EVAL_LIMIT), *extra])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return summary, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_evaluate_uses_the_stored_thresholds_by_default(thresholded_artifact, goemotions_dir, tmp_path):
    folder, stored = thresholded_artifact
    summary, report, md = _evaluate(folder, tmp_path / "ev", goemotions_dir)
    assert report["thresholds_source"] == "artifact" and summary["thresholds"] == "artifact thresholds"
    assert report["thresholds"] == pytest.approx(stored) and report["artifact_thresholds"] == pytest.approx(stored)
    assert summary["thresholds_changed"] == 0
    # every per-label test figure was computed at the stored threshold, and the report says so
    assert {name: m["threshold"] for name, m in report["test"]["per_label"].items()} == pytest.approx(stored)
    assert "Thresholds: the artifact's stored per-label thresholds" in md
    assert "| split | macro-F1 (artifact thresholds) |" in md and "## Per label (test, artifact thresholds)" in md
    assert "re-tuned" not in md
    assert report["test"]["n"] == EVAL_LIMIT and report["dev"]["n"] == EVAL_LIMIT


def test_evaluate_retunes_on_dev_only_when_asked(thresholded_artifact, goemotions_dir, tmp_path):
    from trainer import load_classifier
    from trainer.data import load_dataset_splits
    from sklearn.metrics import f1_score

    folder, stored = thresholded_artifact
    summary, report, md = _evaluate(folder, tmp_path / "ev", goemotions_dir, "--retune-thresholds")
    assert report["thresholds_source"] == "dev" and summary["thresholds"] == "thresholds re-tuned on dev"
    assert report["artifact_thresholds"] == pytest.approx(stored)
    # the thresholds are what tuning on the same EVAL_LIMIT dev rows gives, not the stored ones
    classifier = load_classifier(folder, device="cpu")
    data = load_dataset_splits(str(goemotions_dir), "goemotions")
    data.limit_eval(EVAL_LIMIT)
    proba = classifier.predict_proba(data.dev.texts, progress=False)
    truth = np.asarray(data.dev.labels).astype(bool)
    grid = np.arange(2, 99) / 100
    expected = np.full(len(classifier.labels), 0.5)
    for j in range(len(classifier.labels)):  # brute force with scikit-learn's F1, not the code under test
        if not truth[:, j].any():
            continue  # nothing to tune on: 0.5
        f1 = np.array([f1_score(truth[:, j], proba[:, j] >= t, zero_division=0) for t in grid])
        best = grid[np.isclose(f1, f1.max())]
        expected[j] = best[np.argmin(np.abs(best - 0.5))]  # ties: nearest 0.5
    assert [report["thresholds"][name] for name in classifier.labels] == pytest.approx(expected.tolist(), abs=1e-6)
    changed = int(np.sum(np.abs(expected - np.array([stored[n] for n in classifier.labels])) > 1e-4))
    assert summary["thresholds_changed"] == changed > 0
    assert "Thresholds: per-label thresholds re-tuned on these dev rows" in md
    assert "## Per label (test, thresholds re-tuned on dev)" in md


def test_evaluate_int8_scores_as_the_cpu_worker_serves(thresholded_artifact, goemotions_dir, tmp_path):
    """--int8: the int8 backbone and the artifact's thresholds_int8.json (when it has one); without the flag, fp32 and
    thresholds.json."""
    folder, stored = thresholded_artifact
    int8_folder = tmp_path / "model"
    shutil.copytree(folder, int8_folder)
    labels = list(stored)
    int8_values = {name: round(0.60 + 0.01 * j, 2) for j, name in enumerate(labels)}
    rates = {name: 0.5 for name in labels}
    (int8_folder / "thresholds_int8.json").write_text(json.dumps(
        {"precision": "int8", "call_size": 16, "thresholds": int8_values, "tpr": rates, "fpr": rates,
         "roc": {"grid": [0.5], "tpr": {n: [0.5] for n in labels}, "fpr": {n: [0.5] for n in labels}}}))
    summary, report, md = _evaluate(int8_folder, tmp_path / "ev8", goemotions_dir, "--int8")
    assert summary["precision"] == "int8" and summary["thresholds_file"] == "thresholds_int8.json"
    assert summary["model"].endswith("+int8") and md.startswith(f"# Evaluation of {summary['model']}")
    assert {name: m["threshold"] for name, m in report["test"]["per_label"].items()} == pytest.approx(int8_values)
    plain, report32, _ = _evaluate(int8_folder, tmp_path / "ev32", goemotions_dir)
    assert plain["precision"] == "fp32" and plain["thresholds_file"] == "thresholds.json"
    assert {name: m["threshold"] for name, m in report32["test"]["per_label"].items()} == pytest.approx(stored)
