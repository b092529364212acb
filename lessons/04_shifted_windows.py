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
# # Lesson 4 — Shifted windows and the attention mask
#
# Window attention (lesson 3) never lets information cross a window border. Swin's fix: in
# every second block, move the window grid by $s = w_s / 2 = 2$ tokens down and right, so the
# new windows straddle the old borders. Two blocks in a row then connect every token with its
# neighbours in the adjacent windows.
#
# Shifted windows are awkward at the map's border: the shifted grid cuts the map into windows
# of 4×4, 4×2, 2×4 and 2×2 tokens, and more of them. The trick of the paper: *roll* the map
# cyclically by $(-s, -s)$, so that the shifted grid lands on the ordinary grid, and partition
# as usual. Some windows now hold tokens from opposite borders of the map that are not
# neighbours at all; a mask adds $-100$ to the attention logits between tokens from different
# regions, so they ignore each other. After attention, roll back by $(+s, +s)$.
#
# This lesson builds the region labels and the mask for an 8×12 map (the last stage of STF for
# a 128×192 image), checks them against `shift_attention_mask` (`minstf/reference/swin.py`),
# asks why $-100$ and not $-\infty$, and proves the trick right: roll + mask gives the same
# numbers as attending inside the irregular shifted windows directly. Then the whole block, in
# the reference layer (`swin_block` in `minstf/reference/swin.py`) and in the fast layer
# (`minstf/kernels/swin.py`), which does the pad, the roll and the partition in one gather.
# Spec: docs/architecture.md §2.5–2.6, §8.5–8.7. Dimension letters as in lesson 3.

# %%
import math

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures, source listings
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf.kernels.swin import window_token_index
from minstf.switch import get_kernels

ref = get_kernels("reference")  # minstf/reference/: the block as pad -> roll -> partition -> attend -> back
fast = get_kernels("fast")  # minstf/kernels/: the block by groups of windows gathered through an index


def grid_lines(ax, Hp, Wp, ws, offset=0, **kw):
    """Draw window borders (every ws tokens, starting at `offset`) on an imshow of a map."""
    for r in range(offset, Hp + 1, ws):
        ax.axhline(r - 0.5, color=kw.get("color", "k"), lw=kw.get("lw", 2))
    for c in range(offset, Wp + 1, ws):
        ax.axvline(c - 0.5, color=kw.get("color", "k"), lw=kw.get("lw", 2))


# %% [markdown]
# ## 1. The shifted grid and the cyclic roll
#
# Left: an 8×12 map, each token numbered, coloured by the *shifted* window it belongs to (grid
# moved by 2; there are $3 \times 4 = 12$ of them, most cut by the border). Right: the same
# tokens after `np.roll(x, (-2, -2), axis=(0, 1))`; now the ordinary 4×4 grid (black) holds 6
# windows, and the windows on the right and bottom contain pieces of several shifted windows.

# %%
Hp, Wp, ws, s = 8, 12, 4, 2
tokens = np.arange(Hp * Wp).reshape(Hp, Wp)  # token number = its position in the original map


def shifted_groups(n, ws, s):
    """Index ranges of the shifted windows along one axis of length n: [0, s), [s, s+ws), ..."""
    edges = [0] + list(range(s, n, ws)) + [n]
    return [range(a, b) for a, b in zip(edges, edges[1:])]


row_groups, col_groups = shifted_groups(Hp, ws, s), shifted_groups(Wp, ws, s)
region = np.empty((Hp, Wp), dtype=int)  # id of the shifted window of each token, original frame
for i, rows in enumerate(row_groups):
    for j, cols in enumerate(col_groups):
        region[np.ix_(rows, cols)] = i * len(col_groups) + j
print("shifted windows along H:", [list(g) for g in row_groups])
print("shifted windows along W:", [list(g) for g in col_groups])

rolled_tokens = np.roll(tokens, (-s, -s), axis=(0, 1))  # new[i, j] = old[(i + 2) % Hp, (j + 2) % Wp]
rolled_region = np.roll(region, (-s, -s), axis=(0, 1))
fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
for ax, tok, reg, title, off in ((axes[0], tokens, region, "original: shifted windows (colour)", s),
                                 (axes[1], rolled_tokens, rolled_region, "rolled by (-2, -2): regular grid", 0)):
    ax.imshow(reg, cmap="tab20", vmin=0, vmax=19)
    for (r, c), v in np.ndenumerate(tok):
        ax.text(c, r, v, ha="center", va="center", fontsize=8)
    grid_lines(ax, Hp, Wp, ws, offset=off)
    ax.set_title(title)
