"""Evaluate the shipped default model on GoEmotions test (thresholds tuned on dev) against the issue's target.

    python bench/trainer_eval.py [--model PATH] [--out bench/results/trainer_eval]

Writes report.md / report.json / per_label_f1.png and target.json (macro-F1 >= 0.50 on test, 28 labels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.evaluate import evaluate_artifact  # noqa: E402

TARGET = 0.50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default="bench/results/trainer_eval")
    args = parser.parse_args()
    started = time.time()
    report = evaluate_artifact(args.model, out_dir=args.out, progress=True)
    seconds = time.time() - started
    n_texts = report["dev"]["n"] + report["test"]["n"]
    result = report["summary"] | {
        "target_test_macro_f1": TARGET, "meets_target": report["test"]["macro_f1_tuned"] >= TARGET,
        "test_ekman_macro_f1": round(report["test_ekman"]["macro_f1"], 4),
        "test_sentiment_macro_f1": round(report["test_sentiment"]["macro_f1"], 4),
        "seconds": round(seconds, 1), "texts_per_second_cpu": round(n_texts / seconds, 1),
    }
    Path(args.out, "target.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
