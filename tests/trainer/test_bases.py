"""Optional PyPI-split base models (all-mpnet-base-v2): assembly from zip slices, the missing-extra error, and the
LoRA target names per architecture."""

from __future__ import annotations

import io
import zipfile
from importlib import metadata

import pytest
import torch

from trainer import bases
from trainer.bases import MissingBaseModel, assemble_split_zip


def _split_zip(tmp_path, files: dict[str, bytes], n_parts: int = 5):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buffer.getvalue()
    size = -(-len(blob) // n_parts)
    parts = []
    for i in range(n_parts):
        part = tmp_path / f"m.zip.{i + 1:03d}"
        part.write_bytes(blob[i * size:(i + 1) * size])
        parts.append(part)
    return parts


def test_split_zip_is_assembled_in_order_into_the_cache(tmp_path):
    weights = bytes(range(256)) * 400
    parts = _split_zip(tmp_path, {"m/config.json": b'{"model_type": "mpnet"}', "m/model.safetensors": weights})
    folder = assemble_split_zip(parts, tmp_path / "cache", "m")
    assert folder == tmp_path / "cache" / "m"
    assert (folder / "model.safetensors").read_bytes() == weights
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m"]  # no temporary folder left behind
    with pytest.raises(MissingBaseModel, match="out of order"):  # slices out of order never make a model
        assemble_split_zip(parts[::-1], tmp_path / "other", "m")
    assert not (tmp_path / "other" / "m").exists()


def test_zip_without_the_model_folder_is_refused(tmp_path):
    parts = _split_zip(tmp_path, {"elsewhere/config.json": b"{}"})
    with pytest.raises(MissingBaseModel, match="no m/config.json"):
        assemble_split_zip(parts, tmp_path / "cache", "m")


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setenv("EM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(bases.metadata, "distribution", not_installed)
    assert not bases.mpnet_available()
    with pytest.raises(MissingBaseModel, match=r"emotion-monitor\[mpnet\]"):
        bases.mpnet_folder()
    from trainer.modeling import resolve_base_model

    with pytest.raises(MissingBaseModel):
        resolve_base_model("sentence-transformers/all-mpnet-base-v2")


def test_cached_folder_is_used_without_the_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "bases" / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(bases.metadata, "distribution", lambda name: pytest.fail("parts looked up"))
    assert bases.mpnet_folder() == folder and bases.mpnet_available()


def _tiny_model(model_type: str):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100)
    return AutoModel.from_config(config)


def test_lora_targets_follow_the_architecture():
    from trainer.modeling import lora_targets_for
    from trainer.settings import TrainerSettings

    torch.manual_seed(0)
    mpnet, bert = _tiny_model("mpnet"), _tiny_model("bert")
    default = TrainerSettings()
    assert lora_targets_for(mpnet, default) == ["q", "k", "v", "o", "dense"]  # the default maps to MPNet's names
    assert lora_targets_for(bert, default) == ["query", "key", "value", "dense"]
    with pytest.raises(ValueError, match=r"\['query'\].*q,k,v,o,dense"):  # peft would adapt 'dense' alone
        lora_targets_for(mpnet, TrainerSettings(lora_target_modules="query,dense"))


def test_cuda_default_is_the_mpnet_artifact_only_when_shipped_and_installed(tmp_path, monkeypatch):
    from trainer import artifact

    shipped = tmp_path / "mpnet_model"
    monkeypatch.setattr(artifact, "MPNET_MODEL_DIR", shipped)
    monkeypatch.setattr(bases, "mpnet_available", lambda: True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert artifact.default_model_dir(cuda) == artifact.DEFAULT_MODEL_DIR  # no MPNet artifact shipped
    shipped.mkdir()
    (shipped / "config.json").write_text("{}")
    assert artifact.default_model_dir(cuda) == shipped
    assert artifact.default_model_dir(cpu) == artifact.DEFAULT_MODEL_DIR  # the CPU keeps the small model
    monkeypatch.setattr(bases, "mpnet_available", lambda: False)
    assert artifact.default_model_dir(cuda) == artifact.DEFAULT_MODEL_DIR  # extra not installed


def test_mpnet_artifact_trains_saves_loads_and_classifies(tmp_path):
    """The real base from the [mpnet] extra (skipped without it): LoRA on q,k,v,o,dense, save, load, predict."""
    if not bases.mpnet_available():
        pytest.skip("emotion-monitor[mpnet] not installed")
    import json

    from trainer import load_classifier, make_untrained_artifact

    folder = make_untrained_artifact(tmp_path / "mpnet", labels=["joy", "anger"], base_model="all-mpnet-base-v2",
                                     max_length=32)
    adapter = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["dense", "k", "o", "q", "v"]
    assert adapter["base_model_name_or_path"] == "all-mpnet-base-v2"  # portable id, not the cache path
    classifier = load_classifier(folder, device="cpu")
    assert classifier.model.head.in_features == 768 and classifier.config["pooling"] == "mean"
    proba = classifier.predict_proba(["what a lovely day", "this is infuriating", ""])
    assert proba.shape == (3, 2) and ((proba > 0) & (proba < 1)).all()
