"""The lessons run top to bottom as plain scripts, open as notebooks, and cite what exists.

Every `lessons/NN_*.py` is picked up automatically (`lessons/_lesson.py` is their shared
helper, not a lesson). Each one runs in a fresh Python process in fast mode
(`MINSTF_LESSONS_FAST=1`, smaller sizes; a lesson should take at most ~15 s there on two
cores), off-screen (`MPLBACKEND=Agg`), with its figures saved to a temporary folder
(`MINSTF_LESSONS_FIGURES`) so that drawing them is exercised too. A lesson passes when it exits
with status 0: its own asserts check it against the library.

Without running anything, the lessons are also checked for what they cite: every
`import minstf...` / `from minstf... import name` and every dotted `minstf.module.name` in
their text must exist in the package, every repository path they name (`minstf/...`,
`tests/...`, `docs/...`, with `::test_name` for a test) must exist in the checkout, and no
lesson may cite a specification file outside the repository.
"""
import ast
import importlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted(p for p in (REPO / "lessons").glob("*.py") if re.match(r"\d\d_", p.name))
TIMEOUT_S = 120
OUTSIDE_SPECS = tuple(f"{name}.md" for name in ("STF", "ENTROPY", "GOLDEN", "KEYS")) + ("spec/", "shared/")


def test_lessons_exist():
    assert len(LESSONS) >= 11, f"lessons missing in {REPO / 'lessons'}: {[p.name for p in LESSONS]}"


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_runs(path, tmp_path):
    env = dict(os.environ, MINSTF_LESSONS_FAST="1", MPLBACKEND="Agg",
               MINSTF_LESSONS_FIGURES=str(tmp_path / "figures"))
    # import the checkout's minstf even where it is not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-3000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s; last output:\n{tail}")
    seconds = time.perf_counter() - start
    assert run.returncode == 0, (f"{path.name} exited with {run.returncode} after {seconds:.1f} s\n"
                                 f"--- stdout (tail) ---\n{run.stdout[-3000:]}\n"
                                 f"--- stderr (tail) ---\n{run.stderr[-5000:]}")
    print(f"{path.name}: {seconds:.1f} s")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_is_a_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    text = path.read_text(encoding="utf-8")
    assert "# %%" in text, f"{path.name} is not a jupytext percent script (no '# %%' cells)"
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert "markdown" in kinds, f"{path.name} has no markdown cell"
    assert "code" in kinds, f"{path.name} has no code cell"


# --- what the lessons cite --------------------------------------------------------------------
def _resolve(dotted):
    """Import the longest module prefix of `minstf.a.b.c` and getattr the rest; None if it
    exists, else what is missing. A module that needs an optional package (torch) counts as
    existing when its file is there."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and not e.name.startswith("minstf"):  # an optional dependency is missing
                return None if importlib.util.find_spec(name) is not None else f"no module {name}"
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return f"{name} has no attribute {attr!r}" if obj.__name__ == name else f"{dotted}: no {attr!r}"
            obj = getattr(obj, attr)
        return None
    return f"no module {parts[0]}"


def _imports(tree):
    """Every (module, name or None) the lesson imports from minstf."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.split(".")[0] == "minstf")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minstf":
            yield from ((node.module, a.name) for a in node.names)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_imports_and_names_exist(path):
    text = path.read_text(encoding="utf-8")
    missing = []
    for module, name in _imports(ast.parse(text)):
        problem = _resolve(module if name is None else f"{module}.{name}")
        if problem:
            missing.append(f"import of {module}{'' if name is None else '.' + name}: {problem}")
    for dotted in sorted(set(re.findall(r"\bminstf(?:\.[A-Za-z_]\w*)+", text))):
        problem = _resolve(dotted)
        if problem:
            missing.append(f"{dotted}: {problem}")
    assert not missing, f"{path.name} uses names that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_cites_files_of_the_repository(path):
    text = path.read_text(encoding="utf-8")
    outside = [spec for spec in OUTSIDE_SPECS if spec in text]
    assert not outside, f"{path.name} cites files outside the repository: {outside} (cite docs/*.md)"
    missing = []
    for cited, test in re.findall(r"\b((?:minstf|tests|docs|lessons|tools|weights)/[\w/.-]*\w\.(?:py|md))"
                                  r"(?:::(\w+))?", text):
        file = REPO / cited
        if not file.is_file():
            missing.append(cited)
        elif test and not re.search(rf"^def {test}\(", file.read_text(encoding="utf-8"), re.M):
            missing.append(f"{cited}::{test}")
    assert not missing, f"{path.name} cites paths that do not exist: {missing}"
