"""Label-prior adaptation (trainer.adaptation) on synthetic label-shifted samples where the truth is known.

The synthetic scorer: for each label, a score ``x | y ~ Normal(+-SEPARATION/2, 1)`` and the *calibrated* source
posterior ``p = sigmoid(SEPARATION * x + logit(source_prior))`` (the exact Bayes posterior under the source prior).
Target samples draw ``y`` with the target prior and ``x | y`` from the same class-conditionals, i.e. pure label
shift. Tolerance stated for prior recovery: +-0.02 absolute per label at n = 5,000 (EM) and +-0.03 (ACC, which
uses only hard decisions and so has more variance), checked over several seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.adaptation import (
    acc_from_rates,
    acc_priors,
    adapt_posteriors,
    adapt_thresholds,
    em_priors,
    rates_at_thresholds,
)

SEPARATION = 3.0
SOURCE = np.array([0.036, 0.20, 0.50, 0.10])
TARGET = np.array([0.34, 0.05, 0.50, 0.0])  # anger-rich, rarer, unchanged, absent


def _logit(p):
    return np.log(p / (1 - p))


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _sample(priors, n, rng):
    """(labels [n, L], scores x [n, L], calibrated *source* posteriors [n, L]) under the given label priors."""
    y = rng.random((n, priors.size)) < priors[None, :]
    x = rng.normal(np.where(y, SEPARATION / 2, -SEPARATION / 2), 1.0)
    # log-likelihood ratio of N(+d/2,1) vs N(-d/2,1) is d*x; plus the source prior log-odds
    return y, x, _sigmoid(SEPARATION * x + _logit(SOURCE)[None, :])


def test_adapted_posteriors_equal_the_true_target_posteriors():
    rng = np.random.default_rng(0)
    _, x, source_posterior = _sample(TARGET, 2000, rng)
    target = np.array([0.34, 0.05, 0.5, 0.01])
    adapted = adapt_posteriors(source_posterior, SOURCE, target)
    assert np.allclose(adapted, _sigmoid(SEPARATION * x + _logit(target)[None, :]), atol=1e-9)
    # the same priors leave posteriors untouched; a single row keeps its 1-D shape
    assert np.allclose(adapt_posteriors(source_posterior, SOURCE, SOURCE), source_posterior)
    assert adapt_posteriors(source_posterior[0], SOURCE, target).shape == (4,)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_em_and_acc_recover_known_priors(seed):
    rng = np.random.default_rng(seed)
    # tpr/fpr measured on a labelled source sample, as on GoEmotions dev
    thresholds = np.array([0.3, 0.4, 0.5, 0.35])
    y_dev, _, p_dev = _sample(SOURCE, 20_000, rng)
    tpr, fpr = rates_at_thresholds(p_dev, y_dev, thresholds)
    y, _, p = _sample(TARGET, 5000, rng)
    true_share = y.mean(axis=0)

    em, adapted, info = em_priors(p, SOURCE, return_info=True)
    assert info["converged"] and info["iterations"] < 1000
    assert np.abs(em - true_share).max() <= 0.02, (em, true_share)
    assert np.abs(adapted.mean(axis=0) - em).max() < 1e-4  # EM's fixed point: the prior is the mean posterior

    acc = acc_priors(p, thresholds, tpr, fpr)
    assert np.abs(acc - true_share).max() <= 0.03, (acc, true_share)
    # the raw flagged rate is far off for the shifted label: adaptation is doing the work
    assert abs((p[:, 0] >= thresholds[0]).mean() - true_share[0]) > 0.05


def test_em_converges_to_a_fixed_point_from_histogram_weights():
    """Histogram bins (centre probability + count) give the same estimate as the posts they summarise."""
    rng = np.random.default_rng(7)
    _, _, p = _sample(TARGET, 3000, rng)
    rounded = np.round(p, 2)  # 101 "bins" per label
    priors_rows, _ = em_priors(rounded, SOURCE, tol=1e-9)
    centres = np.linspace(0, 1, 101)[:, None].repeat(4, axis=1)
    counts = np.stack([np.bincount(np.round(rounded[:, j] * 100).astype(int), minlength=101) for j in range(4)], 1)
    priors_bins, adapted = em_priors(centres, SOURCE, tol=1e-9, weights=counts)
    assert np.allclose(priors_rows, priors_bins, atol=1e-6)
    assert adapted.shape == centres.shape


def test_em_without_data_keeps_the_source_priors():
    priors, adapted = em_priors(np.empty((0, 4)), SOURCE)
    assert np.array_equal(priors, SOURCE) and adapted.shape == (0, 4)
    # zero weight for one label: that label keeps its source prior, the others are estimated
    rng = np.random.default_rng(3)
    _, _, p = _sample(TARGET, 500, rng)
    weights = np.ones_like(p)
    weights[:, 1] = 0
    priors, _ = em_priors(p, SOURCE, weights=weights)
    assert priors[1] == SOURCE[1] and not np.isnan(priors).any() and priors[0] > 0.2


def test_acc_clips_and_falls_back_where_the_classifier_cannot_separate():
    tpr = np.array([0.8, 0.8, 0.5, 0.9])
    fpr = np.array([0.1, 0.1, 0.5, 0.0])
    q = np.array([0.05, 0.95, 0.3, 0.45])
    adjusted = acc_from_rates(q, tpr, fpr)
    assert adjusted[0] == 0.0  # below the false-positive floor: clipped, not negative
    assert adjusted[1] == 1.0  # above tpr: clipped, not > 1
    assert adjusted[2] == 0.3  # tpr == fpr: no information, the raw rate comes back
    assert np.isclose(adjusted[3], 0.5)
    with pytest.raises(ValueError, match="at least one post"):
        acc_priors(np.empty((0, 4)), [0.5] * 4, tpr, fpr)


def test_priors_of_zero_and_one_give_limits_not_nan():
    p = np.array([[0.0, 0.3, 1.0], [1.0, 0.7, 0.0]])
    source = np.array([0.2, 0.2, 0.2])
    adapted = adapt_posteriors(p, source, [0.0, 1.0, 0.5])
    assert not np.isnan(adapted).any()
    assert np.array_equal(adapted[:, 0], [0.0, 0.0]) and np.array_equal(adapted[:, 1], [1.0, 1.0])
    assert adapted[0, 2] == 1.0 and adapted[1, 2] == 0.0  # certain posteriors stay certain
    with pytest.raises(ValueError, match=r"index\(es\) \[1\]"):
        adapt_posteriors(p, [0.2, 0.0, 0.3], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="source_priors"):
        em_priors(p, [0.2, 1.0, 0.3])
    assert np.array_equal(adapt_thresholds([0.4, 0.4, 0.0], source, [0.0, 1.0, 0.0]), [1.0, 0.0, 0.0])


def test_rates_without_positives_fail_clearly_or_smooth():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"\[1\] have no positive"):
        rates_at_thresholds(probs, labels, [0.5, 0.5])
    tpr, fpr = rates_at_thresholds(probs, labels, [0.5, 0.5], smoothing=0.5)
    assert np.isfinite(tpr).all() and np.isclose(tpr[1], 0.5)  # (0 + 0.5) / (0 + 1)
    assert np.isclose(tpr[0], (2 + 0.5) / (2 + 1)) and np.isclose(fpr[0], 0.5 / 2)


def test_adapted_thresholds_take_the_same_decisions_as_adapted_posteriors():
    rng = np.random.default_rng(11)
    _, _, p = _sample(TARGET, 4000, rng)
    thresholds = np.array([0.3, 0.4, 0.5, 0.35])
    target = np.array([0.34, 0.05, 0.5, 0.02])
    moved = adapt_thresholds(thresholds, SOURCE, target)
    assert moved[0] < thresholds[0] and moved[1] > thresholds[1] and np.isclose(moved[2], thresholds[2])
    on_adapted = adapt_posteriors(p, SOURCE, target) >= thresholds[None, :]
    on_raw = p >= moved[None, :]
    # identical decisions except for float ties exactly at the cut
    assert (on_adapted != on_raw).sum() <= 2
