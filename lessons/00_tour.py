# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 0 — A tour of STF
#
# STF (Zou, Song, Zhang, *The Devil Is in the Details: Window-based Attention for Image
# Compression*, CVPR 2022) is a learned image codec. It follows the recipe of *transform
# coding*: a network $g_a$ maps the image $x$ to a latent $y$, the latent is rounded to
# integers and entropy-coded, and a second network $g_s$ maps the decoded latent back to an
# image:
#
# $$ y = g_a(x), \qquad \hat y = \operatorname{round}(y - \mu) + \mu, \qquad \hat x = g_s(\hat y). $$
#
# The networks are trained to minimise rate plus weighted distortion,
# $L = R + \lambda \cdot 255^2 \cdot \mathrm{MSE}(x, \hat x)$, where the rate
# $R = -\log_2 p(\hat y) - \log_2 p(\hat z)$ counts the bits an entropy coder needs. The
# probability model $p(\hat y)$ is a Gaussian per latent value whose mean $\mu$ and scale
# $\sigma$ are predicted from a small side channel, the *hyper-latent* $z = h_a(y)$, and from the
# slices of $y$ decoded before (the channel-wise autoregressive model of Minnen and Singh, 2020).
#
# What STF changes is the transforms: $g_a$ and $g_s$ are built from **Swin Transformer** stages
# (self-attention inside small windows, shifted every other block) instead of convolutions.
# The later lessons take those pieces apart one by one. This one runs the whole codec on a
# photo and looks at the file it writes.

# %%
import struct
import tempfile
import zlib
from pathlib import Path

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures (read it once)
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf import bitstream
from minstf.image import ms_ssim, psnr, psnr_uint8, read_image, to_float


# %% [markdown]
# ## The model and the photo
#
# `minstf.load_model()` reads the shipped default weights (a small STF, trained for this
# project; lesson 1 looks inside the file). The data-flow diagram of the whole model is the
# docstring of `minstf.model`:

# %%
print(minstf.model.__doc__.split("`forward`")[0])

# %%
model = minstf.load_model()
n_params = sum(a.size for a in model.params.values())
print(f"weights {model.name}: {n_params:,} parameters, fingerprint {model.fingerprint[:16]}…")
print(model.config)

# %%
SAMPLE = Path(str(lesson.SAMPLE))  # minstf/data/sample.png: kodim23, 384x256
image = read_image(SAMPLE)  # (H, W, 3) uint8
H, W = image.shape[:2]
print("image", image.shape, image.dtype)

# %% [markdown]
# ## Encode and decode
#
# `encode_image` pads the image with zeros to a multiple of 64 (the sample is already
# 384×256), runs the encoder and packs the result into the bytes of a `.mstf` file;
# `decode_image` reverses that. The rate is measured in **bits per pixel** (bpp):
# $8 \cdot \text{bytes} / (H \cdot W)$.

# %%
data, stats = minstf.encode_image(model, image)
print(f"{stats.file_bytes:,} bytes = {stats.bpp:.4f} bpp (whole file), "
      f"{stats.payload_bpp:.4f} bpp (entropy-coded payload only)")

with tempfile.TemporaryDirectory() as tmp:  # a round trip through a real file
    path = Path(tmp) / "sample.mstf"
    path.write_bytes(data)
    decoded, header = minstf.decode_image(model, path.read_bytes())  # (H, W, 3) uint8
assert decoded.shape == image.shape and decoded.dtype == np.uint8

# %% [markdown]
# Distortion: PSNR $= 10 \log_{10}(1 / \mathrm{MSE})$ on images scaled to $[0, 1]$, and MS-SSIM,
# a perceptual similarity in $[0, 1]$ computed at five scales (1 = identical).

# %%
x, x_hat = to_float(image), to_float(decoded)  # (H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]
print(f"PSNR    {psnr(x, x_hat):.2f} dB")
print(f"MS-SSIM {ms_ssim(x, x_hat):.4f}")
assert abs(psnr(x, x_hat) - psnr_uint8(image, decoded)) < 1e-4  # the same on either scale (float32 /255)

# %%
err = np.abs(image.astype(np.int16) - decoded.astype(np.int16)).mean(axis=-1)  # (H, W) mean |error|
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4), layout="constrained")
axes[0].imshow(image)
axes[0].set_title("original")
axes[1].imshow(decoded)
axes[1].set_title(f"decoded: {stats.bpp:.3f} bpp, {psnr(x, x_hat):.2f} dB")
im = axes[2].imshow(err, cmap="magma")
axes[2].set_title("|error|, mean over RGB (0..255)")
fig.colorbar(im, ax=axes[2], fraction=0.03)
for ax in axes:
    ax.axis("off")
lesson.show(fig, "original_vs_decoded")

# %% [markdown]
# ## Estimated rate versus real bytes
#
# Training cannot run an entropy coder, so `model.forward` *estimates* the rate from the
# probabilities the model assigns to the rounded latents: $R \approx \sum -\log_2 p$. The real
# coder (rANS, from `constriction`) uses the same probabilities, stored as integer CDF tables,
# so for trained weights the two agree to within a few percent.

# %%
out = model.forward(x)  # {"x_hat": (1, 3, H, W), "likelihoods": {"y": (1, M, H/16, W/16), "z": ...}}
for name, lik in out["likelihoods"].items():
    print(f"{name}: likelihoods {lik.shape}, estimated {-np.log2(lik).sum() / (H * W):.4f} bpp")
