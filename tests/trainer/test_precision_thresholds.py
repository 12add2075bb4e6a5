"""Thresholds tuned for the precision a model is served in: ``emotion-monitor tune-thresholds`` writes
``thresholds_int8.json`` from dev outputs in int8, ``load_classifier`` serves it in int8 only (fp32 keeps
``thresholds.json``), with the rule's own dev rates, and the version digest covers it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main
from trainer.data import load_goemotions_tsv
from trainer.metrics import macro_f1, tune_thresholds

pytestmark = pytest.mark.timeout(300)
SAMPLE = "emotion_monitor/data/goemotions_sample"
DEV_ROWS = 200  # of the shipped sample's dev split: enough positives to tune on, few enough to stay fast


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """The shipped sample with its dev split cut to ``DEV_ROWS`` rows (GoEmotions layout)."""
    from pathlib import Path

    folder = tmp_path_factory.mktemp("data") / "goemotions_small"
    shutil.copytree(SAMPLE, folder)
    dev = (Path(SAMPLE) / "dev.tsv").read_text(encoding="utf-8").splitlines()[:DEV_ROWS]
    (folder / "dev.tsv").write_text("\n".join(dev) + "\n", encoding="utf-8")
    return str(folder)


@pytest.fixture()
def calibrated_copy(untrained_artifact, small_data, tmp_path):
    """The untrained artifact with a dev calibration (so the served rates can be checked too)."""
    from trainer import load_classifier
    from trainer.calibration import write_calibration

    folder = tmp_path / "model"
    shutil.copytree(untrained_artifact, folder)
    clf = load_classifier(folder, device="cpu")
    dev = load_goemotions_tsv(small_data).dev
    raw = clf.predict_proba(dev.texts, calibrated=False)
    write_calibration(folder, clf.labels, raw, dev.labels, clf.raw_thresholds, "goemotions_sample dev", "fp32")
    return folder


def test_tune_thresholds_writes_the_int8_dev_best_rule_and_int8_serves_it(calibrated_copy, small_data):
    from trainer import load_classifier

    folder = calibrated_copy
    version_before = load_classifier(folder, device="cpu", int8=True).version
    result = CliRunner().invoke(main, ["tune-thresholds", "--model", str(folder), "--data", small_data,
                                       "--call-size", "16"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.output.strip().splitlines()[-1])
    assert reply["written"].endswith("thresholds_int8.json") and reply["call_size"] == 16
    record = json.loads((folder / "thresholds_int8.json").read_text())
    assert record["precision"] == "int8" and record["fitted_on"]["rows"] == DEV_ROWS

    # the file holds exactly the per-label F1-best thresholds on the int8 dev outputs in calls of 16
    plain = load_classifier(folder, device="cpu", int8=True, precision_thresholds=False)
    assert plain.thresholds_source == "thresholds.json"
    dev = load_goemotions_tsv(small_data).dev
    raw = plain.predict_proba(dev.texts, batch_size=16, calibrated=False)
    expected = tune_thresholds(dev.labels, raw)
    stored = np.array([record["thresholds"][name] for name in plain.labels])
    np.testing.assert_allclose(stored, expected, atol=1e-4)
    assert record["dev_macro_f1"]["tuned"] == pytest.approx(macro_f1(dev.labels, raw >= expected), abs=1e-4)
    assert record["dev_macro_f1"]["tuned"] >= record["dev_macro_f1"]["at_thresholds_json"]
    assert not np.allclose(expected, plain.raw_thresholds)  # an untrained model's best rule is not 0.5 everywhere

    int8 = load_classifier(folder, device="cpu", int8=True)
    assert int8.thresholds_source == "thresholds_int8.json"
    np.testing.assert_allclose(int8.raw_thresholds, stored, atol=1e-6)
    np.testing.assert_allclose(int8.thresholds, int8.calibration.apply(stored), atol=1e-6)
    np.testing.assert_allclose(int8.tpr, [record["tpr"][n] for n in int8.labels])
    np.testing.assert_allclose(int8.fpr, [record["fpr"][n] for n in int8.labels])
    assert not np.allclose(int8.tpr, plain.tpr)  # the served rule's own rates, not thresholds.json's
    decided = int8.predict(dev.texts[:20], batch_size=16)
    proba = int8.predict_proba(dev.texts[:20], batch_size=16)
    assert decided == [[int8.labels[j] for j in np.flatnonzero(row >= int8.thresholds)] for row in proba]
    assert int8.version != version_before  # the served rule changed, so does the version

    fp32 = load_classifier(folder, device="cpu")
    assert fp32.thresholds_source == "thresholds.json"
    np.testing.assert_allclose(fp32.raw_thresholds, plain.raw_thresholds)


def test_a_profile_for_another_precision_or_missing_a_label_fails_naming_the_file(calibrated_copy):
    from trainer import load_classifier

    folder = calibrated_copy
    labels = json.loads((folder / "labels.json").read_text())
    values = {name: 0.4 for name in labels}
    profile = {"precision": "bf16", "thresholds": values, "tpr": values, "fpr": values,
               "roc": {"grid": [0.5], "tpr": {n: [0.5] for n in labels}, "fpr": {n: [0.5] for n in labels}}}
    (folder / "thresholds_int8.json").write_text(json.dumps(profile))
    with pytest.raises(ValueError, match="thresholds_int8.json: made for precision 'bf16'"):
        load_classifier(folder, device="cpu", int8=True)
    assert load_classifier(folder, device="cpu").thresholds_source == "thresholds.json"  # fp32 never reads it
    profile["precision"] = "int8"
    del profile["thresholds"]["grief"]
    (folder / "thresholds_int8.json").write_text(json.dumps(profile))
    with pytest.raises(ValueError, match=r"thresholds_int8.json: field 'thresholds' has no value for \['grief'\]"):
        load_classifier(folder, device="cpu", int8=True)


def test_bf16_thresholds_need_cuda(untrained_artifact):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    result = CliRunner().invoke(main, ["tune-thresholds", "--model", str(untrained_artifact), "--precision", "bf16",
                                       "--data", SAMPLE])
    assert result.exit_code != 0 and "need a CUDA device" in result.output
    assert not (untrained_artifact / "thresholds_bf16.json").exists()
