"""Taxonomy maps are files (trainer/label_maps/*.toml): the bundled ones load, and every error names the file and
the line -- a model label the map does not know, a source label without a mapping, a TOML syntax error, and a data
line using a label the map does not list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.calibrate import read_labelled
from trainer.data import DataError
from trainer.label_map import load_label_map
from trainer.taxonomy import GOEMOTIONS_LABELS

GOOD = """# a comment
name = "mini"
labels = ["rage", "glee", "trust"]

[map]
rage = ["anger"]
glee = "joy"
trust = []
"""


def test_bundled_maps_load():
    plutchik = load_label_map("plutchik8", GOEMOTIONS_LABELS)
    assert plutchik.targets == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert plutchik.mapping["trust"] == [] and plutchik.mapping["anger"] == ["anger"]
    assert load_label_map("ekman6", GOEMOTIONS_LABELS).targets[-1] == "neutral"


def test_a_map_turns_source_labels_into_model_labels(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text(GOOD)
    lmap = load_label_map(path, GOEMOTIONS_LABELS)
    y = lmap.to_matrix([["rage", "trust"], ["glee"], []], GOEMOTIONS_LABELS)
    anger, joy = GOEMOTIONS_LABELS.index("anger"), GOEMOTIONS_LABELS.index("joy")
    assert y.sum() == 2 and y[0, anger] == 1 and y[1, joy] == 1 and lmap.targets == ["anger", "joy"]


@pytest.mark.parametrize("text, line, message", [
    (GOOD.replace('glee = "joy"', 'glee = "happiness"'), 7, "unknown label 'happiness'"),
    (GOOD.replace("trust = []\n", ""), 3, "missing mapping for 'trust'"),
    (GOOD.replace('rage = ["anger"]', 'rage = ["anger"'), 7, "invalid TOML"),
    (GOOD + 'fury = ["anger"]\n', 9, "'fury' is not in 'labels'"),
])
def test_map_errors_name_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_label_map(path, GOEMOTIONS_LABELS)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_a_data_label_without_mapping_fails_naming_the_data_line_and_the_map(tmp_path):
    data = tmp_path / "posts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [{"text": "grr", "labels": ["rage"]},
                                                       {"text": "yay", "labels": "glee, trust"},
                                                       {"text": "hmm", "labels": ["awe"]}]) + "\n")
    path = tmp_path / "mini.toml"
    path.write_text(GOOD)
    with pytest.raises(DataError, match=r"posts\.jsonl:3: label 'awe' has no mapping in .*mini\.toml"):
        read_labelled(data, GOEMOTIONS_LABELS, load_label_map(path, GOEMOTIONS_LABELS))
    with pytest.raises(DataError, match=r"posts\.jsonl:1: unknown label 'rage'"):
        read_labelled(data, GOEMOTIONS_LABELS)  # no map: the names must be the model's
    data.write_text(data.read_text().rsplit("\n", 2)[0] + "\n")
    texts, y, annotated = read_labelled(data, GOEMOTIONS_LABELS, load_label_map(path, GOEMOTIONS_LABELS))
    assert texts == ["grr", "yay"] and annotated == ["anger", "joy"] and y.sum() == 2
    assert np.flatnonzero(y[1]).tolist() == [GOEMOTIONS_LABELS.index("joy")]
