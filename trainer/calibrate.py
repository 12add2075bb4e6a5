"""``emotion-monitor calibrate``: derive an artifact adapted to a target stream from unlabelled and/or labelled posts.

The derived folder is a full copy of the base artifact (adapter, head, tokenizer) with a new ``thresholds.json``
(raw sigmoid scale; a precision's own ``thresholds_<precision>.json`` is dropped, as it was tuned for dev's priors),
``calibration.json`` (same Platt maps; ``label_priors`` = the stream's priors; new rates) and
an ``adaptation`` record in ``config.json`` and the model card, so ``load_classifier``, ``classify``, ``evaluate`` and
the worker load it like any other artifact.

- ``unlabelled`` (texts of the stream): the stream's label priors are estimated two ways (:mod:`trainer.adaptation`):
  adjusted classify-and-count (ACC = binary BBSE) on the thresholded outputs and EM/SLD on the calibrated posteriors.
  ``prior_method`` picks which one the artifact uses (default ``acc``: see ``PRIOR_METHODS``); both are recorded. A
  label's prior moves only where the estimate differs from dev's by more than ``RISE_Z`` standard errors, and the
  posteriors are shifted to the priors by Bayes' rule. A threshold moves only down, for a significant rise, to the
  one maximising the *expected* F1 at the new prior on the dev ROC curve stored in ``calibration.json`` (label-shift
  assumption: what a post of a given emotion looks like stays, how often it occurs changes; a falling estimate is
  as consistent with a domain whose posts of that emotion score lower, so it never raises a threshold).
- ``labelled`` (JSONL ``text`` + ``labels``; names of the model or, with ``label_map``, of another taxonomy): for the
  annotated labels (``annotated_labels``, or the map's targets, or every label the file uses), the prior becomes the
  labelled prevalence shrunk towards the unlabelled estimate (or the dev prior) with ``PRIOR_PSEUDO`` pseudo-posts,
  and the threshold maximises F1 on the labelled counts plus ``kappa`` pseudo-posts drawn from the base's dev ROC at
  that prior (the base is the prior); ``kappa`` is chosen by 5-fold cross-validation on the labelled posts, so that
  100-300 posts move thresholds only as far as they are evidence for. Every other label keeps its (unlabelled-adapted
  or base) threshold and prior.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .adaptation import acc_priors, em_priors
from .calibration import CALIBRATION_FILE, Calibration, fit_calibration, load_calibration
from .data import DataError

__all__ = ["DEFAULT_KAPPA", "KAPPA_GRID", "PRIOR_METHODS", "RISE_Z", "choose_kappa", "PRIOR_PSEUDO",
           "calibrate_artifact", "expected_f1_thresholds",
           "fit_dev_calibration", "read_labelled", "read_unlabelled", "estimate_priors"]

#: em: EM/SLD on calibrated posteriors (uses every post's full probability, no threshold); acc: adjusted
#: classify-and-count with the dev tpr/fpr at the stored thresholds. The default (acc) was chosen in
#: bench/calibration.py on GoEmotions test subsamples with known shifted priors (not on the XED held-out part): about
#: equal share error on anger-rich, lower on joy-rich, and it does not depend on calibration.
PRIOR_METHODS = ("em", "acc")
#: candidate weights (pseudo-posts from the base's dev ROC added to the labelled counts when re-tuning a threshold);
#: cross-validation on the labelled posts picks one (``choose_kappa``) unless ``--kappa`` fixes it
KAPPA_GRID = (5.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
DEFAULT_KAPPA = None
#: a prior estimate must exceed the dev prior by this many standard errors before it lowers a threshold
RISE_Z = 2.0
#: pseudo-posts at the unlabelled/dev prior added to the labelled prevalence
PRIOR_PSEUDO = 20.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_unlabelled(path: str | Path) -> list[str]:
    """Texts from JSONL (``text`` field) or plain lines; empty lines are skipped, a broken JSON line fails naming
    the file and line."""
    from .classify import parse_line

    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record, reason = parse_line(line)
            if reason:
                raise DataError(path, line_no, reason)
            texts.append(record["text"])
    if not texts:
        raise DataError(path, None, "no texts")
    return texts


def read_labelled(path: str | Path, model_labels: list[str], label_map=None) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, 0/1 matrix over model_labels, labels used in the file) from JSONL ``{"text", "labels"}``; ``labels``
    is a list of names or a comma-separated string (empty: no emotion). Names are the model's, or the map's source
    labels; an unknown name fails naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    texts, rows, where = [], [], []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, line_no, f"invalid JSON: {exc.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                raise DataError(path, line_no, "each line needs a non-empty string 'text'")
            labels = record.get("labels")
            if isinstance(labels, str):
                labels = [x.strip() for x in labels.split(",") if x.strip()]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise DataError(path, line_no, "'labels' must be a list of label names (or a comma-separated string)")
            texts.append(record["text"])
            rows.append(labels)
            where.append((str(path), line_no))
    if not texts:
        raise DataError(path, None, "no labelled lines")
    if label_map is not None:
        y = label_map.to_matrix(rows, model_labels, where)
        return texts, y, list(label_map.targets)
    index = {name: j for j, name in enumerate(model_labels)}
    y = np.zeros((len(rows), len(model_labels)), dtype=np.uint8)
    used: set[str] = set()
    for i, names in enumerate(rows):
        for name in names:
            if name not in index:
                raise DataError(where[i][0], where[i][1], f"unknown label {name!r} (not one of the model's labels; "
                                                          f"pass --label-map for another taxonomy)")
            y[i, index[name]] = 1
            used.add(name)
    return texts, y, [name for name in model_labels if name in used]


def estimate_priors(calibration: Calibration, raw: np.ndarray, raw_thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """The stream's label priors from raw model outputs, by EM on the calibrated posteriors and by ACC."""
    calibrated = calibration.platt(raw)
    em, _ = em_priors(calibrated, calibration.source_priors)
    acc = acc_priors(raw, raw_thresholds, calibration.tpr, calibration.fpr)
    return {"em": em, "acc": acc}


