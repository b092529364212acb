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
# # Lesson 2 — Convolution as matrix products, and pixel shuffle
#
# Most of STF's parameters are convolution kernels: the hyperprior networks $h_a$, $h_{\mu}$,
# $h_{\sigma}$, the 36 slice networks, the PatchEmbed and the end of $g_s$ (lesson 1). PyTorch's `Conv2d` is a
# *cross-correlation*: with the input zero-padded by $p$ on every side, stride $s$, a kernel
# $w$ of shape `(O, Cin, k, k)` and channels-last maps `(B, H, W, C)`,
#
# $$ \mathrm{out}[b, y, x, o] = \mathrm{bias}[o] + \sum_{c=0}^{C_{in}-1} \sum_{d_y=0}^{k-1}
#    \sum_{d_x=0}^{k-1} x_{\text{pad}}[b,\, s y + d_y,\, s x + d_x,\, c]\; w[o, c, d_y, d_x],
#    \qquad H_o = \left\lfloor \frac{H + 2p - k}{s} \right\rfloor + 1 . $$
#
# NumPy has no fast convolution, but it has a fast matrix product (BLAS). This lesson turns
# the six loops of the formula into matrix products, and builds up the way minstf does:
#
# 1. **naive**: the six loops, straight from the formula;
# 2. **reference**: *im2col* (copy the patches into one big matrix, one product), which is
#    `conv2d` in `minstf/reference/ops.py`, the layer written to be read;
# 3. **fast**: *taps first* (one product of the unpadded map with all taps' weights, then
#    shifted sums) and a blocked im2col, which is `conv2d` in `minstf/kernels/ops.py`, proven
#    equal to the reference by `tests/test_kernels.py`.
#
# Then *pixel shuffle*, the reshuffle that turns channels into resolution in $h_{\mu}$,
# $h_{\sigma}$, PatchSplit and the end of $g_s$. The two layers are picked by
# `minstf.switch.get_kernels("reference" | "fast")`; every function of
# `minstf.switch.INTERFACE` exists in both with the same arguments (docs/architecture.md §2).

# %%
import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures, source listings
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf.kernels import ops as fast_ops
from minstf.switch import get_kernels
from minstf.transforms import h_mean_s

ref = get_kernels("reference")  # minstf/reference/: conv2d, gelu, pixel_shuffle, ... written to be read
fast = get_kernels("fast")  # minstf/kernels/: the same functions rewritten for speed
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The naive convolution: six loops
#
# One image at a time, straight from the formula. Slow, but obviously right: it is the
# reference for everything below.

# %%
def conv2d_naive(img, w, bias, stride=1, padding=0):
    """img (H, W, Cin); w (O, Cin, k, k); bias (O,) -> (Ho, Wo, O)."""
    H, W, Cin = img.shape
    O, _, k, _ = w.shape
    xp = np.pad(img, ((padding, padding), (padding, padding), (0, 0)))  # (H, W, Cin) -> (Hp, Wp, Cin)
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    out = np.zeros((Ho, Wo, O), dtype=np.float64)
    for y in range(Ho):
        for x in range(Wo):
            for o in range(O):
                acc = float(bias[o])
                for c in range(Cin):
                    for dy in range(k):
                        for dx in range(k):
                            acc += xp[stride * y + dy, stride * x + dx, c] * w[o, c, dy, dx]
                out[y, x, o] = acc
    return out.astype(np.float32)


B, H, W, Cin, O, k = 2, 5, 7, 3, 4, 3
x = rng.standard_normal((B, H, W, Cin)).astype(np.float32)  # (B, H, W, Cin)
w = rng.standard_normal((O, Cin, k, k)).astype(np.float32)  # PyTorch layout (O, Cin, k, k)
bias = rng.standard_normal(O).astype(np.float32)
ref1 = np.stack([conv2d_naive(img, w, bias, 1, 1) for img in x])  # (B, H, W, O): "same" size
ref2 = np.stack([conv2d_naive(img, w, bias, 2, 1) for img in x])  # (B, 3, 4, O): ceil(H/2), ceil(W/2)
print("stride 1:", x.shape, "->", ref1.shape, "  stride 2:", x.shape, "->", ref2.shape)

