"""Stage-1 training (LoRA + head on real text), optional stage 2 (ISMOTE head retraining), tuning, artifact.

``train(settings)`` runs the whole recipe, writes the artifact and returns a :class:`~trainer.result.TrainResult`.
Guarantees:

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .artifact import ArtifactClassifier, save_classifier
from .calibration import write_calibration
from .data import DatasetSplits, prepare_data
from .divergence import DivergenceGuard, TrainingDiverged
from .evaluate import evaluate_classifier
from .losses import DistillationLoss, loss_for_labels
from .modeling import autocast, build_classifier, pick_device
from .result import TrainResult
from .settings import TrainerSettings
from .stage2 import retrain_head

__all__ = ["train", "seed_everything", "TrainResult"]

log = logging.getLogger("trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


@dataclass
class _FitInputs:
    """What stage 1 fits: the texts, their targets and, when distilling, the teacher's probabilities and which rows
    carry gold labels (the extra unlabelled texts do not)."""

    texts: list[str]
    targets: torch.Tensor
    teacher_proba: torch.Tensor | None = None
    labelled: torch.Tensor | None = None
    teacher_version: str | None = None


@dataclass
class _Stage1:
    """Stage-1 bookkeeping, saved in the checkpoint and recorded in the artifact's config."""

    total_steps: int
    steps_per_epoch: int
    step: int = 0
    loss_history: list[dict] = field(default_factory=list)
    epoch_seconds: dict[str, float] = field(default_factory=dict)
    #: the divergence guard's rollbacks: {"step" it diverged at, "to_step" it resumed from, "lr_scale" after it}
    rollbacks: list[dict] = field(default_factory=list)
    #: the version of the teacher whose probabilities stage 1 learns from (None: no distillation)
    teacher: str | None = None

    @property
    def seconds(self) -> float:
        return sum(self.epoch_seconds.values())

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / (self.total_steps / self.steps_per_epoch)


