"""Images in and out, the evaluation padding, and the quality metrics.

The conventions are upstream's evaluation script (docs/architecture.md §7): an image is read
with Pillow as 8-bit RGB, becomes a float32 array (1, 3, H, W) = value / 255
(torchvision's ToTensor), is padded with zeros to a multiple of 64 (centered,
the odd pixel right/bottom), coded, and cropped back. PSNR is measured on the
float images, MS-SSIM as `pytorch_msssim.ms_ssim(x, x_hat, data_range=1.0)`.

How `read_image` turns any Pillow image into RGB (each lossy step adds a one-line
notice, see `read_image`):

    mode                  result
    RGB                   as is
    L, 1                  gray copied to R, G, B (1-bit: 0 / 255)
    P                     palette colours; with a transparency entry, as RGBA below
    RGBA, LA, PA, RGBa    alpha DROPPED, as upstream's convert("RGB"): transparent
                          pixels keep their stored colour (notice unless fully opaque)
    CMYK                  Pillow's naive conversion, no colour management (notice)
    I;16, I;16B/L/N, I    16-bit gray scaled to 8 bits as round(v / 257), which maps
                          0 -> 0 and 65535 -> 255 exactly (never a tie: 257 is odd);
                          mode I (32-bit) is taken as 16-bit data, clipped to 0..65535.
                          (Pillow's own convert would clip at 255 instead.)
    16-bit RGB(A) PNG     Pillow keeps the high byte, floor(v / 256) (notice)
    F                     refused (floating-point images)
    animated              first frame (notice)
    EXIF orientation      ignored, pixels as stored (notice), like upstream; with
                          orient=True (the CLI's encode and demo) applied with
                          ImageOps.exif_transpose, as a viewer shows the image (notice)
    EXIF, ICC, XMP        not carried (a .mstf file holds pixels only); with orient=True
                          a notice names what was dropped, as cwebp without -metadata.
                          The pixels are never colour-converted: an ICC profile is ignored.

Decoded images are written in any lossless format Pillow writes (`LOSSLESS`, by the
output's extension: PNG, PPM/PNM, TIFF, BMP, TGA, WebP with lossless=True); a lossy one
(`LOSSY`: JPEG, AVIF, JPEG 2000, HEIF, GIF's palette) is refused with BadInput.

Images with a side over MAX_SIDE or more than MAX_PIXELS
pixels are refused from their declared size, before any pixel is decoded (Pillow's
own decompression-bomb guard, at 2 * Image.MAX_IMAGE_PIXELS, may refuse first).
"""
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .backend import to_host, xp_of
from .errors import BadInput

MAX_SIDE = 1 << 15          # pixels per side
MAX_PIXELS = 1 << 28        # height * width

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_16BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class InputNotice(UserWarning):
    """Something about the input image that changes its pixels (alpha dropped, ...)."""


# --- reading and writing -------------------------------------------------------------

