"""WACNN (`cnn`) weight files and checkpoints: save / load, `minstf convert` in every upstream
layout (docs/weights.md §3-§4), and a converted checkpoint through encode / decode / info.

Checkpoints are built from the small WACNN's recipe weights with the upstream buffers
(relative_position_index, GDN's reparametrisation constants, empty tables), written by
torch.save where torch is installed and as a safetensors state dict everywhere.
"""
import collections
import json

import numpy as np
import pytest
from click.testing import CliRunner

from minstf.cli import main
from minstf.codec import decode_image
from minstf.config import SMALL_CONFIG, WACNN_CONFIG, WACNN_SMALL_CONFIG, WACNNConfig
from minstf.convert import convert, infer_config
from minstf.entropy_models import eb_tables, gc_tables
from minstf.errors import WeightsError, WrongWeights
from minstf.image import read_image
from minstf.keys import (TABLE_BUFFERS, constant_buffers, wacnn_config_from_shapes, wacnn_param_spec,
                         wacnn_state_dict_spec)
from minstf.synthetic import recipe_weights
from minstf.weights import fingerprint, load_weights, save_weights, write_safetensors
from minstf.zoo import load_model

CONFIG = WACNN_SMALL_CONFIG


@pytest.fixture(scope="module")
def small():
    params = recipe_weights(CONFIG)
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    return params, {**eb_tables(eb), **gc_tables()}


def upstream_state_dict(params, config=CONFIG, prefix="", eb_names="_matrix", tables="empty", extra=()):
    """WACNN's state dict as upstream writes it (NumPy arrays, buffers included, upstream order).

    eb_names: "_matrix" (STF fork), "matrices" (CompressAI 1.2.7+), "_matrices" (older);
    tables: "empty" (train.py) or "filled" (after update(); arbitrary values, ignored by convert).
    """
    spec = wacnn_state_dict_spec(config)
    constants = constant_buffers(spec)
    sd = collections.OrderedDict()
    for s in spec:
        if s.kind == "param":
            value = params[s.key].copy()
        elif s.key in constants:
            value = constants[s.key].copy()
        elif s.key in TABLE_BUFFERS and tables == "filled":
            rows = config.N_z if s.key.startswith("entropy_bottleneck") else 64
            shape = (rows, 7) if s.key.endswith("_quantized_cdf") else (rows,)
            value = np.arange(np.prod(shape)).reshape(shape).astype(
                np.float32 if s.key.endswith("scale_table") else np.int32)
        else:
            value = np.zeros(s.shape, s.dtype)
        key = s.key
        name = key.split(".")[1] if key.startswith("entropy_bottleneck._") else ""
        for one, many in (("_matrix", "matrices"), ("_bias", "biases"), ("_factor", "factors")):
            if eb_names != "_matrix" and name.startswith(one) and name[len(one):].isdigit():
                lead = "_" if eb_names == "_matrices" else ""
                key = f"entropy_bottleneck.{lead}{many}.{name[len(one):]}"
        sd[prefix + key] = value
    for key in extra:
        sd[prefix + key] = np.zeros(3, np.float32)
    return sd


def _assert_converted(path, small):
    params, tables = small
    w = load_weights(path)
    assert w.config == CONFIG and w.metadata["model"] == "cnn"
    assert list(w.params) == [s.key for s in wacnn_param_spec(CONFIG)]
    for key, value in {**params, **tables}.items():  # tables recomputed, whatever the checkpoint held
        np.testing.assert_array_equal(w.params.get(key, w.tables.get(key)), value, err_msg=key)
    return w


# --- shapes -> configuration -------------------------------------------------------------------

@pytest.mark.parametrize("config", [WACNN_CONFIG, WACNN_SMALL_CONFIG,
                                    WACNNConfig(N=8, M=8, num_heads=1, window_sizes=(2, 1), num_slices=1,
                                                max_support_slices=0, slice_hidden=(4, 4, 4, 4)),
                                    WACNNConfig(in_chans=1, N=24, M=48, num_heads=4, window_sizes=(3, 5),
                                                num_slices=6, max_support_slices=5, slice_hidden=(9, 8, 7, 6)),
                                    WACNNConfig(N=12, M=20, num_heads=2, window_sizes=(8, 2), num_slices=5,
                                                max_support_slices=1, slice_hidden=(16, 12, 8, 4))])
