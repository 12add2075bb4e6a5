"""Taxonomy mappings declared in TOML files (``trainer/label_maps/*.toml``), not in code.

A map file names its source taxonomy's labels and, per source label, the model (GoEmotions) labels a post carrying it
is a positive for::

    name = "plutchik8"
    labels = ["anger", "anticipation", ...]      # every label the source data may use
    [map]
    anger = ["anger"]                            # or a single string
    anticipation = []                            # no counterpart: ignored

``emotion-monitor calibrate --label-map`` and ``evaluate``-style scoring read them. Every error names the file and
line: a TOML syntax error, a model label the map targets that the model does not have ("unknown label"), a source
label without a ``[map]`` entry ("missing mapping"), and in data, a label the map's ``labels`` does not list.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DataError

__all__ = ["LABEL_MAP_DIR", "LabelMap", "load_label_map"]

LABEL_MAP_DIR = Path(__file__).resolve().parent / "label_maps"


@dataclass
class LabelMap:
    """Source label -> the model labels it counts as; ``targets`` are the model labels the source can speak for
    (the annotated labels, in model order)."""

    name: str
    path: Path
    source_labels: list[str]
    mapping: dict[str, list[str]]
    targets: list[str]

    def to_matrix(self, rows: list[list[str]], model_labels: list[str], where: list[tuple[str, int]] | None = None
                  ) -> np.ndarray:
        """0/1 ``[n, len(model_labels)]`` from source label names per row; a label outside ``source_labels``
        raises DataError naming the data file and line (``where[i]``) and this map file."""
        index = {name: j for j, name in enumerate(model_labels)}
        out = np.zeros((len(rows), len(model_labels)), dtype=np.uint8)
        for i, names in enumerate(rows):
            for name in names:
                if name not in self.mapping:
                    path, line = where[i] if where else ("<data>", i + 1)
                    raise DataError(path, line, f"label {name!r} has no mapping in {self.path} "
                                                f"(its labels: {', '.join(self.source_labels)})")
                for target in self.mapping[name]:
                    out[i, index[target]] = 1
        return out


def _line_of(text: str, pattern: str) -> int | None:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if re.match(pattern, line):
            return line_no
    return None


def _key_line(text: str, key: str, section: str | None = None) -> int | None:
    """The line that assigns ``key`` (inside ``[section]`` when given)."""
    lines = text.splitlines()
    inside = section is None
    for line_no, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            inside = section is not None and stripped == f"[{section}]"
            continue
        if inside and re.match(rf'^\s*"?{re.escape(key)}"?\s*=', line):
            return line_no
    return None


def resolve_label_map(spec: str | Path) -> Path:
    """A map file path, or the name of a bundled one (``plutchik8``, ``ekman6``)."""
    path = Path(spec)
    if path.exists():
        return path
    bundled = LABEL_MAP_DIR / f"{spec}.toml"
    if bundled.exists():
        return bundled
    known = ", ".join(sorted(p.stem for p in LABEL_MAP_DIR.glob("*.toml")))
    raise DataError(spec, None, f"label map not found (neither a file nor a bundled map: {known})")


def load_label_map(spec: str | Path, model_labels: list[str]) -> LabelMap:
    """Read and check a map file against the model's labels (see the module docstring for the errors)."""
    path = resolve_label_map(spec)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise DataError(path, int(match.group(1)) if match else None, f"invalid TOML: {exc}") from None
    source = data.get("labels")
    if not isinstance(source, list) or not source or not all(isinstance(x, str) and x for x in source):
        raise DataError(path, _key_line(text, "labels"), "'labels' must be a non-empty list of label names")
    mapping_raw = data.get("map")
    if not isinstance(mapping_raw, dict):
        raise DataError(path, _line_of(text, r"^\s*\[map\]"), "missing [map] table")
    known = set(model_labels)
    mapping: dict[str, list[str]] = {}
    for name, value in mapping_raw.items():
        line = _key_line(text, name, "map")
        if name not in source:
            raise DataError(path, line, f"[map] entry {name!r} is not in 'labels'")
        targets = [value] if isinstance(value, str) else value
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise DataError(path, line, f"mapping of {name!r} must be a label name or a list of names")
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise DataError(path, line, f"unknown label {unknown[0]!r} (mapping of {name!r}); the model's labels: "
                                        f"{', '.join(model_labels)}")
        mapping[name] = list(targets)
    missing = [name for name in source if name not in mapping]
    if missing:
        raise DataError(path, _key_line(text, "labels"), f"missing mapping for {missing[0]!r}: every label in "
                                                         f"'labels' needs a [map] entry ([] for none)")
    targets = [name for name in model_labels if any(name in t for t in mapping.values())]
    return LabelMap(str(data.get("name", path.stem)), path, list(source), mapping, targets)
