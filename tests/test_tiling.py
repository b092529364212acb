"""Tiling (minstf/rows.py, docs/tiling.md): every transform run in bands of rows equals the
whole-image run within float32 noise, for both models and both kernel layers; the geometry
(halo, window grid) is what makes it so; files do not depend on the tile.

Tolerance: 2e-5 x max(1, |whole|) (the bands change only the shapes of the matrix products).
"""
import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from minstf import rows, slices, transforms, wacnn
from minstf.cli import main
from minstf.codec import decode_image, encode_image, tile_rows
from minstf.config import SMALL_CONFIG, WACNN_SMALL_CONFIG
from minstf.image import PaddedRows, pad, psnr_uint8, to_float
from minstf.model import nhwc
from minstf.synthetic import recipe_weights
from minstf.tooling.crosscheck import minstf_model

TOL = 2e-5


def close(banded, whole):
    assert banded.shape == whole.shape
    np.testing.assert_allclose(banded, whole, rtol=0, atol=TOL * max(1.0, float(np.abs(whole).max())))


def by_rows(layers, x, band):
    return rows.collect(layers, lambda a, b: x[:, a:b], x.shape[1], band)


@pytest.fixture(scope="module")
def stf_params():
    return {k: v.astype(np.float32) for k, v in recipe_weights(SMALL_CONFIG).items()}


@pytest.fixture(scope="module")
def cnn_params():
    return {k: v.astype(np.float32) for k, v in recipe_weights(WACNN_SMALL_CONFIG).items()}


