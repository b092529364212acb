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
# # Lesson 3 — Window attention
#
# A transformer layer lets every token look at every other token through *self-attention*.
# For the tokens of one attention head, stacked as rows of $Q$ (queries), $K$ (keys) and $V$
# (values), each of head dimension $d$,
#
# $$ \mathrm{Attention}(Q, K, V) = \mathrm{SoftMax}\!\left(\frac{Q K^\top}{\sqrt d} + B\right) V , $$
#
# where $B$ is a learned *relative position bias*. Over a whole image this is hopeless: the
# first stage of STF sees a 768×512 photo as $384 \times 256 = 98{,}304$ tokens, and the
# $L \times L$ attention matrix alone would be 39 GB per head. The Swin Transformer (Liu et
# al., 2021), and STF with it, cuts the token map into non-overlapping $w_s \times w_s$
# *windows* ($w_s = 4$, so $N = 16$ tokens) and attends only inside each window: $L \cdot N$
# entries instead of $L^2$. The price, that windows never talk to each other, is paid back by
# shifting the windows in every other block (lesson 4).
#
# The lesson builds each piece naively, checks it against the reference layer
# (`minstf/reference/swin.py`, STF written to be read), then shows the fast twin
# (`minstf/kernels/swin.py`) and how it is proven equal (`tests/test_kernels.py`).
# Spec: docs/architecture.md §2.2–2.4.
#
# Dimension letters (docs/architecture.md §0): `B` batch, `H, W` map size, `C` channels, `ws` window size,
# `N = ws*ws` tokens per window, `nW` windows per image, `B_ = B*nW`, `nH` heads,
# `hd = C/nH` head dimension.

# %%
import inspect
import math

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures, source listings
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf.image import to_float
from minstf.kernels import swin as fast_swin
from minstf.switch import get_kernels
from minstf.transforms import g_a

ref = get_kernels("reference")  # minstf/reference/swin.py: windows, bias, mask, attention, the block
fast = get_kernels("fast")  # minstf/kernels/swin.py: attention and the block by groups of windows
FAST = lesson.FAST  # CI: a crop of the photo, fewer windows


# %% [markdown]
# ## 1. Cutting a map into windows
#
# `window_partition` takes a map `(B, Hp, Wp, C)` whose sides are multiples of `ws` and
# returns `(B*nW, N, C)`: windows in the order batch, window row, window column, and inside a
# window token $n = i \cdot w_s + j$ for pixel $(i, j)$ of the window. The naive version reads
# exactly that sentence:

