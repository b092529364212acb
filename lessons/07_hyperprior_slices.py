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
# # Lesson 7 — The hyperprior, channel-conditional slices and latent residual prediction
#
# Lesson 6 coded the hyper-latent z with a fixed per-channel density. The latent **y** is
# where almost all the bits go, and it gets a far better model: every element is a Gaussian
# whose mean and scale are *predicted* from what the decoder already knows,
#
# $$ p(\hat y_e \mid \text{known}) = \int_{\hat y_e - \frac12}^{\hat y_e + \frac12}
#    \mathcal N\big(t;\ \mu_e,\ \max(\sigma_e, 0.11)^2\big)\,dt . $$
#
# Two sources of knowledge, stacked:
#
# 1. the **hyperprior** (Ballé et al. 2018): z summarises y; its decoded $\hat z$ goes through
#    two synthesis networks `h_mean_s`, `h_scale_s` to `latent_means`, `latent_scales`;
# 2. **channel-conditional slices** (Minnen & Singh 2020): y is split along channels into
#    `num_slices` slices of `S` channels, decoded in order; slice s's $\mu, \sigma$ also see the
#    *first* `min(s, max_support_slices)` decoded slices. After decoding, a **latent residual
#    prediction** (LRP) network adds a bounded correction $\tfrac12\tanh(\cdot)$ to the slice.
#
# ```
#   y ─h_a─► z ─Q─► z_hat ─┬─h_mean_s──► latent_means ──┐
#                          └─h_scale_s─► latent_scales ─┤   for s = 0 .. num_slices-1:
#                                                       ├─► mu_s, scale_s ─► Q ─► y_hat_s ─► + LRP
#                       y_hat_0 .. y_hat_{k-1} ─────────┘             (support: the FIRST k slices)
# ```
#
# Spec: docs/architecture.md §3.2–3.4, §5; code: `minstf/transforms.py`, `minstf/slices.py`.
# Letters (docs/architecture.md §0): `B` batch, `H, W` = `H4, W4` the latent size (image / 16),
# `M` channels of y, `S` slices, `Cs = M / S` channels per slice, `K` the support cap and
# `k = min(s, K)` the support slices of slice `s`, `N_z` channels of z; maps are `(B, H, W, C)`.

# %%
import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures, checks
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf import entropy_models as em
from minstf.image import psnr, to_float
from minstf.slices import run_slices, slice_of
from minstf.transforms import g_a, g_s, h_a, h_mean_s, h_scale_s, slice_network

FAST = lesson.FAST


model = minstf.load_model(quality=2)  # the shipped medium-rate model
cfg, params = model.config, model.params
M, S, Cs, K = cfg.M, cfg.num_slices, cfg.slice_channels, cfg.max_support_slices
print(f"{model.name}: y has M = {M} channels in S = {S} slices of Cs = {Cs}; "
      f"support = the first K = {K} slices; z has N_z = {cfg.N_z} channels")

image = lesson.sample_image((slice(0, 128), slice(0, 192)) if FAST else None)  # uint8 (H, W, 3)
x = to_float(image).transpose(0, 2, 3, 1)  # (1, 3, H, W) -> (1, H, W, 3): channels-last inside

# %% [markdown]
# ## 1. The hyperprior, stage by stage
# The transforms are plain functions of `(array, params, config)`. z_hat is
# `round(z − median) + median` (lesson 6).

# %%
y = g_a(x, params, cfg)  # (1, H, W, 3) -> (1, H4, W4, M), H4 = H / 16
z = h_a(y, params, cfg)  # (1, H4, W4, M) -> (1, H4/4, W4/4, N_z)
med = em.eb_medians(model.eb)  # (N_z,)
z_hat = np.rint(z - med) + med
latent_means = h_mean_s(z_hat, params, cfg)  # (1, zh, zw, N_z) -> (1, 4*zh, 4*zw, M)
latent_scales = h_scale_s(z_hat, params, cfg)  # same shape, separate weights
print("x", x.shape, "-> y", y.shape, "-> z", z.shape, "-> latent_means/scales", latent_means.shape)

