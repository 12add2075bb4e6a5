"""`emotion-monitor classify`: JSONL or plain lines in, JSONL out; bad lines reported with their number."""

from __future__ import annotations

import io
import json

from click.testing import CliRunner

from emotion_monitor.cli import main
from trainer.classify import classify_stream, parse_line

INPUT = "\n".join([
    json.dumps({"id": "a1", "text": "I love this phone"}),
    "",
    "{not json",
    json.dumps({"id": "a2", "body": "no text field"}),
    "plain line about a terrible update",
    json.dumps({"text": ""}),
    json.dumps({"id": "a3", "text": "thank you!"}),
]) + "\n"


def test_cli_reports_bad_lines_and_continues(untrained_artifact):
    result = CliRunner().invoke(main, ["classify", "--model", str(untrained_artifact), "--batch-size", "2"],
                                input=INPUT)
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 5, 7]
    assert [o.get("id") for o in out] == ["a1", None, "a3"]
    assert out[1]["text"] == "plain line about a terrible update"
    for o in out:
        assert len(o["scores"]) == 28 and all(0 < v < 1 for v in o["scores"].values())
        assert o["model"].startswith("untrained-test-model-")
        # labels = those at/above the 0.5 thresholds, most probable first
        assert o["labels"] == [k for k, v in sorted(o["scores"].items(), key=lambda kv: -kv[1]) if v >= 0.5]
    err = result.stderr
    assert "line 2: empty line" in err and "line 3: invalid JSON" in err
    assert "line 4: missing 'text' field" in err and "line 6: 'text' must be a non-empty string" in err
    assert "4 line(s) skipped" in err


def test_classify_file_argument(untrained_artifact, untrained_classifier, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("first\nsecond\n")
    # what the model says in-process: every label at/above its threshold, most probable first
    proba = untrained_classifier.predict_proba(["first", "second"])
    above = [[untrained_classifier.labels[j] for j in (-row).argsort() if row[j] >= untrained_classifier.thresholds[j]]
             for row in proba]
    assert all(len(labels) >= 2 for labels in above)  # so --top-k 1 really has something to cut
    result = CliRunner().invoke(main, ["classify", "--model", str(untrained_artifact), "--no-all-scores",
                                       "--top-k", "1", str(path)])
    assert result.exit_code == 0
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["text"] for o in out] == ["first", "second"]
    assert [o["labels"] for o in out] == [labels[:1] for labels in above]
    for o, row in zip(out, proba):  # --no-all-scores: only the returned label's score
        name = o["labels"][0]
        assert o["scores"] == {name: round(float(row[untrained_classifier.labels.index(name)]), 4)}


def test_parse_line_and_stream(untrained_classifier):
    assert parse_line("  \n") == (None, "empty line")
    assert parse_line('["x"]')[0] == {"text": '["x"]'}  # only objects are JSON records
    sink, err = io.StringIO(), io.StringIO()
    assert classify_stream(io.StringIO("ok\n{bad\nfine\n"), sink, classifier=untrained_classifier, err=err) == 1
    assert len(sink.getvalue().splitlines()) == 2 and err.getvalue().startswith("line 2: invalid JSON")