def train(settings: TrainerSettings, progress: bool = True, command: str | None = None) -> TrainResult:
    """Train, tune thresholds on dev, evaluate on test and write the artifact to ``settings.output``.

    The phases: data (load, limit, undersample; the teacher's probabilities when distilling), model (base + LoRA +
    head, loss), fit (stage 1, checkpointed), then stage 2 when asked, evaluation and the artifact."""
    started = time.time()
    seed_everything(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = pick_device()
    data, records = prepare_data(settings)
    model, tokenizer, _, pooling = build_classifier(settings, len(data.labels), device)
    loss_fn, weights = loss_for_labels(settings, data.train.labels)  # weights from the labelled rows only
    loss_fn = loss_fn.to(device)
    checkpoint_dir = Path(str(settings.output) + ".checkpoint")
    inputs = _fit_inputs(settings, data, records, checkpoint_dir, progress)
    if inputs.teacher_proba is not None:
        loss_fn = DistillationLoss(loss_fn, settings.distill_alpha, settings.distill_temperature).to(device)

    stage1 = _fit(settings, model, tokenizer, data.labels, inputs, loss_fn, device, checkpoint_dir, progress)

    config = settings.model_dump() | records | {
        "pooling": pooling, "steps": stage1.total_steps, "steps_per_epoch": stage1.steps_per_epoch,
        "label_weight_values": None if weights is None else [round(float(w), 4) for w in weights],
        "hardware": _hardware(device), "command": command or " ".join(sys.argv),
        "stage1_seconds": round(stage1.seconds, 1), "seconds_per_epoch": round(stage1.seconds_per_epoch, 1),
        "torch_threads": torch.get_num_threads(), "divergence_rollbacks": stage1.rollbacks,
    }
    classifier = ArtifactClassifier(model, tokenizer, data.labels, np.full(len(data.labels), 0.5), config,
                                    device=device)
    if settings.ismote:
        config["stage2"] = retrain_head(classifier, data, settings, progress=progress)
    path, metrics = _evaluate_and_save(classifier, data, stage1.loss_history, Path(settings.output), started,
                                       progress)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # the run finished; the artifact supersedes the checkpoint
    return TrainResult(path=path, metrics=metrics, config=config, seconds_per_epoch=stage1.seconds_per_epoch)


def _fit_inputs(settings: TrainerSettings, data: DatasetSplits, records: dict, checkpoint_dir: Path,
                progress: bool) -> _FitInputs:
    """The training split's texts and labels; with a teacher, plus the extra texts and the teacher's probabilities
    (recorded in ``records["distillation"]``)."""
    if settings.teacher:
        teacher_proba, labelled, texts, targets, records["distillation"] = _distillation_inputs(
            settings, data, checkpoint_dir, progress)
        # the checkpoint's teacher identity includes the target: raw and calibrated outputs must not mix either
        record = records["distillation"]
        return _FitInputs(texts, targets, teacher_proba, labelled,
                          f"{record['teacher_version']} ({record['target']})")
    if settings.distill_texts:
        raise ValueError("distill_texts needs a teacher (--teacher PATH): only a teacher can label them")
    return _FitInputs(list(data.train.texts), torch.tensor(data.train.labels, dtype=torch.float32))


def _fit(settings: TrainerSettings, model, tokenizer, labels: list[str], inputs: _FitInputs, loss_fn, device,
         checkpoint_dir: Path, progress: bool) -> _Stage1:
    """Stage 1: LoRA + head on the texts, resumed from ``checkpoint_dir`` when asked, checkpointed every
    ``checkpoint_every`` steps."""
    encoded = tokenizer(inputs.texts, truncation=True, max_length=settings.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    run = _Stage1(total_steps=settings.max_steps or max(1, math.ceil(settings.epochs * steps_per_epoch)),
                  steps_per_epoch=steps_per_epoch, teacher=inputs.teacher_version)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=run.total_steps, pct_start=max(settings.warmup_fraction, 1e-3),
        anneal_strategy="cos", cycle_momentum=False)
    if settings.resume and (checkpoint_dir / "state.pt").exists():
        _resume(checkpoint_dir, run, labels, model, optimizer, scheduler, device)

    from tqdm.auto import tqdm

    guard = _guard(settings, run)
    model.train()
    bar = tqdm(total=run.total_steps, initial=run.step, desc="stage 1 (LoRA)", disable=not progress, mininterval=5)
    epoch_start, running = time.time(), []
    verdict = "healthy"  # the guard's verdict on the last logged loss: a checkpoint is written only while healthy
    while run.step < run.total_steps:
        epoch, position = divmod(run.step, steps_per_epoch)
        batches = _batch_order(lengths, settings.batch_size, settings.seed, epoch, settings.length_bucketing)
        for index in batches[position:]:
            if run.step >= run.total_steps:
                break
            ids, mask = _collate(encoded, index, tokenizer.pad_token_id)
            with autocast(device, settings.bf16):
                logits = model(ids.to(device), mask.to(device))
            if inputs.teacher_proba is None:
                loss = loss_fn(logits.float(), inputs.targets[index].to(device))
            else:
                loss = loss_fn(logits.float(), inputs.targets[index].to(device),
                               inputs.teacher_proba[index].to(device), inputs.labelled[index].to(device))
            value = loss.item()
            if not math.isfinite(value) and guard.enabled:
                verdict = "diverged"  # never step on it: one NaN gradient makes every weight NaN
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                run.step += 1
                running.append(value)
                bar.update(1)
                if run.step % settings.log_every == 0 or run.step == run.total_steps:
                    run.loss_history.append({"step": run.step, "loss": float(np.mean(running))})
                    bar.set_postfix(loss=f"{run.loss_history[-1]['loss']:.4f}")
                    log.info("step %d/%d loss %.4f lr %.2e", run.step, run.total_steps,
                             run.loss_history[-1]["loss"], scheduler.get_last_lr()[0])
                    running = []
                    verdict = guard.observe(run.loss_history[-1]["loss"])
            if verdict == "diverged":
                epoch_seconds = dict(run.epoch_seconds)
                _roll_back(settings, checkpoint_dir, run, labels, model, optimizer, scheduler, device, guard, value)
                run.epoch_seconds = epoch_seconds  # the lost steps' time was spent all the same
                guard, running, verdict = _guard(settings, run), [], "healthy"
                bar.reset(total=run.total_steps)
                bar.update(run.step)
                break  # the batch order restarts at the restored step
            if run.step % settings.checkpoint_every == 0 and verdict == "healthy":
                _save_checkpoint(checkpoint_dir, run, labels, model, optimizer, scheduler)
        run.epoch_seconds[str(epoch)] = run.epoch_seconds.get(str(epoch), 0.0) + time.time() - epoch_start
        epoch_start = time.time()
    bar.close()
    return run


def _guard(settings: TrainerSettings, run: _Stage1) -> DivergenceGuard:
    """The divergence guard as it stands after ``run``'s logged history (a resumed or rolled-back run's verdicts
    continue as an uninterrupted run's would)."""
    return DivergenceGuard.from_history(settings.divergence_factor, settings.divergence_window,
                                        [entry["loss"] for entry in run.loss_history])


def _roll_back(settings: TrainerSettings, checkpoint_dir: Path, run: _Stage1, labels: list[str], model, optimizer,
               scheduler, device, guard: DivergenceGuard, last_loss: float) -> None:
    """Return ``run`` to its checkpoint (written before the divergence: suspect steps write none) with the learning
    rate halved for the rest of the schedule; fail when the rollbacks are used up or there is no checkpoint."""
    diverged_at = run.step
    window = guard.last_window_mean
    why = (f"loss {last_loss} is not a number" if not math.isfinite(last_loss) else
           f"the mean of the last {guard.window} logged losses, {window:.4f}, exceeds {guard.factor} x the run's "
           f"best, {guard.best:.4f}")
    checkpoint = checkpoint_dir / "state.pt"
    if not checkpoint.exists():
        raise TrainingDiverged(f"stage 1 diverged at step {diverged_at}: {why}; there is no checkpoint to return to "
                               f"(lower --lr, or --divergence-factor 0 to train on regardless)")
    if len(run.rollbacks) >= settings.divergence_retries:
        raise TrainingDiverged(f"stage 1 diverged at step {diverged_at}: {why}, after {len(run.rollbacks)} "
                               f"rollback(s); the checkpoint {checkpoint} is from before it: resume it with a lower "
                               f"--lr, or --divergence-factor 0 to train on regardless")
    rollbacks = run.rollbacks
    scale = _lr_scale(rollbacks) * 0.5
    _resume(checkpoint_dir, run, labels, model, optimizer, scheduler, device)
    # every quantity the one-cycle schedule derives the lr from, relative to the checkpoint's own scale (it may
    # predate earlier rollbacks), so the rest of the schedule runs at `scale` x the planned rate; the optimizer's
    # param groups hold them, so a later checkpoint and its resume keep it
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if key in group:
                group[key] *= scale / _lr_scale(run.rollbacks)
    run.rollbacks = rollbacks + [{"step": diverged_at, "to_step": run.step, "lr_scale": scale, "why": why}]
    log.warning("stage 1 diverged at step %d (%s): rolled back to the checkpoint at step %d, learning rate x%g "
                "from here", diverged_at, why, run.step, scale)


def _lr_scale(rollbacks: list[dict]) -> float:
    """The learning-rate scale a run with these rollbacks trains at (1 without any)."""
    return rollbacks[-1]["lr_scale"] if rollbacks else 1.0


def _resume(checkpoint_dir: Path, run: _Stage1, labels: list[str], model, optimizer, scheduler, device) -> None:
    """Continue ``run`` from the checkpoint: weights, optimiser, scheduler, step, history and the torch RNG."""
    # weights_only: the checkpoint holds only tensors, numbers, strings and containers, so loading it never runs
    # pickled code (a tampered state.pt cannot execute anything)
    state = torch.load(checkpoint_dir / "state.pt", map_location=device, weights_only=True)
    if state["total_steps"] != run.total_steps or state["labels"] != labels:
        raise RuntimeError(f"{checkpoint_dir}: checkpoint is from a different run (steps/labels differ); "
                           "delete it or set resume=false")
    # a distilled run resumed with another teacher would learn from two teachers' probabilities without a trace
    if state.get("teacher", run.teacher) != run.teacher:
        raise RuntimeError(f"{checkpoint_dir}: checkpoint learnt from teacher {state['teacher']}, this run from "
                           f"{run.teacher}; resume with the same --teacher, or delete the checkpoint")
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    run.step, run.loss_history, run.epoch_seconds = state["step"], state["loss_history"], state["epoch_seconds"]
    run.rollbacks = state.get("rollbacks", [])
    if "torch_rng" in state:  # same dropout masks as an uninterrupted run
        torch.set_rng_state(state["torch_rng"])
    log.info("resumed from %s at step %d/%d", checkpoint_dir, run.step, run.total_steps)


def _save_checkpoint(checkpoint_dir: Path, run: _Stage1, labels: list[str], model, optimizer, scheduler) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_dir / "state.pt.tmp"
    torch.save({"trainable": _trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": run.step, "total_steps": run.total_steps,
                "labels": labels, "loss_history": run.loss_history, "epoch_seconds": run.epoch_seconds,
                "rollbacks": run.rollbacks, "teacher": run.teacher,
                "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, checkpoint_dir / "state.pt")  # atomic: a crash never leaves a half-written checkpoint


def _evaluate_and_save(classifier: ArtifactClassifier, data: DatasetSplits, loss_history: list[dict], output: Path,
                       started: float, progress: bool) -> tuple[Path, dict]:
    """Tune thresholds on dev, evaluate on test, write the artifact; returns (its folder, its metrics)."""
    dev_proba = classifier.predict_proba(data.dev.texts, progress=progress)  # raw: this classifier is uncalibrated
    metrics = evaluate_classifier(classifier, data, progress=progress, dev_proba=dev_proba)
    thresholds = np.array([metrics["thresholds"][n] for n in data.labels])
    metrics["loss_history"] = loss_history
    classifier.config["train_seconds"] = round(time.time() - started, 1)
    path = save_classifier(classifier.model, classifier.tokenizer, data.labels, thresholds, classifier.config,
                           output, metrics)
    write_calibration(path, data.labels, dev_proba, data.dev.labels, thresholds, f"{Path(data.source).name} dev",
                      classifier.precision)
    log.info("test macro-F1 %.4f (tuned) %.4f (0.5); artifact %s", metrics["test"]["macro_f1_tuned"],
             metrics["test"]["macro_f1_at_0.5"], path)
    return path, metrics


def _distillation_inputs(settings: TrainerSettings, data: DatasetSplits, cache_dir: Path, progress: bool):
    """(teacher probabilities, labelled mask, texts, targets, record) over the training texts followed by the extra
    unlabelled texts; the extra rows get all-zero targets that the loss never reads (``labelled`` is False)."""
    from .distill import distill_target, distill_texts, teacher_probabilities

    train_texts = list(data.train.texts)
    extra = distill_texts(settings.distill_texts, train_texts, settings.distill_texts_limit, settings.seed)
    target = distill_target(settings.teacher, settings.loss, settings.distill_target)
    proba, record = teacher_probabilities(settings.teacher, train_texts, data.labels, cache_dir=cache_dir,
                                          progress=progress, extra=extra, target=target)
    texts = train_texts + extra
    n_labelled = len(data.train)
    labelled = torch.zeros(len(texts), dtype=torch.bool)
    labelled[:n_labelled] = True
    targets = torch.zeros((len(texts), len(data.labels)), dtype=torch.float32)
    targets[:n_labelled] = torch.as_tensor(data.train.labels, dtype=torch.float32)
    record |= {"labelled_texts": n_labelled, "extra_texts": len(extra), "alpha": settings.distill_alpha,
               "temperature": settings.distill_temperature}
    log.info("distillation: %d labelled + %d extra texts, alpha %.2f, T %.1f, %s targets", n_labelled, len(extra),
             settings.distill_alpha, settings.distill_temperature, record["target"])
    return torch.as_tensor(proba), labelled, texts, targets, record


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.machine()})"