taps = {}
out = model.forward(to_float(image), taps=taps)  # the library's forward pass, recording its tensors
# floats: forward() runs these functions on the same layer; allow float32 rounding anyway
# (1e-5 of each tensor's largest magnitude), which is what any reordering of the sums costs
for name, ours in [("y", y), ("z", z)]:
    np.testing.assert_allclose(ours, taps[name], rtol=0, atol=1e-5 * max(1.0, float(np.abs(ours).max())))
# decisions: the z symbols must agree, except where z - median lies within float noise of a tie
if lesson.rounding_agrees("z symbols", np.rint(z - med), np.rint(taps["z"] - med), z - med) == 0:
    for name, ours in [("z_hat", z_hat), ("latent_means", latent_means), ("latent_scales", latent_scales)]:
        np.testing.assert_allclose(ours, taps[name], rtol=0, atol=1e-5 * max(1.0, float(np.abs(ours).max())))
print("stage by stage == model.forward taps")

# %% [markdown]
# The hyper-synthesis output has 4·zh × 4·zw positions; when H4 is not a multiple of 4
# it is larger than y and the slice networks' outputs are cropped to `[:H4, :W4]`.
# Here is one channel of y beside its hyperprior prediction:

# %%
ch = int(np.argmax(y.std(axis=(0, 1, 2))))  # the busiest channel of y
fig, ax = plt.subplots(1, 3, figsize=(11, 2.8))
for a, (title, m) in zip(ax, [(f"y, channel {ch}", y), (f"latent_means, channel {ch}", latent_means),
                              (f"latent_scales, channel {ch}", latent_scales)]):
    im = a.imshow(m[0, :y.shape[1], :y.shape[2], ch], cmap="coolwarm" if "scale" not in title else "viridis")
    a.set_title(title)
    a.axis("off")
    fig.colorbar(im, ax=a, shrink=0.8)
fig.tight_layout()
lesson.show(fig, "hyperprior")

# %% [markdown]
# ## 2. Which slices support which
# Slice s sees `latent_means` (or `latent_scales`) plus the **first** `min(s, max_support)`
# decoded slices — not the most recent ones (docs/architecture.md §8.1). The input width of each slice
# network tells the same story: `M + Cs·k` for mean and scale, `M + Cs·(k+1)` for LRP (which
# also sees the slice itself).

# %%
print("slice  support       mean/scale in   lrp in")
for s in range(S):
    k = min(s, K)
    row = "".join("■ " if j < k else ("· " if j < s else "  ") for j in range(S))
    w_mean = params[f"cc_mean_transforms.{s}.0.weight"].shape[1]  # conv (O, I, 3, 3): I = input channels
    w_lrp = params[f"lrp_transforms.{s}.0.weight"].shape[1]
    assert w_mean == M + Cs * k and w_lrp == M + Cs * (k + 1)
    assert params[f"cc_scale_transforms.{s}.0.weight"].shape[1] == w_mean
    print(f"{s:5d}  {row:12s}  {w_mean:13d}   {w_lrp:6d}")
print("■ = support, · = decoded earlier but not seen")

# %% [markdown]
# ## 3. The slice loop, written out
# For each slice: concatenate the support along channels, run the two parameter networks,
# quantize around the mean, dequantize, then LRP. This is the forward (encoder-side) version:
# the symbols are `round(y_s − mu)`.

