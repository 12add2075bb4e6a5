"""`emotion-monitor calibrate` round trip on the shipped model: the derived folder loads like any artifact; its
adapted probabilities and thresholds are what `classify`, `evaluate` and the worker's inference process apply; with
--labelled --annotated-labels only the annotated labels' thresholds move; the model card says what it was adapted on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main
from tests.monitor.conftest import predicted
from trainer.data import load_goemotions_tsv

pytestmark = pytest.mark.timeout(600)
SAMPLE = "emotion_monitor/data/goemotions_sample"
# GoEmotions -> the Plutchik names of trainer/label_maps/plutchik8.toml (anger..surprise are shared names)
SHARED = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory):
    """An anger-rich unlabelled stream (every anger post of the sample + as many others) and 150 labelled lines in
    Plutchik names (trust for the rest: mapped to nothing)."""
    folder = tmp_path_factory.mktemp("stream")
    test = load_goemotions_tsv(SAMPLE).test
    anger = test.labels[:, 2] == 1
    index = np.concatenate([np.flatnonzero(anger)[:60], np.flatnonzero(~anger)[:60]])
    (folder / "stream.txt").write_text("\n".join(test.texts[i].replace("\n", " ") for i in index) + "\n")
    lines = []
    for i in range(200, 350):
        names = [name for name in SHARED if test.labels[i, _index(name)]]
        lines.append(json.dumps({"text": test.texts[i], "labels": names or ["trust"]}))
    (folder / "labelled.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _index(name: str) -> int:
    from trainer.taxonomy import GOEMOTIONS_LABELS

    return GOEMOTIONS_LABELS.index(name)


def _calibrate(*args) -> dict:
    result = CliRunner().invoke(main, ["calibrate", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def adapted(stream_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "unlabelled"
    _calibrate("--unlabelled", str(stream_files / "stream.txt"), "--out", str(out))
    return out


def test_unlabelled_adaptation_round_trip(adapted, stream_files):
    from trainer import load_classifier

    base = load_classifier(device="cpu", int8=True)
    clf = load_classifier(adapted, device="cpu", int8=True)
    record = json.loads((adapted / "config.json").read_text())["adaptation"]
    assert record["unlabelled"]["rows"] == 120 and set(record["unlabelled"]["estimated_priors"]) == {"em", "acc"}
    anger = clf.labels.index("anger")
    # half the stream is anger: both estimates and the served prior move far above the dev prior (~0.036)
    assert clf.label_priors[anger] > 0.25 and base.label_priors[anger] < 0.05
    assert clf.calibration.source_priors[anger] == pytest.approx(base.label_priors[anger])
    assert record["unlabelled"]["estimated_priors"]["em"]["anger"] > 0.25
    # adaptation starts from thresholds.json: a more frequent emotion is flagged more readily than there
    rule = load_classifier(device="cpu", int8=True, precision_thresholds=False)
    assert clf.raw_thresholds[anger] < rule.raw_thresholds[anger]
    # the shipped int8 thresholds were tuned for dev's priors: the derived artifact serves its adapted ones instead
    assert base.thresholds_source == "thresholds_int8.json"
    assert not (adapted / "thresholds_int8.json").exists() and clf.thresholds_source == "thresholds.json"
    assert clf.version != base.version
    card = (adapted / "README.md").read_text()
    assert "## Adapted to a target stream" in card and "unlabelled: 120 posts" in card

    # classify serves the adapted probabilities and decides at the adapted thresholds
    texts = ["This is outrageous, I am so angry at you", "thanks, that was lovely", "I don't know"]
    result = CliRunner().invoke(main, ["classify", "--model", str(adapted)], input="\n".join(texts) + "\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    expected = clf.predict_proba(texts)  # classify loads fp32: scores agree to int8's precision
    fp32 = load_classifier(adapted, device="cpu")
    exact = fp32.predict_proba(texts)
    for row, probs in zip(rows, exact):
        assert row["model"] == fp32.version
        assert [row["scores"][n] for n in fp32.labels] == pytest.approx(np.round(probs, 4).tolist(), abs=1e-4)
        assert row["labels"] == [n for n in sorted(fp32.labels, key=lambda n: -row["scores"][n])
                                 if probs[fp32.labels.index(n)] >= fp32.thresholds[fp32.labels.index(n)]]
    assert np.allclose(expected, exact, atol=0.1)
    assert "anger" in rows[0]["labels"]


def test_the_worker_inference_process_serves_the_adapted_artifact(adapted):
    from monitor.inference import load_inference
    from monitor.settings import MonitorSettings
    from trainer import load_classifier

    clf = load_classifier(adapted, device="cpu", int8=True)
    inference = load_inference(MonitorSettings(model_path=str(adapted), device="cpu", cpu_precision="int8"))
    try:
        assert inference.isolation == "process" and inference.version.startswith(clf.version)
        assert np.allclose(inference.thresholds, clf.thresholds, atol=1e-6)
        texts = ["I am furious", "what a lovely day"]
        assert np.allclose(predicted(inference, texts), clf.predict_proba(texts), atol=1e-5)
    finally:
        inference.close()


def test_labelled_and_unlabelled_together_move_only_the_annotated_labels(adapted, stream_files, tmp_path):
    from trainer import load_classifier

    out = tmp_path / "both"
    record = _calibrate("--unlabelled", str(stream_files / "stream.txt"), "--labelled",
                        str(stream_files / "labelled.jsonl"), "--label-map", "plutchik8",
                        "--annotated-labels", "anger,joy", "--out", str(out))
    assert record["labelled"]["rows"] == 150 and record["labelled"]["annotated_labels"] == ["anger", "joy"]
    assert record["labelled"]["label_map"] == "plutchik8"
    both = load_classifier(out, device="cpu", int8=True)
    only_unlabelled = load_classifier(adapted, device="cpu", int8=True)
    moved = [n for j, n in enumerate(both.labels)
             if abs(both.raw_thresholds[j] - only_unlabelled.raw_thresholds[j]) > 1e-6
             or abs(both.label_priors[j] - only_unlabelled.label_priors[j]) > 1e-6]
    assert set(moved) <= {"anger", "joy"} and moved  # every other label keeps its threshold and prior
    positives = record["labelled"]["positives"]
    assert positives["anger"] >= 1 and "fear" not in positives
    assert "labelled: 150 posts" in (out / "README.md").read_text()

    # evaluate loads the derived artifact like any other and scores at its thresholds
    result = CliRunner().invoke(main, ["evaluate", "--model", str(out), "--data", SAMPLE, "--eval-limit", "40",
                                       "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["artifact_thresholds"]["anger"] == pytest.approx(float(both.thresholds[both.labels.index("anger")]),
                                                                   abs=1e-6)


def test_calibrate_refuses_a_non_empty_out_and_a_map_without_labelled(adapted, stream_files):
    result = CliRunner().invoke(main, ["calibrate", "--unlabelled", str(stream_files / "stream.txt"),
                                       "--out", str(adapted)])
    assert result.exit_code != 0 and "exists and is not empty" in result.output
    result = CliRunner().invoke(main, ["calibrate", "--unlabelled", str(stream_files / "stream.txt"),
                                       "--label-map", "plutchik8", "--out", str(adapted / "x")])
    assert result.exit_code != 0 and "--label-map applies to --labelled" in result.output


def test_evaluate_scores_a_labelled_file_through_a_label_map(stream_files, tmp_path):
    from trainer import load_classifier
    from trainer.metrics import macro_f1

    result = CliRunner().invoke(main, ["evaluate", "--labelled", str(stream_files / "labelled.jsonl"),
                                       "--label-map", "plutchik8", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["labels"] == SHARED and summary["rows"] == 150 and summary["label_map"] == "plutchik8"
    clf = load_classifier(device="cpu")
    rows = [json.loads(line) for line in (stream_files / "labelled.jsonl").read_text().splitlines()]
    columns = [clf.labels.index(n) for n in SHARED]
    flagged = clf.predict_proba([r["text"] for r in rows])[:, columns] >= clf.thresholds[columns]
    truth = np.array([[n in r["labels"] for n in SHARED] for r in rows])
    assert summary["macro_f1"] == pytest.approx(macro_f1(truth, flagged), abs=1e-4)
    # a line in a label the map does not know fails naming the data file's line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hm", "labels": ["joy"]}) + "\n" + json.dumps({"text": "x", "labels": ["awe"]}))
    result = CliRunner().invoke(main, ["evaluate", "--labelled", str(bad), "--label-map", "plutchik8"])
    assert result.exit_code != 0 and f"{bad}:2: label 'awe' has no mapping in" in result.output


def test_calibrate_fits_a_missing_calibration_in_place_from_dev_data(tmp_path):
    """An artifact without calibration.json (e.g. trained before it existed) gets one from a dataset's dev split;
    --out equal to --model writes only that file (and the card), leaving thresholds and weights alone."""
    import shutil

    from trainer import load_classifier
    from trainer.artifact import DEFAULT_MODEL_DIR

    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    (folder / "calibration.json").unlink()
    thresholds_before = (folder / "thresholds.json").read_text()
    assert load_classifier(folder, device="cpu").calibration is None
    result = CliRunner().invoke(main, ["calibrate", "--model", str(folder), "--dev-data", SAMPLE, "--out",
                                       str(folder)])
    assert result.exit_code == 0, result.output
    clf = load_classifier(folder, device="cpu")
    assert clf.calibration is not None and clf.calibration.fitted_on["data"] == "goemotions_sample dev"
    assert clf.calibration.fitted_on["rows"] == len(load_goemotions_tsv(SAMPLE).dev)
    assert (folder / "thresholds.json").read_text() == thresholds_before
    assert "## Calibration" in (folder / "README.md").read_text()
