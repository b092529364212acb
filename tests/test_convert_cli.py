"""Converting upstream checkpoints in every layout seen in the wild, through the API and `minstf convert`."""
import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from minstf.cli import main
from minstf.config import STFConfig
from minstf.convert import convert
from minstf.entropy_models import eb_tables, gc_tables
from minstf.errors import OutputExists, WeightsError
from minstf.synthetic import recipe_weights
from minstf.weights import load_weights, write_safetensors

from test_checkpoint import SMALL, _Evil, _replace_pickle, save_checkpoint, torch, torch_state_dict


@pytest.fixture(scope="module")
def small():
    params = recipe_weights(SMALL)
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    return params, {**eb_tables(eb), **gc_tables()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, small):
    path = tmp_path_factory.mktemp("ckpt") / "stf_0035_best.pth.tar"
    save_checkpoint(path, torch_state_dict(small[0]))
    return path


def _assert_converted(path, small, config=SMALL):
    params, tables = small
    w = load_weights(path)
    assert w.config == config
    for key, value in params.items():
        np.testing.assert_array_equal(w.params[key], value, err_msg=key)
    for key, value in tables.items():  # recomputed, whatever the checkpoint held
        np.testing.assert_array_equal(w.tables[key], value, err_msg=key)
    return w


LAYOUTS = {  # name: (torch_state_dict options, training checkpoint?)
    "train.py checkpoint": (dict(), True),
    "bare state dict": (dict(), False),
    "DataParallel module. prefix": (dict(prefix="module."), True),
    "CompressAI 1.2.7 matrices.N": (dict(eb_names="matrices"), True),
    "older _matrices.N": (dict(eb_names="_matrices", prefix="module."), False),
    "filled CDF tables": (dict(tables="filled"), True),
    "h_s left-overs": (dict(extra=("h_s.0.weight", "h_s.0.bias")), False),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_convert_every_checkpoint_layout(tmp_path, small, layout):
    options, training = LAYOUTS[layout]
    ckpt = tmp_path / "in.pth.tar"
    save_checkpoint(ckpt, torch_state_dict(small[0], **options), training=training)
    w = convert(ckpt, tmp_path / "out.safetensors", name="small test")  # config inferred from shapes
    assert w.fingerprint == _assert_converted(tmp_path / "out.safetensors", small).fingerprint
    assert w.metadata["name"] == "small test" and w.metadata["source"] == "in.pth.tar"


def test_convert_safetensors_inputs(tmp_path, small, checkpoint):
    sd = {k: v.numpy() for k, v in torch_state_dict(small[0], prefix="module.").items()}
    write_safetensors(tmp_path / "sd.safetensors", sd, {})  # a plain state dict, int64 buffers included
    convert(tmp_path / "sd.safetensors", tmp_path / "a.safetensors")
    convert(tmp_path / "a.safetensors", tmp_path / "b.safetensors")  # a minstf file converts to itself
    a, b = (_assert_converted(tmp_path / f"{n}.safetensors", small) for n in "ab")
    assert a.fingerprint == b.fingerprint


def test_convert_checks_a_given_config(tmp_path, checkpoint):
    expected = r"embed_dim: checkpoint 16, given 48; depths: checkpoint \(1, 1, 2, 1\)"
    with pytest.raises(WeightsError, match=expected):
        convert(checkpoint, tmp_path / "out.safetensors", config=STFConfig())
    convert(checkpoint, tmp_path / "out.safetensors", config=SMALL)


def test_convert_refuses_overwrite_before_reading(tmp_path, checkpoint):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        convert(checkpoint, out)
    assert out.read_bytes() == b"keep me"


# --- the command line ------------------------------------------------------------------------

def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_convert(tmp_path, small, checkpoint):
    out = tmp_path / "stf.safetensors"
    r = _run("convert", checkpoint, out, "--name", "stf-small")
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and r.stderr.startswith(f"wrote {out}: ")
    assert _assert_converted(out, small).metadata["name"] == "stf-small"

    r = _run("convert", checkpoint, out)  # refuses to overwrite
    assert r.exit_code == OutputExists.exit_code
    assert r.stderr.startswith("minstf: error: ") and r.stderr.count("\n") == 1 and "--force" in r.stderr
    assert _run("convert", checkpoint, out, "--force").exit_code == 0


def test_cli_convert_bad_inputs(tmp_path, checkpoint):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(os.urandom(1000))
    evil = tmp_path / "evil.pth.tar"
    evil.write_bytes(checkpoint.read_bytes())
    _replace_pickle(evil, pickle.dumps(_Evil(os.system, f"touch {tmp_path / 'pwned'}"), protocol=2))
    for bad, words in ((junk, "neither a PyTorch zip checkpoint nor a safetensors file"),
                       (evil, "refuses to load posix.system")):
        r = _run("convert", bad, tmp_path / "out.safetensors")
        assert r.exit_code == WeightsError.exit_code
        assert r.stderr.startswith("minstf: error: ") and words in r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.output
        assert not (tmp_path / "out.safetensors").exists()
    assert not (tmp_path / "pwned").exists()
    assert _run("convert", tmp_path / "missing.pth.tar", tmp_path / "o").exit_code == 1  # no such file (README)
    assert _run("convert", checkpoint).exit_code == 2


@pytest.mark.slow
def test_convert_full_size_golden_recipe(tmp_path, golden_params, golden):
    """The default STF (100M parameters) through torch.save and convert; tables as upstream's."""
    ckpt = tmp_path / "golden.pth.tar"
    torch.save({k: torch.from_numpy(v) for k, v in golden_params.items()}, ckpt)  # no buffers at all
    w = convert(ckpt, tmp_path / "golden.safetensors")
    assert w.config == STFConfig()
    loaded = load_weights(tmp_path / "golden.safetensors")
    assert loaded.fingerprint == w.fingerprint
    for name in ("quantized_cdf", "offset", "cdf_length"):
        np.testing.assert_array_equal(loaded.tables[f"gaussian_conditional._{name}"], golden[f"gc_{name}"])
    np.testing.assert_array_equal(loaded.tables["gaussian_conditional.scale_table"], golden["gc_scale_table"])
    np.testing.assert_array_equal(loaded.tables["entropy_bottleneck._offset"], golden["eb_offset"])
    np.testing.assert_array_equal(loaded.tables["entropy_bottleneck._cdf_length"], golden["eb_cdf_length"])
    # the z table may differ from upstream's in rows with float32 rounding ties
    # (test_entropy_models.py::test_eb_tables_from_weights); here: it is eb_tables of the weights
    eb = {k.split(".", 1)[1]: v for k, v in golden_params.items() if k.startswith("entropy_bottleneck.")}
    np.testing.assert_array_equal(loaded.tables["entropy_bottleneck._quantized_cdf"],
                                  eb_tables(eb)["entropy_bottleneck._quantized_cdf"])