# %%
def slice_loop_naive(y, latent_means, latent_scales, params, cfg):
    H, W = y.shape[1:3]
    y_hat_slices, rec = [], {"mu": [], "scale": [], "y_hat_pre_lrp": [], "lrp_raw": []}
    for s in range(cfg.num_slices):
        y_s = y[..., s * Cs:(s + 1) * Cs]  # (B, H, W, Cs)
        support = y_hat_slices[:K]  # the first min(s, K) slices, each (B, H, W, Cs)
        mean_support = np.concatenate([latent_means] + support, axis=-1)  # (B, H', W', M + Cs*k)
        scale_support = np.concatenate([latent_scales] + support, axis=-1)
        mu = slice_network(mean_support, params, f"cc_mean_transforms.{s}")[:, :H, :W]  # -> (B, H, W, Cs)
        scale = slice_network(scale_support, params, f"cc_scale_transforms.{s}")[:, :H, :W]
        y_hat_s = np.rint(y_s - mu) + mu  # quantize around the mean
        lrp = slice_network(np.concatenate([mean_support, y_hat_s], axis=-1),  # (B, H, W, M + Cs*(k+1))
                            params, f"lrp_transforms.{s}")[:, :H, :W]  # -> (B, H, W, Cs)
        for name, value in zip(rec, (mu, scale, y_hat_s, lrp)):
            rec[name].append(value)
        y_hat_slices.append(y_hat_s + np.float32(0.5) * np.tanh(lrp))  # latent residual prediction
    y_hat = np.concatenate(y_hat_slices, axis=-1)  # S slices of Cs channels -> (B, H, W, M)
    return y_hat, {name: np.concatenate(v, axis=-1) for name, v in rec.items()}


y_hat_naive, rec = slice_loop_naive(y, latent_means, latent_scales, params, cfg)

# %% [markdown]
# ### The library's loop: `run_slices`
# `minstf.slices.run_slices` is written once for forward, compress and decompress; the only
# step that differs is how a slice's integer symbols are obtained, passed in as
# `quantize(s, mu, scale)`. With `taps` it records the per-slice tensors. It runs each slice
# network band by band (`network`: the support of a band of rows concatenated for those rows
# only, docs/tiling.md §4), and writes each finished slice into one `y_hat`; here the latent is
# a single band. Its real loop:

# %%
lesson.source(run_slices, start="for s in range(config.num_slices)", stop="latent residual prediction")

# %% [markdown]
# Our loop and the library's are two code paths: the symbols (integers) must agree exactly,
# except at a tie within float noise; the floats with a tolerance.

# %%
lib_taps = {}
y_hat = run_slices(latent_means, latent_scales, params, cfg,
                   quantize=lambda s, mu, scale: np.rint(slice_of(y, s, cfg) - mu), taps=lib_taps)
symbols_of = lambda r: np.rint(r["y_hat_pre_lrp"] - r["mu"])  # noqa: E731 (y_hat_s - mu is an integer)
if lesson.rounding_agrees("y symbols, naive vs run_slices", symbols_of(rec), symbols_of(lib_taps), y - rec["mu"]) == 0:
    # the same slice networks on the same supports, concatenated the same way; 1e-5 of the
    # largest magnitude covers any reordering of their float32 sums
    for name, ours in [("y_hat", y_hat_naive)] + list(rec.items()):
        theirs = y_hat if name == "y_hat" else lib_taps[name]
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ours).max())))
    np.testing.assert_allclose(taps["y_hat"], y_hat, rtol=0, atol=1e-5 * max(1.0, float(np.abs(y_hat).max())))
print("naive loop == run_slices == forward(); taps:", {k: v.shape for k, v in lib_taps.items()})

# %% [markdown]
# ### Decode order, checked
# Slice s may only depend on what the decoder has at that point. Change y in one slice and
# see whose `mu` moves: never the slice itself (its mean is computed before it is quantized)
# nor earlier ones; a later slice only if the changed slice is among its first K.

# %%
print("changed slice | max |change| of mu in slice 0 ..", cfg.num_slices - 1)
for s0 in sorted({0, min(K, cfg.num_slices - 1)}):
    y_changed = y.copy()
    y_changed[..., s0 * Cs:(s0 + 1) * Cs] += 3.0  # (B, H, W, M): only slice s0's channels
    _, rec_changed = slice_loop_naive(y_changed, latent_means, latent_scales, params, cfg)
    moved = [np.abs(slice_of(rec_changed["mu"], s, cfg) - slice_of(rec["mu"], s, cfg)).max()
             for s in range(cfg.num_slices)]
    print(f"{s0:13d} |", "  ".join(f"{m:6.3g}" for m in moved))
    for s, m in enumerate(moved):
        assert (m > 0) == (s0 < min(s, K)), "mu must depend exactly on the support slices"

