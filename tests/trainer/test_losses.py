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


# --- asymmetric loss, label smoothing, distillation (issue 14) -------------------------------------------------


def _asl_by_hand(logits, targets, gamma_pos, gamma_neg, clip):
    p = 1 / (1 + np.exp(-logits))
    p_m = np.maximum(p - clip, 0.0)
    positive = (1 - p) ** gamma_pos * np.log(p)
    negative = p_m ** gamma_neg * np.log(1 - p_m)
    return -(targets * positive + (1 - targets) * negative).mean()


def test_asymmetric_loss_on_hand_computed_cells():
    from trainer.losses import AsymmetricLoss

    asl = AsymmetricLoss(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)
    # logit 0 -> p 0.5. Positive: -log 0.5. Negative: p_m = 0.45, 0.45^4 * -log(0.55) = 0.0245151
    assert np.isclose(asl(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item(), np.log(2), rtol=1e-6)
    assert np.isclose(asl(torch.tensor([[0.0]]), torch.tensor([[0.0]])).item(), 0.0245151, rtol=1e-5)
    # an easy negative below the margin (p = sigmoid(-4) = 0.018 < 0.05) is discarded: loss and gradient 0
    easy = torch.tensor([[-4.0]], requires_grad=True)
    loss = asl(easy, torch.tensor([[0.0]]))
    loss.backward()
    assert loss.item() == 0.0 and easy.grad.item() == 0.0
    # logit 1 -> p 0.7310586; gamma_pos 1: (1-p) * -log p = 0.0842490; negative: p_m 0.6810586 -> 0.2458602
    asl1 = AsymmetricLoss(gamma_pos=1.0, gamma_neg=4.0, clip=0.05)
    both = asl1(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])).item()
    assert np.isclose(both, (0.0842490 + 0.2458602) / 2, rtol=1e-5)


def test_asymmetric_loss_matches_formula_and_reduces_to_bce():
    from trainer.losses import AsymmetricLoss

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(6, 5))
    targets = (rng.random((6, 5)) < 0.3).astype(np.float64)
    for gp, gn, m in ((0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (0.0, 0.0, 0.0)):
        got = AsymmetricLoss(gp, gn, m)(torch.tensor(logits), torch.tensor(targets)).item()
        assert np.isclose(got, _asl_by_hand(logits, targets, gp, gn, m), rtol=1e-5)
    # no focusing and no margin: plain BCE; with pos_weight like BCE's pos_weight
    t_logits, t_targets = torch.tensor(logits, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32)
    assert torch.isclose(AsymmetricLoss(0, 0, 0)(t_logits, t_targets), BCELoss()(t_logits, t_targets))
    w = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0])
    assert torch.isclose(AsymmetricLoss(0, 0, 0, pos_weight=w)(t_logits, t_targets), BCELoss(w)(t_logits, t_targets),
                         rtol=1e-5)


def test_label_smoothing_moves_targets_toward_one_half():
    from trainer.losses import LabelSmoothing

    smoothed = LabelSmoothing(BCELoss(), 0.1)
    # logit 2 (p 0.8807971), y 1 -> target 0.95: -(0.95 log p + 0.05 log(1-p)) = 0.2269280
    assert np.isclose(smoothed(torch.tensor([[2.0]]), torch.tensor([[1.0]])).item(), 0.2269280, rtol=1e-5)
    # the optimum is no longer certainty: the gradient vanishes at p = 0.95, not at p -> 1
    z = torch.tensor([[float(np.log(0.95 / 0.05))]], requires_grad=True)
    smoothed(z, torch.tensor([[1.0]])).backward()
    assert abs(z.grad.item()) < 1e-6
    assert isinstance(build_loss("asl", None, label_smoothing=0.1), LabelSmoothing)
    assert not isinstance(build_loss("bce", None, label_smoothing=0.0), LabelSmoothing)


def test_settings_switch_the_new_losses():
    from trainer.losses import AsymmetricLoss, LabelSmoothing, loss_for_labels
    from trainer.settings import TrainerSettings

    Y = np.array([[1, 0], [0, 1], [0, 0]])
    loss, _ = loss_for_labels(TrainerSettings(loss="asl", asl_gamma_neg=3.0, asl_clip=0.1, label_weights="none"), Y)
    assert isinstance(loss, AsymmetricLoss) and (loss.gamma_pos, loss.gamma_neg, loss.clip) == (0.0, 3.0, 0.1)
    loss, _ = loss_for_labels(TrainerSettings(loss="bce", label_smoothing=0.2), Y)
    assert isinstance(loss, LabelSmoothing) and loss.eps == 0.2 and isinstance(loss.loss, BCELoss)


def test_distillation_loss_on_hand_computed_values():
    from trainer.losses import DistillationLoss

    # teacher p 0.8 at T 2: sigmoid(logit(0.8) / 2) = 2/3. Student logit 0 -> sigmoid(0/2) = 0.5:
    # BCE(0.5, 2/3) = ln 2, times T^2 = 4, times (1 - alpha)
    kd = DistillationLoss(BCELoss(), alpha=0.25, temperature=2.0)
    assert torch.isclose(kd.soft_targets(torch.tensor([0.8])), torch.tensor([2 / 3]))
    logits, targets, teacher = torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[0.8]])
    unlabelled = kd(logits, targets, teacher, torch.tensor([False])).item()
    assert np.isclose(unlabelled, 0.75 * 4 * np.log(2), rtol=1e-6)
    labelled = kd(logits, targets, teacher, torch.tensor([True])).item()
    assert np.isclose(labelled, 0.75 * 4 * np.log(2) + 0.25 * np.log(2), rtol=1e-6)  # + alpha * BCE(0, y=1)
    # pure distillation is minimised exactly at the teacher's logit, whatever the temperature
    z = torch.tensor([[float(np.log(0.8 / 0.2))]], requires_grad=True)
    DistillationLoss(BCELoss(), alpha=0.0, temperature=3.0)(z, torch.tensor([[0.0]]), teacher,
                                                            torch.tensor([True])).backward()
    assert abs(z.grad.item()) < 1e-6
