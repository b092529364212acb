"""What every lesson shares: fast mode, the sample photo, figures, source listings, differences.

Each lesson starts with `import _lesson as lesson`. Python finds this file because a script's own
folder is first on `sys.path` (`python lessons/03_window_attention.py` from the repository
root, or `python 03_window_attention.py` from `lessons/`), and a notebook's working folder is
the folder of the notebook.

Environment variables (set by tests/test_lessons.py):

    MINSTF_LESSONS_FAST=1         smaller sizes, so that every lesson runs in seconds
    MINSTF_LESSONS_FIGURES=DIR    when run as a script, save every figure to DIR as PNG
    MPLBACKEND=Agg                (or no display) figures are drawn off-screen

The lessons compare arrays with `np.testing.assert_allclose` and a stated tolerance whenever
two different float code paths meet, and exactly only for integers, pure permutations, and
one code path against itself; `max_diff` prints how close they came.
"""
import inspect
import os
import sys
from importlib.resources import files
from pathlib import Path

import matplotlib

IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK:  # run as a script (CI): draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FAST = os.environ.get("MINSTF_LESSONS_FAST") == "1"  # CI: smaller sizes
FIGURES = os.environ.get("MINSTF_LESSONS_FIGURES")  # a folder: also save every figure there as PNG
REPO = Path(__file__).resolve().parent.parent  # the checkout the lessons live in
SAMPLE = files("minstf") / "data" / "sample.png"  # kodim23, 384x256, packaged with minstf


def _lesson_name():
    """'03' for lessons/03_window_attention.py (the running script); 'lesson' in a notebook."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main).stem.split("_")[0] if main else "lesson"


def show(fig, name):
    """Display in a notebook; as a script save to $MINSTF_LESSONS_FIGURES (if set) and close."""
    if IN_NOTEBOOK:
        plt.show()
        return
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"{_lesson_name()}_{name}.png"), dpi=80)
    plt.close(fig)


def sample_image(crop=None):
    """The packaged sample photo as uint8 (H, W, 3); crop: (rows, cols) slices, e.g. in fast mode."""
    from minstf.image import read_image

    image = read_image(str(SAMPLE))  # (256, 384, 3)
    return image if crop is None else image[crop]


def max_diff(a, b):
    """max |a - b| in float64 (a float to print next to the tolerance it was checked with)."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def source(obj, start=None, stop=None):
    """Print the real source of a library function (or the lines containing `start` .. `stop`),
    with its file and line numbers: what a lesson quotes from minstf is read from minstf."""
    lines, first = inspect.getsourcelines(obj)
    begin, end = 0, len(lines)
    if start is not None:
        begin = next(i for i, line in enumerate(lines) if start in line)
    if stop is not None:
        end = next(i for i, line in enumerate(lines) if i >= begin and stop in line) + 1
    path = Path(inspect.getsourcefile(obj)).resolve()
    try:
        path = path.relative_to(REPO)
    except ValueError:  # an installed copy outside the checkout
        path = Path("minstf") / path.relative_to(Path(inspect.getsourcefile(sys.modules["minstf"])).parent)
    print(f"# {path}, lines {first + begin}-{first + end - 1} ({obj.__qualname__})")
    print("".join(lines[begin:end]).rstrip())


def rounding_agrees(name, ours, theirs, before, noise=1e-3):
    """Integer decisions round(before) of two float code paths: they must agree except where the
    value rounded sits within float noise of a .5 tie. Prints and returns how many differ; the
    floats computed after a flipped decision are not comparable, so a lesson checks them only
    when this returns 0 (on a given machine it practically always does)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    differ = ours != theirs
    margin = np.abs(np.abs(np.asarray(before, np.float64) % 1.0) - 0.5)  # distance to the tie
    assert np.all(margin[differ] < noise), f"{name}: {int(differ.sum())} decisions differ away from a tie"
    n = int(differ.sum())
    print(f"{name}: {ours.size - n} of {ours.size} decisions agree"
          + (f", {n} differ at ties (margin < {noise:g})" if n else ""))
    return n
