"""Knowledge distillation inputs: the teacher's probabilities over the training texts and extra unlabelled texts.

``train --teacher PATH`` (``TrainerSettings.teacher``) makes the student learn from a trained artifact as well as
from the true labels (``trainer.losses.DistillationLoss``). The teacher labels every training text, and optionally
extra texts (``--distill-texts``) that have no labels of their own: the student then sees the teacher's knowledge on
text beyond GoEmotions' training rows. Only the *text* of an extra file is read; a label column in it (XED's TSVs)
is dropped on reading, so no other dataset's labels ever reach training.

Computing the teacher's probabilities is the expensive part (a full inference pass of a larger model), so they are
cached next to the run's checkpoint, the training texts and the extra texts apart, and each is reused (on resume,
or when only the extra texts change) while the teacher, labels and its texts are the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from .data import DataError

__all__ = ["read_texts", "distill_texts", "distill_target", "teacher_probabilities"]

log = logging.getLogger("trainer.distill")

_LABEL_FIELD = re.compile(r"^\s*\d+(\s*,\s*\d+)*\s*$")  # "4", "4, 7": a numeric label column, never text


def read_texts(path: str | Path) -> list[str]:
    """Texts of one file: JSONL (``.jsonl``: the ``text`` field), else one text per line. A tab-separated line keeps
    its longest field that is not a list of numbers (XED: ``text<TAB>4, 7`` and ``9<TAB>text``). Blank lines are
    skipped; a JSONL line that is not an object with a string ``text`` fails naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "distillation text file not found")
    texts: list[str] = []
    jsonl = path.suffix == ".jsonl"
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if jsonl:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, number, f"invalid JSON: {exc.msg}") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise DataError(path, number, 'a JSONL line needs a string "text" field')
                text = row["text"]
            elif "\t" in line:
                fields = [f for f in line.split("\t") if f.strip() and not _LABEL_FIELD.match(f)]
                text = max(fields, key=len) if fields else ""
            else:
                text = line
            if text.strip():
                texts.append(text.strip())
    return texts


def distill_texts(files: str | None, exclude: list[str], limit: int | None, seed: int) -> list[str]:
    """The extra texts from a comma-separated list of files: deduplicated, minus texts in ``exclude`` (the training
    texts, which the student sees anyway), then a seeded random sample of at most ``limit``, in file order."""
    if not files:
        return []
    seen = set(exclude)
    texts: list[str] = []
    for name in [f.strip() for f in files.split(",") if f.strip()]:
        for text in read_texts(name):
            if text not in seen:
                seen.add(text)
                texts.append(text)
    if limit and len(texts) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
        texts = [texts[i] for i in keep]
    return texts


def _fingerprint(teacher_version: str, labels: list[str], texts: list[str]) -> str:
    # "raw": the cache holds the head's raw outputs (calibration is applied after reading); a cache from before,
    # which held calibrated probabilities, is thus never read as raw
    h = hashlib.sha256(teacher_version.encode() + b"\x1fraw")
    h.update("\x1f".join(labels).encode())
    for text in texts:
        h.update(text.encode("utf-8", "replace"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def distill_target(teacher_path: str | Path, student_loss: str, target: str = "auto") -> str:
    """``raw`` or ``calibrated``: which of the teacher's outputs a student learns. ``auto`` is ``raw`` when the
    teacher was trained with the student's loss and ``calibrated`` otherwise.

    Why: a loss sets the scale of a model's raw outputs. The asymmetric loss hardly pushes negatives down (the MPNet
    asl teacher's raw negatives average ~0.4, its Platt-calibrated ones ~0.02), so an asl student pulled toward
    calibrated targets fights its own loss on every negative cell, while a BCE student would learn the asl scale
    from raw ones. Calibrated probabilities are the loss-independent scale; the same loss shares the raw one."""
    if target != "auto":
        return target
    config = json.loads((Path(teacher_path) / "config.json").read_text(encoding="utf-8"))
    return "raw" if config.get("loss", "bce") == student_loss else "calibrated"


def teacher_probabilities(teacher_path: str | Path, texts: list[str], labels: list[str],
                          cache_dir: Path | None = None, device=None, progress: bool = True,
                          extra: list[str] | None = None, target: str = "calibrated") -> tuple[np.ndarray, dict]:
    """The teacher artifact's probabilities ``float32 [len(texts) + len(extra), len(labels)]`` (``texts`` first),
    ``target`` ``raw`` (its head's sigmoid) or ``calibrated`` (its calibration applied, when it has one), and a
    record for the student's config. The teacher must predict exactly ``labels`` (same names, same order). With
    ``cache_dir``, the raw outputs of each of ``texts`` and ``extra`` are stored there apart and reused when teacher
    version, labels and that part's texts are unchanged: adding or changing the extra texts does not re-label the
    training texts (on CPU the teacher's pass over GoEmotions' training texts is the run's most expensive part)."""
    if target not in ("raw", "calibrated"):
        raise ValueError(f"distillation target must be raw or calibrated, not {target!r}")
    import torch

    from .artifact import load_classifier

    started = time.time()
    teacher = load_classifier(teacher_path, device=device)
    if list(teacher.labels) != list(labels):
        raise ValueError(f"teacher {teacher_path} predicts {teacher.labels}, but the student trains on {labels}; "
                         "train the teacher on the same taxonomy")
    parts = [texts] + ([extra] if extra else [])
    calibrate = target == "calibrated" and teacher.calibration is not None
    record = {"teacher": str(teacher_path), "teacher_version": teacher.version,
              "teacher_base_model": teacher.config.get("base_model"), "teacher_loss": teacher.config.get("loss"),
              "target": "calibrated" if calibrate else "raw", "texts": sum(len(part) for part in parts),
              "texts_from_cache": 0}
    probas = []
    for part in parts:
        fingerprint = _fingerprint(teacher.version, list(labels), part)
        cache = cache_dir / f"teacher_proba_{fingerprint}.npy" if cache_dir is not None else None
        if cache is not None and cache.exists():
            proba = np.load(cache)
            record["texts_from_cache"] += len(part)
            log.info("teacher probabilities for %d texts from the cache %s", len(part), cache)
        else:
            log.info("teacher %s labels %d texts", teacher.version, len(part))
            proba = teacher.predict_proba(part, progress=progress, calibrated=False).astype(np.float32)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp.npy")
                np.save(tmp, proba)
                tmp.replace(cache)
        probas.append(teacher.calibration.apply(proba) if calibrate else proba)
    del teacher
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    record["teacher_seconds"] = round(time.time() - started, 1)
    return np.concatenate(probas) if len(probas) > 1 else probas[0], record