# %% [markdown]
# ## 2. im2col: all patches in one matrix, one product
#
# For every output pixel, copy the $k \cdot k \cdot C_{in}$ input values it reads into one row
# (*im2col*: image to columns). The kernel reshaped to a $(k k C_{in}) \times O$ matrix then
# gives every output with one matrix product. The row order $(d_y, d_x, c)$ of the patches must
# match the row order of the weight matrix: transpose `(O, Cin, k, k)` to `(k, k, Cin, O)` first.

# %%
def im2col(xp, k, stride, Ho, Wo):
    """Padded map (B, Hp, Wp, Cin) -> patches (B, Ho, Wo, k*k*Cin) in (dy, dx, c) order."""
    B, _, _, Cin = xp.shape
    cols = np.empty((B, Ho, Wo, k, k, Cin), dtype=xp.dtype)
    for dy in range(k):
        for dx in range(k):  # tap (dy, dx) of every output pixel: a strided view of the input
            cols[:, :, :, dy, dx, :] = xp[:, dy:dy + stride * Ho:stride, dx:dx + stride * Wo:stride, :]
    return cols.reshape(B, Ho, Wo, k * k * Cin)  # (B, Ho, Wo, k, k, Cin) -> (B, Ho, Wo, k*k*Cin)


def conv2d_im2col(x, w, bias, stride=1, padding=0):
    O, Cin, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))  # -> (B, Hp, Wp, Cin)
    Ho, Wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    cols = im2col(xp, k, stride, Ho, Wo)  # (B, Ho, Wo, k*k*Cin)
    wmat = w.transpose(2, 3, 1, 0).reshape(k * k * Cin, O)  # (O, Cin, k, k) -> (k, k, Cin, O) -> (k*k*Cin, O)
    return cols @ wmat + bias  # (B, Ho, Wo, k*k*Cin) @ (k*k*Cin, O) -> (B, Ho, Wo, O)


