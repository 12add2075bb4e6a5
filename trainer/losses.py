"""Multi-label losses and per-label weights for imbalanced emotion data.

* ``FocalLoss`` (Lin et al. 2017, per label): ``-alpha_j (1-p_t)^gamma log(p_t)`` with ``p_t = p`` for a positive
  and ``1-p`` for a negative; positives are weighted by ``alpha_j``, negatives by ``1 - alpha_j`` when
  ``alpha`` is a per-label probability-like vector, or ``alpha_j``/1 with ``alpha_mode='positive'``.
* ``weighted_bce`` — ``BCEWithLogits`` with optional per-label ``pos_weight``.
* ``AsymmetricLoss`` (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"): per cell
  ``-y (1-p)^gamma_pos log(p) - (1-y) p_m^gamma_neg log(1-p_m)`` with the shifted probability
  ``p_m = max(p - m, 0)``: negatives are focused harder than positives (``gamma_neg > gamma_pos``) and the very easy
  negatives (``p < m``) are discarded outright; the paper's setting is gamma_pos 0, gamma_neg 4, m 0.05.
* ``LabelSmoothing`` — any of the above on smoothed binary targets ``y (1 - eps) + eps / 2`` (each label is its own
  two-class problem, so ``eps/2`` goes to each side): the model is never pushed to 0/1 certainty on noisy labels.
* ``DistillationLoss`` — knowledge distillation for sigmoid outputs: ``alpha`` x the true-label loss (labelled rows)
  + ``(1 - alpha)`` x ``T^2`` x BCE between the student's ``sigmoid(z/T)`` and the teacher's
  ``sigmoid(logit(p_teacher)/T)`` (all rows, incl. unlabelled texts), Hinton et al. 2015 per label.
* ``label_weights`` — positive weights from inverse frequency (``neg_j / pos_j``, BCE's usual ``pos_weight``), its
  square root, or the effective number of samples (Cui et al. 2019: ``(1 - beta) / (1 - beta^n_j)``, normalised
  to mean 1 over labels as in the paper).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .settings import TrainerSettings

__all__ = ["FocalLoss", "BCELoss", "AsymmetricLoss", "LabelSmoothing", "DistillationLoss", "label_weights",
           "build_loss", "loss_for_labels"]


def label_weights(positive_counts: np.ndarray, n_rows: int, scheme: str, beta: float = 0.999) -> np.ndarray:
    """Per-label positive weights from the positive count of each label in ``n_rows`` training rows."""
    counts = np.maximum(np.asarray(positive_counts, dtype=np.float64), 1.0)
    negatives = np.maximum(n_rows - counts, 1.0)
    if scheme == "none":
        weights = np.ones_like(counts)
    elif scheme == "inverse":
        weights = negatives / counts
    elif scheme == "sqrt_inverse":
        weights = np.sqrt(negatives / counts)
    elif scheme == "effective":
        weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
        weights = weights / weights.mean()
    else:
        raise ValueError(f"unknown label weight scheme {scheme!r}")
    return weights


class BCELoss(nn.Module):
    """Mean BCE-with-logits over all (row, label) cells; ``pos_weight`` scales each label's positive term."""

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pw = self.pos_weight.to(logits.dtype) if self.pos_weight is not None else None
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pw)


