"""Spike detection on synthetic brand-weeks: the old threshold rule against the statistical detector, same seeds.

    python bench/alerts.py                       # report seeds 100..107, volumes 5/20/100 posts/min
    python bench/alerts.py --seeds 0 1 2 3       # the tuning seeds (what the defaults were chosen on)
    python bench/alerts.py --seeds $(seq 100 129) --detectors oracle --out bench/results/alerts_oracle

Each run simulates two weeks of one brand, minute by minute (:func:`simulate`): a day pattern in volume (night at
25 % of the peak) and a weekend dip (x0.7), an anger share drifting between 3 % and 6 % over the week with its own
day pattern (+-20 %) and overdispersion (the share wanders smoothly: a log-AR(1) with ~1 h memory and stationary sd 0.15
— a first version with independent hourly jumps of that size made x1.5-x2 steps every few hours, i.e. spikes, and the
detector found them), binomial noise, three volume bursts per
week (x4..x10 for 20..60 min) that do not change the share (a viral neutral post), and 12 anger spikes per week of one
size (share x1.5 .. x8, lasting 10..60 min, at random times; both weeks, so the history has spikes too). Only the
second week is scored: its first days give the seasonal baseline its history.

Scores per volume x spike size: recall (a spike counts as found when an alert fires between its start and 5 min
after its end; also for daytime spikes alone, where the volume is at least half the peak), median delay (minutes from the spike's start to the alert), false alerts per brand-week (alerts
outside every spike's span + 60 min — the 1-h window still holds the spike for an hour — in the scored week; measured on runs with spikes and on spike-free runs).
The detectors read the same arrays through :func:`monitor.detector.replay_detector` with default settings; only
``alert_detector`` differs (and ``alert_sensitivity=high`` for the third row: a budget of 4 false alerts a week;
``alert_baseline_halflife_ms`` for ``statistical ewma``: the rolling baseline exponentially weighted,
``--ewma-halflife``). Writes bench/results/alerts.json and bench/results/alerts.png and prints the table.

Two ORACLE rows bound what any detector can reach on this synthetic at the "normal" budget: they know the
generator's true per-minute share (no baseline to estimate) and test the detector's windows (5, 15, 30, 60 min) against
it, with the detector's cooldown, each window's alpha being the detector's own times one multiplier calibrated
empirically (:func:`calibrate_oracle`) so that spike-free runs (seeds 200-229, both weeks: 60 weeks per volume) raise
one false alert a week. ``oracle`` knows the share exactly, wander included: the exact null of the count, a binomial
test; nothing that sees only the counts can know more. ``oracle, wander unknown`` knows the day/week pattern and the
drift but only the law of the wander (its sd and memory), a beta-binomial with the generator's own overdispersion:
what a detector would reach that could not follow the wander at all (a detector whose rolling baseline follows part
of it can beat this row, not the first).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.detector import DetectorParams, replay_detector  # noqa: E402
from monitor.settings import MonitorSettings  # noqa: E402

DAY = 1440
WEEK = 7 * DAY
SIZES = (1.5, 2.0, 3.0, 5.0, 8.0)
VOLUMES = (5, 20, 100)
SPIKES_PER_WEEK = 12
DETECTORS = ("threshold", "statistical", "statistical high", "statistical ewma", "statistical beta", "oracle",
             "oracle, wander unknown")
# the settings of each detector row (oracles apart); "statistical beta" is the detector before issue 18's calibration
# fix: a beta wander, no daily-bias correction
DETECTOR_SETTINGS = {
    "threshold": {"alert_detector": "threshold"},
    "statistical": {"alert_detector": "statistical"},
    "statistical high": {"alert_detector": "statistical", "alert_sensitivity": "high"},
    "statistical ewma": {"alert_detector": "statistical"},  # + the half-life (--ewma-halflife)
    "statistical beta": {"alert_detector": "statistical", "alert_wander": "beta", "alert_daily_bias_min_window_ms": 0},
}
EWMA_HALFLIFE_MIN = 30  # the "statistical ewma" row: alert_baseline_halflife_ms (--ewma-halflife)
ORACLES = {"oracle": True, "oracle, wander unknown": False}  # name -> knows the wander's path
AFTER_MIN = 5  # an alert up to this long after a spike's end still found it
FALSE_GRACE_MIN = 60  # alerts within this after a spike's end are that spike's (the 1-h window still holds it)
WANDER_MEMORY_MIN = 60  # the share's log wander is an AR(1) with this memory (minutes)
BUDGET_PER_WEEK = 1.0  # false alerts a brand-week at "normal": the budget the oracle is calibrated to
ORACLE_CALIBRATION_SEEDS = range(200, 230)  # spike-free runs (2 weeks each) for the oracle's alpha; not 0-9, 100+


def simulate(seed: int, peak: float, size: float | None, weeks: int = 2, wander_sd: float = 0.15,
             truth: bool = False):
    """``(posts, angry, spikes, bursts, busy)``: per-minute counts over ``weeks``, the spikes and bursts
    ``[(start, end), ...]`` and the daytime flag; with ``truth`` also the true per-minute share before spikes (wander
    included) and its smooth part (day/week pattern and drift, no wander), for the oracle."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks * WEEK)
    hour = (t % DAY) / 60
    day_shape = 0.25 + 0.75 * (1 - np.cos(2 * np.pi * (hour - 4) / 24)) / 2  # low at 4:00, peak at 16:00
    weekend = np.where((t // DAY) % 7 >= 5, 0.7, 1.0)
    volume = peak * day_shape * weekend
    bursts = []
    for week in range(weeks):
        for _ in range(3):
            start = int(rng.integers(week * WEEK, (week + 1) * WEEK - 60))
            length = int(rng.integers(20, 61))
            volume[start:start + length] *= rng.uniform(4, 10)
            bursts.append((start, start + length))
    posts = rng.poisson(volume)
    busy = peak * day_shape * weekend >= 0.5 * peak  # daytime: at least half the peak volume
    phase = rng.uniform(0, 2 * np.pi)
    share = 0.045 + 0.015 * np.sin(2 * np.pi * t / WEEK + phase)  # 3 % .. 6 % over the week
    share *= 1 + 0.2 * np.sin(2 * np.pi * (hour - 12) / 24)  # evenings angrier than mornings
    # overdispersion: the share wanders beyond binomial noise, smoothly (log-AR(1), ~1 h memory, stationary sd 0.15)
    phi = np.exp(-1 / WANDER_MEMORY_MIN)
    shocks = rng.normal(0, wander_sd * np.sqrt(1 - phi ** 2), size=len(t))
    wander = np.empty(len(t))
    wander[0] = rng.normal(0, wander_sd)
    for i in range(1, len(t)):
        wander[i] = phi * wander[i - 1] + shocks[i]
    smooth_share = share.copy()  # what the day/week pattern and the drift make of it (the oracle's "wander unknown")
    share *= np.exp(wander)
    base_share = share.copy()  # the true per-minute share before spikes (the oracle's null)
    spikes = []
    if size is not None:
        slots = rng.choice(np.arange(2, weeks * WEEK // 120 - 2), size=SPIKES_PER_WEEK * weeks, replace=False)
        for slot in sorted(slots):  # one per 2-hour slot at most: spikes never overlap
            start = int(slot * 120 + rng.integers(0, 50))
            length = int(rng.integers(10, 61))
            share[start:start + length] *= size
            spikes.append((start, start + length))
    angry = rng.binomial(posts, np.clip(share, 0, 0.95))
    if truth:
        return posts, angry, spikes, bursts, busy, base_share, smooth_share
    return posts, angry, spikes, bursts, busy


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """Sums over the ``window`` minutes ending at each minute (shorter at the series start)."""
    cum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    t = np.arange(len(values))
    return cum[t + 1] - cum[np.maximum(t + 1 - window, 0)]


def wander_moments(wander_sd: float, window: int) -> tuple[float, float]:
    """Mean and variance of the window-mean of ``exp(wander)`` for the generator's stationary log-AR(1) wander (sd
    ``wander_sd``, memory ``WANDER_MEMORY_MIN``): ``Cov(e^w_i, e^w_j) = e^(sd^2) (e^(sd^2 rho^|i-j|) - 1)``."""
    s2 = wander_sd ** 2
    lags = np.arange(window)
    pairs = np.where(lags == 0, window, 2 * (window - lags))
    rho = np.exp(-lags / WANDER_MEMORY_MIN)
    var = float(np.exp(s2) * np.sum(pairs * np.expm1(s2 * rho)) / window ** 2)
    return float(np.exp(s2 / 2)), var


def oracle_pvalues(posts, angry, share, windows, wander_sd: float = 0.0) -> dict[int, np.ndarray]:
    """The oracle's p-value per window at every minute: ``P(K' >= K)`` for the window's ``N`` posts when each
    minute's posts carry the emotion with the KNOWN per-minute ``share`` (no baseline to estimate). With
    ``wander_sd = 0`` the share is the generator's exact one and the tail is binomial at the window's mean share (the
    count is a sum of binomials of nearly equal shares; the alpha is calibrated empirically anyway, so the ranking of
    windows is what matters); with ``wander_sd > 0`` ``share`` is the smooth share and the window's true share is
    that times the window-mean of ``exp(wander)``, whose law the generator fixes: a beta-binomial with its mean and
    variance (:func:`wander_moments`)."""
    from scipy import stats

    posts = np.asarray(posts, dtype=np.float64)
    out = {}
    for window in windows:
        n = _window_sums(posts, window)
        k = _window_sums(np.asarray(angry, dtype=np.float64), window)
        p0 = np.where(n > 0, _window_sums(posts * share, window) / np.maximum(n, 1), 0.0)
        p_value = np.ones(len(n))
        ok = (n > 0) & (k > 0)
        if wander_sd == 0:
            p_value[ok] = stats.binom.sf(k[ok] - 1, n[ok], np.clip(p0[ok], 1e-9, 1 - 1e-9))
        else:
            mean_factor, var_factor = wander_moments(wander_sd, window)
            mean = np.clip(p0 * mean_factor, 1e-9, 0.95)
            var = np.maximum(p0 ** 2 * var_factor, 1e-12)
            p_value[ok] = stats.binom.sf(k[ok] - 1, n[ok], mean[ok])
            # the beta-binomial (more spread, same mean) has the heavier upper tail: it only matters where the
            # binomial tail is already small, and scipy's betabinom is slow
            tail = ok & (p_value < 1e-2)
            size = np.maximum(mean * (1 - mean) / var - 1, 1e-6)
            p_value[tail] = stats.betabinom.sf(k[tail] - 1, n[tail], (mean * size)[tail], ((1 - mean) * size)[tail])
        out[window] = p_value
    return out


def oracle_alerts(p_values: dict[int, np.ndarray], multiplier: float, cooldown_min: int) -> list[int]:
    """Minutes the oracle alerts at: any window's p-value at most ``multiplier`` x the detector's own alpha for it
    (the budget split over the windows as the detector splits it), cooldown as the detector's."""
    from monitor.detector import _apply_cooldown, alpha_for

    candidates = np.zeros(len(next(iter(p_values.values()))), dtype=bool)
    for window, p_value in p_values.items():
        candidates |= p_value <= multiplier * alpha_for("normal", len(p_values), window)
    return _apply_cooldown(candidates, cooldown_min)


def calibrate_oracle(volume: float, wander_sd: float, windows, cooldown_min: int, known_wander: bool,
                     seeds=ORACLE_CALIBRATION_SEEDS, budget: float = BUDGET_PER_WEEK) -> tuple[float, float]:
    """``(multiplier, false alerts / week)``: the largest multiplier of the detector's per-window alphas at which the
    oracle raises at most ``budget`` false alerts a week over spike-free runs (both weeks of each; bisection on a log
    scale), i.e. the alpha calibrated empirically rather than from a model."""
    runs = []
    for seed in seeds:
        posts, angry, _spikes, _bursts, _busy, base, smooth = simulate(
            seed * 1000 + int(volume), volume, None, wander_sd=wander_sd, truth=True)
        runs.append(oracle_pvalues(posts, angry, base if known_wander else smooth, windows,
                                   0.0 if known_wander else wander_sd))
    weeks = 2 * len(runs)

    def false_per_week(log_m: float) -> float:
        return sum(len(oracle_alerts(p, 10 ** log_m, cooldown_min)) for p in runs) / weeks

    lo, hi = -4.0, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if false_per_week(mid) <= budget else (lo, mid)
    return 10 ** lo, false_per_week(lo)


CALIBRATION_LEVELS = (1e-2, 1e-3, 1e-4)  # p-value levels whose null rate the calibration check reports


def null_calibration(seeds, volume: float, wander_sd: float = 0.15, settings=None) -> list[dict]:
    """Are the detector's p-values honest? On spike-free runs (the scored week of each seed), every minute and every
    window: the share of tests whose p-value is below each level of ``CALIBRATION_LEVELS`` and below the window's own
    alpha, against the level itself (a calibrated test gives ratio 1; above 1 the null is too narrow and the budget
    is overspent). The p-value is the detector's own (:func:`monitor.detector.decide`'s ``null_sf`` against its
    baseline and overdispersion) wherever the baseline and the window have posts, *without* the volume and
    minimum-effect gates, which would hide the model's tail behind them."""
    from monitor.detector import _baselines, null_sf, replay_inputs

    settings = settings or MonitorSettings()
    params = DetectorParams.from_settings(settings)
    out = []
    for window in params.windows_min:
        alpha = params.alpha(window)
        levels = (*CALIBRATION_LEVELS, alpha)
        below = np.zeros(len(levels))
        tests = 0
        for seed in seeds:
            posts, angry, _spikes, _bursts, _busy = simulate(seed * 1000 + int(volume), volume, None,
                                                             wander_sd=wander_sd)
            times = np.arange(WEEK, len(posts))
            inp = replay_inputs(posts, angry, params, window, times=times)
            p_test, var, _p_effect, _seasonal, ok = _baselines(inp, params)
            k, n = np.asarray(inp.k), np.asarray(inp.n)
            ok = ok & (n > 0)
            p_test = np.clip(np.nan_to_num(p_test), 1e-6, 1 - 1e-6)
            # the exact tail only where it can be below 1e-2: a normal z of the null above 1.5 (p < 0.07)
            sd = np.sqrt(n * p_test * (1 - p_test) + n * (n - 1) * var)
            z = (k - n * p_test) / np.maximum(sd, 1e-12)
            tau2 = np.asarray(inp.tau2)
            for i in np.flatnonzero(ok & (z > 1.5)):
                p = null_sf(int(k[i]), int(n[i]), float(p_test[i]), float(var[i]), float(tau2[i]), params.wander)
                below += np.array([p < level for level in levels])
            tests += int(ok.sum())
        out.append({"volume": volume, "window_min": window, "tests": tests, "alpha": alpha,
                    **{f"rate_below_{level:g}": below[j] / max(tests, 1)
                       for j, level in enumerate(CALIBRATION_LEVELS)},
                    "rate_below_alpha": below[-1] / max(tests, 1),
                    **{f"ratio_{level:g}": below[j] / max(tests, 1) / level
                       for j, level in enumerate(CALIBRATION_LEVELS)},
                    "ratio_alpha": below[-1] / max(tests, 1) / alpha})
        row = out[-1]
        print(f"  {volume:>3}/min {window:>2}-min window: P(p<1e-2) {row['rate_below_0.01']:.2e} "
              f"P(p<1e-3) {row['rate_below_0.001']:.2e} P(p<1e-4) {row['rate_below_0.0001']:.2e} "
              f"P(p<alpha={alpha:.1e}) {row['rate_below_alpha']:.2e} (x{row['ratio_alpha']:.1f}; {tests} tests)",
              file=sys.stderr)
    return out


def calibration_table(rows) -> str:
    out = ["| peak volume | detector | window | tests | P(p < 1e-2) / 1e-2 | P(p < 1e-3) / 1e-3 | P(p < 1e-4) / 1e-4 | "
           "P(p < alpha) / alpha |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['volume']} posts/min | {r.get('detector', 'statistical')} | {r['window_min']} min | "
                   f"{r['tests']} | {r['ratio_0.01']:.2f} | "
                   f"{r['ratio_0.001']:.2f} | {r['ratio_0.0001']:.1f} | {r['ratio_alpha']:.1f} (alpha "
                   f"{r['alpha']:.1e}) |")
    return "\n".join(out)


def score(alerts: list[int], spikes, scored_from: int, busy=None):
    """``(spikes, found, delays, false alerts, busy spikes, busy found)``; ``busy``: per-minute flag of daytime
    volume (at least half the peak), to report recall where the volume is what the table's header says."""
    scored = [(s, e) for s, e in spikes if s >= scored_from]
    delays = []
    busy_total = busy_found = 0
    for start, end in scored:
        hits = [a for a in alerts if start <= a < end + AFTER_MIN]
        is_busy = busy is not None and bool(busy[start])
        busy_total += is_busy
        if hits:
            delays.append(hits[0] - start)
            busy_found += is_busy
    false = [a for a in alerts if a >= scored_from
             and not any(s <= a < e + FALSE_GRACE_MIN for s, e in spikes)]
    return len(scored), len(delays), delays, len(false), busy_total, busy_found


def run(seeds, volumes=VOLUMES, sizes=SIZES, wander_sd: float = 0.15, names=DETECTORS,
        ewma_halflife_min: float = EWMA_HALFLIFE_MIN):
    detectors = {name: MonitorSettings(**values) for name, values in DETECTOR_SETTINGS.items()}
    detectors["statistical ewma"] = MonitorSettings(**{**DETECTOR_SETTINGS["statistical ewma"],
                                                       "alert_baseline_halflife_ms": int(ewma_halflife_min * 60_000)})
    params = DetectorParams.from_settings(MonitorSettings())
    detectors = {name: settings for name, settings in detectors.items() if name in names}
    # without wander the two oracles are one
    oracles = {name: known for name, known in ORACLES.items() if name in names and (known or wander_sd > 0)}
    rows, calibration = [], []
    for volume in volumes:
        multipliers = {}
        for name, known in oracles.items():
            multipliers[name], null_rate = calibrate_oracle(volume, wander_sd, params.windows_min,
                                                            params.cooldown_min, known)
            calibration.append({"volume": volume, "oracle": name, "alpha_multiplier": multipliers[name],
                                "false_per_week_calibration": null_rate,
                                "calibration_weeks": 2 * len(ORACLE_CALIBRATION_SEEDS)})
            print(f"  {volume:>3}/min {name}: alpha x {multipliers[name]:.3g} ({null_rate:.2f} false/week on "
                  f"{2 * len(ORACLE_CALIBRATION_SEEDS)} spike-free calibration weeks)", file=sys.stderr)
        for size in (None, *sizes):
            for name in (*detectors, *oracles):
                found = total = false = busy_total = busy_found = 0
                delays = []
                started = time.perf_counter()
                for seed in seeds:
                    posts, angry, spikes, _bursts, busy, base, smooth = simulate(
                        seed * 1000 + int(volume), volume, size, wander_sd=wander_sd, truth=True)
                    if name in oracles:
                        known = oracles[name]
                        alerts = oracle_alerts(oracle_pvalues(posts, angry, base if known else smooth,
                                                              params.windows_min, 0.0 if known else wander_sd),
                                               multipliers[name], params.cooldown_min)
                    else:
                        alerts = replay_detector(posts, angry, detectors[name])
                    n, hit, d, f, bt, bf = score(alerts, spikes, WEEK, busy)
                    total += n
                    found += hit
                    delays += d
                    false += f
                    busy_total += bt
                    busy_found += bf
                rows.append({
                    "volume": volume, "size": size, "detector": name, "spikes": total, "found": found,
                    "recall": found / total if total else None,
                    "daytime_spikes": busy_total, "daytime_recall": busy_found / busy_total if busy_total else None,
                    "median_delay_min": statistics.median(delays) if delays else None,
                    "false_per_week": false / len(seeds), "seconds": round(time.perf_counter() - started, 2),
                })
                print(f"  {volume:>3}/min size {size or '-':>4} {name:<16} recall "
                      f"{'-' if not total else f'{found}/{total}':>7} false/week {false / len(seeds):.2f}",
                      file=sys.stderr)
    return rows, calibration


def table(rows) -> str:
    sizes = sorted({r["size"] for r in rows if r["size"] is not None})
    out = ["| peak volume | detector | false alerts / week (no spikes) | false / week (with spikes) | "
           + "".join(f"×{s:g} | " for s in sizes) + "×2 / ×3 daytime | median delay ×3+ (min) |",
           "| --- | --- | ---: | ---: | " + "".join("---: | " for _ in sizes) + "---: | ---: |"]
    for volume in sorted({r["volume"] for r in rows}):
        for name in DETECTORS:
            mine = [r for r in rows if r["volume"] == volume and r["detector"] == name]
            if not mine:
                continue
            null = next(r for r in mine if r["size"] is None)
            spiky = [r for r in mine if r["size"] is not None]
            fp_spiky = f"{statistics.mean(r['false_per_week'] for r in spiky):.2f}" if spiky else "-"
            cells = [f"{r['recall']:.2f}" for r in spiky]
            big = [r["median_delay_min"] for r in spiky if r["size"] >= 3 and r["median_delay_min"] is not None]
            delay = f"{statistics.median(big):g}" if big else "-"
            day = " / ".join(f"{r['daytime_recall']:.2f}" if r["daytime_recall"] is not None else "-"
                             for r in spiky if r["size"] in (2.0, 3.0))
            out.append(f"| {volume} posts/min | {name} | {null['false_per_week']:.2f} | {fp_spiky} | "
                       + "".join(f"{c} | " for c in cells) + f"{day or '-'} | {delay} |")
    return "\n".join(out)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = sorted({r["volume"] for r in rows})
    fig, axes = plt.subplots(1, len(volumes), figsize=(4.2 * len(volumes), 3.6), sharey=True)
    for ax, volume in zip(np.atleast_1d(axes), volumes):
        for name, style in zip(DETECTORS, ("o--", "s-", "^:", "d-", "v--", "k*-", "x-.")):
            mine = [r for r in rows if r["volume"] == volume and r["detector"] == name and r["size"] is not None]
            if not mine:
                continue
            null = next(r for r in rows if r["volume"] == volume and r["detector"] == name and r["size"] is None)
            ax.plot([r["size"] for r in mine], [r["recall"] for r in mine], style,
                    label=f"{name} ({null['false_per_week']:.2f} false/wk)")
        ax.set_xscale("log")
        ax.set_xticks(SIZES, [f"×{s:g}" for s in SIZES])
        ax.set_xticks([], minor=True)  # no log-scale minor labels between the sizes
        ax.set_title(f"peak {volume} posts/min")
        ax.set_xlabel("anger spike size")
        ax.set_ylim(-0.03, 1.03)
        ax.axhline(0.9, color="grey", lw=0.6, ls=":")
        ax.legend(fontsize=8, loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("recall (spikes found)")
    fig.suptitle("Anger spike recall per brand-week: old threshold rule, statistical detector (normal, high), oracles")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 108)))
    parser.add_argument("--volumes", type=int, nargs="+", default=list(VOLUMES))
    parser.add_argument("--wander-sd", type=float, default=0.15,
                        help="Overdispersion: stationary sd of the share's log wander (0 = binomial noise only)")
    parser.add_argument("--sizes", type=float, nargs="*", default=list(SIZES),
                        help="Spike sizes (the spike-free run is always made; none = only the false-alert rate)")
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS),
                        help="Rows to run (e.g. only the oracles, over many seeds: they are cheap)")
    parser.add_argument("--ewma-halflife", type=float, default=EWMA_HALFLIFE_MIN,
                        help="Half-life (min) of the 'statistical ewma' row's exponentially weighted baseline")
    parser.add_argument("--calibration-seeds", type=int, nargs="*", default=[],
                        help="Spike-free seeds for the p-value calibration check of the statistical rows (none: "
                        "skipped; slow: the exact tail of every test that could fall below 1e-2)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "alerts"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows, calibration = run(args.seeds, args.volumes, tuple(args.sizes), wander_sd=args.wander_sd,
                            names=args.detectors, ewma_halflife_min=args.ewma_halflife)
    text = table(rows)
    print(text)
    null_rows = []
    for name in args.detectors if args.calibration_seeds else ():
        if name in ("statistical", "statistical beta"):
            for volume in args.volumes:
                null_rows += [{"detector": name, **row} for row in null_calibration(
                    args.calibration_seeds, volume, args.wander_sd, MonitorSettings(**DETECTOR_SETTINGS[name]))]
    null_text = calibration_table(null_rows) if null_rows else ""
    if null_text:
        print(null_text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    defaults = MonitorSettings()
    result = {
        "command": "python bench/alerts.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds, "wander_sd": args.wander_sd, "ewma_halflife_min": args.ewma_halflife,
        "weeks_scored_per_seed": 1, "spikes_per_week": SPIKES_PER_WEEK,
        "settings": {k: getattr(defaults, k) for k in (
            "alert_sensitivity", "alert_min_effect", "alert_windows_ms", "alert_baseline", "alert_min_volume",
            "alert_min_baseline_posts", "alert_cooldown_ms", "alert_window_ms", "alert_baseline_ms", "alert_ratio",
            "alert_min_share", "alert_wander", "alert_daily_bias_min_window_ms")},
        "oracle_calibration": calibration,
        "null_calibration": {"seeds": args.calibration_seeds, "rows": null_rows, "table_markdown": null_text},
        "rows": rows, "table_markdown": text, "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.platform(),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
