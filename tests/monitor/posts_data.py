"""Deterministic test posts drawn from GoEmotions dev texts (read in place: the full data or the shipped sample)."""

from __future__ import annotations

import json

from tests.conftest import goemotions_data_dir


def texts(n: int, offset: int = 0) -> list[str]:
    # the full data's dev.tsv when present, else the shipped sample's (700 rows); on CI the full data must be there
    lines = (goemotions_data_dir() / "dev.tsv").read_text(encoding="utf-8").splitlines()[offset:offset + n]
    if len(lines) < n:
        raise ValueError(f"asked for {n} texts from offset {offset}, dev.tsv has only {offset + len(lines)} rows")
    return [line.split("\t")[0] for line in lines]


def make_posts(n: int, brands=("acme", "globex", "initech"), base_ms: int = 1_795_654_800_000, step_ms: int = 1000,
               prefix: str = "p") -> list[dict]:
    """``n`` posts cycling over ``brands``, ``created_at`` one ``step_ms`` apart from ``base_ms``."""
    return [
        {"id": f"{prefix}{i}", "brand": brands[i % len(brands)], "text": text, "created_at": base_ms + i * step_ms}
        for i, text in enumerate(texts(n))
    ]


def encode(posts: list[dict]) -> list[bytes]:
    return [json.dumps(p).encode() for p in posts]
