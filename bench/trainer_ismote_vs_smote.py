"""ISMOTE vs imbalanced-learn's SMOTE for stage-2 head re-training, on one trained encoder's embeddings.

For the given artifact: embed train/dev/test once (cached under runs/embeddings/<version>/), then retrain the head
(same init, same loss, same epochs, epoch chosen on dev) on real embeddings only, + SMOTE, + ISMOTE with each
label mode and a few radii. Reports test macro-F1 (dev-tuned thresholds) over all labels and over the oversampled
minority labels. Also draws where the synthetic samples fall on a 2-D toy set (SMOTE: on segments; ISMOTE: around).

    python bench/trainer_ismote_vs_smote.py --model runs/shipped_stage1 --out bench/results

Writes trainer_ismote_vs_smote.{md,json,png} and trainer_ismote_geometry.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def geometry_plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.ismote import ISMOTE
    from trainer.stage2 import smote_resample

    rng = np.random.default_rng(0)
    majority = rng.normal(0, 1.0, size=(300, 2))
    minority = rng.normal([2.5, 2.5], 0.5, size=(15, 2))
    X = np.vstack([majority, minority]).astype(np.float32)
    Y = np.zeros((len(X), 2), dtype=np.uint8)
    Y[:300, 0] = 1
    Y[300:, 1] = 1
    Xs, _ = smote_resample(X, Y, target={1: 75}, k_neighbors=5, random_state=0)
    sampler = ISMOTE(k_neighbors=5, radius=0.5, target={1: 75}, random_state=0)
    Xi, _ = sampler.fit_resample(X, Y)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    for ax, synth, title in ((axes[0], Xs[len(X):], "SMOTE (imbalanced-learn): on segments"),
                             (axes[1], Xi[len(X):], "ISMOTE (radius 0.5): around the pairs")):
        ax.scatter(majority[:, 0], majority[:, 1], s=6, c="#bbbbbb", label="majority")
        ax.scatter(synth[:, 0], synth[:, 1], s=12, c="tab:orange", label="synthetic minority")
        ax.scatter(minority[:, 0], minority[:, 1], s=30, c="tab:blue", edgecolors="k", label="real minority")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0.5, 4.5)
        ax.set_ylim(0.5, 4.5)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/shipped_stage1")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from trainer import load_classifier
    from trainer.ismote import minority_targets
    from trainer.metrics import macro_f1, tune_thresholds
    from trainer.stage2 import embed_splits, fit_head, recorded_settings, resample
    from trainer.data import prepare_data

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    geometry_plot(out / "trainer_ismote_geometry.png")
    classifier = load_classifier(args.model, device="cpu")
    base = recorded_settings(classifier)
    data, _ = prepare_data(base)
    emb = embed_splits(classifier, data, Path("runs/embeddings") / classifier.version)
    minority = sorted(minority_targets(data.train.labels, base.ismote_target))
    variants = {
        "real only": ("none", {}),
        "SMOTE (imblearn, one-vs-rest)": ("smote", {}),
        "ISMOTE anchor r=0.5": ("ismote", {"ismote_label_mode": "anchor", "ismote_radius": 0.5}),
        "ISMOTE single r=0.5": ("ismote", {"ismote_label_mode": "single", "ismote_radius": 0.5}),
        "ISMOTE union r=0.5": ("ismote", {"ismote_label_mode": "union", "ismote_radius": 0.5}),
        "ISMOTE anchor r=0 (=SMOTE geometry)": ("ismote", {"ismote_label_mode": "anchor", "ismote_radius": 0.0}),
        "ISMOTE anchor r=1.0": ("ismote", {"ismote_label_mode": "anchor", "ismote_radius": 1.0}),
    }
    rows = {}
    for name, (method, overrides) in variants.items():
        started = time.time()
        settings = base.model_copy(update={"stage2_epochs": args.epochs, **overrides})
        X, Y = resample(method, emb["train"], data.train.labels, settings)
        state, record = fit_head(X, Y, emb["dev"], data.dev.labels, classifier.model.head, settings)
        head = torch.nn.Linear(*reversed(state["weight"].shape))
        head.load_state_dict(state)
        with torch.no_grad():
            dev_p = torch.sigmoid(head(torch.from_numpy(emb["dev"]))).numpy()
            test_p = torch.sigmoid(head(torch.from_numpy(emb["test"]))).numpy()
        thresholds = tune_thresholds(data.dev.labels, dev_p)
        pred = (test_p >= thresholds).astype(int)
        rows[name] = {
            "test_macro_f1_tuned": macro_f1(data.test.labels, pred),
            "test_minority_macro_f1": macro_f1(data.test.labels[:, minority], pred[:, minority]),
            "dev_macro_f1_tuned": record["best_dev_macro_f1"], "best_epoch": record["best_epoch"],
            "synthetic_rows": int(len(X) - len(emb["train"])), "seconds": round(time.time() - started, 1),
        }
        print(name, rows[name], flush=True)
    stage1 = classifier.metrics.get("test", {}).get("macro_f1_tuned")
    lines = [f"Encoder: `{classifier.version}` (stage-1 test macro-F1 {stage1:.4f} with its own head). Minority "
             f"labels (below {base.ismote_target} x median count): {', '.join(data.labels[j] for j in minority)}. "
             f"Head retrained {args.epochs} epochs, epoch and thresholds chosen on dev, CPU.", "",
             "| variant | test macro-F1 (28) | test macro-F1 (minority) | dev macro-F1 | best epoch | synthetic rows |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['test_macro_f1_tuned']:.4f} | {r['test_minority_macro_f1']:.4f} | "
                     f"{r['dev_macro_f1_tuned']:.4f} | {r['best_epoch']} | {r['synthetic_rows']} |")
    markdown = "\n".join(lines) + "\n"
    (out / "trainer_ismote_vs_smote.md").write_text("# ISMOTE vs SMOTE (stage-2 head re-training)\n\n" + markdown)
    (out / "trainer_ismote_vs_smote.json").write_text(json.dumps(
        {"model": classifier.version, "minority_labels": [data.labels[j] for j in minority], "rows": rows}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = list(rows)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [rows[n]["test_macro_f1_tuned"] for n in names], 0.4, label="all 28 labels")
    ax.bar(x + 0.2, [rows[n]["test_minority_macro_f1"] for n in names], 0.4, label="minority labels")
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test macro-F1 (dev-tuned thresholds)")
    ax.set_title("Stage-2 head re-training: SMOTE vs ISMOTE", fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "trainer_ismote_vs_smote.png", dpi=120)
    plt.close(fig)
    print(markdown)


if __name__ == "__main__":
    main()
