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
from typing import Any

import numpy as np

from monitor.settings import MonitorSettings

__all__ = ["Inference", "InferenceProcessDied", "load_inference", "share_cores_politely"]

log = logging.getLogger(__name__)


class InferenceProcessDied(RuntimeError):
    """The inference child process exited mid-batch (crash, OOM kill); a fresh one is started for the next call."""


# ---------------------------------------------------------------- model side (this process or the child)

_MODEL: dict[str, Any] = {}


def _exit_with_parent(parent: int) -> None:
    """The child's own copy of the task queue keeps its pipe open, so a killed parent never shows up as EOF: watch."""
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-worker", daemon=True).start()


def _load_classifier(settings_json: str) -> Any:
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
    classifier.max_length = min(int(classifier.max_length), settings.max_tokens)
    log.warning("loaded model %s (%s on %s) in %.1f s", classifier.version, classifier.precision,
                classifier.device, time.perf_counter() - started)
    return classifier


def _child_init(settings_json: str) -> None:
    """The child process's initializer: the parent decides when the model stops (after its batches), or dies."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent(os.getppid())
    try:
        _MODEL["classifier"] = _load_classifier(settings_json)
    except Exception as exc:  # noqa: BLE001 - an initializer that raises only breaks the pool, losing the reason:
        _MODEL["error"] = exc  # keep it for the first call, which raises it in the worker as itself


def _loaded(classifier: Any | None) -> Any:
    if classifier is not None:
        return classifier
    if "error" in _MODEL:
        raise _MODEL["error"]
    return _MODEL["classifier"]


def _describe(classifier: Any | None = None) -> dict:
    classifier = _loaded(classifier)
    return {"labels": list(classifier.labels), "thresholds": np.asarray(classifier.thresholds, dtype=np.float32),
            "version": str(classifier.version), "precision": getattr(classifier, "precision", "fp32"),
            "device": getattr(getattr(classifier, "device", None), "type", "cpu")}


def _predict(texts: list[str], batch_size: int, classifier: Any | None = None) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    classifier = _loaded(classifier)
    proba = classifier.predict_proba(texts, batch_size=batch_size)
    return np.asarray(proba, dtype=np.float32), time.perf_counter() - started


# ---------------------------------------------------------------- event-loop side


class Inference:
    """The model behind one executor: ``labels``, ``thresholds`` (overrides applied), ``version`` (``+int8`` when
    served in int8), ``precision``, ``device``, ``batch_size`` (texts per model call) and :meth:`predict`."""

    def __init__(self, settings: MonitorSettings, classifier: Any | None = None):
        self.settings = settings
        self.classifier = classifier  # only in thread isolation (loaded below when not given)
        self.isolation = "thread" if classifier is not None else settings.inference_isolation
        self._executor = self._start()
        in_child = self.classifier is None
        try:
            meta = self._executor.submit(_describe).result() if in_child else _describe(self.classifier)
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

    def _start(self) -> Executor:
        if self.isolation == "thread":
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            if self.classifier is None:
                self.classifier = executor.submit(_load_classifier, self.settings.model_dump_json()).result()
            return executor
        # spawn, not fork: the child must not inherit the event loop, sockets or Faust's threads
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_child_init, initargs=(self.settings.model_dump_json(),))

    def _submit(self, texts: list[str]):
        return self._executor.submit(_predict, texts, self.batch_size, self.classifier)

    def predict_blocking(self, texts: list[str]) -> np.ndarray:
        return self._submit(list(texts)).result()[0]

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


def load_inference(settings: MonitorSettings, classifier: Any | None = None) -> Inference:
    """The model named by the settings (the shipped default when ``model_path`` is empty), isolated as
    ``settings.inference_isolation`` says; a ready ``classifier`` object runs on a thread of this process."""
    if classifier is not None and hasattr(classifier, "max_length"):
        classifier.max_length = min(int(classifier.max_length), settings.max_tokens)
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
