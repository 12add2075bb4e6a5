"""GPU path (``-m gpu``, on a CUDA machine): bf16 inference agrees with CPU, and a CUDA worker counts exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.monitor.conftest import create_topic, monitor_env, posts_total, predicted, produce, wait_until
from tests.monitor.posts_data import encode, make_posts, texts

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def test_cuda_inference_matches_cpu(cuda):
    from monitor.inference import load_inference
    from monitor.settings import MonitorSettings

    sample = texts(256)
    gpu = load_inference(MonitorSettings(device="cuda", max_batch=128))
    cpu = load_inference(MonitorSettings(device="cpu", cpu_precision="fp32", max_batch=128))
    assert gpu.batch_size == 128 and cpu.batch_size == 16  # auto: whole batch on GPU, sorted calls of 16 on CPU
    diff = np.abs(predicted(gpu, sample) - predicted(cpu, sample))
    assert diff.max() < 0.05, diff.max()  # bf16 autocast on GPU


def test_cuda_worker_counts_exactly(cuda, kafka_broker, redis_server, redis_client, start_worker):
    brands = ("acme", "globex", "initech")
    create_topic(kafka_broker, "posts", 3)
    produce(kafka_broker, "posts", encode(make_posts(300, brands)))
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, None, device="cuda", max_batch="128"))
    wait_until(lambda: sum(posts_total(redis_client, b) for b in brands) >= 300, 120, what="all posts", worker=worker)
    assert [posts_total(redis_client, b) for b in brands] == [100, 100, 100]


def test_cuda_worker_picks_the_mpnet_artifact_by_default(cuda, tmp_path, monkeypatch):
    """With the [mpnet] extra installed, an MPNet artifact in the package is what a CUDA worker loads when no
    model_path is set; the CPU keeps the MiniLM default. (An untrained MPNet artifact stands in when the trained one
    is not shipped yet.)"""
    from trainer import artifact
    from trainer.bases import MPNET_IDS, mpnet_available

    if not mpnet_available():
        pytest.skip("emotion-monitor[mpnet] not installed")
    from monitor.inference import load_inference
    from monitor.settings import MonitorSettings

    if not (artifact.MPNET_MODEL_DIR / "config.json").exists():
        stand_in = artifact.make_untrained_artifact(tmp_path / "mpnet_model", base_model="all-mpnet-base-v2")
        monkeypatch.setattr(artifact, "MPNET_MODEL_DIR", stand_in)
    gpu = load_inference(MonitorSettings(device="cuda", inference_isolation="thread", max_batch=64))
    cpu = load_inference(MonitorSettings(device="cpu", inference_isolation="thread", max_batch=64))
    try:
        expected = artifact.load_classifier(artifact.MPNET_MODEL_DIR, device="cuda")
        assert expected.config["base_model"] in MPNET_IDS
        assert gpu.version == expected.version and gpu.device == "cuda" and cpu.version != gpu.version
        proba = predicted(gpu, texts(64))
        assert proba.shape == (64, len(gpu.labels)) and np.isfinite(proba).all()
    finally:
        gpu.close()
        cpu.close()
