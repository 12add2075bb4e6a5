"""Stage-1 training (LoRA + head on real text), optional stage 2 (ISMOTE head retraining), tuning, artifact.

``train(settings)`` runs the whole recipe and returns the artifact folder. Guarantees:

* fixed seeds (python, numpy, torch) and a deterministic batch order per epoch (``seed + epoch``), so a resumed run
  sees the same batches as an uninterrupted one;
* a checkpoint (LoRA + head + optimiser + scheduler + step) every ``checkpoint_every`` steps in
  ``<output>.checkpoint/``; ``resume=True`` continues from it;
* undersampling touches the training split only; thresholds are tuned on dev only; test is only reported.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .artifact import Classifier, save_classifier
from .data import DatasetSplits, load_dataset_splits, undersample_majority
from .losses import DistillationLoss, loss_for_labels
from .metrics import evaluate_predictions, grouped, tune_thresholds
from .modeling import autocast, build_classifier, pick_device
from .settings import TrainerSettings

__all__ = ["train", "seed_everything", "prepare_data", "TrainResult"]

log = logging.getLogger("trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainResult(dict):
    """What ``train`` returns: ``path`` (artifact), ``metrics``, ``loss_history``, ``seconds_per_epoch``."""


def prepare_data(settings: TrainerSettings) -> tuple[DatasetSplits, dict]:
    """Load, project to the taxonomy, limit and undersample (train only). Returns (data, records for the config)."""
    data = load_dataset_splits(settings.data, settings.taxonomy)
    records: dict = {"data_source": data.source, "rows": {"train": len(data.train), "dev": len(data.dev),
                                                           "test": len(data.test)}}
    if settings.train_limit and settings.train_limit < len(data.train):
        order = np.random.default_rng(settings.seed).permutation(len(data.train))[: settings.train_limit]
        data.train = data.train.subset(np.sort(order))
    data.limit_eval(settings.eval_limit)
    if settings.undersample_ratio:
        data.train, info = undersample_majority(data.train, data.labels, settings.undersample_ratio,
                                                settings.majority_label, settings.seed)
        records["undersampling"] = info
    records["rows_used"] = {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)}
    return data, records


def _batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, bucketing: bool) -> list[np.ndarray]:
    """Batches for one epoch, deterministic in (seed, epoch). With bucketing, each window of 50 batches is sorted
    by text length before it is cut, so a batch pads to a similar length (about half the padded tokens on
    GoEmotions); the batch order is shuffled again so lengths do not trend through the epoch."""
    rng = np.random.default_rng(seed + epoch)
    perm = rng.permutation(len(lengths))
    if bucketing:
        window = batch_size * 50
        lengths_arr = np.asarray(lengths)
        perm = np.concatenate([chunk[np.argsort(lengths_arr[chunk], kind="stable")]
                               for chunk in np.split(perm, range(window, len(perm), window))])
    batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    if bucketing:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _collate(encoded: list[list[int]], index: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [encoded[i] for i in index]
    width = max(len(r) for r in rows)  # pad to the longest text in the batch
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r)
        mask[k, : len(r)] = 1
    return ids, mask


def _trainable_state(model) -> dict:
    return {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}


def evaluate_classifier(classifier: Classifier, data: DatasetSplits, thresholds: np.ndarray | None = None,
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


def train(settings: TrainerSettings, progress: bool = True, command: str | None = None) -> TrainResult:
    """Train, tune thresholds on dev, evaluate on test and write the artifact to ``settings.output``."""
    started = time.time()
    seed_everything(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = pick_device()
    data, records = prepare_data(settings)
    n_labels = len(data.labels)
    model, tokenizer, base_path, pooling = build_classifier(settings, n_labels, device)

    loss_fn, weights = loss_for_labels(settings, data.train.labels)  # weights from the labelled rows only
    loss_fn = loss_fn.to(device)

    output = Path(settings.output)
    checkpoint_dir = Path(str(output) + ".checkpoint")
    texts, targets = list(data.train.texts), torch.tensor(data.train.labels, dtype=torch.float32)
    teacher_proba = labelled = None
    if settings.teacher:
        teacher_proba, labelled, texts, targets, records["distillation"] = _distillation_inputs(
            settings, data, checkpoint_dir, progress)
        loss_fn = DistillationLoss(loss_fn, settings.distill_alpha, settings.distill_temperature).to(device)
    elif settings.distill_texts:
        raise ValueError("distill_texts needs a teacher (--teacher PATH): only a teacher can label them")

    encoded = tokenizer(texts, truncation=True, max_length=settings.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total_steps = settings.max_steps or max(1, math.ceil(settings.epochs * steps_per_epoch))

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=total_steps, pct_start=max(settings.warmup_fraction, 1e-3),
        anneal_strategy="cos", cycle_momentum=False)

    step, loss_history, epoch_seconds = 0, [], {}
    if settings.resume and (checkpoint_dir / "state.pt").exists():
        # weights_only: the checkpoint holds only tensors, numbers, strings and containers, so loading it never runs
        # pickled code (a tampered state.pt cannot execute anything)
        state = torch.load(checkpoint_dir / "state.pt", map_location=device, weights_only=True)
        if state["total_steps"] != total_steps or state["labels"] != data.labels:
            raise RuntimeError(f"{checkpoint_dir}: checkpoint is from a different run (steps/labels differ); "
                               "delete it or set resume=false")
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, loss_history, epoch_seconds = state["step"], state["loss_history"], state["epoch_seconds"]
        if "torch_rng" in state:  # same dropout masks as an uninterrupted run
            torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d/%d", checkpoint_dir, step, total_steps)

    def save_checkpoint() -> None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint_dir / "state.pt.tmp"
        torch.save({"trainable": _trainable_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "total_steps": total_steps,
                    "labels": data.labels, "loss_history": loss_history, "epoch_seconds": epoch_seconds,
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, checkpoint_dir / "state.pt")  # atomic: a crash never leaves a half-written checkpoint

    from tqdm.auto import tqdm

    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="stage 1 (LoRA)", disable=not progress, mininterval=5)
    epoch_start, running = time.time(), []
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        batches = _batch_order(lengths, settings.batch_size, settings.seed, epoch, settings.length_bucketing)
        for index in batches[position:]:
            if step >= total_steps:
                break
            ids, mask = _collate(encoded, index, tokenizer.pad_token_id)
            with autocast(device, settings.bf16):
                logits = model(ids.to(device), mask.to(device))
            if teacher_proba is None:
                loss = loss_fn(logits.float(), targets[index].to(device))
            else:
                loss = loss_fn(logits.float(), targets[index].to(device), teacher_proba[index].to(device),
                               labelled[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running.append(loss.item())
            bar.update(1)
            if step % settings.log_every == 0 or step == total_steps:
                loss_history.append({"step": step, "loss": float(np.mean(running))})
                bar.set_postfix(loss=f"{loss_history[-1]['loss']:.4f}")
                log.info("step %d/%d loss %.4f lr %.2e", step, total_steps, loss_history[-1]["loss"],
                         scheduler.get_last_lr()[0])
                running = []
            if step % settings.checkpoint_every == 0:
                save_checkpoint()
        epoch_seconds[str(epoch)] = epoch_seconds.get(str(epoch), 0.0) + time.time() - epoch_start
        epoch_start = time.time()
    bar.close()
    stage1_seconds = sum(epoch_seconds.values())
    seconds_per_epoch = stage1_seconds / (total_steps / steps_per_epoch)

    config = settings.model_dump() | records | {
        "pooling": pooling, "steps": total_steps, "steps_per_epoch": steps_per_epoch,
        "label_weight_values": None if weights is None else [round(float(w), 4) for w in weights],
        "hardware": _hardware(device), "command": command or " ".join(sys.argv),
        "stage1_seconds": round(stage1_seconds, 1), "seconds_per_epoch": round(seconds_per_epoch, 1),
        "torch_threads": torch.get_num_threads(),
    }
    classifier = Classifier(model, tokenizer, data.labels, np.full(n_labels, 0.5), config, device=device)
    if settings.ismote:
        from .stage2 import retrain_head

        config["stage2"] = retrain_head(classifier, data, settings, progress=progress)
    dev_proba = classifier.predict_proba(data.dev.texts, progress=progress)  # raw: this classifier is uncalibrated
    metrics = evaluate_classifier(classifier, data, progress=progress, dev_proba=dev_proba)
    thresholds = np.array([metrics["thresholds"][n] for n in data.labels])
    metrics["loss_history"] = loss_history
    config["train_seconds"] = round(time.time() - started, 1)
    path = save_classifier(model, tokenizer, data.labels, thresholds, config, output, metrics)
    from .calibration import write_calibration

    write_calibration(path, data.labels, dev_proba, data.dev.labels, thresholds, f"{Path(data.source).name} dev",
                      classifier.precision)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # the run finished; the artifact supersedes the checkpoint
    log.info("test macro-F1 %.4f (tuned) %.4f (0.5); artifact %s", metrics["test"]["macro_f1_tuned"],
             metrics["test"]["macro_f1_at_0.5"], path)
    return TrainResult(path=path, metrics=metrics, loss_history=loss_history, seconds_per_epoch=seconds_per_epoch,
                       config=config)


def _distillation_inputs(settings: TrainerSettings, data: DatasetSplits, cache_dir: Path, progress: bool):
    """(teacher probabilities, labelled mask, texts, targets, record) over the training texts followed by the extra
    unlabelled texts; the extra rows get all-zero targets that the loss never reads (``labelled`` is False)."""
    from .distill import distill_texts, teacher_probabilities

    extra = distill_texts(settings.distill_texts, data.train.texts, settings.distill_texts_limit, settings.seed)
    texts = list(data.train.texts) + extra
    proba, record = teacher_probabilities(settings.teacher, texts, data.labels, cache_dir=cache_dir,
                                          progress=progress)
    n_labelled = len(data.train)
    labelled = torch.zeros(len(texts), dtype=torch.bool)
    labelled[:n_labelled] = True
    targets = torch.zeros((len(texts), len(data.labels)), dtype=torch.float32)
    targets[:n_labelled] = torch.as_tensor(data.train.labels, dtype=torch.float32)
    record |= {"labelled_texts": n_labelled, "extra_texts": len(extra), "alpha": settings.distill_alpha,
               "temperature": settings.distill_temperature}
    log.info("distillation: %d labelled + %d extra texts, alpha %.2f, T %.1f", n_labelled, len(extra),
             settings.distill_alpha, settings.distill_temperature)
    return torch.as_tensor(proba), labelled, texts, targets, record


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.machine()})"