# float32 sums of 27 products (values ~N(0, 1)) in another order than the float64 loops:
# errors ~1e-6, so 1e-5 separates rounding from a wrong tap by orders of magnitude
np.testing.assert_allclose(conv2d_im2col(x, w, bias, 1, 1), ref1, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(conv2d_im2col(x, w, bias, 2, 1), ref2, rtol=1e-5, atol=1e-5)
print("im2col == naive (stride 1 and 2)")

# %% [markdown]
# ### The reference layer's im2col
#
# `conv2d` in `minstf/reference/ops.py` is this im2col, with one difference in bookkeeping: it
# stacks the $k^2$ taps on a *last* axis, so a patch row is ordered $(c, d_y, d_x)$, the order of
# the weight's own axes `(Cin, k, k)`; then the kernel matrix is a plain reshape of the
# PyTorch weight, no transpose. Its real lines:

# %%
lesson.source(ref.conv2d, start="xp = xp_of(x)")

# %%
# the same float32 products, summed in another order than our (dy, dx, c) im2col: same tolerance
np.testing.assert_allclose(ref.conv2d(x, w, bias, stride=1, padding=1), ref1, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(ref.conv2d(x, w, bias, stride=2, padding=1), ref2, rtol=1e-5, atol=1e-5)
print("naive == minstf.reference.conv2d (stride 1 and 2), max difference "
      f"{lesson.max_diff(ref.conv2d(x, w, bias, stride=1, padding=1), ref1):.1e}")

# %% [markdown]
# What the patch matrix holds, for a one-channel 4×4 image with a 3×3 kernel and padding 1:
# row = output pixel, column = kernel tap, entry = the input pixel it reads (−1: padding).
# Every input pixel is copied up to $k^2 = 9$ times; this memory is im2col's price.

# %%
ids = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # pixel numbers as the image, (1, 4, 4, 1)
padded_ids = np.pad(ids, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1)  # (1, 6, 6, 1)
patches = im2col(padded_ids, 3, 1, 4, 4).reshape(16, 9).astype(int)  # (16 output pixels, 9 taps)
fig, ax = plt.subplots(figsize=(4.2, 6.2), layout="constrained")
ax.imshow(np.ma.masked_less(patches, 0), cmap="tab20")  # padding (masked) stays white
for (r, c), v in np.ndenumerate(patches):
    ax.text(c, r, "pad" if v < 0 else v, ha="center", va="center", fontsize=7)
ax.set_xticks(range(9), [f"{dy},{dx}" for dy in range(3) for dx in range(3)], fontsize=7)
ax.set_xlabel("kernel tap (dy, dx)")
ax.set_ylabel("output pixel y*4 + x")
ax.set_title("im2col: input pixel per (output, tap)")
lesson.show(fig, "im2col_matrix")

# %% [markdown]
# ## 3. A trick minstf does not use: flat row offsets (stride 1)
#
# Before the fast layer, here is a classic way to avoid im2col's copies, because it shows the
# idea the fast layer builds on: *shift instead of copy*. Flatten the zero-padded map to rows: pixel $(b, y, x)$ of the padded $H_p \times W_p$ map is
# row $l = b H_p W_p + y W_p + x$ of a $(B H_p W_p) \times C_{in}$ matrix. Store output pixel
# $(b, y, x)$ in the *same* row $l$. It needs input pixel $(y + d_y, x + d_x)$, which is row
#
# $$ l + d_y W_p + d_x . $$
#
# The offset does not depend on the pixel. So kernel tap $(d_y, d_x)$ contributes
# `flat[off : off + L] @ w[:, :, dy, dx].T` to output rows `0 : L`, with `off = dy*Wp + dx`:
# a contiguous slice (a view, nothing copied) times a $C_{in} \times O$ matrix. Nine products
# for a 3×3 kernel, summed. The rows of padding columns ($x \ge W_o$) read across the end of
# an image row and compute garbage; they are cut off at the end.

# %%
def conv2d_flat(x, w, bias, padding):
    """Stride-1 convolution as k*k matrix products on shifted row slices."""
    O, Cin, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))  # -> (B, Hp, Wp, Cin)
    B, Hp, Wp, _ = xp.shape
    Ho, Wo = Hp - k + 1, Wp - k + 1
    flat = xp.reshape(B * Hp * Wp, Cin)  # (B, Hp, Wp, Cin) -> (B*Hp*Wp, Cin)
    L = (B - 1) * Hp * Wp + (Ho - 1) * Wp + Wo  # output rows up to the last valid pixel
    out = np.zeros((B * Hp * Wp, O), dtype=np.float32)  # one output row per padded pixel
    for dy in range(k):
        for dx in range(k):
            off = dy * Wp + dx
            out[:L] += flat[off:off + L] @ w[:, :, dy, dx].T  # (L, Cin) @ (Cin, O) -> (L, O)
    out[:L] += bias
    return out.reshape(B, Hp, Wp, O)[:, :Ho, :Wo]  # (B*Hp*Wp, O) -> (B, Hp, Wp, O) -> crop (B, Ho, Wo, O)


np.testing.assert_allclose(conv2d_flat(x, w, bias, 1), ref1, rtol=1e-5, atol=1e-5)  # float32 sums, as above
print("flat row-offset == naive")

# %% [markdown]
# Why $L = (B-1) H_p W_p + (H_o-1) W_p + W_o$? It is the row of the last valid output pixel
# plus one. The last tap reads up to row $L - 1 + (k-1) W_p + (k-1)$; with $H_o = H_p - k + 1$
# and $W_o = W_p - k + 1$ that is exactly $B H_p W_p - 1$, the last row of `flat`. The slices
# never run off the end, and no extra padding is needed:

# %%
for (B_, Hp_, Wp_, k_) in [(1, 6, 6, 3), (2, 10, 14, 3), (3, 9, 9, 5), (1, 4, 7, 1)]:
    Ho_, Wo_ = Hp_ - k_ + 1, Wp_ - k_ + 1
    L_ = (B_ - 1) * Hp_ * Wp_ + (Ho_ - 1) * Wp_ + Wo_
    assert L_ - 1 + (k_ - 1) * Wp_ + (k_ - 1) == B_ * Hp_ * Wp_ - 1

