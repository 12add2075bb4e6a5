"""Stage 2: decoupled classifier re-training on real + synthetic (ISMOTE or SMOTE) sentence embeddings.

Text cannot be interpolated, so oversampling happens in the tuned encoder's representation space: embed the
training split with the stage-1 encoder (frozen), oversample minority labels, and retrain only the linear head
(initialised from stage 1). The epoch kept is the one with the best dev macro-F1 after per-label threshold tuning
on dev (test is never looked at). Label weights for the stage-2 loss are recomputed on the resampled counts.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .artifact import ArtifactClassifier, load_classifier, write_head_and_records
from .calibration import write_calibration
from .data import DatasetSplits, prepare_data
from .evaluate import evaluate_classifier
from .ismote import ISMOTE, minority_targets
from .losses import loss_for_labels
from .metrics import macro_f1, tune_thresholds
from .result import TrainResult
from .settings import TrainerSettings

__all__ = ["resample", "smote_resample", "fit_head", "retrain_head", "stage2_from_artifact", "embed_splits",
           "recorded_settings"]

log = logging.getLogger("trainer.stage2")


def smote_resample(X: np.ndarray, Y: np.ndarray, target: float = 0.5, k_neighbors: int = 5,
                   random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """imbalanced-learn's SMOTE, one-vs-rest per minority label (same targets as ISMOTE); a synthetic row is
    labelled with its minority label only (SMOTE does not expose the anchor, so no other labels can be copied)."""
    from imblearn.over_sampling import SMOTE

    plan = minority_targets(Y, target)
    new_x, new_y = [], []
    for j in sorted(plan):
        y = Y[:, j].astype(int)
        if y.sum() < 2:
            continue
        smote = SMOTE(sampling_strategy={1: int(plan[j])}, k_neighbors=min(k_neighbors, int(y.sum()) - 1),
                      random_state=random_state + j)
        xr, _ = smote.fit_resample(X, y)
        synth = xr[len(X):]
        labels = np.zeros((len(synth), Y.shape[1]), dtype=Y.dtype)
        labels[:, j] = 1
        new_x.append(synth.astype(np.float32))
        new_y.append(labels)
    if not new_x:
        return X, Y
    return np.concatenate([X, *new_x]), np.concatenate([Y, *new_y])


def resample(method: str, X: np.ndarray, Y: np.ndarray, settings: TrainerSettings) -> tuple[np.ndarray, np.ndarray]:
    if method == "none":
        return X, Y
    if method == "smote":
        return smote_resample(X, Y, settings.ismote_target, settings.ismote_k, settings.seed)
    if method == "ismote":
        sampler = ISMOTE(settings.ismote_k, settings.ismote_radius, settings.ismote_target,
                         settings.ismote_label_mode, settings.seed)
        return sampler.fit_resample(X, Y)
    raise ValueError(f"unknown resampling method {method!r}")


def fit_head(X: np.ndarray, Y: np.ndarray, X_dev: np.ndarray, Y_dev: np.ndarray, init: torch.nn.Linear,
             settings: TrainerSettings, batch_size: int = 512, progress: bool = False) -> tuple[dict, dict]:
    """Train a linear head on fixed embeddings; returns (best state_dict, record with dev F1 per epoch)."""
    torch.manual_seed(settings.seed)
    head = torch.nn.Linear(init.in_features, init.out_features)
    head.load_state_dict({k: v.detach().float().cpu() for k, v in init.state_dict().items()})
    loss_fn, _ = loss_for_labels(settings, Y)  # weights from the resampled counts
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.stage2_lr, weight_decay=settings.weight_decay)
    xt, yt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), torch.from_numpy(Y.astype(np.float32))
    xd = torch.from_numpy(np.ascontiguousarray(X_dev, dtype=np.float32))
    generator = torch.Generator().manual_seed(settings.seed)
    dropout = torch.nn.Dropout(settings.head_dropout)

    def dev_score() -> float:
        with torch.no_grad():
            proba = torch.sigmoid(head(xd)).numpy()
        thresholds = tune_thresholds(Y_dev, proba)
        return macro_f1(Y_dev, (proba >= thresholds).astype(int))

    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    history = [{"epoch": 0, "dev_macro_f1": dev_score()}]
    best, best_epoch = history[0]["dev_macro_f1"], 0
    from tqdm.auto import tqdm

    for epoch in tqdm(range(1, settings.stage2_epochs + 1), desc="stage 2 (head)", disable=not progress):
        head.train()
        for index in torch.randperm(len(xt), generator=generator).split(batch_size):
            loss = loss_fn(head(dropout(xt[index])), yt[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        score = dev_score()
        history.append({"epoch": epoch, "dev_macro_f1": score, "loss": loss.item()})
        if score > best:  # ties keep the earlier epoch
            best, best_epoch, best_state = score, epoch, {k: v.clone() for k, v in head.state_dict().items()}
    return best_state, {"best_epoch": best_epoch, "best_dev_macro_f1": best, "history": history}


def embed_splits(classifier: ArtifactClassifier, data: DatasetSplits, cache_dir: Path | None = None,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """Pooled embeddings of train/dev/test (cached as .npy per artifact version when ``cache_dir`` is given)."""
    out = {}
    for name in ("train", "dev", "test"):
        split = getattr(data, name)
        path = cache_dir / f"{name}_{len(split)}.npy" if cache_dir else None
        if path is not None and path.exists():
            out[name] = np.load(path)
            continue
        out[name] = classifier.embed(split.texts, progress=progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, out[name])
    return out


def retrain_head(classifier: ArtifactClassifier, data: DatasetSplits, settings: TrainerSettings,
                 progress: bool = True, embeddings: dict[str, np.ndarray] | None = None,
                 method: str = "ismote") -> dict:
    """Stage 2 in place on ``classifier.model.head``; returns the record stored in the artifact's config."""
    started = time.time()
    emb = embeddings or embed_splits(classifier, data, progress=progress)
    X, Y = resample(method, emb["train"], data.train.labels, settings)
    state, record = fit_head(X, Y, emb["dev"], data.dev.labels, classifier.model.head, settings, progress=progress)
    device = next(classifier.model.head.parameters()).device
    classifier.model.head.load_state_dict({k: v.to(device) for k, v in state.items()})
    record.update({"method": method, "real_rows": int(len(emb["train"])), "synthetic_rows": int(len(X) - len(emb["train"])),
                   "k": settings.ismote_k, "radius": settings.ismote_radius, "target": settings.ismote_target,
                   "label_mode": settings.ismote_label_mode, "epochs": settings.stage2_epochs, "lr": settings.stage2_lr,
                   "seconds": round(time.time() - started, 1)})
    record["history"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in record["history"]]
    log.info("stage 2 (%s): +%d synthetic rows, best dev macro-F1 %.4f at epoch %d", method,
             record["synthetic_rows"], record["best_dev_macro_f1"], record["best_epoch"])
    return record