def expected_f1_thresholds(calibration: Calibration, priors: np.ndarray, fallback: np.ndarray,
                           counts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                           kappa: float = 100.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label, the ROC-grid raw threshold maximising F1 of ``kappa`` pseudo-posts from the dev ROC at ``priors``
    (expected counts) plus the labelled ``counts`` (tp, fp, positives per label and grid point; None: expected
    counts alone). Ties go to the threshold nearest ``fallback``; returns (thresholds, tpr, fpr) with the rates
    of the pooled counts."""
    grid = calibration.roc_grid
    pi = np.clip(np.asarray(priors, dtype=np.float64), 1e-6, 1 - 1e-6)[:, None]
    tp = kappa * pi * calibration.roc_tpr
    fp = kappa * (1 - pi) * calibration.roc_fpr
    pos = np.broadcast_to(kappa * pi, tp.shape).copy()
    neg = np.broadcast_to(kappa * (1 - pi), tp.shape).copy()
    if counts is not None:
        c_tp, c_fp, c_pos, c_neg = counts
        tp, fp, pos, neg = tp + c_tp, fp + c_fp, pos + c_pos[:, None], neg + c_neg[:, None]
    f1 = 2 * tp / np.maximum(tp + fp + pos, 1e-12)
    pos_safe, neg_safe = np.maximum(pos, 1e-12), np.maximum(neg, 1e-12)
    thresholds = np.empty(len(pi))
    tpr = np.empty(len(pi))
    fpr = np.empty(len(pi))
    for j in range(len(pi)):
        best = np.flatnonzero(f1[j] >= f1[j].max() - 1e-12)
        k = best[np.argmin(np.abs(grid[best] - fallback[j]))]
        thresholds[j], tpr[j], fpr[j] = grid[k], tp[j, k] / pos_safe[j, k], fp[j, k] / neg_safe[j, k]
    return thresholds, tpr, fpr


def _labelled_counts(calibration: Calibration, raw: np.ndarray, y: np.ndarray):
    grid = calibration.roc_grid
    y = y.astype(bool)
    flagged = raw[:, :, None] >= grid[None, None, :]
    tp = (flagged & y[:, :, None]).sum(axis=0).astype(np.float64)
    fp = (flagged & ~y[:, :, None]).sum(axis=0).astype(np.float64)
    return tp, fp, y.sum(axis=0).astype(np.float64), (~y).sum(axis=0).astype(np.float64)


def _f1_of_folds(calibration: Calibration, raw: np.ndarray, y: np.ndarray, priors: np.ndarray,
                 fallback: np.ndarray, kappa: float, folds: int, seed: int) -> float:
    """Mean over labels of the F1 on held-out folds (counts pooled over folds) of thresholds tuned on the other
    folds plus ``kappa`` base pseudo-posts."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    tp = fp = fn = 0.0
    for k in range(folds):
        train, held = fold != k, fold == k
        counts = _labelled_counts(calibration, raw[train], y[train])
        thresholds, _, _ = expected_f1_thresholds(calibration, priors, fallback, counts, kappa)
        flagged = raw[held] >= thresholds[None, :]
        truth = y[held].astype(bool)
        tp = tp + (flagged & truth).sum(axis=0)
        fp = fp + (flagged & ~truth).sum(axis=0)
        fn = fn + (~flagged & truth).sum(axis=0)
    return float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))


