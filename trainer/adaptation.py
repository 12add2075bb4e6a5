"""Label-prior adaptation for a multi-label classifier moved to a stream whose label frequencies differ from training.

Every label is its own binary problem (multi-label: a post may carry several emotions), so each function works
column by column on arrays shaped ``[n, labels]``; nothing here couples two labels.

Assumption shared by all of it (*label shift*, a.k.a. prior probability shift): the stream differs from the
source data only in how often each label occurs, ``p_target(y)`` vs ``p_source(y)``, while what a post of a given
label looks like, ``p(x | y)``, is unchanged. Under that assumption the classifier's source posterior can be
corrected exactly by Bayes' rule, and the target priors can be estimated from unlabelled target posts. When the
wording itself changes (a new domain, not just a new mix), the assumption is violated and the estimates are
biased; the corrections still tend to move in the right direction but are no substitute for labelled in-domain
data.

Methods:

- :func:`adapt_posteriors` -- Bayes prior correction of the posterior odds: ``odds' = odds * [t/(1-t)] / [s/(1-s)]``
  (Saerens, Latinne & Decaestecker 2002, eq. 2.4, here per binary label).
- :func:`em_priors` -- the EM procedure of the same paper (often called SLD): alternately adapt the posteriors to
  the current prior estimate and re-estimate the prior as their mean. Needs *calibrated* source posteriors; with a
  miscalibrated scorer it converges to a biased prior (Alexandari et al. 2020 fix that by calibrating first).
- :func:`acc_priors` -- adjusted classify-and-count (Forman 2008): the thresholded positive rate ``q`` relates to
  the true prevalence ``pi`` by ``q = tpr * pi + fpr * (1 - pi)``; solve for ``pi`` and clip to [0, 1]. For one
  binary label this is exactly black-box shift estimation (BBSE, Lipton, Wang & Smola 2018) with a 2x2 confusion
  matrix. Needs only hard decisions and the source ``tpr``/``fpr`` -- not calibration -- but assumes those rates
  carry over (label shift again).
- :func:`rates_at_thresholds` -- the ``tpr``/``fpr`` that ACC needs, measured on labelled source (dev) data.
- :func:`adapt_thresholds` -- the thresholds that make decisions on *unadapted* posteriors equal to decisions
  at the original thresholds on *adapted* posteriors.

All functions are pure numpy; they never return NaN for the edge cases (no samples, priors of exactly 0 or 1, a
label without positives): they either return a defined limit (documented per function) or raise ``ValueError``
saying which label is at fault.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adapt_posteriors",
    "em_priors",
    "acc_priors",
    "acc_from_rates",
    "rates_at_thresholds",
    "adapt_thresholds",
]


def _as_2d(probs) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[None, :]
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be shaped [n, labels], got {probs.shape}")
    if probs.size and (np.isnan(probs).any() or probs.min() < 0.0 or probs.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1] (no NaN)")
    return probs


def _priors(priors, n_labels: int, name: str) -> np.ndarray:
    priors = np.asarray(priors, dtype=np.float64).reshape(-1)
    if priors.shape != (n_labels,):
        raise ValueError(f"{name} must hold one prior per label ({n_labels}), got shape {priors.shape}")
    if np.isnan(priors).any() or priors.min() < 0.0 or priors.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (no NaN)")
    return priors


def _source_priors(source_priors, n_labels: int) -> np.ndarray:
    source = _priors(source_priors, n_labels, "source_priors")
    bad = np.flatnonzero((source <= 0.0) | (source >= 1.0))
    if bad.size:
        raise ValueError(
            f"source_priors must lie strictly inside (0, 1); label index(es) {bad.tolist()} are "
            f"{source[bad].tolist()}: a label the source never (or always) showed cannot be re-weighted")
    return source


def adapt_posteriors(probs, source_priors, target_priors) -> np.ndarray:
    """Re-weight source posteriors ``p(y_j=1 | x)`` to the target priors by Bayes' rule, label by label.

    ``p' = w1 p / (w1 p + w0 (1 - p))`` with ``w1 = t/s`` and ``w0 = (1-t)/(1-s)`` -- the positive odds are
    multiplied by the prior odds ratio (Saerens et al. 2002, eq. 2.4). Valid under label shift (``p(x|y)`` fixed)
    and only as good as the source posteriors' calibration.

    ``probs``: ``[n, labels]`` (or one row ``[labels]``); ``source_priors`` strictly inside (0, 1) (ValueError
    otherwise, naming the label); ``target_priors`` in [0, 1]. A target prior of exactly 0 (1) gives posteriors of
    exactly 0 (1) -- the limit of the formula, also where ``p`` is 0 or 1 itself. Returns an array shaped like
    ``probs`` (2-D for a 2-D input, 1-D for a 1-D input).
    """
    one_row = np.ndim(probs) == 1
    p = _as_2d(probs)
    source = _source_priors(source_priors, p.shape[1])
    target = _priors(target_priors, p.shape[1], "target_priors")
    adapted = _adapt(p, 1.0 - p, source, target)
    return adapted[0] if one_row else adapted


def _adapt(p: np.ndarray, q: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`adapt_posteriors` on validated arrays (``q = 1 - p``): EM's inner loop, without re-checking."""
    w1 = target / source
    w0 = (1.0 - target) / (1.0 - source)
    positive = w1[None, :] * p
    total = positive + w0[None, :] * q
    with np.errstate(invalid="ignore", divide="ignore"):
        adapted = np.where(total > 0.0, positive / np.where(total > 0.0, total, 1.0), 0.0)
    # total == 0 only where the target prior is 0 and p == 1, or the target prior is 1 and p == 0: the prior wins.
    if (target <= 0.0).any() or (target >= 1.0).any():
        adapted = np.where(target[None, :] <= 0.0, 0.0, adapted)
        adapted = np.where(target[None, :] >= 1.0, 1.0, adapted)
    return adapted


