"""The statistical spike detector (pure) and its offline replay: p-values against hand computations, the minimum effect
in words, the seasonal baseline, the cooldown, and the old threshold rule through the same replay."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from monitor.alerts import WindowCounts, is_spike
from monitor.alerts import replay_detector as exported
from monitor.detector import (
    DetectorParams,
    MinEffect,
    WindowInputs,
    alpha_for,
    beta_binomial_sf,
    decide,
    history_tau2,
    parse_min_effect,
    replay_detector,
    replay_inputs,
    seasonal_baseline,
    upcrossings_per_week,
    windows_fired,
)
from monitor.settings import MonitorSettings

DAY = 1440


def test_replay_detector_is_exposed_from_monitor_alerts():
    assert exported is replay_detector


@pytest.mark.parametrize("k, n, p0", [(10, 50, 0.05), (3, 20, 0.04), (60, 500, 0.05), (1, 1, 0.3)])
def test_without_overdispersion_the_test_is_the_binomial_tail(k, n, p0):
    assert beta_binomial_sf(k, n, p0, 0.0) == pytest.approx(stats.binom.sf(k - 1, n, p0), rel=1e-9)


def test_binomial_tail_by_hand():
    # P(K >= 2 | n=3, p=0.5) = (3 + 1) / 8
    assert beta_binomial_sf(2, 3, 0.5, 0.0) == pytest.approx(0.5)
    # P(K >= 3 | n=3, p=0.1) = 0.001
    assert beta_binomial_sf(3, 3, 0.1, 0.0) == pytest.approx(0.001)


def test_beta_binomial_tail_by_hand_and_against_scipy():
    # Beta(1, 1) (mean 1/2, variance 1/12): K is uniform on 0..3, so P(K >= 2) = 2/4
    assert beta_binomial_sf(2, 3, 0.5, 1 / 12) == pytest.approx(0.5, rel=1e-9)
    # Beta(2, 38): mean 0.05, variance a b / ((a + b)^2 (a + b + 1))
    a, b = 2.0, 38.0
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    for k, n in [(5, 40), (10, 60), (20, 200)]:
        assert beta_binomial_sf(k, n, 0.05, var) == pytest.approx(stats.betabinom.sf(k - 1, n, a, b), rel=1e-7)
    # overdispersion makes the same count less surprising
    assert beta_binomial_sf(10, 60, 0.05, var) > stats.binom.sf(9, 60, 0.05)


@pytest.mark.parametrize("text, effect", [
    ("at least 1.5x and +5 points", MinEffect(1.5, 0.05)),
    ("2x", MinEffect(2.0, 0.0)),
    ("+3 pts", MinEffect(1.0, 0.03)),
    ("at least 3 times and 10%", MinEffect(3.0, 0.10)),
    ("1.5× and +2 pp", MinEffect(1.5, 0.02)),
])
def test_minimum_effect_in_words(text, effect):
    parsed = parse_min_effect(text)
    assert parsed.ratio == pytest.approx(effect.ratio) and parsed.points == pytest.approx(effect.points)


@pytest.mark.parametrize("text", ["", "big", "0.5x", "+150 points"])
def test_minimum_effect_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError):
        parse_min_effect(text)


def test_sensitivity_sets_the_false_alert_budget():
    # window=1: every minute's test is independent, so the budget is spent Bonferroni-style (P(up-crossing) is
    # alpha (1 - alpha)): normal with two windows ~ 1 / 20 160
    assert alpha_for("normal", 2, 1) == pytest.approx(1 / 20160, rel=1e-3)
    assert alpha_for("low", 2, 1) == pytest.approx(0.25 / 20160, rel=1e-3)
    assert alpha_for("high", 1, 1) == pytest.approx(4 / 10080, rel=1e-2)
    # longer windows: neighbouring tests overlap, fewer effective tests, a larger alpha; more windows share the budget
    assert alpha_for("normal", 4, 5) < alpha_for("normal", 4, 15) < alpha_for("normal", 4, 60) < 1 / 1680
    assert alpha_for("normal", 4, 60) > 3 * 1 / (4 * 10080)
    assert alpha_for("normal", 4, 60) < alpha_for("normal", 2, 60)
    with pytest.raises(ValueError):
        alpha_for("paranoid", 2)


def test_upcrossings_by_hand_and_by_simulation():
    """The expected up-crossings a week of a standardised moving sum: by hand for window 2 (neighbours correlate
    0.5, and P(X > z, Y > z) for correlation 1/2 at z = 0 is 1/3, so P(up-crossing) = 1/2 - 1/3 = 1/6), and against
    a simulated moving sum of Gaussian per-minute noise for a 30-minute window at a level it crosses a few times a
    week."""
    assert upcrossings_per_week(0.0, 2) == pytest.approx(10080 / 6, rel=1e-3)
    assert upcrossings_per_week(0.0, 1) == pytest.approx(10080 / 4, rel=1e-6)
    rng = np.random.default_rng(3)
    weeks, window, z = 40, 30, 3.0
    noise = rng.normal(size=weeks * 10080 + window)
    cum = np.concatenate([[0.0], np.cumsum(noise)])
    moving = (cum[window:] - cum[:-window]) / math.sqrt(window)
    simulated = np.sum((moving[1:] > z) & (moving[:-1] <= z)) / weeks
    assert simulated == pytest.approx(upcrossings_per_week(z, window), rel=0.15)
    # and the alpha it implies: the level whose expected up-crossings are the window's share of the budget
    alpha = alpha_for("normal", 4, window)
    assert upcrossings_per_week(float(stats.norm.isf(alpha)), window) == pytest.approx(0.25, rel=1e-3)


def test_overdispersion_estimate_finds_extra_variance_and_none_in_binomial_data():
    """900 window-long buckets (newest first): each earlier window against the 12 before it. Binomial data: tau2 ~ 0;
    every window's share off by N(0, 1 point): the difference to a 12-window baseline varies by 1 point x
    sqrt(1 + 1/12) beyond binomial noise, i.e. by 20 % x sqrt(1 + 1/12) of the 5 % share (tau2 is relative)."""
    rng = np.random.default_rng(1)
    n = np.full(900, 2000)
    binomial = rng.binomial(n, 0.05)
    assert history_tau2(binomial, n, 12, 864, 20) < 3e-6 / 0.05 ** 2
    overdispersed = rng.binomial(n, np.clip(0.05 + rng.normal(0, 0.01, size=900), 0, 1))
    expected_sd = 0.01 / 0.05 * math.sqrt(1 + 1 / 12)
    assert math.sqrt(history_tau2(overdispersed, n, 12, 864, 20)) == pytest.approx(expected_sd, rel=0.15)
    # a handful of spikes in the history barely moves the robust estimate
    spiky = overdispersed.copy()
    spiky[100:110] = 600
    assert math.sqrt(history_tau2(spiky, n, 12, 864, 20)) == pytest.approx(expected_sd, rel=0.25)
    # too little usable history (fewer than 8 windows with enough posts): no overdispersion assumed
    assert history_tau2(overdispersed[:8], n[:8], 12, 864, 20) == 0.0


def test_seasonal_baseline_is_the_median_and_ignores_an_outlier_day():
    # the same hour on 7 earlier days: shares 4, 5, 5, 6, 5, 4 % and one day with a spike (30 %)
    n = np.array([[1000]] * 7)
    k = np.array([[40], [50], [50], [60], [50], [40], [300]])
    p0, var, usable = seasonal_baseline(k, n, min_posts=20, min_spans=3)
    assert usable[0] and p0[0] == pytest.approx(0.05)
    mad = np.median(np.abs(k[:, 0] / 1000 - 0.05))  # 0.0 1 0 1 0 1 25 points -> 1 point
    assert var[0] == pytest.approx((1.4826 * mad) ** 2)
    # too few days with enough posts: no seasonal baseline
    _p0, _var, usable = seasonal_baseline(k[:2], n[:2], min_posts=20, min_spans=3)
    assert not usable[0]


def _series(days: int, posts_per_minute: int, share, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = np.full(days * DAY, posts_per_minute)
    p = np.broadcast_to(share, n.shape) if np.ndim(share) else np.full(n.shape, share)
    return n, rng.binomial(n, p)


def test_seasonal_baseline_knows_an_angry_hour_that_the_rolling_one_calls_a_spike():
    """Anger triples every evening from 20:00 to 20:30: on day 8 the seasonal baseline expects it, the rolling one
    (the hour before) does not."""
    t = np.arange(8 * DAY)
    share = np.where((t % DAY >= 20 * 60) & (t % DAY < 20 * 60 + 30), 0.15, 0.05)
    n, k = _series(8, 40, share, seed=3)
    last_evening = 7 * DAY + 20 * 60
    common = dict(alert_min_volume=5, alert_windows_ms=[300_000])
    rolling = [m for m in replay_detector(n, k, MonitorSettings(alert_baseline="rolling", **common))
               if m >= 7 * DAY]
    seasonal = [m for m in replay_detector(n, k, MonitorSettings(alert_baseline="auto", **common)) if m >= 7 * DAY]
    assert any(last_evening <= m < last_evening + 30 for m in rolling)
    assert seasonal == []
    detection = windows_fired(n, k, MonitorSettings(alert_baseline="auto", **common), [last_evening + 10])[0][0]
    assert detection.baseline_kind == "seasonal" and detection.baseline_share == pytest.approx(0.15, abs=0.02)
    assert not detection.fired and detection.reason == "effect"


def test_a_real_spike_fires_within_minutes_and_the_cooldown_spaces_the_alerts():
    n, k = _series(2, 100, 0.05, seed=5)
    rng = np.random.default_rng(6)
    start, length = DAY + 600, 40
    k[start:start + length] = rng.binomial(100, 0.15, size=length)  # x3 for 40 minutes
    fired = replay_detector(n, k, MonitorSettings(alert_cooldown_ms=15 * 60_000))
    assert fired, "a x3 spike at 100 posts/min must be found"
    assert start <= fired[0] <= start + 5
    during = [m for m in fired if start <= m < start + length]
    assert during == [fired[0], fired[0] + 15, fired[0] + 30][:len(during)] and len(during) >= 2
    assert all(b - a >= 15 for a, b in zip(fired, fired[1:]))
    # the same spike with a 1-hour cooldown alerts once while it lasts
    once = [m for m in replay_detector(n, k, MonitorSettings(alert_cooldown_ms=60 * 60_000))
            if start <= m < start + length]
    assert once == [fired[0]]


def test_a_volume_burst_with_the_usual_share_does_not_alert():
    n, k = _series(2, 20, 0.05, seed=7)
    rng = np.random.default_rng(8)
    burst = slice(DAY + 300, DAY + 345)
    n[burst] = 200  # a viral neutral post: ten times the posts, the same share of anger
    k[burst] = rng.binomial(200, 0.05, size=45)
    assert [m for m in replay_detector(n, k, MonitorSettings()) if m >= DAY] == []


def test_threshold_detector_replays_the_old_rule():
    """alert_detector=threshold: replay_detector applies is_spike to whole-minute windows, cooldown included: the
    same minutes as a plain loop over is_spike with the counts spelled out."""
    settings = MonitorSettings(alert_detector="threshold", alert_cooldown_ms=10 * 60_000)
    n = np.full(120, 10)
    k = np.zeros(120, dtype=int)
    k[:60] = 1  # 10 % for an hour
    k[60:90] = 6  # then 60 %
    expected, next_allowed = [], 0
    for t in range(120):
        window, base = slice(max(0, t - 4), t + 1), slice(max(0, t - 64), max(0, t - 4))
        counts = WindowCounts(k[window].sum(), n[window].sum(), k[base].sum(), n[base].sum())
        if is_spike(counts, settings) and t >= next_allowed:
            expected.append(t)
            next_allowed = t + 10
    # minute 62: 20 angry of the window's 50 posts (40 %) vs 58 of 580 before (10 %); 61 is exactly 3x (30 % vs
    # 10 %, not above in floating point); 72 again after the cooldown; by 82 the baseline has caught up (25 %)
    assert expected == [62, 72]
    assert replay_detector(n, k, settings) == expected


def test_a_rule_overrides_the_settings():
    from monitor.alert_rules import AlertRule

    n, k = _series(2, 100, 0.05, seed=9)
    rng = np.random.default_rng(10)
    start = DAY + 700
    k[start:start + 20] = rng.binomial(100, 0.12, size=20)  # x2.4 for 20 minutes
    settings = MonitorSettings()
    assert any(start <= m < start + 25 for m in replay_detector(n, k, settings))
    strict = AlertRule("acme", "anger", min_effect="at least 3x")
    assert not any(start <= m < start + 25 for m in replay_detector(n, k, settings, strict))
    params = DetectorParams.from_settings(settings, AlertRule("acme", "anger", sensitivity="high", min_volume=3,
                                                              cooldown_s=120, windows=(600,)))
    assert (params.sensitivity, params.min_volume, params.cooldown_min, params.windows_min) == ("high", 3, 2, (10,))


def test_replay_detector_rejects_mismatched_arrays():
    with pytest.raises(ValueError):
        replay_detector(np.ones(10), np.ones(9), MonitorSettings())
    with pytest.raises(ValueError):
        replay_detector(np.ones(10), np.full(10, 2), MonitorSettings())


def test_spikes_in_the_history_do_not_inflate_the_overdispersion_estimate():
    """Twelve 3-window x3 spikes in 300 windows of overdispersed data: each spike window and the windows whose
    baseline holds it are left out (a spike z-score > SPIKE_Z), so tau2 stays near the spike-free estimate (with
    them in, the capped mean saw ~15 % of windows at the cap and tau2 came out several times larger). The replay's
    every-minute estimate equals the worker's from the same buckets."""
    from monitor.detector import _replay_tau2

    rng = np.random.default_rng(5)
    windows, base = 300, 4
    n = np.full(windows, 1500.0)
    share = np.clip(0.05 + rng.normal(0, 0.005, size=windows), 0, 1)
    clean = rng.binomial(n.astype(int), share).astype(float)
    spiky_share = share.copy()
    for start in range(20, windows - 10, 24):
        spiky_share[start:start + 3] *= 3
    spiky = rng.binomial(n.astype(int), spiky_share).astype(float)
    newest_first = slice(None, None, -1)
    tau_clean = history_tau2(clean[newest_first], n[newest_first], base, windows - 2 * base - 1, 20)
    tau_spiky = history_tau2(spiky[newest_first], n[newest_first], base, windows - 2 * base - 1, 20)
    assert math.sqrt(tau_clean) == pytest.approx(0.005 / 0.05 * math.sqrt(1 + 1 / base), rel=0.2)
    assert math.sqrt(tau_spiky) == pytest.approx(math.sqrt(tau_clean), rel=0.2)
    # the replay (window of 1 minute: one residue class) at the last minute, from the same sums
    cum_k, cum_n = np.concatenate([[0.0], np.cumsum(spiky)]), np.concatenate([[0.0], np.cumsum(n)])
    t = np.arange(windows)
    kb = cum_k[t] - cum_k[np.clip(t - base, 0, None)]
    nb = cum_n[t] - cum_n[np.clip(t - base, 0, None)]
    replayed = _replay_tau2(spiky, n, kb, nb, 1, windows - 2 * base - 1, 20, base)
    assert replayed[-1] == pytest.approx(tau_spiky, rel=1e-9)


