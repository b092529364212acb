"""What a weight file's metadata may say: a configuration in range, the one its tensors imply;
and finite parameters (a NaN weight would decode to a black image with exit code 0)."""
import json
import time
from pathlib import Path

import numpy as np
import pytest

from minstf.config import SMALL_CONFIG, STFConfig
from minstf.convert import convert
from minstf.entropy_models import eb_tables, gc_tables
from minstf.errors import WeightsError
from minstf.keys import relative_position_index, state_dict_spec
from minstf.synthetic import recipe_weights
from minstf.weights import fingerprint, load_weights, save_weights, write_safetensors

REPO = Path(__file__).resolve().parent.parent
# num_slices 4 with support 3: every later slice sees all of its predecessors
TINY = STFConfig(embed_dim=8, depths=(1, 1), num_heads=(1, 2), num_slices=4, max_support_slices=3,
                 slice_hidden=(8, 8, 8, 8))


@pytest.fixture(scope="module")
def tiny():
    params = recipe_weights(TINY)
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    return params, {**eb_tables(eb), **gc_tables()}


def _write(path, tensors, config):
    """A weight file as anyone could write it: the right fingerprint, the given metadata config."""
    meta = {"format": "minstf-weights", "format_version": "1", "model": "stf",
            "config": json.dumps(config if isinstance(config, dict) else config.to_dict()),
            "fingerprint": fingerprint(tensors)}
    write_safetensors(path, tensors, meta)
    return path


def test_shipped_weights_keep_loading_with_their_fingerprints():
    for q in (1, 2, 3):
        w = load_weights(REPO / "weights" / f"stf-small-q{q}.safetensors")
        assert w.config == SMALL_CONFIG
        assert w.fingerprint == w.metadata["fingerprint"] == fingerprint({**w.params, **w.tables})


@pytest.mark.parametrize("field, value", [("mlp_ratio", 4.01), ("max_support_slices", 4)])
def test_metadata_config_must_be_the_one_the_tensors_imply(tmp_path, tiny, field, value):
    """Same tensors, same fingerprint, a config that fits every shape but says something else."""
    params, tables = tiny
    good = _write(tmp_path / "good.safetensors", {**params, **tables}, TINY)
    assert load_weights(good).config == TINY
    lying = dict(TINY.to_dict(), **{field: value})
    bad = _write(tmp_path / "bad.safetensors", {**params, **tables}, lying)
    with pytest.raises(WeightsError, match=f"not the one its tensors imply: {field} is {value} in the "
                                           f"configuration but {getattr(TINY, field)} in the tensors"):
        load_weights(bad)
    with pytest.raises(WeightsError, match="not the one its tensors imply"):  # nor written
        save_weights(tmp_path / "never.safetensors", params, tables, STFConfig(**lying))
    assert not (tmp_path / "never.safetensors").exists()


@pytest.mark.parametrize("change", [
    dict(embed_dim=8.0), dict(embed_dim=True), dict(embed_dim=2048), dict(embed_dim=0),
    dict(depths=[2] * 9, num_heads=[1] * 9), dict(depths=[1_000_000, 1], num_heads=[1, 2]),
    dict(depths=[1, 0]), dict(depths="12"), dict(depths=[1.5, 1]), dict(num_heads=[1, 512]),
    dict(window_size=33), dict(window_size=-1), dict(patch_size=17), dict(in_chans=0),
    dict(mlp_ratio=float("nan")), dict(mlp_ratio=float("inf")), dict(mlp_ratio=0.0), dict(mlp_ratio=17.0),
    dict(mlp_ratio=0.01), dict(mlp_ratio="4"), dict(num_slices=65), dict(max_support_slices=-1),
    dict(slice_hidden=[8, 8, 8]), dict(slice_hidden=[8, 8, 8, 5000]), dict(slice_hidden=None),
])
def test_config_fields_are_range_checked_before_anything_is_built(tmp_path, tiny, change):
    config = dict(TINY.to_dict(), **change)
    with pytest.raises(ValueError):
        STFConfig(**config)
    params, tables = tiny
    path = _write(tmp_path / "w.safetensors", {**params, **tables}, config)  # NaN as json.dumps writes it
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="bad configuration"):
        load_weights(path)
    assert time.perf_counter() - start < 0.5  # refused before a spec of a million blocks is built


def test_config_accepts_integers_of_any_integer_type():
    c = STFConfig(**dict(TINY.to_dict(), embed_dim=np.int64(8), depths=[1, np.int32(1)], mlp_ratio=4))
    assert c == TINY and type(c.embed_dim) is int and type(c.mlp_ratio) is float
    assert c.depths == (1, 1) and all(type(d) is int for d in c.depths)


def test_nonfinite_parameters_are_refused_at_save_load_and_convert(tmp_path, tiny):
    params, tables = tiny
    bad = dict(params)
    for key, value in (("h_a.0.bias", np.nan), ("layers.1.blocks.0.mlp.fc2.weight", -np.inf)):
        bad[key] = params[key].copy()
        bad[key].flat[3] = value
    expected = r"non-finite values \(NaN or Inf\) in 2 parameters: layers.1.blocks.0.mlp.fc2.weight, h_a.0.bias"
    with pytest.raises(WeightsError, match=expected):
        save_weights(tmp_path / "s.safetensors", bad, tables, TINY)
    path = _write(tmp_path / "l.safetensors", {**bad, **tables}, TINY)
    with pytest.raises(WeightsError, match="l.safetensors: " + expected):
        load_weights(path)
    # a state dict (as safetensors) with the NaN: refused before the CDF tables are built from it
    sd = {}
    for s in state_dict_spec(TINY):
        if s.kind == "param":
            sd[s.key] = bad[s.key]
        elif s.key.endswith("relative_position_index"):
            sd[s.key] = relative_position_index(TINY.window_size)
    write_safetensors(tmp_path / "sd.safetensors", sd, {})
    with pytest.raises(WeightsError, match="sd.safetensors: checkpoint: " + expected):
        convert(tmp_path / "sd.safetensors", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_empty_or_nonfinite_tables_are_refused(tmp_path, tiny):
    params, tables = tiny
    for key, value in (("gaussian_conditional.scale_table", np.array([0.11, np.nan], np.float32)),
                       ("gaussian_conditional.scale_table", np.zeros(0, np.float32))):
        with pytest.raises(WeightsError, match="scale_table must be non-empty, finite and positive"):
            save_weights(tmp_path / "t.safetensors", params, dict(tables, **{key: value}), TINY)
    empty = {k: v[:0] for k, v in tables.items() if k.startswith("gaussian_conditional._")}
    with pytest.raises(WeightsError, match="at least one row"):
        save_weights(tmp_path / "t.safetensors", params, dict(tables, **empty), TINY)
