"""``emotion-monitor classify``: JSONL or plain-text lines in, one JSON object per good line out.

Input: a line starting with ``{`` is a JSON object that must carry a non-empty string ``text`` (other fields such
as ``id`` are copied to the output); any other non-empty line is the text itself. A bad line (empty, invalid JSON,
no/empty ``text``) is reported on ``err`` as ``line N: reason`` and skipped; every other line is classified and
written, in input order. Output: ``{"line", "text", "labels", "scores", "model", ...copied fields}`` where
``labels`` are the labels at or above their tuned threshold (most probable first; possibly empty).
"""

from __future__ import annotations

import json
from typing import IO

import numpy as np

__all__ = ["parse_line", "classify_stream"]


def parse_line(line: str) -> tuple[dict | None, str | None]:
    """(record with 'text', None) for a good line, (None, reason) for a bad one."""
    stripped = line.strip()
    if not stripped:
        return None, "empty line"
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as exc:
            return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
        if not isinstance(record, dict):
            return None, "invalid JSON: not an object"
        text = record.get("text")
        if text is None:
            return None, "missing 'text' field"
        if not isinstance(text, str) or not text.strip():
            return None, "'text' must be a non-empty string"
        return record, None
    return {"text": line.rstrip("\r\n")}, None


def classify_stream(source: IO[str], sink: IO[str], model_path=None, batch_size: int = 64, top_k: int | None = None,
                    all_scores: bool = True, err: IO[str] | None = None, classifier=None) -> int:
    """Classify every good line of ``source`` into ``sink``; returns the number of bad lines reported on ``err``."""
    import sys

    from .artifact import load_classifier

    err = err or sys.stderr
    classifier = classifier or load_classifier(model_path)
    errors = 0
    pending: list[tuple[int, dict]] = []

    def flush() -> None:
        if not pending:
            return
        proba = classifier.predict_proba([r["text"] for _, r in pending], batch_size=batch_size)
        for (line_no, record), row in zip(pending, proba):
            order = np.argsort(-row)
            labels = [classifier.labels[j] for j in order if row[j] >= classifier.thresholds[j]]
            if top_k:
                labels = labels[:top_k]
            out = {k: v for k, v in record.items() if k not in ("labels", "scores")}
            out.update({"line": line_no, "labels": labels, "model": classifier.version})
            scores = {classifier.labels[j]: round(float(row[j]), 4) for j in order}
            out["scores"] = scores if all_scores else {name: scores[name] for name in labels}
            sink.write(json.dumps(out, ensure_ascii=False) + "\n")
        sink.flush()
        pending.clear()

    for line_no, line in enumerate(source, start=1):
        record, reason = parse_line(line)
        if reason:
            errors += 1
            err.write(f"line {line_no}: {reason}\n")
            err.flush()
            continue
        pending.append((line_no, record))
        if len(pending) >= batch_size:
            flush()
    flush()
    return errors
