"""The worker's default inference isolation: the model in one child process. Same scores as in-process, a child that
dies fails only the batch in hand and is replaced, and the child outlives neither a SIGTERM nor a kill -9 of the
worker (no orphaned model processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

from monitor.inference import InferenceProcessDied, load_inference
from monitor.settings import MonitorSettings

from tests.monitor.conftest import monitor_env, predicted, wait_until

pytestmark = pytest.mark.timeout(180)
TEXTS = ["I am so angry about this", "what a lovely day", "thanks a lot!", "meh"]


def test_child_process_scores_like_the_thread_and_survives_a_crash(small_model_dir):
    settings = MonitorSettings(model_path=str(small_model_dir), device="cpu", cpu_precision="fp32")
    child = load_inference(settings)
    local = load_inference(settings.model_copy(update={"inference_isolation": "thread"}))
    try:
        assert child.isolation == "process" and local.isolation == "thread"
        assert (child.labels, child.version, child.batch_size) == (local.labels, local.version, local.batch_size)
        assert np.allclose(predicted(child, TEXTS), predicted(local, TEXTS), atol=1e-5)
        (pid,) = child._executor._processes  # the one child
        assert pid != os.getpid()

        async def crash_then_recover():
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(InferenceProcessDied):
                await child.predict(TEXTS)
            return await child.predict(TEXTS)  # a new child loads the model and answers

        proba, seconds = asyncio.run(crash_then_recover())
        assert proba.shape == (len(TEXTS), len(child.labels)) and seconds > 0
        assert set(child._executor._processes) and pid not in child._executor._processes
    finally:
        child.close()
        local.close()


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
                members.append(int(entry))
    return members


# SIGTERM (the polite end, which the worker handles itself) is slow: CI runs it with -m slow; kill -9 stays default
@pytest.mark.parametrize("how", [pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGKILL])
def test_the_inference_child_never_outlives_the_worker(kafka_broker, redis_server, small_model_dir, start_worker,
                                                      how):
    port = __import__("emotion_monitor.servers", fromlist=["free_port"]).free_port()
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, small_model_dir, metrics_port=str(port)))

    def up() -> bool:
        import urllib.request

        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    wait_until(up, 90, what="worker up", worker=worker)
    sid = worker.process.pid  # the worker runs in its own session; its inference child joins it
    assert len(_session_members(sid)) >= 2, "expected the worker and its inference child"
    worker.signal(how)
    worker.wait(60)
    deadline = time.time() + 30
    while _session_members(sid) and time.time() < deadline:
        time.sleep(0.2)
    assert _session_members(sid) == []


def test_a_model_that_fails_to_load_in_the_child_raises_its_own_error(small_model_dir, tmp_path):
    """The child's load error reaches the worker as itself (e.g. the missing file), not as a bare BrokenProcessPool
    that hides the reason from the worker's log tail (which `up` shows)."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_model_dir, broken)
    (broken / "thresholds.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"thresholds\.json: missing"):
        load_inference(MonitorSettings(model_path=str(broken), device="cpu"))


def test_max_tokens_limits_the_model_in_the_child_and_on_a_thread(small_model_dir):
    """EM_MONITOR_MAX_TOKENS lowers the model's own limit wherever the model runs (one place sets it: ServedModel):
    two texts that differ only after the 8th token score the same at max_tokens=8, and differently at the default."""
    from trainer import load_classifier

    start = "I am so very happy with this today"
    texts = [start + " and it is lovely, wonderful, great" * 10, start + " but it is awful, angry, hateful" * 10]
    base = MonitorSettings(model_path=str(small_model_dir), device="cpu", cpu_precision="fp32")
    child = load_inference(base.model_copy(update={"max_tokens": 8}))
    full = load_inference(base.model_copy(update={"inference_isolation": "thread"}))
    given = load_classifier(small_model_dir, device="cpu")
    model_limit = given.max_length
    on_thread = load_inference(base.model_copy(update={"max_tokens": 8}), classifier=given)
    try:
        limited = predicted(child, texts)
        assert np.allclose(limited[0], limited[1], atol=1e-6)
        assert not np.allclose(*predicted(full, texts), atol=1e-3)
        assert given.max_length == 8 and np.allclose(predicted(on_thread, texts), limited, atol=1e-5)
        # a larger limit never raises the model's own (what it was trained with)
        wide = load_inference(base.model_copy(update={"max_tokens": 4096}), classifier=load_classifier(small_model_dir,
                                                                                                     device="cpu"))
        assert wide.served.classifier.max_length == model_limit
        wide.close()
    finally:
        child.close()
        full.close()
        on_thread.close()
