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
