"""The exponentially weighted rolling baseline (``alert_baseline_halflife_ms > 0``,
:func:`monitor.detector.ewma_counts`): its share follows a step at the stated rate, its effective size gives the binomial variance of its share, it never
holds the window under test, and the replay with it fires on a clear spike and not on a flat series."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detector import DetectorParams, ewma_counts, ewma_horizon, replay_detector, replay_inputs
from monitor.settings import MonitorSettings

DAY = 1440


def test_the_baseline_follows_a_step_at_the_stated_half_life():
    """100 posts a minute, 5 % angry, then 15 % from minute 500 on; half-life 10 min, 5-min window. The baseline of
    the window ending at t weighs minute t - 5 - j by 2^(-j/10) over 60 minutes (6 half-lives): m minutes after the
    step entered it, the new share holds (1 - 2^(-m/10)) / (1 - 2^(-6)) of the weight, by the geometric sum."""
    n = np.full(1000, 100.0)
    k = np.where(np.arange(1000) < 500, 5.0, 15.0)
    halflife, window = 10.0, 5
    kb, nb = ewma_counts(k, n, window, halflife)
    assert ewma_horizon(halflife) == 60
    full = 1 - 0.5 ** 6
    for m in (0, 5, 10, 20, 40, 60):  # m minutes of the new share in the baseline: window ending at 500 + 5 + m - 1
        t = 500 + window + m - 1
        new_weight = (1 - 0.5 ** (m / halflife)) / full
        assert kb[t] / nb[t] == pytest.approx(0.05 + 0.10 * new_weight, rel=1e-9), m
    # half-way after one half-life (up to the 1/64 truncation)
    assert kb[500 + window + 9] / nb[500 + window + 9] == pytest.approx(0.10, abs=0.002)
    # effective posts with 100 posts a minute: 100 (sum w)^2 / sum w^2, the two geometric sums
    lam = 0.5 ** (1 / halflife)
    sum_w, sum_w2 = (1 - lam ** 60) / (1 - lam), (1 - lam ** 120) / (1 - lam ** 2)
    assert nb[800] == pytest.approx(100 * sum_w ** 2 / sum_w2, rel=1e-9)
    # before any minute reaches the baseline: nothing counted (as in Redis before the first sample)
    assert kb[:window].tolist() == [0.0] * window and nb[:window].tolist() == [0.0] * window


def test_the_window_itself_never_enters_its_baseline():
    """A spike confined to the last 5 minutes leaves the 5-min window's baseline where it was."""
    rng = np.random.default_rng(3)
    n = rng.poisson(50, size=600).astype(float)
    k = rng.binomial(n.astype(int), 0.05).astype(float)
    spiked = k.copy()
    spiked[-5:] = n[-5:] * 0.5
    for window in (5, 15):
        before, after = ewma_counts(k, n, window, 15.0), ewma_counts(spiked, n, window, 15.0)
        assert after[0][-1] == before[0][-1] and after[1][-1] == before[1][-1]


def test_the_effective_size_gives_the_binomial_variance_of_the_share():
    """On pure binomial data (a varying volume, a fixed share) the baseline's share varies across replicates by
    p (1 - p) / nb: the variance term the beta-binomial test adds for the baseline is honest."""
    rng = np.random.default_rng(11)
    reps, minutes, p = 4000, 120, 0.05
    n = rng.poisson(30, size=minutes).astype(float)  # one volume path, many binomial draws
    k = rng.binomial(np.broadcast_to(n.astype(int), (reps, minutes)), p).astype(float)
    shares, sizes = [], []
    for row in k:
        kb, nb = ewma_counts(row, n, 5, 20.0)
        shares.append(kb[-1] / nb[-1])
        sizes.append(nb[-1])
    assert np.ptp(sizes) == 0  # the effective size depends on the volume only
    expected = p * (1 - p) / sizes[0]
    assert np.mean(shares) == pytest.approx(p, rel=0.01)
    assert np.var(shares) == pytest.approx(expected, rel=0.08)  # 4000 replicates: sd of a variance ~2.2 %


def test_ewma_counts_needs_a_half_life():
    with pytest.raises(ValueError):
        ewma_counts(np.ones(10), np.ones(10), 5, 0.0)


def test_the_replay_with_the_ewma_baseline_uses_it():
    """DetectorParams carries the setting; the 1-h window's half-life is stretched like its flat baseline (2 h)."""
    settings = MonitorSettings(alert_baseline_halflife_ms=15 * 60_000)
    params = DetectorParams.from_settings(settings)
    assert params.baseline_halflife_min == 15
    assert params.halflife(5) == 15 and params.halflife(60) == 30
    n = np.full(3 * DAY, 60.0)
    k = np.where(np.arange(3 * DAY) >= 2 * DAY, 6.0, 3.0)  # 5 % then 10 %: the step from the EWMA, not the flat mean
    at = np.array([2 * DAY + 5 + 14])  # 15 minutes (one half-life) of the new share in the 5-min window's baseline
    inp = replay_inputs(n, k, params, 5, times=at)
    assert (inp.kb[0] + 0.5) / (inp.nb[0] + 1) == pytest.approx(0.05 + 0.05 * 0.5 / (1 - 0.5 ** 6), rel=0.01)
    flat = replay_inputs(n, k, DetectorParams.from_settings(MonitorSettings()), 5, times=at)
    assert (flat.kb[0] + 0.5) / (flat.nb[0] + 1) == pytest.approx(0.05 + 0.05 * 15 / 60, rel=0.01)


def _flat(days: int, posts: int, share: float, seed: int):
    rng = np.random.default_rng(seed)
    n = rng.poisson(posts, size=days * DAY)
    return n, rng.binomial(n, share)


@pytest.mark.parametrize("halflife_min", [15, 30])
def test_the_replay_fires_on_a_clear_spike_and_not_on_a_flat_series(halflife_min):
    settings = MonitorSettings(alert_baseline_halflife_ms=halflife_min * 60_000)
    n, k = _flat(3, 100, 0.05, seed=21)
    assert [m for m in replay_detector(n, k, settings) if m >= DAY] == []  # two flat days: no alert
    rng = np.random.default_rng(22)
    start, length = 2 * DAY + 700, 30
    k[start:start + length] = rng.binomial(n[start:start + length], 0.15)  # x3 for 30 minutes
    fired = [m for m in replay_detector(n, k, settings) if m >= DAY]
    assert fired and start <= fired[0] <= start + 5
    assert all(start <= m < start + length + 60 for m in fired)  # nothing outside the spike and its hour