@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("H, W, band", [(200, 131, 8), (333, 70, 40), (96, 50, 1000)])
def test_stf_transforms_by_rows_equal_the_whole_image(stf_params, kernels, H, W, band):
    """Odd sizes (the padding of every stage, the cyclic shift at the bottom edge), bands smaller
    than a window of the last stage, and one band larger than the image."""
    p, c = stf_params, SMALL_CONFIG
    x = np.random.default_rng(H).random((1, H, W, 3), dtype=np.float32)
    y = transforms.g_a(x, p, c, kernels=kernels)
    close(by_rows(transforms.g_a_rows(p, c, kernels), x, band), y)
    close(by_rows(transforms.g_s_rows(p, c, kernels), y, max(1, band // 16)), transforms.g_s(y, p, c, kernels=kernels))
    z = transforms.apply(transforms.h_a_rows(p, c, kernels), y)
    close(by_rows(transforms.h_a_rows(p, c, kernels), y, 3), z)
    close(by_rows(transforms.h_s_rows(p, "h_scale_s", kernels), z, 1), transforms.apply(
        transforms.h_s_rows(p, "h_scale_s", kernels), z))


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_wacnn_transforms_by_rows_equal_the_whole_image(cnn_params, kernels):
    p, c = cnn_params, WACNN_SMALL_CONFIG
    x = np.random.default_rng(3).random((1, 320, 64, 3), dtype=np.float32)
    y = wacnn.g_a(x, p, c, kernels=kernels)
    for band in (8, 40, 1000):
        close(by_rows(wacnn.g_a_rows(p, c, kernels), x, band), y)
        close(by_rows(wacnn.g_s_rows(p, c, kernels), y, max(1, band // 16)), wacnn.g_s(y, p, c, kernels=kernels))


@pytest.mark.parametrize("wrong", [{"halo": 0}, {"offset": 0}])
def test_the_geometry_of_shifted_windows_is_what_makes_bands_exact(stf_params, wrong):
    """Without the shifted blocks' halo, or with their bands on the unshifted grid, bands are wrong."""
    p, c = stf_params, SMALL_CONFIG
    x = np.random.default_rng(0).random((1, 256, 96, 3), dtype=np.float32)
    layers = [dataclasses.replace(layer, **wrong) if layer.offset else layer
              for layer in transforms.g_a_rows(p, c)]
    error = np.abs(by_rows(layers, x, 32) - transforms.g_a(x, p, c)).max()
    assert error > 100 * TOL * np.abs(transforms.g_a(x, p, c)).max()


def test_padded_rows_equal_the_whole_conversion():
    image = np.random.default_rng(1).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    ltrb = (3, 14, 0, 13)
    whole = nhwc(pad(to_float(image), ltrb))  # (1, 64, 32, 3)
    source = PaddedRows(image, ltrb)
    assert source.shape == (1, 3, 64, 32)
    got = np.concatenate([source.rows(a, min(a + 10, 64)) for a in range(0, 64, 10)], axis=1)
    np.testing.assert_array_equal(got, whole)  # the same float32 divisions


@pytest.fixture(scope="module")
def small_model(stf_params):
    return minstf_model(stf_params, SMALL_CONFIG)


def test_latent_bands_equal_the_whole_latent(small_model, monkeypatch):
    """The hyperprior and slice networks in bands of 4 latent rows (LATENT_BAND is 64: an image
    of more than 1024 rows) give the whole-map likelihoods and reconstruction; a file coded so
    decodes so."""
    x = np.random.default_rng(2).random((1, 3, 192, 128), dtype=np.float32)
    whole = small_model.forward(x)
    monkeypatch.setattr(slices, "BAND", 4)
    monkeypatch.setattr(transforms, "LATENT_BAND", 4)
    banded = small_model.forward(x)
    close(banded["x_hat"], whole["x_hat"])
    for name in ("y", "z"):
        close(banded["likelihoods"][name], whole["likelihoods"][name])
    c = small_model.compress(x, portable=True)
    assert small_model.decompress(c).shape == (1, 3, 192, 128)


def test_tile_rows():
    assert tile_rows("auto", (1024, 1024)) is None  # small images run whole
    assert tile_rows("auto", (4096, 4096)) == 256  # ~1 MP bands
    assert tile_rows("auto", (4096, 16384)) == 128  # at least 128 rows
    assert tile_rows(0, (8192, 8192)) is None
    assert tile_rows(64, (8192, 8192)) == 64
    assert tile_rows(512, (256, 256)) is None  # a band as tall as the image is the whole image


def test_files_do_not_depend_on_the_tile(small_model):
    """An odd-size image coded whole and in bands of 32 rows: both files decode, with the same
    decoder decisions whatever the decoder's tile, to images equal within float32 noise."""
    image = np.random.default_rng(4).integers(0, 256, (150, 101, 3), dtype=np.uint8)
    image = np.cumsum(image, axis=1, dtype=np.uint16).astype(np.uint8)  # some structure
    whole, _ = encode_image(small_model, image, tile=0)
    banded, _ = encode_image(small_model, image, tile=32)
    assert abs(len(banded) - len(whole)) <= 0.01 * len(whole)
    a, _ = decode_image(small_model, whole, tile=0)
    b, _ = decode_image(small_model, whole, tile=16)
    assert np.abs(a.astype(int) - b).max() <= 1
    c, _ = decode_image(small_model, banded, tile=16)
    assert psnr_uint8(a, c) > 40


def test_cli_tile_option(tmp_path):
    from PIL import Image
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(src)
    runner = CliRunner()
    r = runner.invoke(main, ["encode", str(src), "-o", str(tmp_path / "a.mstf"), "--tile", "16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["decode", str(tmp_path / "a.mstf"), "-o", str(tmp_path / "b.png"), "--tile", "32"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "b.png").size == (90, 70)
    for bad in ("8", "big", "-1"):
        r = runner.invoke(main, ["encode", str(src), "-o", str(tmp_path / "c.mstf"), "--tile", bad])
        assert r.exit_code == 2 and "--tile" in r.output, r.output


def test_wacnn_files_do_not_depend_on_the_tile(cnn_params):
    model = minstf_model(cnn_params, WACNN_SMALL_CONFIG)
    image = np.random.default_rng(6).integers(0, 256, (200, 70, 3), dtype=np.uint8)
    whole, _ = encode_image(model, image, tile=0)
    banded, _ = encode_image(model, image, tile=32)
    assert abs(len(banded) - len(whole)) <= 0.01 * len(whole)
    a, _ = decode_image(model, whole, tile=0)
    b, _ = decode_image(model, banded, tile=16)
    assert psnr_uint8(a, b) > 40