def choose_kappa(calibration: Calibration, raw: np.ndarray, y: np.ndarray, priors: np.ndarray,
                 fallback: np.ndarray, grid=KAPPA_GRID, folds: int = 5, seed: int = 0) -> tuple[float, dict]:
    """The base's weight for re-tuning on labelled posts, by k-fold cross-validation on those posts alone: how far
    the target domain's score distributions differ from dev decides how much the base can help. Ties go to the
    larger weight (the safer, smoother choice)."""
    scores = {float(k): _f1_of_folds(calibration, raw, y, priors, fallback, k, folds, seed) for k in grid}
    best = max(scores.values())
    kappa = max(k for k, v in scores.items() if v >= best - 1e-9)
    return kappa, {str(k): round(v, 4) for k, v in scores.items()}


def adapt(calibration: Calibration, base_raw_thresholds: np.ndarray, raw_unlabelled: np.ndarray | None = None,
          labelled: tuple[np.ndarray, np.ndarray, list[str]] | None = None, labels: list[str] | None = None,
          prior_method: str = "acc", kappa: float | None = None) -> tuple[Calibration, np.ndarray, dict]:
    """The numeric core of ``calibrate`` on raw model outputs: (adapted calibration, new raw thresholds, record).

    ``kappa`` None: chosen by cross-validation on the labelled posts (:func:`choose_kappa`)."""
    if prior_method not in PRIOR_METHODS:
        raise ValueError(f"prior_method must be one of {PRIOR_METHODS}, got {prior_method!r}")
    labels = labels or calibration.labels
    base = np.asarray(base_raw_thresholds, dtype=np.float64)
    priors = calibration.source_priors.copy()
    thresholds = base.copy()
    tpr, fpr = calibration.tpr.copy(), calibration.fpr.copy()
    record: dict = {"date": _now(), "prior_method": prior_method}
    if raw_unlabelled is not None:
        n = len(raw_unlabelled)
        estimates = estimate_priors(calibration, raw_unlabelled, base)
        # below half a post in the sample a prior is not resolved (and 0 would silence the label for good)
        priors = np.clip(estimates[prior_method], 0.5 / n, 1 - 0.5 / n)
        # Only a significant *rise* moves a threshold (down): more high-scoring posts than dev's rates explain
        # can only mean more of the emotion, while a fall is as consistent with a domain whose posts of that emotion
        # score lower (concept shift; the estimate is then biased low), where raising the threshold would lose the
        # few it still finds. Standard error of ACC under "no shift": the binomial error of the flagged rate expected
        # at the dev prior, over (tpr - fpr).
        expected_rate = calibration.tpr * calibration.source_priors + calibration.fpr * (1 - calibration.source_priors)
        se = np.sqrt(expected_rate * (1 - expected_rate) / n) / np.maximum(calibration.tpr - calibration.fpr, 0.05)
        # a prior moves only where the estimate differs from dev's by more than RISE_Z standard errors: with 28
        # labels and a few hundred posts, moving every label to its noisy estimate adds more share error than the
        # real shifts remove (bench/calibration.py, shifted GoEmotions subsamples)
        shift = priors - calibration.source_priors
        priors = np.where(np.abs(shift) > RISE_Z * se, priors, calibration.source_priors)
        rose = shift > RISE_Z * se
        t_f1, tpr_f1, fpr_f1 = expected_f1_thresholds(calibration, priors, base, kappa=1.0)
        lower = rose & (t_f1 < base)
        thresholds = np.where(lower, t_f1, base)
        tpr, fpr = np.where(lower, tpr_f1, tpr), np.where(lower, fpr_f1, fpr)
        record["unlabelled"] = {"rows": int(n),
                                "estimated_priors": {m: {name: round(float(v), 4) for name, v in zip(labels, est)}
                                                     for m, est in estimates.items()},
                                "priors_moved": [labels[j] for j in np.flatnonzero(np.abs(shift) > RISE_Z * se)],
                                "thresholds_lowered": [labels[j] for j in np.flatnonzero(lower)]}
    if labelled is not None:
        raw_l, y_l, annotated = labelled
        idx = np.array([labels.index(name) for name in annotated], dtype=int)
        n = len(y_l)
        prior_l = (y_l.sum(axis=0) + PRIOR_PSEUDO * priors) / (n + PRIOR_PSEUDO)
        cv = None
        if kappa is None:
            kappa, cv = choose_kappa(_subset(calibration, idx), raw_l[:, idx], y_l[:, idx], prior_l[idx],
                                     thresholds[idx])
        counts = _labelled_counts(calibration, raw_l, y_l)
        t_l, tpr_l, fpr_l = expected_f1_thresholds(calibration, prior_l, thresholds, counts, kappa)
        priors[idx] = np.clip(prior_l[idx], 1e-4, 1 - 1e-4)
        thresholds[idx], tpr[idx], fpr[idx] = t_l[idx], tpr_l[idx], fpr_l[idx]
        record["labelled"] = {"rows": int(n), "annotated_labels": list(annotated), "kappa": kappa,
                              "kappa_cv_f1": cv,
                              "positives": {labels[j]: int(y_l[:, j].sum()) for j in idx},
                              "priors": {labels[j]: round(float(priors[j]), 4) for j in idx}}
    record["label_priors"] = {n: round(float(v), 4) for n, v in zip(labels, priors)}
    from dataclasses import replace

    adapted = replace(calibration, label_priors=priors, tpr=tpr, fpr=fpr, adaptation=record)
    return adapted, thresholds, record


