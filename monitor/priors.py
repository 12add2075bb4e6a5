"""Online label-prior tracking: how often each emotion really occurs in the stream, and a share corrected for it.

The model's thresholds and probabilities were fitted where (say) 3.6 % of posts carry anger; a brand's stream may carry
it ten times as often, and then the raw count series under-counts it (recall collapses off-domain). Two estimators
per emotion over a rolling window of ``EM_MONITOR_PRIOR_WINDOW_MS``, per brand with ``EM_MONITOR_PRIOR_MIN_POSTS`` posts
in the window and for all brands together (``_all``, each post once):

* ``prior`` -- the EM estimate of the stream's prevalence (Saerens, Latinne & Decaestecker 2002,
  :func:`trainer.adaptation.em_priors`) from the probabilities the worker already computes, starting from the
  model's source priors (``label_priors``). Needs calibrated probabilities.
* ``adjusted`` -- adjusted classify-and-count (:func:`trainer.adaptation.acc_from_rates`): the window's flagged share
  ``count/posts`` corrected with the model's dev ``tpr``/``fpr`` at its thresholds. Needs no calibration.

Both assume label shift (what a post of an emotion looks like is unchanged; only the mix moved). Where that fails
(new wording, another language) they disagree, which is why both are written: the dashboard shows their gap as a
trust signal beside the window's volume (docs/monitor.md, "Stream priors").

Cost, and why aggregates: EM needs the probabilities, not only counts, so each post adds its 28 probabilities to a
per-minute histogram (32 bins on the logit scale, each bin keeping its count and its probability sum, so the bin's
mean probability is exact) per brand and for ``_all``; EM then runs on the window's summed histograms (a few
thousand numbers, milliseconds) at most every ``EM_MONITOR_PRIOR_UPDATE_MS``, not per post. A quiet minute (up to 64
posts of a scope) keeps its posts' probabilities as they are instead (float32), so memory follows the traffic: ~110
bytes per post of a quiet minute, at most ~14 KB per busy minute, per scope, for the window.

Delivery: these are derived estimates, kept in this worker's memory. A post is observed when this worker's write
counted it (so a redelivered, already-counted post is not observed twice); a restart loses the open window, and
with several workers each estimates from the posts it counted (a random share of the stream: the same prior, more
variance), the last writer per minute winning. The exactly-once counts are untouched.

A model without ``label_priors``/``tpr``/``fpr`` (an artifact not run through ``emotion-monitor calibrate``) gets no
tracker: logged once at start, nothing computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monitor import schema
from monitor.settings import MonitorSettings
from trainer.adaptation import acc_from_rates, em_priors

__all__ = ["BINS", "PriorTracker", "adaptation_rates"]

log = logging.getLogger(__name__)

# Histogram bins on the logit scale: [-8, 8] in steps of 0.5 (probabilities below 3e-4 / above 0.9997 share the end
# bins). Narrow in logit where the prior correction is nonlinear, so EM on bin means matches EM on the posts.
_LOGIT_EDGE = 8.0
BINS = 32
_MINUTE_MS = 60_000
# a minute keeps up to this many posts' probabilities as they are before switching to its histogram (same memory)
_ROWS_BEFORE_HISTOGRAM = BINS * 2


def adaptation_rates(classifier: Any, labels: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The classifier's ``label_priors``, ``tpr`` and ``fpr`` as arrays in ``labels`` order, or None when any is
    missing or malformed. Each may be a sequence in label order or a mapping label -> value."""
    rates = {}
    for name in ("label_priors", "tpr", "fpr"):
        value = getattr(classifier, name, None)
        if value is None:
            return None
        try:
            if isinstance(value, Mapping):
                value = [value[label] for label in labels]
            array = np.asarray(value, dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError):
            return None
        if array.shape != (len(labels),) or not np.isfinite(array).all():
            return None
        rates[name] = array
    return rates


