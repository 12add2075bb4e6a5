"""Per-label probability calibration stored in an artifact (``calibration.json``), plus what prior adaptation needs.

Why Platt scaling per label (``p = sigmoid(a * logit(raw) + b)``, ``a > 0``): the head was trained with positive
weights and undersampling, so its sigmoid outputs are systematically too high for rare labels and too low for
``neutral``; a two-parameter monotone map per label corrects that scale. It is smooth and monotone (so the stored
thresholds map to the same decisions, unlike isotonic regression's steps and ties) and it needs only two parameters
per label, which the few dev positives of rare labels (grief: 13) can support; one temperature for all 28 labels
cannot fix per-label biases of opposite sign. Targets use Platt's (1999) smoothing ``(N+ + 1)/(N+ + 2)`` and
``1/(N- + 2)`` so that a label with few positives is not pushed to 0/1.

Layout of ``calibration.json`` (everything per label, in ``labels.json`` order)::

    method            "platt"
    a, b              Platt slope / intercept on the raw logit
    source_priors     label prevalence on the dev data the calibration was fitted on
    label_priors      the priors the served probabilities assume: source_priors, or a stream's (after ``calibrate``)
    tpr, fpr          true/false-positive rates of the served decision rule (raw >= thresholds.json)
    roc               {"grid": raw thresholds, "tpr": [[...]], "fpr": [[...]]} measured on dev: the class-conditional
                      score distributions that threshold and prior adaptation reuse without the dev data
    fitted_on         {"data", "rows", "precision", "date"}
    adaptation        absent, or what ``emotion-monitor calibrate`` adapted the artifact to (files, counts, estimated
                      priors, date)

Served probability: ``adapt_posteriors(platt(raw), source_priors, label_priors)`` (identity when they are equal).
``thresholds.json`` keeps thresholds on the *raw* sigmoid scale; the loaded classifier's ``thresholds`` are those
mapped through the same monotone function, so ``proba >= thresholds`` takes exactly the raw decisions.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .adaptation import adapt_posteriors

__all__ = ["CALIBRATION_FILE", "write_calibration", "Calibration", "fit_calibration", "fit_platt", "load_calibration",
           "reliability_ece"]

CALIBRATION_FILE = "calibration.json"
_EPS = 1e-7
ROC_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings for large |z|


def fit_platt(raw: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Per-label Platt slope ``a`` and intercept ``b`` on the raw logits (Newton's method on the smoothed-target
    log loss). A label without positives or negatives keeps the identity (a=1, b=0); a fitted slope below 0.05
    (no usable signal) is clamped there so the map stays strictly increasing."""
    z_all = _logit(raw)
    y = np.asarray(y).astype(bool)
    n_labels = z_all.shape[1]
    a, b = np.ones(n_labels), np.zeros(n_labels)
    for j in range(n_labels):
        pos, neg = int(y[:, j].sum()), int((~y[:, j]).sum())
        if pos == 0 or neg == 0:
            continue
        z = z_all[:, j]
        t = np.where(y[:, j], (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))
        w = np.array([1.0, 0.0])
        for _ in range(iterations):
            p = _sigmoid(w[0] * z + w[1])
            g = np.array([np.dot(p - t, z), np.sum(p - t)])
            s = p * (1 - p) + 1e-12
            h = np.array([[np.dot(s, z * z), np.dot(s, z)], [np.dot(s, z), s.sum()]]) + 1e-9 * np.eye(2)
            step = np.linalg.solve(h, g)
            w = w - step
            if np.abs(step).max() < 1e-8:
                break
        a[j], b[j] = max(w[0], 0.05), w[1]
    return a, b


