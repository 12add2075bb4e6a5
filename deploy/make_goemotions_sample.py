"""Make the small GoEmotions sample shipped inside the package (``emotion_monitor/data/goemotions_sample/``).

A fresh clone has no full GoEmotions copy beside it, yet ``emotion-monitor up`` needs texts for its demo source and
the default test suite needs a few hundred labelled rows. This script draws a fixed random subset of each split,
in the original file layout (raw lines copied byte for byte, original order kept), so every loader reads the sample
exactly as it reads the full folder:

    python deploy/make_goemotions_sample.py --source /path/to/goemotions     # rewrites the sample folder

The draw is seeded (``--seed``, recorded in the sample's README together with the sha256 of each source file), so
rerunning it on the same source files gives the same bytes. Rows are drawn uniformly, so the label proportions (and
the share of anger-labelled texts the demo's spike uses) stay those of the full splits; the train sample is then
topped up so that every emotion has at least ``--min-per-label`` rows there.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "emotion_monitor" / "data" / "goemotions_sample"
ROWS = {"train": 1000, "dev": 700, "test": 1800}
SEED = 20261127
COPIED = ("emotions.txt", "ekman_mapping.json", "sentiment_dict.json")

LICENSE = """\
GoEmotions sample - license and attribution
==========================================

The files train.tsv, dev.tsv, test.tsv, emotions.txt, ekman_mapping.json and sentiment_dict.json in this folder are
a small unmodified subset (whole rows, byte for byte) of GoEmotions:

  Dorottya Demszky, Dana Movshovitz-Attias, Jeongwoo Ko, Alan Cowen, Gaurav Nemade and Sujith Ravi.
  "GoEmotions: A Dataset of Fine-Grained Emotions." Proceedings of ACL 2020. https://arxiv.org/abs/2005.00547
  Data: https://github.com/google-research/google-research/tree/master/goemotions
        https://huggingface.co/datasets/google-research-datasets/go_emotions

GoEmotions is published by Google Research in the google-research repository, which is licensed under the
Apache License, Version 2.0; the dataset card on the Hugging Face Hub declares apache-2.0 as well. It is
redistributed here under those terms: http://www.apache.org/licenses/LICENSE-2.0
The comment texts come from Reddit; names are masked as [NAME] and religions as [RELIGION] by the dataset's authors.
Changes: only a seeded random selection of rows (see README.md in this folder); no row was edited.
"""


def _rows(path: Path) -> list[tuple[str, list[int]]]:
    """(raw line, label ids) per row; the line is kept as written (CSV-quoted texts stay quoted)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = []
    for line in lines:
        fields = next(csv.reader(io.StringIO(line), delimiter="\t"))
        if len(fields) != 3:
            raise SystemExit(f"{path}: a row has {len(fields)} fields, expected 3: {line[:80]!r}")
        rows.append((line if line.endswith("\n") else line + "\n", [int(x) for x in fields[1].split(",")]))
    return rows


def draw(rows: list[tuple[str, list[int]]], n: int, rng: random.Random, n_labels: int, min_per_label: int) -> list[int]:
    """Indices of ``n`` uniformly drawn rows, topped up to ``min_per_label`` rows per label, in file order."""
    chosen = set(rng.sample(range(len(rows)), min(n, len(rows))))
    for label in range(n_labels):
        have = sum(1 for i in chosen if label in rows[i][1])
        others = [i for i, (_, labels) in enumerate(rows) if label in labels and i not in chosen]
        chosen.update(rng.sample(others, min(max(0, min_per_label - have), len(others))))
    return sorted(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "goemotions",
                        help="full GoEmotions folder (train/dev/test.tsv, emotions.txt, the mapping files)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--min-per-label", type=int, default=5, help="fewest rows per emotion in the train sample")
    args = parser.parse_args(argv)

    n_labels = len((args.source / "emotions.txt").read_text(encoding="utf-8").split())
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    table = []
    for split, n in ROWS.items():
        source = args.source / f"{split}.tsv"
        rows = _rows(source)
        index = draw(rows, n, rng, n_labels, args.min_per_label if split == "train" else 0)
        (args.out / f"{split}.tsv").write_text("".join(rows[i][0] for i in index), encoding="utf-8")
        table.append((f"{split}.tsv", len(index), len(rows), hashlib.sha256(source.read_bytes()).hexdigest()))
    for name in COPIED:
        shutil.copyfile(args.source / name, args.out / name)
        table.append((name, None, None, hashlib.sha256((args.source / name).read_bytes()).hexdigest()))
    (args.out / "LICENSE").write_text(LICENSE, encoding="utf-8")
    readme = [
        "# GoEmotions sample (shipped with emotion-monitor)",
        "",
        "A seeded random subset of GoEmotions in its original layout, so that `emotion-monitor up` (the demo source",
        "replays `test.tsv`) and the default test suite work on a fresh clone with nothing beside it. Training and the",
        "full-data tests use the complete dataset (`EM_TRAIN_DATA`, or the HF dataset id). License and attribution:",
        "`LICENSE` in this folder (Apache-2.0, Demszky et al., ACL 2020).",
        "",
        f"Made by `python deploy/make_goemotions_sample.py --seed {args.seed} --min-per-label {args.min_per_label}`:",
        "each split is a uniform draw without replacement (original order kept, lines copied byte for byte), the train",
        "split topped up to the minimum rows per emotion.",
        "",
        "| file | rows kept | rows in the full split | sha256 of the full source file |",
        "| --- | ---: | ---: | --- |",
        *(f"| {name} | {kept if kept is not None else 'copied'} | {total if total is not None else ''} | {digest} |"
          for name, kept, total, digest in table),
        "",
    ]
    (args.out / "README.md").write_text("\n".join(readme), encoding="utf-8")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out}: " + ", ".join(f"{name} {kept}" for name, kept, _, _ in table if kept is not None)
          + f"; {size / 1024:.0f} KiB in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