# %% [markdown]
# The picture: a 4×4 image padded to 6×6, 3×3 kernel. Left, the padded map with each pixel's
# flat row number; output pixel $(y, x) = (1, 2)$ lives in row $l = 1 \cdot 6 + 2 = 8$ and reads
# the nine coloured rows $8 + \{0, 1, 2, 6, 7, 8, 12, 13, 14\}$. Right, the output rows: the
# first $L = 22$ are computed, the $4 \times 4$ valid ones are kept.

# %%
Hp_, Wp_, k_ = 6, 6, 3
rows = np.arange(Hp_ * Wp_).reshape(Hp_, Wp_)  # flat row number of each padded pixel
l = 1 * Wp_ + 2
read = np.zeros((Hp_, Wp_), dtype=int)
for dy in range(k_):
    for dx in range(k_):
        read.flat[l + dy * Wp_ + dx] = 1
fig, axes = plt.subplots(1, 2, figsize=(8.5, 4), layout="constrained")
axes[0].imshow(read, cmap="Blues", vmin=0, vmax=1.6)
axes[0].add_patch(plt.Rectangle((0.5, 0.5), 4, 4, fill=False, lw=2, ec="k"))
axes[0].set_title("input rows read for output row 8\n(box: the image, outside: zero padding)")
L_ = (Hp_ - k_) * Wp_ + (Wp_ - k_ + 1)  # B = 1: (Ho - 1) * Wp + Wo = 22
state = np.zeros((Hp_, Wp_), dtype=int)  # 0: not computed
state.flat[:L_] = 1  # computed, garbage
state[:Hp_ - k_ + 1, :Wp_ - k_ + 1] = 2  # computed and kept
state.flat[l] = 3
axes[1].imshow(state, cmap="Greens", vmin=0, vmax=3.5)
axes[1].set_title(f"output rows: kept (green), garbage (pale),\nnot computed (white): L = {L_} rows")
for ax in axes:
    for (r, c), v in np.ndenumerate(rows):
        ax.text(c, r, v, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(Wp_))
    ax.set_yticks(range(Hp_))
lesson.show(fig, "flat_row_offsets")

# %% [markdown]
# The garbage rows are the price: $(W_p - W_o)/W_p$ of all the work (a fifth of it for a 3×3
# kernel on a 10-pixel-wide map), plus a padded copy of the input.
#
# ## 4. The fast layer: taps first
#
# `conv2d` in `minstf/kernels/ops.py` turns the sum around. Instead of gathering the inputs of
# each output pixel, it first computes what every input pixel contributes through every tap,
# with **one** product of the *unpadded* map with all taps' weights side by side,
# $Y = x \cdot [W_{0,0} \,|\, W_{0,1} \,|\, \dots]$, of shape $(H W) \times (k^2 O)$; then each
# output pixel adds up $k^2$ shifted views of $Y$:
#
# $$ \mathrm{out}[y, x] = \mathrm{bias} + \sum_{d_y, d_x} Y[y + d_y - p,\; x + d_x - p,\;
#    \text{columns of tap } (d_y, d_x)] , $$
#
# leaving out the terms whose $Y$ position falls outside the map (they would read the zero
# padding, so they are zero). It moves fewer bytes than im2col when $O \le C_{in}$ ($k^2 O$
# values per pixel instead of $k^2 C_{in}$), which is the case of the slice networks and $h_a$;
# for $O > C_{in}$ (the 5×5 of `end_conv`, the hyper synthesis) it runs im2col by blocks of
# output rows instead, so that the patch matrix stays a few MB. The module's own description:

# %%
doc = fast_ops.__doc__
print(doc[doc.index("Convolutions (stride 1)"):doc.index("Weights keep PyTorch's layout in `params`")].rstrip())

# %% [markdown]
# Taps first, written out in a few lines (the library does the same by blocks of rows, one row
# of taps at a time, and on several threads: `_conv_taps_first` and `_sum_taps`):

