"""GPU path (``-m gpu``, on a CUDA machine): bf16 inference agrees with CPU, and a CUDA worker counts exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.monitor.conftest import create_topic, monitor_env, posts_total, produce, wait_until
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
    diff = np.abs(gpu.predict_blocking(sample) - cpu.predict_blocking(sample))
    assert diff.max() < 0.05, diff.max()  # bf16 autocast on GPU


def test_cuda_worker_counts_exactly(cuda, kafka_broker, redis_server, redis_client, start_worker):
    brands = ("acme", "globex", "initech")
    create_topic(kafka_broker, "posts", 3)
    produce(kafka_broker, "posts", encode(make_posts(300, brands)))
    worker = start_worker(monitor_env(kafka_broker, redis_server.url, None, device="cuda", max_batch="128"))
    wait_until(lambda: sum(posts_total(redis_client, b) for b in brands) >= 300, 120, what="all posts", worker=worker)
    assert [posts_total(redis_client, b) for b in brands] == [100, 100, 100]
