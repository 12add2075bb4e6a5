"""The test suite's data policy: the full GoEmotions when present; off CI, the shipped sample when it is absent and
full-data-only tests skip; on CI (``CI=true``) an absent full copy fails instead of testing on less."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

FULL_ONLY = "tests/runtime/test_demo.py::test_corpus_reads_test_split_and_its_anger_subset"
EITHER = "tests/trainer/test_data.py::test_taxonomies"


def _pytest(node: str, data_dir, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "EMOTION_MONITOR_DATA_DIR")}
    env["EMOTION_MONITOR_DATA_DIR"] = str(data_dir)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", node],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_absent_full_data_off_ci_uses_the_sample_and_skips_full_only_tests(tmp_path):
    either, full_only = _pytest(EITHER, tmp_path / "absent", ci=False), _pytest(FULL_ONLY, tmp_path / "absent", ci=False)
    assert either.returncode == 0 and "1 passed" in either.stdout, either.stdout
    assert full_only.returncode == 0 and "1 skipped" in full_only.stdout and "CI runs it" in full_only.stdout


def test_absent_full_data_on_ci_fails(tmp_path):
    for node in (EITHER, FULL_ONLY):
        result = _pytest(node, tmp_path / "absent", ci=True)
        assert result.returncode != 0 and "never falls back to the shipped sample" in result.stdout, result.stdout


def test_present_full_data_runs_the_full_only_tests(goemotions_full_dir):
    result = _pytest(FULL_ONLY, goemotions_full_dir, ci=True)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout
