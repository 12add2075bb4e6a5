"""Inference for the stream: the trainer's classifier on ONE dedicated executor, so the event loop never blocks.

``EM_MONITOR_INFERENCE_ISOLATION`` picks where the model runs:

* ``process`` (the worker's default): in one child process. Why: a model call needs the GIL between its kernel
  launches, and in-process the busy event loop (Faust, parsing, Redis, sends) held it so much that on an H200 the
  model ran ~6x slower inside the worker than alone. Texts go in, a float32 array comes out. The child ignores
  SIGINT/SIGTERM: the worker finishes its batches first and then closes it; if the worker dies, the child notices
  within 0.5 s and exits. If the child dies, the batch fails (and is retried or isolated by the pipeline) and a new
  child loads.
* ``thread``: in this process on one thread (the model's kernels still use every core); what a classifier object
  handed to :func:`load_inference` uses, e.g. in tests.

One executor worker (not a pool) keeps batches in order and the model's memory single.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import numpy as np

from monitor.priors import adaptation_rates
from monitor.settings import MonitorSettings
from trainer.protocol import Classifier

__all__ = ["Inference", "InferenceProcessDied", "ServedModel", "load_inference", "share_cores_politely"]

log = logging.getLogger(__name__)


class InferenceProcessDied(RuntimeError):
    """The inference child process exited mid-batch (crash, OOM kill); a fresh one is started for the next call."""


# ---------------------------------------------------------------- model side (this process or the child)


class ServedModel:
    """The classifier as the worker serves it. The one place its token limit is set: ``max_length`` lowered to
    ``settings.max_tokens`` (never raised above what the model was trained with)."""

    def __init__(self, classifier: Classifier, max_tokens: int):
        classifier.max_length = min(int(classifier.max_length), max_tokens)
        self.classifier = classifier

    def describe(self) -> dict:
        classifier = self.classifier
        return {"labels": list(classifier.labels), "thresholds": np.asarray(classifier.thresholds, dtype=np.float32),
                "version": str(classifier.version), "precision": str(classifier.precision),
                "device": classifier.device.type,
                # what the prior tracker needs (label_priors, tpr, fpr of a calibrated artifact), or None
                "adaptation": adaptation_rates(classifier, classifier.labels)}

    def predict(self, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        proba = self.classifier.predict_proba(texts, batch_size=batch_size)
        return np.asarray(proba, dtype=np.float32), time.perf_counter() - started


class _ChildModel:
    """What the inference child holds between calls: its served model, or why it failed to load (an initializer
    that raises only breaks the pool, losing the reason: the first call raises it in the worker as itself)."""

    served: ServedModel | None = None
    error: BaseException | None = None

    @classmethod
    def get(cls) -> ServedModel:
        if cls.error is not None:
            raise cls.error
        if cls.served is None:
            raise RuntimeError("no model in this process: the inference child's initializer did not run")
        return cls.served


def _exit_with_parent(parent: int) -> None:
    """The child's own copy of the task queue keeps its pipe open, so a killed parent never shows up as EOF: watch."""
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-worker", daemon=True).start()


def _load_served(settings_json: str) -> ServedModel:
    from trainer import default_model_dir, load_classifier

    settings = MonitorSettings.model_validate_json(settings_json)
    device = None if settings.device == "auto" else settings.device
    started = time.perf_counter()
    # no model_path: the shipped model for the device (the MPNet artifact on CUDA when installed, else MiniLM)
    path = settings.model_path or default_model_dir(device)
    load = load_classifier
    if settings.model_loader:  # a loader named by import path (another model package, a benchmark's stand-in)
        import importlib

        module, _, function = settings.model_loader.partition(":")
        load = getattr(importlib.import_module(module), function or "load_classifier")
    classifier = load(path, device=device, int8=settings.cpu_precision == "int8")
    log.warning("loaded model %s (%s on %s) in %.1f s", classifier.version, classifier.precision,
                classifier.device, time.perf_counter() - started)
    return ServedModel(classifier, settings.max_tokens)


