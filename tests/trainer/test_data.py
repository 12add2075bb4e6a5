"""Data loading on the real shipped GoEmotions files, taxonomies, user files and bad-data errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.data import (DataError, GOEMOTIONS_LABELS, apply_taxonomy, load_dataset_splits, load_goemotions_tsv,
                          load_user_files, undersample_majority)


@pytest.fixture(scope="module")
def goemotions(goemotions_dir):
    return load_goemotions_tsv(goemotions_dir)


def test_real_files_row_counts_and_labels(goemotions_full_dir):
    goemotions = load_goemotions_tsv(goemotions_full_dir)
    assert (len(goemotions.train), len(goemotions.dev), len(goemotions.test)) == (43410, 5426, 5427)
    assert goemotions.labels == GOEMOTIONS_LABELS and len(goemotions.labels) == 28
    assert goemotions.train.labels.shape == (43410, 28)
    assert int(goemotions.train.labels[:, 27].sum()) == 14219  # neutral, per the data README
    per_row = np.bincount(goemotions.train.labels.sum(axis=1))
    assert per_row[1:6].tolist() == [36308, 6541, 532, 28, 1]
    assert len(set(goemotions.train.ids)) == 43410
    raw = (goemotions_full_dir / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith('"') for line in raw) == 1097  # CSV-quoted texts, per the data README


def test_csv_quoted_texts_are_unquoted(goemotions, goemotions_dir):
    raw = (goemotions_dir / "train.tsv").read_text(encoding="utf-8").splitlines()
    quoted = [i for i, line in enumerate(raw) if line.startswith('"')]
    assert len(quoted) >= 10  # 1,097 in the full train split (checked below), 23 in the shipped sample
    escaped = next(i for i in quoted if '""' in raw[i].split("\t")[0])
    text = goemotions.train.texts[escaped]
    assert '""' not in text and text != raw[escaped].split("\t")[0] and '"' in text


def test_taxonomies(goemotions):
    ekman = apply_taxonomy(goemotions, "ekman")
    assert ekman.labels == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    grief = goemotions.labels.index("grief")
    rows = np.flatnonzero(goemotions.train.labels[:, grief])
    assert ekman.train.labels[rows, ekman.labels.index("sadness")].all()
    sentiment = apply_taxonomy(goemotions, "sentiment")
    assert sentiment.labels == ["positive", "negative", "ambiguous", "neutral"]
    assert (sentiment.train.labels.sum(axis=1) >= 1).all()  # every GoEmotions row has some label
    target = apply_taxonomy(goemotions, "target15")
    assert len(target.labels) == 15 and "neutral" not in target.labels
    subset = apply_taxonomy(goemotions, "joy,anger")
    assert subset.labels == ["joy", "anger"]
    assert subset.train.labels[:, 0].sum() == goemotions.train.labels[:, goemotions.labels.index("joy")].sum()
    with pytest.raises(ValueError, match="joyy"):
        apply_taxonomy(goemotions, "joyy,anger")


def _copy_layout(src, dst, train_lines):
    dst.mkdir()
    for name in ("emotions.txt", "dev.tsv", "test.tsv"):
        (dst / name).write_bytes((src / name).read_bytes())
    (dst / "train.tsv").write_text("\n".join(train_lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("bad_line,reason", [
    ("only two\t27", "wrong column count"),
    ("hello\t28\tid9", "unknown label id 28"),
    ("   \t3\tid9", "empty text"),
    ("hello\tx\tid9", "not integers"),
])
def test_bad_tsv_names_file_line_and_reason(goemotions_dir, tmp_path, bad_line, reason):
    folder = tmp_path / "ge"
    _copy_layout(goemotions_dir, folder, ["fine text\t1\tid1", "another\t2,3\tid2", bad_line])
    with pytest.raises(DataError) as info:
        load_dataset_splits(str(folder))
    assert info.value.line == 3 and str(folder / "train.tsv") in str(info.value) and reason in str(info.value)


def test_missing_folder_fails_fast(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_dataset_splits(str(tmp_path / "nowhere"))


def test_user_csv_and_jsonl(tmp_path):
    folder = tmp_path / "support"
    folder.mkdir()
    (folder / "labels.txt").write_text("billing\nbug\npraise")
    (folder / "train.csv").write_text('text,labels\n"I was charged twice, help",billing\nApp crashes,bug\n'
                                      'Love it,"praise"\nCrash and refund please,"bug,billing"\n')
    (folder / "dev.jsonl").write_text(json.dumps({"text": "crash", "labels": ["bug"]}) + "\n")
    (folder / "test.jsonl").write_text(json.dumps({"text": "great", "labels": "praise"}) + "\n")
    data = load_user_files(folder)
    assert data.labels == ["billing", "bug", "praise"]
    assert data.train.texts[0] == "I was charged twice, help"
    assert data.train.labels[3].tolist() == [1, 1, 0]
    assert data.test.labels.tolist() == [[0, 0, 1]]
    (folder / "dev.jsonl").write_text(json.dumps({"text": "x", "labels": ["bug"]}) + "\n"
                                      + json.dumps({"text": "y", "labels": ["refunds"]}) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset_splits(str(folder))
    assert info.value.line == 2 and "unknown label 'refunds'" in str(info.value) and "dev.jsonl" in str(info.value)
    (folder / "dev.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r"dev.jsonl:1: invalid JSON"):
        load_user_files(folder)
    (folder / "dev.jsonl").write_text(json.dumps({"text": "x", "labels": ["bug"]}) + "\n")
    (folder / "train.csv").write_text("text,labels\nfine,bug\n,bug\n")
    with pytest.raises(DataError, match=r"train.csv:3: empty text"):
        load_user_files(folder)
    (folder / "train.csv").write_text("text,labels\nfine,bug,extra\n")
    with pytest.raises(DataError, match=r"train.csv:2: wrong column count"):
        load_user_files(folder)
    (folder / "train.csv").write_text("text,labels\nfine,bug\n")
    (folder / "labels.txt").write_text("billing\n\npraise\n")
    with pytest.raises(DataError, match=r"labels.txt:2: empty label name"):
        load_user_files(folder)


def test_undersampling_thins_only_pure_neutral_rows(goemotions):
    split, info = undersample_majority(goemotions.train, goemotions.labels, 1.0, "neutral", seed=1)
    neutral = goemotions.labels.index("neutral")
    counts = split.labels.sum(axis=0)
    assert counts[neutral] <= np.delete(counts, neutral).max()
    assert info["dropped_rows"] == len(goemotions.train) - len(split)
    # every non-neutral label keeps all its rows
    assert (np.delete(counts, neutral) == np.delete(goemotions.train.labels.sum(axis=0), neutral)).all()
    again, _ = undersample_majority(goemotions.train, goemotions.labels, 1.0, "neutral", seed=1)
    assert again.ids == split.ids
