"""Fixtures of the WACNN (`cnn`) golden vector, imported by the tests that use them.

The arrays come from the workspace's `../shared/spec/golden/cnn_golden.npz` when it
exists, else from the subset in `tests/fixtures/cnn_golden_small.npz`
(tools/make_fixtures.py --cnn); a test asking for a key that neither holds is skipped.
MINSTF_CNN_GOLDEN=small uses the subset even where the full file exists.
"""
import os

import numpy as np
import pytest

from minstf.config import WACNN_CONFIG
from minstf.synthetic import recipe_weights, sha256_of

from conftest import FIXTURES, HERE

FULL_CNN_GOLDEN = HERE.parent.parent / "shared" / "spec" / "golden" / "cnn_golden.npz"
SMALL_CNN_GOLDEN = FIXTURES / "cnn_golden_small.npz"


class CNNGolden:
    """Read-only access to the WACNN golden arrays; missing keys skip the test."""

    def __init__(self):
        use_full = FULL_CNN_GOLDEN.exists() and os.environ.get("MINSTF_CNN_GOLDEN") != "small"
        self.path = FULL_CNN_GOLDEN if use_full else SMALL_CNN_GOLDEN
        self._npz = np.load(self.path)
        self.full = self.path == FULL_CNN_GOLDEN
        self._cache = {}

    def __contains__(self, key):
        return key in self._npz.files

    def __getitem__(self, key):
        if key not in self._npz.files:
            pytest.skip(f"golden key {key!r} is only in the full file {FULL_CNN_GOLDEN} (absent here)")
        if key not in self._cache:
            self._cache[key] = self._npz[key]
        return self._cache[key]


@pytest.fixture(scope="session")
def cnn_golden():
    return CNNGolden()


@pytest.fixture(scope="session")
def cnn_params():
    """The WACNN recipe weights (docs/wacnn.md §6), verified against the per-key SHA-256 list."""
    params = recipe_weights(WACNN_CONFIG)
    rows = [line.rstrip("\n").split("\t") for line in open(FIXTURES / "cnn_weights_sha256.tsv")][1:]
    bad = [key for key, _, digest in rows if sha256_of(params[key]) != digest]
    assert not bad, f"WACNN recipe weights differ from the golden checksums: {bad[:5]}"
    assert len(rows) == len(params) == 545
    return params
