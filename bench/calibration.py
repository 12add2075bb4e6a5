"""Calibration and label-prior adaptation benchmark (issue 13): XED English (film subtitles, 6 labels shared with
GoEmotions) and GoEmotions test, shipped model as the CPU worker serves it (int8).

Stage 1 caches the shipped model's *raw* (uncalibrated) sigmoid probabilities per corpus to
``bench/results/calibration_cache/*.npz`` (keyed by model version and text hash), so later runs are cheap.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "calibration_cache"
XED_LABELS = {1: "anger", 2: "anticipation", 3: "disgust", 4: "fear", 5: "joy", 6: "sadness", 7: "surprise",
              8: "trust"}
SHARED_LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
SPLIT_SEED = 20261127  # fixes the XED adaptation/held-out split once


def read_xed_english(folder: Path = SHARED / "xed") -> tuple[list[str], list[list[str]]]:
    """(texts, Plutchik label names per line); neutral lines carry ["neutral"]."""
    texts, labels = [], []
    with (folder / "en-annotated.tsv").open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) != 2 or not row[0].strip():
                continue
            texts.append(row[0])
            labels.append(sorted({XED_LABELS[int(x)] for x in row[1].replace(" ", "").split(",") if x}))
    with (folder / "neu_en.txt").open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) != 2 or not row[1].strip():
                continue
            texts.append(row[1])
            labels.append(["neutral"])
    return texts, labels


def weights_digest(folder: Path) -> str:
    """Digest of what the raw outputs depend on (adapter + head), not of calibration.json or thresholds."""
    h = hashlib.sha256()
    for name in ("adapter/adapter_model.safetensors", "head.safetensors"):
        h.update((Path(folder) / name).read_bytes())
    return h.hexdigest()[:10]


def cache_key(classifier, texts: list[str]) -> str:
    payload = "\n".join(texts) + weights_digest(classifier.path) + classifier.precision
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cached_proba(classifier, name: str, texts: list[str]) -> np.ndarray:
    """The classifier's raw sigmoid probabilities for ``texts`` (calibration switched off), cached on disk."""
    key = cache_key(classifier, texts)
    path = CACHE / f"{name}-{key}.npz"
    if path.exists():
        return np.load(path)["proba"]
    started = time.perf_counter()
    # raw scores: calibration and adaptation are applied here in numpy, exactly as the artifact would
    proba = classifier.predict_proba(texts, batch_size=64, progress=True, calibrated=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, proba=proba)
    print(f"cached {name}: {len(texts)} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return proba


def cache_all() -> None:
    import torch

    from trainer import default_model_dir, load_classifier
    from trainer.data import load_goemotions_tsv

    torch.set_num_threads(2)
    classifier = load_classifier(default_model_dir("cpu"), device="cpu", int8=True)
    goemotions = load_goemotions_tsv(SHARED / "goemotions")
    cached_proba(classifier, "goemotions-dev", goemotions.dev.texts)
    cached_proba(classifier, "goemotions-test", goemotions.test.texts)
    texts, _ = read_xed_english()
    cached_proba(classifier, "xed-en", texts)


def fit_shipped() -> None:
    """Write the shipped model's calibration.json from its (cached) int8 GoEmotions dev outputs: the same fit as
    ``emotion-monitor calibrate --dev-data ../shared/data/goemotions --out trainer/default_model``."""
    import torch

    from trainer import load_classifier
    from trainer.artifact import DEFAULT_MODEL_DIR
    from trainer.calibration import fit_calibration
    from trainer.data import load_goemotions_tsv
    from trainer.model_card import write_model_card

    torch.set_num_threads(2)
    classifier = load_classifier(DEFAULT_MODEL_DIR, device="cpu", int8=True)
    dev = load_goemotions_tsv(SHARED / "goemotions").dev
    raw = cached_proba(classifier, "goemotions-dev", dev.texts)
    calibration = fit_calibration(classifier.labels, raw, dev.labels, classifier.raw_thresholds,
                                  {"data": "goemotions dev", "precision": classifier.precision})
    calibration.save(DEFAULT_MODEL_DIR)
    write_model_card(DEFAULT_MODEL_DIR)
    print(f"wrote {DEFAULT_MODEL_DIR / 'calibration.json'}")


if __name__ == "__main__":
    stage = sys.argv[1] if len(sys.argv) > 1 else "run"
    {"cache": cache_all, "fit-shipped": fit_shipped}[stage]()