lesson.show(fig, "shift_and_roll")

# %% [markdown]
# ## 2. Region labels and the mask
#
# After the roll, the tokens of a window may come from up to four regions. Swin labels the
# rolled map with nine regions, three bands along each axis: `[0, Hp-ws)`, `[Hp-ws, Hp-s)`,
# `[Hp-s, Hp)`, and likewise along W. The original Swin code writes it as two loops over
# slices; the label map is then cut into windows like the features, and
#
# $$ \mathrm{mask}[w, n, m] = \begin{cases} 0 & \text{label}[w, n] = \text{label}[w, m] \\
#    -100 & \text{otherwise.} \end{cases} $$

# %%
def shift_mask_naive(H, W, ws, s):
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws  # rounded up to whole windows
    label = np.zeros((Hp, Wp), dtype=int)
    count = 0
    for rows in (slice(0, Hp - ws), slice(Hp - ws, Hp - s), slice(Hp - s, Hp)):
        for cols in (slice(0, Wp - ws), slice(Wp - ws, Wp - s), slice(Wp - s, Wp)):
            label[rows, cols] = count
            count += 1
    label_windows = ref.window_partition(label[None, :, :, None], ws)[..., 0]  # (1, Hp, Wp, 1) -> (nW, N)
    nW, N = label_windows.shape
    mask = np.zeros((nW, N, N), dtype=np.float32)
    for w in range(nW):
        for n in range(N):
            for m in range(N):
                if label_windows[w, n] != label_windows[w, m]:
                    mask[w, n, m] = -100.0
    return label, mask


label, mask_naive = shift_mask_naive(Hp, Wp, ws, s)
mask = ref.shift_attention_mask(Hp, Wp, ws, s)  # (nW, N, N) float32
print("shift_attention_mask:", mask.shape, mask.dtype, "values", np.unique(mask))
# no arithmetic, only comparisons of integer labels and the constants 0 and -100: exact
np.testing.assert_array_equal(mask, mask_naive)
np.testing.assert_array_equal(ref.shift_attention_mask(6, 10, ws, s), mask)  # padded to 8x12 first
assert fast.shift_attention_mask is ref.shift_attention_mask  # one function for both layers
print("naive == shift_attention_mask, minstf/reference/swin.py (also for a 6x10 map, padded to 8x12)")

# %% [markdown]
# The labels mark exactly the pieces of the shifted windows: same label in a window ⇔ same
# shifted window (colour in the picture above).

# %%
for w, (lab, reg) in enumerate(zip(ref.window_partition(label[None, :, :, None], ws)[..., 0],
                                   ref.window_partition(rolled_region[None, :, :, None], ws)[..., 0])):
    same_label = lab[:, None] == lab[None, :]  # (N, N)
    same_region = reg[:, None] == reg[None, :]
    assert np.array_equal(same_label, same_region), w

fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
ax.imshow(label, cmap="Set3")
for (r, c), v in np.ndenumerate(label):
    ax.text(c, r, v, ha="center", va="center")
grid_lines(ax, Hp, Wp, ws)
ax.set_title("region labels of the rolled 8x12 map (3 bands x 3 bands)")
lesson.show(fig, "labels")

# %%
nW = mask.shape[0]
fig, axes = plt.subplots(1, nW, figsize=(2.6 * nW, 3), layout="constrained")
for w, ax in enumerate(axes):
    ax.imshow(mask[w], cmap="gray", vmin=-100, vmax=0)
    ax.set_title(f"window {w}: {int((mask[w] < 0).sum())} masked")
    ax.set_xticks([0, 15])
    ax.set_yticks([0, 15])
fig.suptitle("mask[w, n, m] (white 0 = may attend, black -100 = masked); query n down, key m across")
lesson.show(fig, "masks")

# %% [markdown]
# Windows 0 and 1 lie inside region 0: no mask. Window 2 (top right) mixes two regions
# along W, windows 3 and 4 two along H, window 5 (bottom right) four.
#
# ## 3. Why −100 and not −∞?
#
# Masked logits go through a softmax. With any finite logits in the row, $e^{-100} \approx
# 3.7\cdot 10^{-44}$ is below the smallest normal float32, so a masked key gets a weight that is
# zero for all practical purposes — the same result as $-\infty$:

# %%
logits = np.array([[1.5, -0.3, 2.0, 0.7]], dtype=np.float32)  # one query, four keys
m100 = np.array([[0, 0, -100, -100]], dtype=np.float32)
minf = np.array([[0, 0, -np.inf, -np.inf]], dtype=np.float32)
print("softmax with -100:", ref.softmax(logits + m100))
print("softmax with -inf:", ref.softmax(logits + minf))
np.testing.assert_allclose(ref.softmax(logits + m100), ref.softmax(logits + minf), atol=1e-30)

