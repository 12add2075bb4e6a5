"""Trainer fixtures: a real (untrained) artifact built once per session, and a tiny training settings factory."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def untrained_artifact(tmp_path_factory):
    """A real artifact (MiniLM + fresh LoRA + random head) with the 28 GoEmotions labels."""
    from trainer import make_untrained_artifact

    return make_untrained_artifact(tmp_path_factory.mktemp("artifact") / "untrained", max_length=32)


@pytest.fixture(scope="session")
def untrained_classifier(untrained_artifact):
    from trainer import load_classifier

    return load_classifier(untrained_artifact, device="cpu")


@pytest.fixture()
def tiny_settings(goemotions_dir, tmp_path):
    """Settings for a fast real training run: sentiment taxonomy (4 labels), a few hundred rows, 1 thread."""
    from trainer.settings import TrainerSettings

    def make(**overrides):
        values = dict(data=str(goemotions_dir), taxonomy="sentiment", train_limit=480, eval_limit=300,
                      max_steps=40, batch_size=16, lr=2e-3, max_length=48, threads=2, log_every=5,
                      checkpoint_every=1000, output=str(tmp_path / "model"), eval_batch_size=100)
        values.update(overrides)
        return TrainerSettings(**values)

    return make
