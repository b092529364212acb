"""The lessons run top to bottom as plain scripts and open as notebooks.

Every `lessons/*.py` is picked up automatically. Each one runs in a fresh Python process in
fast mode (`MINSTF_LESSONS_FAST=1`, smaller sizes; a lesson should take at most ~30 s there),
off-screen (`MPLBACKEND=Agg`), with its figures saved to a temporary folder
(`MINSTF_LESSONS_FIGURES`) so that drawing them is exercised too. A lesson passes when it exits
with status 0: its own asserts check it against the library.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted((REPO / "lessons").glob("*.py"))
TIMEOUT_S = 120


def test_lessons_exist():
    assert LESSONS, f"no lessons found in {REPO / 'lessons'}"


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