def em_priors(probs, source_priors, max_iter: int = 1000, tol: float = 1e-6, weights=None,
              return_info: bool = False):
    """Estimate the target stream's label priors from unlabelled posteriors by EM (Saerens, Latinne & Decaestecker
    2002, "Adjusting the outputs of a classifier to new a priori probabilities: a simple procedure"), per label.

    Start at the source priors; E-step: adapt every posterior to the current prior estimate
    (:func:`adapt_posteriors`); M-step: the new prior is the (weighted) mean of the adapted posteriors. Stops when no
    label's prior moves by more than ``tol`` or after ``max_iter`` rounds. Each iteration increases the likelihood
    of the unlabelled data, so it converges (to the maximum-likelihood prior under label shift), but slowly
    when a prior heads for 0.

    Assumes label shift and calibrated source posteriors: a scorer whose probabilities are too confident or too
    timid biases the estimate (calibrate on source dev first).

    ``probs``: ``[n, labels]``. ``weights`` (optional): a per-row ``[n]`` or per-cell ``[n, labels]`` count, so that
    ``probs`` may be histogram bin centres with their counts (what the worker accumulates per minute) instead
    of individual posts. With no rows (or zero total weight) for a label there is nothing to learn: its source
    prior is returned unchanged.

    Returns ``(target_priors [labels], adapted_probs [n, labels])``; with ``return_info=True`` a third item,
    ``{"iterations": int, "converged": bool}``.
    """
    p = _as_2d(probs)
    source = _source_priors(source_priors, p.shape[1])
    if weights is None:
        w = np.ones_like(p)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 1:
            w = np.broadcast_to(w[:, None], p.shape)
        if w.shape != p.shape or (w.size and (np.isnan(w).any() or w.min() < 0.0)):
            raise ValueError(f"weights must be non-negative, shaped [n] or {p.shape}, got {np.shape(weights)}")
    mass = w.sum(axis=0)
    has_data = mass > 0.0
    safe_mass = np.where(has_data, mass, 1.0)
    priors = source.copy()
    adapted = p.copy()
    converged = False
    iterations = 0
    q = 1.0 - p
    for iterations in range(1, max_iter + 1):
        adapted = _adapt(p, q, source, priors)
        updated = np.where(has_data, (adapted * w).sum(axis=0) / safe_mass, source)
        shift = np.abs(updated - priors).max() if updated.size else 0.0
        priors = updated
        if shift < tol:
            converged = True
            break
    adapted = _adapt(p, q, source, priors)
    if return_info:
        return priors, adapted, {"iterations": iterations, "converged": converged}
    return priors, adapted


