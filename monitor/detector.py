"""The spike detector (pure: numpy + scipy, no I/O): is an emotion's share of a brand's posts in a window higher than
its baseline by more than chance, and by at least the effect a person asked for?

The test
--------
For a window of ``N`` posts of which ``K`` carry the emotion, the question is "how likely are ``K`` or more such posts
if the window behaves like its baseline?". The window's *true* share is not known exactly: the baseline share ``p0`` is
itself estimated from a finite number of posts, and real shares wander from window to window more than coin flips do
(overdispersion: a news story, a time zone waking up). So ``K`` is modelled as **beta-binomial**: ``K ~ Binomial(N,
p)`` with ``p ~ Beta`` of mean ``p0`` and variance ``var_p = var(baseline estimate) + tau2 x p0^2``, where ``tau2``
is the between-window variance of the share beyond binomial noise *relative to the share* (a squared coefficient of
variation), estimated from the brand's own history (below). The
p-value is the one-sided upper tail ``P(K' >= K)``. By default (``alert_wander="lognormal"``) the wander part is
multiplicative: the share is the baseline's (a beta for its sampling noise) times a mean-1 **lognormal** of variance
``tau2``, the tail averaged over it by quadrature (:func:`lognormal_wander_sf`). Shares wander by a fraction of
themselves, which is right-skewed; a beta of the same variance has a thinner upper tail (a third of the lognormal's
at the 1-h window's alpha with ``tau2`` 0.02), and on spike-free synthetic weeks the 1-h window's p-values fell below
its alpha ~17x too often at 100 posts/min, where the wander dominates (README "Spike alerts"). Why this and not the
alternatives:

* a plain **binomial** test (``tau2 = 0`` and an exactly known ``p0``) is what the beta-binomial reduces to when the
  history shows no extra variance; on real streams it cries wolf at high volume, where tiny true drifts become
  "significant";
* a **Poisson** test on the count ignores the volume in the window: a burst of neutral posts (a viral post) multiplies
  the expected angry count too, which a share test handles by construction.

``tau2`` (overdispersion) is estimated from the brand's own history **of the same comparison**: the window's share
minus its rolling baseline's share, relative to the baseline share, ``d``, at every earlier non-overlapping window of
the last 72 hours (relative because shares wander by a fraction of themselves: a share drifting from 3 % to 6 % over
a week wanders twice as many points at 6 %, and an absolute ``tau2`` fitted over the whole week let the high-share
days through with too narrow a test: half of the false alerts at 100 posts/min in ``bench/alerts.py``). Each ``d`` is
standardised by its binomial variance ``v``; the dispersion ``phi`` is the one for which ``phi x chi-square(1)``
capped at 2 has the mean of ``min(d^2 / v, 2)`` (``phi = 1``: pure binomial noise), and
``tau2 = (phi - 1) x median(v)`` (floored at 0; 0 with fewer than 8 usable windows). Standardising first matters:
day and night windows hold very different numbers of posts. The cap keeps a spike in the history from counting like
many windows; a mean, not a median, because at a few emotion posts per window the counts are discrete and a median
of ``d^2 / v`` is far from its normal-theory value (it made up 0.5 points of overdispersion from binomial data).
Measuring the very difference the test looks at captures however the share wanders between a window and its baseline
(a slow drift, a daily rhythm, news) without assuming a model of it; spikes in that history make ``tau2`` a little
larger, i.e. the detector more cautious, never less. To keep that caution small, history windows that are spikes
themselves (share above their baseline by more than ``SPIKE_Z = 4`` local sds, :func:`_spike_flags`) are left out,
with the windows whose baseline holds them: on the synthetic weeks with x3 spikes twelve times a week they had doubled ``tau`` and hidden
night spikes.

Baselines
---------
* **rolling**: the share in the ``B`` minutes just before the window, ``B = max(alert_baseline_ms, 2 x window)``
  (60 min for the 5-, 15- and 30-min windows, 2 h for the 1-h window; 4 windows before made the 1-h window's baseline
  lag the daily rise of the share by 2.5 h, a bias the synthetic weeks turned into false alerts late in the morning); ``p0 = (Kb + 0.5) / (Nb + 1)`` (Jeffreys: a baseline with no
  angry post is not "zero anger") and ``var = p0 (1 - p0) / (Nb + 1) + tau2 p0^2``.
* **rolling, exponentially weighted** (``alert_baseline_halflife_ms > 0``; off by default): the minutes before the
  window weighted ``2^(-age / half-life)`` (the half-life x2 for the 1-h window, as its flat span), as effective
  counts that the formulas above take unchanged (:func:`ewma_counts`); ``tau2`` is then measured against this
  baseline. It follows the share's wander better (on the synthetic weeks of ``bench/alerts.py`` ``tau`` of the 5-min
  window falls from 0.12 to 0.10 at 100 posts/min, 15 min half-life), which narrows the test little where the
  window's own binomial noise dominates: with a 30-min half-life, recall and false alerts move by sampling noise
  only (README "Spike alerts"). In the worker it reads per-minute counts (:func:`read_inputs`).
* **seasonal**: the share in the same clock span (the window's own minutes of the day, widened evenly to at least
  15 min) on each of the previous ``alert_seasonal_days`` days (or the same hour of the week on previous weeks, when at
  least ``alert_seasonal_min_days`` weeks exist), counting only spans with at least ``alert_min_baseline_posts``
  posts; used when at least ``alert_seasonal_min_days`` such spans exist. Robust: ``p0`` = their **median**, and the
  spread ``(1.4826 x MAD)^2`` (the normal-consistent MAD, at least the binomial variance of one span) plus ``tau2 p0^2`` is
  ``var``, so a brand whose share varies a lot day to day needs a bigger jump.
* **daily bias** (windows of at least ``alert_daily_bias_min_window_ms``; 0 = off): a rolling baseline lies before
  its window (the 1-h window's centre 1.5 h after its baseline's), so a share with a daily rhythm sits above it every
  morning and below it every night. The window's null share is the baseline's times ``1 + b``, ``b`` the median
  relative difference of the same comparison at the same clock time +- 2 h on the 3 previous days
  (:func:`daily_bias`; read from the overdispersion history's buckets, cached with ``tau2``).
* **auto** (default): the p-value against the rolling baseline, the minimum effect against the higher of the rolling
  and (when enough history) the seasonal share. A seasonal median over a week lags a drifting share (3 % to 6 % over
  a week) and its day-to-day spread made the test too wide to find x3 spikes at 100 posts/min, while the rolling
  baseline knows today's level; the seasonal share still keeps an hour that is angry every day from alerting.

Decision
--------
A window fires when all hold: ``K >= min_volume`` emotion posts; the baseline has enough posts; the window's share is
at least ``min_ratio x p0`` **and** ``p0 + min_points`` (the minimum effect, written in words: "at least 1.5x and +2
points"); and the p-value is at most ``alpha``. The alert fires when any window fires, at most once per cooldown.

``alpha`` comes from a **false-alert budget** per brand x emotion x week (sensitivity low 0.25, normal 1, high 4),
shared evenly by the windows (5, 15, 30 and 60 min by default). Each window is tested every minute, but consecutive
tests share all minutes but one: under the null the test's z-score is (close to) a standardised moving sum of
per-minute noise, and a false alert starts where that sum crosses the critical level upwards (later minutes of the
same excursion are held back by the cooldown). So each window's ``alpha`` is the tail of the level whose expected
up-crossings per week equal the window's share of the budget (:func:`upcrossings_per_week`, exact for a Gaussian
moving sum sampled every minute): 3.0e-5 for the 5-min window (Bonferroni over 10 080 minutes would give 2.5e-5: at
5 minutes nearly every minute is a fresh chance), 8.7e-5 for the 1-h one (3.5x Bonferroni; the rough "one
independent test per window length", 1.5e-3, undercounts badly: a moving sum near a high level z crosses it about
z^2 times per window length). The budget is spent on the model's null; where the share wanders more than the
overdispersion estimate captures, ``bench/alerts.py`` measures what is left (README "Spike alerts").

Windows are whole minutes, read from per-minute counts: in the worker the Redis 1-minute tier (the current minute
holds the posts counted so far), offline the arrays given to :func:`replay_detector`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "BUDGET_PER_WEEK",
    "Detection",
    "DetectorParams",
    "MinEffect",
    "WindowInputs",
    "alpha_for",
    "upcrossings_per_week",
    "beta_binomial_sf",
    "daily_bias",
    "daily_bias_lags",
    "decide",
    "history_daily_bias",
    "history_tau2",
    "lognormal_wander_sf",
    "null_sf",
    "parse_min_effect",
    "replay_detector",
    "replay_inputs",
    "seasonal_baseline",
]

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
HISTORY_MIN = 72 * 60  # the span whose earlier windows estimate overdispersion
MIN_HISTORY_WINDOWS = 8
SEASONAL_SPAN_MIN = 15
# false alerts per brand x emotion x week that a sensitivity accepts
BUDGET_PER_WEEK = {"low": 0.25, "normal": 1.0, "high": 4.0}
_MAD_TO_SD = 1.4826  # MAD x this estimates the standard deviation of normal data
# squared standardised differences are capped at 2 so a spike in the history (and the hour after it, whose baseline
# holds it) counts little more than an ordinary window; E[min(chi2_1, 2)] = P(chi2_3 < 2) + 2 P(chi2_1 > 2)
_Z2_CAP = 2.0
SPIKE_Z = 4.0  # history windows this many local sds above their baseline are spikes, left out of tau2
SPIKE_LOCAL = 12  # earlier windows whose median spread is the local sd
_CHI2_1_MEDIAN = float(stats.chi2.median(1))
# E[min(phi X, cap)] for X ~ chi2_1 and a dispersion phi: phi P(chi2_3 < cap/phi) + cap P(chi2_1 > cap/phi); inverted
# by interpolation (it rises monotonically from 0 to cap)
_PHI_GRID = np.concatenate([np.linspace(0.05, 5, 400), np.linspace(5.05, 100, 400)])
_CAPPED_MEAN_GRID = (_PHI_GRID * stats.chi2.cdf(_Z2_CAP / _PHI_GRID, 3)
                     + _Z2_CAP * stats.chi2.sf(_Z2_CAP / _PHI_GRID, 1))


def _dispersion(capped_mean):
    """The dispersion ``phi`` whose capped chi-square mean is ``capped_mean`` (1 for binomial noise only)."""
    return np.interp(capped_mean, _CAPPED_MEAN_GRID, _PHI_GRID)


# ---------------------------------------------------------------------------------------------- minimum effect


@dataclass(frozen=True)
class MinEffect:
    """The smallest spike worth an alert: window share >= ``ratio`` x baseline and >= baseline + ``points``."""

    ratio: float = 1.0
    points: float = 0.0  # share points as a fraction: +5 points = 0.05

    def describe(self) -> str:
        return f"at least {self.ratio:g}x and +{self.points * 100:g} points"


_RATIO = re.compile(r"(\d+(?:\.\d+)?)\s*(?:x|×|times)(?![a-z])", re.I)
_POINTS = re.compile(r"\+?\s*(\d+(?:\.\d+)?)\s*(?:points?|pts?|pp|percentage points?|%)", re.I)


def parse_min_effect(text: str) -> MinEffect:
    """``"at least 1.5x and +5 points"`` -> ``MinEffect(1.5, 0.05)``. Either part may be left out ("2x", "+3 pts");
    ``%`` means points here (a share of posts). Raises ``ValueError`` on text with neither part, or a ratio < 1."""
    text = (text or "").strip()
    ratio_match = _RATIO.search(text)
    rest = _RATIO.sub(" ", text)
    points_match = _POINTS.search(rest)
    if not ratio_match and not points_match:
        raise ValueError(f"minimum effect {text!r}: expected e.g. 'at least 1.5x and +5 points'")
    ratio = float(ratio_match.group(1)) if ratio_match else 1.0
    points = float(points_match.group(1)) / 100 if points_match else 0.0
    if ratio < 1:
        raise ValueError(f"minimum effect {text!r}: a ratio below 1x would alert on drops")
    if points >= 1:
        raise ValueError(f"minimum effect {text!r}: +{points * 100:g} points is more than a whole share")
    return MinEffect(ratio, points)


def upcrossings_per_week(z: float, window: int) -> float:
    """Expected upcrossings of level ``z`` per week by a window-``window`` moving sum of independent per-minute noise,
    standardised and evaluated every minute: ``10 080 x P(X[t-1] <= z < X[t])``, neighbours being bivariate normal
    with correlation ``1 - 1/window`` (they share ``window - 1`` of their minutes). Exact for Gaussian noise; each
    false alert starts with one upcrossing (later exceedances of the same excursion are held back by the cooldown),
    so this bounds the false alerts a week at that level."""
    tail = float(stats.norm.sf(z))
    if window <= 1:
        return MINUTES_PER_WEEK * tail * (1 - tail)
    rho = 1 - 1 / window
    both_above = float(stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([-z, -z]))
    return MINUTES_PER_WEEK * max(tail - both_above, 0.0)


@functools.lru_cache(maxsize=256)
def _alpha_for_window(budget: float, window: int) -> float:
    z = optimize.brentq(lambda x: upcrossings_per_week(x, window) - budget, 0.5, 9.0, xtol=1e-6)
    return float(stats.norm.sf(z))


def alpha_for(sensitivity: str, windows: int, window: int = 1) -> float:
    """The significance level of one test of a ``window``-minute window when ``windows`` windows share the
    sensitivity's false-alert budget per week (evenly).

    The detector tests every window every minute, but consecutive tests of one window share all minutes but one,
    so they are strongly correlated: counting each minute as an independent test (Bonferroni, ``budget / 10 080``)
    is about right for a 5-min window and 3.5x too strict for a 1-h one. Under the null the test's z-score is a
    standardised moving sum of per-minute noise; its expected number of upcrossings of the critical level per week
    (:func:`upcrossings_per_week`, exact for Gaussian noise) is set equal to the window's share of the budget, and
    ``alpha`` is that level's one-sided tail. (The rough "one independent test per window length", ``10 080 /
    window``, undercounts: a moving sum wanders across the level about ``z^2`` times per window length, which the
    upcrossing count captures.) With the default sensitivity and four windows: 5 min 3.0e-5, 15 min 4.4e-5,
    30 min 6.1e-5, 1 h 8.7e-5; ``window=1`` is Bonferroni."""
    if sensitivity not in BUDGET_PER_WEEK:
        raise ValueError(f"unknown sensitivity {sensitivity!r}; expected one of {sorted(BUDGET_PER_WEEK)}")
    return _alpha_for_window(BUDGET_PER_WEEK[sensitivity] / max(1, windows), max(1, int(window)))


# ---------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class DetectorParams:
    """Everything the decision needs, in minutes (built from settings + a rule by :meth:`from_settings`)."""

    windows_min: tuple[int, ...] = (5, 60)
    baseline_min: int = 60  # rolling baseline of the shortest window; a window of W uses max(this, 2 W)
    sensitivity: str = "normal"
    min_effect: MinEffect = MinEffect(1.5, 0.02)
    min_volume: int = 5
    min_baseline_posts: int = 20
    baseline: str = "auto"  # auto | seasonal | rolling
    seasonal_days: int = 7
    seasonal_min_days: int = 3
    cooldown_min: int = 15
    baseline_halflife_min: float = 0.0  # > 0: the rolling baseline is exponentially weighted (:func:`ewma_counts`)
    wander: str = "lognormal"  # the law of the share's wander beyond binomial noise: lognormal | beta
    daily_bias_min_window: int = 0  # windows at least this long (> 0) correct for the daily bias (:func:`daily_bias`)

    def corrects_bias(self, window: int) -> bool:
        return 0 < self.daily_bias_min_window <= window

    def alpha(self, window: int) -> float:
        return alpha_for(self.sensitivity, len(self.windows_min), window)

    def seasonal_span(self, window: int) -> tuple[int, int]:
        """``(length, minutes after the window's end)`` of the seasonal span of a window: the window's own clock
        minutes, widened evenly on both sides to at least ``SEASONAL_SPAN_MIN`` (enough posts at low volume)."""
        length = max(window, SEASONAL_SPAN_MIN)
        return length, (length - window) // 2

    def rolling_min(self, window: int) -> int:
        """The rolling baseline of a window: at least ``baseline_min`` and 2 windows, in whole windows."""
        return math.ceil(max(self.baseline_min, 2 * window) / window) * window

    def halflife(self, window: int) -> float:
        """Half-life of a window's exponentially weighted baseline (0: flat): ``baseline_halflife_min``, stretched
        as the flat baseline is for long windows (``x rolling_min / baseline_min``: x2 for the 1-h window)."""
        return self.baseline_halflife_min * self.rolling_min(window) / self.baseline_min

    def ewma_horizon(self, window: int) -> int:
        """Minutes a window's exponentially weighted baseline reaches back (0: the flat rolling mean)."""
        return ewma_horizon(self.halflife(window))

    def history_minutes(self, window: int) -> int:
        """Per-minute history one decision of a window with an exponentially weighted baseline needs: the window,
        the earlier windows of :func:`_replay_tau2` (history, spike checks) and the baseline of the oldest."""
        earlier = self.history_windows(window) + SPIKE_LOCAL
        if self.corrects_bias(window):
            earlier = max(earlier, int(daily_bias_lags(window)[-1]))
        return window * (2 + earlier + self.rolling_min(window) // window) + self.ewma_horizon(window)

    def history_windows(self, window: int) -> int:
        return max(MIN_HISTORY_WINDOWS, HISTORY_MIN // window)

    @classmethod
    def from_settings(cls, settings, rule=None) -> "DetectorParams":
        """From :class:`monitor.settings.MonitorSettings`, overridden by an :class:`monitor.alert_rules.AlertRule`."""
        windows_s = rule.windows if rule is not None and rule.windows else tuple(
            ms // 1000 for ms in settings.alert_windows_ms)
        windows = tuple(sorted({max(1, int(s) // 60) for s in windows_s}))
        sensitivity = rule.sensitivity if rule is not None else settings.alert_sensitivity
        if sensitivity == "off":
            sensitivity = "normal"  # callers skip "off" rules; a replay of one still needs numbers
        effect = parse_min_effect(rule.min_effect if rule is not None and rule.min_effect else
                                  settings.alert_min_effect)
        cooldown_ms = rule.cooldown_s * 1000 if rule is not None and rule.cooldown_s is not None else \
            settings.alert_cooldown_ms
        return cls(
            windows_min=windows,
            baseline_min=max(1, settings.alert_baseline_ms // 60_000),
            sensitivity=sensitivity,
            min_effect=effect,
            min_volume=rule.min_volume if rule is not None and rule.min_volume is not None else
            settings.alert_min_volume,
            min_baseline_posts=settings.alert_min_baseline_posts,
            baseline=settings.alert_baseline,
            seasonal_days=settings.alert_seasonal_days,
            seasonal_min_days=settings.alert_seasonal_min_days,
            cooldown_min=math.ceil(cooldown_ms / 60_000),
            baseline_halflife_min=getattr(settings, "alert_baseline_halflife_ms", 0) / 60_000,
            wander=getattr(settings, "alert_wander", "lognormal"),
            daily_bias_min_window=math.ceil(getattr(settings, "alert_daily_bias_min_window_ms", 0) / 60_000),
        )


# ---------------------------------------------------------------------------------------------- the test


def beta_binomial_sf(k: int, n: int, p0: float, var_p: float) -> float:
    """``P(K' >= k)`` for ``K' ~ BetaBinomial(n, a, b)`` whose beta has mean ``p0`` and variance ``var_p``; the
    binomial tail when ``var_p`` is too small to matter. Summed in log space from the pmf (scipy's own
    ``betabinom.sf`` is slow and loses the far tail when ``a + b`` is large)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    p0 = min(max(p0, 1e-9), 1 - 1e-9)
    binomial_var = p0 * (1 - p0)
    size = binomial_var / var_p - 1 if var_p > 0 else math.inf  # a + b
    if size <= 0:
        size = 1e-6  # variance at its maximum: as spread as a beta can be
    if not math.isfinite(size) or n / (size + 1) < 1e-6:  # variance inflation below one in a million
        return float(stats.binom.sf(k - 1, n, p0))
    a, b = p0 * size, (1 - p0) * size
    # past the mode the pmf only falls: sum chunk by chunk until a chunk's last term is below 1e-18 of the largest
    # (the rest cannot move the sum's 15th digit), instead of all n - k + 1 terms (6 000 for an hour at 100/min)
    log_head = special.gammaln(n + 1) - special.betaln(a, b)
    chunks, start, chunk = [], k, 512
    while start <= n:
        j = np.arange(start, min(n, start + chunk - 1) + 1, dtype=np.float64)
        log_pmf = (log_head - special.gammaln(j + 1) - special.gammaln(n - j + 1)
                   + special.betaln(j + a, n - j + b))
        chunks.append(special.logsumexp(log_pmf))
        start += chunk
        top = max(chunks)
        if log_pmf[-1] < top - 41.5 and log_pmf[-1] <= log_pmf[0]:  # e^-41.5 ~ 1e-18, and falling
            break
        chunk *= 2
    return float(min(1.0, math.exp(special.logsumexp(chunks))))


_WANDER_NODES, _WANDER_WEIGHTS = np.polynomial.hermite_e.hermegauss(32)  # E[f(Z)], Z ~ N(0, 1), by quadrature
_WANDER_WEIGHTS = _WANDER_WEIGHTS / _WANDER_WEIGHTS.sum()
_WANDER_USED = _WANDER_WEIGHTS > 1e-14  # nodes beyond ~7.5 sd weigh nothing at any alpha the detector uses


def lognormal_wander_sf(k: int, n: int, p0: float, var_base: float, tau2: float) -> float:
    """``P(K' >= k)`` when the window's share is the baseline's (beta: mean ``p0``, variance ``var_base``, the
    baseline's own sampling noise) times a **lognormal** wander of mean 1 and variance ``tau2`` (the relative
    overdispersion): the beta-binomial tail :func:`beta_binomial_sf` averaged over the wander by Gauss-Hermite
    quadrature. Why lognormal: shares wander by a *fraction* of themselves (``tau2`` is relative), and a
    multiplicative wander is right-skewed; a beta of the same mean and variance has a lighter upper tail (at a 5 %
    share, 4 000 posts and ``tau2`` 0.02, the beta's tail at 8.7e-5, the 1-h window's alpha, is a third of the
    lognormal's), which left the long windows' null too narrow where the wander dominates the binomial noise."""
    if tau2 <= 0:
        return beta_binomial_sf(k, n, p0, var_base)
    s2 = math.log1p(tau2)  # log-variance of a mean-1 lognormal of variance tau2
    factors = np.exp(math.sqrt(s2) * _WANDER_NODES - s2 / 2)
    p_min = min(max(p0 * float(factors[_WANDER_USED].min()), 1e-9), 1 - 1e-9)
    if var_base <= 0 or n * var_base / (p_min * (1 - p_min) - var_base) < 1e-6:  # binomial at every node: at once
        shares = np.clip(p0 * factors[_WANDER_USED], 1e-9, 1 - 1e-9)
        return float(min(1.0, np.sum(_WANDER_WEIGHTS[_WANDER_USED] * stats.binom.sf(k - 1, n, shares))))
    total, left = 0.0, 1.0
    for i in np.argsort(-factors):  # the highest share first: the tail only falls with the share, so once the
        if not _WANDER_USED[i]:     # weight left times the last tail is below 1e-7 of the sum, the rest is noise
            left -= _WANDER_WEIGHTS[i]
            continue
        tail = beta_binomial_sf(k, n, min(p0 * factors[i], 1 - 1e-9), var_base * factors[i] ** 2)
        total += _WANDER_WEIGHTS[i] * tail
        left -= _WANDER_WEIGHTS[i]
        if tail * left < 1e-7 * total:
            break
    return float(min(1.0, total))


def null_sf(k: int, n: int, p0: float, var_p: float, tau2: float, wander: str = "lognormal") -> float:
    """The test's p-value: ``P(K' >= k)`` under the null of mean share ``p0`` and share variance ``var_p``, of which
    ``tau2 x p0^2`` is the relative wander (the rest the baseline's sampling noise). ``wander="beta"``: all of it one
    beta (:func:`beta_binomial_sf`); ``"lognormal"``: the wander multiplicative (:func:`lognormal_wander_sf`)."""
    if wander == "beta":
        return beta_binomial_sf(k, n, p0, var_p)
    return lognormal_wander_sf(k, n, p0, max(var_p - tau2 * p0 * p0, 0.0), tau2)


def _difference(k, n, kb, nb, min_posts: int):
    """``(d, binomial variance of d, usable)``: a window's share minus its rolling baseline's (Jeffreys) share,
    relative to the baseline share."""
    k, n, kb, nb = (np.asarray(a, dtype=np.float64) for a in (k, n, kb, nb))
    pb = (kb + 0.5) / (nb + 1)
    usable = (n >= min_posts) & (nb >= min_posts)
    d = np.where(usable, (k / np.maximum(n, 1) - pb) / pb, np.nan)
    var = np.where(usable, (1 - pb) / pb * (1 / np.maximum(n, 1) + 1 / (nb + 1)), np.nan)
    return d, var, usable


def _spike_flags(d: np.ndarray, var: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Windows of a history (consecutive windows, oldest first) that look like spikes themselves: a share above its
    baseline with ``d^2 / v`` more than ``SPIKE_Z^2`` times the local spread, the median of ``d^2 / v`` over the
    ``SPIKE_LOCAL`` windows before it over its binomial median 0.455 (at least 1). Local, so that at high volume,
    where the share's wander dwarfs binomial noise, ordinary windows are not all "spikes" (the local spread grows
    with the wander); pure noise exceeds 4 sds about once in 30 000 windows, the synthetic x3 spikes sit at 6-10."""
    import pandas as pd

    with np.errstate(invalid="ignore", divide="ignore"):
        z2 = np.where(usable, d ** 2 / var, np.nan)
    local = pd.Series(z2).rolling(SPIKE_LOCAL, min_periods=1).median().shift(1).to_numpy()
    spread = np.maximum(1.0, np.nan_to_num(local / _CHI2_1_MEDIAN, nan=1.0))
    return usable & (np.nan_to_num(d) > 0) & (np.nan_to_num(z2) > SPIKE_Z ** 2 * spread)


def history_tau2(bucket_k, bucket_n, baseline_windows: int, history_windows: int, min_posts: int) -> float:
    """``tau2`` from one evaluation's history (the worker's reads): ``bucket_k``/``bucket_n`` are window-long sums,
    newest first, ``[0]`` being the window under test; earlier window ``i`` is compared with the
    ``baseline_windows`` buckets before it, for ``i = 1 .. history_windows``. A window is left out when it or a
    window of its baseline is a spike (:func:`_spike_flags`), which needs ``baseline_windows + SPIKE_LOCAL`` more
    windows (and their baselines)."""
    bucket_k = np.asarray(bucket_k, dtype=np.float64)
    bucket_n = np.asarray(bucket_n, dtype=np.float64)
    rows = []
    for i in range(1, history_windows + baseline_windows + SPIKE_LOCAL + 1):
        base = slice(i + 1, i + 1 + baseline_windows)
        if i < len(bucket_k):
            rows.append((bucket_k[i], bucket_n[i], bucket_k[base].sum(), bucket_n[base].sum()))
    if not rows:
        return 0.0
    k, n, kb, nb = np.array(rows).T
    d, var, usable = _difference(k, n, kb, nb, min_posts)
    flags = _spike_flags(d[::-1], var[::-1], usable[::-1])[::-1]  # oldest first, and back
    keep = np.array([usable[i] and not flags[i:i + baseline_windows + 1].any()
                     for i in range(min(history_windows, len(d)))], dtype=bool)
    return _tau2(d[:len(keep)][keep], var[:len(keep)][keep])


def _tau2(d: np.ndarray, var: np.ndarray) -> float:
    if len(d) < MIN_HISTORY_WINDOWS:
        return 0.0
    dispersion = _dispersion(np.mean(np.minimum(d ** 2 / var, _Z2_CAP)))  # 1 for binomial noise only
    return float(max(0.0, dispersion - 1) * np.median(var))


def _replay_tau2(k, n, kb, nb, window: int, history_windows: int, min_posts: int,
                 baseline_windows: int) -> np.ndarray:
    """:func:`history_tau2` at every minute at once: the window/baseline sums at every minute (``k``, ``n``, ``kb``,
    ``nb``), and for minute ``t`` the earlier windows ending at ``t - window``, ``t - 2 window``, ... — one residue
    class of minutes modulo ``window``, so a rolling median over each class's subsequence."""
    import pandas as pd

    d, var, usable = _difference(k, n, kb, nb, min_posts)
    tau2 = np.zeros(len(d))
    for residue in range(window):
        flags = _spike_flags(d[residue::window], var[residue::window], usable[residue::window])
        near_spike = pd.Series(flags.astype(float)).rolling(
            baseline_windows + 1, min_periods=1).max().to_numpy() > 0  # it or a window of its baseline
        keep = usable[residue::window] & ~near_spike
        z = pd.Series(np.where(keep, np.minimum(d[residue::window] ** 2 / var[residue::window], _Z2_CAP), np.nan))
        bv = pd.Series(np.where(keep, var[residue::window], np.nan))
        count = pd.Series(keep.astype(float)).rolling(history_windows, min_periods=1).sum()
        dispersion = pd.Series(_dispersion(z.rolling(history_windows, min_periods=1).mean().to_numpy()))
        med_var = bv.rolling(history_windows, min_periods=1).median()
        est = ((dispersion - 1).clip(lower=0) * med_var).where(count >= MIN_HISTORY_WINDOWS, 0.0)
        tau2[residue::window] = est.shift(1).fillna(0.0).to_numpy()  # earlier windows only, never the current one
    return tau2


DAILY_BIAS_DAYS = 3  # earlier days (inside the overdispersion history's 72 h) the daily bias is read from
DAILY_BIAS_SPAN_MIN = 120  # ... at the same clock time +- this (the rhythm is smooth; more samples, less noise)
DAILY_BIAS_MIN_SAMPLES = 5  # fewer usable earlier windows: no correction
DAILY_BIAS_LIMITS = (-0.5, 1.0)  # a relative bias outside this is no rhythm to extrapolate


def daily_bias_lags(window: int) -> np.ndarray:
    """The earlier windows (in windows before the current one) whose comparison with their own rolling baseline
    estimates the daily bias: the same clock time +- ``DAILY_BIAS_SPAN_MIN`` on each of the ``DAILY_BIAS_DAYS``
    previous days (a window that does not divide a day is rounded to the nearest whole window)."""
    per_day = MINUTES_PER_DAY / window
    half = DAILY_BIAS_SPAN_MIN // window
    return np.array(sorted({int(round(day * per_day)) + s for day in range(1, DAILY_BIAS_DAYS + 1)
                            for s in range(-half, half + 1)}), dtype=np.int64)


def daily_bias(samples: np.ndarray) -> np.ndarray:
    """The daily bias of a window's comparison with its rolling baseline, from ``samples`` (axis 0: the earlier
    windows of :func:`daily_bias_lags`; their relative difference ``d`` from their own rolling baseline, NaN where
    unusable): the median, clipped to ``DAILY_BIAS_LIMITS``, 0 with fewer than ``DAILY_BIAS_MIN_SAMPLES``.

    Why: a rolling baseline lies *before* its window (for the 1-h window the centres are 1.5 h apart), so where the
    share has a daily rhythm the window's expected share is not the baseline's. On the synthetic weeks of
    ``bench/alerts.py`` (share +-20 % over the day) the 1-h window sat ~10 % above its baseline in the late
    morning and ~10 % below after midnight, every day: its z-score's mean swung by +-0.5 sd with the clock, and
    its spike-free p-values fell below 1e-4 15x too often. The same comparison at the same clock time on the last
    days measures that bias without a model of the rhythm; the median keeps a spike on one of those days out."""
    samples = np.asarray(samples, dtype=np.float64)
    count = np.sum(np.isfinite(samples), axis=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(samples, axis=0) if len(samples) else np.zeros(samples.shape[1:])
    return np.where(count >= DAILY_BIAS_MIN_SAMPLES, np.clip(np.nan_to_num(median), *DAILY_BIAS_LIMITS), 0.0)


def history_daily_bias(bucket_k, bucket_n, baseline_windows: int, window: int, min_posts: int) -> float:
    """:func:`daily_bias` from one evaluation's window-long buckets (newest first, ``[0]`` the window under test;
    the worker's reads, as :func:`history_tau2`); buckets beyond the read count as empty (unusable)."""
    bucket_k = np.asarray(bucket_k, dtype=np.float64)
    bucket_n = np.asarray(bucket_n, dtype=np.float64)
    rows = []
    for i in daily_bias_lags(window):
        base = slice(i + 1, i + 1 + baseline_windows)
        rows.append((bucket_k[i], bucket_n[i], bucket_k[base].sum(), bucket_n[base].sum()) if i < len(bucket_k)
                    else (0.0, 0.0, 0.0, 0.0))
    k, n, kb, nb = np.array(rows).T
    d, _var, usable = _difference(k, n, kb, nb, min_posts)
    return float(daily_bias(np.where(usable, d, np.nan)[:, None])[0])


def _replay_daily_bias(k, n, kb, nb, window: int, min_posts: int, times: np.ndarray) -> np.ndarray:
    """:func:`history_daily_bias` at ``times`` from the window/baseline sums at every minute."""
    d, _var, usable = _difference(k, n, kb, nb, min_posts)
    d = np.where(usable, d, np.nan)
    earlier = times[None, :] - daily_bias_lags(window)[:, None] * window
    samples = np.where(earlier >= 0, d[np.clip(earlier, 0, None)], np.nan)
    return daily_bias(samples)


EWMA_HORIZON_HALFLIVES = 6  # an exponentially weighted baseline stops where its weight falls below 1/64


def ewma_horizon(halflife_min: float) -> int:
    """Minutes an exponentially weighted baseline of half-life ``halflife_min`` reaches back (0 for none)."""
    return int(math.ceil(EWMA_HORIZON_HALFLIVES * halflife_min)) if halflife_min > 0 else 0


def ewma_counts(k, n, window: int, halflife_min: float) -> tuple[np.ndarray, np.ndarray]:
    """The exponentially weighted baseline of a ``window``-minute window at every minute, as *effective counts*
    ``(kb, nb)`` that the flat rolling baseline's formulas take unchanged.

    For the window ending at minute ``t`` the baseline weighs minute ``t - window - j`` (``j >= 0``, the window itself
    excluded so a spike never raises its own baseline) by ``w_j = 2^(-j / halflife)``, up to
    :func:`ewma_horizon` minutes back. Its share is ``p = sum w k / sum w n``; under binomial noise its variance is
    ``p (1 - p) sum w^2 n / (sum w n)^2``, i.e. that of a flat baseline of ``nb = (sum w n)^2 / sum w^2 n`` posts
    (Kish's effective size), with ``kb = p nb``. So ``p0 = (kb + 0.5) / (nb + 1)`` and its variance term in the
    beta-binomial test stay honest, and the overdispersion history (:func:`_replay_tau2`) measures the window's
    difference from *this* baseline: whatever it lags or misses of the share's wander becomes ``tau2``.
    ``k``/``n``: per-minute counts, oldest first; minutes before the start count as nothing (as in Redis)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    horizon = ewma_horizon(halflife_min)
    if horizon == 0:
        raise ValueError("ewma_counts needs a half-life > 0")
    weights = 0.5 ** (np.arange(horizon) / halflife_min)
    size = len(n)

    def weighted(values, w):  # sum_j w_j values[t - j] at every t, then shifted past the window
        total = np.convolve(values, w)[:size]
        out = np.zeros(size)
        if window < size:
            out[window:] = total[:size - window]
        return out

    sum_k, sum_n, sum_n2 = weighted(k, weights), weighted(n, weights), weighted(n, weights ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        nb = np.where(sum_n2 > 0, sum_n ** 2 / np.maximum(sum_n2, 1e-300), 0.0)
        kb = np.where(sum_n > 0, sum_k / np.maximum(sum_n, 1e-300), 0.0) * nb
    return kb, nb


def seasonal_baseline(span_k: np.ndarray, span_n: np.ndarray, min_posts: int, min_spans: int):
    """Robust baseline from the same clock span on earlier days (axis 0 = days, other axes independent): the
    median share of the spans with at least ``min_posts`` posts and the variance of the share across them,
    ``(1.4826 MAD)^2``, floored at the binomial variance of the median span. Returns ``(p0, var, usable)`` where
    ``usable`` says at least ``min_spans`` spans qualified (elsewhere ``p0``/``var`` are NaN)."""
    span_k = np.asarray(span_k, dtype=np.float64)
    span_n = np.asarray(span_n, dtype=np.float64)
    ok = span_n >= min_posts
    share = np.where(ok, span_k / np.maximum(span_n, 1), np.nan)
    usable = np.sum(ok, axis=0) >= min_spans
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p0 = np.nanmedian(share, axis=0)
        mad = np.nanmedian(np.abs(share - p0), axis=0)
        typical_n = np.nanmedian(np.where(ok, span_n, np.nan), axis=0)
    p0c = np.clip(np.nan_to_num(p0), 1e-4, 1 - 1e-4)
    var = np.maximum((_MAD_TO_SD * np.nan_to_num(mad)) ** 2, p0c * (1 - p0c) / np.maximum(np.nan_to_num(typical_n), 1))
    return np.where(usable, p0, np.nan), np.where(usable, var, np.nan), usable


@dataclass(frozen=True)
class WindowInputs:
    """The counts one window's decision needs, as arrays over evaluation times (length 1 in the worker).

    ``k``/``n``: the window's emotion posts / posts; ``kb``/``nb``: the rolling baseline's; ``span_k``/``span_n``:
    the seasonal spans (rows: ``seasonal_days`` previous days, then as many previous weeks; columns: times);
    ``tau2``: the overdispersion estimated from the history of the same comparison (:func:`history_tau2`)."""

    window_min: int
    k: np.ndarray
    n: np.ndarray
    kb: np.ndarray
    nb: np.ndarray
    span_k: np.ndarray
    span_n: np.ndarray
    tau2: np.ndarray
    bias: np.ndarray | None = None  # the daily bias of the rolling baseline (:func:`daily_bias`); None: none


@dataclass(frozen=True)
class Detection:
    """One window's verdict at one moment. ``confidence = 1 - p_value``; ``ratio`` and ``points`` are the effect
    (window share over / minus the baseline share; points as a fraction, 0.05 = +5 points)."""

    fired: bool
    p_value: float
    confidence: float
    ratio: float
    points: float
    window_share: float
    baseline_share: float
    baseline_kind: str  # seasonal | rolling
    window_min: int
    count: int
    posts: int
    reason: str = ""  # why it did not fire ("" when it fired)

    def to_dict(self) -> dict:
        return asdict(self)


def _baselines(inp: WindowInputs, params: DetectorParams):
    """``(p_test, var_test, p_effect, seasonal_used, baseline_ok)`` arrays: the baseline the p-value is computed
    against (with its predictive variance) and the one the minimum effect is measured from."""
    kb = np.asarray(inp.kb, dtype=np.float64)
    nb = np.asarray(inp.nb, dtype=np.float64)
    tau2 = np.asarray(inp.tau2, dtype=np.float64)
    p_roll = (kb + 0.5) / (nb + 1)
    # the test's null: the share this window is expected to have given the daily rhythm (the minimum effect stays
    # measured from the baseline itself)
    p_null = p_roll if inp.bias is None else np.clip(p_roll * (1 + np.asarray(inp.bias, dtype=np.float64)),
                                                     1e-6, 1 - 1e-6)
    var_roll = p_null * (1 - p_null) / (nb + 1) + tau2 * p_null ** 2
    roll_ok = nb >= params.min_baseline_posts
    if params.baseline == "rolling" or np.size(inp.span_n) == 0:
        return p_null, var_roll, p_roll, np.zeros_like(roll_ok), roll_ok
    days = params.seasonal_days
    span_k, span_n = np.asarray(inp.span_k), np.asarray(inp.span_n)
    p_day, var_day, day_ok = seasonal_baseline(span_k[:days], span_n[:days], params.min_baseline_posts,
                                               params.seasonal_min_days)
    p_week, var_week, week_ok = seasonal_baseline(span_k[days:], span_n[days:], params.min_baseline_posts,
                                                  params.seasonal_min_days)
    p_seas = np.nan_to_num(np.where(week_ok, p_week, p_day))
    var_seas = (np.nan_to_num(np.where(week_ok, var_week, var_day))
                + tau2 * np.nan_to_num(np.where(week_ok, p_week, p_day)) ** 2)
    usable = week_ok | day_ok
    if params.baseline == "seasonal":  # the test and the effect against the seasonal baseline alone
        return p_seas, np.where(usable, var_seas, 1.0), p_seas, usable, usable
    # auto: the test against the rolling baseline (it knows today's level: a drifting share moves it), the effect
    # against the higher of rolling and seasonal (an hour that is angry every day is not a spike)
    return p_null, var_roll, np.where(usable, np.maximum(p_roll, p_seas), p_roll), usable, roll_ok


def decide(inp: WindowInputs, params: DetectorParams) -> tuple[np.ndarray, np.ndarray, dict]:
    """Vectorised decision for one window: ``(fired, p_value, details)`` arrays over the evaluation times. The
    p-value is computed only where the cheap gates (volume, baseline, minimum effect) pass; elsewhere it is 1."""
    k = np.asarray(inp.k, dtype=np.float64)
    n = np.asarray(inp.n, dtype=np.float64)
    p_test, var, p_effect, seasonal, baseline_ok = _baselines(inp, params)
    share = np.where(n > 0, k / np.maximum(n, 1), 0.0)
    p_test = np.clip(np.nan_to_num(p_test), 1e-6, 1 - 1e-6)
    p_effect = np.clip(np.nan_to_num(p_effect), 1e-6, 1 - 1e-6)
    effect_ok = (share >= params.min_effect.ratio * p_effect) & (share >= p_effect + params.min_effect.points)
    gates = (k >= params.min_volume) & baseline_ok & effect_ok
    p_value = np.ones_like(k)
    tau2 = np.broadcast_to(np.asarray(inp.tau2, dtype=np.float64), k.shape)
    for i in np.flatnonzero(gates):
        p_value[i] = null_sf(int(k[i]), int(n[i]), float(p_test[i]), float(var[i]), float(tau2[i]), params.wander)
    fired = gates & (p_value <= params.alpha(inp.window_min))
    details = {"share": share, "p0": p_effect, "seasonal": seasonal, "volume_ok": k >= params.min_volume,
               "baseline_ok": baseline_ok, "effect_ok": effect_ok}
    return fired, p_value, details


def detection_at(inp: WindowInputs, params: DetectorParams, i: int = -1) -> Detection:
    """The :class:`Detection` of one evaluation (the worker's: ``i = -1``, the only one)."""
    fired, p_value, d = decide(inp, params)
    share, p0 = float(d["share"][i]), float(d["p0"][i])
    reason = ("" if fired[i] else "volume" if not d["volume_ok"][i] else "baseline" if not d["baseline_ok"][i]
              else "effect" if not d["effect_ok"][i] else "significance")
    p = float(p_value[i])
    return Detection(bool(fired[i]), p, 1.0 - p, share / p0 if p0 > 0 else math.inf, share - p0, share, p0,
                     "seasonal" if d["seasonal"][i] else "rolling", inp.window_min, int(np.asarray(inp.k)[i]),
                     int(np.asarray(inp.n)[i]), reason)


# ---------------------------------------------------------------------------------------------- offline replay


def _span_sums(cum: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
    """Sums of the per-minute series over ``(end - length, end]`` (minute indices; clipped at the start)."""
    hi = np.clip(end + 1, 0, len(cum) - 1)
    lo = np.clip(end + 1 - length, 0, len(cum) - 1)
    return cum[hi] - cum[lo]


def seasonal_lags(params: DetectorParams) -> tuple[list[int], list[int]]:
    """The lags (minutes) of the seasonal spans: ``seasonal_days`` previous days and as many previous weeks. The
    weekly spans are used when at least ``seasonal_min_days`` of them hold enough posts (the same hour of the week
    then captures weekday/weekend patterns), else the daily ones."""
    days = [d * MINUTES_PER_DAY for d in range(1, params.seasonal_days + 1)]
    weeks = [w * MINUTES_PER_WEEK for w in range(1, params.seasonal_days + 1)]
    return days, weeks


def replay_inputs(posts_per_minute, emotion_per_minute, params: DetectorParams, window: int,
                  times: np.ndarray | None = None) -> WindowInputs:
    """:class:`WindowInputs` for ``window`` minutes at every minute (or at ``times``), from per-minute arrays; the
    same quantities the worker reads from Redis. Spans reaching before the series start hold only what is in the
    series (as in Redis: nothing was written before)."""
    n = np.asarray(posts_per_minute, dtype=np.float64)
    k = np.asarray(emotion_per_minute, dtype=np.float64)
    cum_n = np.concatenate([[0.0], np.cumsum(n)])
    cum_k = np.concatenate([[0.0], np.cumsum(k)])
    t = np.arange(len(n)) if times is None else np.asarray(times)
    rolling = params.rolling_min(window)
    span, after = params.seasonal_span(window)

    def lagged(cum, lags, length, shift=0):
        rows = []
        for lag in lags:
            end = t - lag - shift
            rows.append(_span_sums(cum, end, length))  # a span reaching before the start holds only what is in
        return np.array(rows) if rows else np.zeros((0, len(t)))

    days, weeks = seasonal_lags(params) if params.baseline != "rolling" else ([], [])
    every = np.arange(len(n))
    if params.baseline_halflife_min > 0:
        kb, nb = ewma_counts(k, n, window, params.halflife(window))
    else:
        kb, nb = _span_sums(cum_k, every - window, rolling), _span_sums(cum_n, every - window, rolling)
    k_all, n_all = _span_sums(cum_k, every, window), _span_sums(cum_n, every, window)
    tau2 = _replay_tau2(k_all, n_all, kb, nb,
                        window, params.history_windows(window), params.min_baseline_posts, rolling // window)
    bias = (_replay_daily_bias(k_all, n_all, kb, nb, window, params.min_baseline_posts, t)
            if params.corrects_bias(window) else None)
    return WindowInputs(
        window_min=window,
        k=_span_sums(cum_k, t, window), n=_span_sums(cum_n, t, window),
        kb=kb[t], nb=nb[t],
        span_k=lagged(cum_k, days + weeks, span, shift=-after), span_n=lagged(cum_n, days + weeks, span, shift=-after),
        tau2=tau2[t], bias=bias,
    )


def _apply_cooldown(candidates: np.ndarray, cooldown_min: int) -> list[int]:
    fired, next_allowed = [], -1
    for i in np.flatnonzero(candidates):
        if i >= next_allowed:
            fired.append(int(i))
            next_allowed = i + max(cooldown_min, 1)
    return fired


def _threshold_candidates(n: np.ndarray, k: np.ndarray, settings) -> np.ndarray:
    """The old rule (:func:`monitor.alerts.is_spike`) at every minute, on whole-minute windows."""
    window = max(1, settings.alert_window_ms // 60_000)
    baseline = max(1, settings.alert_baseline_ms // 60_000)
    cum_n = np.concatenate([[0.0], np.cumsum(n)])
    cum_k = np.concatenate([[0.0], np.cumsum(k)])
    t = np.arange(len(n))
    wk, wn = _span_sums(cum_k, t, window), _span_sums(cum_n, t, window)
    bk, bn = _span_sums(cum_k, t - window, baseline), _span_sums(cum_n, t - window, baseline)
    share = np.where(wn > 0, wk / np.maximum(wn, 1), 0.0)
    base_share = np.where(bn > 0, bk / np.maximum(bn, 1), 0.0)
    return ((wk >= settings.alert_min_volume) & (bn >= settings.alert_min_baseline_posts)
            & (share >= settings.alert_min_share) & (share >= settings.alert_ratio * base_share))


def replay_detector(posts_per_minute, emotion_per_minute, settings, rule=None) -> list[int]:
    """The minute indices at which the detector would fire, cooldown included.

    ``posts_per_minute`` / ``emotion_per_minute``: numpy arrays of equal length, one value per minute, oldest first
    (all posts of the brand / those carrying the emotion). ``settings``: a :class:`monitor.settings.MonitorSettings`
    (``alert_detector`` picks the statistical detector or the old ``threshold`` rule); ``rule``: an optional
    :class:`monitor.alert_rules.AlertRule` overriding sensitivity, minimum effect, volume, cooldown and windows.
    The worker makes the same decision (:func:`decide`) on the same counts read from Redis."""
    n = np.asarray(posts_per_minute, dtype=np.float64)
    k = np.asarray(emotion_per_minute, dtype=np.float64)
    if n.shape != k.shape or n.ndim != 1:
        raise ValueError(f"posts_per_minute {n.shape} and emotion_per_minute {k.shape} must be 1-D and equal length")
    if np.any(k > n) or np.any(n < 0) or np.any(k < 0):
        raise ValueError("counts must be >= 0 and emotion posts cannot exceed posts in a minute")
    if getattr(settings, "alert_detector", "statistical") == "threshold":
        cooldown = rule.cooldown_s * 1000 if rule is not None and rule.cooldown_s is not None else \
            settings.alert_cooldown_ms
        return _apply_cooldown(_threshold_candidates(n, k, settings), math.ceil(cooldown / 60_000))
    params = DetectorParams.from_settings(settings, rule)
    candidates = np.zeros(len(n), dtype=bool)
    for window in params.windows_min:
        fired, _p, _d = decide(replay_inputs(n, k, params, window), params)
        candidates |= fired
    return _apply_cooldown(candidates, params.cooldown_min)


def windows_fired(posts_per_minute, emotion_per_minute, settings, minutes: Sequence[int], rule=None) -> list[list]:
    """For each minute in ``minutes``: the :class:`Detection` of every window (bench and tests: which window fired)."""
    params = DetectorParams.from_settings(settings, rule)
    times = np.asarray(list(minutes), dtype=np.int64)
    out = [[] for _ in times]
    for window in params.windows_min:
        inp = replay_inputs(posts_per_minute, emotion_per_minute, params, window, times=times)
        for i in range(len(times)):
            out[i].append(detection_at(inp, params, i))
    return out


# ---------------------------------------------------------------------------------------------- the worker's reads


def _minute_span(end_min: int, length: int) -> tuple[int, int]:
    """``[from_ms, to_ms]`` of the minutes ``(end_min - length, end_min]``."""
    return (end_min - length + 1) * 60_000, (end_min + 1) * 60_000 - 1


def spans_for(t_min: int, window: int, params: DetectorParams) -> dict:
    """What one window's decision at minute ``t_min`` (epoch minutes) reads: ``buckets``, one ``TS.RANGE`` of
    window-long sums ending with the window itself (``[0]``; then its rolling baseline, then the history for
    ``tau2``), and the ``seasonal`` spans (``[from_ms, to_ms]`` each): the same sums :func:`replay_inputs` takes from
    arrays."""
    days, weeks = seasonal_lags(params) if params.baseline != "rolling" else ([], [])
    span, after = params.seasonal_span(window)
    count = 1 + params.history_windows(window) + 2 * (params.rolling_min(window) // window) + SPIKE_LOCAL
    if params.corrects_bias(window):  # the daily bias's earlier windows and their baselines
        count = max(count, 1 + int(daily_bias_lags(window)[-1]) + params.rolling_min(window) // window)
    return {
        "buckets": ((t_min + 1 - window * count) * 60_000, (t_min + 1) * 60_000 - 1, count),
        "seasonal": [_minute_span(t_min - lag + after, span) for lag in days + weeks],
    }


TAU2_REFRESH_MIN = 10


def _cached_history(cache: dict | None, key: tuple, t_min: int) -> tuple | None:
    """``(tau2, bias)`` of a series x window from the caller's cache while younger than ``TAU2_REFRESH_MIN``, else
    None (the history is due to be read and estimated again)."""
    cached = cache.get(key) if cache is not None else None
    return cached[1:] if cached is not None and 0 <= t_min - cached[0] < TAU2_REFRESH_MIN else None


def _remember_history(cache: dict | None, key: tuple, t_min: int, tau2: float, bias: float | None) -> None:
    if cache is not None:
        if len(cache) > 100_000:  # brands come and go: a bounded cache
            cache.clear()
        cache[key] = (t_min, tau2, bias)


async def read_inputs(store, count_key: str, posts_key: str, now_ms: int, params: DetectorParams,
                      tau2_cache: dict | None = None) -> list[WindowInputs]:
    """The worker's :class:`WindowInputs` (one per window, length 1) from the 1-minute tier of a brand's count and
    posts series (``count_key`` / ``posts_key``), in one pipelined round trip of ``TS.RANGE ... AGGREGATION sum``
    (``store``: :meth:`monitor.store.RedisStore.range_sums`):
    per window one range of window-long buckets (the window, its rolling baseline, 72 h of history and what the spike
    checks of the oldest history windows need; 901 buckets for a 5-min window) and one single-bucket range per seasonal
    span. ``now_ms``'s minute is the window's last, holding the posts counted so far.

    ``tau2_cache`` (a dict the caller keeps): the history part is read and ``tau2`` re-estimated at most every
    ``TAU2_REFRESH_MIN`` minutes per series x window (it moves slowly; parsing 72 h of buckets cost ~0.2 s per
    brand x emotion on the 2-core machine); in between only the window and its baseline are read. The offline replay
    re-estimates it every minute, so the two can differ by those minutes of history."""
    t_min = now_ms // 60_000
    if params.baseline_halflife_min > 0:
        return await _read_inputs_ewma(store, count_key, posts_key, t_min, params, tau2_cache)
    plans = []
    for window in params.windows_min:
        spans = dict(spans_for(t_min, window, params))
        cached = _cached_history(tau2_cache, (count_key, window), t_min)
        if cached is not None:  # only the window and its rolling baseline
            start, end, _count = spans["buckets"]
            count = 1 + params.rolling_min(window) // window
            spans["buckets"] = (end + 1 - window * count * 60_000, end, count)
        plans.append((window, spans, cached))
    queries = []
    for window, spans, _cached in plans:
        start, end, _count = spans["buckets"]
        queries += [(key, start, end, window * 60_000, end + 1) for key in (count_key, posts_key)]
        for start, end in spans["seasonal"]:
            queries += [(key, start, end, end - start + 1, start) for key in (count_key, posts_key)]
    replies = iter(await store.range_sums(queries))

    def total(reply) -> float:
        if isinstance(reply, Exception):  # no such series yet: nothing counted
            return 0.0
        return float(sum(float(value) for _ts, value in reply))

    def newest_first(reply, end_ms: int, window: int, count: int) -> np.ndarray:
        out = np.zeros(count)
        if isinstance(reply, Exception):
            return out
        for ts, value in reply:  # a bucket starting at end + 1 - (i + 1) window is bucket i
            i = (end_ms + 1 - int(ts)) // (window * 60_000) - 1
            if 0 <= i < count:
                out[i] += float(value)
        return out

    out = []
    for window, spans, cached in plans:
        _start, end, count = spans["buckets"]
        bucket_k = newest_first(next(replies), end, window, count)
        bucket_n = newest_first(next(replies), end, window, count)
        seasonal = [(total(next(replies)), total(next(replies))) for _ in spans["seasonal"]]
        base = slice(1, 1 + params.rolling_min(window) // window)
        if cached is None:
            tau2 = history_tau2(bucket_k, bucket_n, params.rolling_min(window) // window,
                                params.history_windows(window), params.min_baseline_posts)
            bias = (history_daily_bias(bucket_k, bucket_n, params.rolling_min(window) // window, window,
                                       params.min_baseline_posts) if params.corrects_bias(window) else None)
            _remember_history(tau2_cache, (count_key, window), t_min, tau2, bias)
        else:
            tau2, bias = cached
        out.append(WindowInputs(
            window_min=window, k=bucket_k[:1], n=bucket_n[:1],
            kb=np.array([bucket_k[base].sum()]), nb=np.array([bucket_n[base].sum()]),
            span_k=np.array([[k] for k, _n in seasonal]).reshape(len(seasonal), 1),
            span_n=np.array([[n] for _k, n in seasonal]).reshape(len(seasonal), 1),
            tau2=np.array([tau2]), bias=None if bias is None else np.array([bias])))
    return out


async def _read_inputs_ewma(store, count_key: str, posts_key: str, t_min: int, params: DetectorParams,
                            tau2_cache: dict | None) -> list[WindowInputs]:
    """:func:`read_inputs` with an exponentially weighted baseline: the per-minute counts (one ``TS.RANGE`` per series
    with 1-minute buckets) over the longest span a window needs — :meth:`DetectorParams.history_minutes` when
    ``tau2`` is due, else the window and its baseline's horizon — then the replay's own code
    (:func:`replay_inputs`, :func:`ewma_counts`) at the last minute, so the worker and the offline replay decide on
    the same numbers; the seasonal spans are read as single buckets as with the flat baseline."""
    rolling_only = dataclasses.replace(params, baseline="rolling")  # seasonal spans come from their own reads
    plans, longest = [], 0
    for window in params.windows_min:
        cached = _cached_history(tau2_cache, (count_key, window), t_min)
        minutes = window + params.ewma_horizon(window) if cached is not None else params.history_minutes(window)
        span, after = params.seasonal_span(window)
        days, weeks = seasonal_lags(params) if params.baseline != "rolling" else ([], [])
        plans.append((window, minutes, cached,
                      [_minute_span(t_min - lag + after, span) for lag in days + weeks]))
        longest = max(longest, minutes)
    start, end = _minute_span(t_min, longest)
    queries = [(key, start, end, 60_000, start) for key in (count_key, posts_key)]
    for _window, _minutes, _tau2, seasonal in plans:
        for lo, hi in seasonal:
            queries += [(key, lo, hi, hi - lo + 1, lo) for key in (count_key, posts_key)]
    replies = iter(await store.range_sums(queries))

    def per_minute(reply) -> np.ndarray:
        out = np.zeros(longest)
        if not isinstance(reply, Exception):
            for ts, value in reply:
                i = (int(ts) - start) // 60_000
                if 0 <= i < longest:
                    out[i] += float(value)
        return out

    def total(reply) -> float:
        return 0.0 if isinstance(reply, Exception) else float(sum(float(value) for _ts, value in reply))

    minute_k, minute_n = per_minute(next(replies)), per_minute(next(replies))
    out = []
    for window, minutes, cached, seasonal in plans:
        k, n = minute_k[longest - minutes:], minute_n[longest - minutes:]
        spans = [(total(next(replies)), total(next(replies))) for _ in seasonal]
        if cached is None:
            inp = replay_inputs(n, k, rolling_only, window, times=np.array([minutes - 1]))
            _remember_history(tau2_cache, (count_key, window), t_min, float(inp.tau2[0]),
                              None if inp.bias is None else float(inp.bias[0]))
        else:
            tau2, bias = cached
            kb, nb = ewma_counts(k, n, window, params.halflife(window))
            inp = WindowInputs(window_min=window, k=np.array([k[-window:].sum()]), n=np.array([n[-window:].sum()]),
                               kb=kb[-1:], nb=nb[-1:], span_k=np.zeros((0, 1)), span_n=np.zeros((0, 1)),
                               tau2=np.array([tau2]), bias=None if bias is None else np.array([bias]))
        out.append(dataclasses.replace(
            inp, span_k=np.array([[sk] for sk, _sn in spans]).reshape(len(spans), 1),
            span_n=np.array([[sn] for _sk, sn in spans]).reshape(len(spans), 1)))
    return out


def strongest(detections: Sequence[Detection]) -> Detection:
    """The detection to report: the fired one with the smallest p-value, else the closest to firing."""
    fired = [d for d in detections if d.fired]
    return min(fired or detections, key=lambda d: (d.p_value, d.window_min))
