"""Per-label Platt calibration (trainer.calibration): fitted on one part, it lowers the expected calibration error on
held-out rows, is strictly monotone so decisions at the mapped thresholds equal the raw decisions, and the shipped
model serves calibrated probabilities through ``predict_proba`` with thresholds mapped the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.calibration import CALIBRATION_FILE, fit_calibration, fit_platt, load_calibration, reliability_ece

SAMPLE = "emotion_monitor/data/goemotions_sample"


def _miscalibrated(n: int, priors: np.ndarray, seed: int):
    """Labels with the given priors and raw scores that are far too high (like a head trained with positive weights):
    true posterior q, served raw = sigmoid(logit(q) + 2)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(priors))) < priors).astype(np.uint8)
    z = np.where(y == 1, rng.normal(1.0, 1.5, y.shape), rng.normal(-3.0, 1.5, y.shape))
    return 1 / (1 + np.exp(-(z + 2.0))), y


def test_platt_lowers_ece_on_held_out_rows_and_keeps_decisions():
    priors = np.array([0.02, 0.05, 0.3])
    fit_raw, fit_y = _miscalibrated(4000, priors, 0)
    raw, y = _miscalibrated(4000, priors, 1)  # held out: never seen by the fit
    thresholds = np.array([0.7, 0.5, 0.3])
    cal = fit_calibration(["a", "b", "c"], fit_raw, fit_y, thresholds)
    before, after = reliability_ece(raw, y), reliability_ece(cal.apply(raw), y)
    assert (after < before / 3).all(), (before, after)
    # strictly monotone per label: the mapped thresholds take exactly the raw decisions
    assert ((cal.apply(raw) >= cal.apply(thresholds)) == (raw >= thresholds)).all()
    # the mean calibrated probability estimates the held-out prevalence (the dashboard's score series)
    assert np.abs(cal.apply(raw).mean(axis=0) - y.mean(axis=0)).max() < 0.01
    assert np.abs(raw.mean(axis=0) - y.mean(axis=0)).max() > 0.05


def test_platt_keeps_identity_for_a_label_without_positives():
    raw = np.array([[0.2, 0.9], [0.4, 0.1], [0.6, 0.8]])
    a, b = fit_platt(raw, np.array([[0, 1], [0, 0], [0, 1]]))
    assert (a[0], b[0]) == (1.0, 0.0) and a[1] > 0


@pytest.fixture(scope="module")
def shipped_int8():
    from trainer import load_classifier

    return load_classifier(device="cpu", int8=True)


@pytest.fixture(scope="module")
def sample():
    from trainer.data import load_goemotions_tsv

    return load_goemotions_tsv(SAMPLE)


def test_shipped_model_serves_calibrated_probabilities(shipped_int8):
    clf = shipped_int8
    assert clf.calibration is not None and (clf.path / CALIBRATION_FILE).exists()
    assert clf.label_priors.shape == clf.tpr.shape == clf.fpr.shape == (28,)
    assert (clf.tpr > clf.fpr).all()
    texts = ["I am furious, this is the worst service ever", "thank you so much!", "ok", "I miss her so much"]
    raw = clf.predict_proba(texts, calibrated=False)
    served = clf.predict_proba(texts)
    assert np.allclose(served, clf.calibration.apply(raw), atol=1e-6) and not np.allclose(served, raw, atol=1e-2)
    assert np.allclose(clf.thresholds, clf.calibration.apply(clf.raw_thresholds), atol=1e-6)
    assert ((served >= clf.thresholds) == (raw >= clf.raw_thresholds)).all()
    # in int8 the shipped model serves the thresholds tuned on its int8 dev outputs (trainer.precision_thresholds)
    assert clf.thresholds_source == "thresholds_int8.json"
    stored = json.loads((clf.path / "thresholds_int8.json").read_text())["thresholds"]
    assert clf.raw_thresholds.tolist() == pytest.approx([stored[n] for n in clf.labels], abs=1e-6)


def test_shipped_calibration_lowers_ece_on_held_out_sample_rows(shipped_int8, sample):
    """The shipped calibration.json was fitted on GoEmotions dev; the bundled sample's test rows are held out."""
    rows = sample.test.subset(np.arange(300))
    raw = shipped_int8.predict_proba(rows.texts, calibrated=False)
    before = reliability_ece(raw, rows.labels).mean()
    after = reliability_ece(shipped_int8.calibration.apply(raw), rows.labels).mean()
    assert after < before / 2, (before, after)


def test_a_calibration_file_missing_a_label_fails_naming_it(tmp_path):
    cal = fit_calibration(["a", "b"], np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0, 1], [1, 0]]),
                          np.array([0.5, 0.5]))
    cal.save(tmp_path)
    assert load_calibration(tmp_path, ["a", "b"]).a.shape == (2,)
    with pytest.raises(ValueError, match=r"calibration\.json: field '\w+' has no value for \['c'\]"):
        load_calibration(tmp_path, ["a", "b", "c"])


def _shifted_stream(priors, n, seed):
    return _miscalibrated(n, np.asarray(priors), seed)


def test_unlabelled_adaptation_moves_only_a_significant_shift_and_lowers_only_for_a_rise():
    """Synthetic label shift with a known answer: label a rises 0.05 -> 0.30, label b stays at 0.10, label c falls
    0.30 -> 0.10. The estimated priors land within 0.03 of the truth for the shifted labels, b keeps its dev prior
    and threshold, a's threshold goes down, c's threshold is kept (a fall never raises one)."""
    from trainer.calibrate import adapt
    from trainer.metrics import tune_thresholds

    dev_raw, dev_y = _miscalibrated(6000, np.array([0.05, 0.10, 0.30]), 0)
    thresholds = tune_thresholds(dev_y, dev_raw).astype(np.float64)  # stored thresholds are dev-tuned
    cal = fit_calibration(["a", "b", "c"], dev_raw, dev_y, thresholds)
    raw, y = _shifted_stream([0.30, 0.10, 0.10], 3000, 1)
    adapted, new_thresholds, record = adapt(cal, thresholds, raw)
    truth = y.mean(axis=0)
    assert abs(adapted.label_priors[0] - truth[0]) < 0.03 and abs(adapted.label_priors[2] - truth[2]) < 0.03
    assert adapted.label_priors[1] == cal.source_priors[1] and new_thresholds[1] == thresholds[1]
    assert new_thresholds[0] < thresholds[0] and new_thresholds[2] == thresholds[2]
    assert record["unlabelled"]["thresholds_lowered"] == ["a"]
    assert set(record["unlabelled"]["priors_moved"]) == {"a", "c"}
    # the served probabilities' mean now estimates the stream's shares
    assert np.abs(adapted.apply(raw).mean(axis=0) - truth).max() < 0.03
    # and the lowered threshold finds more of the risen label: higher F1 on it than the dev threshold
    from sklearn.metrics import f1_score

    assert f1_score(y[:, 0], raw[:, 0] >= new_thresholds[0]) > f1_score(y[:, 0], raw[:, 0] >= thresholds[0])
