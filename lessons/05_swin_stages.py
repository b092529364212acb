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
# # Lesson 5 — The Swin stages of the analysis and synthesis transforms
#
# Lessons 3 and 4 built one Swin block. STF stacks them into two mirror-image paths:
#
# ```
# g_a:  image (H, W, 3) ─ PatchEmbed ─► (H/2, W/2, e)
#         ─ stage 0: blocks, PatchMerging ─► (H/4, W/4, 2e)
#         ─ stage 1: blocks, PatchMerging ─► (H/8, W/8, 4e)
#         ─ stage 2: blocks, PatchMerging ─► (H/16, W/16, 8e)
#         ─ stage 3: blocks ─────────────► y (H/16, W/16, M = 8e)
#
# g_s:  y_hat (H/16, W/16, M)
#         ─ stage 0: blocks, PatchSplit ─► (H/8, W/8, 4e)
#         ─ stage 1: blocks, PatchSplit ─► (H/4, W/4, 2e)
#         ─ stage 2: blocks, PatchSplit ─► (H/2, W/2, e)
#         ─ stage 3: blocks ─► end_conv: 5x5 conv, PixelShuffle(2), 3x3 conv ─► x_hat (H, W, 3)
# ```
#
# ($e$ = `embed_dim`: 48 upstream.) Inside a stage the blocks alternate between plain and shifted
# windows and keep the shape. Between stages, the *resamplers* trade resolution for channels:
# PatchEmbed and PatchMerging gather 2×2 neighbourhoods into channels on the way down, PatchSplit
# spreads channels back into 2×2 neighbourhoods on the way up. This lesson writes the three
# resamplers naively, checks them against `minstf/transforms.py` (where the resamplers and stages
# are written once, over the kernels of either layer), follows the shapes through both paths on
# the reference layer, compares the fast layer's $g_a$ and $g_s$ with it, and looks at the latent
# $y$ of a photo. Spec: docs/architecture.md §2.1, §2.7–2.9, §3.1, §3.5.

# %%
import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf.image import to_float
from minstf.switch import get_kernels
from minstf.transforms import basic_layer, g_a, g_s, patch_embed, patch_merging, patch_split

ref = get_kernels("reference")  # minstf/reference/: layer_norm, linear, conv2d, ... written to be read
FAST = lesson.FAST  # CI: a crop of the photo for the naive loops

model = minstf.load_model()
p, cfg = model.params, model.config
image = lesson.sample_image()  # (256, 384, 3) uint8
x = to_float(image).transpose(0, 2, 3, 1)  # (1, 3, H, W) -> (1, H, W, 3), channels-last
small = x[:, 64:128, 96:192] if FAST else x[:, :128, :192]  # a crop for the naive loops
print("image", x.shape, " crop for the loops", small.shape, " e =", cfg.embed_dim)

# %% [markdown]
# ## 1. PatchEmbed: a convolution whose kernel equals its stride
#
# `Conv2d(3, e, kernel 2, stride 2)` never lets two output pixels share an input pixel: it cuts
# the image into 2×2 patches and maps each patch's $2 \cdot 2 \cdot 3 = 12$ values to $e$
# channels with one matrix. A LayerNorm over the $e$ channels follows. Naively, patch by patch:

