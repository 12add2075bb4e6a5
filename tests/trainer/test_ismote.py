"""ISMOTE: how many samples, where they fall (around the pair, within bounds), label vectors, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.ismote import ISMOTE, minority_targets


@pytest.fixture()
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    Y = np.zeros((400, 4), dtype=np.uint8)
    Y[:, 0] = 1  # a majority label on every row
    Y[:20, 1] = 1  # minority label 1: 20 rows
    Y[20:30, 2] = 1  # minority label 2: 10 rows
    Y[:5, 2] = 1  # rows 0-4 carry labels 0, 1 and 2
    Y[100:300, 3] = 1  # 200 rows: above target
    X[:30] += 4.0  # minorities cluster away from the rest
    return X, Y


def _distance_to_segment(p, a, b):
    ab = b - a
    t = np.clip(((p - a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-12), 0, 1)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def test_counts_follow_the_plan(data):
    X, Y = data
    plan = minority_targets(Y, {1: 60, 2: 50, 3: 100})
    assert plan == {1: 60, 2: 50}  # label 3 already has 200
    sampler = ISMOTE(k_neighbors=5, radius=0.5, target={1: 60, 2: 50, 3: 100}, random_state=0)
    Xr, Yr = sampler.fit_resample(X, Y)
    assert len(Xr) == len(X) + 40 + 35 and len(Yr) == len(Xr)
    assert np.array_equal(Xr[: len(X)], X) and np.array_equal(Yr[: len(Y)], Y)  # originals untouched, first
    assert sampler.plan_ == {1: 40, 2: 35}
    assert (np.bincount(sampler.synthetic_label_) [1:3] == [40, 35]).all()
    # fraction target: half the median positive count
    counts = Y.sum(axis=0)
    assert minority_targets(Y, 0.5) == {j: int(np.ceil(0.5 * np.median(counts))) for j in range(4)
                                        if counts[j] < np.ceil(0.5 * np.median(counts))}


def test_samples_fall_around_the_pair_within_bounds(data):
    X, Y = data
    sampler = ISMOTE(k_neighbors=3, radius=0.5, target={1: 220}, random_state=1)
    Xr, _ = sampler.fit_resample(X, Y)
    synth = Xr[len(X):]
    a, b = X[sampler.pairs_[:, 0]], X[sampler.pairs_[:, 1]]
    d = np.linalg.norm(b - a, axis=1)
    assert (Y[sampler.pairs_[:, 0], 1] == 1).all() and (Y[sampler.pairs_[:, 1], 1] == 1).all()
    assert (sampler.pairs_[:, 0] != sampler.pairs_[:, 1]).all()
    # bases lie on the segment; samples within radius * d of their base ...
    assert np.allclose(_distance_to_segment(sampler.bases_, a, b), 0, atol=1e-4)
    offset = np.linalg.norm(synth - sampler.bases_, axis=1)
    assert (offset <= 0.5 * d + 1e-5).all()
    # ... and, unlike SMOTE, mostly off the segment
    off = _distance_to_segment(synth, a, b)
    assert (off > 1e-3).mean() > 0.9
    assert off.max() > 0.1 * d.mean()


def test_radius_zero_is_smote(data):
    X, Y = data
    sampler = ISMOTE(radius=0.0, target={1: 60}, random_state=2)
    Xr, _ = sampler.fit_resample(X, Y)
    a, b = X[sampler.pairs_[:, 0]], X[sampler.pairs_[:, 1]]
    assert np.allclose(_distance_to_segment(Xr[len(X):], a, b), 0, atol=1e-4)


@pytest.mark.parametrize("mode", ["anchor", "union", "intersection", "single"])
def test_label_vectors(data, mode):
    X, Y = data
    sampler = ISMOTE(label_mode=mode, target={2: 80}, random_state=4)
    _, Yr = sampler.fit_resample(X, Y)
    synth = Yr[len(Y):]
    ya, yb = Y[sampler.pairs_[:, 0]], Y[sampler.pairs_[:, 1]]
    expected = {"anchor": ya, "union": np.maximum(ya, yb), "intersection": np.minimum(ya, yb)}.get(mode)
    if mode == "single":
        expected = np.zeros_like(ya)
        expected[:, 2] = 1
    assert np.array_equal(synth, expected)
    assert (synth[:, 2] == 1).all()  # the minority label is always on
    if mode == "anchor":
        # rows 0-4 carry labels 1 and 2: anchors among them pass label 1 on too
        assert synth[:, 1].any()


def test_deterministic_under_seed(data):
    X, Y = data
    first = ISMOTE(target=0.9, random_state=7).fit_resample(X, Y)
    second = ISMOTE(target=0.9, random_state=7).fit_resample(X, Y)
    third = ISMOTE(target=0.9, random_state=8).fit_resample(X, Y)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(first[0], third[0])


def test_nothing_to_do_returns_input(data):
    X, Y = data
    Xr, Yr = ISMOTE(target={3: 10}).fit_resample(X, Y)
    assert Xr is X or np.array_equal(Xr, X)
    assert len(Yr) == len(Y)
    with pytest.raises(ValueError):
        ISMOTE(label_mode="mean")


def _expected_labels(mode, Y, pairs, minority):
    ya, yb = Y[pairs[:, 0]], Y[pairs[:, 1]]
    if mode == "single":
        expected = np.zeros_like(ya)
        expected[np.arange(len(ya)), minority] = 1
        return expected
    return {"anchor": ya, "union": np.maximum(ya, yb), "intersection": np.minimum(ya, yb)}[mode]


def test_smote_comparison_places_and_labels_like_smote(data):
    from trainer.settings import TrainerSettings
    from trainer.stage2 import resample

    X, Y = data
    settings = TrainerSettings(ismote_target=0.5, ismote_k=3, seed=0)
    # label counts 400, 20, 15, 200: median 110, target ceil(0.5 * 110) = 55 -> 35 rows for label 1, 40 for label 2
    Xs, Ys = resample("smote", X, Y, settings)
    Xi, Yi = resample("ismote", X, Y, settings)
    assert len(Xs) == len(Xi) == len(X) + 35 + 40
    assert np.array_equal(Xs[:len(X)], X) and np.array_equal(Ys[:len(Y)], Y)
    # SMOTE rows, label by label in label order, carry their minority label only ...
    one_hot = np.zeros((75, 4), dtype=Y.dtype)
    one_hot[:35, 1] = 1
    one_hot[35:, 2] = 1
    assert np.array_equal(Ys[len(Y):], one_hot)
    # ... and each lies on a segment between two rows of that label (SMOTE interpolates, nothing else)
    for row, label in zip(Xs[len(X):], one_hot.argmax(axis=1)):
        members = X[Y[:, label] == 1]
        a = np.repeat(members, len(members), axis=0)
        b = np.tile(members, (len(members), 1))
        assert _distance_to_segment(row[None, :].repeat(len(a), 0), a, b).min() < 1e-4
    # the ISMOTE rows are the resampler's own, configured from the settings, with anchor labels (the default mode)
    sampler = ISMOTE(settings.ismote_k, settings.ismote_radius, settings.ismote_target, settings.ismote_label_mode,
                     settings.seed)
    Xr, _ = sampler.fit_resample(X, Y)
    assert settings.ismote_label_mode == "anchor" and np.array_equal(Xi, Xr)
    assert np.array_equal(Yi[len(Y):], Y[sampler.pairs_[:, 0]])
    assert np.bincount(sampler.synthetic_label_, minlength=4).tolist() == [0, 35, 40, 0]


@pytest.mark.parametrize("mode", ["anchor", "union", "intersection", "single"])
def test_every_resampler_label_mode_is_a_valid_setting(data, mode):
    """The settings (and so `train --ismote-label-mode`) accept every mode the resampler implements, and stage 2's
    resampling honours it: samples within radius x pair distance of their pair, labelled as the mode says."""
    from trainer.settings import TrainerSettings
    from trainer.stage2 import resample

    settings = TrainerSettings(ismote_label_mode=mode, ismote_target=0.5, ismote_k=3, ismote_radius=0.5, seed=5)
    assert settings.ismote_label_mode == mode
    X, Y = data
    Xr, Yr = resample("ismote", X, Y, settings)
    reference = ISMOTE(3, 0.5, 0.5, mode, 5)
    Xref, _ = reference.fit_resample(X, Y)
    assert np.array_equal(Xr, Xref) and len(Yr) == len(X) + 75
    pairs, minority = reference.pairs_, reference.synthetic_label_
    assert (Y[pairs[:, 0], minority] == 1).all() and (Y[pairs[:, 1], minority] == 1).all()
    a, b = X[pairs[:, 0]], X[pairs[:, 1]]
    assert (_distance_to_segment(Xr[len(X):], a, b) <= 0.5 * np.linalg.norm(b - a, axis=1) + 1e-5).all()
    assert np.array_equal(Yr[len(Y):], _expected_labels(mode, Y, pairs, minority))