# %%
def conv2d_taps_first(x, w, bias, padding):
    """Stride-1 convolution: one product x @ (Cin, k*k*O), then k*k shifted, clipped sums."""
    B, H, W, Cin = x.shape
    O, _, k, _ = w.shape
    p = padding
    Ho, Wo = H + 2 * p - k + 1, W + 2 * p - k + 1
    wide = w.reshape(O, Cin, k * k).transpose(1, 2, 0).reshape(Cin, k * k * O)  # columns (dy, dx, o)
    Y = (x @ wide).reshape(B, H, W, k, k, O)  # (B, H, W, Cin) @ (Cin, k*k*O): Y[..., dy, dx, :]
    out = np.zeros((B, Ho, Wo, O), dtype=np.float32) + bias
    for dy in range(k):
        for dx in range(k):  # output (i, j) reads Y[i + dy - p, j + dx - p], where that is inside
            i0, i1 = max(0, p - dy), min(Ho, H + p - dy)
            j0, j1 = max(0, p - dx), min(Wo, W + p - dx)
            out[:, i0:i1, j0:j1] += Y[:, i0 + dy - p:i1 + dy - p, j0 + dx - p:j1 + dx - p, dy, dx]
    return out


# the same float32 products, summed in another order: the tolerance of section 2
np.testing.assert_allclose(conv2d_taps_first(x, w, bias, 1), ref1, rtol=1e-5, atol=1e-5)
print("taps first == naive")

# %% [markdown]
# ## 5. Naive, reference and fast agree
#
# The two layers side by side, on the cases STF has: 3×3 stride 1 with $O = 4 > C_{in} = 3$
# (the fast layer's blocked im2col) and with $C_{in} = 8 > O = 4$ (taps first), 3×3 stride 2
# ($h_a$: im2col on strided views in both layers) and 5×5 (`end_conv.0`). `tests/test_kernels.py::test_conv2d`
# proves `fast.conv2d` equal to `ref.conv2d` on ten shapes (odd sizes, maps smaller than the
# kernel, 1×1, both fast paths, with the block table shrunk so that many block edges are
# crossed) within `F32 = 2e-5` times the largest magnitude; here we check against the loops.

