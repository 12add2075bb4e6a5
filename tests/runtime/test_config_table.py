"""docs/configuration.md is generated from the settings classes; it must match them."""

from __future__ import annotations

import pytest

from emotion_monitor import config_table


@pytest.fixture(autouse=True)
def _no_data_dir_override(monkeypatch):
    monkeypatch.delenv("EMOTION_MONITOR_DATA_DIR", raising=False)


def test_configuration_doc_is_up_to_date():
    assert config_table.DOC_PATH.exists(), "run: python -m emotion_monitor.config_table --write"
    assert config_table.DOC_PATH.read_text() == config_table.render_markdown(), (
        "docs/configuration.md is out of date: run python -m emotion_monitor.config_table --write"
    )


def test_readme_configuration_block_is_up_to_date():
    readme = config_table.README_PATH.read_text()
    assert readme == config_table.render_readme(readme), (
        "README.md's configuration block is out of date: run python -m emotion_monitor.config_table --write"
    )
    assert "| `EM_MONITOR_MAX_BATCH` |" in readme


def test_readme_without_markers_is_a_clear_error():
    with pytest.raises(ValueError, match="configuration markers"):
        config_table.render_readme("# no markers here\n")


def test_every_field_of_every_component_is_in_the_table():
    text = config_table.render_markdown()
    classes = config_table.settings_classes()
    assert {component for component, _, _ in classes} == {"trainer", "monitor", "dashboard", "runtime", "sources"}
    for _, _, cls in classes:
        prefix = cls.model_config["env_prefix"]
        assert prefix.startswith("EM_")
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description"
            assert f"| `{prefix}{name.upper()}` |" in text
    assert "<repo>" in text and "/root" not in text and "/work/" not in text  # defaults are machine independent


def test_check_mode_flags_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config_table, "DOC_PATH", tmp_path / "configuration.md")
    monkeypatch.setattr(config_table, "README_PATH", tmp_path / "README.md")
    (tmp_path / "configuration.md").write_text("stale\n")
    (tmp_path / "README.md").write_text(f"intro\n{config_table.README_START}\nstale\n{config_table.README_END}\noutro\n")
    assert config_table.main(["--check"]) == 1
    assert config_table.main(["--write"]) == 0
    assert config_table.main(["--check"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("intro\n") and readme.endswith("outro\n") and "stale" not in readme


def _render_in(home, tmp_path) -> str:
    """The table as a fresh process renders it with HOME=``home`` (settings read the home folder at import)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("EMOTION_MONITOR_DATA_DIR",) and not k.startswith("EM_")}
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-c", "from emotion_monitor import config_table; print(config_table.render_markdown(), end='')"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


@pytest.mark.parametrize("where", ["repo_parent", "repo_grandparent", "elsewhere"])
def test_rendering_does_not_depend_on_where_the_clone_sits(where, tmp_path):
    """A clone at ~/emotion-monitor (HOME = the repo's parent) rendered `<repo>/../.cache/...` for `~/.cache/...`."""
    home = {"repo_parent": config_table.REPO_ROOT.parent, "repo_grandparent": config_table.REPO_ROOT.parents[1],
            "elsewhere": tmp_path / "home"}[where]
    text = _render_in(home, tmp_path)
    assert "| `EM_UP_RUN_DIR` | `Path` | `~/.cache/emotion-monitor/run` |" in text
    assert text == config_table.render_markdown()  # as rendered here, and as docs/configuration.md holds


def test_machine_dependent_defaults_render_as_their_rule(monkeypatch):
    """EM_TRAIN_DATA's default is ../shared when present, else the HF id: the table shows that rule on any machine."""
    from trainer.settings import TrainerSettings

    rule = "`<repo>/../shared/data/goemotions if present, else google-research-datasets/go_emotions`"
    assert f"| `EM_TRAIN_DATA` | `str` | {rule} |" in config_table.render_markdown()
    monkeypatch.setattr(TrainerSettings.model_fields["data"], "default_factory", lambda: "/somewhere/else")
    assert f"| `EM_TRAIN_DATA` | `str` | {rule} |" in config_table.render_markdown()


def test_portable_replaces_whole_path_components_only(monkeypatch, tmp_path):
    monkeypatch.setattr(config_table, "REPO_ROOT", tmp_path / "home" / "emotion-monitor")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home")
    assert config_table._portable(f"{home}/.cache/x") == "~/.cache/x"
    assert config_table._portable(f"{home}/emotion-monitor/runs") == "<repo>/runs"
    assert config_table._portable(f"{home}2/data") == f"{home}2/data"
