"""Artifact save/load round trip and the predict_proba contract the monitor relies on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from trainer import Classifier, load_classifier
from trainer.data import GOEMOTIONS_LABELS


def test_contract(untrained_classifier):
    clf = untrained_classifier
    assert isinstance(clf, Classifier)  # the protocol the worker, replay and the benchmarks type against
    assert clf.precision == "fp32"
    assert clf.labels == GOEMOTIONS_LABELS
    assert isinstance(clf.thresholds, np.ndarray) and clf.thresholds.dtype == np.float32 and clf.thresholds.shape == (28,)
    assert clf.version.startswith("untrained-test-model-") and len(clf.version.split("-")[-1]) == 10
    assert clf.max_length == 32 and clf.device == torch.device("cpu")
    texts = ["I love this so much!", "word " * 500, "meh", "Why would they do that?"]
    proba = clf.predict_proba(texts, batch_size=2)
    assert proba.shape == (4, 28) and proba.dtype == np.float32
    assert ((proba > 0) & (proba < 1)).all()
    # rows come back in input order whatever the length-sorted batching did
    single = np.stack([clf.predict_proba([t])[0] for t in texts])
    assert np.allclose(proba, single, atol=1e-5)
    # the 500-word text is truncated to max_length, not rejected: same as its first ~30 tokens
    assert np.allclose(clf.predict_proba(["word " * 500]), clf.predict_proba(["word " * 40]), atol=1e-5)
    assert clf.predict_proba([]).shape == (0, 28)


def test_round_trip_through_save_classifier_reproduces_predictions(tmp_path):
    """A freshly built model with a non-trivial LoRA adapter and head, saved by the trainer's own writer and loaded
    back (adapter merged): same probabilities, thresholds (stored to 4 decimals), labels, config and metrics."""
    from trainer.artifact import ArtifactClassifier, save_classifier
    from trainer.modeling import build_classifier
    from trainer.settings import TrainerSettings

    torch.manual_seed(3)
    labels = ["joy", "anger", "fear", "neutral"]
    settings = TrainerSettings(max_length=32, name="round-trip")
    model, tokenizer, _, pooling = build_classifier(settings, len(labels), torch.device("cpu"))
    with torch.no_grad():  # LoRA B starts at zero (a no-op adapter): give the adapter and the head something to carry
        lora = [p for name, p in model.named_parameters() if "lora_B" in name]
        assert lora
        for param in lora:
            param.normal_(0, 0.05)
        model.head.bias.add_(torch.linspace(-1, 1, len(labels)))
    model.eval()
    thresholds = np.array([0.123456, 0.5, 0.87654, 0.3])
    config = settings.model_dump() | {"pooling": pooling}
    texts = ["thanks a lot", "this is terrible", "ok", "why would they do that " * 20]
    before = ArtifactClassifier(model, tokenizer, labels, thresholds, config).predict_proba(texts)
    folder = save_classifier(model, tokenizer, labels, thresholds, config, tmp_path / "saved",
                             metrics={"test": {"macro_f1": 0.42}})
    again = load_classifier(folder, device="cpu")
    assert again.labels == labels
    assert again.thresholds.tolist() == pytest.approx([0.1235, 0.5, 0.8765, 0.3], abs=1e-7)
    assert again.metrics == {"test": {"macro_f1": 0.42}}
    assert again.config["pooling"] == pooling and again.max_length == 32
    assert again.version.startswith("round-trip-")
    after = again.predict_proba(texts)
    assert np.allclose(after, before, atol=1e-5)
    assert np.abs(before - before.mean(axis=0)).max() > 1e-3  # texts are told apart: the adapter/head carried
    # the saved adapter is what makes them: the bare base model with the same head predicts something else
    with torch.no_grad():
        for param in lora:
            param.zero_()
    assert not np.allclose(ArtifactClassifier(model, tokenizer, labels, thresholds, config).predict_proba(texts),
                           after, atol=1e-3)


def test_artifact_files_and_model_card(untrained_artifact):
    names = {p.name for p in untrained_artifact.iterdir()}
    assert {"adapter", "head.safetensors", "tokenizer", "labels.json", "thresholds.json", "config.json",
            "metrics.json", "README.md"} <= names
    config = json.loads((untrained_artifact / "config.json").read_text())
    assert config["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and config["pooling"] == "mean"
    adapter = json.loads((untrained_artifact / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"  # portable, no local path
    card = (untrained_artifact / "README.md").read_text()
    assert "Untrained test artifact" in card and "## Intended use" in card and "| neutral |" in card
    size = sum(p.stat().st_size for p in untrained_artifact.rglob("*") if p.is_file())
    assert size < 5_000_000  # no base weights


def test_missing_and_corrupt_files_fail_naming_the_file(tmp_path, untrained_artifact):
    broken = tmp_path / "broken"
    shutil.copytree(untrained_artifact, broken)
    (broken / "thresholds.json").unlink()
    with pytest.raises(FileNotFoundError, match="thresholds.json"):
        load_classifier(broken)
    (broken / "thresholds.json").write_text(json.dumps({"admiration": 0.5}))
    with pytest.raises(ValueError, match="no threshold for"):
        load_classifier(broken)
    (broken / "thresholds.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"thresholds\.json: corrupt JSON"):
        load_classifier(broken)
    (broken / "thresholds.json").write_text(json.dumps({name: 0.5 for name in GOEMOTIONS_LABELS}))
    (broken / "metrics.json").write_text("[1,")
    with pytest.raises(ValueError, match=r"metrics\.json: corrupt JSON"):
        load_classifier(broken)


@pytest.mark.gpu
def test_bf16_predict_proba_on_cuda(untrained_artifact):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = load_classifier(untrained_artifact, device="cuda")
    cpu = load_classifier(untrained_artifact, device="cpu")
    texts = ["I am so happy for you!", "This is outrageous.", "ok " * 300]
    p_gpu, p_cpu = gpu.predict_proba(texts), cpu.predict_proba(texts)
    assert gpu.device.type == "cuda" and p_gpu.dtype == np.float32 and p_gpu.shape == (3, 28)
    assert np.abs(p_gpu - p_cpu).max() < 0.03  # bf16 autocast stays close to fp32