def reliability_ece(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> np.ndarray:
    """Expected calibration error per label: the |mean probability - positive rate| over 15 equal-width probability
    bins, weighted by the bin's share of rows."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    out = np.zeros(proba.shape[1])
    for j in range(proba.shape[1]):
        index = np.clip(np.digitize(proba[:, j], edges[1:-1]), 0, bins - 1)
        mean_p = np.bincount(index, proba[:, j], minlength=bins)
        mean_y = np.bincount(index, y[:, j], minlength=bins)
        out[j] = np.abs(mean_p - mean_y).sum() / max(len(proba), 1)
    return out


def _roc(raw: np.ndarray, y: np.ndarray, grid: np.ndarray = ROC_GRID) -> tuple[np.ndarray, np.ndarray]:
    """tpr/fpr per label at every grid threshold: ``[labels, grid]``."""
    y = np.asarray(y).astype(bool)
    flagged = raw[:, :, None] >= grid[None, None, :]  # [n, labels, grid]
    pos = np.maximum(y.sum(axis=0), 1)[:, None]
    neg = np.maximum((~y).sum(axis=0), 1)[:, None]
    tpr = (flagged & y[:, :, None]).sum(axis=0) / pos
    fpr = (flagged & ~y[:, :, None]).sum(axis=0) / neg
    return tpr, fpr


@dataclass
class Calibration:
    """A fitted per-label calibration (see the module docstring); ``apply`` maps raw sigmoid outputs to served
    probabilities."""

    labels: list[str]
    a: np.ndarray
    b: np.ndarray
    source_priors: np.ndarray
    label_priors: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    roc_tpr: np.ndarray
    roc_fpr: np.ndarray
    roc_grid: np.ndarray = field(default_factory=lambda: ROC_GRID.copy())
    method: str = "platt"
    fitted_on: dict = field(default_factory=dict)
    adaptation: dict | None = None

    def platt(self, raw) -> np.ndarray:
        return _sigmoid(self.a * _logit(raw) + self.b)

    def apply(self, raw) -> np.ndarray:
        """Raw sigmoid outputs ``[n, labels]`` -> calibrated (and, when adapted, prior-shifted) probabilities,
        float32. Strictly increasing per label."""
        raw = np.asarray(raw)
        one_row = raw.ndim == 1
        raw2 = raw[None, :] if one_row else raw
        if raw2.shape[0] == 0:
            return np.zeros(raw2.shape, dtype=np.float32)
        p = self.platt(raw2)
        if not np.allclose(self.label_priors, self.source_priors, rtol=0, atol=1e-9):
            p = adapt_posteriors(p, self.source_priors, self.label_priors)
        p = p.astype(np.float32)
        return p[0] if one_row else p

    def with_priors(self, label_priors) -> "Calibration":
        from dataclasses import replace

        return replace(self, label_priors=np.asarray(label_priors, dtype=np.float64))

    def rates_at(self, raw_thresholds) -> tuple[np.ndarray, np.ndarray]:
        """Dev tpr/fpr of ``raw >= raw_thresholds`` read off the stored ROC grid (linear between grid points)."""
        t = np.asarray(raw_thresholds, dtype=np.float64)
        tpr = np.array([np.interp(t[j], self.roc_grid, self.roc_tpr[j]) for j in range(len(t))])
        fpr = np.array([np.interp(t[j], self.roc_grid, self.roc_fpr[j]) for j in range(len(t))])
        return tpr, fpr

    def to_json(self) -> dict:
        def per_label(values, digits=6):
            return {name: round(float(v), digits) for name, v in zip(self.labels, values)}

        data = {"method": self.method, "labels": list(self.labels), "a": per_label(self.a), "b": per_label(self.b),
                "source_priors": per_label(self.source_priors), "label_priors": per_label(self.label_priors),
                "tpr": per_label(self.tpr, 4), "fpr": per_label(self.fpr, 5),
                "roc": {"grid": [float(g) for g in self.roc_grid],
                        "tpr": {n: [round(float(v), 4) for v in row] for n, row in zip(self.labels, self.roc_tpr)},
                        "fpr": {n: [round(float(v), 5) for v in row] for n, row in zip(self.labels, self.roc_fpr)}},
                "fitted_on": self.fitted_on}
        if self.adaptation:
            data["adaptation"] = self.adaptation
        return data

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(compact_json(self.to_json()))
        return path


def compact_json(data: dict) -> str:
    """JSON with one line per list of numbers (ROC rows) and one line per scalar elsewhere: small and still diffable."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-0-9.eE,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text) + "\n"


def read_json(path: Path):
    """Parsed JSON; a corrupt file fails naming the file and the position."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON file: {exc}") from None


def label_column(path: Path, labels: list[str], record, key: str) -> np.ndarray:
    """``record[key]`` (a ``{label: value}`` map) as a float64 array in ``labels`` order. A missing field or label
    fails naming the file, the field and the labels, so a hand-edited or truncated artifact file is refused."""
    values = record.get(key) if isinstance(record, dict) else None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: missing field {key!r}")
    missing = [name for name in labels if name not in values]
    if missing:
        raise ValueError(f"{path}: field {key!r} has no value for {missing}")
    return np.array([values[name] for name in labels], dtype=np.float64)


def load_calibration(folder: str | Path, labels: list[str]) -> Calibration | None:
    """The artifact's calibration, or None when it has no ``calibration.json`` (raw sigmoid outputs are served).
    A file that does not cover every label fails naming the file and the label."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return None
    data = read_json(path)
    if data.get("method") != "platt":
        raise ValueError(f"{path}: unknown calibration method {data.get('method')!r} (expected 'platt')")

    def column(key: str, source: dict | None = None) -> np.ndarray:
        return label_column(path, labels, data if source is None else source, key)

    roc = data.get("roc")
    if not isinstance(roc, dict) or not all(k in roc for k in ("grid", "tpr", "fpr")):
        raise ValueError(f"{path}: missing field 'roc' (grid, tpr, fpr)")
    roc_tpr, roc_fpr = column("tpr", roc), column("fpr", roc)  # validates the label coverage
    return Calibration(labels=list(labels), a=column("a"), b=column("b"), source_priors=column("source_priors"),
                       label_priors=column("label_priors"), tpr=column("tpr"), fpr=column("fpr"),
                       roc_tpr=np.asarray(roc_tpr, dtype=np.float64), roc_fpr=np.asarray(roc_fpr, dtype=np.float64),
                       roc_grid=np.asarray(roc["grid"], dtype=np.float64), method="platt",
                       fitted_on=data.get("fitted_on", {}), adaptation=data.get("adaptation"))


def fit_calibration(labels: list[str], raw: np.ndarray, y: np.ndarray, raw_thresholds: np.ndarray,
                    fitted_on: dict | None = None) -> Calibration:
    """Fit Platt scaling per label on labelled (dev) raw outputs and record the dev priors, the rates of the
    decision rule ``raw >= raw_thresholds`` and the ROC grid."""
    from .adaptation import rates_at_thresholds

    y = np.asarray(y).astype(np.uint8)
    a, b = fit_platt(raw, y)
    n = len(y)
    # strictly inside (0, 1): prior adaptation divides by these
    priors = np.clip((y.sum(axis=0) + 0.5) / (n + 1.0), 1e-6, 1 - 1e-6)
    tpr, fpr = rates_at_thresholds(raw, y, raw_thresholds, smoothing=0.5)
    roc_tpr, roc_fpr = _roc(np.asarray(raw, dtype=np.float32), y)
    record = {"rows": int(n), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | (fitted_on or {})
    return Calibration(list(labels), a, b, priors, priors.copy(), tpr, fpr, roc_tpr, roc_fpr, ROC_GRID.copy(),
                       "platt", record)


def write_calibration(folder: str | Path, labels: list[str], dev_raw: np.ndarray, dev_y: np.ndarray,
                      raw_thresholds, data: str, precision: str) -> Calibration:
    """Fit on dev, write ``calibration.json`` into an artifact folder and refresh its model card (training and
    stage-2 head re-training call this, so every new artifact serves calibrated probabilities)."""
    from .model_card import write_model_card

    calibration = fit_calibration(labels, dev_raw, dev_y, np.asarray(raw_thresholds, dtype=np.float64),
                                  {"data": data, "precision": precision})
    calibration.save(folder)
    write_model_card(folder)
    return calibration
