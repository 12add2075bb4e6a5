"""Unsupervised adaptation beyond label shift (issue 13): does aligning the sentence vectors of a new domain with
GoEmotions' help where prior re-estimation does not?

`calibrate --unlabelled` assumes label shift (only how often each emotion occurs changes). On XED English (film
subtitles) every label-shift estimate says "less emotion than Reddit" although annotators found more, so it leaves
macro-F1 where it is (+0.000, issue 13's target is +0.08). That is concept shift: the same emotion scores lower in
subtitles. This script measures two label-free corrections of *that* on the held-out half of `bench/calibration.py`'s
split (same seed, the shipped model's int8 vectors as the CPU worker computes them, the stored thresholds):

* **CORAL** (Sun et al. 2016): whiten the target vectors with their own covariance and re-colour them with GoEmotions
  dev's, means moved likewise, then the unchanged head;
* **logit standardisation**: each label's logit moved to GoEmotions dev's mean and spread;

plus, for reference, label-shift EM on the CORAL-aligned outputs and thresholds tuned on the labelled adaptation half.
Transductive like `--unlabelled` in `bench/calibration.py`: the held-out texts themselves, without labels, fit the
transform. Sentence vectors are cached under ``$EM_CACHE_DIR/bench`` (~50 MB, never in the repository).

    python bench/xed_feature_alignment.py     # ~4 min on one core; writes bench/results/xed_feature_alignment.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import calibration as xed_bench  # noqa: E402  (the XED reader, split seed and shared labels of issue 13's figures)


def _vectors(classifier, name: str, texts: list[str]) -> np.ndarray:
    cache = Path(os.environ.get("EM_CACHE_DIR", Path.home() / ".cache" / "emotion-monitor")) / "bench"
    path = cache / f"vectors-{name}-{xed_bench.cache_key(classifier, texts)}.npy"
    if path.exists():
        return np.load(path)
    started = time.time()
    vectors = classifier.embed(texts, batch_size=32, progress=True)
    print(f"{name}: {len(texts)} texts embedded in {time.time() - started:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 1e-8)
    return (vectors * values ** (-0.5 if inverse else 0.5)) @ vectors.T


def coral(target: np.ndarray, fit_on: np.ndarray, source: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
    """``target`` whitened with ``fit_on``'s covariance and re-coloured with ``source``'s (means likewise)."""
    eye = ridge * np.eye(source.shape[1])
    transform = _sqrtm(np.cov(fit_on.T) + eye, inverse=True) @ _sqrtm(np.cov(source.T) + eye)
    return (target - fit_on.mean(0)) @ transform + source.mean(0)


def main() -> None:
    import torch

    from trainer import load_classifier
    from trainer.artifact import DEFAULT_MODEL_DIR
    from trainer.calibrate import adapt
    from trainer.data import load_goemotions_tsv
    from trainer.label_map import load_label_map
    from trainer.metrics import macro_f1, tune_thresholds

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    classifier = load_classifier(DEFAULT_MODEL_DIR, device="cpu", int8=True, precision_thresholds=False)
    labels, thresholds = classifier.labels, classifier.raw_thresholds.astype(np.float64)
    head = classifier.model.head
    source = _vectors(classifier, "goemotions-dev", load_goemotions_tsv(xed_bench.SHARED / "goemotions").dev.texts)
    texts, names = xed_bench.read_xed_english()
    vectors = _vectors(classifier, "xed-en", texts)
    y = load_label_map("plutchik8", labels).to_matrix(names, labels)
    shared = [labels.index(n) for n in xed_bench.SHARED_LABELS]
    perm = np.random.default_rng(xed_bench.SPLIT_SEED).permutation(len(texts))
    adapt_idx, held = perm[: len(perm) // 2], perm[len(perm) // 2:]

    def proba(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(head(torch.as_tensor(v, dtype=torch.float32))).numpy().astype(np.float64)

    def f1(p: np.ndarray, at: np.ndarray = thresholds) -> float:
        return round(macro_f1(y[held][:, shared], (p >= at[None, :])[:, shared]), 4)

    def logit(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    raw = proba(vectors[held])
    aligned = proba(coral(vectors[held], vectors[held], source))
    z_source, z_target = logit(proba(source)), logit(raw)
    standardised = 1 / (1 + np.exp(-((z_target - z_target.mean(0)) / z_target.std(0) * z_source.std(0)
                                     + z_source.mean(0))))
    adapted, em_thresholds, _ = adapt(classifier.calibration, thresholds, aligned, prior_method="em")
    rows = {"raw": f1(raw), "CORAL (held-out texts, unlabelled)": f1(aligned),
            "logit standardisation (held-out texts, unlabelled)": f1(standardised),
            "CORAL + label-shift EM": f1(aligned, em_thresholds),
            "reference: thresholds tuned on the labelled adaptation half":
                f1(raw, tune_thresholds(y[adapt_idx], proba(vectors[adapt_idx])).astype(np.float64))}
    flagged = {name: dict(zip(xed_bench.SHARED_LABELS, np.round((p >= thresholds)[:, shared].mean(0), 4).tolist()))
               for name, p in (("raw", raw), ("coral", aligned))}
    result = {"model": classifier.version, "precision": classifier.precision, "split_seed": xed_bench.SPLIT_SEED,
              "held_out_rows": len(held), "macro_f1": rows,
              "gain_over_raw": {k: round(v - rows["raw"], 4) for k, v in rows.items()},
              "held_out_prevalence": {label: round(float(y[held][:, j].mean()), 4)
                                      for label, j in zip(xed_bench.SHARED_LABELS, shared)},
              "flagged_share": flagged}
    out = xed_bench.RESULTS / "xed_feature_alignment.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, value in rows.items():
        print(f"{name:62s} {value:.4f}  ({value - rows['raw']:+.4f})")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