# %% [markdown]
# ## 4. Scale indexes
# The coder cannot use a continuous scale: it has 64 integer tables, one per entry of a
# log-spaced scale table (0.11 … 256, lesson 8). `build_indexes` picks, for each element,
# the **smallest** table entry ≥ max(scale, 0.11), i.e. a slightly wider Gaussian (docs/entropy.md
# §4.4). Naively: count the entries the scale does not exceed.

# %%
def build_indexes_naive(scale):
    s = np.maximum(scale, np.float32(0.11))  # float32 0.11 == SCALE_TABLE[0] bit for bit
    count = sum((s <= em.SCALE_TABLE[k]).astype(np.int32) for k in range(63))  # entries 0..62 >= s
    return 63 - count


scale = rec["scale"]  # (B, H, W, M)
index = em.build_indexes(scale)  # (B, H, W, M) int32 in 0..63
np.testing.assert_array_equal(index, build_indexes_naive(scale))
print("SCALE_TABLE[:4] =", em.SCALE_TABLE[:4], "... SCALE_TABLE[-1] =", em.SCALE_TABLE[-1])
print("indexes used:", np.unique(index).tolist())
e = np.unravel_index(np.argmax(scale), scale.shape)  # the widest element
k = index[e]
print(f"e.g. scale {scale[e]:.4f} -> index {k}:",
      f"SCALE_TABLE[{k - 1}] = {em.SCALE_TABLE[k - 1]:.4f} <" if k else "", f"scale <= SCALE_TABLE[{k}] = "
      f"{em.SCALE_TABLE[k]:.4f}")

# %%
fig, ax = plt.subplots(2, cfg.num_slices, figsize=(2.8 * cfg.num_slices, 4.2), squeeze=False)
for s in range(cfg.num_slices):
    c0 = s * Cs  # the first channel of each slice
    ax[0, s].imshow(np.abs(y - rec["mu"])[0, :, :, c0], cmap="magma")
    ax[0, s].set_title(f"|y − mu|, ch {c0}", fontsize=9)
    im = ax[1, s].imshow(index[0, :, :, c0], cmap="viridis", vmin=0, vmax=index.max())
    ax[1, s].set_title(f"index, slice {s}", fontsize=9)
for a in ax.flat:
    a.axis("off")
fig.colorbar(im, ax=ax[1, :].tolist(), shrink=0.8)
lesson.show(fig, "indexes")

# %% [markdown]
# Large indexes (wide Gaussians) sit where `y` is hard to predict (edges, texture); smooth
# areas get narrow ones. What this buys, slice by slice, in ideal bits
# ($-\log_2$ of the Gaussian likelihood, `gc_likelihood`, what forward() returns):

# %%
lik = em.gc_likelihood(y, scale, rec["mu"])  # (B, H, W, M)
# our mu and scale against forward()'s: float32 rounding of mu moves a likelihood by ~1e-6 relative
np.testing.assert_allclose(lik.transpose(0, 3, 1, 2), out["likelihoods"]["y"], rtol=1e-4, atol=1e-9)
bits = -np.log2(lik.astype(np.float64))
for s in range(cfg.num_slices):
    print(f"slice {s}: {slice_of(bits, s, cfg).sum():8.0f} bits, mean index {slice_of(index, s, cfg).mean():5.2f}")

# %% [markdown]
# ## 5. What latent residual prediction changes
# Quantization leaves an error `y − round(y − mu) − mu` in [−½, ½]. LRP computes a correction
# `0.5·tanh(lrp)` from the decoded context (mean support + the slice itself) — bounded by ½,
# so it never moves a value by more than the quantization step — and costs no bits: the
# decoder computes it too. It is trained only through the image distortion, not told to
# bring y_hat closer to y, so look at both: the latent error, and the image.

