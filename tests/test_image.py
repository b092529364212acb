"""Image I/O (every Pillow mode we meet), the evaluation padding, and the metrics."""
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from minstf import image as im_mod
from minstf.errors import BadInput
from minstf.image import (InputNotice, crop, eval_padding, ms_ssim, pad, psnr, psnr_uint8, read_image,
                          to_float, to_uint8, write_png)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def png_bytes(width, height, bit_depth=8, color_type=2, rows=None):
    """A PNG written by hand: lets a test declare any size, or 16-bit colour Pillow cannot write."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in rows))) if rows is not None else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def saved(tmp_path, img, name="x.png", **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def read(path):
    notices = []
    return read_image(path, notices=notices), notices


# --- modes -------------------------------------------------------------------------

def test_rgb_exact(tmp_path):
    out, notices = read(saved(tmp_path, Image.fromarray(RGB)))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, RGB)
    assert notices == []


def test_one_pixel(tmp_path):
    out, _ = read(saved(tmp_path, Image.new("RGB", (1, 1), (1, 2, 3))))
    assert out.tolist() == [[[1, 2, 3]]]


def test_gray_and_1bit(tmp_path):
    gray = RGB[..., 0]
    out, notices = read(saved(tmp_path, Image.fromarray(gray, "L")))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, 2))
    bits = Image.fromarray(gray > 127).convert("1")
    out, _ = read(saved(tmp_path, bits, "b.png"))
    np.testing.assert_array_equal(out[..., 1], np.where(gray > 127, 255, 0))
    assert notices == []


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_dropped_with_notice(tmp_path, mode):
    rgba = np.concatenate([RGB, RNG.integers(0, 256, (5, 7, 1), dtype=np.uint8)], axis=2)
    img = Image.fromarray(rgba, "RGBA")
    img = img if mode == "RGBA" else Image.fromarray(rgba[..., [0, 3]], "LA")
    out, notices = read(saved(tmp_path, img))
    expected = rgba[..., :3] if mode == "RGBA" else np.repeat(rgba[..., :1], 3, 2)
    np.testing.assert_array_equal(out, expected)            # colour kept, alpha dropped (upstream)
    assert len(notices) == 1 and "alpha channel dropped" in notices[0]


def test_opaque_alpha_no_notice(tmp_path):
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    out, notices = read(saved(tmp_path, Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out, RGB)
    assert notices == []


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.fromarray(RGB).quantize(8)
    expected = np.asarray(p.convert("RGB"))
    out, notices = read(saved(tmp_path, p))
    np.testing.assert_array_equal(out, expected)
    assert notices == []
    p.info["transparency"] = 0
    out, notices = read(saved(tmp_path, p, "t.png", transparency=0))
    np.testing.assert_array_equal(out, expected)            # stored colours, transparency dropped
    assert any("alpha" in n for n in notices)


def test_16bit_gray_rounds(tmp_path):
    v = np.array([[0, 128, 129, 257, 385, 386, 65535, 65406]], dtype=np.uint16)
    path = saved(tmp_path, Image.fromarray(v))              # mode I;16
    assert Image.open(path).mode.startswith("I")
    out, notices = read(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 1, 1, 2, 255, 254])
    np.testing.assert_array_equal(out[0, :, 0], np.round(v[0] / 257))
    assert notices == []


def test_32bit_int_taken_as_16bit(tmp_path):
    v = np.array([[-5, 0, 65535, 70000]], dtype=np.int32)
    path = saved(tmp_path, Image.fromarray(v, "I"), "i.tif")
    out, notices = read(path)
    np.testing.assert_array_equal(out[0, :, 2], [0, 0, 255, 255])
    assert any("clipped" in n for n in notices)


def test_16bit_rgb_png_high_byte(tmp_path):
    v = RNG.integers(0, 65536, (3, 4, 3)).astype(">u2")
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(4, 3, bit_depth=16, color_type=2, rows=[r.tobytes() for r in v]))
    out, notices = read(path)
    np.testing.assert_array_equal(out, (v >> 8).astype(np.uint8))
    assert any("16-bit" in n for n in notices)


def test_cmyk(tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    out, notices = read(saved(tmp_path, cmyk, "c.tif"))
    np.testing.assert_array_equal(out, np.asarray(cmyk.convert("RGB")))
    assert any("CMYK" in n for n in notices)


def test_jpeg(tmp_path):
    path = saved(tmp_path, Image.fromarray(np.full((16, 16, 3), 100, np.uint8)), "j.jpg", quality=95)
    out, _ = read(path)
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - 100).max() <= 2


def test_float_image_refused(tmp_path):
    path = saved(tmp_path, Image.fromarray(np.zeros((2, 2), np.float32), "F"), "f.tif")
    with pytest.raises(BadInput, match="floating-point"):
        read_image(path)


def test_animated_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out, notices = read(path)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert any("first of 2 frames" in n for n in notices)


def test_exif_orientation_notice(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    out, notices = read(saved(tmp_path, Image.fromarray(RGB), "o.jpg", exif=exif))
    assert out.shape == (5, 7, 3)                           # as stored, not rotated
    assert any("orientation 6" in n for n in notices)


def test_notices_as_warnings_without_a_list(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    path = saved(tmp_path, Image.fromarray(rgba, "RGBA"))
    with pytest.warns(InputNotice, match="alpha"):
        read_image(path)


def test_file_object(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    buf.seek(0)
    np.testing.assert_array_equal(read_image(buf), RGB)


# --- refused inputs -------------------------------------------------------------------

def refused(src, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no stray Pillow warnings either
        with pytest.raises(BadInput, match=match) as e:
            read_image(src)
    assert "\n" not in str(e.value)


def test_not_images(tmp_path):
    text = tmp_path / "t.png"
    text.write_text("hello, I am not a PNG\n")
    refused(text, "not an image")
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    refused(empty, "not an image")
    refused(tmp_path / "missing.png", "no such file")
    refused(tmp_path, "directory|not an image|cannot")


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[:500])
    refused(path, "cannot decode")


def test_bomb_declared_size_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(100_000, 100_000))          # header only, no pixel data
    refused(path, "too large")
    wide = tmp_path / "wide.png"
    wide.write_bytes(png_bytes((1 << 15) + 1, 1))           # small in pixels, too wide
    refused(wide, r"too large \(32769x1")


def test_pixel_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(im_mod, "MAX_PIXELS", 34)
    refused(saved(tmp_path, Image.fromarray(RGB)), "too large")     # 35 pixels
    monkeypatch.setattr(im_mod, "MAX_PIXELS", 35)
    assert read_image(saved(tmp_path, Image.fromarray(RGB), "ok.png")).shape == (5, 7, 3)


# --- writing and float conversion -------------------------------------------------------

def test_write_png_round_trip(tmp_path):
    write_png(RGB, tmp_path / "w.png")
    np.testing.assert_array_equal(read_image(tmp_path / "w.png"), RGB)
    buf = io.BytesIO()
    write_png(RGB, buf)
    assert buf.getvalue().startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        write_png(RGB.astype(np.float32), buf)


def test_to_float_is_totensor():
    x = to_float(RGB)
    assert x.dtype == np.float32 and x.shape == (1, 3, 5, 7) and x.flags.c_contiguous
    np.testing.assert_array_equal(x[0, 1], RGB[..., 1].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(to_uint8(x), RGB)


def test_to_uint8_clips_and_rounds_half_to_even():
    v = np.array([-0.1, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255, 1.2], dtype=np.float64)
    x = np.broadcast_to(v, (1, 3, 1, 6))
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 2, 2, 254, 255]


# --- padding ------------------------------------------------------------------------

def test_eval_padding_golden_and_multiples():
    assert eval_padding(121, 183) == (4, 3, 5, 4)           # docs/golden.md §2 input B -> 128x192
    assert eval_padding(128, 192) == (0, 0, 0, 0)
    assert eval_padding(64, 64) == (0, 0, 0, 0)
    assert eval_padding(1, 1) == (31, 31, 32, 32)
    assert eval_padding(65, 64) == (0, 31, 0, 32)
    assert eval_padding(121, 183, multiple=16) == (4, 3, 5, 4)


@pytest.mark.parametrize("h, w", [(1, 1), (5, 7), (64, 128), (121, 183), (130, 63)])
def test_pad_crop_inverse(h, w):
    x = RNG.random((1, 3, h, w)).astype(np.float32)
    ltrb = eval_padding(h, w)
    xp = pad(x, ltrb)
    assert xp.shape[2] % 64 == 0 and xp.shape[3] % 64 == 0 and xp.dtype == x.dtype
    left, top, right, bottom = ltrb
    assert xp.sum() == pytest.approx(x.sum(), rel=1e-6)     # zeros around
    np.testing.assert_array_equal(xp[..., top:top + h, left:left + w], x)
    np.testing.assert_array_equal(crop(xp, ltrb), x)


# --- metrics ------------------------------------------------------------------------

def test_psnr():
    a = np.zeros((1, 3, 4, 4))
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr_uint8(RGB, RGB) == float("inf")
    b = RGB.astype(np.int16) + 1
    b[b > 255] = 254
    expected = 10 * np.log10(255**2 / np.mean((RGB.astype(float) - b) ** 2))
    assert psnr_uint8(RGB, b.astype(np.uint8)) == pytest.approx(expected)


def noisy_pair(shape, sigma=0.1, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + sigma * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return a, b


def test_ms_ssim_properties():
    a, b = noisy_pair((1, 3, 170, 180))
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(b, a), abs=1e-12)
    assert 0 < ms_ssim(a, b) < 1
    assert ms_ssim(a, noisy_pair(a.shape, sigma=0.3)[1]) < ms_ssim(a, b)
    assert ms_ssim(a, 1 - a) == 0.0                         # anticorrelated: relu of cs -> 0
    tiny = np.full((1, 3, 1, 1), 0.5)
    assert ms_ssim(tiny, tiny) == pytest.approx(1.0)        # any size computes (no reference below 161)


@pytest.fixture
def torch1():
    """torch on one thread (many threads on a shared small machine are slower), restored after."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def torch_ms_ssim(torch, X, Y, data_range=1.0):
    """A compact torch MS-SSIM following pytorch_msssim 1.0 (float64 window)."""
    F = torch.nn.functional
    X, Y = torch.from_numpy(np.asarray(X, np.float64)), torch.from_numpy(np.asarray(Y, np.float64))
    C = X.shape[1]
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-coords**2 / (2 * 1.5**2))
    g = (g / g.sum()).reshape(1, 1, 1, 11).repeat(C, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, g, groups=C), g.transpose(2, 3), groups=C)

    C1, C2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=torch.float64)
    mcs = []
    for i in range(5):
        mu1, mu2 = blur(X), blur(Y)
        s11, s22, s12 = blur(X * X) - mu1**2, blur(Y * Y) - mu2**2, blur(X * Y) - mu1 * mu2
        cs_map = (2 * s12 + C2) / (s11 + s22 + C2)
        ssim = ((2 * mu1 * mu2 + C1) / (mu1**2 + mu2**2 + C1) * cs_map).flatten(2).mean(-1)
        if i < 4:
            mcs.append(torch.relu(cs_map.flatten(2).mean(-1)))
            padding = (X.shape[2] % 2, X.shape[3] % 2)
            X, Y = F.avg_pool2d(X, 2, padding=padding), F.avg_pool2d(Y, 2, padding=padding)
    stacked = torch.stack(mcs + [torch.relu(ssim)])
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean().item()


@pytest.mark.parametrize("shape", [(1, 3, 176, 192), (2, 1, 187, 163)])
def test_ms_ssim_matches_torch(torch1, shape):
    a, b = noisy_pair(shape)
    assert ms_ssim(a, b) == pytest.approx(torch_ms_ssim(torch1, a, b), abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 3, 161, 175)])
def test_ms_ssim_matches_pytorch_msssim(torch1, shape):
    """The package itself when installed (it builds its window in float32: ~2e-7 apart)."""
    torch = torch1
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    a, b = noisy_pair(shape, sigma=0.05)
    for dtype, tol in ((torch.float64, 1e-6), (torch.float32, 5e-6)):
        ref = pytorch_msssim.ms_ssim(torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype), data_range=1.0)
        assert ms_ssim(a, b) == pytest.approx(ref.item(), abs=tol)