def test_wacnn_config_from_shapes_inverts_the_spec(config):
    shapes = {s.key: s.shape for s in wacnn_state_dict_spec(config)}
    assert wacnn_config_from_shapes(shapes) == config
    params = {s.key: s.shape for s in wacnn_param_spec(config)}  # what a weight file holds
    assert wacnn_config_from_shapes(params) == config
    assert infer_config({"module." + k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}) == config


# --- minstf weight files for cnn ------------------------------------------------------------------

def test_save_load_round_trip_and_model(tmp_path, small):
    w = save_weights(tmp_path / "cnn.safetensors", *small, CONFIG, metadata={"name": "cnn small"})
    assert w.metadata["model"] == "cnn" and WACNNConfig.from_dict(json.loads(w.metadata["config"])) == CONFIG
    loaded = _assert_converted(tmp_path / "cnn.safetensors", small)
    assert loaded.fingerprint == w.fingerprint == fingerprint({**small[0], **small[1]})
    model = load_model(tmp_path / "cnn.safetensors")
    assert model.model == "cnn" and model.config == CONFIG and model.name == "cnn small"


def _write(path, tensors, model="cnn", config=CONFIG):
    """A weight file as anyone could write it: right fingerprint, the metadata given."""
    meta = {"format": "minstf-weights", "format_version": "1", "model": model,
            "config": json.dumps(config if isinstance(config, dict) else config.to_dict()),
            "fingerprint": fingerprint(tensors)}
    write_safetensors(path, tensors, meta)
    return path


def test_load_refuses_what_does_not_fit(tmp_path, small):
    params, tables = small
    tensors = {**params, **tables}
    all_support = WACNNConfig(**{**CONFIG.to_dict(), "max_support_slices": 3})
    cases = {  # name: (file, words of the message)
        "unknown model": (_write(tmp_path / "a", tensors, model="xyz"), "model 'xyz' not supported"),
        "stf config": (_write(tmp_path / "b", tensors, config=SMALL_CONFIG), "unknown configuration fields"),
        "stf model id": (_write(tmp_path / "c", tensors, model="stf"), "unknown configuration fields"),
        "other config": (_write(tmp_path / "d", tensors, config=WACNNConfig(**{**CONFIG.to_dict(), "N": 20})),
                         "does not fit the WACNN configuration"),
        # support 3 of 4 slices: the same shapes as support 4, which the metadata must not say
        "implied config": (_write(tmp_path / "e", {**recipe_weights(all_support), **tables},
                                  config=WACNNConfig(**{**all_support.to_dict(), "max_support_slices": 4})),
                           "max_support_slices is 4 in the configuration but 3 in the tensors"),
        "missing key": (_write(tmp_path / "f", {k: v for k, v in tensors.items() if k != "g_s.3.bias"}),
                        "1 missing: g_s.3.bias"),
        "z table rows": (_write(tmp_path / "g", {**tensors, "entropy_bottleneck._quantized_cdf":
                                                 tables["entropy_bottleneck._quantized_cdf"][:-1]}),
                         "entropy_bottleneck._quantized_cdf has shape (15, "),
        "NaN": (_write(tmp_path / "h", {**tensors, "g_a.1.gamma": np.full_like(params["g_a.1.gamma"], np.nan)}),
                "non-finite values (NaN or Inf) in 1 parameters: g_a.1.gamma"),
    }
    for name, (path, words) in cases.items():
        with pytest.raises(WeightsError) as e:
            load_weights(path)
        assert words in str(e.value), (name, str(e.value))


# --- convert: every layout -----------------------------------------------------------------------

