"""CPU precision benchmark: the shipped model in fp32 vs dynamic int8 — test macro-F1 at the stored thresholds, and
texts/s one at a time and in the worker's micro-batches (length-sorted calls of several sizes). Prints a table,
writes JSON + a PNG to bench/results/.

    python bench/inference_precision.py                 # default model, GoEmotions test split, 2 timed passes

Why: the worker's EM_MONITOR_CPU_PRECISION default (int8) trades a little accuracy for throughput; this script is the
measurement behind that choice. Timings run on one dedicated thread, as the worker's inference does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("EMOTION_MONITOR_DATA_DIR", ROOT.parent / "shared" / "data" / "goemotions"))


def read_split(name: str) -> tuple[list[str], np.ndarray]:
    """(texts, label matrix) of a GoEmotions split, read as the trainer reads it (CSV quoting included)."""
    from trainer.data import load_goemotions_tsv

    split = getattr(load_goemotions_tsv(DATA), name)
    return split.texts, np.asarray(split.labels, dtype=int)


def rate(thread: ThreadPoolExecutor, fn, n: int, passes: int) -> float:
    """Best of ``passes`` timed runs after one warm-up run (CPU kernels are built per shape on first use)."""
    thread.submit(fn).result()
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        thread.submit(fn).result()
        best = max(best, n / (time.perf_counter() - started))
    return best


def measure(clf, test_texts, y_test, stream_texts, call_sizes, micro_batch, passes, thread, eval_call) -> dict:
    from sklearn.metrics import f1_score

    # int8 scores depend a little on the call's other texts (activation scales are per call): score the test split
    # in the worker's call size
    proba = thread.submit(clf.predict_proba, test_texts, eval_call, True).result()
    pred = (proba >= clf.thresholds).astype(int)
    row = {
        "precision": clf.precision,
        "test_macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
        "test_micro_f1": float(f1_score(y_test, pred, average="micro", zero_division=0)),
        "single_texts_per_s": rate(thread, lambda: [clf.predict_proba([t], 1) for t in stream_texts[:200]], 200,
                                   passes),
        "micro_batch": micro_batch,
        "eval_call": eval_call,
        "batched_texts_per_s": {},
    }
    for size in call_sizes:  # the worker's call pattern: each micro-batch in arrival order, sorted calls of `size`
        def run(size=size):
            for start in range(0, len(stream_texts), micro_batch):
                clf.predict_proba(stream_texts[start:start + micro_batch], size)

        row["batched_texts_per_s"][str(size)] = rate(thread, run, len(stream_texts), passes)
    return row, proba


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["precision"] for r in rows]
    left.bar(names, [r["test_macro_f1"] for r in rows], color=["#4c72b0", "#dd8452"][: len(rows)])
    for i, r in enumerate(rows):
        left.text(i, r["test_macro_f1"], f"{r['test_macro_f1']:.4f}", ha="center", va="bottom")
    left.set_ylabel("test macro-F1 (stored thresholds)")
    left.set_ylim(0, max(r["test_macro_f1"] for r in rows) * 1.2)
    sizes = list(rows[0]["batched_texts_per_s"])
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = np.arange(len(sizes) + 1) + i * width
        ys = [r["single_texts_per_s"]] + [r["batched_texts_per_s"][s] for s in sizes]
        right.bar(xs, ys, width, label=r["precision"])
    right.set_xticks(np.arange(len(sizes) + 1) + width * (len(rows) - 1) / 2)
    right.set_xticklabels(["one at a time"] + [f"calls of {s}" for s in sizes])
    right.set_ylabel(f"texts/s (micro-batches of {rows[0]['micro_batch']})")
    right.legend()
    fig.suptitle(f"{results['model_version']} on {results['machine']['cpus']} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Model artifact folder (default: the shipped model)")
    parser.add_argument("--stream-posts", type=int, default=1024, help="Dev texts timed in micro-batches")
    parser.add_argument("--micro-batch", type=int, default=256, help="Worker micro-batch (EM_MONITOR_MAX_BATCH)")
    parser.add_argument("--call-sizes", default="16,32,64,256", help="Texts per model call inside a micro-batch")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "inference_precision.json"))
    args = parser.parse_args()

    from monitor.inference import inference_batch
    from monitor.settings import MonitorSettings
    from trainer import load_classifier

    sizes = [int(s) for s in args.call_sizes.split(",")]
    settings = MonitorSettings(max_batch=args.micro_batch)
    results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "rows": []}
    probas = {}
    with ThreadPoolExecutor(max_workers=1) as thread:
        for int8 in (False, True):
            clf = load_classifier(args.model, device="cpu", int8=int8)
            results["model_version"] = clf.version
            test_texts, y_test = read_split("test")
            stream = read_split("dev")[0][: args.stream_posts]
            call = inference_batch(settings, clf.device.type, clf.precision)
            row, probas[clf.precision] = measure(clf, test_texts, y_test, stream, sizes, args.micro_batch,
                                                 args.passes, thread, call)
            results["rows"].append(row)
            best = max(row["batched_texts_per_s"].items(), key=lambda kv: kv[1])
            print(f"{row['precision']:>5}: test macro-F1 {row['test_macro_f1']:.4f} micro-F1 {row['test_micro_f1']:.4f}"
                  f"  one at a time {row['single_texts_per_s']:.0f}/s  batched "
                  + "  ".join(f"{s}:{v:.0f}/s" for s, v in row["batched_texts_per_s"].items())
                  + f"  (best/one {best[1] / row['single_texts_per_s']:.1f}x)")
    fp32, int8 = probas["fp32"], probas["int8"]
    thresholds = np.asarray(clf.thresholds)
    results["int8_vs_fp32"] = {"max_abs_diff": float(np.abs(fp32 - int8).max()),
                               "mean_abs_diff": float(np.abs(fp32 - int8).mean()),
                               "decision_agreement": float(((fp32 >= thresholds) == (int8 >= thresholds)).mean())}
    print(json.dumps(results["int8_vs_fp32"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
