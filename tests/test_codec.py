"""Images <-> .mstf bytes (codec.py) with a small random-weight model: exact round trips.

The reference for a decoded image is the model's own forward pass,
to_uint8(crop(clip(forward(pad(x)).x_hat, 0, 1))): in float32 mode compress,
decompress and forward run the same float32 operations on the same symbols, so the
images are equal exactly. In portable mode the entropy-parameter path (mu, scale,
LRP) runs in float64, so y_hat differs from forward's float32 y_hat by rounding;
after g_s a handful of pixels land on the other side of a half level. The exact
reference there is the encoder's own reconstruction (its float64 y_hat through g_s).

The fixtures here (small shipped-weights folder, model) are shared with
test_cli.py and test_fuzz.py.
"""
import numpy as np
import pytest

from minstf.backend import to_host
from minstf.bitstream import unpack
from minstf.codec import decode_image, encode_image, read_header
from minstf.config import STFConfig
from minstf.entropy_models import eb_tables, gc_tables, quantize_symbols
from minstf.errors import BadInput, WrongWeights
from minstf.image import crop, eval_padding, pad, to_float, to_uint8
from minstf.model import nchw
from minstf.coding import channel_first_flat, symbols_crc
from minstf.slices import slice_of
from minstf.synthetic import recipe_weights
from minstf.transforms import g_s
from minstf.weights import save_weights
from minstf.zoo import load_model

SMALL = STFConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_slices=4,
                  max_support_slices=2, slice_hidden=(64, 48, 40, 32))
HEADER_BYTES = 61 + len("stf") + 4 * SMALL.num_slices   # bitstream.py's table


