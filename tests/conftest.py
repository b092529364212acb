"""Shared fixtures: the golden test vector and the golden recipe weights.

The golden arrays come from the workspace's `../shared/spec/golden/stf_golden.npz`
when it exists, else from the subset copied into `tests/fixtures/`
(tools/make_fixtures.py). A test asking for a key that neither holds is skipped
with the reason.
"""
from pathlib import Path

import numpy as np
import pytest

from minstf.config import STFConfig
from minstf.synthetic import recipe_weights, sha256_of

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
FULL_GOLDEN = HERE.parent.parent / "shared" / "spec" / "golden" / "stf_golden.npz"
SMALL_GOLDEN = FIXTURES / "stf_golden_small.npz"


class Golden:
    """Read-only access to the golden arrays; missing keys skip the test."""

    def __init__(self):
        self.path = FULL_GOLDEN if FULL_GOLDEN.exists() else SMALL_GOLDEN
        self._npz = np.load(self.path)
        self.full = self.path == FULL_GOLDEN

    def __contains__(self, key):
        return key in self._npz.files

    def __getitem__(self, key):
        if key not in self._npz.files:
            pytest.skip(f"golden key {key!r} is only in the full file {FULL_GOLDEN} (absent here)")
        return self._npz[key]


@pytest.fixture(scope="session")
def golden():
    return Golden()


@pytest.fixture(scope="session")
def golden_params():
    """The recipe weights of docs/golden.md §1, verified against the per-key SHA-256 list."""
    params = recipe_weights(STFConfig())
    rows = [line.rstrip("\n").split("\t") for line in open(FIXTURES / "weights_sha256.tsv")][1:]
    bad = [key for key, _, digest in rows if sha256_of(params[key]) != digest]
    assert not bad, f"recipe weights differ from the golden checksums: {bad[:5]}"
    assert len(rows) == len(params)
    return params