# %%
w5 = rng.standard_normal((O, Cin, 5, 5)).astype(np.float32)  # end_conv.0 is 5x5 with padding 2
naive5 = np.stack([conv2d_naive(img, w5, bias, 1, 2) for img in x])
wide_in = rng.standard_normal((B, H, W, 8)).astype(np.float32)  # Cin = 8 > O = 4: fast takes taps first
w8 = rng.standard_normal((O, 8, 3, 3)).astype(np.float32)
naive8 = np.stack([conv2d_naive(img, w8, bias, 1, 1) for img in wide_in])
for name, layer in (("reference", ref), ("fast", fast)):
    # float32 sums of 27..100 products in other orders than the float64 loops: errors ~1e-6
    np.testing.assert_allclose(layer.conv2d(x, w, bias, stride=1, padding=1), ref1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.conv2d(x, w, bias, stride=2, padding=1), ref2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.conv2d(x, w5, bias, padding=2), naive5, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(layer.conv2d(wide_in, w8, bias, padding=1), naive8, rtol=1e-5, atol=2e-5)
    print(f"minstf.{'reference' if layer is ref else 'kernels'}.conv2d == naive (3x3 stride 1 and 2, 5x5, "
          f"taps first): max difference {lesson.max_diff(layer.conv2d(wide_in, w8, bias, padding=1), naive8):.1e}")
for h_ in (5, 6, 7, 8):  # a 3x3, stride 2, padding 1 convolution halves sizes, rounding up
    assert ref.conv2d(np.zeros((1, h_, 3, 1), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                      stride=2, padding=1).shape[1] == -(-h_ // 2)

# %% [markdown]
# And against PyTorch, when it is installed (it is optional: minstf itself never imports it).
# PyTorch wants NCHW, so transpose in and out.

# %%
try:
    import torch
except ImportError:
    torch = None
    print("torch not installed: skipping the PyTorch comparison")
if torch is not None:
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # (B, H, W, Cin) -> (B, Cin, H, W)
    for stride in (1, 2):
        yt = torch.nn.functional.conv2d(xt, torch.from_numpy(w), torch.from_numpy(bias), stride=stride, padding=1)
        for layer in (ref, fast):  # another float32 program (oneDNN or torch's own kernels): as above
            np.testing.assert_allclose(layer.conv2d(x, w, bias, stride=stride, padding=1),
                                       yt.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)  # NCHW -> NHWC
    print("minstf.reference.conv2d == minstf.kernels.conv2d == torch.nn.functional.conv2d")

# %% [markdown]
# What the copies cost: the reference im2col's patch matrix is $k^2 C_{in}$ values per output
# pixel; taps first needs $k O$ values per input pixel for one row of taps at a time (what the
# fast layer keeps, by blocks of rows of `minstf.kernels.threads.BLOCK["conv rows"]` values);
# the fast im2col for $O > C_{in}$ holds only a block of output rows (`BLOCK["im2col"]` values,
# ~2 MB). For three convolutions of upstream STF on a 768×512 Kodak image (the 5×5 one is
# `end_conv.0`, at half the image resolution), in float32:

# %%
print(f"{'convolution':40s} {'input':>8s} {'im2col':>8s} {'taps 1st':>9s}  fast layer")
for name, (h_, w_, cin, o_, k_) in {"h_a.0 (3x3, 384 -> 336, 32x48)": (32, 48, 384, 336, 3),
                                    "cc_mean_transforms.6.0 (3x3, 576 -> 224)": (32, 48, 576, 224, 3),
                                    "end_conv.0 (5x5, 48 -> 192, 256x384)": (256, 384, 48, 192, 5)}.items():
    pixels = 4 * h_ * w_  # bytes per value-plane
    way = "taps first" if o_ <= cin else "im2col by ~2 MB blocks"
    print(f"{name:40s} {pixels * cin / 2**20:6.1f}MB {pixels * k_ * k_ * cin / 2**20:6.1f}MB "
          f"{pixels * k_ * o_ / 2**20:7.1f}MB  {way}")

# %% [markdown]
# The time each takes depends on the BLAS library and on the machine (exercise 1).

# %% [markdown]
# ## 5. Pixel shuffle: channels become resolution
#
# `PixelShuffle(r)` turns a map with $C r^2$ channels into one with $C$ channels and $r$ times
# the height and width: the $r^2$ channels of each group become an $r \times r$ block of pixels.
# Channels-last,
#
# $$ \mathrm{out}[b,\, h r + i,\, w r + j,\, c] = \mathrm{in}[b, h, w,\, c r^2 + i r + j] . $$
#
# Naive loops, then the same thing as one reshape and one transpose:

# %%
def pixel_shuffle_naive(x, r):
    B, H, W, Crr = x.shape
    C = Crr // (r * r)
    out = np.empty((B, H * r, W * r, C), dtype=x.dtype)
    for h in range(H):
        for w_ in range(W):
            for c in range(C):
                for i in range(r):
                    for j in range(r):
                        out[:, h * r + i, w_ * r + j, c] = x[:, h, w_, c * r * r + i * r + j]
    return out


def pixel_shuffle_vectorized(x, r):
    B, H, W, Crr = x.shape
    C = Crr // (r * r)
    x = x.reshape(B, H, W, C, r, r)  # (B, H, W, C*r*r) -> (B, H, W, C, i, j)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # -> (B, H, i, W, j, C): rows h*r+i, columns w*r+j
    return x.reshape(B, H * r, W * r, C)  # -> (B, H*r, W*r, C)


xs = rng.standard_normal((2, 3, 5, 3 * 4)).astype(np.float32)  # (B, H, W, C*r*r), C = 3, r = 2
ps = pixel_shuffle_naive(xs, 2)  # (2, 6, 10, 3)
np.testing.assert_array_equal(pixel_shuffle_vectorized(xs, 2), ps)
# a pure permutation: no arithmetic, so every layer must give exactly the same numbers
np.testing.assert_array_equal(ref.pixel_shuffle(xs, 2), ps)  # minstf/reference/ops.py
np.testing.assert_array_equal(fast.pixel_shuffle(xs, 2), ps)  # minstf/kernels/ops.py (also writes into views)
if torch is not None:  # PyTorch's PixelShuffle on NCHW
    pt = torch.nn.functional.pixel_shuffle(torch.from_numpy(xs.transpose(0, 3, 1, 2).copy()), 2)
    np.testing.assert_array_equal(pt.numpy().transpose(0, 2, 3, 1), ps)
print("pixel shuffle:", xs.shape, "->", ps.shape, "naive == reshape/transpose == reference == fast (== torch)")

# %% [markdown]
# The picture: a 2×3 map with $C = 1$, $r = 2$, so 4 channels per pixel. Each output pixel
# is labelled *input pixel : input channel*; the four channels of one input pixel become one
# 2×2 block, channel $i r + j$ at offset $(i, j)$.

# %%
H_, W_, r = 2, 3, 2
label = np.arange(H_ * W_)[:, None] * 10 + np.arange(r * r)[None, :]  # 10*pixel + channel
shuffled = ref.pixel_shuffle(label.reshape(1, H_, W_, r * r), r)[0, :, :, 0]  # (1, 2, 3, 4) -> (4, 6)
fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
ax.imshow(shuffled // 10, cmap="Pastel1")
for (rr, cc), v in np.ndenumerate(shuffled):
    ax.text(cc, rr, f"{v // 10}:{v % 10}", ha="center", va="center")
ax.set_xticks(range(W_ * r))
ax.set_yticks(range(H_ * r))
ax.set_title("PixelShuffle(2): output pixel = input pixel : channel")
lesson.show(fig, "pixel_shuffle")

# %% [markdown]
# ## 6. The sub-pixel convolution of the hyper synthesis
#
# $h_{\mu}$ and $h_{\sigma}$ upsample $\hat z$ by 4 in two steps. Each step is a *sub-pixel
# convolution* (Shi et al., 2016): a 3×3 convolution to $4\times$ the wanted channels, then
# `PixelShuffle(2)`. It is a learned ×2 upsampling that only ever runs convolutions at the low
# resolution. (The end of $g_s$ does the same with a 5×5 convolution.) Upstream's keys show the
# two-module sequence: `h_mean_s.2.0` is the convolution inside `h_mean_s.2`.
#
# $h_{\mu}$ written out with the shipped weights and the reference functions, then checked
# against `minstf.transforms.h_mean_s` on both layers. Its real lines in `minstf/transforms.py`
# (`h_s_rows`, the layer list shared by `h_mean_s` and `h_scale_s`, which run it in bands of
# rows, docs/tiling.md; `conv_rows` is `_conv`, a convolution with padding $k//2$; `subpel_rows`
# a convolution, GELU and PixelShuffle(2);
# `gelu=True` picks `conv2d_gelu`, GELU(conv)):

# %%
from minstf import transforms  # noqa: E402

lesson.source(transforms.h_s_rows, start="return [conv_rows")

# %%
model = minstf.load_model()
p, cfg = model.params, model.config
for key in ("h_mean_s.0", "h_mean_s.2.0", "h_mean_s.4", "h_mean_s.6.0", "h_mean_s.8"):
    print(f"{key + '.weight':22s} {p[key + '.weight'].shape}")


def conv(x, key):
    return ref.conv2d(x, p[f"{key}.weight"], p[f"{key}.bias"], padding=1)


z_hat = np.rint(2 * rng.standard_normal((1, 4, 6, cfg.N_z))).astype(np.float32)  # (1, zh, zw, N_z)
t = ref.gelu(conv(z_hat, "h_mean_s.0"))  # (1, 4, 6, 4e) -> (1, 4, 6, 5e)
t = conv(t, "h_mean_s.2.0")  # -> (1, 4, 6, 4*6e): subpel conv ...
t = ref.gelu(ref.pixel_shuffle(t, 2))  # -> (1, 8, 12, 6e): ... then PixelShuffle(2)
t = ref.gelu(conv(t, "h_mean_s.4"))  # -> (1, 8, 12, 7e)
t = ref.gelu(ref.pixel_shuffle(conv(t, "h_mean_s.6.0"), 2))  # -> (1, 8, 12, 4*8e) -> (1, 16, 24, 8e)
means = conv(t, "h_mean_s.8")  # -> (1, 16, 24, M)
print("z_hat", z_hat.shape, "-> latent_means", means.shape)
# the reference h_mean_s runs these very functions, with GELU after the shuffle moved before it
# (they commute): the same float32 numbers up to rounding order, ~1e-7 relative
scale = np.abs(means).max()
np.testing.assert_allclose(h_mean_s(z_hat, p, cfg, kernels="reference"), means, rtol=1e-5, atol=1e-5 * scale)
# the fast layer: other summation orders in five convolutions, the erfc-fit GELU (relative error
# < 1.2e-7); tests/test_kernels.py allows 2e-5 x the largest magnitude per kernel, five chained here
np.testing.assert_allclose(h_mean_s(z_hat, p, cfg, kernels="fast"), means, rtol=1e-4, atol=1e-4 * scale)
print(f"by hand == h_mean_s on the reference layer (max difference "
      f"{lesson.max_diff(h_mean_s(z_hat, p, cfg, kernels='reference'), means):.1e}) and on the fast layer "
      f"({lesson.max_diff(h_mean_s(z_hat, p, cfg, kernels='fast'), means):.1e}); largest |value| {scale:.1f}")

# %% [markdown]
# ## Summary
#
# * A convolution is a sum over kernel taps of matrix products. im2col copies all patches into a
#   $(B H_o W_o) \times (k^2 C_{in})$ matrix and runs one product; its memory grows by $k^2$. That is
#   `conv2d` in `minstf/reference/ops.py`, the layer written to be read.
# * The fast layer (`conv2d` in `minstf/kernels/ops.py`) computes $Y = x \cdot [W_{tap} \dots]$ once
#   and sums $k^2$ shifted, clipped views of it when $O \le C_{in}$ (taps first), or runs im2col by
#   blocks of rows when $O > C_{in}$; `tests/test_kernels.py::test_conv2d` proves it equal to the
#   reference within float32 noise (2e-5 of the largest magnitude).
# * Pixel shuffle is a reshape and a transpose: channel $c r^2 + i r + j$ goes to offset $(i, j)$
#   of an $r \times r$ block, the same permutation in both layers (compared exactly). A 3×3
#   convolution followed by it is the sub-pixel convolution of the hyper synthesis.
#
# ## Exercises
#
# 1. Time `conv2d_naive`, `conv2d_im2col`, `conv2d_taps_first`, `ref.conv2d` and `fast.conv2d` on
#    a (1, 64, 96, 64) map with 64 output channels (`time.perf_counter`, best of several runs).
#    Then make `conv2d_taps_first` work for stride 2: which shifted views of $Y$ does an output
#    pixel read, and how much of $Y$ is never used?
#    *Hint:* with stride 2 only every second row and column of $Y$'s shifted views is read, so
#    three quarters of the big product is wasted; that is why both layers use im2col for stride 2.
# 2. Derive from the output-size formula why a 3×3 convolution with stride 2 and padding 1
#    (in $h_a$) gives $\lceil H/2 \rceil$, and show that a 1×1 convolution is `ref.linear`
#    on the channels.
#    *Hint:* $\lfloor (H + 2 - 3)/2 \rfloor + 1 = \lfloor (H-1)/2 \rfloor + 1$; for the 1×1 case
#    compare `ref.conv2d(x, w)` with `ref.linear(x, w[:, :, 0, 0])` (with a tolerance).
# 3. A sub-pixel convolution can be written as a transposed convolution with a 6×6 kernel and
#    stride 2 (`torch.nn.functional.conv_transpose2d`). Build that kernel from `h_mean_s.2.0`.
#    *Hint:* output sub-pixel $(i, j)$ of channel $c$ comes from conv output channel $4c + 2i + j$;
#    place its 3×3 taps at rows $2d_y + i$, columns $2d_x + j$ of the 6×6 kernel (then mind the padding).