def test_overdispersion_is_relative_to_the_share():
    """A share that wanders by 20 % of itself gives the same tau2 at 2 % and at 8 % (a squared coefficient of
    variation), and the test's variance scales it by the baseline share squared: at a 4x higher share the same
    relative jump is judged against 4x the spread in points."""
    rng = np.random.default_rng(7)
    n = np.full(600, 20_000)
    estimates = []
    for share in (0.02, 0.08):
        k = rng.binomial(n, share * np.exp(rng.normal(0, 0.2, size=600)))
        estimates.append(history_tau2(k, n, 12, 580, 20))
    assert estimates[0] == pytest.approx(estimates[1], rel=0.25)
    assert math.sqrt(estimates[0]) == pytest.approx(0.2 * math.sqrt(1 + 1 / 12), rel=0.2)
    params = DetectorParams(windows_min=(5,), baseline="rolling", wander="beta")
    inp = WindowInputs(5, np.array([130.0]), np.array([1000.0]), np.array([800.0]), np.array([10_000.0]),
                       np.zeros((0, 1)), np.zeros((0, 1)), np.array([0.04]))
    _fired, p_value, _d = decide(inp, params)
    p0 = 800.5 / 10_001
    assert p_value[0] == pytest.approx(beta_binomial_sf(130, 1000, p0, p0 * (1 - p0) / 10_001 + 0.04 * p0 ** 2))


