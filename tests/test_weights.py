"""minstf weight files: round trip, safetensors interop, untrusted headers, key alignment, renames."""
import hashlib
import json
import time

import numpy as np
import pytest

from minstf.config import STFConfig
from minstf.entropy_models import eb_tables, gc_tables
from minstf.errors import OutputExists, WeightsError
from minstf.convert import infer_config, rename_upstream_key, state_dict_to_params
from minstf.keys import TABLE_BUFFERS, param_spec, relative_position_index, state_dict_spec
from minstf.synthetic import recipe_weights
from minstf.weights import fingerprint, load_weights, read_safetensors, save_weights, write_safetensors

SMALL = STFConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_slices=4,
                  max_support_slices=2, slice_hidden=(64, 48, 40, 32))


@pytest.fixture(scope="module")
def small():
    params = recipe_weights(SMALL)
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    return params, {**eb_tables(eb), **gc_tables()}


@pytest.fixture
def saved(tmp_path, small):
    path = tmp_path / "small.safetensors"
    save_weights(path, *small, SMALL, metadata={"name": "small", "description": "recipe weights"})
    return path


def test_round_trip(saved, small):
    params, tables = small
    w = load_weights(saved)
    assert w.config == SMALL
    assert list(w.params) == [s.key for s in param_spec(SMALL)]  # upstream order
    assert list(w.tables) == list(TABLE_BUFFERS)
    for key, value in {**params, **tables}.items():
        got = w.params.get(key, w.tables.get(key))
        assert got.dtype == value.dtype and got.flags.writeable
        np.testing.assert_array_equal(got, value, err_msg=key)
    assert w.metadata["format"] == "minstf-weights" and w.metadata["format_version"] == "1"
    assert w.metadata["model"] == "stf" and w.metadata["name"] == "small"
    assert STFConfig.from_dict(json.loads(w.metadata["config"])) == SMALL
    assert w.fingerprint == w.metadata["fingerprint"] == fingerprint({**params, **tables})


def test_fingerprint_is_the_documented_digest(small):
    params, tables = small
    h = hashlib.sha256()
    for key in sorted({**params, **tables}):
        a = params.get(key, tables.get(key))
        code = {"float32": "F32", "int32": "I32"}[a.dtype.name]
        h.update(f'["{key}","{code}",[{",".join(map(str, a.shape))}],{a.nbytes}]\n'.encode())
        h.update(a.astype(a.dtype.newbyteorder("<")).tobytes())
    assert fingerprint({**params, **tables}) == h.hexdigest()
    changed = dict(params, **{"h_a.0.bias": params["h_a.0.bias"] + 1e-7})
    assert fingerprint({**changed, **tables}) != h.hexdigest()