LAYOUTS = {  # name: upstream_state_dict options
    "bare state dict": dict(),
    "DataParallel module. prefix": dict(prefix="module."),
    "CompressAI 1.2.7 matrices.N": dict(eb_names="matrices"),
    "older _matrices.N": dict(eb_names="_matrices", prefix="module."),
    "filled CDF tables": dict(tables="filled"),
    "h_s left-overs": dict(extra=("h_s.0.weight", "h_s.0.bias")),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_convert_safetensors_state_dicts(tmp_path, small, layout):
    write_safetensors(tmp_path / "sd.safetensors", upstream_state_dict(small[0], **LAYOUTS[layout]), {})
    w = convert(tmp_path / "sd.safetensors", tmp_path / "out.safetensors", name="cnn test")
    assert w.config == CONFIG and w.metadata["model"] == "cnn" and w.metadata["name"] == "cnn test"
    assert _assert_converted(tmp_path / "out.safetensors", small).fingerprint == w.fingerprint


@pytest.mark.parametrize("layout", ["train.py checkpoint"] + list(LAYOUTS))
def test_convert_torch_checkpoints(tmp_path, small, layout):
    torch = pytest.importorskip("torch")
    sd = collections.OrderedDict((k, torch.from_numpy(v)) for k, v in
                                 upstream_state_dict(small[0], **LAYOUTS.get(layout, {})).items())
    if layout == "train.py checkpoint":  # docs/weights.md §4; optimizer state is never read
        moments = {i: {"step": torch.tensor(3.0), "exp_avg": torch.full_like(v, 1e-3)}
                   for i, v in enumerate(sd.values()) if v.is_floating_point() and v.numel()}
        sd = {"epoch": 3, "state_dict": sd, "loss": torch.tensor(1.5),
              "optimizer": {"state": moments, "param_groups": [{"lr": 1e-4, "params": list(moments)}]}}
    torch.save(sd, tmp_path / "cnn_0035_best.pth.tar")
    w = convert(tmp_path / "cnn_0035_best.pth.tar", tmp_path / "out.safetensors")
    assert w.metadata["source"] == "cnn_0035_best.pth.tar"
    assert _assert_converted(tmp_path / "out.safetensors", small).fingerprint == w.fingerprint


def test_convert_checks_a_given_config(tmp_path, small):
    write_safetensors(tmp_path / "sd.safetensors", upstream_state_dict(small[0]), {})
    with pytest.raises(WeightsError, match="checkpoint of model 'cnn', the given configuration is of model 'stf'"):
        convert(tmp_path / "sd.safetensors", tmp_path / "out.safetensors", config=SMALL_CONFIG)
    with pytest.raises(WeightsError, match="N: checkpoint 16, given 192"):
        convert(tmp_path / "sd.safetensors", tmp_path / "out.safetensors", config=WACNN_CONFIG)
    assert convert(tmp_path / "sd.safetensors", tmp_path / "out.safetensors", config=CONFIG).config == CONFIG


def _bad_checkpoints(params):
    """{name: (state dict, words its error must contain)}: what convert must name."""
    sd = upstream_state_dict
    missing = sd(params)
    del missing["g_s.3.bias"]
    inference = sd(params)
    del inference["g_a.7.weight"]  # a key the configuration is read from
    shaped = sd(params)
    shaped["h_a.2.weight"] = shaped["h_a.2.weight"][:, :, :1]
    unknown = sd(params, extra=("g_a.9.weight",))
    reparam = sd(params)
    reparam["g_s.4.beta_reparam.lower_bound.bound"] = np.array([1e-3], np.float32)
    pedestal = sd(params, prefix="module.")
    pedestal["module.g_a.6.gamma_reparam.pedestal"] = np.zeros(1, np.float32)
    index = sd(params)
    index["g_s.0.conv_b.0.attn.relative_position_index"] = np.zeros((4, 4), np.int64)
    neither = {k: v for k, v in sd(params).items() if not k.startswith("g_a.0.")}
    return {
        "missing key": (missing, "1 missing: g_s.3.bias"),
        "inference key": (inference, "cannot infer the WACNN configuration from the checkpoint's shapes "
                                     "(KeyError: 'g_a.7.weight')"),
        "wrong shape": (shaped, "1 mis-shaped: h_a.2.weight (28, 32, 1, 3) (expected (28, 32, 3, 3))"),
        "unknown key": (unknown, "1 unknown: g_a.9.weight"),
        "forged reparam bound": (reparam, "GDN reparametrisation buffers differ from their constants "),
        "forged pedestal": (pedestal, "g_a.6.gamma_reparam.pedestal"),
        "relative_position_index": (index, "relative_position_index differs from the one for its window size: "
                                           "g_s.0.conv_b.0.attn.relative_position_index"),
        "neither model": (neither, "cannot infer the model from the checkpoint's keys"),
    }


def test_convert_names_what_does_not_fit(tmp_path, small):
    for name, (sd, words) in _bad_checkpoints(small[0]).items():
        write_safetensors(tmp_path / "bad.safetensors", sd, {})
        with pytest.raises(WeightsError) as e:
            convert(tmp_path / "bad.safetensors", tmp_path / "out.safetensors")
        assert words in str(e.value), (name, str(e.value))
        assert not (tmp_path / "out.safetensors").exists()


# --- the command line: convert, encode, decode, info ---------------------------------------------

def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def converted(tmp_path_factory, small):
    """A folder: an upstream-layout WACNN checkpoint converted by `minstf convert` (cnn.safetensors),
    an image (img.png) and `minstf encode` of it with those weights (img.mstf)."""
    d = tmp_path_factory.mktemp("cnn")
    write_safetensors(d / "ckpt.safetensors", upstream_state_dict(small[0], prefix="module.",
                                                                   eb_names="matrices"), {})
    r = _run("convert", d / "ckpt.safetensors", d / "cnn.safetensors", "--name", "cnn-small")
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, 56)[None, :, None] * np.ones((40, 1, 3))
    image = np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)  # 40 x 56, padded to 64
    from PIL import Image
    Image.fromarray(image).save(d / "img.png")
    r = _run("encode", d / "img.png", "-o", d / "img.mstf", "--weights", d / "cnn.safetensors")
    assert r.exit_code == 0, r.output
    return d