# %% [markdown]
# The difference is in what can go wrong. A row whose keys are *all* masked is `nan` with
# $-\infty$ ($-\infty - (-\infty)$), but a harmless uniform row with $-100$; and during training,
# $-\infty$ turns into `nan` gradients as soon as it meets a zero ($0 \cdot \infty$) or half
# precision arithmetic. $-100$ keeps every number finite. In STF a query always sees at least
# itself, so the first case cannot happen; $-100$ is upstream's choice and part of the model:
# a reimplementation must use it to match bit for bit.

# %%
with np.errstate(invalid="ignore"):
    print("all masked, -inf:", ref.softmax(np.full((1, 4), -np.inf, np.float32)))
print("all masked, -100:", ref.softmax(np.full((1, 4), -100, np.float32)))

# %% [markdown]
# The price: $-100$ is only large compared with the logits. A masked key whose logit exceeds
# the unmasked ones by some 90 would leak through; the model relies on logits never being that
# far apart (exercise 2 measures them):

# %%
for gap in (0, 50, 90, 100, 110):
    w = ref.softmax(np.array([0.0, gap - 100.0], dtype=np.float32))
    print(f"masked logit {gap:3d} above the others: weight {w[1]:.3g}")

# %% [markdown]
# ## 4. Roll + mask = attention inside the shifted windows
#
# The claim of the trick, checked with real weights: the shipped model's first shifted block
# of the last stage (`layers.3.blocks.1`). First, the direct way, with no roll and no mask:
# for every shifted window (region of the original map, picture 1), attend among its tokens
# only; the relative position bias comes from their offsets, as in lesson 3. Reference in
# float64.

# %%
model = minstf.load_model()
p, cfg = model.params, model.config
prefix, nH, C = "layers.3.blocks.1", cfg.num_heads[3], cfg.stage_dims[3]


def shifted_window_attention_naive(hmap, params, prefix, nH, ws, s):
    """hmap (Hp, Wp, C): attention inside each shifted window, one region and head at a time."""
    Hp, Wp, C = hmap.shape
    hd = C // nH
    f64 = lambda name: params[f"{prefix}.attn.{name}"].astype(np.float64)  # noqa: E731
    Wqkv, bqkv, table = f64("qkv.weight"), f64("qkv.bias"), f64("relative_position_bias_table")
    out = np.zeros((Hp, Wp, C))
    for rows in shifted_groups(Hp, ws, s):
        for cols in shifted_groups(Wp, ws, s):
            coords = [(r, c) for r in rows for c in cols]  # the region's tokens, raster order
            xr = np.stack([hmap[r, c] for r, c in coords]).astype(np.float64)  # (n, C), n <= N
            rr, cc = np.array(coords).T
            index = (rr[:, None] - rr[None, :] + ws - 1) * (2 * ws - 1) + (cc[:, None] - cc[None, :] + ws - 1)
            for h in range(nH):
                q, k, v = (xr @ Wqkv[t * C + h * hd + np.arange(hd)].T + bqkv[t * C + h * hd + np.arange(hd)]
                           for t in range(3))  # each (n, hd)
                a = q @ k.T / math.sqrt(hd) + table[index, h]  # (n, n)
                a = np.exp(a - a.max(axis=1, keepdims=True))
                a /= a.sum(axis=1, keepdims=True)
                for (r, c), o in zip(coords, a @ v):  # (n, hd)
                    out[r, c, h * hd:(h + 1) * hd] = o
    return out @ f64("proj.weight").T + f64("proj.bias")  # (Hp, Wp, C)


rng = np.random.default_rng(0)
hmap = rng.standard_normal((1, Hp, Wp, C)).astype(np.float32)  # a map after norm1, (1, Hp, Wp, C)
direct = shifted_window_attention_naive(hmap[0], p, prefix, nH, ws, s)  # (Hp, Wp, C)

# %% [markdown]
# Now the trick, with the reference layer's pieces: roll, partition, window attention with the
# mask, reverse, roll back. These are the middle lines of `swin_block` in
# `minstf/reference/swin.py`, printed from the file:

# %%
lesson.source(ref.swin_block, start="pad_b, pad_r =", stop="x = x[:, :H, :W]")

# %% [markdown]
# The same steps on our 8×12 map (already a multiple of the window, so no padding):

