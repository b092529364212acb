"""Finding and loading weights: `load_model` and the shipped default weights.

The shipped weights live in the repository's `weights/` folder (see
weights/README.md), one file per rate point; `quality` picks one. An installed
wheel carries the same files as package data in `minstf/shipped/` (setup.cfg maps
that package onto `weights/`). Set MINSTF_WEIGHTS_DIR to look elsewhere.
"""
import os
from pathlib import Path

from .errors import WeightsError
from .model import STF
from .weights import load_weights

QUALITIES = (1, 2, 3)  # low, medium, high rate
DEFAULT_QUALITY = 2


PACKAGE_DIR = Path(__file__).resolve().parent
CANDIDATE_DIRS = (PACKAGE_DIR / "shipped",  # an installed wheel or sdist: package data
                  PACKAGE_DIR.parent / "weights")  # a checkout (editable install)


def weights_dir():
    """The folder of the shipped weights: $MINSTF_WEIGHTS_DIR, else the first candidate that has them."""
    env = os.environ.get("MINSTF_WEIGHTS_DIR")
    if env:
        return Path(env)
    for folder in CANDIDATE_DIRS:
        if any(folder.glob("stf-small-q*.safetensors")):
            return folder
    return CANDIDATE_DIRS[-1]


def default_weights(quality=DEFAULT_QUALITY):
    """Path of the shipped weight file for a quality level."""
    if quality not in QUALITIES:
        raise WeightsError(f"quality must be one of {QUALITIES}, got {quality}")
    path = weights_dir() / f"stf-small-q{quality}.safetensors"
    if not path.exists():
        raise WeightsError(f"shipped weights not found: {path} (pass --weights, or set MINSTF_WEIGHTS_DIR)")
    return path


def load_model(path=None, backend="numpy", quality=None, verify=True):
    """Load an STF model from a minstf weight file (default: the shipped weights).

    backend: "numpy" or "cupy"; the weights move to that device once, here.
    """
    if path is None:
        path = default_weights(DEFAULT_QUALITY if quality is None else quality)
    w = load_weights(path, verify=verify)
    return STF(w.config, w.params, w.tables, backend=backend, fingerprint=w.fingerprint,
               name=w.metadata.get("name", Path(path).stem))
