"""Multi-label losses and per-label weights for imbalanced emotion data.

* ``FocalLoss`` (Lin et al. 2017, per label): ``-alpha_j (1-p_t)^gamma log(p_t)`` with ``p_t = p`` for a positive
  and ``1-p`` for a negative; positives are weighted by ``alpha_j``, negatives by ``1 - alpha_j`` when
  ``alpha`` is a per-label probability-like vector, or ``alpha_j``/1 with ``alpha_mode='positive'``.
* ``weighted_bce`` — ``BCEWithLogits`` with optional per-label ``pos_weight``.
* ``label_weights`` — positive weights from inverse frequency (``neg_j / pos_j``, BCE's usual ``pos_weight``), its
  square root, or the effective number of samples (Cui et al. 2019: ``(1 - beta) / (1 - beta^n_j)``, normalised
  to mean 1 over labels as in the paper).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FocalLoss", "BCELoss", "label_weights", "build_loss", "loss_for_labels"]


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


def build_loss(kind: str, weights: np.ndarray | None, gamma: float = 2.0) -> nn.Module:
    """The training loss: BCE with ``pos_weight=weights`` or focal with positive-only alpha = ``weights``."""
    w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
    if kind == "bce":
        return BCELoss(w)
    if kind == "focal":
        return FocalLoss(gamma=gamma, alpha=w, alpha_mode="positive")
    raise ValueError(f"unknown loss {kind!r}")


def loss_for_labels(settings, Y: np.ndarray) -> tuple[nn.Module, np.ndarray | None]:
    """The loss ``settings`` asks for (``loss``, ``label_weights``, ``effective_beta``, ``focal_gamma``) with label
    weights counted on the training label matrix ``Y``; returns (loss, weights or None when weighting is off)."""
    Y = np.asarray(Y)
    weights = None if settings.label_weights == "none" else label_weights(
        Y.sum(axis=0), len(Y), settings.label_weights, settings.effective_beta)
    return build_loss(settings.loss, weights, settings.focal_gamma), weights
