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
# # Lesson 11 — WACNN: what the second model changes
#
# Upstream ships a second model beside STF, the window-attention CNN (`cnn`, "WACNN"). Its
# hyperprior, its ten channel-conditional slices with latent residual prediction, its entropy
# models and its file format are STF's. minstf runs both through the same `model.py`,
# `slices.py` and `coding.py`. Only the analysis and synthesis transforms differ. Each is a
# list of layers (`G_A`, `G_S` in `minstf/wacnn.py`) built from three pieces that STF does not
# have:
#
# 1. **GDN / IGDN**: generalized divisive normalization, the classic nonlinearity of learned
#    codecs, in place of LayerNorm + GELU;
# 2. **the transposed convolution**, stride 2, the synthesis' upsampler in place of PatchSplit;
# 3. **the gated attention block**: `x + conv_a(x) · sigmoid(conv_b(x))`, where `conv_b`
#    starts with a shifted window attention that has no LayerNorm and no MLP.
#
# This lesson writes each piece the naive way and checks it against the reference layer
# (`minstf/reference/wacnn.py`) and the fast layer (`minstf/kernels/`). It then runs the
# whole transforms and streams them in bands of rows (docs/tiling.md §3).
# Spec: docs/wacnn.md.

# %%
import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures, source listings
import matplotlib.pyplot as plt
import numpy as np

from minstf import rows, wacnn
from minstf.config import WACNN_SMALL_CONFIG
from minstf.reference.wacnn import BETA_MIN, PEDESTAL, gdn_parameters, nonnegative
from minstf.switch import get_kernels
from minstf.synthetic import recipe_weights

ref, fast = get_kernels("reference"), get_kernels("fast")
cfg = WACNN_SMALL_CONFIG
p = {k: v.astype(np.float32) for k, v in recipe_weights(cfg).items()}  # the golden recipe, small WACNN
rng = np.random.default_rng(0)
print(cfg)
print("G_A:", wacnn.G_A)
print("G_S:", wacnn.G_S)

# %% [markdown]
# ## 1. GDN and IGDN
#
# At every pixel, with channels $x_1..x_C$:
#
# $$\mathrm{GDN}(x)_i = \frac{x_i}{\sqrt{\beta_i + \sum_j \gamma_{ij} x_j^2}}, \qquad
#   \mathrm{IGDN}(x)_i = x_i \sqrt{\beta_i + \sum_j \gamma_{ij} x_j^2}.$$
#
# The sum over $j$ is a 1×1 convolution of $x^2$, so it runs as one matrix product.
# Upstream does not store $\beta$ and $\gamma$ themselves. It stores their square roots plus
# a tiny pedestal, and takes `max(stored, sqrt(minimum + pedestal))² − pedestal`. That keeps
# $\beta \ge 10^{-6}$ and $\gamma \ge 0$ whatever the optimizer did.

# %%
beta_raw, gamma_raw = p["g_a.1.beta"], p["g_a.1.gamma"]  # (C,), (C, C) as stored
beta, gamma = gdn_parameters(beta_raw, gamma_raw)
print("stored beta min", beta_raw.min(), "-> effective min", beta.min(), f"(bound {BETA_MIN})")
assert beta.min() >= np.float32(BETA_MIN) * (1 - 1e-6) and gamma.min() >= 0
np.testing.assert_array_equal(beta, nonnegative(beta_raw, BETA_MIN))  # one code path against itself

x = rng.standard_normal((1, 6, 5, beta.shape[0])).astype(np.float32)  # (B, H, W, C)
naive = np.empty_like(x)
for i in range(x.shape[1]):  # the formula, one pixel at a time
    for j in range(x.shape[2]):
        v = x[0, i, j].astype(np.float64)
        naive[0, i, j] = v / np.sqrt(beta + gamma.astype(np.float64) @ (v * v))
for k in (ref, fast):
    got = k.gdn(x, beta_raw, gamma_raw)
    np.testing.assert_allclose(got, naive, rtol=1e-5, atol=1e-6)
    print(f"{k.__name__}.gdn == the per-pixel formula (max diff {np.abs(got - naive).max():.1e})")

