"""The stage-1 divergence guard (trainer.divergence): it catches the collapse the asl MPNet teacher suffered on this
CPU (stop 14) without crying wolf on a normal run, and the trainer rolls back to a checkpoint from before the
divergence with half the learning rate, or fails naming that checkpoint."""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch

import trainer.trainer as trainer_module
from trainer.divergence import DivergenceGuard, TrainingDiverged
from trainer.settings import TrainerSettings
from trainer.trainer import train

# Logged losses (each the mean of 10 steps) of the asl MPNet teacher at lr 5e-4, steps 1,500-1,700: the loss jumped
# from ~0.08 to ~0.15 at step ~1,585 and stayed there (runs/mpnet-teacher-asl-lr5e-4-collapsed.log).
COLLAPSE = [0.0749, 0.0736, 0.0782, 0.0831, 0.0765, 0.0767, 0.0833, 0.0819, 0.0820, 0.1408, 0.1590, 0.1514, 0.1605,
            0.1503, 0.1469, 0.1515, 0.1474, 0.1539, 0.1522, 0.1442]
# The same teacher's steps 910-1,200, before the collapse: the noise of a healthy run.
HEALTHY = [0.0841, 0.0907, 0.0805, 0.0826, 0.0851, 0.0835, 0.0843, 0.0812, 0.0828, 0.0733, 0.0863, 0.0830, 0.0886,
           0.0907, 0.0726, 0.0743, 0.0806, 0.0768, 0.0803, 0.0719, 0.0780, 0.0754, 0.0774, 0.0708, 0.0786, 0.0793,
           0.0785, 0.0840, 0.0866, 0.0826]


def test_the_measured_collapse_is_suspect_at_once_and_diverged_within_a_window():
    guard = DivergenceGuard.from_history(1.5, 10, HEALTHY)
    verdicts = [guard.observe(loss) for loss in COLLAPSE]
    assert verdicts[:9] == ["healthy"] * 9
    assert verdicts[9] == "suspect"  # step 1,590: the checkpoint at 1,600 is held back
    first = verdicts.index("diverged")
    assert 9 < first <= 9 + 10  # once the window mean passes 1.5 x the best (~0.078)
    assert "healthy" not in verdicts[9:first]


def test_a_healthy_run_with_a_falling_start_never_diverges():
    falling = [0.30, 0.25, 0.21, 0.18, 0.15, 0.13, 0.11, 0.10, 0.095, 0.09] + HEALTHY
    guard = DivergenceGuard(1.5, 10)
    assert set(guard.observe(loss) for loss in falling) == {"healthy"}
    assert guard.best == pytest.approx(sum(HEALTHY[-10:]) / 10, rel=0.2)


def test_non_finite_losses_diverge_at_once_and_factor_zero_turns_the_guard_off():
    assert DivergenceGuard(1.5, 10).observe(math.nan) == "diverged"
    assert DivergenceGuard(1.5, 10).observe(math.inf) == "diverged"
    off = DivergenceGuard(0, 10)
    assert [off.observe(x) for x in [0.1] * 10 + [5.0] * 10 + [math.nan]] == ["healthy"] * 21


def test_a_factor_of_one_or_less_is_refused():
    with pytest.raises(ValueError, match="above 1"):
        DivergenceGuard(1.0, 10)
    with pytest.raises(ValueError, match="divergence_factor"):
        TrainerSettings(divergence_factor=0.9)


class _Spoiled(torch.nn.Module):
    """The run's real loss, spoiled on the calls in ``bad`` (1-based call numbers): multiplied by ``by``."""

    def __init__(self, inner: torch.nn.Module, bad: range, by: float):
        super().__init__()
        self.inner, self.bad, self.by, self.calls = inner, bad, by, 0

    def forward(self, logits, targets):
        self.calls += 1
        loss = self.inner(logits, targets)
        return loss * self.by if self.calls in self.bad else loss


def _spoil(monkeypatch, bad: range, by: float) -> None:
    real = trainer_module.loss_for_labels

    def spoiled(settings, labels):
        loss_fn, weights = real(settings, labels)
        return _Spoiled(loss_fn, bad, by), weights

    monkeypatch.setattr(trainer_module, "loss_for_labels", spoiled)


def _settings(goemotions_dir, out, **overrides) -> TrainerSettings:
    return TrainerSettings(**{"data": str(goemotions_dir), "taxonomy": "gratitude,amusement,love,curiosity,neutral",
                              "train_limit": 320, "eval_limit": 64, "max_steps": 20, "batch_size": 16, "lr": 2e-3,
                              "max_length": 32, "threads": 2, "log_every": 1, "checkpoint_every": 5,
                              "divergence_window": 3, "divergence_factor": 3.0, "undersample_ratio": 0.5, "output": str(out),
                              "eval_batch_size": 64} | overrides)


_LOG = re.compile(r"step (\d+)/20 loss \S+ lr (\S+)")


def test_a_transient_collapse_rolls_back_to_the_last_checkpoint_at_half_the_learning_rate(
        goemotions_dir, tmp_path, monkeypatch, caplog):
    """Steps 13-15 of the first pass see a loss x20 (a tiny run's batches of 16 vary 3x on their own, hence factor 3
    here): the guard holds back no checkpoint it should keep (the one on disk is step 10's), rolls back there, and
    each replay of the steps after it runs at half the rate of the one before."""
    _spoil(monkeypatch, range(13, 16), 20.0)
    caplog.set_level(logging.INFO, logger="trainer")
    result = train(_settings(goemotions_dir, tmp_path / "model"), progress=False, command="pytest divergence")
    rollbacks = result.config["divergence_rollbacks"]
    assert rollbacks and rollbacks[0]["to_step"] == 10 and 13 <= rollbacks[0]["step"] <= 15
    assert rollbacks[0]["lr_scale"] == 0.5 and "exceeds 3.0 x" in rollbacks[0]["why"]
    assert [r["lr_scale"] for r in rollbacks] == [0.5 ** (i + 1) for i in range(len(rollbacks))]
    lrs: dict[int, list[float]] = {}
    for record in caplog.records:
        match = _LOG.search(record.getMessage())
        if match:
            lrs.setdefault(int(match.group(1)), []).append(float(match.group(2)))
    # step 11 ran once before the divergence and again after each rollback, each time at half the rate before
    assert len(lrs[11]) == 1 + len(rollbacks)
    for before, after in zip(lrs[11], lrs[11][1:]):
        assert after == pytest.approx(before / 2, rel=1e-2)
    assert max(lrs) == 20 and result.metrics["loss_history"][-1]["step"] == 20
    assert any("rolled back to the checkpoint at step 10" in r.getMessage() for r in caplog.records)


def test_a_lasting_nan_fails_after_the_rollbacks_and_keeps_a_finite_checkpoint(goemotions_dir, tmp_path,
                                                                                monkeypatch):
    """From call 8 on every loss is NaN: no optimizer step is taken on it, one rollback (to step 5) is tried, then
    the run fails naming the checkpoint, which still holds step 5's finite weights."""
    _spoil(monkeypatch, range(8, 10_000), math.nan)
    out = tmp_path / "model"
    with pytest.raises(TrainingDiverged, match=r"not a number, after 1 rollback.*resume it with a lower --lr"):
        train(_settings(goemotions_dir, out, divergence_retries=1), progress=False, command="pytest divergence")
    state = torch.load(str(out) + ".checkpoint/state.pt", weights_only=True)
    assert state["step"] == 5 and len(state["rollbacks"]) == 0
    assert all(torch.isfinite(t).all() for t in state["trainable"].values())
    assert not (out / "config.json").exists()