def recorded_settings(classifier: ArtifactClassifier, local_data: str | None = None) -> TrainerSettings:
    """The ``TrainerSettings`` an artifact was trained with (its ``config.json``); ``local_data`` replaces a recorded
    data path that does not exist on this machine (an artifact trained elsewhere)."""
    recorded = TrainerSettings(**{k: v for k, v in classifier.config.items() if k in TrainerSettings.model_fields})
    if local_data is not None and not Path(recorded.data).exists():
        recorded.data = local_data
    return recorded


def stage2_from_artifact(source: str | Path, settings: TrainerSettings, progress: bool = True,
                         command: str | None = None, method: str = "ismote",
                         cache_root: Path = Path("runs/embeddings")) -> TrainResult:
    """Copy a stage-1 artifact to ``settings.output`` and retrain its head there (adapter unchanged)."""
    source, output = Path(source), Path(settings.output)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    classifier = load_classifier(source)
    # Rebuild exactly the stage-1 data (taxonomy, limits, undersampling) from the artifact's recorded settings.
    recorded = recorded_settings(classifier, settings.data)
    data, _ = prepare_data(recorded)
    if data.labels != classifier.labels:
        raise ValueError(f"{source}: labels {classifier.labels} differ from the dataset's {recorded.taxonomy!r} "
                         f"labels {data.labels}")
    embeddings = embed_splits(classifier, data, cache_root / classifier.version, progress=progress)
    record = retrain_head(classifier, data, settings, progress=progress, embeddings=embeddings, method=method)
    head = classifier.model.head
    with torch.no_grad():  # the encoder is frozen: probabilities follow from the cached embeddings
        proba = {name: torch.sigmoid(head(torch.from_numpy(embeddings[name]).to(next(head.parameters()).device)))
                 .float().cpu().numpy() for name in ("dev", "test")}
    metrics = evaluate_classifier(classifier, data, progress=progress, dev_proba=proba["dev"], test_proba=proba["test"])
    metrics["stage1_test"] = {k: classifier.metrics.get("test", {}).get(k) for k in
                              ("macro_f1_tuned", "macro_f1_at_0.5", "micro_f1_tuned")}
    metrics["loss_history"] = classifier.metrics.get("loss_history", [])
    if output.resolve() != source.resolve():
        if output.exists():
            shutil.rmtree(output)
        shutil.copytree(source, output)
    config = dict(classifier.config)
    stage2_settings = {k: getattr(settings, k) for k in ("ismote", "ismote_k", "ismote_target", "ismote_radius",
                                                         "ismote_label_mode", "stage2_epochs", "stage2_lr", "loss",
                                                         "label_weights", "focal_gamma")}
    config.update({"ismote": method == "ismote", "stage2": record, "stage2_settings": stage2_settings,
                   "stage2_from": str(source), "name": settings.name})
    config["command"] = (config.get("command", "") + " && " + (command or "")).strip(" &")
    thresholds = [metrics["thresholds"][name] for name in classifier.labels]
    write_head_and_records(output, classifier.model.head, classifier.labels, thresholds, config, metrics)
    # the copied calibration.json belonged to the old head: refit it on the new head's dev outputs
    write_calibration(output, classifier.labels, proba["dev"], data.dev.labels, thresholds,
                      f"{Path(data.source).name} dev", classifier.precision)
    return TrainResult(path=output, metrics=metrics, config=config)
