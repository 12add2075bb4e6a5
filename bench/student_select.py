"""Which MiniLM serves on CPU (issue 14): candidate artifacts scored as the CPU worker runs them.

Each candidate is loaded on this CPU in fp32 and in int8 (the worker's default), and scored on GoEmotions dev and test
(28 labels), in model calls of the worker's size (``monitor.inference.inference_batch``: int8's activation scales are
per call, so the call size moves int8 scores; stop 11's default scored 0.4999 test macro-F1 in calls of 32, 0.5069 in
calls of 128), at its stored thresholds (what classify and the worker apply) and at thresholds re-tuned on dev with
the same outputs (the issue's "dev-tuned" figure for that precision). Candidates trained elsewhere (a GPU, bf16) are
thus measured on the fp32 base the product really loads. The choice is made on dev, never on test, at
``thresholds.json`` for every candidate; a candidate that ships its own int8 thresholds (``thresholds_int8.json``,
tuned on these very dev outputs, so its dev figure is in-sample) also gets a "served" row scored at those.

    python bench/student_select.py --candidate shipped=trainer/default_model --candidate asl=runs/x/asl ...

Writes ``--out`` (JSON) and the same table as Markdown beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.inference import inference_batch  # noqa: E402
from monitor.settings import MonitorSettings  # noqa: E402
from trainer.artifact import load_classifier  # noqa: E402
from trainer.data import load_dataset_splits  # noqa: E402
from trainer.metrics import macro_f1, tune_thresholds  # noqa: E402
from trainer.settings import default_data_dir  # noqa: E402


def score(classifier, dev, test, call: int, served=None) -> tuple[dict, dict | None]:
    """Dev/test macro-F1 at the stored thresholds and at thresholds re-tuned on dev, from one pass over each split
    in model calls of ``call`` texts; and, when ``served`` (a classifier of the same weights serving its precision's
    own thresholds) is given, the same outputs scored at its thresholds."""
    dev_p = classifier.predict_proba(dev.texts, batch_size=call)
    test_p = classifier.predict_proba(test.texts, batch_size=call)
    dev_y, test_y = np.asarray(dev.labels, dtype=int), np.asarray(test.labels, dtype=int)
    stored = np.asarray(classifier.thresholds, dtype=np.float32)
    tuned = tune_thresholds(dev_y, dev_p)
    row = {"dev_stored": round(macro_f1(dev_y, dev_p >= stored), 4),
           "test_stored": round(macro_f1(test_y, test_p >= stored), 4),
           "dev_tuned": round(macro_f1(dev_y, dev_p >= tuned), 4),
           "test_dev_tuned": round(macro_f1(test_y, test_p >= tuned), 4)}
    if served is None:
        return row, None
    # calibration is the same monotone map for both, so thresholds compare on the served scale
    at = np.asarray(served.thresholds, dtype=np.float32)
    return row, {"dev_stored": round(macro_f1(dev_y, dev_p >= at), 4),
                 "test_stored": round(macro_f1(test_y, test_p >= at), 4),
                 "dev_tuned": row["dev_tuned"], "test_dev_tuned": row["test_dev_tuned"],
                 "thresholds": served.thresholds_source}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", action="append", required=True, help="name=artifact folder (repeatable)")
    parser.add_argument("--data", default=None, help="GoEmotions folder (default: the trainer's)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "student_select.json"))
    args = parser.parse_args()
    splits = load_dataset_splits(args.data or str(default_data_dir()))
    rows: dict = {}
    for spec in args.candidate:
        name, _, folder = spec.partition("=")
        for precision in ("fp32", "int8"):
            started = time.time()
            classifier = load_classifier(folder, device="cpu", int8=precision == "int8", precision_thresholds=False)
            served = load_classifier(folder, device="cpu", int8=precision == "int8")
            served = served if served.thresholds_source != "thresholds.json" else None
            call = inference_batch(MonitorSettings(), "cpu", classifier.precision)
            row, served_row = score(classifier, splits.dev, splits.test, call, served)
            extra = {"call_size": call, "artifact": folder, "version": classifier.version,
                     "seconds": round(time.time() - started, 1)}
            rows[f"{name} {precision}"] = row | extra
            if served_row is not None:
                rows[f"{name} {precision} served"] = served_row | extra
            print(f"{name} {precision}: {row} {served_row or ''}", flush=True)
    chosen = max((r for r in rows if r.endswith(" int8")), key=lambda r: rows[r]["dev_stored"])
    result = {"rows": rows, "chosen_on_dev_int8": chosen.rsplit(" ", 1)[0],
              "note": "macro-F1 over 28 labels; 'stored' = the artifact's thresholds; 'tuned' = re-tuned on dev "
                      "with this precision's outputs; chosen = best dev macro-F1 at the stored thresholds in int8; "
                      "'served' = at the candidate's own thresholds_<precision>.json (tuned on these dev outputs: "
                      "its dev figure is in-sample)"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    lines = ["| candidate | dev (stored) | test (stored) | dev (re-tuned) | test (dev-tuned) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {r['dev_stored']:.4f} | {r['test_stored']:.4f} | {r['dev_tuned']:.4f} | "
              f"{r['test_dev_tuned']:.4f} |" for name, r in rows.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + f"\n\nchosen on dev (int8): {result['chosen_on_dev_int8']}\n")
    plot(rows, out.with_suffix(".png"))
    print("\n".join(lines))


def plot(rows: dict, path: Path) -> None:
    """One group of bars per candidate row: dev and test macro-F1 at the stored thresholds and re-tuned on dev."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    keys = (("dev_stored", "dev (stored)"), ("test_stored", "test (stored)"), ("dev_tuned", "dev (re-tuned)"),
            ("test_dev_tuned", "test (dev-tuned)"))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names)), 4.2))
    for k, (key, label) in enumerate(keys):
        ax.bar(np.arange(len(names)) + (k - (len(keys) - 1) / 2) * width, [rows[n][key] for n in names], width,
               label=label)
    values = [rows[n][key] for n in names for key, _ in keys]
    ax.set_ylim(min(values) - 0.02, max(values) + 0.01)
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("macro-F1 (28 labels)")
    ax.set_title("CPU default candidates as the worker runs them (choice: dev, int8, stored thresholds)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