# %% [markdown]
# GDN is *divisive*: a large input is divided by its own size, so the output saturates
# where a linear layer would grow. IGDN, on the synthesis side, multiplies instead. It is
# not GDN's exact inverse, because its norm is computed from its own input; the two
# transforms learn to be each other's counterpart.

# %%
scales = np.array([0.1, 1, 10, 100], np.float32)
out = [np.abs(ref.gdn(s * x, beta_raw, gamma_raw)).mean() for s in scales]
print("mean |GDN(s x)| for s =", scales, "->", np.round(out, 3))
assert out[3] < 2 * out[2]  # saturates: 10x the input, far less than 10x the output
back = ref.igdn(ref.gdn(x, beta_raw, gamma_raw), beta_raw, gamma_raw)
print("max |IGDN(GDN(x)) - x| =", float(np.abs(back - x).max()), "(not an inverse)")

# %% [markdown]
# ## 2. The transposed convolution
#
# `ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)` doubles a map. By its
# definition, each input pixel $(i, j)$ *scatters* a k×k stamp of its values times the kernel
# into the output, at $(2i − 2 + a, 2j − 2 + b)$. Its weight is `(Cin, O, k, k)`, with input
# channels first, the other way round from Conv2d's. The naive scatter is six loops:

# %%
Cin, O, kk = 3, 2, 5
xt = rng.standard_normal((1, 4, 3, Cin)).astype(np.float32)  # (B, H, W, Cin)
wt = rng.standard_normal((Cin, O, kk, kk)).astype(np.float32)
bt = rng.standard_normal(O).astype(np.float32)
H, W = xt.shape[1:3]
naive = np.zeros((1, 2 * H, 2 * W, O))
for i in range(H):
    for j in range(W):
        for a in range(kk):
            for b in range(kk):
                r, c = 2 * i - 2 + a, 2 * j - 2 + b
                if 0 <= r < 2 * H and 0 <= c < 2 * W:  # stamps falling outside are cropped
                    naive[0, r, c] += xt[0, i, j] @ wt[:, :, a, b]  # (Cin,) @ (Cin, O)
naive += bt
for k in (ref, fast):
    got = k.conv_transpose2d(xt, wt, bt, stride=2, padding=2, output_padding=1)
    np.testing.assert_allclose(got, naive, rtol=1e-5, atol=1e-5)
    print(f"{k.__name__}.conv_transpose2d {xt.shape} -> {got.shape} == the scatter "
          f"(max diff {np.abs(got - naive).max():.1e})")

# %% [markdown]
# The same thing is an *ordinary* convolution. Put a zero between neighbouring pixels
# ("zero-stuffing", stride − 1 zeros), pad by `k − 1 − padding` (plus `output_padding` at the
# bottom and right), and convolve with the kernel flipped in both directions and with its
# channel axes swapped. This is why the operation is called a transposed convolution: it is
# the transpose of a strided convolution's matrix.

# %%
stuffed = np.zeros((1, 2 * H - 1, 2 * W - 1, Cin), np.float32)
stuffed[:, ::2, ::2] = xt  # (1, 2H-1, 2W-1, Cin)
lo, hi = kk - 1 - 2, kk - 1 - 2 + 1
stuffed = np.pad(stuffed, ((0, 0), (lo, hi), (lo, hi), (0, 0)))  # (1, 2H+4, 2W+4, Cin)
flipped = wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).copy()  # (O, Cin, k, k), rotated 180 degrees
as_conv = ref.conv2d(stuffed, flipped, bt)  # valid 5x5: -> (1, 2H, 2W, O)
np.testing.assert_allclose(as_conv, naive, rtol=1e-5, atol=1e-5)
print("zero-stuffing + flipped kernel + conv2d == the scatter", as_conv.shape)

