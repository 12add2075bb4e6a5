"""ISMOTE for multi-label data, as a resampler with ``fit_resample(X, Y)`` (imbalanced-learn has no ISMOTE).

Reading of the method (Scientific Reports 2025, doi 10.1038/s41598-025-09506-w, "an enhanced SMOTE algorithm"):
SMOTE places a synthetic sample on the segment between a minority sample and one of its minority neighbours.
ISMOTE "first generates a base sample between two original samples. Then the Euclidean distance between the two
samples is multiplied by a random number to generate a random quantity", which is added or subtracted so that new
samples fall *around* the two originals rather than only on the segment. Our implementation, for anchor ``a`` and a
neighbour ``b`` (one of ``a``'s ``k`` nearest neighbours carrying the same minority label)::

    base   = a + u * (b - a)                 u ~ U(0, 1)            (the SMOTE point)
    d      = ||b - a||                                              (Euclidean distance of the pair)
    offset = radius * v * d * e              v ~ U(0, 1), e a uniformly random unit vector
    x_new  = base + offset

so every synthetic sample lies within ``radius * d`` of its base point (a ball around the segment; the random
direction covers both "add" and "subtract"), and ``radius=0`` gives plain SMOTE. In a 384-dimensional embedding
space the random direction is almost orthogonal to the segment, i.e. the samples fill a tube around it.

Multi-label: each label whose positive count is below ``target`` (a fraction of the median label count, or an
explicit per-label count) is a minority label; labels are processed independently against the *original* data.
The new sample's label vector (``label_mode``):

* ``anchor`` (default) — the anchor's full label vector (the point is closest to the anchor's neighbourhood);
* ``union`` — anchor OR neighbour; ``intersection`` — anchor AND neighbour (always contains the minority label);
* ``single`` — only the minority label it was generated for (what a one-vs-rest SMOTE produces).

After ``fit_resample``: ``pairs_`` (anchor, neighbour row indices), ``bases_`` (the segment points),
``synthetic_label_`` (the minority label each sample was made for) and ``plan_`` (label -> samples added).
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

__all__ = ["ISMOTE", "minority_targets"]


def minority_targets(Y: np.ndarray, target: float | dict[int, int]) -> dict[int, int]:
    """label index -> desired positive count (only labels below it). ``target`` in (0,1]: fraction of the median
    positive count over labels that have any; a dict: explicit counts."""
    counts = np.asarray(Y).sum(axis=0).astype(int)
    if isinstance(target, dict):
        wanted = {int(j): int(t) for j, t in target.items()}
    else:
        median = float(np.median(counts[counts > 0])) if (counts > 0).any() else 0.0
        wanted = {j: int(np.ceil(target * median)) for j in range(len(counts))}
    return {j: t for j, t in wanted.items() if 0 < counts[j] < t}


class ISMOTE:
    """Multi-label ISMOTE oversampler (see the module docstring). Deterministic for a given ``random_state``."""

    def __init__(self, k_neighbors: int = 5, radius: float = 0.5, target: float | dict[int, int] = 0.5,
                 label_mode: str = "anchor", random_state: int | None = 0):
        if label_mode not in ("anchor", "union", "intersection", "single"):
            raise ValueError(f"unknown label_mode {label_mode!r}")
        if radius < 0:
            raise ValueError("radius must be >= 0")
        self.k_neighbors = k_neighbors
        self.radius = radius
        self.target = target
        self.label_mode = label_mode
        self.random_state = random_state

    def fit_resample(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(X + synthetic rows, Y + their label vectors)``; the original rows come first, unchanged."""
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y)
        if Y.ndim == 1:
            Y = Y[:, None]
        if len(X) != len(Y):
            raise ValueError(f"X has {len(X)} rows, Y has {len(Y)}")
        rng = np.random.default_rng(self.random_state)
        plan = minority_targets(Y, self.target)
        new_x, new_y, pairs, bases, made_for = [], [], [], [], []
        self.plan_ = {}
        for j in sorted(plan):
            rows = np.flatnonzero(Y[:, j] == 1)
            n_new = plan[j] - len(rows)
            if len(rows) < 2 or n_new <= 0:
                self.plan_[j] = 0
                continue
            k = min(self.k_neighbors, len(rows) - 1)
            neighbours = NearestNeighbors(n_neighbors=k + 1).fit(X[rows]).kneighbors(X[rows], return_distance=False)
            anchor_pos = rng.integers(0, len(rows), size=n_new)
            neighbour_pos = neighbours[anchor_pos, rng.integers(1, k + 1, size=n_new)]
            a, b = rows[anchor_pos], rows[neighbour_pos]
            u = rng.random((n_new, 1), dtype=np.float32)
            base = X[a] + u * (X[b] - X[a])
            distance = np.linalg.norm(X[b] - X[a], axis=1, keepdims=True)
            direction = rng.standard_normal(base.shape).astype(np.float32)
            direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
            v = rng.random((n_new, 1), dtype=np.float32)
            new_x.append(base + self.radius * v * distance * direction)
            new_y.append(self._labels(Y, a, b, j))
            pairs.append(np.stack([a, b], axis=1))
            bases.append(base)
            made_for.append(np.full(n_new, j))
            self.plan_[j] = n_new
        if not new_x:
            self.pairs_ = np.zeros((0, 2), dtype=int)
            self.bases_ = np.zeros((0, X.shape[1]), dtype=np.float32)
            self.synthetic_label_ = np.zeros(0, dtype=int)
            return X, Y
        self.pairs_ = np.concatenate(pairs)
        self.bases_ = np.concatenate(bases)
        self.synthetic_label_ = np.concatenate(made_for)
        return np.concatenate([X, *new_x]), np.concatenate([Y, *new_y]).astype(Y.dtype)

    def _labels(self, Y: np.ndarray, a: np.ndarray, b: np.ndarray, j: int) -> np.ndarray:
        if self.label_mode == "anchor":
            out = Y[a].copy()
        elif self.label_mode == "union":
            out = np.maximum(Y[a], Y[b])
        elif self.label_mode == "intersection":
            out = np.minimum(Y[a], Y[b])
        else:
            out = np.zeros((len(a), Y.shape[1]), dtype=Y.dtype)
            out[:, j] = 1
        return out