# %%
rolled = np.roll(hmap, (-s, -s), axis=(1, 2))  # (1, Hp, Wp, C)
windows = ref.window_partition(rolled, ws)  # -> (nW, N, C)
attended = ref.window_attention(windows, p, f"{prefix}.attn", nH, mask)  # (nW, N, C)
trick = np.roll(ref.window_reverse(attended, ws, Hp, Wp), (s, s), axis=(1, 2))  # -> (1, Hp, Wp, C)
# float32 against the float64 loops on unit-scale inputs (errors ~1e-6); a masked key that leaked
# through would be off by O(0.1), so 1e-4 tells the two apart
np.testing.assert_allclose(trick[0], direct, rtol=1e-4, atol=1e-4)
print(f"roll + mask == direct shifted windows: max difference {np.abs(trick[0] - direct).max():.1e}")

no_mask = np.roll(ref.window_reverse(ref.window_attention(windows, p, f"{prefix}.attn", nH), ws, Hp, Wp),
                  (s, s), axis=(1, 2))
wrong = np.abs(no_mask[0] - direct).max(axis=-1)  # (Hp, Wp): largest error per token
print(f"without the mask: max difference {wrong.max():.2f}; tokens affected: {(wrong > 1e-4).sum()} "
      f"of {Hp * Wp}")
border = np.ones((Hp, Wp), dtype=bool)
border[s:Hp - s, s:Wp - s] = False  # the s-wide frame of the map: the tokens that were rolled across
print(f"largest error inside: {wrong[~border].max():.1e} (rounding); smallest on the border: "
      f"{wrong[border].min():.1e}")
assert wrong[~border].max() < 1e-4 and wrong[border].min() > 100 * wrong[~border].max()  # only the border

# %% [markdown]
# Without the mask, exactly the tokens within $s$ of the map's border come out wrong: they
# are the ones the roll carried across, into windows with tokens from the opposite side.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
im = ax.imshow(wrong, cmap="Reds")
grid_lines(ax, Hp, Wp, ws, offset=s, color="gray", lw=1)
fig.colorbar(im, ax=ax, fraction=0.03)
ax.set_title("error without the mask (original frame, shifted grid in grey)")
lesson.show(fig, "without_mask")

# %% [markdown]
# ## 5. The whole shifted block
#
# A Swin block is `x + attention(norm1(x))` followed by `x + mlp(norm2(x))`. One detail of
# upstream's code matters for maps that are not a multiple of the window size: the zero padding
# comes *after* `norm1`, so padded tokens are exact zeros, and they take part in the attention
# as keys and values (the region mask does not hide them). Written out with the direct shifted
# windows for a 6×10 map (padded to 8×12) and checked against the reference `swin_block`:

# %%
def shifted_block_by_hand(x, H, W, params, prefix, nH, ws, s):
    """x tokens (H*W, C) -> (H*W, C), one shifted Swin block without roll or mask."""
    P = lambda name: params[f"{prefix}.{name}"]  # noqa: E731
    L, C = x.shape
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    h = ref.layer_norm(x, P("norm1.weight"), P("norm1.bias")).reshape(H, W, C)  # (L, C) -> (H, W, C)
    h = np.pad(h, ((0, Hp - H), (0, Wp - W), (0, 0)))  # -> (Hp, Wp, C), zeros after the norm
    a = shifted_window_attention_naive(h, params, prefix, nH, ws, s)  # (Hp, Wp, C)
    x = x + a[:H, :W].reshape(L, C).astype(np.float32)  # crop, (H, W, C) -> (L, C)
    h = ref.gelu(ref.linear(ref.layer_norm(x, P("norm2.weight"), P("norm2.bias")), P("mlp.fc1.weight"),
                            P("mlp.fc1.bias")))  # (L, C) -> (L, 4C)
    return x + ref.linear(h, P("mlp.fc2.weight"), P("mlp.fc2.bias"))  # (L, 4C) -> (L, C)


H, W = 6, 10
x = rng.standard_normal((1, H * W, C)).astype(np.float32)  # tokens (B, L, C)
ours = shifted_block_by_hand(x[0], H, W, p, prefix, nH, ws, s)  # (L, C)
mask6 = ref.shift_attention_mask(H, W, ws, s)  # (nW, N, N) of the padded 8x12 map
lib = ref.swin_block(x, H, W, p, prefix, nH, ws, shift=s, mask=mask6)  # (1, L, C)
# float32 block (two residuals, LayerNorms, an MLP) against a chain with float64 attention:
# errors ~1e-6 of the unit-scale tokens, as above
np.testing.assert_allclose(lib[0], ours, rtol=1e-4, atol=1e-4)
print(f"shifted block by hand == reference swin_block: max difference {lesson.max_diff(lib[0], ours):.1e}")

