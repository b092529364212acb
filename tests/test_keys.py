"""The key inventory and the weight recipe against the upstream facts (docs/weights.md, docs/golden.md §1)."""
import numpy as np
import pytest

from minstf.config import STFConfig
from minstf.keys import param_spec, relative_position_index, state_dict_spec
from minstf.synthetic import recipe_weights

from conftest import FIXTURES


def test_state_dict_spec_matches_upstream_keys_tsv():
    rows = [line.rstrip("\n").split("\t") for line in open(FIXTURES / "keys-stf.tsv")][1:]
    spec = state_dict_spec(STFConfig())
    assert len(spec) == len(rows) == 779
    for row, s in zip(rows, spec):
        shape = tuple(int(v) for v in row[2].split(","))
        assert (row[1], shape, row[3], row[4]) == (s.key, s.shape, s.dtype, s.kind)


def test_parameter_count_is_upstreams():
    total = sum(int(np.prod(s.shape)) for s in param_spec(STFConfig()))
    assert total == 99_855_639  # docs/weights.md §1


def test_recipe_weights_match_golden_checksums(golden_params):
    assert len(golden_params) == 743  # the fixture itself asserts every SHA-256


def test_small_config_uses_same_key_structure():
    small = STFConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                      num_slices=4, max_support_slices=2, slice_hidden=(64, 48, 40, 32))
    keys = {s.key for s in param_spec(small)}
    assert "cc_mean_transforms.3.0.weight" in keys and "cc_mean_transforms.4.0.weight" not in keys
    params = recipe_weights(small)
    assert params["h_a.0.weight"].shape == (128, 128, 3, 3)
    assert params["lrp_transforms.3.0.weight"].shape == (64, 128 + 32 * 3, 3, 3)  # support capped at 2 + current


@pytest.mark.parametrize("bad", [dict(embed_dim=10, num_heads=(3, 6, 12, 24)), dict(num_slices=5)])
def test_config_rejects_inconsistent_sizes(bad):
    with pytest.raises(ValueError):
        STFConfig(**bad)


@pytest.mark.parametrize("ws", [1, 2, 4, 7])
def test_relative_position_index_is_the_offset_table_row(ws):
    got = relative_position_index(ws)
    assert got.dtype == np.int64 and got.shape == (ws * ws, ws * ws)
    for n in range(ws * ws):
        for m in range(ws * ws):
            (rn, cn), (rm, cm) = divmod(n, ws), divmod(m, ws)
            assert got[n, m] == (rn - rm + ws - 1) * (2 * ws - 1) + (cn - cm + ws - 1)


def test_relative_position_index_matches_golden(golden):
    np.testing.assert_array_equal(relative_position_index(4), golden["rel_pos_index"])