def test_interop_with_the_safetensors_package(saved, small, tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open
    params, tables = small
    theirs = st.load_file(saved)  # ours -> theirs
    assert set(theirs) == set(params) | set(tables)
    np.testing.assert_array_equal(theirs["lrp_transforms.3.0.weight"], params["lrp_transforms.3.0.weight"])
    with safe_open(saved, "np") as f:
        meta = f.metadata()
    assert meta["fingerprint"] == load_weights(saved).fingerprint
    other = tmp_path / "theirs.safetensors"  # theirs -> ours
    st.save_file({**params, **tables}, other, metadata=meta)
    w = load_weights(other)
    np.testing.assert_array_equal(w.tables["gaussian_conditional._quantized_cdf"],
                                  tables["gaussian_conditional._quantized_cdf"])
    plain = tmp_path / "plain.safetensors"  # a state dict with an int64 buffer, no metadata
    st.save_file({"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.ones(3, np.float32)}, plain)
    tensors, meta = read_safetensors(plain)
    assert meta == {} and tensors["a"].dtype == np.int64 and tensors["a"][1, 2] == 5
    with pytest.raises(WeightsError, match="not a minstf weight file"):
        load_weights(plain)


def test_refuses_to_overwrite_without_force(saved, small):
    before = saved.read_bytes()
    with pytest.raises(OutputExists):
        save_weights(saved, *small, SMALL)
    assert saved.read_bytes() == before
    save_weights(saved, *small, SMALL, metadata={"name": "again"}, force=True)
    assert load_weights(saved).metadata["name"] == "again"
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary files left


# --- untrusted files ---------------------------------------------------------------------

def _file(header, data=b"", n=None):
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    return (len(raw) if n is None else n).to_bytes(8, "little") + raw + data


T = lambda dtype="F32", shape=(2,), offsets=(0, 8): {"dtype": dtype, "shape": list(shape),  # noqa: E731
                                                      "data_offsets": list(offsets)}
BAD_FILES = {
    "empty": (b"", "too short"),
    "huge header length": (_file({}, n=2**62), "exceeds"),
    "header beyond file": (_file({"a": T()}, bytes(8), n=10_000), "exceeds"),
    "not json": (_file(b"{not json"), "not valid JSON"),
    "not utf-8": (_file(b"\xff\xfe"), "not valid JSON"),
    "json list": (_file(b"[1, 2]"), "not a JSON object"),
    "float16": (_file({"a": T("F16", (4,))}, bytes(8)), "bad header entry"),
    "negative shape": (_file({"a": T(shape=(-2,))}, bytes(8)), "bad header entry"),
    "float shape": (_file({"a": T(shape=(2.0,))}, bytes(8)), "bad header entry"),
    "no offsets": (_file({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)), "bad header entry"),
    "truncated data": (_file({"a": T(offsets=(0, 8))}, bytes(5)), "outside the data section"),
    "huge tensor": (_file({"a": T(shape=(2**20, 2**20), offsets=(0, 2**42))}, bytes(8)), "outside"),
    "huge dimension": (_file({"a": T(shape=(2**70, 0), offsets=(0, 0))}), "bad header entry"),
    "9 dimensions": (_file({"a": T(shape=(1,) * 9, offsets=(0, 4))}, bytes(4)), "at most 8 integer dim"),
    "bool dimension": (_file({"a": T(shape=(True, 2))}, bytes(8)), "bad header entry"),
    "negative offset": (_file({"a": T(offsets=(-8, 0))}, bytes(8)), "bad header entry"),
    "float offset": (_file({"a": T(offsets=(0.0, 8))}, bytes(8)), "bad header entry"),
    "dtype not a string": (_file({"a": T(dtype=["F32"])}, bytes(8)), "bad header entry"),
    "entry not an object": (_file({"a": [1, 2]}, bytes(8)), "bad header entry"),
    "integer of 5000 digits": (_file(b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b"]}}"),
                               "not valid JSON"),
    "deep nesting": (_file(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nested too deeply"),
    "nesting beyond the format": (_file(b'{"a": {"shape": [[[2]]]}}'), "nested deeper than the 3 levels"),
    "size mismatch": (_file({"a": T(shape=(3,))}, bytes(8)), "do not hold"),
    "overlap": (_file({"a": T(offsets=(0, 8)), "b": T(offsets=(4, 12))}, bytes(12)), "overlap"),
    "duplicate keys": (b"\x1e" + bytes(7) + b'{"a": {}, "a": {}}          ' + bytes(8), "duplicate keys a"),
    "metadata not str": (_file({"__metadata__": {"format": 1}}), "strings to strings"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_malformed_files_are_refused_quickly(tmp_path, name):
    content, match = BAD_FILES[name]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=match):
        load_weights(path)
    assert time.perf_counter() - start < 0.5


def test_truncated_and_tampered_weight_files(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:-100])
    with pytest.raises(WeightsError, match="outside the data section"):
        load_weights(saved)
    tampered = bytearray(raw)
    tampered[-5] ^= 1  # one bit of the last tensor
    saved.write_bytes(bytes(tampered))
    with pytest.raises(WeightsError, match="fingerprint mismatch"):
        load_weights(saved)
    assert load_weights(saved, verify=False).fingerprint  # the caller may skip the check


def test_missing_unknown_and_misshaped_keys_are_named(tmp_path, small):
    params, tables = small
    bad = dict(params)
    del bad["h_a.2.weight"], bad["entropy_bottleneck._matrix3"]
    bad["h_s.0.weight"] = np.zeros(3, np.float32)
    bad["layers.0.blocks.0.attn.qkv.weight"] = bad["layers.0.blocks.0.attn.qkv.weight"].T
    for save in (True, False):
        path = tmp_path / f"bad{save}.safetensors"
        if save:
            with pytest.raises(WeightsError) as err:
                save_weights(path, bad, tables, SMALL)
            assert not path.exists()
        else:  # a file written by someone else, with valid metadata
            meta = {"format": "minstf-weights", "format_version": "1", "model": "stf",
                    "config": json.dumps(SMALL.to_dict()), "fingerprint": ""}
            write_safetensors(path, {**bad, **tables}, meta)
            with pytest.raises(WeightsError) as err:
                load_weights(path)
        msg = str(err.value)
        assert "2 missing: h_a.2.weight, entropy_bottleneck._matrix3" in msg
        assert "1 unknown: h_s.0.weight" in msg
        assert "layers.0.blocks.0.attn.qkv.weight (16, 48) (expected (48, 16))" in msg
        assert "\n" not in msg


def test_table_problems_are_named(tmp_path, small):
    params, tables = small
    bad = dict(tables)
    del bad["gaussian_conditional.scale_table"]
    bad["entropy_bottleneck._offset"] = bad["entropy_bottleneck._offset"][:3]
    bad["entropy_bottleneck._cdf_length"] = bad["entropy_bottleneck._cdf_length"].astype(np.int64)
    bad["gaussian_conditional._cdf_length"] = bad["gaussian_conditional._cdf_length"] + 1
    with pytest.raises(WeightsError) as err:
        save_weights(tmp_path / "t.safetensors", params, bad, SMALL)
    msg = str(err.value)
    assert "missing tables: gaussian_conditional.scale_table" in msg
    assert "entropy_bottleneck._offset has shape (3,), expected (64,)" in msg
    assert "entropy_bottleneck._cdf_length has dtype int64, expected I32" in msg
    assert "gaussian_conditional._cdf_length has values outside 3..3133" in msg


def test_wrong_format_version_and_config(tmp_path, small):
    params, tables = small
    meta = {"format": "minstf-weights", "format_version": "2", "model": "stf", "config": "{}"}
    write_safetensors(tmp_path / "v2", {**params, **tables}, meta)
    with pytest.raises(WeightsError, match="format version '2'"):
        load_weights(tmp_path / "v2")
    write_safetensors(tmp_path / "cfg", {**params, **tables}, dict(meta, format_version="1", config='{"x": 1}'))
    with pytest.raises(WeightsError, match="bad configuration"):
        load_weights(tmp_path / "cfg")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(tmp_path / "does-not-exist")


# --- upstream state dicts --------------------------------------------------------------------

@pytest.mark.parametrize("key, new", [
    ("module.h_a.0.weight", "h_a.0.weight"),
    ("h_s.0.weight", None),
    ("module.h_s.2.bias", None),
    ("h_scale_s.0.weight", "h_scale_s.0.weight"),
    ("entropy_bottleneck.matrices.0", "entropy_bottleneck._matrix0"),
    ("entropy_bottleneck._matrices.4", "entropy_bottleneck._matrix4"),
    ("entropy_bottleneck.biases.2", "entropy_bottleneck._bias2"),
    ("module.entropy_bottleneck._biases.1", "entropy_bottleneck._bias1"),
    ("entropy_bottleneck.factors.3", "entropy_bottleneck._factor3"),
    ("entropy_bottleneck._factor3", "entropy_bottleneck._factor3"),
    ("entropy_bottleneck.quantiles", "entropy_bottleneck.quantiles"),
    ("entropy_bottleneck._quantized_cdf", "entropy_bottleneck._quantized_cdf"),
])
def test_rename_upstream_key(key, new):
    assert rename_upstream_key(key) == new


def _state_dict(params, config=SMALL):
    sd = {}
    for s in state_dict_spec(config):
        if s.kind == "param":
            sd[s.key] = params[s.key]
        elif s.key.endswith("relative_position_index"):
            sd[s.key] = relative_position_index(config.window_size)
        else:
            sd[s.key] = np.zeros(s.shape, s.dtype)
    return sd


def test_state_dict_to_params(small):
    params, _ = small
    sd = _state_dict(params)
    sd["h_s.0.weight"] = np.zeros(3)
    sd["h_a.0.weight"] = params["h_a.0.weight"].astype(np.float16)
    sd["h_a.0.bias"] = params["h_a.0.bias"].astype(np.float64)
    out = state_dict_to_params(sd, SMALL)
    assert list(out) == [s.key for s in param_spec(SMALL)]
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["h_a.0.bias"], params["h_a.0.bias"])
    np.testing.assert_allclose(out["h_a.0.weight"], params["h_a.0.weight"], rtol=1e-3, atol=1e-4)


def test_state_dict_to_params_refusals(small):
    params, _ = small
    sd = _state_dict(params)
    sd["layers.2.blocks.1.attn.relative_position_index"] = np.zeros((16, 16), np.int64)
    with pytest.raises(WeightsError, match="relative_position_index differs.*layers.2.blocks.1"):
        state_dict_to_params(sd, SMALL)
    sd = _state_dict(params)
    sd["entropy_bottleneck.matrices.0"] = sd["entropy_bottleneck._matrix0"]
    with pytest.raises(WeightsError, match="holds entropy_bottleneck._matrix0 twice"):
        state_dict_to_params(sd, SMALL)
    sd = _state_dict(params)
    sd["h_a.0.bias"] = np.zeros(128, np.int32)
    with pytest.raises(WeightsError, match="h_a.0.bias has dtype int32"):
        state_dict_to_params(sd, SMALL)
    first = r"patch_embed.proj.weight \(16, 3, 2, 2\) \(expected \(48, 3, 2, 2\)\)"
    with pytest.raises(WeightsError, match=r"422 missing: .*308 mis-shaped: " + first):
        state_dict_to_params(_state_dict(params), STFConfig())


@pytest.mark.parametrize("config", [SMALL, STFConfig(),
                                    STFConfig(embed_dim=24, depths=(1, 2, 1), num_heads=(2, 2, 4),
                                              window_size=2, mlp_ratio=2.0, num_slices=3,
                                              max_support_slices=1, slice_hidden=(10, 9, 8, 7))])
def test_infer_config_from_shapes(config):
    shapes = {s.key: np.broadcast_to(np.float32(0), s.shape) for s in state_dict_spec(config)}
    assert infer_config(shapes) == config
    assert infer_config({"module." + k: v for k, v in shapes.items()}) == config
    with pytest.raises(WeightsError, match="cannot infer"):
        infer_config({k: v for k, v in shapes.items() if not k.startswith("patch_embed")})


def test_table_buffer_names_are_the_spec_buffers():
    buffers = {s.key for s in state_dict_spec(SMALL) if s.kind == "buffer"}
    assert set(TABLE_BUFFERS) <= buffers


def test_tensor_count_and_data_size_are_bounded(tmp_path, monkeypatch):
    from minstf import weights
    path = tmp_path / "many.safetensors"
    path.write_bytes(_file({k: T(offsets=(8 * i, 8 * i + 8)) for i, k in enumerate("abcd")}, bytes(32)))
    assert len(read_safetensors(path)[0]) == 4
    monkeypatch.setattr(weights, "MAX_TENSORS", 3)
    with pytest.raises(WeightsError, match="4 tensors, more than the 3 allowed"):
        read_safetensors(path)
    monkeypatch.setattr(weights, "MAX_DATA_BYTES", 31)
    with pytest.raises(WeightsError, match="data section of 32 bytes exceeds the limit 31"):
        read_safetensors(path)
