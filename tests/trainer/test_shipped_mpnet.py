"""The shipped MPNet artifact (issue 14's teacher, the CUDA default) keeps its promised quality: measured here on the
full GoEmotions test split at the thresholds it ships with, on the real base from the ``[mpnet]`` extra, its macro-F1
matches its own metrics.json, and the artifact is the one a CUDA machine picks by default (slow: ~10k texts through a
110M-parameter encoder on CPU). CI installs the extra before the slow suite; elsewhere the test is skipped without it,
but never in CI."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from emotion_monitor.cli import main
from trainer import artifact
from trainer.bases import MPNET_IDS, mpnet_available

TOLERANCE = 0.005  # CPU kernels and library versions move the figure in the 3rd-4th decimal
FLOOR = 0.52  # the teacher this test was written for, with margin; below it, it would teach the student little


def _need_the_extra():
    if not mpnet_available():
        if os.environ.get("CI"):
            pytest.fail("CI installs emotion-monitor[mpnet] before the slow suite; it is missing")
        pytest.skip("emotion-monitor[mpnet] not installed")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_shipped_mpnet_artifact_test_macro_f1_matches_its_metrics(goemotions_dir, tmp_path):
    _need_the_extra()
    folder = artifact.MPNET_MODEL_DIR
    shipped = json.loads((folder / "metrics.json").read_text())["test"]
    config = json.loads((folder / "config.json").read_text())
    assert config["base_model"] in MPNET_IDS
    result = CliRunner().invoke(main, ["evaluate", "--model", str(folder), "--data", str(goemotions_dir),
                                       "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["thresholds_source"] == "artifact" and report["test"]["n"] == shipped["n"] == 5427
    measured = report["test"]["macro_f1_tuned"]
    assert measured == pytest.approx(shipped["macro_f1_tuned"], abs=TOLERANCE)
    assert measured >= FLOOR


def test_the_mpnet_artifact_is_shipped_and_is_the_cuda_default_when_installed(monkeypatch):
    """Issue 14's "ship both": the artifact is in the package (adapter + head + tokenizer, no base weights), and with
    the extra installed a CUDA machine serves it while the CPU keeps the MiniLM default."""
    import torch

    from trainer import bases

    folder = artifact.MPNET_MODEL_DIR
    for name in ("config.json", "labels.json", "thresholds.json", "head.safetensors", "metrics.json", "README.md",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (folder / name).is_file(), name
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 20_000_000  # never a copy of the base
    assert json.loads((folder / "labels.json").read_text()) == json.loads(
        (artifact.DEFAULT_MODEL_DIR / "labels.json").read_text())
    monkeypatch.setattr(bases, "mpnet_available", lambda: True)
    assert artifact.default_model_dir(torch.device("cuda")) == folder
    assert artifact.default_model_dir(torch.device("cpu")) == artifact.DEFAULT_MODEL_DIR
