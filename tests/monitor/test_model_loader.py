"""``EM_MONITOR_MODEL_LOADER``: a classifier loader named by import path, used instead of the trainer's artifact loader
in the worker's inference child (what ``bench/throughput.py --model null`` uses to measure the pipeline alone)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from monitor.inference import load_inference
from monitor.settings import MonitorSettings

pytestmark = pytest.mark.timeout(120)


def test_a_loader_named_by_import_path_serves_in_the_inference_child():
    settings = MonitorSettings(model_loader="bench.null_model:load_classifier", device="cpu")
    inference = load_inference(settings)
    try:
        assert inference.isolation == "process" and inference.version == "null-model"
        assert len(inference.labels) == 28 and "anger" in inference.labels
        proba, _seconds = asyncio.run(inference.predict(["one", "two", "three"]))
        assert proba.shape == (3, 28)
        assert (proba[0] == proba[2]).all()  # the stand-in's fixed row, for every text
        above = proba[0] >= inference.thresholds
        assert above.any() and not above.all()  # some emotions counted, some not
    finally:
        inference.close()


def test_a_loader_that_does_not_import_fails_the_start_naming_it():
    settings = MonitorSettings(model_loader="no_such_module_anywhere:load", device="cpu",
                               inference_isolation="thread")
    with pytest.raises(ModuleNotFoundError, match="no_such_module_anywhere"):
        load_inference(settings)


def test_the_default_is_the_trainers_loader(small_model_dir):
    settings = MonitorSettings(model_path=str(small_model_dir), device="cpu", inference_isolation="thread")
    inference = load_inference(settings)
    try:
        assert inference.version != "null-model"
        assert np.asarray(asyncio.run(inference.predict(["hi"]))[0]).shape == (1, len(inference.labels))
    finally:
        inference.close()