class FocalLoss(nn.Module):
    """Multi-label focal loss, mean over (row, label) cells.

    ``alpha``: None (no class weighting), a float in (0,1) used for every label, or a per-label tensor. A value in
    (0,1) weights positives by ``alpha`` and negatives by ``1-alpha`` (the paper's form); ``alpha_mode='positive'``
    instead uses ``alpha`` as a positive-only weight (negatives weight 1), which suits label-frequency weights > 1.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | torch.Tensor | None = None, alpha_mode: str = "balanced"):
        super().__init__()
        if alpha_mode not in ("balanced", "positive"):
            raise ValueError("alpha_mode must be 'balanced' or 'positive'")
        self.gamma = float(gamma)
        self.alpha_mode = alpha_mode
        alpha_t = torch.as_tensor(alpha, dtype=torch.float32) if alpha is not None else None
        self.register_buffer("alpha", alpha_t)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        targets = targets.float()
        # log(p_t) computed stably from logits: -BCE.
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t).pow(self.gamma)
        if self.alpha is not None:
            alpha = self.alpha.to(logits.device)
            if self.alpha_mode == "balanced":
                loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
            else:
                loss = loss * (alpha * targets + (1 - targets))
        return loss.mean()


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021), mean over (row, label) cells; see the module docstring.

    ``pos_weight`` (optional, per label) scales the positive term like BCE's ``pos_weight``. Targets may be soft
    (label smoothing, distillation): the two terms are then mixed by ``y`` and ``1 - y``. ``eps`` keeps the logs
    finite; gradients flow through the focusing weights, as in the reference implementation's default.
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 pos_weight: torch.Tensor | None = None, eps: float = 1e-8):
        super().__init__()
        if gamma_pos < 0 or gamma_neg < 0 or not 0.0 <= clip < 1.0:
            raise ValueError("asymmetric loss needs gamma_pos, gamma_neg >= 0 and 0 <= clip < 1")
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = float(gamma_pos), float(gamma_neg), float(clip), eps
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        targets = targets.float()
        p = torch.sigmoid(logits)
        p_shifted = (p - self.clip).clamp(min=0.0) if self.clip > 0 else p
        positive = (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        negative = p_shifted.pow(self.gamma_neg) * torch.log((1 - p_shifted).clamp(min=self.eps))
        if self.pos_weight is not None:
            positive = positive * self.pos_weight.to(logits.device)
        return -(targets * positive + (1 - targets) * negative).mean()


class LabelSmoothing(nn.Module):
    """Wrap a multi-label loss so it sees ``y (1 - eps) + eps / 2`` instead of hard 0/1 targets."""

    def __init__(self, loss: nn.Module, eps: float):
        super().__init__()
        if not 0.0 <= eps < 1.0:
            raise ValueError("label smoothing eps must be in [0, 1)")
        self.loss, self.eps = loss, float(eps)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, targets.float() * (1 - self.eps) + self.eps / 2)


class DistillationLoss(nn.Module):
    """``alpha`` x ``true_loss`` on the labelled rows + ``(1 - alpha) T^2`` x soft BCE against the teacher.

    ``forward(logits, targets, teacher_proba, labelled)``: ``labelled`` (bool per row) marks the rows whose
    ``targets`` are real labels; unlabelled rows (extra texts) only contribute the teacher term. A batch without
    labelled rows contributes only ``(1 - alpha)`` x its teacher term, so the mix stays ``alpha`` : ``1 - alpha``
    per labelled batch. ``T^2`` keeps the teacher term's gradient scale independent of the temperature."""

    def __init__(self, true_loss: nn.Module, alpha: float = 0.5, temperature: float = 2.0, eps: float = 1e-6):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError("distillation needs 0 <= alpha <= 1 and temperature > 0")
        self.true_loss, self.alpha, self.temperature, self.eps = true_loss, float(alpha), float(temperature), eps

    def soft_targets(self, teacher_proba: torch.Tensor) -> torch.Tensor:
        """The teacher's probabilities at temperature T: ``sigmoid(logit(p) / T)``."""
        p = teacher_proba.float().clamp(self.eps, 1 - self.eps)
        return torch.sigmoid(torch.logit(p) / self.temperature)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, teacher_proba: torch.Tensor,
                labelled: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = self.temperature
        soft = F.binary_cross_entropy_with_logits(logits / t, self.soft_targets(teacher_proba))
        loss = (1 - self.alpha) * t * t * soft
        labelled = labelled.bool()
        if self.alpha > 0 and bool(labelled.any()):
            loss = loss + self.alpha * self.true_loss(logits[labelled], targets[labelled])
        return loss


def build_loss(kind: str, weights: np.ndarray | None, gamma: float = 2.0, *, asl_gamma_pos: float = 0.0,
               asl_gamma_neg: float = 4.0, asl_clip: float = 0.05, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss: BCE with ``pos_weight=weights``, focal with positive-only alpha = ``weights``, or
    asymmetric with ``pos_weight=weights``; wrapped in label smoothing when ``label_smoothing > 0``."""
    w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
    if kind == "bce":
        loss: nn.Module = BCELoss(w)
    elif kind == "focal":
        loss = FocalLoss(gamma=gamma, alpha=w, alpha_mode="positive")
    elif kind == "asl":
        loss = AsymmetricLoss(asl_gamma_pos, asl_gamma_neg, asl_clip, pos_weight=w)
    else:
        raise ValueError(f"unknown loss {kind!r}")
    return LabelSmoothing(loss, label_smoothing) if label_smoothing > 0 else loss


def loss_for_labels(settings: TrainerSettings, Y: np.ndarray) -> tuple[nn.Module, np.ndarray | None]:
    """The loss ``settings`` asks for (``loss``, ``label_weights``, ``effective_beta``, ``focal_gamma``, the
    ``asl_*`` and ``label_smoothing`` settings) with label weights counted on the training label matrix ``Y``;
    returns (loss, weights or None when weighting is off)."""
    Y = np.asarray(Y)
    weights = None if settings.label_weights == "none" else label_weights(
        Y.sum(axis=0), len(Y), settings.label_weights, settings.effective_beta)
    loss = build_loss(settings.loss, weights, settings.focal_gamma, asl_gamma_pos=settings.asl_gamma_pos,
                      asl_gamma_neg=settings.asl_gamma_neg, asl_clip=settings.asl_clip,
                      label_smoothing=settings.label_smoothing)
    return loss, weights
