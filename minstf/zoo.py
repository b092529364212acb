"""Finding and loading weights: `load_model`, the shipped default weights, and the weight
file a .mstf file was made with (by the fingerprint in its header, `weights_for`).

The shipped weights live in the repository's `weights/` folder (see
weights/README.md), one file per rate point; `quality` picks one. An installed
wheel carries the same files as package data in `minstf/shipped/` (setup.cfg maps
that package onto `weights/`). Set MINSTF_WEIGHTS_DIR to look elsewhere.
"""
import os
from pathlib import Path

from .bitstream import fingerprint_of
from .errors import WeightsError, WrongWeights
from .model import STF
from .weights import load_weights, read_metadata

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


def load_model(path=None, backend="numpy", quality=None, verify=True, kernels="fast"):
    """Load a model from a minstf weight file (default: the shipped weights): an STF, or a
    WACNN (`cnn`) for a file whose metadata says so (the STF class with minstf.wacnn's
    transforms; `model.model` is the file's model id).

    backend: "numpy" or "cupy"; the weights move to that device once, here.
    kernels: "fast" or "reference", the layer every network runs on (minstf.switch).
    """
    if path is None:
        path = default_weights(DEFAULT_QUALITY if quality is None else quality)
    w = load_weights(path, verify=verify)
    return STF(w.config, w.params, w.tables, backend=backend, fingerprint=w.fingerprint,
               name=w.metadata.get("name", Path(path).stem), kernels=kernels)


# --- finding the weights a .mstf file was made with ----------------------------------------

def claimed_fingerprint(path):
    """The 16-byte fingerprint a weight file's metadata claims, from its header alone
    (load_model then verifies it against the tensors)."""
    meta = read_metadata(path)
    try:
        return fingerprint_of(meta.get("fingerprint", ""))
    except ValueError:
        raise WeightsError(f"{path}: not a minstf weight file (no fingerprint in its metadata)") from None


def shipped():
    """[(quality, path, fingerprint)] of the shipped weight files present."""
    found = []
    for q in QUALITIES:
        try:
            path = default_weights(q)
        except WeightsError:  # not shipped (yet)
            continue
        found.append((q, path, claimed_fingerprint(path)))
    return found


def shipped_name(fingerprint):
    """"shipped q2" (and so on) for the fingerprint of shipped weights, else "not a shipped one"."""
    try:
        names = [f"shipped q{q}" for q, _, fp in shipped() if fp == fingerprint]
    except WeightsError:  # a broken shipped weight file is for load_model to report, not here
        names = []
    return ", ".join(names) or "not a shipped one"


def weights_path(weights=None, quality=None):
    """The weight file to use: `weights` if given, else the shipped one of `quality` (default 2)."""
    return Path(weights) if weights else default_weights(quality or DEFAULT_QUALITY)


def weights_for(header, name, weights=None, quality=None):
    """The weight file the .mstf file `name` (its Header) was made with: the given one if it
    matches, else the shipped one whose fingerprint is in the header."""
    made_with = header.fingerprint.hex()[:12]
    if weights or quality:
        path = weights_path(weights, quality)
        have = claimed_fingerprint(path)
        if have != header.fingerprint:
            raise WrongWeights(f"{name} was made with weights {made_with}…, but {path} are "
                               f"{have.hex()[:12]}…")
        return path
    found = shipped()
    if not found:
        raise WeightsError(f"no shipped weights in {weights_dir()}: pass --weights "
                           f"(or set MINSTF_WEIGHTS_DIR)")
    for _, path, fp in found:
        if fp == header.fingerprint:
            return path
    listed = ", ".join(f"q{q} {fp.hex()[:12]}…" for q, _, fp in found)
    raise WrongWeights(f"{name} was made with weights {made_with}…, none of the shipped ones "
                       f"({listed}): pass the weights it was made with, --weights FILE")
