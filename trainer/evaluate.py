"""``emotion-monitor evaluate``: score an artifact on dev/test and write report.md, report.json, per_label_f1.png.

By default the test metrics are at the artifact's stored per-label thresholds (``thresholds.json``) — the ones
``classify`` and the monitor's worker apply — so the report describes what the deployed model does. With
``retune_thresholds`` (``--retune-thresholds``) they are re-tuned per label on the evaluated dev rows instead (the
procedure training used) and applied to test; useful to see what re-tuning would buy, e.g. on another dataset. The
report and ``report.json`` (``thresholds_source``: ``artifact`` | ``dev``) say which were used; test scores at a flat
0.5 are reported next to them. Ekman and sentiment groupings score the thresholded 28-label predictions
projected onto the groups (a group is predicted when any member is).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .artifact import ArtifactClassifier
from .data import DatasetSplits
from .metrics import evaluate_predictions, grouped, tune_thresholds

__all__ = ["THRESHOLD_SOURCES", "evaluate_artifact", "evaluate_classifier", "evaluate_labelled_file", "plot_per_label_f1", "report_markdown"]

# report.json's ``thresholds_source`` -> how the report names the thresholds
THRESHOLD_SOURCES = {"artifact": "artifact thresholds", "dev": "thresholds re-tuned on dev"}


def evaluate_classifier(classifier: ArtifactClassifier, data: DatasetSplits, thresholds: np.ndarray | None = None,
                        progress: bool = True, dev_proba: np.ndarray | None = None,
                        test_proba: np.ndarray | None = None) -> dict:
    """Dev (tunes thresholds unless given) and test metrics, incl. Ekman/sentiment groupings when defined.
    Probabilities already computed (e.g. from cached embeddings) can be passed in."""
    if dev_proba is None:
        dev_proba = classifier.predict_proba(data.dev.texts, progress=progress)
    if thresholds is None:
        thresholds = tune_thresholds(data.dev.labels, dev_proba)
    if test_proba is None:
        test_proba = classifier.predict_proba(data.test.texts, progress=progress)
    metrics = {"dev": evaluate_predictions(data.dev.labels, dev_proba, data.labels, thresholds),
               "test": evaluate_predictions(data.test.labels, test_proba, data.labels, thresholds)}
    predicted = (test_proba >= thresholds[None, :]).astype(int)
    for name, mapping in data.groupings.items():
        metrics[f"test_{name}"] = grouped(data.test.labels, predicted, data.labels, mapping)
    metrics["thresholds"] = {n: float(t) for n, t in zip(data.labels, thresholds)}
    return metrics


def _thresholds_name(metrics: dict) -> str:
    return THRESHOLD_SOURCES[metrics.get("thresholds_source", "dev")]


def plot_per_label_f1(metrics: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_label = metrics["test"]["per_label"]
    names = sorted(per_label, key=lambda n: per_label[n]["f1"], reverse=True)
    tuned = [per_label[n]["f1"] for n in names]
    flat = [per_label[n]["f1_at_0.5"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.45), 4.8))
    ax.bar(x - 0.2, tuned, 0.4, label=f"{_thresholds_name(metrics)} (macro {metrics['test']['macro_f1_tuned']:.3f})")
    ax.bar(x + 0.2, flat, 0.4, label=f"threshold 0.5 (macro {metrics['test']['macro_f1_at_0.5']:.3f})", alpha=0.7)
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylabel("test F1")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_markdown(metrics: dict, title: str) -> str:
    test, dev = metrics["test"], metrics["dev"]
    used = _thresholds_name(metrics)
    source = ("the artifact's stored per-label thresholds (thresholds.json, what `classify` and the worker apply)"
              if metrics.get("thresholds_source") == "artifact"
              else "per-label thresholds re-tuned on these dev rows (not the artifact's stored ones)")
    lines = [f"# {title}", "", f"Thresholds: {source}.", "",
             f"| split | macro-F1 ({used}) | macro-F1 @0.5 | micro-F1 ({used}) | micro-F1 @0.5 | rows |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in (("dev", dev), ("test", test)):
        lines.append(f"| {name} | {m['macro_f1_tuned']:.4f} | {m['macro_f1_at_0.5']:.4f} | {m['micro_f1_tuned']:.4f} | "
                     f"{m['micro_f1_at_0.5']:.4f} | {m['n']} |")
    lines += ["", f"## Per label (test, {used})", "",
              "| label | precision | recall | F1 | F1 @0.5 | support | threshold |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in test["per_label"].items():
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['f1_at_0.5']:.3f} | "
                     f"{m['support']} | {m['threshold']:.2f} |")
    for key in sorted(k for k in metrics if k.startswith("test_")):
        g = metrics[key]
        lines += ["", f"## Grouping: {key[5:]} (test)", "",
                  f"macro-F1 {g['macro_f1']:.4f}, micro-F1 {g['micro_f1']:.4f}", "",
                  "| group | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, m in g["per_group"].items():
            lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    return "\n".join(lines) + "\n"


#: texts per model call of the CPU worker in int8 (``monitor.inference.inference_batch``'s default): int8 activation
#: scales are per call, so ``evaluate --int8`` scores in calls of this size unless told otherwise
WORKER_INT8_CALL = 32


def evaluate_artifact(model_path: str | Path | None = None, data: str | None = None, taxonomy: str | None = None,
                      out_dir: str | Path = "runs/eval", eval_limit: int | None = None,
                      batch_size: int | None = None, progress: bool = True, retune_thresholds: bool = False,
                      int8: bool = False) -> dict:
    """Evaluate an artifact (default: the shipped one) at its stored thresholds, or at thresholds re-tuned on dev
    with ``retune_thresholds``; returns the metrics plus a ``summary``. ``int8``: as the CPU worker serves it (int8
    backbone, its ``thresholds_int8.json`` when it has one, calls of ``WORKER_INT8_CALL`` texts)."""
    from .artifact import load_classifier
    from .data import HF_DATASET_ID, load_dataset_splits
    from .settings import default_data_dir

    classifier = load_classifier(model_path, device="cpu" if int8 else None, int8=int8)
    if batch_size or int8:
        classifier.batch_size = batch_size or WORKER_INT8_CALL
    source = data or classifier.config.get("data") or default_data_dir()
    if not data and not Path(source).exists() and source != HF_DATASET_ID:
        source = default_data_dir()  # the artifact was trained elsewhere; use this machine's copy (never for --data)
    dataset = load_dataset_splits(source, taxonomy or classifier.config.get("taxonomy", "goemotions"))
    if dataset.labels != classifier.labels:
        raise ValueError(f"model labels {classifier.labels} differ from the dataset's {dataset.labels}")
    dataset.limit_eval(eval_limit)
    stored = {name: float(t) for name, t in zip(classifier.labels, classifier.thresholds)}
    metrics = evaluate_classifier(classifier, dataset, thresholds=None if retune_thresholds else classifier.thresholds,
                                  progress=progress)
    metrics["thresholds_source"] = "dev" if retune_thresholds else "artifact"
    metrics["artifact_thresholds"] = stored
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    version = classifier.version + ("+int8" if classifier.precision == "int8" else "")  # as the worker names it
    title = f"Evaluation of {version}"
    metrics["summary"] = {
        "model": version,
        "precision": classifier.precision,
        "thresholds_file": classifier.thresholds_source,
        "call_size": classifier.batch_size,
        "thresholds": _thresholds_name(metrics),
        "test_macro_f1_tuned": round(metrics["test"]["macro_f1_tuned"], 4),
        "test_macro_f1_at_0.5": round(metrics["test"]["macro_f1_at_0.5"], 4),
        "test_micro_f1_tuned": round(metrics["test"]["micro_f1_tuned"], 4),
        "test_micro_f1_at_0.5": round(metrics["test"]["micro_f1_at_0.5"], 4),
        "dev_macro_f1_tuned": round(metrics["dev"]["macro_f1_tuned"], 4),
        # how many labels' thresholds differ from the stored ones (0 unless re-tuned)
        "thresholds_changed": sum(abs(metrics["thresholds"][name] - stored[name]) > 1e-4 for name in stored),
        "report": str(out / "report.md"),
        "plot": str(out / "per_label_f1.png"),
    }
    (out / "report.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out / "report.md").write_text(report_markdown(metrics, title))
    plot_per_label_f1(metrics, out / "per_label_f1.png", title)
    return metrics


def evaluate_labelled_file(model_path: str | Path | None, labelled: str | Path, label_map: str | Path | None = None,
                           batch_size: int | None = None, int8: bool = False) -> dict:
    """Score an artifact at its stored thresholds on a labelled JSONL file (``text`` + ``labels``), in the model's
    label names or, with ``label_map`` (a TOML file or a bundled name such as ``plutchik8``), another taxonomy's:
    only the labels the file can speak for (the map's targets, else the labels it uses) are scored."""
    from .artifact import load_classifier
    from .calibrate import read_labelled
    from .label_map import load_label_map
    from .metrics import evaluate_predictions, macro_f1

    classifier = load_classifier(model_path, int8=int8)
    lmap = load_label_map(label_map, classifier.labels) if label_map else None
    texts, y, annotated = read_labelled(labelled, classifier.labels, lmap)
    columns = [classifier.labels.index(name) for name in annotated]
    proba = classifier.predict_proba(texts, batch_size=batch_size)[:, columns]
    thresholds = classifier.thresholds[columns]
    metrics = evaluate_predictions(y[:, columns], proba, annotated, thresholds)
    flagged = proba >= thresholds[None, :]
    metrics["share"] = {name: {"flagged": round(float(flagged[:, k].mean()), 4),
                               "mean_probability": round(float(proba[:, k].mean()), 4),
                               "true": round(float(y[:, columns[k]].mean()), 4)} for k, name in enumerate(annotated)}
    metrics["summary"] = {"model": classifier.version, "rows": len(texts), "labels": annotated,
                          "label_map": lmap.name if lmap else None,
                          "macro_f1": round(macro_f1(y[:, columns], flagged), 4)}
    return metrics
