"""The documentation runs, and cites nothing outside the repository.

(a) Every ```python block of README.md and docs/*.md is executed, in order, one shared
    namespace per file, in a temporary working directory that holds `photo.png` (the
    packaged sample image) for README's API example. A block whose first line is
    `# not run` is skipped, and the skip is printed.
(b) No file tracked by git cites one of the project-external spec documents by name: the
    facts they held now live in docs/ (docs/architecture.md, docs/entropy.md, docs/golden.md,
    docs/weights.md, ...), and a citation must point there. Data paths such as
    ../shared/spec/golden/stf_golden.npz (used by tests that skip without it) are allowed.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
SAMPLE = REPO / "minstf" / "data" / "sample.png"

BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = "# not run"

# the external documents, by name; "docs/..." names are lower case and never match
EXTERNAL_DOCS = ("STF", "ENTROPY", "GOLDEN", "GOLDEN-CNN", "KEYS", "CNN", "PERFORMANCE", "STYLE")
CITATION = re.compile(r"(?<!docs/)(?<![\w-])(?:%s)\.md\b" % "|".join(
    re.escape(name) for name in sorted(EXTERNAL_DOCS, key=len, reverse=True)))


def python_blocks(path):
    """[(line number, code)] of the ```python blocks of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_docs_exist():
    names = {p.name for p in DOCS}
    for name in ("architecture.md", "entropy.md", "weights.md", "golden.md", "file-format.md",
                 "determinism.md"):
        assert name in names, f"docs/{name} is missing"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    shutil.copy(SAMPLE, tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"doc_{path.stem}"}
    for line, code in blocks:
        if code.lstrip().startswith(NOT_RUN):
            print(f"{path.name}:{line}: skipped ({NOT_RUN})")
            continue
        try:
            exec(compile(code, f"{path.relative_to(REPO)}:{line}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{path.relative_to(REPO)}, the python block at line {line} fails: "
                        f"{type(e).__name__}: {e}")


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_citations_of_external_documents():
    found = []
    for path in tracked_files():
        try:
            data = path.read_bytes()
        except OSError:
            continue  # deleted in the work tree
        if b"\0" in data[:8192]:
            continue  # binary
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            for m in CITATION.finditer(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {m.group(0)}: {line.strip()[:100]}")
    assert not found, (f"{len(found)} citations of documents outside the repository "
                       f"(cite docs/*.md instead):\n" + "\n".join(found))


def test_cited_repository_paths_exist():
    """README and docs/ name files of the project (minstf/reference/swin.py, tests/test_kernels.py, ...):
    each must exist, so that a move of a file cannot leave the docs pointing at nothing."""
    cited = re.compile(r"\b(?:minstf|tests|tools|lessons|docs)/[A-Za-z0-9_./-]*\.(?:py|md|sh|tsv|npz)\b")
    missing = [f"{doc.name}: {path}" for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
               for path in sorted(set(cited.findall(doc.read_text()))) if not (REPO / path).exists()]
    assert not missing, "cited files that do not exist: " + ", ".join(missing)