# %%
def window_partition_naive(x, ws):
    B, Hp, Wp, C = x.shape
    windows = []
    for b in range(B):
        for wr in range(Hp // ws):  # window row
            for wc in range(Wp // ws):  # window column
                tokens = [x[b, wr * ws + i, wc * ws + j] for i in range(ws) for j in range(ws)]  # N x (C,)
                windows.append(np.stack(tokens))  # (N, C)
    return np.stack(windows)  # (B*nW, N, C)


rng = np.random.default_rng(0)
ws = 4
x = rng.standard_normal((2, 8, 12, 5)).astype(np.float32)  # (B, Hp, Wp, C)
windows = ref.window_partition(x, ws)  # (2, 8, 12, 5) -> (2*6, 16, 5)
print("window_partition:", x.shape, "->", windows.shape)
# a pure permutation of the values: exact comparisons
np.testing.assert_array_equal(windows, window_partition_naive(x, ws))
np.testing.assert_array_equal(ref.window_reverse(windows, ws, 8, 12), x)  # the exact inverse
assert fast.window_partition is ref.window_partition  # the fast layer uses the reference function itself
print("naive == window_partition (minstf/reference/swin.py); window_reverse undoes it")

# %% [markdown]
# The reference does it without a loop: split each spatial axis into (window, position inside
# the window), move the two window axes in front, flatten. Its real lines:

# %%
lesson.source(ref.window_partition, start="B, Hp, Wp, C = x.shape")

# %% [markdown]
# The fast layer never calls it on the hot path: its Swin block gathers each window's tokens
# straight from the token array through an index (lesson 4, section 6). Windows, the position
# index and bias and the shift mask are not hot, so `minstf.kernels` imports them from the
# reference (`minstf/kernels/__init__.py`).
#
# An 8×12 map has $2 \times 3 = 6$ windows; colour = window, number = token index $n$ inside it:

# %%
grid = np.arange(8 * 12).reshape(1, 8, 12, 1)  # pixel number as the only channel
win = ref.window_partition(grid, ws)[..., 0]  # (6, 16): pixel number of token n of window w
window_of = np.empty(8 * 12, int)
token_of = np.empty(8 * 12, int)
for w_, pixels in enumerate(win):
    window_of[pixels] = w_
    token_of[pixels] = np.arange(ws * ws)
fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")
ax.imshow(window_of.reshape(8, 12), cmap="Pastel1")
for pix in range(8 * 12):
    ax.text(pix % 12, pix // 12, token_of[pix], ha="center", va="center", fontsize=9)
for w_ in range(6):
    r0, c0 = divmod(w_, 3)
    ax.text(c0 * ws + 1.5, r0 * ws + 1.5, f"window {w_}", ha="center", va="center", fontsize=13, alpha=0.35)
ax.set_title("window_partition of an 8x12 map: window index (colour), token n (number)")
lesson.show(fig, "window_partition")

# %% [markdown]
# ## 2. The relative position bias
#
# The bias $B$ does not depend on *where* a window is, only on the offset between query $n$ at
# $(r_n, c_n)$ and key $m$ at $(r_m, c_m)$ inside it. Offsets run from $-(w_s-1)$ to $w_s-1$ in
# each direction: $(2w_s-1)^2 = 49$ possibilities, and each head learns one number for each, the
# `relative_position_bias_table` of shape `(49, nH)`. The index of the table row is
#
# $$ \mathrm{index}[n, m] = (r_n - r_m + w_s - 1)(2 w_s - 1) + (c_n - c_m + w_s - 1) . $$

# %%
def relative_position_index_naive(ws):
    N = ws * ws
    index = np.empty((N, N), dtype=np.int64)
    for n in range(N):
        for m in range(N):
            (rn, cn), (rm, cm) = divmod(n, ws), divmod(m, ws)
            index[n, m] = (rn - rm + ws - 1) * (2 * ws - 1) + (cn - cm + ws - 1)
    return index


index = ref.relative_position_index(ws)  # (N, N) int64, a buffer in upstream checkpoints
np.testing.assert_array_equal(index, relative_position_index_naive(ws))  # integers: exact
print("relative_position_index:", index.shape, "values", index.min(), "..", index.max(),
      "== naive (minstf/reference/swin.py)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained", width_ratios=(16, 7))
axes[0].imshow(index, cmap="viridis")
for (n, m), v in np.ndenumerate(index):
    axes[0].text(m, n, v, ha="center", va="center", fontsize=6, color="w" if v < 30 else "k")
axes[0].set_xlabel("key m")
axes[0].set_ylabel("query n")
axes[0].set_title("relative_position_index (16 x 16)")
offsets = np.arange(49).reshape(7, 7)  # table row as a function of the offset (dr, dc)
axes[1].imshow(offsets, cmap="viridis", extent=(-3.5, 3.5, 3.5, -3.5))
for (a, b), v in np.ndenumerate(offsets):
    axes[1].text(b - 3, a - 3, v, ha="center", va="center", fontsize=8, color="w" if v < 30 else "k")
axes[1].set_xlabel("c_n - c_m")
axes[1].set_ylabel("r_n - r_m")
axes[1].set_title("table row = offset (7 x 7)")
lesson.show(fig, "relative_position_index")

# %% [markdown]
# ## 3. Real tokens: the input of the last analysis stage
#
# To attend over something meaningful, run the shipped model's $g_a$ on the sample photo and
# take the tokens that enter its last stage (`taps["enc2_out"]`, after three PatchMergings: 1/16
# of the image size). Its first block (`layers.3.blocks.0`) is not shifted. As in the block,
# LayerNorm first, then the map is cut into windows.

# %%
model = minstf.load_model()
p, cfg = model.params, model.config
image = lesson.sample_image((slice(64, 192), slice(96, 288)) if FAST else None)  # (256, 384, 3); fast: the heads
taps = {}
g_a(to_float(image).transpose(0, 2, 3, 1), p, cfg, taps)  # (1, 3, H, W) -> (1, H, W, 3), fills taps
tokens = taps["enc2_out"]  # (1, H/16 * W/16, C): input of stage 3
Hs, Ws = image.shape[0] // 16, image.shape[1] // 16
prefix, nH = "layers.3.blocks.0", cfg.num_heads[3]
C = tokens.shape[-1]
h = ref.layer_norm(tokens, p[f"{prefix}.norm1.weight"], p[f"{prefix}.norm1.bias"])  # (1, L, C)
h = h.reshape(1, Hs, Ws, C)  # (1, L, C) -> (1, Hs, Ws, C)
windows = ref.window_partition(h, ws)  # -> (nW, N, C)
print(f"stage 3 map {Hs}x{Ws}, C = {C}, {nH} heads of hd = {C // nH}: windows {windows.shape}")

# %% [markdown]
# ## 4. Naive window attention: one window, one head at a time
#
# The projection `qkv` is one `Linear(C, 3C)`; its output channel $t C + h \cdot hd + d$ is
# component $t$ (0 = q, 1 = k, 2 = v) of head $h$, dimension $d$. So head $h$'s query weights are
# the rows `h*hd : (h+1)*hd` of the weight, its keys the same rows plus $C$, its values plus $2C$.
# The heads' outputs are concatenated on channels and mixed by `proj`, a `Linear(C, C)`.
# Computed in float64, to serve as the reference.

# %%
def window_attention_naive(windows, params, prefix, nH):
    B_, N, C = windows.shape
    hd = C // nH
    ws = math.isqrt(N)
    f64 = lambda name: params[f"{prefix}.{name}"].astype(np.float64)  # noqa: E731
    Wqkv, bqkv = f64("attn.qkv.weight"), f64("attn.qkv.bias")  # (3C, C), (3C,)
    table = f64("attn.relative_position_bias_table")  # ((2ws-1)^2, nH)
    index = relative_position_index_naive(ws)  # (N, N)
    heads_out = np.zeros((B_, N, C))
    for w in range(B_):
        xw = windows[w].astype(np.float64)  # (N, C)
        for h in range(nH):
            rows = [t * C + h * hd + np.arange(hd) for t in range(3)]  # q, k, v rows of head h
            q, k, v = (xw @ Wqkv[r].T + bqkv[r] for r in rows)  # each (N, hd)
            logits = np.empty((N, N))
            for n in range(N):
                for m in range(N):
                    logits[n, m] = q[n] @ k[m] / math.sqrt(hd) + table[index[n, m], h]
            a = np.exp(logits - logits.max(axis=1, keepdims=True))  # softmax over the keys m
            a /= a.sum(axis=1, keepdims=True)  # (N, N), rows sum to 1
            heads_out[w, :, h * hd:(h + 1) * hd] = a @ v  # (N, hd) into the head's channels
    return heads_out @ f64("attn.proj.weight").T + f64("attn.proj.bias")  # (B_, N, C)


ref_naive = window_attention_naive(windows, p, prefix, nH)  # (nW, N, C), float64
print("naive window attention:", windows.shape, "->", ref_naive.shape)

# %% [markdown]
# ## 5. All windows and heads at once
#
# Nothing in the loops above depends on another iteration, so windows and heads become batch
# axes of one matrix product:

# %%
def window_attention_batched(x, params, prefix, nH):
    B_, N, C = x.shape
    hd = C // nH
    qkv = x @ params[f"{prefix}.attn.qkv.weight"].T + params[f"{prefix}.attn.qkv.bias"]  # (B_, N, 3C)
    qkv = qkv.reshape(B_, N, 3, nH, hd)  # channel t*C + h*hd + d -> (t, h, d)
    qkv = qkv.transpose(2, 0, 3, 1, 4)  # -> (3, B_, nH, N, hd)
    q, k, v = qkv[0], qkv[1], qkv[2]  # each (B_, nH, N, hd)
    attn = (q * np.float32(hd ** -0.5)) @ k.swapaxes(-1, -2)  # (B_, nH, N, hd) @ (B_, nH, hd, N) -> (B_, nH, N, N)
    table = params[f"{prefix}.attn.relative_position_bias_table"]  # ((2ws-1)^2, nH)
    bias = table[relative_position_index_naive(math.isqrt(N)).reshape(-1)]  # (N*N, nH)
    bias = bias.reshape(N, N, nH).transpose(2, 0, 1)  # -> (nH, N, N), broadcast over B_
    attn = attn + bias
    attn = np.exp(attn - attn.max(axis=-1, keepdims=True))
    attn /= attn.sum(axis=-1, keepdims=True)  # softmax over the keys
    out = attn @ v  # (B_, nH, N, N) @ (B_, nH, N, hd) -> (B_, nH, N, hd)
    out = out.transpose(0, 2, 1, 3).reshape(B_, N, C)  # -> (B_, N, nH, hd) -> (B_, N, C)
    return out @ params[f"{prefix}.attn.proj.weight"].T + params[f"{prefix}.attn.proj.bias"]


# float32 (two matrix products of length C and N, a softmax) against the float64 loops, on
# unit-scale tokens: errors ~1e-6; 1e-4 still catches a wrong head split or bias index (O(0.1))
batched = window_attention_batched(windows, p, prefix, nH)
np.testing.assert_allclose(batched, ref_naive, rtol=1e-4, atol=1e-4)
print(f"batched == naive (float64): max difference {lesson.max_diff(batched, ref_naive):.1e}")

# %% [markdown]
# ### The reference: `window_attention` in `minstf/reference/swin.py`
#
# The library's reference function is the same computation; it takes the key prefix of the
# attention module (`layers.3.blocks.0.attn`), gets the bias from `relative_position_bias`
# (docs/architecture.md §2.3) and adds the shift mask of lesson 4 when it is given. Its real lines:

# %%
lesson.source(ref.window_attention, start="p = lambda")

# %%
lib = ref.window_attention(windows, p, f"{prefix}.attn", nH)
np.testing.assert_allclose(lib, ref_naive, rtol=1e-4, atol=1e-4)  # float32 vs float64: as above
# our batched version and the reference are both float32 and in the same order of operations up
# to the softmax's details: they agree to float32 rounding, ~1e-7 relative
np.testing.assert_allclose(lib, batched, rtol=1e-5, atol=1e-5)
print(f"naive (float64) == batched == reference window_attention; max |reference - naive| = "
      f"{lesson.max_diff(lib, ref_naive):.2e}")

# %% [markdown]
# ### The fast twin: `window_attention` in `minstf/kernels/swin.py`
#
# Same arguments, same result, another schedule: windows run in groups whose `qkv` holds ~8 MB
# (`minstf.kernels.threads.BLOCK["window group"]`), the groups on all cores; the qkv bias is
# added inside the attention kernel; the scores are scaled after $q k^\top$ instead of scaling
# $q$; and they are stored *keys first*, so that the softmax over the keys runs along long rows.
# The kernel's docstring:

# %%
print(inspect.cleandoc(fast_swin._attend.__doc__))

# %%
# tests/test_kernels.py::test_window_attention proves fast == reference (with and without the
# mask, with the real and a shrunk block table) within F32 = 2e-5 x max(1, max |reference|);
# the same bound here, on real tokens and weights
tol = 2e-5 * max(1.0, float(np.abs(lib).max()))
np.testing.assert_allclose(fast.window_attention(windows, p, f"{prefix}.attn", nH), lib, rtol=0, atol=tol)
print(f"fast == reference window_attention: max difference "
      f"{lesson.max_diff(fast.window_attention(windows, p, f'{prefix}.attn', nH), lib):.1e} (bound {tol:.1e})")

# %% [markdown]
# (The reference multiplies $q$ by $hd^{-1/2}$ before the product, as upstream does; the
# naive loops divide the logits and the fast layer scales the scores: the same number up to
# float32 rounding, docs/architecture.md §8.8.)
#
# ## 6. What the heads look at
#
# The learned bias of each head as a function of the offset $(r_n - r_m, c_n - c_m)$, and the
# full attention matrices of the window in the middle of the map: row $n$ is how query token
# $n$ distributes its attention over the 16 keys of its window.

# %%
B_, N = windows.shape[:2]
hd = C // nH
qkv = (windows @ p[f"{prefix}.attn.qkv.weight"].T + p[f"{prefix}.attn.qkv.bias"]).reshape(B_, N, 3, nH, hd)
q, k = qkv[:, :, 0].transpose(0, 2, 1, 3), qkv[:, :, 1].transpose(0, 2, 1, 3)  # each (B_, nH, N, hd)
table = p[f"{prefix}.attn.relative_position_bias_table"]  # (49, nH)
logits = q @ k.swapaxes(-1, -2) / math.sqrt(hd) + table[index].transpose(2, 0, 1)  # (B_, nH, N, N)
attn = np.exp(logits - logits.max(axis=-1, keepdims=True))
attn /= attn.sum(axis=-1, keepdims=True)
middle = (Hs // ws // 2) * (Ws // ws) + (Ws // ws // 2)  # a window in the middle of the map

shown = min(nH, 4)  # at most four heads in the picture
vmax = np.abs(table).max()
fig, axes = plt.subplots(2, shown, figsize=(3 * shown, 6), layout="constrained", squeeze=False)
for h in range(shown):
    im = axes[0, h].imshow(table[:, h].reshape(7, 7), cmap="coolwarm", vmin=-vmax, vmax=vmax,
                           extent=(-3.5, 3.5, 3.5, -3.5))
    axes[0, h].set_title(f"head {h}: bias by offset")
    fig.colorbar(im, ax=axes[0, h], fraction=0.046)
    im = axes[1, h].imshow(attn[middle, h], cmap="magma", vmin=0, vmax=attn[middle, :shown].max())
    axes[1, h].set_title(f"head {h}: attention, window {middle}")
    axes[1, h].set_xlabel("key m")
    axes[1, h].set_ylabel("query n")
fig.colorbar(im, ax=axes[1, shown - 1], fraction=0.046, label="weight (rows sum to 1)")
lesson.show(fig, "heads")

# %% [markdown]
# ## 7. What windows save
#
# Entries of the attention matrices per head, global versus 4×4 windows, for the stage sizes of
# upstream STF on a 768×512 image (each stage halves the map):

# %%
print(f"{'stage':6s} {'tokens L':>9s} {'global L^2':>15s} {'windows L*N':>12s}")
for i in range(4):
    L = (384 >> i) * (256 >> i)
    print(f"{i:<6d} {L:9,d} {L * L:15,d} {L * ws * ws:12,d}")

# %% [markdown]
# ## Summary
#
# * `window_partition` reshapes `(B, Hp, Wp, C)` to `(B*nW, N, C)` (windows in raster order,
#   tokens $n = i w_s + j$); `window_reverse` is its inverse. Both live in
#   `minstf/reference/swin.py`, and the fast layer uses them as they are.
# * Attention inside a window: $\mathrm{SoftMax}(QK^\top/\sqrt{hd} + B)V$ per head, with
#   $B[n, m] = \text{table}[\mathrm{index}[n, m], h]$ depending only on the offset between tokens.
# * Loops over windows and heads become batch axes: one `qkv` Linear, a reshape
#   `(B_, N, 3, nH, hd)` and a transpose, two batched matrix products, one `proj` Linear: the
#   reference `window_attention`. The fast one (`minstf/kernels/swin.py`) runs it by groups of
#   windows with keys-first scores, equal within 2e-5 of the largest magnitude
#   (`tests/test_kernels.py::test_window_attention`).
#
# ## Exercises
#
# 1. What would `window_attention` compute if the `qkv` output were reshaped as
#    `(B_, N, nH, 3, hd)` instead? Try it and compare with the naive version.
#    *Hint:* copy `window_attention_batched`, change the reshape and the transpose to
#    `(3, 0, 2, 1, 4)`; the heads then mix q, k and v channels, and the difference is O(1).
# 2. Permute the 16 tokens of every window at random before attention (and undo the
#    permutation after). Which part of the output changes, and which part of the model is
#    responsible?
#    *Hint:* `perm = rng.permutation(16)`; `ref.window_attention(windows[:, perm], ...)[:, np.argsort(perm)]`;
#    without the bias table (set it to zeros) attention is permutation-equivariant.
# 3. For `window_size = 8`, how large is the bias table and what is the largest index? Check
#    with `ref.relative_position_index(8)`.
#    *Hint:* $(2 \cdot 8 - 1)^2 = 225$ rows, so indexes 0..224.