def _subset(calibration: Calibration, idx: np.ndarray) -> Calibration:
    from dataclasses import replace

    return replace(calibration, labels=[calibration.labels[j] for j in idx], a=calibration.a[idx],
                   b=calibration.b[idx], source_priors=calibration.source_priors[idx],
                   label_priors=calibration.label_priors[idx], tpr=calibration.tpr[idx], fpr=calibration.fpr[idx],
                   roc_tpr=calibration.roc_tpr[idx], roc_fpr=calibration.roc_fpr[idx])


def dev_dataset(classifier, data: str | Path | None = None):
    """``(dataset, folder name)``: a GoEmotions-layout dataset for a loaded classifier (default: the artifact's
    training data when this machine has it, else this machine's GoEmotions folder), its labels checked."""
    from .data import load_dataset_splits
    from .settings import default_data_dir

    source = str(data or classifier.config.get("data") or default_data_dir())
    if not data and not Path(source).exists():
        source = str(default_data_dir())
    dataset = load_dataset_splits(source, classifier.config.get("taxonomy", "goemotions"))
    if dataset.labels != classifier.labels:
        raise ValueError(f"model labels {classifier.labels} differ from the dataset's {dataset.labels}")
    return dataset, Path(source).name


def fit_dev_calibration(classifier, data: str | Path | None = None, progress: bool = False) -> Calibration:
    """Fit the Platt calibration of a loaded classifier on a GoEmotions-layout dataset's dev split (default: the
    artifact's training data / this machine's GoEmotions folder)."""
    dataset, name = dev_dataset(classifier, data)
    raw = classifier.predict_proba(dataset.dev.texts, progress=progress, calibrated=False)
    return fit_calibration(classifier.labels, raw, dataset.dev.labels, classifier.raw_thresholds,
                           {"data": f"{name} dev", "precision": classifier.precision})