def test_lognormal_wander_tail_by_numerical_integration():
    """The lognormal null (the default): the binomial tail averaged over a mean-1 lognormal wander of variance tau2,
    against scipy's quadrature of the same integral; no wander is the plain beta-binomial; and at the 1-h window's
    alpha its upper tail is several times the beta's of the same mean and variance (what left the long windows'
    null too narrow)."""
    from scipy import integrate

    from monitor.detector import lognormal_wander_sf, null_sf

    for k, n, p0, tau2 in [(320, 4000, 0.045, 0.02), (30, 300, 0.05, 0.05), (12, 100, 0.04, 0.1)]:
        s2 = math.log1p(tau2)

        def integrand(z):
            share = min(p0 * math.exp(math.sqrt(s2) * z - s2 / 2), 1 - 1e-12)
            return stats.binom.sf(k - 1, n, share) * stats.norm.pdf(z)

        expected = integrate.quad(integrand, -12, 12, points=[0, 2, 4], limit=200, epsabs=0, epsrel=1e-10)[0]
        assert lognormal_wander_sf(k, n, p0, 0.0, tau2) == pytest.approx(expected, rel=1e-4)
    assert lognormal_wander_sf(40, 400, 0.05, 1e-5, 0.0) == beta_binomial_sf(40, 400, 0.05, 1e-5)
    lognormal = null_sf(320, 4000, 0.045, 0.02 * 0.045 ** 2, 0.02)
    beta = null_sf(320, 4000, 0.045, 0.02 * 0.045 ** 2, 0.02, wander="beta")
    assert beta == beta_binomial_sf(320, 4000, 0.045, 0.02 * 0.045 ** 2)
    assert 1e-6 < beta < 1e-4 and lognormal > 2.5 * beta
    # the baseline's own sampling noise widens the null further
    assert null_sf(320, 4000, 0.045, 0.02 * 0.045 ** 2 + 1e-5, 0.02) > lognormal