def sample_image(h, w, seed=0):
    """A smooth gradient plus noise: some flat areas, some texture, some escapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([255 * yy / max(h, 1), 255 * xx / max(w, 1), 128 + 0 * yy], axis=-1)
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


_SHIPPED = {}


def write_small_weights(folder):
    """stf-small-q{1,2,3}.safetensors of SMALL: the golden recipe, scaled by 0.99 / 1 / 1.01
    outside the entropy bottleneck, so that the three fingerprints differ."""
    base = recipe_weights(SMALL)
    eb = {k.split(".", 1)[1]: v for k, v in base.items() if k.startswith("entropy_bottleneck.")}
    tables = {**eb_tables(eb), **gc_tables()}
    for q in (1, 2, 3):
        scale = np.float32(1 + 0.01 * (q - 2))
        params = {k: v if k.startswith("entropy_bottleneck.") else v * scale for k, v in base.items()}
        save_weights(folder / f"stf-small-q{q}.safetensors", params, tables, SMALL)
    return folder


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory):
    """A folder of small shipped-style weights (made once per session, whichever module asks)."""
    if "dir" not in _SHIPPED:
        _SHIPPED["dir"] = write_small_weights(tmp_path_factory.mktemp("small-weights"))
    return _SHIPPED["dir"]


@pytest.fixture(scope="session")
def model(small_weights):
    return load_model(small_weights / "stf-small-q2.safetensors")


def forward_reference(model, image):
    """(uint8 image of the forward pass, z symbol CRC, y slice CRCs) for uint8 (H, W, 3)."""
    h, w = image.shape[:2]
    ltrb = eval_padding(h, w, model.config.pad_multiple)
    taps = {}
    out = model.forward(pad(to_float(image), ltrb), taps=taps)
    decoded = to_uint8(crop(np.clip(out["x_hat"], 0, 1), ltrb))
    z_crc = symbols_crc(channel_first_flat(quantize_symbols(taps["z"], model.medians)))
    y_crcs = tuple(symbols_crc(channel_first_flat(quantize_symbols(slice_of(taps["y"], s, SMALL),
                                                                   slice_of(taps["mu"], s, SMALL))))
                   for s in range(SMALL.num_slices))
    return decoded, z_crc, y_crcs


def encoder_reconstruction(model, image, portable):
    """The image the encoder expects the decoder to produce: its own y_hat through g_s."""
    h, w = image.shape[:2]
    ltrb = eval_padding(h, w, model.config.pad_multiple)
    taps = {}
    model.compress(pad(to_float(image), ltrb), portable=portable, taps=taps)
    y_hat = taps["y_hat_pre_lrp"] + 0.5 * np.tanh(taps["lrp_raw"])          # (1, H4, W4, M)
    x_hat = nchw(np.clip(g_s(y_hat.astype(np.float32), model.params, model.config), 0, 1))
    return to_uint8(crop(x_hat, ltrb))


SIZES = [(1, 1), (7, 13), (64, 64), (65, 130), (33, 71)]


@pytest.mark.parametrize("h, w", SIZES)
def test_float32_round_trip_equals_forward(model, h, w):
    image = sample_image(h, w, seed=h * 1000 + w)
    data, stats = encode_image(model, image, portable=False)
    decoded, header = decode_image(model, data)       # every slice's symbol CRC checked inside
    reference, z_crc, y_crcs = forward_reference(model, image)
    assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, reference)
    assert (header.z_crc, header.y_crcs) == (z_crc, y_crcs)   # compress's symbols are forward's
    assert (header.height, header.width, header.portable) == (h, w, False)
    assert header.padding == eval_padding(h, w)


@pytest.mark.parametrize("h, w", [(7, 13), (65, 130)])
def test_portable_round_trip(model, h, w):
    image = sample_image(h, w, seed=7)
    data, _ = encode_image(model, image, portable=True)
    decoded, header = decode_image(model, data)
    assert header.portable
    np.testing.assert_array_equal(decoded, encoder_reconstruction(model, image, portable=True))
    reference, _, _ = forward_reference(model, image)
    diff = np.abs(decoded.astype(int) - reference)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, "float64 vs float32 y_hat: rare 1-level flips only"


def test_float32_encoder_reconstruction_is_forward(model):
    image = sample_image(40, 50, seed=3)
    np.testing.assert_array_equal(encoder_reconstruction(model, image, portable=False),
                                  forward_reference(model, image)[0])


def test_deterministic_bytes(model):
    image = sample_image(20, 30, seed=1)
    first = encode_image(model, image, portable=False)[0]
    encode_image(model, sample_image(30, 20, seed=2), portable=True)   # no state carried over
    assert encode_image(model, image, portable=False)[0] == first
    assert encode_image(model, image.copy(), portable=True)[0] != first   # the flag, at least


def test_file_and_payload_bpp(model):
    h, w = 33, 71
    data, stats = encode_image(model, sample_image(h, w), portable=False)
    header, z, y = unpack(data)
    assert stats.file_bytes == len(data) == HEADER_BYTES + len(z) + len(y)
    assert stats.payload_bytes == len(z) + len(y)
    assert stats.bpp == pytest.approx(8 * len(data) / (h * w))
    assert stats.payload_bpp == pytest.approx(8 * (len(z) + len(y)) / (h * w))
    assert stats.bpp - stats.payload_bpp == pytest.approx(8 * HEADER_BYTES / (h * w))


def test_read_header_checks_the_weights(model, small_weights):
    data, _ = encode_image(model, sample_image(8, 8), portable=False)
    header, _, _ = read_header(data)                  # no model: format checks only
    assert header.fingerprint == bytes.fromhex(model.fingerprint)[:16]
    other = load_model(small_weights / "stf-small-q1.safetensors")
    with pytest.raises(WrongWeights, match=f"made with weights {header.fingerprint[:6].hex()}"):
        decode_image(other, data)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_encode_refuses_non_rgb8(model, bad):
    with pytest.raises(BadInput):
        encode_image(model, bad)


def test_decoded_image_is_a_host_array(model):
    decoded, _ = decode_image(model, encode_image(model, sample_image(5, 5), portable=False)[0])
    assert isinstance(decoded, np.ndarray) and to_host(decoded) is decoded and decoded.flags.c_contiguous


# --- the two kernel layers run the same codec -------------------------------------------------------
@pytest.fixture(scope="module")
def reference_model(small_weights):
    return load_model(small_weights / "stf-small-q2.safetensors", kernels="reference")


def test_reference_layer_forward_equals_fast(model, reference_model):
    x = pad(to_float(sample_image(37, 53, seed=4)), eval_padding(37, 53))
    fast, ref = model.forward(x), reference_model.forward(x)
    np.testing.assert_allclose(ref["x_hat"], fast["x_hat"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(ref["likelihoods"]["y"], fast["likelihoods"]["y"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(ref["likelihoods"]["z"], fast["likelihoods"]["z"], rtol=0, atol=2e-5)


@pytest.mark.parametrize("encoder, decoder", [("fast", "reference"), ("reference", "fast")])
def test_a_file_encoded_on_one_layer_decodes_on_the_other(model, reference_model, encoder, decoder):
    """Portable files: the decisions (float64 entropy parameters) agree across layers, so the
    other layer decodes the file; its image differs from the encoder layer's own decode only by
    float32 noise in the synthesis (at most one level of 255, rarely)."""
    layers = {"fast": model, "reference": reference_model}
    image = sample_image(33, 71, seed=9)
    data, _ = encode_image(layers[encoder], image, portable=True)
    decoded, header = decode_image(layers[decoder], data)  # every slice's symbol CRC checked inside
    own, _ = decode_image(layers[encoder], data)
    diff = np.abs(decoded.astype(int) - own)
    assert header.portable and diff.max() <= 1 and (diff > 0).mean() < 1e-2
