"""The whole WACNN (`cnn`) model against its golden vector, free-running, on both kernel layers
(docs/wacnn.md §6): the STF class with minstf/wacnn.py as its transforms.

Floats: atol 1e-4, likelihoods 1e-5. Symbols, scale indexes and z symbols exactly (their
smallest golden margins, 1.2e-5 .. 4e-4, exceed our float error). Byte strings cannot be
equal (minstf codes with constriction, upstream with its own rANS): lengths within 0.5 %
for y, one 32-bit word for z; the decoded symbols are the golden ones.
"""
import numpy as np
import pytest

from minstf import wacnn
from minstf.config import WACNN_CONFIG
from minstf.entropy_models import build_indexes, eb_tables, gc_tables, quantize_symbols
from minstf.image import crop, pad, psnr
from minstf.model import STF, nchw
from minstf.switch import KERNELS


ATOL, ATOL_LIK = 1e-4, 1e-5


def close(name, ours, ref, atol):
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{name}: {ours.shape} != {ref.shape}"
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    print(f"{name:>22}: max abs error {err:.2e}")
    assert err <= atol, f"{name}: max abs error {err:.2e} > {atol:.0e}"


@pytest.fixture(scope="module", params=KERNELS)
def model(cnn_params, request):
    eb = {k.split(".", 1)[1]: v for k, v in cnn_params.items() if k.startswith("entropy_bottleneck.")}
    return STF(WACNN_CONFIG, cnn_params, {**eb_tables(eb), **gc_tables()}, fingerprint="00" * 32,
               kernels=request.param)


def test_the_model_runs_wacnns_transforms(model):
    assert model.t is wacnn and model.model == "cnn"


def test_tables_are_the_golden_ones(model, cnn_golden):
    """The Gaussian table is the golden one exactly (weights play no part); the factorized prior's
    differs in 3 of 192 rows, where upstream's pmf * 65536 is an exact .5 tie (docs/wacnn.md §6)."""
    g = cnn_golden
    np.testing.assert_array_equal(model.gc_table.cdf, g["gc_quantized_cdf"])
    np.testing.assert_array_equal(model.gc_table.cdf_length, g["gc_cdf_length"])
    np.testing.assert_array_equal(model.eb_table.cdf_length, g["eb_cdf_length"])
    np.testing.assert_array_equal(model.eb_table.offset, g["eb_offset"])
    assert (model.eb_table.cdf != g["eb_quantized_cdf"]).any(axis=1).sum() <= 3


@pytest.mark.parametrize("run", ["", "b_"])
def test_forward_compress_decompress(model, cnn_golden, run):
    g = cnn_golden
    x = g[f"{run}x"]
    out = model.forward(x)
    close(f"{run}x_hat_forward", out["x_hat"], g[f"{run}x_hat_forward"], ATOL)
    close(f"{run}lik_y", out["likelihoods"]["y"], g[f"{run}lik_y"], ATOL_LIK)
    close(f"{run}lik_z", out["likelihoods"]["z"], g[f"{run}lik_z"], ATOL_LIK)
    taps = {}
    c = model.compress(x, taps=taps)
    np.testing.assert_array_equal(nchw(quantize_symbols(taps["y"], taps["mu"])), g[f"{run}symbols"])
    np.testing.assert_array_equal(nchw(build_indexes(taps["scale"])), g[f"{run}index"])
    close(f"{run}y", nchw(taps["y"]), g[f"{run}y"], ATOL)
    close(f"{run}mu", nchw(taps["mu"]), g[f"{run}mu"], ATOL)
    close(f"{run}y_hat (compress)", nchw(taps["y_hat"]), g[f"{run}y_hat"], ATOL)
    assert c.y_shape == g[f"{run}y"].shape[2:]
    assert abs(len(c.y_string) - len(g[f"{run}y_string"])) <= 0.005 * len(g[f"{run}y_string"])
    assert abs(len(c.z_string) - len(g[f"{run}z_string"])) <= 4
    x_hat = model.decompress(c)
    close(f"{run}x_hat_decompress", x_hat, g[f"{run}x_hat_decompress"], ATOL)


def test_evaluation_convention_on_input_b(model, cnn_golden):
    """Input B padded (centred, left/top 1, right/bottom 2) to 192x128, compressed, decompressed, cropped."""
    g = cnn_golden
    ltrb = (1, 1, 2, 2)
    np.testing.assert_array_equal(g["b_eval_padding_ltrb"], ltrb)
    taps = {}
    c = model.compress(pad(g["b_x"], ltrb), taps=taps)
    np.testing.assert_array_equal(nchw(quantize_symbols(taps["y"], taps["mu"])), g["b_eval_symbols"])
    np.testing.assert_array_equal(nchw(build_indexes(taps["scale"])), g["b_eval_index"])
    x_hat = crop(model.decompress(c), ltrb)
    close("b_eval_x_hat", x_hat, g["b_eval_x_hat"], ATOL)
    bpp = (len(c.y_string) + len(c.z_string)) * 8 / (189 * 125)
    assert abs(bpp - g["b_eval_bpp"]) <= 0.005 * g["b_eval_bpp"]
    assert abs(psnr(g["b_x"], x_hat) - g["b_eval_psnr"]) < 1e-3


def test_files_of_the_cnn_model_say_cnn_and_decode_only_with_it():
    """The .mstf header's model id is the model's ("cnn"), and a file decodes only with a model
    of that kind: an STF model refuses it (WrongWeights) before decoding anything."""
    from minstf.codec import decode_image, encode_image
    from minstf.config import SMALL_CONFIG, WACNN_SMALL_CONFIG
    from minstf.errors import WrongWeights
    from minstf.synthetic import recipe_weights

    def small(config):
        p = recipe_weights(config)
        eb = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("entropy_bottleneck.")}
        return STF(config, p, {**eb_tables(eb), **gc_tables()}, fingerprint="00" * 32)

    cnn, stf = small(WACNN_SMALL_CONFIG), small(SMALL_CONFIG)
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data, _ = encode_image(cnn, image)
    decoded, header = decode_image(cnn, data)
    assert header.model_id == "cnn" and decoded.shape == image.shape
    with pytest.raises(WrongWeights, match="'cnn', not 'stf'"):
        decode_image(stf, data)
    assert decode_image(stf, encode_image(stf, image)[0])[1].model_id == "stf"