def read_image(src, notices=None, orient=False):
    """Read an image file (path or binary file object) as uint8 RGB (H, W, 3).

    Lossy conversions are reported as one-line notices: appended to `notices` when
    it is a list, else issued as `InputNotice` warnings. Raises BadInput for
    anything that is not a readable image of an acceptable size. orient: apply the EXIF
    orientation and note the metadata that is dropped (see the table above).
    """
    name = str(getattr(src, "name", "<stream>")) if hasattr(src, "read") else str(src)
    said = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                    # Pillow's own warnings; we say ours
            with Image.open(src) as im:
                w, h = im.size                                 # declared size, nothing decoded yet
                check_size(h, w, name)
                if im.mode in ("RGB", "RGBA") and any(";16" in str(t.args) for t in im.tile):
                    said.append(f"{name}: 16-bit colour reduced to 8 bits by Pillow (high byte)")
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    said.append(f"{name}: animated image, using the first of {frames} frames")
                orientation = _exif_orientation(im)
                if orient:
                    dropped = _metadata(im)
                    if orientation not in (1, None):
                        im = ImageOps.exif_transpose(im)
                        said.append(f"{name}: EXIF orientation {orientation} applied (the image is coded "
                                    f"as a viewer shows it)")
                    if dropped:
                        said.append(f"{name}: metadata dropped: {', '.join(dropped)} (a .mstf file holds "
                                    f"pixels only)")
                elif orientation not in (1, None):
                    said.append(f"{name}: EXIF orientation {orientation} ignored, pixels coded as stored")
                rgb = _to_rgb(im, name, said)
    except BadInput:
        raise
    except FileNotFoundError:
        raise BadInput(f"{name}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{name}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise BadInput(f"{name}: not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError:
        raise BadInput(f"{name}: image too large (Pillow's decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(f"{name}: cannot decode image ({reason})") from None
    for line in said:
        if notices is not None:
            notices.append(line)
        else:
            warnings.warn(line, InputNotice, stacklevel=2)
    return rgb


def _exif_orientation(im):
    try:
        return im.getexif().get(0x0112, 1)
    except Exception:                                          # broken EXIF: not our business
        return 1


def _metadata(im):
    """The metadata of an opened image that a .mstf file does not carry."""
    try:
        exif = bool(im.getexif())
    except Exception:                                          # broken EXIF: still EXIF
        exif = "exif" in im.info
    found = [("EXIF", exif), ("ICC profile (pixels kept as stored, not converted)", "icc_profile" in im.info),
             ("XMP", any("xmp" in str(k).lower() for k in im.info))]
    return [what for what, there in found if there]


def check_size(h, w, name="image"):
    """Raise BadInput for an empty or absurdly large image."""
    if h < 1 or w < 1:
        raise BadInput(f"{name}: empty image ({w}x{h})")
    if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise BadInput(f"{name}: image too large ({w}x{h}; at most {MAX_SIDE} per side "
                       f"and {MAX_PIXELS} pixels)")


def _to_rgb(im, name, said):
    """A loaded Pillow image of any mode -> uint8 (H, W, 3) (see the table above)."""
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    elif mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        if im.getchannel(mode[-1]).getextrema()[0] < 255:
            said.append(f"{name}: alpha channel dropped (transparent pixels keep their stored colour)")
        return np.array(im.convert("RGB"))
    if mode in _16BIT_GRAY:
        v = np.asarray(im).astype(np.int64)                    # (H, W)
        if mode == "I" and (v.min() < 0 or v.max() > 65535):
            said.append(f"{name}: 32-bit values outside 0..65535 clipped")
            v = np.clip(v, 0, 65535)
        gray = ((v + 128) // 257).astype(np.uint8)             # = round(v / 257), no ties
        return np.repeat(gray[:, :, None], 3, axis=2)          # (H, W) -> (H, W, 3)
    if mode == "F":
        raise BadInput(f"{name}: floating-point images are not supported")
    if mode == "CMYK":
        said.append(f"{name}: CMYK converted to RGB without colour management")
    try:
        rgb = im if mode == "RGB" else im.convert("RGB")
    except ValueError:
        raise BadInput(f"{name}: unsupported image mode {mode}") from None
    return np.array(rgb)                                       # a writable copy


LOSSLESS = {".png": ("PNG", {}), ".ppm": ("PPM", {}), ".pnm": ("PPM", {}), ".tif": ("TIFF", {}),
            ".tiff": ("TIFF", {}), ".bmp": ("BMP", {}), ".tga": ("TGA", {}),
            ".webp": ("WEBP", {"lossless": True, "quality": 100, "exact": True})}
LOSSY = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".avif": "AVIF",
         ".heic": "HEIF", ".heif": "HEIF", ".jp2": "JPEG 2000", ".j2k": "JPEG 2000", ".jpx": "JPEG 2000",
         ".gif": "GIF (256 colours)", ".jxl": "JPEG XL (Pillow writes it lossy)"}


def output_format(path):
    """(Pillow format, save options) for a decoded image named `path`, by its extension;
    BadInput for a lossy or unknown one."""
    suffix = "." + str(path).rsplit(".", 1)[-1].lower() if "." in str(path).rsplit("/", 1)[-1] else ""
    if suffix in LOSSLESS:
        return LOSSLESS[suffix]
    names = ", ".join(LOSSLESS)
    if suffix in LOSSY:
        raise BadInput(f"{path}: {LOSSY[suffix]} is lossy and would change the decoded pixels; "
                       f"name the output with a lossless format: {names}")
    raise BadInput(f"{path}: unknown image extension {suffix or '(none)'}; name the output {names}")


def encode_lossless(image, path="x.png"):
    """The bytes of uint8 RGB (H, W, 3) in the lossless format of `path`'s extension."""
    import io

    fmt, options = output_format(path)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(to_host(image)), "RGB").save(buf, format=fmt, **options)
    return buf.getvalue()


def write_png(image, dst):
    """Write uint8 RGB (H, W, 3) as PNG to a path or binary file object."""
    image = to_host(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"write_png expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(dst, format="PNG")


# --- float conversion ---------------------------------------------------------------

def to_float(image):
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [0, 1], value / 255 (ToTensor)."""
    xp = xp_of(image)
    if image.dtype != xp.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"to_float expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    x = xp.transpose(image, (2, 0, 1))[None]                   # (H, W, 3) -> (1, 3, H, W)
    return xp.ascontiguousarray(x, dtype=xp.float32) / xp.float32(255)


def to_uint8(x, rows=256):
    """float (1, 3, H, W) -> uint8 (H, W, 3) on the host: clip to [0, 1], x 255, round half
    to even (np.rint). torchvision's ToPILImage would truncate instead. Converted `rows`
    rows at a time, so that a large image needs no float temporaries of its own size."""
    xp = xp_of(x)
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"to_uint8 expects (1, 3, H, W), got {x.shape}")
    H, W = x.shape[2:]
    out = np.empty((H, W, 3), np.uint8)
    for a in range(0, H, rows):
        y = xp.rint(xp.clip(x[0, :, a:a + rows], 0, 1) * 255).astype(xp.uint8)  # (3, h, W)
        out[a:a + rows] = to_host(xp.transpose(y, (1, 2, 0)))  # (3, h, W) -> (h, W, 3)
    return out


class PaddedRows:
    """The float image `pad(to_float(image), ltrb)` (1, 3, Hp, Wp), made only band by band:
    `rows(a, b)` is its rows [a, b) channels-last (1, b - a, Wp, 3), equal to the whole
    conversion's. For the tiled analysis (minstf/rows.py), which never needs it whole."""

    def __init__(self, image, ltrb):
        self.image, self.ltrb = image, ltrb
        left, top, right, bottom = ltrb
        h, w = image.shape[:2]
        self.shape = (1, 3, top + h + bottom, left + w + right)

    def rows(self, a, b):
        xp = xp_of(self.image)
        left, top = self.ltrb[:2]
        out = xp.zeros((1, b - a, self.shape[3], 3), xp.float32)  # the padding is zeros
        lo, hi = max(a, top), min(b, top + self.image.shape[0])  # the image's rows in [a, b)
        if lo < hi:
            band = xp.ascontiguousarray(self.image[lo - top:hi - top], dtype=xp.float32)  # (h, w, 3)
            out[0, lo - a:hi - a, left:left + self.image.shape[1]] = band / xp.float32(255)
        return out


# --- evaluation padding -------------------------------------------------------------

def eval_padding(h, w, multiple=64):
    """(left, top, right, bottom) zero padding to the next multiple, centered; the extra
    pixel of an odd difference goes right/bottom (docs/architecture.md §7)."""
    new_h = -(-h // multiple) * multiple
    new_w = -(-w // multiple) * multiple
    left, top = (new_w - w) // 2, (new_h - h) // 2
    return left, top, new_w - w - left, new_h - h - top


def pad(x, ltrb):
    """Zero-pad (B, C, H, W) by (left, top, right, bottom) -> (B, C, H+t+b, W+l+r)."""
    left, top, right, bottom = ltrb
    return xp_of(x).pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def crop(x, ltrb):
    """Remove (left, top, right, bottom) from (B, C, H, W): the inverse of `pad`."""
    left, top, right, bottom = ltrb
    H, W = x.shape[-2:]
    return x[..., top:H - bottom, left:W - right]


# --- metrics ------------------------------------------------------------------------

def psnr(a, b, data_range=1.0):
    """PSNR in dB of two float arrays (MSE over all values, in float64); inf when equal."""
    a, b = to_host(a).astype(np.float64), to_host(b).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def psnr_uint8(a, b):
    """PSNR in dB of two 8-bit images (any equal shapes, e.g. (H, W, 3))."""
    return psnr(a, b, data_range=255.0)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIDE = 161      # pytorch_msssim refuses smaller images; we compute anyway


def _gauss_window(size=11, sigma=1.5):
    """The normalised 1-D Gaussian (float64; pytorch_msssim builds it in float32, which
    moves MS-SSIM by about 2e-7)."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-coords**2 / (2 * sigma**2))
    return g / g.sum()


def _blur(x, g):
    """Separable 'valid' Gaussian filter of (B, C, H, W); an axis shorter than the window
    is left unfiltered (pytorch_msssim does the same, with a warning)."""
    k = len(g)
    H, W = x.shape[-2:]
    if H >= k:
        x = sum(g[i] * x[..., i:i + H - k + 1, :] for i in range(k))   # -> (B, C, H-k+1, W)
    if W >= k:
        x = sum(g[i] * x[..., i:i + W - k + 1] for i in range(k))      # -> (B, C, ., W-k+1)
    return x


def _ssim_terms(X, Y, g, data_range, K=(0.01, 0.03)):
    """Per-(batch, channel) mean SSIM and mean contrast-structure term."""
    C1, C2 = (K[0] * data_range) ** 2, (K[1] * data_range) ** 2
    mu1, mu2 = _blur(X, g), _blur(Y, g)
    sigma1_sq = _blur(X * X, g) - mu1**2
    sigma2_sq = _blur(Y * Y, g) - mu2**2
    sigma12 = _blur(X * Y, g) - mu1 * mu2
    cs_map = (2 * sigma12 + C2) / (sigma1_sq + sigma2_sq + C2)
    ssim_map = (2 * mu1 * mu2 + C1) / (mu1**2 + mu2**2 + C1) * cs_map
    return ssim_map.mean(axis=(-2, -1)), cs_map.mean(axis=(-2, -1))


def _avg_pool2(x):
    """F.avg_pool2d(x, 2, padding=(H % 2, W % 2)) with count_include_pad: an odd axis gets a
    zero in front (the one behind is never reached), then pairs are averaged."""
    for axis in (-2, -1):
        if x.shape[axis] % 2:
            widths = [(0, 0)] * x.ndim
            widths[axis] = (1, 0)
            x = np.pad(x, widths)
    B, C, H, W = x.shape
    return x.reshape(B, C, H // 2, 2, W // 2, 2).mean(axis=(3, 5))


def ms_ssim(a, b, data_range=1.0):
    """MS-SSIM of two float (B, C, H, W) images, as pytorch_msssim.ms_ssim (v1.0) computes it:

    11-tap Gaussian window (sigma 1.5), 'valid' filtering, K1 = 0.01, K2 = 0.03;
    5 scales with MS_SSIM_WEIGHTS; between scales 2x2 average pooling with
    padding (H % 2, W % 2) counted as zeros; relu of cs at scales 0..3 and of
    SSIM at the last; product of the powers per (batch, channel), then the mean.
    Computed in float64 (pytorch_msssim uses the input dtype). pytorch_msssim
    refuses images with a side below MS_SSIM_MIN_SIDE; this computes the same
    formula for any size, without a reference to compare with.
    """
    X, Y = to_host(a).astype(np.float64), to_host(b).astype(np.float64)
    if X.ndim != 4 or X.shape != Y.shape:
        raise ValueError(f"ms_ssim expects two (B, C, H, W) arrays of one shape, got {X.shape} and {Y.shape}")
    g = _gauss_window()
    levels = []
    for i in range(len(MS_SSIM_WEIGHTS)):
        ssim_bc, cs_bc = _ssim_terms(X, Y, g, data_range)
        if i < len(MS_SSIM_WEIGHTS) - 1:
            levels.append(np.maximum(cs_bc, 0))
            X, Y = _avg_pool2(X), _avg_pool2(Y)
    levels.append(np.maximum(ssim_bc, 0))
    weights = np.array(MS_SSIM_WEIGHTS)[:, None, None]
    return float(np.prod(np.stack(levels) ** weights, axis=0).mean())
