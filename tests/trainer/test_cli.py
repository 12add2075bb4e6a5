"""The trainer's click commands through the product's entry point."""

from __future__ import annotations

import json

from click.testing import CliRunner

from emotion_monitor.cli import main


def test_train_help_lists_every_setting():
    from trainer.settings import TrainerSettings

    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for name in TrainerSettings.model_fields:
        assert "--" + name.replace("_", "-") in result.output


def test_invalid_setting_is_a_usage_error():
    result = CliRunner().invoke(main, ["train", "--lora-r", "zero"])
    assert result.exit_code == 2 and "lora_r" in result.output
    result = CliRunner().invoke(main, ["train", "--loss", "hinge"])
    assert result.exit_code == 2 and "loss" in result.output


def test_env_prefix(monkeypatch):
    from trainer.settings import TrainerSettings

    monkeypatch.setenv("EM_TRAIN_LORA_R", "8")
    monkeypatch.setenv("EM_TRAIN_UNDERSAMPLE_RATIO", "1.5")
    s = TrainerSettings()
    assert s.lora_r == 8 and s.undersample_ratio == 1.5
    assert all(f.description for f in TrainerSettings.model_fields.values())


def test_ablation_command_writes_table(goemotions_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TRAIN_DATA", str(goemotions_dir))
    monkeypatch.setenv("EM_TRAIN_MAX_LENGTH", "24")
    monkeypatch.setenv("EM_TRAIN_ISMOTE_TARGET", "1.0")  # 64 rows: grow every label to the median count
    monkeypatch.setenv("EM_TRAIN_STAGE2_EPOCHS", "3")
    monkeypatch.setenv("EM_TRAIN_BATCH_SIZE", "16")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["ablation", "--out", "res", "--train-limit", "64", "--steps", "2",
                                       "--eval-limit", "40", "--rows", "bce,+ISMOTE", "--threads", "2"])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "res" / "trainer_ablation.json").read_text())
    assert list(payload["rows"]) == ["bce", "+ISMOTE"]
    assert payload["rows"]["+ISMOTE"]["synthetic_rows"] > 0
    # the recorded budget is the one the rows ran with, not a hard-coded default
    assert payload["budget"]["batch_size"] == 16 and payload["budget"]["seed"] == 42
    assert "steps of batch 16" in payload["budget"]["description"]
    assert "| +ISMOTE |" in (tmp_path / "res" / "trainer_ablation.md").read_text()
    assert (tmp_path / "res" / "trainer_ablation.png").stat().st_size > 10_000


def test_evaluate_command(untrained_artifact, goemotions_dir, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--model", str(untrained_artifact), "--out", str(tmp_path / "ev"),
                                       "--data", str(goemotions_dir), "--eval-limit", "50", "--batch-size", "25"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert summary["test_macro_f1_tuned"] == round(report["test"]["macro_f1_tuned"], 4)
    assert report["test"]["n"] == 50 and len(report["test"]["per_label"]) == 28
    assert {"test_ekman", "test_sentiment"} <= set(report)
    assert (tmp_path / "ev" / "per_label_f1.png").exists() and "| neutral |" in (tmp_path / "ev" / "report.md").read_text()