# %% [markdown]
# ## 6. The fast block: pad, roll and partition in one gather
#
# The fast `swin_block` (`minstf/kernels/swin.py`) never builds the padded, rolled map.
# `window_token_index(H, W, ws, shift)` says, for every place of every window of the rolled
# padded map, which token lands there, or −1 for padding; gathering the tokens by it is the
# pad + roll + partition of the reference in one copy, and writing back through it is
# reverse + roll back + crop. The index is a pure permutation, so it can be checked exactly
# against the reference's steps run on the token *numbers*:

# %%
index = window_token_index(H, W, ws, s)  # (nW, N) int64, -1 = padding
numbers = np.arange(H * W, dtype=np.float64).reshape(1, H, W, 1)  # token number as the only channel
steps = np.pad(numbers, ((0, 0), (0, Hp - H), (0, Wp - W), (0, 0)), constant_values=-1)  # pad ...
steps = ref.window_partition(np.roll(steps, (-s, -s), axis=(1, 2)), ws)[..., 0]  # ... roll, partition
np.testing.assert_array_equal(index, steps)  # integers: exact
print("window_token_index(6, 10, 4, 2), windows 0 and 5:\n", index[[0, 5]])

# %% [markdown]
# Each group of windows is then gathered (`rows[index]`), normalised, attended and added back
# in place, and the MLP runs by blocks of tokens. The real lines of the group step:

# %%
from minstf.kernels import swin as fast_swin  # noqa: E402

lesson.source(fast_swin.swin_block, start="def group(w0, n)", stop="new[idx] = h")

# %%
# tests/test_kernels.py::test_swin_block proves fast == reference on five map sizes (padded,
# smaller than a window, window size 3), shifted and not, within F32 = 2e-5 x max(1, max |ref|)
tol = 2e-5 * max(1.0, float(np.abs(lib).max()))
fast_out = fast.swin_block(x, H, W, p, prefix, nH, ws, shift=s, mask=mask6)
np.testing.assert_allclose(fast_out, lib, rtol=0, atol=tol)
print(f"fast swin_block == reference: max difference {lesson.max_diff(fast_out, lib):.1e} (bound {tol:.1e})")

# %% [markdown]
# ## Summary
#
# * Odd blocks of every stage shift the window grid by $s = w_s/2$. Instead of handling the
#   irregular windows, roll the map by $(-s, -s)$, use the regular grid, roll back.
# * The rolled map gets nine region labels (three bands per axis); the mask is $-100$ between
#   tokens of different labels in a window, 0 otherwise: `shift_attention_mask`
#   (`minstf/reference/swin.py`, shared by both layers) returns it as `(nW, N, N)`, shared by
#   all heads and images.
# * $-100$ gives the same attention as $-\infty$ but never produces `nan`; it is part of the
#   model. Roll + mask equals attention inside the shifted windows, checked here to 1e-4.
# * The reference `swin_block` is pad → roll → partition → attend → reverse → roll back → crop
#   → MLP; the fast one gathers groups of windows through `window_token_index` (exactly the
#   same tokens) and is equal within 2e-5 (`tests/test_kernels.py::test_swin_block`).
#
# ## Exercises
#
# 1. For a 64×96 map (stage 0 of a 128×192 image), how many of the 384 windows need a mask at
#    all? Derive the number, then count with `ref.shift_attention_mask(64, 96, 4, 2)`.
#    *Hint:* only the last window row and the last window column mix regions: $16 + 24 - 1$;
#    count with `(mask.min(axis=(1, 2)) < 0).sum()`.
# 2. Run the shipped model's $g_a$ on the sample photo with `taps` and recompute the logits of
#    each shifted block (as in lesson 3, section 6). What is the largest gap between a masked
#    and an unmasked logit of the same query? How far is it from the ~90 where −100 leaks?
#    *Hint:* the input of block `b` is `taps[f"enc{i}_blk{b-1}"]`; apply norm1, pad, roll and
#    `ref.window_partition` as in `ref.swin_block`, then the logits of lesson 3 before the softmax.
# 3. For a 4×4 map (one window), the first band `[0, Hp-ws)` is empty. What does the mask look
#    like, and which tokens still attend to each other?
#    *Hint:* `ref.shift_attention_mask(4, 4, 4, 2)[0]`; label the 16 tokens with the bands
#    `[0, 2)` and `[2, 4)` per axis: four 2×2 groups.
