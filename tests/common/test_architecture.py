"""The layering promises of CONTRIBUTING.md, enforced: each fails as soon as a change breaks one.

* a package imports only the packages below it (trainer < monitor < dashboard < emotion_monitor) and no module or
  subpackage takes part in an import cycle — import-linter's contracts in ``pyproject.toml`` (``[tool.importlinter]``),
  checked on grimp's import graph, which counts imports inside functions too (the usual way to hide a cycle);
* no product module or document cites a file outside the repository (a clone has no ``../shared``): the facts the
  code relies on live in ``docs/``, and every ``docs/*.md`` a module or document names exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ["trainer", "monitor", "dashboard", "emotion_monitor"]  # bottom to top


def test_import_contracts_hold():
    """``lint-imports`` on the repository's own contracts: layers downward only, no cycles."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def test_contracts_cover_every_package_in_order():
    """A new top-level package must get a place in the layers, or it would escape the check."""
    config = PYPROJECT["tool"]["importlinter"]
    shipped = sorted(name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    assert sorted(config["root_packages"]) == shipped == sorted(PACKAGES)
    contracts = {contract["type"]: contract for contract in config["contracts"]}
    assert contracts["layers"]["layers"] == PACKAGES[::-1]  # import-linter lists the highest layer first
    assert sorted(contracts["acyclic_siblings"]["ancestors"]) == sorted(PACKAGES)
    assert not any(contract.get("ignore_imports") for contract in config["contracts"])


def test_the_graph_counts_imports_inside_functions():
    """The contracts would be blind to the cycles this project used to hide in function bodies if grimp skipped
    them: ``up`` reads the component settings only inside a method."""
    graph = grimp.build_graph(*PACKAGES)
    details = graph.get_import_details(importer="emotion_monitor.up", imported="emotion_monitor.components")
    source = (ROOT / "emotion_monitor" / "up.py").read_text().splitlines()
    assert details and all(source[d["line_number"] - 1].startswith((" ", "\t")) for d in details)


# Notes kept beside the clone (``../shared/notes/platform.md``, once cited as "the platform notes"), which a user's
# clone does not have; the repository's own account is docs/platform.md.
OUTSIDE_NOTES = re.compile(r"shared/notes|\bplatform notes\b", re.IGNORECASE)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+)")  # a relative link resolves from the document's folder
BARE_DOC_PATH = re.compile(r"(?<![\w(])((?:\.\./)+[\w./-]*\.md)\b")  # prose paths are relative to the repository
DOC_CITATION = re.compile(r"(?<![\w/.])docs/([\w.-]+\.md)")


def _product_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "pyproject.toml", *sorted((ROOT / "docs").glob("*.md"))]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return [path for path in files if path.exists()]


def _outside_citations(path: Path, line: str) -> list[str]:
    found = OUTSIDE_NOTES.findall(line)
    for target in MARKDOWN_LINK.findall(line):
        if "://" not in target and not target.startswith("mailto:") \
                and not (path.parent / target).resolve().is_relative_to(ROOT):
            found.append(target)
    found += [target for target in BARE_DOC_PATH.findall(line) if not (ROOT / target).resolve().is_relative_to(ROOT)
              and f"]({target}" not in line]
    return found


def test_nothing_cites_a_file_outside_the_repository():
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in _product_files()
                 for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                 if _outside_citations(path, line)]
    assert not offenders, "cite docs/platform.md (in the repository) instead:\n" + "\n".join(offenders)


def test_the_citation_check_sees_what_it_must():
    """The two checks above pass on the repository; here they catch what they exist for."""
    module, guide = ROOT / "monitor" / "app.py", ROOT / "docs" / "runtime.md"
    assert _outside_citations(module, "# why: see ../shared/notes/platform.md")
    assert _outside_citations(module, "# join the group in seconds rather than minutes (platform notes)")
    assert _outside_citations(module, "# see ../../notes/quirks.md")
    assert _outside_citations(guide, "[notes](../../shared/platform.md)")
    assert not _outside_citations(guide, "[`deploy/GUIDE.md`](../deploy/GUIDE.md)")
    assert not _outside_citations(module, "# why: docs/platform.md, section Faust")
    assert DOC_CITATION.findall("see docs/platform.md and docs/missing-page.md") == ["platform.md", "missing-page.md"]


def test_every_cited_doc_exists():
    missing = sorted({f"{path.relative_to(ROOT)} cites docs/{name}"
                      for path in _product_files()
                      for name in DOC_CITATION.findall(path.read_text(errors="replace"))
                      if not (ROOT / "docs" / name).exists()})
    assert not missing, "\n".join(missing)