def test_cli_encode_decode_info_with_converted_weights(converted):
    d = converted
    r = _run("decode", d / "img.mstf", "-o", d / "out.png", "--weights", d / "cnn.safetensors")
    assert r.exit_code == 0, r.output
    r = _run("info", d / "img.mstf")
    assert r.exit_code == 0, r.output
    assert any(line.split()[:2] == ["model", "cnn"] for line in r.stdout.splitlines()), r.stdout
    model = load_model(d / "cnn.safetensors")
    assert model.model == "cnn"
    own, header = decode_image(model, (d / "img.mstf").read_bytes())
    decoded = read_image(d / "out.png")
    assert header.model_id == "cnn" and own.shape == decoded.shape == (40, 56, 3)
    np.testing.assert_array_equal(decoded, own)


def test_cli_decode_with_stf_weights_is_wrong_weights(converted, tmp_path):
    d = converted
    stf = recipe_weights(SMALL_CONFIG)
    eb = {k.split(".", 1)[1]: v for k, v in stf.items() if k.startswith("entropy_bottleneck.")}
    save_weights(tmp_path / "stf.safetensors", stf, {**eb_tables(eb), **gc_tables()}, SMALL_CONFIG)
    r = _run("decode", d / "img.mstf", "-o", tmp_path / "out.png", "--weights", tmp_path / "stf.safetensors")
    assert r.exit_code == WrongWeights.exit_code == 5, r.output
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("case", ["missing key", "wrong shape", "forged reparam bound"])
def test_cli_convert_bad_checkpoints(tmp_path, small, case):
    sd, words = _bad_checkpoints(small[0])[case]
    write_safetensors(tmp_path / "bad.safetensors", sd, {})
    r = _run("convert", tmp_path / "bad.safetensors", tmp_path / "out.safetensors")
    assert r.exit_code == WeightsError.exit_code == 6, r.output
    assert r.stderr.startswith("minstf: error: ") and words in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "out.safetensors").exists()
