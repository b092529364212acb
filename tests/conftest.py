"""Shared fixtures: the golden test vectors (STF and WACNN), their recipe weights, the kernel layer.

The golden arrays come from the workspace's `../shared/spec/golden/stf_golden.npz`
(`cnn_golden.npz`) when it exists, else from the subset copied into `tests/fixtures/`
(tools/make_fixtures.py, `--cnn`). A test asking for a key that neither holds is skipped
with the reason. MINSTF_CNN_GOLDEN=small uses the WACNN subset even where the full file exists.
"""
import os
from pathlib import Path

import numpy as np
import pytest

from minstf.config import WACNN_CONFIG, STFConfig
from minstf.switch import KERNELS, get_kernels
from minstf.synthetic import recipe_weights, sha256_of

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
SHARED_GOLDEN = HERE.parent.parent / "shared" / "spec" / "golden"
FULL_GOLDEN, SMALL_GOLDEN = SHARED_GOLDEN / "stf_golden.npz", FIXTURES / "stf_golden_small.npz"
FULL_CNN_GOLDEN, SMALL_CNN_GOLDEN = SHARED_GOLDEN / "cnn_golden.npz", FIXTURES / "cnn_golden_small.npz"


class Golden:
    """Read-only access to a golden file (the full one if present and wanted, else the subset);
    missing keys skip the test."""

    def __init__(self, full=FULL_GOLDEN, small=SMALL_GOLDEN, use_full=True):
        self.full_path = full
        self.path = full if use_full and full.exists() else small
        self._npz = np.load(self.path)
        self.full = self.path == full
        self._cache = {}

    def __contains__(self, key):
        return key in self._npz.files

    def __getitem__(self, key):
        if key not in self._npz.files:
            pytest.skip(f"golden key {key!r} is only in the full file {self.full_path} (absent here)")
        if key not in self._cache:
            self._cache[key] = self._npz[key]
        return self._cache[key]


@pytest.fixture(scope="session")
def golden():
    return Golden()


@pytest.fixture(scope="session")
def cnn_golden():
    return Golden(FULL_CNN_GOLDEN, SMALL_CNN_GOLDEN, use_full=os.environ.get("MINSTF_CNN_GOLDEN") != "small")


@pytest.fixture(scope="session")
def golden_params():
    """The recipe weights of docs/golden.md §1, verified against the per-key SHA-256 list."""
    params = recipe_weights(STFConfig())
    rows = [line.rstrip("\n").split("\t") for line in open(FIXTURES / "weights_sha256.tsv")][1:]
    bad = [key for key, _, digest in rows if sha256_of(params[key]) != digest]
    assert not bad, f"recipe weights differ from the golden checksums: {bad[:5]}"
    assert len(rows) == len(params)
    return params


@pytest.fixture(scope="session")
def cnn_params():
    """The WACNN recipe weights (docs/wacnn.md §6), verified against the per-key SHA-256 list."""
    params = recipe_weights(WACNN_CONFIG)
    rows = [line.rstrip("\n").split("\t") for line in open(FIXTURES / "cnn_weights_sha256.tsv")][1:]
    bad = [key for key, _, digest in rows if sha256_of(params[key]) != digest]
    assert not bad, f"WACNN recipe weights differ from the golden checksums: {bad[:5]}"
    assert len(rows) == len(params) == 545
    return params


@pytest.fixture(params=KERNELS)
def k(request):
    """The kernel layer under test: minstf.kernels (fast) or minstf.reference."""
    return get_kernels(request.param)