class _Window:
    """One scope's (a brand's or ``_all``'s) aggregates per minute.

    Why two forms: a minute of a quiet brand keeps its few posts' probabilities as they are (float32, at most
    ``_ROWS_BEFORE_HISTOGRAM`` rows), a busy minute a fixed-size histogram; so memory follows the traffic (~110 bytes
    per post of a quiet minute, at most ~14 KB per busy minute) instead of 14 KB per brand and minute. The estimate
    bins everything, so EM always runs on BINS x labels numbers."""

    __slots__ = ("minutes",)

    def __init__(self) -> None:
        # minute -> {"hist": None | (counts [BINS, L], probability sums [BINS, L]), "rows": [float32 [k, L]], "n_rows",
        #            "flagged": [L], "posts"}
        self.minutes: dict[int, dict] = {}

    @staticmethod
    def _histogram(probs: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        clipped = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
        logits = np.log(clipped) - np.log1p(-clipped)
        bins = np.clip(((logits + _LOGIT_EDGE) / (2 * _LOGIT_EDGE) * BINS).astype(np.int64), 0, BINS - 1)
        index = (bins * n_labels + np.arange(n_labels)[None, :]).ravel()
        counts = np.bincount(index, minlength=BINS * n_labels).reshape(BINS, n_labels).astype(np.float64)
        sums = np.bincount(index, weights=clipped.ravel(), minlength=BINS * n_labels).reshape(BINS, n_labels)
        return counts, sums

    def add(self, minute: int, probs: np.ndarray, flagged: np.ndarray, n_labels: int) -> None:
        entry = self.minutes.get(minute)
        if entry is None:
            entry = self.minutes[minute] = {"hist": None, "rows": [], "n_rows": 0, "flagged": np.zeros(n_labels),
                                            "posts": 0}
        entry["flagged"] += flagged.sum(axis=0)
        entry["posts"] += probs.shape[0]
        if entry["hist"] is None and entry["n_rows"] + probs.shape[0] <= _ROWS_BEFORE_HISTOGRAM:
            entry["rows"].append(probs.astype(np.float32))
            entry["n_rows"] += probs.shape[0]
            return
        if entry["rows"]:  # the minute got busy: fold its rows into a histogram
            probs = np.vstack([*entry["rows"], probs])
            entry["rows"], entry["n_rows"] = [], 0
        counts, sums = self._histogram(probs, n_labels)
        if entry["hist"] is None:
            entry["hist"] = (counts, sums)
        else:
            entry["hist"][0][...] += counts
            entry["hist"][1][...] += sums

    def total(self, first_minute: int, n_labels: int):
        """(bin mean probabilities [BINS, L], bin counts [BINS, L], flagged [L], posts) over the minutes from
        ``first_minute`` (the kept rows binned too, so EM's cost does not grow with the window's posts); None when
        empty."""
        kept = [entry for minute, entry in self.minutes.items() if minute >= first_minute]
        if not kept:
            return None
        counts, sums = np.zeros((BINS, n_labels)), np.zeros((BINS, n_labels))
        for entry in kept:
            if entry["hist"] is not None:
                counts += entry["hist"][0]
                sums += entry["hist"][1]
        rows = [r for e in kept for r in e["rows"]]
        if rows:
            row_counts, row_sums = self._histogram(np.vstack(rows), n_labels)
            counts += row_counts
            sums += row_sums
        means = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), 0.5)
        return means, counts, sum(e["flagged"] for e in kept), int(sum(e["posts"] for e in kept))

    def posts(self, first_minute: int) -> int:
        return sum(entry["posts"] for minute, entry in self.minutes.items() if minute >= first_minute)

    def prune(self, first_minute: int) -> None:
        for minute in [m for m in self.minutes if m < first_minute]:
            del self.minutes[minute]


