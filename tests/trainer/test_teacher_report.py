"""bench/teacher_report.py reads a run's speed from its training log: pauses and resumes must not count as training
time, or a teacher trained across sessions would report hours per epoch it never spent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "teacher_report.py"
_spec = importlib.util.spec_from_file_location("bench_teacher_report", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

LOG = """\
== 2026-11-28T06:00:00Z stage 1 start/resume
2026-11-28 06:00:10,000 trainer INFO resumed from /x.checkpoint at step 900/3126
2026-11-28 06:00:30,000 trainer INFO step 910/3126 loss 0.0841 lr 4.46e-04
2026-11-28 06:00:50,000 trainer INFO step 920/3126 loss 0.0907 lr 4.44e-04
2026-11-28 06:01:20,000 trainer INFO step 930/3126 loss 0.0805 lr 4.43e-04
2026-11-28 06:40:00,000 trainer INFO step 940/3126 loss 0.0826 lr 4.41e-04
== 2026-11-28T07:00:09Z stage 1 start/resume
2026-11-28 07:00:38,108 trainer INFO step 910/3126 loss 0.0841 lr 4.46e-04
2026-11-28 07:01:03,108 trainer INFO step 920/3126 loss 0.0907 lr 4.44e-04
"""


def test_seconds_per_step_leaves_out_pauses_and_restarts():
    """Stretch 1: 20 s and 30 s per 10 steps, then a 38-minute pause (SIGSTOP) that is left out; the resume marker
    starts a new stretch whose first line (a step count lower than the last) is no interval; then 25 s per 10."""
    rates = bench.seconds_per_step(LOG.splitlines(), max_gap=120)
    assert rates == pytest.approx([2.0, 3.0, 2.5])


def test_seconds_per_step_of_a_log_without_steps_is_empty():
    assert bench.seconds_per_step(["== start", "2026-11-28 06:00:10,000 trainer INFO resumed"], 120) == []


def test_report_of_a_stage2_teacher_keeps_its_stage1_figure(tmp_path, monkeypatch):
    """The shipped MPNet teacher is a stage-2 artifact (head re-trained on real embeddings): the report states both
    its figure and the stage-1 one it came from, and the stage-2 head's own training."""
    import json
    import sys

    split = {"macro_f1_at_0.5": 0.33591, "macro_f1_tuned": 0.53912, "micro_f1_at_0.5": 0.38, "micro_f1_tuned": 0.59741}
    (tmp_path / "metrics.json").write_text(json.dumps({"dev": split, "test": split,
                                                       "stage1_test": split | {"macro_f1_tuned": 0.52478}}))
    (tmp_path / "config.json").write_text(json.dumps({
        "base_model": "all-mpnet-base-v2", "lora_r": 16, "lora_target_modules": "q,k,v,o,dense", "pooling": "mean",
        "loss": "asl", "label_weights": "sqrt_inverse", "undersample_ratio": 1.0, "lr": 2e-4, "epochs": 2.0,
        "seed": 42, "batch_size": 32, "hardware": "cpu", "steps": 3126, "steps_per_epoch": 1563,
        "stage1_seconds": 9.0, "stage2": {"method": "none", "epochs": 30, "best_epoch": 29,
                                          "best_dev_macro_f1": 0.555523, "seconds": 16.5, "history": []}}))
    (tmp_path / "train.log").write_text(LOG)
    out = tmp_path / "report.json"
    monkeypatch.setattr(sys, "argv", ["teacher_report", "--run", str(tmp_path), "--log", str(tmp_path / "train.log"),
                                      "--out", str(out)])
    bench.main()
    report = json.loads(out.read_text())
    assert report["test"]["macro_f1_tuned"] == 0.5391 and report["stage1_test_macro_f1_tuned"] == 0.5248
    assert report["stage2"] == {"method": "none", "epochs": 30, "best_epoch": 29, "best_dev_macro_f1": 0.5555,
                                "seconds": 16.5}
    assert report["seconds_per_step_median"] == 2.5