def acc_from_rates(positive_rates, tpr, fpr, min_gap: float = 0.01) -> np.ndarray:
    """Adjusted classify-and-count from an observed positive (flagged) rate per label.

    ``pi = (q - fpr) / (tpr - fpr)``, clipped to [0, 1] (Forman 2008; = BBSE for one binary label). Where
    ``tpr - fpr < min_gap`` the classifier barely separates the label and the correction would divide by ~0: the
    uncorrected rate ``q`` is returned for that label instead (clear, never NaN or inf).

    Use this when only counts are at hand (e.g. a stream's per-emotion counts over a window divided by its posts).
    """
    q = np.asarray(positive_rates, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    fpr = np.asarray(fpr, dtype=np.float64)
    if tpr.shape != fpr.shape or q.shape[-1:] != tpr.shape:
        raise ValueError(f"positive_rates {q.shape}, tpr {tpr.shape} and fpr {fpr.shape} must agree per label")
    for name, values in (("positive_rates", q), ("tpr", tpr), ("fpr", fpr)):
        if values.size and (np.isnan(values).any() or values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(f"{name} must lie in [0, 1] (no NaN)")
    gap = tpr - fpr
    informative = gap >= min_gap
    corrected = (q - fpr) / np.where(informative, gap, 1.0)
    return np.where(informative, np.clip(corrected, 0.0, 1.0), q)


def acc_priors(probs, thresholds, tpr, fpr, min_gap: float = 0.01) -> np.ndarray:
    """Estimate the target priors by adjusted classify-and-count (ACC / binary BBSE), per label.

    Flags each post at ``probs >= thresholds`` (the classifier's own decision rule), takes the flagged rate ``q``
    per label and corrects it with the source true/false-positive rates at those thresholds
    (:func:`rates_at_thresholds` on source dev): see :func:`acc_from_rates` (clipping to [0, 1], fallback to ``q``
    where ``tpr - fpr < min_gap``). Assumes label shift (the rates carry over to the target); unlike EM it does not
    need calibrated probabilities. Raises ValueError for an empty sample (no rate to correct).
    """
    p = _as_2d(probs)
    if p.shape[0] == 0:
        raise ValueError("acc_priors needs at least one post")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.shape != (p.shape[1],):
        raise ValueError(f"thresholds must hold one value per label ({p.shape[1]}), got {thresholds.shape}")
    flagged = (p >= thresholds[None, :]).mean(axis=0)
    return acc_from_rates(flagged, tpr, fpr, min_gap=min_gap)


def rates_at_thresholds(probs, labels, thresholds, smoothing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """True- and false-positive rate per label of the rule ``probs >= thresholds`` on labelled data.

    ``tpr_j = TP_j / positives_j``, ``fpr_j = FP_j / negatives_j``. With ``smoothing = a > 0`` both become additive
    (Laplace) estimates ``(TP + a) / (positives + 2a)``, defined for every label. With ``smoothing = 0`` (exact
    rates) a label without positives (or without negatives) has no rate to measure: ValueError naming its index,
    rather than a NaN that would poison a correction later.

    Returns ``(tpr [labels], fpr [labels])``.
    """
    p = _as_2d(probs)
    y = np.asarray(labels)
    if y.ndim == 1:
        y = y[None, :]
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} must match probabilities {p.shape}")
    y = y.astype(bool)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.shape != (p.shape[1],):
        raise ValueError(f"thresholds must hold one value per label ({p.shape[1]}), got {thresholds.shape}")
    if smoothing < 0:
        raise ValueError("smoothing must be >= 0")
    flagged = p >= thresholds[None, :]
    positives = y.sum(axis=0).astype(np.float64)
    negatives = (~y).sum(axis=0).astype(np.float64)
    if smoothing == 0:
        missing_pos = np.flatnonzero(positives == 0)
        missing_neg = np.flatnonzero(negatives == 0)
        if missing_pos.size or missing_neg.size:
            raise ValueError(
                f"cannot measure rates: label index(es) {missing_pos.tolist()} have no positive and "
                f"{missing_neg.tolist()} no negative example; pass smoothing > 0 for a smoothed estimate")
    tp = (flagged & y).sum(axis=0)
    fp = (flagged & ~y).sum(axis=0)
    tpr = (tp + smoothing) / (positives + 2 * smoothing)
    fpr = (fp + smoothing) / (negatives + 2 * smoothing)
    return tpr, fpr


def adapt_thresholds(thresholds, source_priors, target_priors) -> np.ndarray:
    """Thresholds for the *unadapted* (source-scale) probabilities that take the same decisions as the original
    thresholds applied to posteriors adapted to ``target_priors``.

    ``p >= theta'`` exactly when ``adapt_posteriors(p, s, t) >= theta``, because the correction is monotone in
    ``p``: ``theta'`` is ``theta`` with its odds moved by the inverse prior odds ratio,
    ``odds(theta') = odds(theta) * [s/(1-s)] / [t/(1-t)]``. So a threshold keeps its meaning ("flag when the
    posterior for this stream reaches theta") while the artifact keeps emitting source-scale probabilities.
    A label whose stream prior rises gets a lower threshold, and vice versa.

    Limits (never NaN): under a target prior of 1 every adapted posterior is 1, so the threshold becomes 0.0 (flag
    everything); under a target prior of 0 every adapted posterior is 0, so it becomes 1.0 (flag only posts scored
    exactly 1), or stays 0.0 where the original threshold was 0.
    """
    theta = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    n = theta.shape[0]
    if np.isnan(theta).any() or (n and (theta.min() < 0.0 or theta.max() > 1.0)):
        raise ValueError("thresholds must lie in [0, 1] (no NaN)")
    source = _source_priors(source_priors, n)
    target = _priors(target_priors, n, "target_priors")
    # Moving a threshold from the target scale back to the source scale is the same correction with the roles of
    # the priors swapped, provided the "source" of that move (the target prior) lies inside (0, 1).
    inside = (target > 0.0) & (target < 1.0)
    safe_target = np.where(inside, target, 0.5)
    moved = adapt_posteriors(theta[None, :], safe_target, source)[0]
    moved = np.where(target <= 0.0, np.where(theta <= 0.0, 0.0, 1.0), moved)
    moved = np.where(target >= 1.0, 0.0, moved)
    return moved
