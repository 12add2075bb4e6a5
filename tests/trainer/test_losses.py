"""Focal loss against its formula, BCE equivalences, label-weight schemes."""

from __future__ import annotations

import numpy as np
import torch

from trainer.losses import BCELoss, FocalLoss, build_loss, label_weights


def _focal_by_hand(logits, targets, gamma, alpha=None, mode="balanced"):
    p = 1 / (1 + np.exp(-logits))
    p_t = np.where(targets == 1, p, 1 - p)
    loss = -((1 - p_t) ** gamma) * np.log(p_t)
    if alpha is not None:
        a = np.broadcast_to(alpha, logits.shape)
        weight = np.where(targets == 1, a, 1 - a) if mode == "balanced" else np.where(targets == 1, a, 1.0)
        loss = loss * weight
    return loss.mean()


def test_focal_matches_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(7, 5))
    targets = (rng.random((7, 5)) < 0.3).astype(np.float64)
    alpha = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    for gamma in (0.0, 1.0, 2.0, 3.5):
        got = FocalLoss(gamma, torch.tensor(alpha))(torch.tensor(logits), torch.tensor(targets)).item()
        assert np.isclose(got, _focal_by_hand(logits, targets, gamma, alpha), rtol=1e-5)
    weights = np.array([1.0, 2.0, 5.0, 0.5, 3.0])
    got = FocalLoss(2.0, torch.tensor(weights), alpha_mode="positive")(torch.tensor(logits), torch.tensor(targets))
    assert np.isclose(got.item(), _focal_by_hand(logits, targets, 2.0, weights, "positive"), rtol=1e-5)


def test_focal_gamma0_is_bce_and_downweights_easy_examples():
    logits = torch.tensor([[3.0, -3.0, 0.2]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    assert torch.isclose(FocalLoss(0.0)(logits, targets), BCELoss()(logits, targets))
    easy = FocalLoss(2.0)(torch.tensor([[4.0]]), torch.tensor([[1.0]])) / BCELoss()(torch.tensor([[4.0]]), torch.tensor([[1.0]]))
    hard = FocalLoss(2.0)(torch.tensor([[-1.0]]), torch.tensor([[1.0]])) / BCELoss()(torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    assert easy < 0.001 and hard > 0.5


def test_bce_pos_weight_scales_positive_term():
    logits, targets = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    plain = BCELoss()(logits, targets)
    weighted = BCELoss(torch.tensor([3.0, 3.0]))(logits, targets)
    # positive cell x3, negative cell unchanged: (3 ln2 + ln2) / 2 vs ln2
    assert torch.isclose(weighted, plain * 2)


def test_label_weight_schemes():
    counts, n = np.array([10, 100, 1000]), 2000
    inv = label_weights(counts, n, "inverse")
    assert np.allclose(inv, (n - counts) / counts)
    assert np.allclose(label_weights(counts, n, "sqrt_inverse"), np.sqrt(inv))
    eff = label_weights(counts, n, "effective", beta=0.99)
    raw = (1 - 0.99) / (1 - 0.99 ** counts)
    assert np.allclose(eff, raw / raw.mean()) and np.isclose(eff.mean(), 1.0)
    assert eff[0] > eff[1] > eff[2]
    assert np.allclose(label_weights(counts, n, "none"), 1.0)
    assert isinstance(build_loss("focal", inv, 2.0), FocalLoss)
    assert isinstance(build_loss("bce", None), BCELoss)


def test_loss_for_labels_counts_weights_on_the_given_matrix():
    from trainer.losses import loss_for_labels
    from trainer.settings import TrainerSettings

    Y = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    loss, weights = loss_for_labels(TrainerSettings(loss="bce", label_weights="sqrt_inverse"), Y)
    assert isinstance(loss, BCELoss) and np.allclose(weights, np.sqrt([1 / 3, 3 / 1]))
    assert torch.allclose(loss.pos_weight, torch.tensor(weights, dtype=torch.float32))
    loss, weights = loss_for_labels(TrainerSettings(loss="focal", label_weights="none", focal_gamma=1.5), Y)
    assert isinstance(loss, FocalLoss) and weights is None and loss.alpha is None and loss.gamma == 1.5