# %% [markdown]
# ## 3. The gated attention block
#
# `attention_block` (upstream's `Win_noShift_Attention`, which in fact shifts by ws/2) is
# $x + a(x)\,\sigma(b(x))$:
#
# * `conv_a`: three residual units `GELU(x + 1×1(GELU(3×3(GELU(1×1(x))))))`;
# * `conv_b`: a shifted window attention with its shortcut but no LayerNorm and no MLP
#   (`window_attention_block`), three residual units, and a 1×1 convolution that gives the
#   gate's logits.
#
# The gate $\sigma \in (0, 1)$ decides, per pixel and channel, how much of `conv_a`'s
# correction is added. The code writes $\sigma(g)$ as $(1 + \tanh(g/2))/2$, which is equal
# and never overflows.

# %%
ws, heads = cfg.window_sizes[0], cfg.num_heads
xa = rng.standard_normal((1, 4 * ws, 3 * ws, cfg.N)).astype(np.float32)  # whole windows
prefix = "g_a.4"  # the first attention block of G_A ("attn0")
a = xa
for u in range(3):
    a = wacnn.residual_unit(a, p, f"{prefix}.conv_a.{u}", "reference")
mask = ref.shift_attention_mask(*xa.shape[1:3], ws, ws // 2)
b = ref.window_attention_block(xa, p, f"{prefix}.conv_b.0", heads, ws, ws // 2, mask)
for u in range(1, 4):
    b = wacnn.residual_unit(b, p, f"{prefix}.conv_b.{u}", "reference")
g = ref.conv2d(b, p[f"{prefix}.conv_b.4.weight"], p[f"{prefix}.conv_b.4.bias"])  # 1x1: gate logits
gate = 1 / (1 + np.exp(-g.astype(np.float64)))
written_out = xa + a * gate
for k in ("reference", "fast"):
    got = wacnn.attention_block(xa, p, prefix, heads, ws, kernels=k)
    np.testing.assert_allclose(got, written_out, rtol=1e-4, atol=1e-5)
    print(f"attention_block ({k}) == x + conv_a(x) * sigmoid(conv_b(x)) "
          f"(max diff {np.abs(got - written_out).max():.1e})")
print(f"gate: min {gate.min():.3f}, mean {gate.mean():.3f}, max {gate.max():.3f}")
fig, ax = plt.subplots(figsize=(4, 3))
ax.hist(gate.ravel(), bins=40)
ax.set_xlabel("sigmoid(conv_b(x))")
ax.set_title("the gate on random input")
lesson.show(fig, "gate")

# %% [markdown]
# ## 4. The whole transforms, and in bands of rows
#
# `g_a` runs `G_A`: two stride-2 convolutions with GDN, an attention block on windows of
# `window_sizes[0]` at 1/4 size, two more convolutions, and an attention block at 1/16 size.
# `g_s` runs the mirror image with transposed convolutions and IGDN. Every layer is local
# in the rows of its map, so `wacnn.g_a_rows` describes each one as a `RowLayer`: how many
# rows beyond a band it reads, and on which grid its bands start. `minstf.rows` then streams
# the image through them one band at a time, which is how minstf codes a 50-megapixel photo
# in bounded memory (docs/tiling.md §3). The result equals the whole-image run.

# %%
side = 64 if lesson.FAST else 128
image = lesson.sample_image((slice(0, side), slice(0, 2 * side)))
x = (image.astype(np.float32) / 255)[None]  # (1, H, W, 3)
y = wacnn.g_a(x, p, cfg)  # (1, H/16, W/16, M)
x_hat = wacnn.g_s(y, p, cfg)  # (1, H, W, 3)
print("g_a:", x.shape, "->", y.shape, " g_s:", y.shape, "->", x_hat.shape)
for kind in wacnn.G_A:
    print(f"  {kind:7s} reads rows as {wacnn.rows_geometry(kind, cfg)}")
band = 16
streamed = rows.collect(wacnn.g_a_rows(p, cfg), lambda a, b: x[:, a:b], x.shape[1], band)
np.testing.assert_allclose(streamed, y, rtol=0, atol=2e-5 * max(1.0, float(np.abs(y).max())))
print(f"g_a in bands of {band} rows == g_a on the whole image (max diff {np.abs(streamed - y).max():.1e})")