# %%
correction = np.float32(0.5) * np.tanh(rec["lrp_raw"])  # (B, H, W, M)
assert np.abs(correction).max() <= 0.5
# our loop's pieces against run_slices' y_hat: the tolerance of the comparison above
np.testing.assert_allclose(rec["y_hat_pre_lrp"] + correction, y_hat, rtol=0, atol=1e-5 * float(np.abs(y_hat).max()))
for s in range(cfg.num_slices):
    before = np.mean((slice_of(y, s, cfg) - slice_of(rec["y_hat_pre_lrp"], s, cfg)) ** 2)
    after = np.mean((slice_of(y, s, cfg) - slice_of(y_hat, s, cfg)) ** 2)
    print(f"slice {s}: MSE(y, y_hat) without LRP {before:.4f}, with {after:.4f}")

x_hat = g_s(y_hat, params, cfg)  # (1, H4, W4, M) -> (1, H, W, 3)
# g_s of our y_hat against forward()'s reconstruction (same g_s, y_hat equal within 1e-5): x_hat in [0, 1]
np.testing.assert_allclose(x_hat.transpose(0, 3, 1, 2), out["x_hat"], rtol=0, atol=1e-4)
x_hat_no_lrp = g_s(rec["y_hat_pre_lrp"], params, cfg)  # the same decoder, without the corrections
print(f"PSNR of the reconstruction: with LRP {psnr(x, np.clip(x_hat, 0, 1)):.2f} dB, "
      f"without {psnr(x, np.clip(x_hat_no_lrp, 0, 1)):.2f} dB")

# %%
fig, ax = plt.subplots(1, 3, figsize=(11, 2.8))
ax[0].imshow(image)
ax[0].set_title("image")
err = np.abs(y - rec["y_hat_pre_lrp"])[0].mean(axis=-1)  # (H4, W4): mean over channels
im1 = ax[1].imshow(err, cmap="magma")
ax[1].set_title("|y − y_hat| before LRP")
im2 = ax[2].imshow(np.abs(correction)[0].mean(axis=-1), cmap="magma")
ax[2].set_title("|0.5 tanh(lrp)|")
for a, im in zip(ax, (None, im1, im2)):
    a.axis("off")
    if im is not None:
        fig.colorbar(im, ax=a, shrink=0.8)
fig.tight_layout()
lesson.show(fig, "lrp")

# %% [markdown]
# ## Summary
#
# * The hyperprior turns z_hat into `latent_means`, `latent_scales` (two separate h_s networks).
# * y is decoded in `num_slices` slices; slice s's `mu` and `scale` come from the hyperprior
#   plus the **first** `min(s, max_support_slices)` decoded slices; `run_slices` is the one
#   loop behind forward, compress and decompress (only `quantize` differs).
# * The coder uses `build_indexes(scale)`: the smallest scale-table entry ≥ max(scale, 0.11).
# * LRP adds `0.5·tanh(lrp)` to each decoded slice, from the mean support and the slice itself.
#
# ## Exercises
#
# 1. Which channels does LRP change most? Plot the mean |correction| per channel against the
#    channel's mean scale index. Does LRP work hardest where the Gaussian is widest?
#    *Hint:* `np.abs(correction).mean(axis=(0, 1, 2))` and `index.mean(axis=(0, 1, 2))`, both `(M,)`;
#    `plt.scatter` one against the other.
# 2. Replace `support = y_hat_slices[:K]` by the *last* K slices. Which assert above fails, and
#    why would a model trained with upstream's rule decode garbage with it?
#    *Hint:* `y_hat_slices[-K:]`; the decode-order check of section 3 fails (the slice networks'
#    input widths still fit, so nothing else complains: docs/architecture.md §8.1).
# 3. Compute the bits of slice 0 with `mu = latent_means` only (no slice network) and compare
#    with the table in §4: how much do the slice networks save?
#    *Hint:* `em.gc_likelihood(slice_of(y, 0, cfg), slice_of(scale, 0, cfg), slice_of(latent_means, 0, cfg)[:, :H4, :W4])`
#    with `H4, W4 = y.shape[1:3]`; keep the network's scale so that only the mean changes.
