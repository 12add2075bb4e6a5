"""Imbalance ablation: the same seed, data subset and step budget for every row; results as MD + JSON + PNG.

Rows (each "+" is the BCE baseline plus that one technique; ``all`` combines them):

* ``bce`` — plain BCE, no weights, no sampling (stage 1 only)
* ``+undersampling`` — neutral-only rows thinned to 1.0 x the next largest label (train only)
* ``+loss_weights`` — BCE with sqrt-inverse-frequency positive weights
* ``+focal`` — focal loss (gamma 2), no weights
* ``+asl`` — asymmetric loss (Ridnik et al. 2021: gamma_pos 0, gamma_neg 4, margin 0.05), no weights
* ``+label_smoothing`` — BCE on targets smoothed with eps 0.1, no weights
* ``+head_retrain`` — stage 2 on the ``bce`` encoder with real embeddings only (isolates head re-training)
* ``+SMOTE`` — stage 2 on the ``bce`` encoder with imbalanced-learn SMOTE (one-vs-rest) embeddings
* ``+ISMOTE`` — stage 2 on the ``bce`` encoder with ISMOTE embeddings
* ``all`` — undersampling + sqrt-inverse weights + focal, then stage-2 ISMOTE

The stage-2 rows reuse the ``bce`` row's encoder (their cost is the embedding pass plus seconds of head training),
which is what decoupled re-training means: the encoder is trained once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["ROWS", "run_ablation"]

_BASE = {"loss": "bce", "label_weights": "none", "undersample_ratio": None, "ismote": False}
# row -> (stage-1 settings overrides or the stage-1 row it reuses, stage-2 method or None)
ROWS: dict[str, tuple[dict | str, str | None]] = {
    "bce": (_BASE, None),
    "+undersampling": (_BASE | {"undersample_ratio": 1.0}, None),
    "+loss_weights": (_BASE | {"label_weights": "sqrt_inverse"}, None),
    "+focal": (_BASE | {"loss": "focal"}, None),
    "+asl": (_BASE | {"loss": "asl"}, None),
    "+label_smoothing": (_BASE | {"label_smoothing": 0.1}, None),
    "+head_retrain": ("bce", "none"),
    "+SMOTE": ("bce", "smote"),
    "+ISMOTE": ("bce", "ismote"),
    "all": (_BASE | {"undersample_ratio": 1.0, "label_weights": "sqrt_inverse", "loss": "focal"}, "ismote"),
}


def _plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    tuned = [results[n]["test_macro_f1_tuned"] for n in names]
    flat = [results[n]["test_macro_f1_at_0.5"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], tuned, 0.4, label="dev-tuned thresholds")
    ax.bar([i + 0.2 for i in x], flat, 0.4, label="threshold 0.5", alpha=0.7)
    for i, v in enumerate(tuned):
        ax.text(i - 0.2, v + 0.005, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("test macro-F1 (28 labels)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(results: dict, budget: dict) -> str:
    lines = [f"Budget: {budget['description']}", "",
             "| row | test macro-F1 (dev-tuned) | test macro-F1 @0.5 | test micro-F1 (tuned) | dev macro-F1 (tuned) "
             "| stage-1 s/epoch | stage-2 s | synthetic rows |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['test_macro_f1_tuned']:.4f} | {r['test_macro_f1_at_0.5']:.4f} | "
                     f"{r['test_micro_f1_tuned']:.4f} | {r['dev_macro_f1_tuned']:.4f} | {r['seconds_per_epoch']:.0f} | "
                     f"{r.get('stage2_seconds', 0):.0f} | {r.get('synthetic_rows', 0)} |")
    return "\n".join(lines) + "\n"


def run_ablation(out_dir: Path, train_limit: int | None = 8000, steps: int = 300, eval_limit: int | None = None,
                 rows: list[str] | None = None, threads: int | None = 2, work_dir: Path = Path("runs/ablation"),
                 progress: bool = True, extra: dict | None = None, tag: str = "trainer_ablation",
                 table: dict[str, tuple[dict | str, str | None]] | None = None,
                 title: str = "Imbalance ablation") -> dict:
    """Train/evaluate each row; write ``<tag>.md/.json/.png`` into ``out_dir``; returns results + markdown.

    ``table`` replaces ``ROWS`` (same shape: row -> (stage-1 overrides or the row it reuses, stage-2 method)), e.g.
    the student ablation of ``bench/student_ablation.py``."""
    table = table or ROWS
    import torch

    from .settings import TrainerSettings
    from .stage2 import stage2_from_artifact
    from .trainer import train

    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = rows or list(table)
    unknown = [r for r in wanted if r not in table]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; known: {list(table)}")
    common = {"train_limit": train_limit or None, "max_steps": steps, "eval_limit": eval_limit, "threads": threads,
              "resume": False, "seed": 42} | (extra or {})
    results: dict[str, dict] = {}
    artifacts: dict[str, Path] = {}

    def stage1_artifact(row: str) -> Path:
        """Train a stage-1 row once; a stage-2 row reuses its encoder whatever order the rows come in."""
        if row not in artifacts:
            settings = TrainerSettings(**common, **table[row][0], output=str(work_dir / row.strip("+")))
            artifacts[row] = train(settings, progress=progress).path
        return artifacts[row]

    started = time.time()
    for name in wanted:
        stage1, method = table[name]
        row_started = time.time()
        source = stage1_artifact(stage1 if isinstance(stage1, str) else name)
        first = json.loads((source / "config.json").read_text())
        loss_settings = {k: first[k] for k in ("loss", "label_weights")}
        record = {"seconds_per_epoch": first["seconds_per_epoch"], "stage1_steps": first["steps"],
                  "train_rows": first["rows_used"]["train"]}
        metrics = json.loads((source / "metrics.json").read_text())
        if method is not None:
            s2 = TrainerSettings(**common, **loss_settings, ismote=(method == "ismote"),
                                 output=str(work_dir / (name.strip("+") + "_stage2")))
            out = stage2_from_artifact(source, s2, progress=progress, method=method)
            metrics = out.metrics
            record.update({"stage2_seconds": out.config["stage2"]["seconds"],
                           "synthetic_rows": out.config["stage2"]["synthetic_rows"],
                           "stage2_best_epoch": out.config["stage2"]["best_epoch"]})
        record.update({"test_macro_f1_tuned": metrics["test"]["macro_f1_tuned"],
                       "test_macro_f1_at_0.5": metrics["test"]["macro_f1_at_0.5"],
                       "test_micro_f1_tuned": metrics["test"]["micro_f1_tuned"],
                       "dev_macro_f1_tuned": metrics["dev"]["macro_f1_tuned"],
                       "test_per_label_f1": {k: round(v["f1"], 4) for k, v in metrics["test"]["per_label"].items()},
                       "row_seconds": round(time.time() - row_started, 1)})
        results[name] = record
        # partial results after every row, so a run cut short still leaves its finished rows
        (out_dir / f"{tag}.partial.json").write_text(json.dumps(results, indent=2))
    (out_dir / f"{tag}.partial.json").unlink(missing_ok=True)
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} torch threads)"
    # what the rows actually ran with (``extra`` or EM_TRAIN_* may set the seed or the batch size)
    ran_with = TrainerSettings(**common)
    seed, batch_size = ran_with.seed, ran_with.batch_size
    budget = {"train_limit": train_limit, "steps": steps, "batch_size": batch_size, "eval_limit": eval_limit,
              "seed": seed, "device": device,
              "description": f"seed {seed}, {train_limit or 'all'} training rows, {steps} stage-1 steps of batch "
                             f"{batch_size}, "
                             f"dev/test {'first ' + str(eval_limit) + ' rows' if eval_limit else 'full'}, on {device}"}
    markdown = _markdown(results, budget)
    payload = {"budget": budget, "rows": results, "total_seconds": round(time.time() - started, 1)}
    (out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=2))
    (out_dir / f"{tag}.md").write_text(f"# {title}\n\n{markdown}")
    _plot(results, out_dir / f"{tag}.png", f"{title} — {budget['description']}")
    return payload | {"markdown": markdown}
