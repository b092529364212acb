"""The whole model against the golden vector, without teacher forcing (docs/golden.md §5 steps 7-9),
on both kernel layers (the `model` fixture runs every test with kernels="fast" and "reference").

Tolerances: atol 1e-4 on unit-scale float tensors, 1e-5 on likelihoods (an
independent float32 implementation reached <= 1.3e-5 and <= 7.6e-6). Symbols,
indexes and z symbols compare exactly. Byte strings cannot be equal (minstf codes
with constriction, upstream with its own rANS); their lengths must agree within
0.5% for y (18104 bytes) and within one 32-bit word for z (772 bytes).
"""
import numpy as np
import pytest

from minstf.config import STFConfig
from minstf.entropy_models import eb_tables, gc_tables
from minstf.image import crop, pad, psnr
from minstf.model import STF, nchw
from minstf.switch import KERNELS

ATOL, ATOL_LIK = 1e-4, 1e-5


def close(name, ours, ref, atol):
    err = float(np.abs(np.asarray(ours, np.float64) - ref).max())
    print(f"{name:>18}: max abs error {err:.2e}")
    assert ours.shape == ref.shape, name
    assert err <= atol, f"{name}: max abs error {err:.2e} > {atol:.0e}"


@pytest.fixture(scope="module", params=KERNELS)
def model(golden_params, request):
    eb = {k.split(".", 1)[1]: v for k, v in golden_params.items() if k.startswith("entropy_bottleneck.")}
    return STF(STFConfig(), golden_params, {**eb_tables(eb), **gc_tables()}, fingerprint="00" * 32,
               kernels=request.param)


@pytest.fixture(scope="module")
def run_a(model, golden):
    """forward, compress and decompress of input A, once for all tests below."""
    fwd_taps, cmp_taps = {}, {}
    out = model.forward(golden["x"], taps=fwd_taps)
    compressed = model.compress(golden["x"], taps=cmp_taps)
    return out, fwd_taps, compressed, cmp_taps, model.decompress(compressed)


def test_forward_matches_golden(run_a, golden):
    out, taps = run_a[0], run_a[1]
    close("y", nchw(taps["y"]), golden["y"], ATOL)
    close("z", nchw(taps["z"]), golden["z"], ATOL)
    np.testing.assert_array_equal(nchw(taps["z_hat"]), golden["z_hat"])
    close("latent_means", nchw(taps["latent_means"]), golden["latent_means"], ATOL)
    close("mu", nchw(taps["mu"]), golden["mu"], ATOL)
    close("scale", nchw(taps["scale"]), golden["scale"], ATOL)
    close("lrp_raw", nchw(taps["lrp_raw"]), golden["lrp_raw"], ATOL)
    close("y_hat", nchw(taps["y_hat"]), golden["y_hat"], ATOL)
    close("x_hat_forward", out["x_hat"], golden["x_hat_forward"], ATOL)
    close("lik_y", out["likelihoods"]["y"], golden["lik_y"], ATOL_LIK)
    close("lik_z", out["likelihoods"]["z"], golden["lik_z"], ATOL_LIK)


def test_compress_symbols_and_indexes_exact(run_a, golden, model):
    compressed, taps = run_a[2], run_a[3]
    from minstf.entropy_models import build_indexes
    np.testing.assert_array_equal(nchw(build_indexes(taps["scale"])), golden["index"])
    symbols = np.rint(golden["y"] - nchw(taps["mu"])).astype(np.int32)
    np.testing.assert_array_equal(symbols, golden["symbols"])
    # y: one stream over 12 slices; z: one row per channel
    y_len, z_len = len(compressed.y_string), len(compressed.z_string)
    print(f"y string {y_len} bytes (upstream {golden['y_string_len']}), z {z_len} ({golden['z_string_len']})")
    assert abs(y_len - golden["y_string_len"]) <= 0.005 * golden["y_string_len"]
    assert abs(z_len - golden["z_string_len"]) <= 4


def test_decompress_matches_golden_and_forward(run_a, golden):
    out, x_hat = run_a[0], run_a[4]
    close("x_hat_decompress", x_hat, golden["x_hat_decompress"], ATOL)
    # decompress reproduces forward's reconstruction, clamped (same symbols, same y_hat)
    np.testing.assert_allclose(x_hat, np.clip(out["x_hat"], 0, 1), atol=1e-6)


def test_portable_mode_gives_the_same_symbols(model, golden, run_a):
    """float64 entropy parameters: the golden inputs keep clear of thresholds, so every
    symbol and index agrees with the float32 path (their CRCs are equal)."""
    c64 = model.compress(golden["x"], portable=True)
    assert c64.slice_crcs == run_a[2].slice_crcs and c64.z_crc == run_a[2].z_crc
    close("x_hat (portable)", model.decompress(c64), golden["x_hat_decompress"], ATOL)


def test_input_b_raw_and_evaluation_padding(model, golden):
    """Input B (121x183): odd sizes through every padding path, then the evaluation
    convention (centred padding to 128x192, compress, decompress, crop)."""
    out = model.forward(golden["b_x"])
    close("b_x_hat_forward", out["x_hat"], golden["b_x_hat_forward"], ATOL)
    close("b_lik_y", out["likelihoods"]["y"], golden["b_lik_y"], ATOL_LIK)
    ltrb = (4, 3, 5, 4)
    np.testing.assert_array_equal(golden["b_eval_padding_ltrb"], ltrb)
    x_padded = pad(golden["b_x"], ltrb)
    c = model.compress(x_padded)
    x_hat = crop(model.decompress(c), ltrb)
    close("b_eval_x_hat", x_hat, golden["b_eval_x_hat"], ATOL)
    payload = len(c.y_string) + len(c.z_string)
    bpp = payload * 8 / (121 * 183)
    print(f"B eval: {payload} payload bytes, {bpp:.4f} bpp (upstream {float(golden['b_eval_bpp']):.4f})")
    assert abs(bpp - golden["b_eval_bpp"]) <= 0.005 * golden["b_eval_bpp"]
    assert abs(psnr(golden["b_x"], x_hat) - golden["b_eval_psnr"]) < 1e-3
