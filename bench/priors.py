"""Stream prior tracking (monitor.priors) on the shipped model's real probabilities: does the worker's estimate of an
emotion's share beat the raw count when the stream's mix differs from training, and what does it cost per post?

    python bench/priors.py                     # shipped model as the CPU worker serves it (int8), 5 seeds

GoEmotions test is resampled into streams whose label priors are known exactly: ``in-domain`` (a random sample)
and streams rich in one emotion (anger 30 %, joy 30 %, disgust 15 %; drawn with replacement). The model's source
priors and its tpr/fpr at the stored thresholds come from GoEmotions dev -- what ``emotion-monitor calibrate``
stores in an artifact. Per stream and estimator, the share error against the true share (percentage points): mean
over the 28 labels and on the shifted label. Estimators: the raw flagged share (the count series), the mean
probability (the score series), EM over the posts (trainer.adaptation.em_priors), the worker's tracker (EM on its
per-minute histograms) and adjusted classify-and-count (ACC). Also the tracker's cost: observe per post, estimate
per brand. Writes bench/results/priors.json and priors.png.

Caveat stated in the output: EM needs calibrated probabilities; the shipped model's are not (positive weights,
undersampling), so EM on it is biased until the artifact is calibrated. ACC needs only the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("EMOTION_MONITOR_DATA_DIR", ROOT.parent / "shared" / "data" / "goemotions"))
STREAMS = {"in-domain": None, "anger-rich": ("anger", 0.30), "joy-rich": ("joy", 0.30),
           "disgust-rich": ("disgust", 0.15)}
ESTIMATORS = ("raw_count", "mean_probability", "em", "tracker_em", "acc")


def read_split(name: str) -> tuple[list[str], np.ndarray]:
    """(texts, label matrix) of a GoEmotions split, read as the trainer reads it (CSV quoting included)."""
    from trainer.data import load_goemotions_tsv

    split = getattr(load_goemotions_tsv(DATA), name)
    return split.texts, np.asarray(split.labels, dtype=int)


def probabilities(clf, texts: list[str], cache: Path) -> np.ndarray:
    """The served probabilities: the head's raw outputs (cached per model weights and precision, the slow part) with
    the artifact's calibration applied when it has one -- what the worker's predict_proba returns."""
    calibration = getattr(clf, "calibration", None)
    if cache.exists():
        raw = np.load(cache)
    else:
        kwargs = {"calibrated": False} if calibration is not None else {}
        raw = np.asarray(clf.predict_proba(texts, 32, **kwargs), dtype=np.float64)  # the worker's int8 call size
        np.save(cache, raw)
    return np.asarray(calibration.apply(raw), dtype=np.float64) if calibration is not None else raw


def weights_tag(clf, path) -> str:
    import hashlib

    digest = hashlib.sha256(Path(path, "head.safetensors").read_bytes()).hexdigest()[:10]
    return f"{Path(path).name}-{digest}-{clf.precision}"


def texts_tag(texts: list[str]) -> str:
    """Part of a cache name: a cache is only valid for the very texts it was computed on."""
    import hashlib

    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:8]


def stream(y: np.ndarray, labels: list[str], spec, n: int, rng) -> np.ndarray:
    """Row indices of a stream of ``n`` posts; ``spec`` (label, prevalence) fixes one label's share."""
    if spec is None:
        return rng.choice(len(y), n, replace=False)
    j = labels.index(spec[0])
    positive, negative = np.flatnonzero(y[:, j]), np.flatnonzero(y[:, j] == 0)
    k = int(round(spec[1] * n))
    return np.concatenate([rng.choice(positive, k, replace=True), rng.choice(negative, n - k, replace=False)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="artifact folder (default: the shipped CPU model)")
    parser.add_argument("--fp32", action="store_true", help="fp32 instead of the worker's int8")
    parser.add_argument("--n", type=int, default=2000, help="posts per stream")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/priors[-calibrated].json)")
    parser.add_argument("--cache", default="/tmp/em-bench-priors", help="folder caching the model's probabilities")
    args = parser.parse_args()

    from monitor.priors import PriorTracker
    from monitor.settings import MonitorSettings
    from trainer import default_model_dir, load_classifier
    from trainer.adaptation import acc_from_rates, em_priors, rates_at_thresholds

    path = args.model or default_model_dir("cpu")
    clf = load_classifier(path, device="cpu", int8=not args.fp32)
    labels = list(clf.labels)
    thresholds = np.asarray(clf.thresholds, dtype=np.float64)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tag = weights_tag(clf, path)
    dev_texts, y_dev = read_split("dev")
    test_texts, y_test = read_split("test")
    started = time.perf_counter()
    p_dev = probabilities(clf, dev_texts, cache / f"dev-{tag}-{texts_tag(dev_texts)}.npy")
    p_test = probabilities(clf, test_texts, cache / f"test-{tag}-{texts_tag(test_texts)}.npy")
    predict_s = time.perf_counter() - started
    if getattr(clf, "label_priors", None) is not None:  # a calibrated artifact: what the worker would use
        source, tpr, fpr = (np.asarray(getattr(clf, k), dtype=np.float64) for k in ("label_priors", "tpr", "fpr"))
        rates_from = "the artifact (label_priors, tpr, fpr)"
    else:
        source = np.clip(y_dev.mean(axis=0), 1e-4, 1 - 1e-4)
        tpr, fpr = rates_at_thresholds(p_dev, y_dev, thresholds, smoothing=0.5)
        rates_from = "GoEmotions dev at the stored thresholds (smoothing 0.5)"
    source = np.clip(source, 1e-4, 1 - 1e-4)
    rates = {"label_priors": source, "tpr": tpr, "fpr": fpr}
    settings = MonitorSettings(prior_min_posts=1, prior_window_ms=60 * 60_000)

    errors = {name: {e: {"mean_pp": [], "shifted_pp": []} for e in ESTIMATORS} for name in STREAMS}
    observe_s, estimate_s, posts_observed = 0.0, 0.0, 0
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        for name, spec in STREAMS.items():
            rows = stream(y_test, labels, spec, args.n, rng)
            p, truth = p_test[rows], y_test[rows].mean(axis=0)
            tracker = PriorTracker(settings, labels, thresholds, rates, redis=None)
            created = 1_795_654_800_000 + np.arange(len(rows)) * 1000  # ~33 minutes of stream
            clock = time.perf_counter()
            for start in range(0, len(rows), 256):  # the worker's micro-batches
                tracker.observe(p[start:start + 256], [["brand"]] * len(p[start:start + 256]),
                                created[start:start + 256])
            observe_s += time.perf_counter() - clock
            posts_observed += len(rows)
            clock = time.perf_counter()
            estimate = tracker.estimate()["brand"]
            estimate_s += (time.perf_counter() - clock) / 2  # two scopes: the brand and _all
            flagged = (p >= thresholds[None, :]).mean(axis=0)
            found = {
                "raw_count": flagged,
                "mean_probability": p.mean(axis=0),
                "em": em_priors(p, source)[0],
                "tracker_em": estimate["prior"],
                "acc": acc_from_rates(flagged, tpr, fpr),
            }
            shifted = labels.index(spec[0]) if spec else None
            for estimator, value in found.items():
                error = 100 * np.abs(value - truth)
                errors[name][estimator]["mean_pp"].append(float(error.mean()))
                if shifted is not None:
                    errors[name][estimator]["shifted_pp"].append(float(error[shifted]))

    summary = {name: {e: {k: (float(np.mean(v)) if v else None) for k, v in per.items()}
                      for e, per in by.items()} for name, by in errors.items()}
    result = {
        "command": "python bench/priors.py " + " ".join(sys.argv[1:]),
        "model": str(clf.version), "precision": clf.precision, "streams": {k: list(v) if v else None
                                                                             for k, v in STREAMS.items()},
        "posts_per_stream": args.n, "seeds": args.seeds, "predict_seconds": predict_s,
        "share_error_pp": summary,
        "tracker_cost": {"observe_us_per_post": 1e6 * observe_s / posts_observed,
                         "estimate_ms_per_scope": 1e3 * estimate_s / (args.seeds * len(STREAMS))},
        "rates_from": rates_from,
        "calibrated_probabilities": bool(getattr(clf, "calibration", None)),
        "machine": platform.platform(),
    }
    default_name = "priors-calibrated.json" if result["calibrated_probabilities"] else "priors.json"
    out = Path(args.out or ROOT / "bench" / "results" / default_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"model {clf.version} ({clf.precision}); calibrated: {result['calibrated_probabilities']}; "
          f"{args.n} posts x {args.seeds} seeds per stream")
    print(f"{'stream':14s} {'estimator':17s} {'mean err pp':>11s} {'shifted-label err pp':>21s}")
    for name, by in summary.items():
        for estimator, figures in by.items():
            shifted = "" if figures["shifted_pp"] is None else f"{figures['shifted_pp']:.2f}"
            print(f"{name:14s} {estimator:17s} {figures['mean_pp']:11.2f} {shifted:>21s}")
    print(f"tracker: observe {result['tracker_cost']['observe_us_per_post']:.1f} us/post, estimate "
          f"{result['tracker_cost']['estimate_ms_per_scope']:.1f} ms per brand")
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(summary)
    width = 0.16
    for ax, key, title in ((axes[0], "mean_pp", "mean share error over 28 labels (pp)"),
                           (axes[1], "shifted_pp", "share error on the shifted label (pp)")):
        shown = [n for n in names if summary[n][ESTIMATORS[0]][key] is not None]
        for i, estimator in enumerate(ESTIMATORS):
            ax.bar(np.arange(len(shown)) + (i - 2) * width, [summary[n][estimator][key] for n in shown], width,
                   label=estimator)
        ax.set_xticks(np.arange(len(shown)), shown)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Stream share estimates on resampled GoEmotions test (bench/priors.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