class PriorTracker:
    """Accumulates the counted posts' probabilities (:meth:`observe`, in memory, cheap) and writes the estimate series
    (:meth:`flush`, at most every ``prior_update_ms``; never raises: a failed write is logged and retried next time).
    """

    def __init__(self, settings: MonitorSettings, labels: Sequence[str], thresholds: np.ndarray,
                 rates: dict[str, np.ndarray], redis: Any, overridden: Sequence[str] = ()):
        self.settings = settings
        self.labels = list(labels)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.source_priors = np.clip(rates["label_priors"], 1e-6, 1 - 1e-6)
        self.tpr, self.fpr = rates["tpr"], rates["fpr"]
        # tpr/fpr were measured at the model's thresholds: an overridden threshold invalidates them for its label
        self.acc_labels = np.array([label not in overridden for label in self.labels])
        self.redis = redis
        self._windows: dict[str, _Window] = {}
        self._newest_minute: int | None = None
        self._last_flush = float("-inf")
        self._failing = False
        self.latest: dict[str, dict[str, np.ndarray | int]] = {}  # scope -> the last estimate written (for tests/logs)

    @classmethod
    def for_processor(cls, settings: MonitorSettings, inference: Any, store: Any) -> "PriorTracker | None":
        """A tracker when ``prior_tracking`` is on and the model has ``label_priors``/``tpr``/``fpr``; else None
        (logged once, here)."""
        if not settings.prior_tracking:
            return None
        rates = getattr(inference, "adaptation", None)
        if rates is None:
            log.warning("prior tracking is on but model %s has no label_priors/tpr/fpr (an artifact not run through "
                        "'emotion-monitor calibrate'): no prior or adjusted-share series are written",
                        getattr(inference, "version", "?"))
            return None
        overridden = [e for e in settings.threshold_overrides if e in inference.labels]
        if overridden:
            log.warning("threshold overrides for %s: their tpr/fpr are not known, so they get a prior series but no "
                        "adjusted share", overridden)
        return cls(settings, inference.labels, inference.thresholds, rates, store.redis, overridden)

    # ------------------------------------------------------------------ accumulate

    async def observe_counted(self, classified: Sequence[Any], written: Sequence[Any]) -> None:
        """The pipeline's hook: observe the posts this write counted now (outcome ``True``: a post an earlier attempt
        or delivery already counted is not observed again), then :meth:`flush` if it is time. Never raises."""
        new: list = []
        try:
            new = [item for item, outcome in zip(classified, written) if outcome is True]
            if new:
                self.observe([[item.scores[label] for label in self.labels] for item in new],
                             [item.post.brands for item in new], [item.post.created_at for item in new])
        except Exception:  # noqa: BLE001 - a bug here must cost an estimate, never a count
            log.exception("prior tracking could not observe a batch of %d posts; the estimate skips them", len(new))
        await self.flush()

    def observe(self, probabilities: np.ndarray, brands: Sequence[Sequence[str]], created_at: Sequence[int]) -> None:
        """Add posts (one row of probabilities each, in label order, with its brands and created_at ms) to the
        window. Call it once per post, for the posts the store counted now."""
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.size == 0:
            return
        n_labels = len(self.labels)
        flagged = probs >= self.thresholds[None, :]
        minutes = np.asarray(created_at, dtype=np.int64) // _MINUTE_MS
        rows: dict[tuple[str, int], list[int]] = {}
        for i, (post_brands, minute) in enumerate(zip(brands, minutes.tolist())):
            rows.setdefault((schema.ALL_BRANDS, minute), []).append(i)
            for brand in post_brands:
                rows.setdefault((brand, minute), []).append(i)
        for (scope, minute), index in rows.items():
            window = self._windows.get(scope)
            if window is None:
                window = self._windows[scope] = _Window()
            window.add(minute, probs[index], flagged[index], n_labels)
        newest = int(minutes.max())
        self._newest_minute = newest if self._newest_minute is None else max(self._newest_minute, newest)

    # ------------------------------------------------------------------ estimate

    def estimate(self) -> dict[str, dict[str, np.ndarray | int]]:
        """Per scope with enough posts in the window: ``prior`` (EM), ``adjusted`` (ACC; NaN for overridden
        labels), ``share`` (the raw flagged share ACC corrects), ``posts`` and the window's end minute. Drops
        minutes that left the window."""
        if self._newest_minute is None:
            return {}
        first = self._newest_minute - self.settings.prior_window_ms // _MINUTE_MS + 1
        estimates = {}
        for scope, window in list(self._windows.items()):
            window.prune(first)
            if not window.minutes:
                del self._windows[scope]
                continue
            if window.posts(first) < self.settings.prior_min_posts:  # cheap check first: most brands are small
                continue
            probs, weights, flagged, posts = window.total(first, len(self.labels))
            # tol 1e-5: a thousandth of a percentage point, far below the estimate's sampling error
            prior, _ = em_priors(probs, self.source_priors, weights=weights, max_iter=1000, tol=1e-5)
            adjusted = acc_from_rates(flagged / posts, self.tpr, self.fpr)
            estimates[scope] = {"prior": prior, "adjusted": np.where(self.acc_labels, adjusted, np.nan),
                                "share": flagged / posts, "posts": posts, "minute": self._newest_minute}
        return estimates

    async def flush(self, force: bool = False) -> None:
        """Re-estimate and write the series when ``prior_update_ms`` has passed (or ``force``). Never raises
        (cancellation aside): these are estimates, and a failed write must not fail the batch that triggered it."""
        now = time.monotonic()
        if not force and (now - self._last_flush) * 1000 < self.settings.prior_update_ms:
            return
        self._last_flush = now
        try:
            estimates = self.estimate()
            if estimates:
                await self._write(estimates)
            self.latest = estimates
            if self._failing:
                log.warning("prior series written again")
                self._failing = False
        except Exception as exc:  # noqa: BLE001 - derived estimates: logged, retried at the next flush
            if not self._failing:
                log.warning("could not estimate or write the prior series (%r); retrying at the next update", exc)
            self._failing = True

    async def _write(self, estimates: dict[str, dict[str, np.ndarray | int]]) -> None:
        retention = self.settings.retention_1m_ms
        pipe = self.redis.pipeline(transaction=False)

        def add(scope: str, emotion: str, metric: str, ts: int, value: float) -> None:
            labels = schema.estimate_labels(scope, emotion, metric)
            pipe.execute_command("TS.ADD", schema.estimate_key(scope, emotion, metric), ts, repr(float(value)),
                                 "RETENTION", retention, "DUPLICATE_POLICY", "LAST", "ON_DUPLICATE", "LAST",
                                 "LABELS", *(item for pair in labels.items() for item in pair))

        for scope, estimate in estimates.items():
            ts = int(estimate["minute"]) * _MINUTE_MS
            for j, emotion in enumerate(self.labels):
                add(scope, emotion, "prior", ts, estimate["prior"][j])
                add(scope, emotion, "share", ts, estimate["share"][j])
                if not np.isnan(estimate["adjusted"][j]):
                    add(scope, emotion, "adjusted", ts, estimate["adjusted"][j])
            add(scope, schema.ALL_EMOTIONS, "window_posts", ts, estimate["posts"])
        await pipe.execute()
