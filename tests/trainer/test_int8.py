"""int8 serving on CPU: the shipped model quantized by ``load_classifier(int8=True)`` stays close to fp32, and the
monitor serves it by default on CPU (``EM_MONITOR_CPU_PRECISION``) with the precision in its model version."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dev_texts(goemotions_dir):
    lines = (goemotions_dir / "dev.tsv").read_text(encoding="utf-8").splitlines()[:300]
    return [line.split("\t")[0] for line in lines]


def test_int8_backbone_is_quantized_and_agrees_with_fp32(dev_texts):
    from trainer import load_classifier

    fp32 = load_classifier(device="cpu")
    int8 = load_classifier(device="cpu", int8=True)
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    kinds = [type(m) for m in int8.model.backbone.modules()]
    assert kinds.count(DynamicInt8Linear) == 37  # 6 layers x (q, k, v, attention out, intermediate, output) + pooler
    assert torch.nn.Linear not in kinds
    assert type(int8.model.head).__name__ == "Linear" and int8.model.head.weight.dtype.is_floating_point

    a, b = fp32.predict_proba(dev_texts, 16), int8.predict_proba(dev_texts, 16)
    assert a.shape == b.shape == (len(dev_texts), len(fp32.labels))
    assert np.abs(a - b).mean() < 0.03
    agreement = ((a >= fp32.thresholds) == (b >= int8.thresholds)).mean()
    assert agreement > 0.98, agreement
    # activation scales are per call (per tensor), so a text's int8 scores move with the other texts of its call:
    # measured mean 0.013, ~1% of decisions (the documented price of int8; fp32 is the exact mode)
    alone, together = int8.predict_proba(dev_texts[:64], 1), int8.predict_proba(dev_texts[:64], 16)
    assert np.abs(alone - together).mean() < 0.03
    assert ((alone >= int8.thresholds) == (together >= int8.thresholds)).mean() > 0.97


def test_monitor_serves_int8_on_cpu_by_default_and_fp32_on_request():
    from monitor.inference import load_inference
    from monitor.settings import MonitorSettings

    default = load_inference(MonitorSettings(device="cpu"))
    exact = load_inference(MonitorSettings(device="cpu", cpu_precision="fp32"))
    try:
        assert default.precision == "int8" and default.version.endswith("+int8")
        assert exact.precision == "fp32" and "+" not in exact.version
        assert default.version.removesuffix("+int8") == exact.version
    finally:
        default.close()
        exact.close()
