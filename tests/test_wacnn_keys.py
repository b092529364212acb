"""WACNN's key inventory, configuration and weight recipe against the upstream facts (docs/wacnn.md §1, §6)."""
import numpy as np
import pytest

from minstf.config import WACNN_CONFIG, WACNN_SMALL_CONFIG, WACNNConfig
from minstf.keys import relative_position_index, wacnn_param_spec, wacnn_state_dict_spec
from minstf.synthetic import recipe_weights

from conftest import FIXTURES


def test_state_dict_spec_matches_upstream_keys_tsv():
    rows = [line.rstrip("\n").split("\t") for line in open(FIXTURES / "keys-cnn.tsv")][1:]
    spec = wacnn_state_dict_spec(WACNN_CONFIG)
    assert len(spec) == len(rows) == 585
    for i, (row, s) in enumerate(zip(rows, spec)):
        shape = tuple(int(v) for v in row[2].split(","))
        assert (int(row[0]), row[1], shape, row[3], row[4]) == (i, s.key, s.shape, s.dtype, s.kind)


def test_parameter_count_is_upstreams():
    spec = wacnn_param_spec(WACNN_CONFIG)
    assert len(spec) == 545
    assert sum(int(np.prod(s.shape)) for s in spec) == 75_235_779  # docs/wacnn.md §1
    by_group = {}
    for s in spec:
        by_group[s.key.split(".")[0]] = by_group.get(s.key.split(".")[0], 0) + int(np.prod(s.shape))
    assert by_group["g_a"] == 6_928_528 and by_group["g_s"] == 6_928_211 and by_group["lrp_transforms"] == 15_857_760


def test_recipe_weights_match_golden_checksums(cnn_params):
    assert cnn_params["g_s.1.weight"].shape == (320, 192, 5, 5)  # the fixture asserts every SHA-256


def test_gdn_effective_parameters_are_bit_exact(cnn_golden, cnn_params):
    from minstf.reference.wacnn import gdn_parameters
    for layer in ("g_a1", "g_s2"):
        prefix = layer[:3] + "." + layer[3:]
        beta, gamma = gdn_parameters(cnn_params[f"{prefix}.beta"], cnn_params[f"{prefix}.gamma"])
        assert beta.dtype == gamma.dtype == np.float32
        np.testing.assert_array_equal(beta, cnn_golden[f"{layer}_beta_eff"])  # one code path of elementwise ops
        np.testing.assert_array_equal(gamma, cnn_golden[f"{layer}_gamma_eff"])
        assert (gamma == 0).mean() > 0.4  # about half the entries sit on the lower bound


@pytest.mark.parametrize("ws", [8, 4])
def test_relative_position_index_matches_golden(cnn_golden, ws):
    np.testing.assert_array_equal(relative_position_index(ws), cnn_golden[f"rel_pos_index_ws{ws}"])


def test_small_config_has_the_same_structure():
    big = {s.key for s in wacnn_param_spec(WACNN_CONFIG)}
    small = recipe_weights(WACNN_SMALL_CONFIG)
    slices = ("cc_mean_transforms.", "cc_scale_transforms.", "lrp_transforms.")
    assert set(small) == {k for k in big if not k.startswith(slices) or int(k.split(".")[1]) < 4}
    assert small["g_s.1.weight"].shape == (32, 16, 5, 5)
    assert small["lrp_transforms.3.0.weight"].shape == (32, 32 + 8 * 3, 3, 3)  # support capped at 2 + current
    assert small["h_mean_s.2.0.weight"].shape == (4 * 20, 16, 3, 3)  # N + (M - N) / 4 = 20, x2 subpel


@pytest.mark.parametrize("bad", [dict(N=190), dict(M=322), dict(num_slices=7), dict(num_heads=7),
                                 dict(window_sizes=(8,)), dict(max_support_slices=11), dict(N=192.0),
                                 dict(slice_hidden=(1, 2, 3)), dict(N=True), dict(M=160)])
def test_config_rejects_inconsistent_sizes(bad):
    with pytest.raises(ValueError):
        WACNNConfig(**bad)


def test_config_round_trips_through_a_dict():
    assert WACNNConfig.from_dict(WACNN_SMALL_CONFIG.to_dict()) == WACNN_SMALL_CONFIG
    assert WACNN_CONFIG.pad_multiple == 64 and WACNN_CONFIG.hyper_widths == (320, 288, 256, 224, 192)
    with pytest.raises(ValueError):
        WACNNConfig.from_dict({"N": 192, "embed_dim": 48})
