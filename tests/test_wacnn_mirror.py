"""The PyTorch mirror of WACNN (minstf.mirror.wacnn_torch) against the key inventory and the golden vector.

Not bit for bit: the golden vector was made by upstream's torch 2.13 on 2 threads on another
CPU, and convolutions (oneDNN) and GDN's 1x1 convolution sum in another order here; the
transposed convolutions come out bit for bit. Float tensors agree to 1e-5 relative
(|diff| <= 1e-5 * max(1, max|golden|); the golden file itself moves y by 2.1e-5 between 1 and 2
threads), likelihoods to 1e-5 absolute, symbols, scale indexes and z_hat exactly.
Run with `pytest -s` to see the largest error of every tensor.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minstf.config import WACNN_CONFIG, WACNN_SMALL_CONFIG  # noqa: E402
from minstf.keys import wacnn_state_dict_spec  # noqa: E402
from minstf.mirror import WACNNTorch  # noqa: E402
from minstf.synthetic import recipe_weights  # noqa: E402


torch.set_num_threads(1)  # robust on a shared 2-core machine (spinning OpenMP threads)

RTOL, LIK_ATOL = 1e-5, 1e-5
EXACT = ("symbols", "index", "z_hat")
LIKELIHOODS = ("lik_y", "lik_z")
FLOATS = ("y", "z", "latent_means", "latent_scales", "mu", "scale", "lrp_raw", "y_hat_pre_lrp", "y_hat",
          "x_hat_forward") + tuple(f"g_a{i}" for i in range(1, 8)) + tuple(f"g_s{i}" for i in (0, 1, 2, 3, 4, 5, 7)) \
    + tuple(f"{n}_{part}" for n in ("g_a8", "g_s0") for part in ("conv_a", "attn", "gate"))


def check_tensor(name, ours, ref):
    """name, max |difference|, its tolerance, OK / NOT OK (llm.c's check_tensor)."""
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != golden {ref.shape}"
    short = name[2:] if name.startswith("b_") else name
    if short in EXACT:
        err, tol = float(np.sum(ours != ref)), 0.0  # number of differing entries
    else:
        err = float(np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64))))
        tol = LIK_ATOL if short in LIKELIHOODS else RTOL * max(1.0, float(np.abs(ref).max()))
    exact = " (bit for bit)" if np.array_equal(ours, ref) else ""
    print(f"{name:16s} max|diff| {err:.3g}  tol {tol:.2g}  {'OK' if err <= tol else 'NOT OK'}{exact}")
    assert err <= tol, f"{name}: {err:.3g} > {tol:.2g}"


@pytest.mark.parametrize("config", [WACNN_CONFIG, WACNN_SMALL_CONFIG], ids=["default", "small"])
def test_state_dict_matches_key_spec(config):
    state = WACNNTorch(config).state_dict()
    spec = wacnn_state_dict_spec(config)
    assert list(state) == [s.key for s in spec]
    for s in spec:
        assert tuple(state[s.key].shape) == s.shape, s.key
        assert str(state[s.key].dtype) == f"torch.{s.dtype}", s.key


@pytest.fixture(scope="module")
def cnn_mirror(cnn_params):
    return WACNNTorch(WACNN_CONFIG).load_params(cnn_params).eval()


@pytest.mark.parametrize("prefix", ["", "b_"], ids=["input_A", "input_B"])
def test_taps_match_golden(cnn_golden, cnn_mirror, prefix):
    taps = cnn_mirror.taps(cnn_golden[prefix + "x"])
    compared = 0
    for name in EXACT + LIKELIHOODS + FLOATS:
        if prefix + name in cnn_golden:
            check_tensor(prefix + name, taps[name], cnn_golden[prefix + name])
            compared += 1
    assert compared >= (20 if prefix == "" else 10)


def test_forward_and_load_small():
    params = recipe_weights(WACNN_SMALL_CONFIG)
    model = WACNNTorch(WACNN_SMALL_CONFIG).load_params(params).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (1, WACNN_SMALL_CONFIG.M, 4, 4)
    assert out["likelihoods"]["z"].shape == (1, WACNN_SMALL_CONFIG.N, 1, 1)
    assert np.array_equal(model.taps(x)["x_hat"], out["x_hat"].numpy())
    with pytest.raises(AssertionError):
        WACNNTorch(WACNN_SMALL_CONFIG).load_params({k: v for k, v in params.items() if k != "g_s.8.bias"})


def test_crosscheck_small_wacnn():
    """minstf crosscheck on a WACNNConfig: the mirror chosen by the config, every layer map compared."""
    from minstf.tooling import crosscheck as xc

    x = np.random.default_rng(0).random((1, 3, 64, 128)).astype(np.float32)
    result = xc.crosscheck(xc.synthetic_params(WACNN_SMALL_CONFIG), WACNN_SMALL_CONFIG, x, force_teacher=True)
    report = xc.format_report(result)
    print(report)
    assert result.ok, report
    assert [r.name for r in result.rows] == xc.stage_names(WACNN_SMALL_CONFIG)  # no stage left out
    assert {"g_a4_attn", "g_s5_gate", "g_s7", "x_hat", "likelihoods y"} <= {r.name for r in result.rows}
    assert result.forced_rows and all(r.verdict == "OK" for r in result.forced_rows)
    assert all(d.differ == 0 for d in result.decisions)
    assert report.startswith("WACNN N 16, M 32") and "verdict: OK" in report
    assert abs(result.bpp["estimated_minstf"] - result.bpp["estimated_torch"]) < 1e-5
    assert result.bpp["coded_minstf"] == result.bpp["coded_torch_symbols"]


def test_crosscheck_wacnn_points_at_the_bad_layer():
    """A wrong g_s.3 bias on the minstf side only: the first NOT OK stage is g_s3, named in the hint."""
    from minstf.tooling import crosscheck as xc

    params = xc.synthetic_params(WACNN_SMALL_CONFIG)
    mirror = WACNNTorch(WACNN_SMALL_CONFIG).load_params(params).eval()
    buggy = dict(params, **{"g_s.3.bias": params["g_s.3.bias"] + np.float32(0.01)})
    x = np.random.default_rng(1).random((1, 3, 64, 64)).astype(np.float32)
    result = xc.crosscheck(buggy, WACNN_SMALL_CONFIG, x, mirror=mirror, code=False)
    assert not result.ok
    assert [r.name for r in result.rows if r.verdict == "NOT OK"][0] == "g_s3"
    assert "first NOT OK stage is g_s3" in xc.format_report(result) and "wacnn.layer" in xc.format_report(result)