# %%
def patch_embed_naive(img, params):
    """img (H, W, 3), H and W even -> tokens (H/2 * W/2, e)."""
    H, W, _ = img.shape
    w = params["patch_embed.proj.weight"]  # (e, 3, 2, 2)
    e = w.shape[0]
    wmat = w.transpose(2, 3, 1, 0).reshape(12, e)  # rows in (dy, dx, c) order, like the patch
    out = np.empty((H // 2, W // 2, e), dtype=np.float32)
    for i in range(H // 2):
        for j in range(W // 2):
            patch = img[2 * i:2 * i + 2, 2 * j:2 * j + 2, :].reshape(12)  # (2, 2, 3) -> (12,)
            out[i, j] = patch @ wmat + params["patch_embed.proj.bias"]  # (12,) @ (12, e) -> (e,)
    out = ref.layer_norm(out, params["patch_embed.norm.weight"], params["patch_embed.norm.bias"])
    return out.reshape(-1, e)  # (H/2, W/2, e) -> (L, e)


tokens, H1, W1 = patch_embed(small, p, cfg.patch_size, kernels="reference")  # (1, H, W, 3) -> (1, H/2 * W/2, e)
print("patch_embed:", small.shape, "->", tokens.shape, f"= ({H1}x{W1} tokens, e)")
# a product of 12 float32 terms in another order, then LayerNorm (unit-scale output): ~1e-6
np.testing.assert_allclose(tokens[0], patch_embed_naive(small[0], p), rtol=1e-5, atol=1e-5)
print("naive == patch_embed (minstf/transforms.py, on the reference layer)")
odd = small[:, :35, :50]  # odd height: PatchEmbed pads one zero row at the bottom first
print("odd size:", odd.shape, "->", patch_embed(odd, p, cfg.patch_size)[1:], "(ceil(35/2), 50/2)")

# %% [markdown]
# ## 2. PatchMerging: 2×2 neighbours to channels (encoder)
#
# At the end of stages 0–2 of $g_a$, each 2×2 neighbourhood of tokens becomes one token with 4C
# channels, which a LayerNorm(4C) and a `Linear(4C, 2C)` without bias reduce to 2C. The order of
# the four neighbours is upstream's and a classic trap: `x1` is the **row** offset.
#
# $$ x_0 = x[0{::}2,\ 0{::}2], \quad x_1 = x[1{::}2,\ 0{::}2], \quad x_2 = x[0{::}2,\ 1{::}2],
#    \quad x_3 = x[1{::}2,\ 1{::}2] $$

# %%
fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
which = np.array([[0, 2], [1, 3]])[np.arange(6)[:, None] % 2, np.arange(6)[None, :] % 2]  # (6, 6): x0..x3
ax.imshow(which, cmap="Set2", vmin=0, vmax=7)
for (r, c), v in np.ndenumerate(which):
    ax.text(c, r, f"x{v}", ha="center", va="center", fontsize=12)
for t in np.arange(-0.5, 6, 2):
    ax.axhline(t, color="k", lw=2)
    ax.axvline(t, color="k", lw=2)
ax.set_title("PatchMerging: one output token per 2x2 block,\nchannels [x0 | x1 | x2 | x3]")
lesson.show(fig, "patch_merging_order")

# %% [markdown]
# Naive, token by token, on the tokens that leave the blocks of stage 0 (computed by the library
# with `basic_layer` and no resampler; lesson 4 is what happens inside):

# %%
def patch_merging_naive(xmap, params, prefix):
    """xmap (H, W, C), H and W even -> tokens (H/2 * W/2, 2C)."""
    H, W, C = xmap.shape
    out = np.empty((H // 2, W // 2, 4 * C), dtype=np.float32)
    for i in range(H // 2):
        for j in range(W // 2):
            out[i, j] = np.concatenate([xmap[2 * i, 2 * j],  # x0: even row, even column
                                        xmap[2 * i + 1, 2 * j],  # x1: odd row, even column
                                        xmap[2 * i, 2 * j + 1],  # x2: even row, odd column
                                        xmap[2 * i + 1, 2 * j + 1]])  # x3: odd row, odd column
    out = ref.layer_norm(out, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])  # over 4C
    out = ref.linear(out, params[f"{prefix}.reduction.weight"])  # (H/2, W/2, 4C) -> (H/2, W/2, 2C)
    return out.reshape(-1, 2 * C)


blocks_out, H, W = basic_layer(tokens, H1, W1, p, "layers.0", cfg.depths[0], cfg.num_heads[0],
                               cfg.window_size, kernels="reference")  # (1, H1*W1, e), no resampling
merged, H2, W2 = patch_merging(blocks_out, H, W, p, "layers.0.downsample", kernels="reference")  # -> (1, H1/2 * W1/2, 2e)
print(f"patch_merging: {blocks_out.shape} at {H}x{W} -> {merged.shape} at {H2}x{W2}")
C = blocks_out.shape[-1]
naive = patch_merging_naive(blocks_out[0].reshape(H, W, C), p, "layers.0.downsample")
# the very same reference functions on the same numbers, only the gather differs: float32 rounding
np.testing.assert_allclose(merged[0], naive, rtol=1e-5, atol=1e-5)
print("naive == patch_merging (minstf/transforms.py)")

# %% [markdown]
# The row-major order $(0,0), (0,1), (1,0), (1,1)$, which one might write by reflex, swaps
# $x_1$ and $x_2$ and gives a different network:

# %%
xm = blocks_out[0].reshape(H, W, C)
row_major = np.concatenate([xm[0::2, 0::2], xm[0::2, 1::2], xm[1::2, 0::2], xm[1::2, 1::2]], axis=-1)  # (H/2, W/2, 4C)
row_major = ref.linear(ref.layer_norm(row_major, p["layers.0.downsample.norm.weight"],
                                      p["layers.0.downsample.norm.bias"]),
                       p["layers.0.downsample.reduction.weight"]).reshape(-1, 2 * C)
print(f"row-major order: max difference {np.abs(row_major - merged[0]).max():.2f}")
assert not np.allclose(row_major, merged[0], atol=1e-3)

# %% [markdown]
# ## 3. PatchSplit: channels back to 2×2 neighbours (decoder)
#
# The mirror image, at the end of stages 0–2 of $g_s$: LayerNorm(C), `Linear(C, 2C)` without bias,
# then the 2C channels of each token become a 2×2 block of tokens with C/2 channels each —
# `PixelShuffle(2)` from lesson 2: channel $4c + 2i + j$ goes to offset $(i, j)$, channel $c$.
# (Upstream kept the attribute name `downsample` for it, hence the keys
# `syn_layers.{i}.downsample.*`.)

# %%
def patch_split_naive(tokens, H, W, params, prefix):
    """tokens (H*W, C) -> tokens (2H * 2W, C/2)."""
    C = tokens.shape[-1]
    t = ref.layer_norm(tokens, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    t = ref.linear(t, params[f"{prefix}.reduction.weight"]).reshape(H, W, 2 * C)  # (H*W, C) -> (H, W, 2C)
    out = np.empty((2 * H, 2 * W, C // 2), dtype=np.float32)
    for h in range(H):
        for w in range(W):
            for i in range(2):
                for j in range(2):
                    out[2 * h + i, 2 * w + j] = t[h, w, (2 * i + j)::4]  # channels 4c + 2i + j, c = 0..C/2-1
    return out.reshape(-1, C // 2)  # (2H, 2W, C/2) -> (4HW, C/2)


hs, ws_ = 4, 6  # a small latent-sized map
y_tokens = np.random.default_rng(0).standard_normal((1, hs * ws_, cfg.M)).astype(np.float32)  # (1, L, M)
split, H3, W3 = patch_split(y_tokens, hs, ws_, p, "syn_layers.0.downsample", kernels="reference")  # -> (1, 4L, M/2)
print(f"patch_split: {y_tokens.shape} at {hs}x{ws_} -> {split.shape} at {H3}x{W3}")
# the same reference LayerNorm and Linear, then a permutation either way: float32 rounding at most
np.testing.assert_allclose(split[0], patch_split_naive(y_tokens[0], hs, ws_, p, "syn_layers.0.downsample"),
                           rtol=1e-5, atol=1e-5)
print("naive == patch_split (minstf/transforms.py)")

# %% [markdown]
# ## 4. The shapes through $g_a$ and $g_s$
#
# Both transforms are a short loop over `basic_layer` (blocks, then the resampler). The real
# loop of `g_a` in `minstf/transforms.py`:

# %%
from minstf import transforms  # noqa: E402

lesson.source(transforms.g_a, start="x, H, W = patch_embed", stop="return x.reshape")

# %% [markdown]
# Written out for the sample photo on the reference layer, printing the shape after every
# step, and checked against `g_a` and `g_s` on both layers:

# %%
last = len(cfg.depths) - 1
print(f"{'step':42s} {'tokens (B, L, C)':>18s} {'map':>9s}")
t, H, W = patch_embed(x, p, cfg.patch_size, kernels="reference")  # (1, 256, 384, 3) -> (1, 128*192, e)
print(f"{'patch_embed':42s} {str(t.shape):>18s} {H:4d}x{W:<4d}")
for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
    t, H, W = basic_layer(t, H, W, p, f"layers.{i}", depth, heads, cfg.window_size,
                          resample="merge" if i < last else None, kernels="reference")  # -> (1, L/4, 2C) but the last
    step = f"layers.{i}: {depth} blocks, nH={heads}" + (" + merge" if i < last else "")
    print(f"{step:42s} {str(t.shape):>18s} {H:4d}x{W:<4d}")
y = t.reshape(1, H, W, -1)  # (1, H/16 * W/16, M) -> (1, H/16, W/16, M)
print(f"{'y':42s} {str(y.shape):>18s}")
assert y.shape == (1, x.shape[1] // 16, x.shape[2] // 16, cfg.M)
y_scale = max(1.0, float(np.abs(y).max()))
# the reference g_a runs the same functions in the same order: equal up to float32 rounding
np.testing.assert_allclose(g_a(x, p, cfg, kernels="reference"), y, rtol=0, atol=1e-6 * y_scale)
# the fast layer: other summation orders and the erfc-fit GELU through ~20 blocks; each kernel is
# within 2e-5 x the largest magnitude of its reference twin (tests/test_kernels.py), and errors
# do not pile up much: 1e-4 of y's largest magnitude is a safe bound for the whole transform
y_fast = g_a(x, p, cfg)  # kernels="fast", the default
np.testing.assert_allclose(y_fast, y, rtol=0, atol=1e-4 * y_scale)
print(f"by hand == g_a (reference) == g_a (fast): max |fast - reference| {lesson.max_diff(y_fast, y):.1e}, "
      f"max |y| {y_scale:.1f}")

# %%
y_hat = np.rint(y)  # a stand-in for the quantized latent (the real one also subtracts the mean, lesson 7)
t, H, W = y_hat.reshape(1, -1, cfg.M), y_hat.shape[1], y_hat.shape[2]  # (1, H/16, W/16, M) -> (1, L, M)
print(f"{'step':42s} {'tokens (B, L, C)':>18s} {'map':>9s}")
for i, (depth, heads) in enumerate(zip(cfg.depths[::-1], cfg.num_heads[::-1])):
    t, H, W = basic_layer(t, H, W, p, f"syn_layers.{i}", depth, heads, cfg.window_size,
                          resample="split" if i < last else None, kernels="reference")  # -> (1, 4L, C/2) but the last
    step = f"syn_layers.{i}: {depth} blocks, nH={heads}" + (" + split" if i < last else "")
    print(f"{step:42s} {str(t.shape):>18s} {H:4d}x{W:<4d}")
t = t.reshape(1, H, W, -1)  # (1, L, e) -> (1, H/2, W/2, e)
t = ref.conv2d(t, p["end_conv.0.weight"], p["end_conv.0.bias"], padding=2)  # 5x5: -> (1, H/2, W/2, 4e)
print(f"{'end_conv.0 (5x5 conv)':42s} {str(t.shape):>18s}")
t = ref.pixel_shuffle(t, cfg.patch_size)  # -> (1, H, W, e)
print(f"{'end_conv.1 (PixelShuffle 2)':42s} {str(t.shape):>18s}")
x_hat = ref.conv2d(t, p["end_conv.2.weight"], p["end_conv.2.bias"], padding=1)  # 3x3: -> (1, H, W, 3)
print(f"{'end_conv.2 (3x3 conv) = x_hat':42s} {str(x_hat.shape):>18s}")
assert x_hat.shape == x.shape
# as for g_a: the same functions in the same order on the reference layer, other orders on the
# fast one (where end_conv runs the 5x5 by bands of rows, shuffled straight into the full map)
np.testing.assert_allclose(g_s(y_hat, p, cfg, kernels="reference"), x_hat, rtol=0, atol=1e-6)
x_hat_fast = g_s(y_hat, p, cfg)
np.testing.assert_allclose(x_hat_fast, x_hat, rtol=0, atol=1e-4)  # x_hat is on the scale of [0, 1]
print(f"by hand == g_s (reference) == g_s (fast): max |fast - reference| {lesson.max_diff(x_hat_fast, x_hat):.1e}")

# %% [markdown]
# Sizes that are not multiples of 16 are rounded *up* at every halving (PatchEmbed and
# PatchMerging pad one zero row/column when the size is odd), so $H_4 = \lceil H/16 \rceil$ and
# $g_s$ returns $16 H_4 \ge H$. This is why the codec pads images to a multiple of 64 first
# (lesson 0), and why exercise 3 below is instructive.

# %%
odd = x[:, :100, :150]  # (1, 100, 150, 3)
t, H, W = patch_embed(odd, p, cfg.patch_size)  # the fast layer from here on (kernels="fast" by default)
sizes = [f"{H}x{W}"]
for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
    t, H, W = basic_layer(t, H, W, p, f"layers.{i}", depth, heads, cfg.window_size,
                          resample="merge" if i < last else None)
    sizes.append(f"{H}x{W}")
print("100x150 image, maps:", " -> ".join(sizes))
y_odd = g_a(odd, p, cfg)
assert y_odd.shape[1:3] == (H, W) == (-(-100 // 16), -(-150 // 16))  # (7, 10)
print("g_s(y) of it:", g_s(y_odd, p, cfg).shape)

# %% [markdown]
# ## 5. What the latent looks like
#
# $y$ has $M$ channels at 1/16 of the image size. A few of them for the sample photo (the
# channels with the largest variance): each is a coarse, feature-like map of the image. The
# entropy model (lessons 6–7) predicts each value's mean and scale; in the quiet channels most
# values round to their predicted mean and cost almost nothing.

# %%
var = y[0].reshape(-1, cfg.M).var(axis=0)  # (M,) variance of each channel over the map
top = np.argsort(var)[::-1][:7]
fig, axes = plt.subplots(2, 4, figsize=(14, 5.2), layout="constrained")
axes[0, 0].imshow(image)
axes[0, 0].set_title(f"image {image.shape[1]}x{image.shape[0]}")
for ax, c in zip(axes.flat[1:], top):
    lim = np.abs(y[0, :, :, c]).max()
    ax.imshow(y[0, :, :, c], cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(f"y channel {c} (var {var[c]:.2f})")
for ax in axes.flat:
    ax.axis("off")
lesson.show(fig, "latent_channels")

# %%
fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
ax.bar(np.arange(cfg.M), np.sort(var)[::-1])
ax.set_yscale("log")
ax.set_xlabel("channel (sorted)")
ax.set_ylabel("variance over the map")
ax.set_title("energy of the latent channels")
lesson.show(fig, "latent_variance")

# %% [markdown]
# ## Summary
#
# * $g_a$: PatchEmbed (2×2 patches to $e$ channels, LayerNorm), then four stages; stages 0–2 end
#   with PatchMerging ($x_0, x_1, x_2, x_3$ = offsets (0,0), (1,0), (0,1), (1,1); LayerNorm(4C);
#   Linear 4C → 2C). $y$ is $(H/16, W/16, 8e)$.
# * $g_s$: four stages; stages 0–2 end with PatchSplit (LayerNorm(C), Linear C → 2C,
#   PixelShuffle(2)); then a 5×5 convolution, PixelShuffle(2) and a 3×3 convolution back to RGB.
# * Every halving rounds up; $g_s(g_a(x))$ has size $16\lceil H/16 \rceil \times 16\lceil W/16 \rceil$.
#
# ## Exercises
#
# 1. Count the multiply-adds of each stage of upstream STF (`STFConfig()`) for a 768×512 image:
#    attention, MLP and resampler separately. Which stage is the most expensive, and why is it
#    not the widest one?
#    *Hint:* per token, qkv + proj cost $4C^2$, the scores and $A V$ $2NC$, the MLP $8C^2$; the
#    number of tokens falls by 4 per stage while $C^2$ grows by 4, and `depths` is (2, 2, 6, 2).
# 2. Write PatchMerging without a loop *and* without four slices: one `reshape` and one
#    `transpose` of the `(H, W, C)` map, like `window_partition`. Which axis order gives upstream's
#    $x_0, x_1, x_2, x_3$?
#    *Hint:* `xm.reshape(H//2, 2, W//2, 2, C)` has axes (i, row offset, j, col offset, c); the
#    channel index must run column offset slowest: `.transpose(0, 2, 3, 1, 4)`.
# 3. Section 4 ran $g_s$ on the latent of a 100×150 crop and got 112×160 back. Look at the
#    extra rows and columns: what do they contain, and why does the codec pad to a multiple of 64
#    with zeros (centred) rather than leaving the rounding to the network?
#    *Hint:* plot `g_s(y_odd, p, cfg)[0, 100:, :, 0]`; then read `minstf.image.eval_padding` and
#    docs/architecture.md §7.
