"""Datasets: GoEmotions (TSV folder, the HF dataset id or its downloaded files), a user's CSV/JSONL, and taxonomies.

Every loader returns ``DatasetSplits``: three ``Split`` objects (texts + a 0/1 label matrix) over one label list.
Bad data fails fast with ``DataError`` naming the file, the line and the reason; nothing is silently dropped.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .settings import TrainerSettings
from .taxonomy import EKMAN, GOEMOTIONS_LABELS, SENTIMENT, TARGET_15

__all__ = [
    "DataError",
    "Split",
    "DatasetSplits",
    "HF_DATASET_ID",
    "download_hf_goemotions",
    "load_hf_goemotions",
    "load_hf_parquet_folder",
    "GOEMOTIONS_LABELS",
    "load_dataset_splits",
    "load_goemotions_tsv",
    "load_user_files",
    "taxonomy_mapping",
    "apply_taxonomy",
    "undersample_majority",
    "prepare_data",
]

HF_DATASET_ID = "google-research-datasets/go_emotions"


class DataError(ValueError):
    """A dataset file is unusable; the message names the file, the line and the reason."""

    def __init__(self, path: str | Path, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass
class Split:
    """One split: ``texts[i]`` carries the labels where ``labels[i] == 1`` (multi-label, may be all zero)."""

    texts: list[str]
    labels: np.ndarray  # uint8 [n, n_labels]
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray | list[int]) -> "Split":
        index = np.asarray(index, dtype=int)
        ids = [self.ids[i] for i in index] if self.ids else []
        return Split([self.texts[i] for i in index], self.labels[index], ids)


@dataclass
class DatasetSplits:
    labels: list[str]
    train: Split
    dev: Split
    test: Split
    source: str = ""
    groupings: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: int(c) for name, c in zip(self.labels, self.train.labels.sum(axis=0))}

    def limit_eval(self, limit: int | None) -> None:
        """Keep only the first ``limit`` dev and test rows (in place; None: all)."""
        if limit:
            self.dev = self.dev.subset(np.arange(min(limit, len(self.dev))))
            self.test = self.test.subset(np.arange(min(limit, len(self.test))))


# ------------------------------------------------------------------------------------------------- readers


def _read_label_names(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    if not names:
        raise DataError(path, None, "empty label list")
    for line_no, name in enumerate(names, start=1):
        if not name:
            raise DataError(path, line_no, "empty label name in the label list")
    return names


def _read_goemotions_tsv(path: Path, n_labels: int) -> Split:
    texts: list[str] = []
    rows: list[list[int]] = []
    ids: list[str] = []
    if not path.exists():
        raise DataError(path, None, "file not found")
    with path.open(encoding="utf-8", newline="") as handle:
        # Default quoting: ~2.5% of texts are CSV-quoted with "" escapes (see the data README).
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if len(row) != 3:
                raise DataError(path, line_no, f"wrong column count: expected 3 (text, label ids, id), got {len(row)}")
            text, label_field, comment_id = row
            if not text.strip():
                raise DataError(path, line_no, "empty text")
            try:
                label_ids = [int(x) for x in label_field.split(",")]
            except ValueError:
                raise DataError(path, line_no, f"label ids are not integers: {label_field!r}") from None
            bad = [i for i in label_ids if not 0 <= i < n_labels]
            if bad:
                raise DataError(path, line_no, f"unknown label id {bad[0]} (valid 0..{n_labels - 1})")
            texts.append(text)
            rows.append(label_ids)
            ids.append(comment_id)
    return Split(texts, _to_matrix(rows, n_labels), ids)


def _to_matrix(rows: list[list[int]], n_labels: int) -> np.ndarray:
    matrix = np.zeros((len(rows), n_labels), dtype=np.uint8)
    for i, label_ids in enumerate(rows):
        matrix[i, label_ids] = 1
    return matrix


def load_goemotions_tsv(folder: str | Path) -> DatasetSplits:
    """GoEmotions in its original layout: ``train/dev/test.tsv`` + ``emotions.txt`` (+ the mapping files)."""
    folder = Path(folder)
    labels_file = folder / "emotions.txt"
    if not labels_file.exists():
        raise DataError(labels_file, None, "file not found (GoEmotions label list)")
    labels = _read_label_names(labels_file)
    splits = {name: _read_goemotions_tsv(folder / f"{name}.tsv", len(labels)) for name in ("train", "dev", "test")}
    groupings = {"ekman": _read_mapping(folder / "ekman_mapping.json", EKMAN),
                 "sentiment": _read_mapping(folder / "sentiment_dict.json", SENTIMENT)}
    return DatasetSplits(labels, splits["train"], splits["dev"], splits["test"], str(folder), groupings)


def _read_mapping(path: Path, fallback: dict[str, list[str]]) -> dict[str, list[str]]:
    if not path.exists():
        return fallback
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
        raise DataError(path, None, "expected an object of group -> list of label names")
    return mapping


#: Where the Hub's GoEmotions repo keeps the parquet files of its ``simplified`` config (the rater-agreement splits
#: of train/dev/test.tsv): ``simplified/{train,validation,test}-NNNNN-of-NNNNN.parquet`` with columns ``text``,
#: ``labels`` (list of label ids) and ``id``; the label names are in the files' ``huggingface`` schema metadata.
HF_SIMPLIFIED_PATTERN = "simplified/*.parquet"
_HF_SPLITS = (("train", "train"), ("dev", "validation"), ("test", "test"))


def download_hf_goemotions(dataset_id: str = HF_DATASET_ID, revision: str | None = None) -> Path:
    """The local folder of the dataset's ``simplified`` parquet files, downloaded through ``huggingface_hub`` into its
    cache (reused afterwards, also offline). Unreachable Hub and nothing cached: a ``DataError`` saying what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(dataset_id, repo_type="dataset", revision=revision,
                                      allow_patterns=[HF_SIMPLIFIED_PATTERN]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        cause = exc.__cause__ or exc
        raise DataError(dataset_id, None, (
            f"could not download the dataset from the Hugging Face Hub ({type(cause).__name__}: "
            f"{str(cause).splitlines()[0] if str(cause) else 'no detail'}). Offline, get the files elsewhere and "
            f"point --data (EM_TRAIN_DATA) at a folder: either the Hub's files "
            f"(`hf download {dataset_id} --repo-type dataset --include '{HF_SIMPLIFIED_PATTERN}' --local-dir DIR`) "
            "or the GoEmotions TSV folder (train.tsv, dev.tsv, test.tsv, emotions.txt from "
            "github.com/google-research/google-research/tree/master/goemotions/data). Behind a proxy or mirror, set "
            "HF_ENDPOINT / HTTPS_PROXY; files downloaded once are reused from the Hugging Face cache.")) from exc


def _hf_label_names(path: Path) -> list[str] | None:
    """The ClassLabel names the ``datasets`` library stores in a parquet file's schema metadata, if any."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        names = features["labels"]["feature"]["names"]
    except (KeyError, TypeError, ValueError):
        return None
    return [str(name) for name in names] if isinstance(names, list) and names else None


def load_hf_parquet_folder(folder: str | Path, source: str | None = None) -> DatasetSplits:
    """GoEmotions as the Hub stores it: ``simplified/{train,validation,test}-*.parquet`` under ``folder``."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    files = {ours: sorted((folder / "simplified").glob(f"{theirs}-*.parquet")) for ours, theirs in _HF_SPLITS}
    for (ours, theirs) in _HF_SPLITS:
        if not files[ours]:
            raise DataError(folder / "simplified" / f"{theirs}-*.parquet", None, "file not found (the Hub layout "
                            f"of {HF_DATASET_ID}: simplified/train-*, validation-*, test-*.parquet)")
    labels = _hf_label_names(files["train"][0]) or list(GOEMOTIONS_LABELS)
    out = {}
    for ours, paths in files.items():
        texts, rows, ids = [], [], []
        for path in paths:
            table = pq.read_table(path)
            missing = {"text", "labels"} - set(table.column_names)
            if missing:
                raise DataError(path, None, f"missing column(s) {sorted(missing)} (have {table.column_names})")
            columns = table.to_pydict()
            for row, (text, label_ids) in enumerate(zip(columns["text"], columns["labels"]), start=1):
                if not text or not str(text).strip():
                    raise DataError(path, row, "empty text")
                bad = [i for i in (label_ids or []) if not isinstance(i, int) or not 0 <= i < len(labels)]
                if bad or not label_ids:
                    raise DataError(path, row, f"unknown label id {bad[0]!r} (valid 0..{len(labels) - 1})" if bad
                                    else "no label ids")
                texts.append(str(text))
                rows.append(list(label_ids))
            ids.extend(str(x) for x in columns.get("id", [""] * table.num_rows))
        out[ours] = Split(texts, _to_matrix(rows, len(labels)), ids)
    return DatasetSplits(labels, out["train"], out["dev"], out["test"], source or str(folder),
                         {"ekman": EKMAN, "sentiment": SENTIMENT})


def load_hf_goemotions(dataset_id: str = HF_DATASET_ID, revision: str | None = None) -> DatasetSplits:
    """The Hub dataset's ``simplified`` config (the same rows as the TSV splits), through ``huggingface_hub``."""
    return load_hf_parquet_folder(download_hf_goemotions(dataset_id, revision), source=dataset_id)


def _user_rows(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, text, label names) from a CSV (header: text, labels) or JSONL ({"text", "labels"}) file."""
    rows: list[tuple[int, str, list[str]]] = []
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["text", "labels"] or len(header) != 2:
                raise DataError(path, 1, f"expected the header 'text,labels', got {header!r}")
            for row in reader:
                line_no = reader.line_num
                if len(row) != 2:
                    raise DataError(path, line_no, f"wrong column count: expected 2 (text, labels), got {len(row)}")
                names = [n.strip() for n in row[1].replace(";", ",").split(",") if n.strip()]
                rows.append((line_no, row[0], names))
    else:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    raise DataError(path, line_no, "empty line")
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, line_no, f"invalid JSON: {exc.msg}") from None
                if not isinstance(record, dict) or "text" not in record or "labels" not in record:
                    raise DataError(path, line_no, "expected an object with 'text' and 'labels'")
                names = record["labels"]
                if isinstance(names, str):
                    names = [n.strip() for n in names.split(",") if n.strip()]
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise DataError(path, line_no, "'labels' must be a list of label names or a comma-separated string")
                rows.append((line_no, str(record["text"]) if record["text"] is not None else "", names))
    return rows


def load_user_files(folder: str | Path) -> DatasetSplits:
    """A user's own data: ``train``/``dev``/``test`` as ``.csv`` or ``.jsonl`` (+ optional ``labels.txt``).

    The label list is ``labels.txt`` when present, else the sorted label names seen in train; a label outside that
    list, an empty text or a wrong column count fails with the file and line.
    """
    folder = Path(folder)
    files = {}
    for name in ("train", "dev", "test"):
        found = [folder / f"{name}{ext}" for ext in (".csv", ".jsonl") if (folder / f"{name}{ext}").exists()]
        if not found:
            raise DataError(folder / f"{name}.csv", None, "file not found (need train/dev/test as .csv or .jsonl)")
        files[name] = found[0]
    raw = {name: _user_rows(path) for name, path in files.items()}
    if (folder / "labels.txt").exists():
        labels = _read_label_names(folder / "labels.txt")
    else:
        labels = sorted({n for _, _, names in raw["train"] for n in names})
    index = {name: i for i, name in enumerate(labels)}
    splits = {}
    for name, rows in raw.items():
        texts, matrix_rows = [], []
        for line_no, text, names in rows:
            if not text.strip():
                raise DataError(files[name], line_no, "empty text")
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DataError(files[name], line_no, f"unknown label {unknown[0]!r} (known: {', '.join(labels)})")
            texts.append(text)
            matrix_rows.append([index[n] for n in names])
        splits[name] = Split(texts, _to_matrix(matrix_rows, len(labels)))
    groupings = {}
    if set(labels) == set(GOEMOTIONS_LABELS):
        groupings = {"ekman": EKMAN, "sentiment": SENTIMENT}
    return DatasetSplits(labels, splits["train"], splits["dev"], splits["test"], str(folder), groupings)


# ------------------------------------------------------------------------------------------------- taxonomies


def taxonomy_mapping(taxonomy: str, labels: list[str], groupings: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """target label -> source labels it covers, for 'goemotions', 'ekman', 'sentiment', 'target15' or 'a,b,c'."""
    key = taxonomy.strip().lower()
    if key in ("goemotions", "all", "28"):
        return {name: [name] for name in labels}
    if key in ("ekman", "sentiment"):
        groups = groupings.get(key) or (EKMAN if key == "ekman" else SENTIMENT)
        mapping = {group: list(members) for group, members in groups.items()}
        if "neutral" in labels:
            mapping["neutral"] = ["neutral"]
        missing = sorted({m for ms in mapping.values() for m in ms} - set(labels))
        if missing:
            raise ValueError(f"taxonomy {taxonomy!r} needs labels the data lacks: {missing}")
        return mapping
    subset = TARGET_15 if key == "target15" else [n.strip() for n in taxonomy.split(",") if n.strip()]
    unknown = [n for n in subset if n not in labels]
    if unknown or not subset:
        raise ValueError(f"unknown taxonomy or label(s) {unknown or taxonomy!r}; known labels: {', '.join(labels)}")
    return {name: [name] for name in subset}


def apply_taxonomy(data: DatasetSplits, taxonomy: str) -> DatasetSplits:
    """Project the label matrices onto a taxonomy (a target label is on when any of its source labels is)."""
    mapping = taxonomy_mapping(taxonomy, data.labels, data.groupings)
    if list(mapping) == data.labels and all(v == [k] for k, v in mapping.items()):
        return data
    index = {name: i for i, name in enumerate(data.labels)}
    projector = np.zeros((len(data.labels), len(mapping)), dtype=np.uint8)
    for j, members in enumerate(mapping.values()):
        for member in members:
            projector[index[member], j] = 1

    def project(split: Split) -> Split:
        return Split(split.texts, ((split.labels @ projector) > 0).astype(np.uint8), split.ids)

    return DatasetSplits(list(mapping), project(data.train), project(data.dev), project(data.test),
                         data.source, data.groupings if taxonomy.strip().lower() == "goemotions" else {})


def load_dataset_splits(source: str, taxonomy: str = "goemotions") -> DatasetSplits:
    """Dispatch on ``source``: a GoEmotions TSV folder, a user CSV/JSONL folder, or the HF dataset id."""
    path = Path(source)
    if path.is_dir():
        if (path / "train.tsv").exists():
            data = load_goemotions_tsv(path)
        elif (path / "simplified").is_dir():
            data = load_hf_parquet_folder(path)  # the Hub's files, downloaded elsewhere
        else:
            data = load_user_files(path)
    elif source == HF_DATASET_ID:
        data = load_hf_goemotions(source)
    else:
        raise DataError(source, None, "not a folder with train/dev/test files, nor the HF dataset id " + HF_DATASET_ID)
    return apply_taxonomy(data, taxonomy)


# ------------------------------------------------------------------------------------------------- sampling


def undersample_majority(split: Split, labels: list[str], ratio: float, majority: str = "neutral",
                         seed: int = 0) -> tuple[Split, dict]:
    """Drop random rows whose *only* label is ``majority`` until its count <= ratio x the next largest label's.

    Rows that also carry another label are kept (they are minority evidence). Train split only.
    """
    if majority not in labels:
        raise ValueError(f"majority label {majority!r} is not in the taxonomy")
    j = labels.index(majority)
    counts = split.labels.sum(axis=0).astype(int)
    others = np.delete(counts, j)
    target = int(ratio * (others.max() if len(others) else 0))
    only_majority = np.flatnonzero((split.labels[:, j] == 1) & (split.labels.sum(axis=1) == 1))
    excess = max(0, int(counts[j]) - target)
    drop_n = min(excess, len(only_majority))
    rng = np.random.default_rng(seed)
    drop = rng.choice(only_majority, size=drop_n, replace=False) if drop_n else []
    keep = np.setdiff1d(np.arange(len(split)), drop)  # sorted: the kept rows stay in their order
    info = {"majority": majority, "ratio": ratio, "before": int(counts[j]), "target": target,
            "dropped_rows": drop_n, "rows_before": len(split), "rows_after": len(keep)}
    return split.subset(keep), info


def prepare_data(settings: TrainerSettings) -> tuple[DatasetSplits, dict]:
    """Load, project to the taxonomy, limit and undersample (train only). Returns (data, records for the config)."""
    data = load_dataset_splits(settings.data, settings.taxonomy)
    records: dict = {"data_source": data.source, "rows": {"train": len(data.train), "dev": len(data.dev),
                                                           "test": len(data.test)}}
    if settings.train_limit and settings.train_limit < len(data.train):
        order = np.random.default_rng(settings.seed).permutation(len(data.train))[: settings.train_limit]
        data.train = data.train.subset(np.sort(order))
    data.limit_eval(settings.eval_limit)
    if settings.undersample_ratio:
        data.train, info = undersample_majority(data.train, data.labels, settings.undersample_ratio,
                                                settings.majority_label, settings.seed)
        records["undersampling"] = info
    records["rows_used"] = {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)}
    return data, records