def _rhythmic(days: int, seed: int, amplitude: float = 0.3, posts: int = 200):
    """Per-minute posts and angry posts: a share of 5 % x (1 + amplitude sin(day phase)), binomial noise only."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    share = 0.05 * (1 + amplitude * np.sin(2 * np.pi * t / DAY))
    n = rng.poisson(posts, size=len(t))
    return n, rng.binomial(n, share), share


def test_the_daily_bias_recovers_what_a_lagging_baseline_misses_and_the_long_window_stays_calibrated():
    """A share with a strong daily rhythm (+-30 %), no spikes: the 1-h window's rolling baseline (the 2 h before it)
    lags it, so the window's expected share differs from the baseline's by up to ~12 %, in step with the clock.
    The daily bias read from the previous 3 days follows that difference through day 5, the corrected test
    is not inflated (fewer than 2 % of minutes below p = 0.01), and one x3 hour on an earlier day at the same clock
    time hardly moves the bias (a median)."""
    n, k, share = _rhythmic(5, 3)
    params = DetectorParams(windows_min=(60,), baseline="rolling", daily_bias_min_window=60)
    times = np.arange(4 * DAY, 5 * DAY)
    inp = replay_inputs(n, k, params, 60, times=times)
    # the truth: the window's expected share over its baseline's, from the known share and volume
    cum_kn = np.concatenate([[0.0], np.cumsum(n * share)])
    cum_n = np.concatenate([[0.0], np.cumsum(n)])
    window = (cum_kn[times + 1] - cum_kn[times - 59]) / (cum_n[times + 1] - cum_n[times - 59])
    base = (cum_kn[times - 59] - cum_kn[times - 179]) / (cum_n[times - 59] - cum_n[times - 179])
    truth = window / base - 1
    assert truth.max() > 0.1 and truth.min() < -0.1  # the bias is real and swings with the clock
    # within a few points everywhere (the +-2 h span flattens the extremes a little, binomial noise the rest)
    assert np.max(np.abs(inp.bias - truth)) < 0.06 and np.mean(np.abs(inp.bias - truth)) < 0.025
    _fired, p_value, _d = decide(inp, dataclasses.replace(params, min_effect=MinEffect(1.0, 0.0), min_volume=1))
    assert np.mean(p_value < 0.01) < 0.02
    uncorrected = replay_inputs(n, k, dataclasses.replace(params, daily_bias_min_window=0), 60, times=times)
    assert uncorrected.bias is None
    # a x3 hour at 10:00 two days before the tested minute: the median of 15 earlier windows shrugs it off
    spiky = k.copy()
    spike = 2 * DAY + 600
    spiky[spike:spike + 60] = np.minimum(n[spike:spike + 60], 3 * k[spike:spike + 60])
    at = np.array([4 * DAY + 630])
    assert replay_inputs(n, spiky, params, 60, times=at).bias[0] == pytest.approx(
        replay_inputs(n, k, params, 60, times=at).bias[0], abs=0.03)


def test_the_workers_daily_bias_equals_the_replays():
    """:func:`history_daily_bias` on one evaluation's window-long buckets (the worker's reads) gives the replay's
    value at that minute, for a window that divides a day and one that does not."""
    from monitor.detector import history_daily_bias

    n, k, _share = _rhythmic(4, 5, posts=30)
    for window in (30, 7):
        params = DetectorParams(windows_min=(window,), baseline="rolling", daily_bias_min_window=5)
        t = 4 * DAY - 1
        replayed = replay_inputs(n, k, params, window, times=np.array([t])).bias[0]
        count = t // window
        ends = t - window * np.arange(count)  # newest first: bucket i ends at t - i window
        bucket_k = np.array([k[e - window + 1:e + 1].sum() for e in ends], dtype=float)
        bucket_n = np.array([n[e - window + 1:e + 1].sum() for e in ends], dtype=float)
        worker = history_daily_bias(bucket_k, bucket_n, params.rolling_min(window) // window, window, 20)
        assert worker == pytest.approx(replayed, rel=1e-12, abs=1e-15) and worker != 0.0