estimate = sum(-np.log2(lik).sum() for lik in out["likelihoods"].values()) / (H * W)
print(f"estimated {estimate:.4f} bpp, coded payload {stats.payload_bpp:.4f} bpp "
      f"({100 * (stats.payload_bpp / estimate - 1):+.1f} %)")
assert abs(stats.payload_bpp - estimate) < 0.15 * estimate + 0.01

# %% [markdown]
# ## What is in a `.mstf` file
#
# The file is a small checked header followed by two entropy-coded strings: the hyper-latent
# $z$ (coded first, decoded first: it carries the side information) and the latent $y$.
# `minstf.bitstream.unpack` parses and validates it; its docstring is the format table.

# %%
print(bitstream.__doc__.split("`unpack` checks")[0])

# %%
header, z_bytes, y_bytes = bitstream.unpack(data)
for field in ("model_id", "height", "width", "padding", "num_slices", "portable", "version"):
    print(f"{field:11s} {getattr(header, field)}")
print(f"fingerprint {header.fingerprint.hex()}  (= the weights' {model.fingerprint[:32]})")
print(f"z_crc       {header.z_crc:08x}")
print("y_crcs      " + " ".join(f"{c:08x}" for c in header.y_crcs))

# %% [markdown]
# The header length follows from the table: $61 + n + 4S$ bytes for a model id of $n$ characters
# and $S$ slices. Every byte of the file is accounted for. The last two fields of the header,
# read by hand with `struct`, are the CRC32 of the payloads and the CRC32 of the header itself:

# %%
n, S = len(header.model_id), header.num_slices
header_bytes = 61 + n + 4 * S
print(f"header {header_bytes} B + z {len(z_bytes)} B + y {len(y_bytes)} B = {len(data)} B")
assert header_bytes + len(z_bytes) + len(y_bytes) == len(data)
assert data[:4] == b"MSTF" and data[header_bytes:] == z_bytes + y_bytes
assert header.fingerprint == bytes.fromhex(model.fingerprint)[:16]
payload_crc, header_crc = struct.unpack_from("<II", data, header_bytes - 8)
assert payload_crc == zlib.crc32(z_bytes + y_bytes)
assert header_crc == zlib.crc32(data[:header_bytes - 4])
print("first bytes:", data[:16].hex(" "), "…")
print(f"payload CRC {payload_crc:08x}, header CRC {header_crc:08x}")

# %%
fig, ax = plt.subplots(figsize=(9, 2.2), layout="constrained")
left = 0
for label, size, colour in (("header", header_bytes, "tab:gray"), ("z string", len(z_bytes), "tab:orange"),
                            ("y string", len(y_bytes), "tab:blue")):
    ax.barh(0, size, left=left, color=colour, label=f"{label}: {size} B")
    left += size
ax.set_yticks([])
ax.set_xlabel("byte offset in the file")
ax.set_title(f"{SAMPLE.name} as .mstf: {len(data)} bytes")
fig.legend(loc="outside lower center", ncol=3, frameon=False)
lesson.show(fig, "file_layout")

# %% [markdown]
# Three kinds of check guard a decode. The header and payload CRCs catch a damaged file. The
# fingerprint ties the file to the exact weights that made it. The symbol CRCs (`z_crc`,
# `y_crcs`) are checksums of the decoded *symbols*: a decoder that computes slightly different
# entropy parameters than the encoder (another CPU, a GPU) would silently decode garbage; the
# symbol CRC turns that into an error. A damaged header or payload is refused:

# %%
for where, offset in (("header (fingerprint)", 10), ("y payload", len(data) - 100)):
    broken = bytearray(data)
    broken[offset] ^= 0xFF  # flip the bits of one byte
    try:
        bitstream.unpack(bytes(broken))
    except minstf.errors.CorruptFile as e:
        print(f"damaged {where}: CorruptFile: {e}")
    else:
        raise AssertionError(f"a damaged {where} was accepted")

# %% [markdown]
# ## Summary
#
# * STF is transform coding: $g_a$ (analysis), rounding, entropy coding with a hyperprior and
#   channel-wise slices, $g_s$ (synthesis). Rate is bits per pixel, distortion PSNR / MS-SSIM.
# * `minstf.encode_image` / `decode_image` are the whole codec; a `.mstf` file is a
#   $61 + n + 4S$-byte header (sizes, padding, weight fingerprint, CRCs) plus the z and y strings.
# * `model.forward` estimates the rate from likelihoods; the real coder lands close to it.
#
# Next: lesson 1 (the weights: every key, shape and parameter count, and the file format),
# lesson 2 (convolution as matrix products, pixel shuffle), lesson 3 (window attention),
# lesson 4 (shifted windows and their mask), lesson 5 (the Swin stages of $g_a$ and $g_s$).
#
# ## Exercises
#
# 1. Encode the sample with `minstf.load_model(quality=1)` and `quality=3` and plot PSNR against
#    bpp for the three rate points.
#    *Hint:* loop over `minstf.zoo.QUALITIES`; `stats.bpp` and `psnr_uint8(image, decoded)` are
#    the two coordinates (lesson 9, section 1 does it).
# 2. Crop the sample to 200×300 before encoding. What padding does the header record, and how
#    does `minstf.image.eval_padding` split it between the sides?
#    *Hint:* print `header.padding` after `decode_image`; compare with `eval_padding(200, 300)`.
# 3. Encode with `portable=False` (the default is `True`, as on the command line). Which header
#    field changes? Is the file larger, and does it decode to the same image here?
#    *Hint:* `bitstream.unpack(data)[0].portable`; docs/determinism.md §2 says what the mode changes.
