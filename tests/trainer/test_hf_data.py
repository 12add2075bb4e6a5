"""GoEmotions from the Hugging Face Hub without the `datasets` package: the Hub's parquet layout
(``simplified/{train,validation,test}-*.parquet``) read from a local folder or the huggingface_hub cache, and a clear
message when the Hub is unreachable (it is, on the development machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.data import (GOEMOTIONS_LABELS, HF_DATASET_ID, DataError, load_dataset_splits, load_goemotions_tsv,
                          load_hf_goemotions)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _write_hub_layout(data, folder, shards=(2, 1, 1), label_names=True):
    """``data`` written as the Hub stores GoEmotions' simplified config, metadata as the `datasets` library writes it."""
    features = {"text": {"dtype": "string", "_type": "Value"},
                "labels": {"feature": {"names": list(GOEMOTIONS_LABELS), "_type": "ClassLabel"}, "_type": "Sequence"},
                "id": {"dtype": "string", "_type": "Value"}}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()} if label_names else None
    (folder / "simplified").mkdir(parents=True)
    for (theirs, split), n in zip((("train", data.train), ("validation", data.dev), ("test", data.test)), shards):
        for shard, index in enumerate(np.array_split(np.arange(len(split)), n)):
            table = pa.table({"text": [split.texts[i] for i in index],
                              "labels": [np.flatnonzero(split.labels[i]).tolist() for i in index],
                              "id": [split.ids[i] for i in index]},
                             schema=pa.schema([("text", pa.string()), ("labels", pa.list_(pa.int64())),
                                               ("id", pa.string())], metadata=metadata))
            pq.write_table(table, folder / "simplified" / f"{theirs}-{shard:05d}-of-{n:05d}.parquet")
    return folder


@pytest.fixture(scope="module")
def tsv(goemotions_dir):
    return load_goemotions_tsv(goemotions_dir)


@pytest.fixture(scope="module")
def hub_folder(tsv, tmp_path_factory):
    return _write_hub_layout(tsv, tmp_path_factory.mktemp("hub") / "go_emotions")


def test_hub_layout_folder_loads_the_same_rows_as_the_tsv_files(tsv, hub_folder):
    data = load_dataset_splits(str(hub_folder))
    assert data.labels == tsv.labels == GOEMOTIONS_LABELS
    for ours, theirs in ((data.train, tsv.train), (data.dev, tsv.dev), (data.test, tsv.test)):
        assert ours.texts == theirs.texts and ours.ids == theirs.ids  # shards read in order
        assert np.array_equal(ours.labels, theirs.labels)
    assert set(data.groupings) == {"ekman", "sentiment"}
    assert load_dataset_splits(str(hub_folder), "ekman").labels[-1] == "neutral"


def test_label_names_come_from_the_files_metadata(tsv, tmp_path):
    folder = _write_hub_layout(tsv, tmp_path / "hub", shards=(1, 1, 1))
    path = folder / "simplified" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"huggingface"])
    meta["info"]["features"]["labels"]["feature"]["names"] = [f"e{i}" for i in range(28)]
    pq.write_table(table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()}), path)
    assert load_dataset_splits(str(folder)).labels == [f"e{i}" for i in range(28)]


def test_bad_hub_files_name_the_file_and_row(tsv, tmp_path):
    folder = _write_hub_layout(tsv, tmp_path / "hub", shards=(1, 1, 1), label_names=False)
    path = folder / "simplified" / "validation-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["fine", "bad"], "labels": [[1], [28]], "id": ["a", "b"]}), path)
    with pytest.raises(DataError) as info:
        load_dataset_splits(str(folder))
    assert info.value.path == str(path) and info.value.line == 2 and "unknown label id 28" in str(info.value)
    (folder / "simplified" / "test-00000-of-00001.parquet").unlink()
    with pytest.raises(DataError, match=r"test-\*\.parquet: file not found"):
        load_dataset_splits(str(folder))


def _hub_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EM_TRAIN_"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "hf-cache"), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def test_hub_id_offline_says_what_to_do(tmp_path):
    """The Hub is unreachable here: `train --data <hub id>` stops with the reason and the two offline ways out."""
    result = subprocess.run([sys.executable, "-m", "emotion_monitor.cli", "train", "--data", HF_DATASET_ID,
                             "--output", str(tmp_path / "model"), "--quiet"],
                            cwd=tmp_path, env=_hub_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert f"{HF_DATASET_ID}: could not download the dataset from the Hugging Face Hub" in message
    assert f"hf download {HF_DATASET_ID} --repo-type dataset --include 'simplified/*.parquet' --local-dir DIR" in message
    assert "--data (EM_TRAIN_DATA)" in message and "train.tsv, dev.tsv, test.tsv, emotions.txt" in message
    assert not (tmp_path / "model").exists()


def test_hub_id_reads_files_downloaded_before_from_the_cache(tsv, tmp_path):
    """Once downloaded, the files are in huggingface_hub's cache and load offline (HF_HUB_OFFLINE=1)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / ("datasets--" + HF_DATASET_ID.replace("/", "--"))
    _write_hub_layout(tsv, repo / "snapshots" / commit, shards=(1, 1, 1))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = ("import json; from trainer.data import load_dataset_splits; d = load_dataset_splits("
            f"{HF_DATASET_ID!r}); print(json.dumps([d.source, len(d.train), len(d.dev), len(d.test), d.train.texts[0]]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_hub_env(tmp_path, HF_HUB_OFFLINE="1"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [HF_DATASET_ID, len(tsv.train), len(tsv.dev), len(tsv.test), tsv.train.texts[0]]


def test_loading_the_hub_id_in_process_raises_a_data_error_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(DataError, match="could not download the dataset from the Hugging Face Hub") as info:
        load_hf_goemotions()
    assert info.value.path == HF_DATASET_ID


def test_evaluate_with_unreachable_data_is_a_clear_error(untrained_artifact, tmp_path):
    from click.testing import CliRunner

    from emotion_monitor.cli import main

    result = CliRunner().invoke(main, ["evaluate", "--model", str(untrained_artifact), "--out", str(tmp_path / "ev"),
                                       "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 1, result.output  # a given --data that does not exist is not replaced by a default
    assert "not a folder with train/dev/test files" in result.output and "Traceback" not in result.output