def _child_init(settings_json: str) -> None:
    """The child process's initializer: the parent decides when the model stops (after its batches), or dies."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent(os.getppid())
    try:
        _ChildModel.served = _load_served(settings_json)
    except Exception as exc:  # noqa: BLE001 - kept for the first call (see _ChildModel)
        _ChildModel.error = exc


def _describe(served: ServedModel | None = None) -> dict:
    return (served or _ChildModel.get()).describe()


def _predict(texts: list[str], batch_size: int, served: ServedModel | None = None) -> tuple[np.ndarray, float]:
    return (served or _ChildModel.get()).predict(texts, batch_size)


# ---------------------------------------------------------------- event-loop side


class Inference:
    """The model behind one executor: ``labels``, ``thresholds`` (overrides applied), ``version`` (``+int8`` when
    served in int8), ``precision``, ``device``, ``batch_size`` (texts per model call) and :meth:`predict`."""

    def __init__(self, settings: MonitorSettings, classifier: Classifier | None = None):
        self.settings = settings
        # only in thread isolation: the model served on this process's executor thread (loaded below when not given)
        self.served = None if classifier is None else ServedModel(classifier, settings.max_tokens)
        self.isolation = "thread" if classifier is not None else settings.inference_isolation
        self._executor = self._start()
        in_child = self.served is None
        try:
            meta = self._executor.submit(_describe).result() if in_child else self.served.describe()
        except BaseException:  # e.g. the model failed to load in the child: no process left behind
            self.close()
            raise
        self.labels: list[str] = meta["labels"]
        self.precision: str = meta["precision"]
        self.device: str = meta["device"]
        # the served arithmetic is part of the version: int8 scores differ slightly from the fp32 ones
        self.version: str = meta["version"] + ("+int8" if self.precision == "int8" else "")
        self.batch_size = inference_batch(settings, self.device, self.precision)
        thresholds = np.array(meta["thresholds"], dtype=np.float32)
        for emotion, value in settings.threshold_overrides.items():
            if emotion not in self.labels:
                self.close()
                raise ValueError(f"threshold override for unknown emotion {emotion!r}; known: {self.labels}")
            thresholds[self.labels.index(emotion)] = float(value)
        self.thresholds = thresholds
        # the model's source priors and dev tpr/fpr (monitor.priors), or None when the artifact has none
        self.adaptation: dict | None = meta.get("adaptation")

    def _start(self) -> Executor:
        if self.isolation == "thread":
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            if self.served is None:
                self.served = executor.submit(_load_served, self.settings.model_dump_json()).result()
            return executor
        # spawn, not fork: the child must not inherit the event loop, sockets or Faust's threads
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_child_init, initargs=(self.settings.model_dump_json(),))

    def _submit(self, texts: list[str]):
        return self._executor.submit(_predict, texts, self.batch_size, self.served)

    async def predict(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """Probabilities ``[n, n_labels]`` and the seconds the model took (not counting the wait behind an earlier
        batch). Raises :class:`InferenceProcessDied` if the child died; the next call starts a new one."""
        try:
            return await asyncio.wrap_future(self._submit(list(texts)))
        except BrokenProcessPool as exc:
            log.error("the inference process died (%s); starting a new one", exc)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            raise InferenceProcessDied(str(exc)) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def load_inference(settings: MonitorSettings, classifier: Classifier | None = None) -> Inference:
    """The model named by the settings (the shipped default when ``model_path`` is empty), isolated as
    ``settings.inference_isolation`` says; a ready ``classifier`` runs on a thread of this process, its
    ``max_length`` lowered to ``settings.max_tokens`` (:class:`ServedModel`)."""
    return Inference(settings, classifier)


def inference_batch(settings: MonitorSettings, device: str, precision: str) -> int:
    """Texts per model call. The classifier sorts a micro-batch by length and pads each call to its longest text;
    on CPU compute grows with the padded size, so small calls of similar lengths beat one call of mixed lengths
    (measured here, micro-batches of 64 from GoEmotions dev: fp32 234/s in calls of 16 vs 118/s in one call; int8
    845/s in calls of 32 vs 526/s in one call, see bench/inference_precision.py); a GPU pads for free, so it takes the
    whole batch."""
    if settings.inference_batch:
        return min(settings.inference_batch, settings.max_batch)
    if device == "cuda":
        return settings.max_batch
    return min(32 if precision == "int8" else 16, settings.max_batch)


def share_cores_politely() -> None:
    """Ask OpenMP (torch's CPU threads) to sleep rather than spin between parallel regions, unless the user chose.

    Why: the worker's event loop, Faust's consumer thread, and often the broker and Redis share the cores with the
    model; spinning OpenMP threads keep a core busy that those need. Measured on the 2-core machine: end to end 639
    vs 484 posts/s. Must run before torch is imported (OpenMP reads it once); a spawned inference child inherits it.
    """
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