def calibrate_artifact(model: str | Path | None, out: str | Path, unlabelled: str | Path | None = None,
                       labelled: str | Path | None = None, annotated_labels: list[str] | None = None,
                       label_map: str | Path | None = None, prior_method: str = "acc",
                       kappa: float | None = DEFAULT_KAPPA,
                       dev_data: str | Path | None = None, int8: bool = True, progress: bool = False) -> dict:
    """Write the derived artifact to ``out`` (see the module docstring); returns the adaptation record.

    With neither ``unlabelled`` nor ``labelled``, only (re)fits the dev calibration: ``out`` equal to ``model``
    then adds ``calibration.json`` in place. ``int8``: score the posts as the CPU worker does (default)."""
    from .artifact import DEFAULT_MODEL_DIR, load_classifier
    from .label_map import load_label_map
    from .model_card import write_model_card

    base = Path(model) if model else DEFAULT_MODEL_DIR
    out = Path(out)
    # adaptation starts from thresholds.json (the fp32-tuned rule and its dev ROC in calibration.json), whatever
    # precision the posts are scored in
    classifier = load_classifier(base, int8=int8, precision_thresholds=False)
    labels = classifier.labels
    calibration = classifier.calibration
    if calibration is None or dev_data is not None:
        calibration = fit_dev_calibration(classifier, dev_data, progress)
    if calibration.adaptation:  # adapting an adapted artifact: start again from its dev calibration
        calibration = calibration.with_priors(calibration.source_priors)
    lmap = load_label_map(label_map, labels) if label_map else None
    labelled_data = None
    if labelled is not None:
        texts, y, used = read_labelled(labelled, labels, lmap)
        annotated = used
        if annotated_labels:
            unknown = [a for a in annotated_labels if a not in labels]
            if unknown:
                raise DataError(labelled, None, f"--annotated-labels: unknown label {unknown[0]!r}")
            annotated = [name for name in labels if name in annotated_labels]
        raw_l = classifier.predict_proba(texts, progress=progress, calibrated=False)
        labelled_data = (raw_l, y, annotated)
    raw_u = None
    if unlabelled is not None:
        raw_u = classifier.predict_proba(read_unlabelled(unlabelled), progress=progress, calibrated=False)
    if raw_u is None and labelled_data is None:
        adapted, thresholds, record = calibration, classifier.raw_thresholds.astype(np.float64), {}
    else:
        adapted, thresholds, record = adapt(calibration, classifier.raw_thresholds, raw_u, labelled_data, labels,
                                            prior_method, kappa)
        if unlabelled is not None:
            record["unlabelled"]["file"] = str(unlabelled)
        if labelled is not None:
            record["labelled"]["file"] = str(labelled)
            if lmap is not None:
                record["labelled"]["label_map"] = lmap.name
    if out.resolve() != base.resolve():
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out}: exists and is not empty (choose a new --out folder)")
        shutil.copytree(base, out, dirs_exist_ok=True)
    adapted.save(out)
    if record:
        # a precision's own thresholds were tuned for the dev priors; the adapted thresholds.json replaces them
        for stale in out.glob("thresholds_*.json"):
            stale.unlink()
        (out / "thresholds.json").write_text(
            json.dumps({name: round(float(t), 4) for name, t in zip(labels, thresholds)}, indent=1))
        config = json.loads((out / "config.json").read_text())
        config["adaptation"] = record | {"base": str(base), "base_version": classifier.version}
        config["name"] = f"{config.get('name', base.name)}-adapted"
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    write_model_card(out)
    return record


def calibration_path(folder: str | Path) -> Path:
    return Path(folder) / CALIBRATION_FILE


def loaded_calibration(folder: str | Path) -> Calibration | None:
    labels = json.loads((Path(folder) / "labels.json").read_text())
    return load_calibration(folder, labels)
