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
# # Lesson 6 — Quantization and the factorized prior
#
# A learned codec turns an image into **integers** and the integers into **bits**. Two
# things decide how many bits: *which* integers come out (quantization), and *how probable*
# each integer is under a model that encoder and decoder share (the entropy model), because
# an ideal entropy coder spends $-\log_2 p$ bits on a symbol of probability $p$.
#
# This lesson does both for the hyper-latent **z** of STF, whose model is the simplest one
# in the codec: the *factorized prior* of Ballé et al. 2018 ("Variational image compression
# with a scale hyperprior", appendix 6.1) — one learned univariate density per channel $c$,
# the same for every position $(i, j)$:
#
# $$ p(\hat z) = \prod_{c}\prod_{i,j} p_c(\hat z_{c,i,j}), \qquad
#    R_z = \sum_{c,i,j} -\log_2 p_c(\hat z_{c,i,j}) \ \text{bits}. $$
#
# We follow one path: quantization → the cumulative density network → likelihoods with the
# sign trick → the 16-bit integer CDF tables the coder uses. Each step is written naively,
# then checked against the `minstf` function that does it (`minstf/entropy_models.py`).
# Spec: docs/entropy.md §2.1 (quantize modes), §3 (EntropyBottleneck), §5 (pmf → CDF).
#
# Dimension letters (README): `B` batch, `h, w` the size of z, `C` its channels (`N_z`),
# `N` a number of sample points. Inside minstf maps are channels-last `(B, h, w, C)`.

# %%
import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf import entropy_models as em
from minstf.image import to_float

FAST = lesson.FAST


model = minstf.load_model(quality=2)  # the shipped medium-rate model (MINSTF_WEIGHTS_DIR overrides)
cfg = model.config
eb = model.eb  # the EntropyBottleneck's parameters, names without the "entropy_bottleneck." prefix
C = cfg.N_z
print(model.name, "| z channels C =", C)

# %% [markdown]
# The photo we compress throughout: the packaged sample (384×256). In fast mode we use its
# top-left 128×192 corner (the network needs sizes that are multiples of 64 to *code*, of 16
# to run `forward`). `forward(x, taps)` hands us the hyper-latent `z` it computed.

# %%
image = lesson.sample_image((slice(0, 128), slice(0, 192)) if FAST else None)  # uint8 (H, W, 3)
x = to_float(image)  # (H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]
taps = {}
out = model.forward(x, taps=taps)
z = taps["z"]  # (B, h, w, C) float32, channels-last
print("image", image.shape, "-> z", z.shape)

# %% [markdown]
# ## 1. Quantization
#
# ### Rounding: half to even
# Everything that is rounded on the way to the bitstream uses `round()` of the tensors,
# which is *round half to even* (`np.rint`, like torch). Only one place rounds half *away*
# from zero: the C++ CDF quantizer of §3 below (`std::round`). Both matter for bit-exactness.

# %%
ties = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], dtype=np.float32)
print("x                    ", ties)
print("np.rint (half even)  ", np.rint(ties))
print("half away from zero  ", np.sign(ties) * np.floor(np.abs(ties) + 0.5))

# %% [markdown]
# ### Three ways to "quantize" (docs/entropy.md §2.1)
#
# | mode | value | used |
# |---|---|---|
# | `noise` | $z + u,\ u \sim U(-\tfrac12, \tfrac12)$ | training: likelihoods (the rate term) |
# | `dequantize` | $\operatorname{round}(z - m) + m$ | `z_hat`, fed to the hyper-synthesis |
# | `symbols` | $\operatorname{round}(z - m)$ as int32 | what is entropy coded |
#
# For z the offset $m$ is the channel's learned **median** (the middle of three learned
# quantiles). It is generally not an integer, so `z_hat` is not an integer either: the grid
# of reconstruction values is shifted to sit on the bulk of each channel's distribution.

# %%
medians = em.eb_medians(eb)  # (C,) = quantiles[:, 0, 1]
symbols_naive = np.rint(z - medians).astype(np.int32)  # (B, h, w, C): medians broadcast over channels
np.testing.assert_array_equal(em.quantize_symbols(z, medians), symbols_naive)  # integers: exact
z_hat = em.dequantize(symbols_naive, medians)  # symbols + median, float32
# forward() rounds the same z around the same medians with the same float32 ops: one code path,
# exact (integers plus medians; any difference would be a different decision, not noise)
np.testing.assert_array_equal(z_hat, taps["z_hat"])  # the z_hat that forward() fed to h_s
print("medians of the first channels:", medians[:4])
print("symbols range", symbols_naive.min(), "..", symbols_naive.max(),
      "| |z - z_hat| <= 0.5:", bool(np.all(np.abs(z - z_hat) <= 0.5)))

# %% [markdown]
# ### Why noise in training, and the straight-through estimator
# `round` has derivative 0 almost everywhere, so gradient descent cannot learn through it.
# Training replaces it in two ways:
#
# * for the **rate**, the likelihood is evaluated at $z + u$ instead of $\operatorname{round}(z)$:
#   the same function of §2 below, but at continuous points, hence differentiable;
# * for the **decoder's input**, STF uses the *straight-through* round (STE): the forward value
#   is $\operatorname{round}(z)$, the backward pass pretends it was the identity
#   (`torch.round(x) - x.detach() + x` in `minstf/mirror/stf_torch.py`).
#
# A one-parameter toy shows the difference: fit $\operatorname{round}(x)$ to 2.7.

# %%
def descend(grad_of_round, steps=40, lr=0.1):
    x = 0.0
    for _ in range(steps):
        residual = np.rint(x) - 2.7  # loss = residual**2
        x -= lr * 2 * residual * grad_of_round
    return x


print("true gradient of round (0): x stays at", descend(0.0))
print("straight-through (1):       x ->", round(descend(1.0), 3), " round(x) =", np.rint(descend(1.0)))

# %% [markdown]
# ## 2. The cumulative density network
#
# Each channel's *cumulative* distribution is a small monotone network of the input value
# $v$ (docs/entropy.md §3.2), with filters $F = (1, 3, 3, 3, 3, 1)$:
#
# $$ \mathrm{CDF}_c(v) = \sigma\big(f_c(v)\big), \qquad f_c = f^{(4)} \circ \dots \circ f^{(0)}, $$
# $$ f^{(i)}(u) = g^{(i)}\big(\operatorname{softplus}(H^{(i)}_c)\,u + b^{(i)}_c\big), \qquad
#    g^{(i)}(u) = u + \tanh(a^{(i)}_c) \odot \tanh(u) \quad (i < 4;\ \text{no } g^{(4)}). $$
#
# Why it is monotone: softplus makes every matrix entry positive, and
# $\frac{d}{du}\,g(u) = 1 + \tanh(a)\,(1 - \tanh^2 u) > 0$ because $|\tanh a| < 1$.
# The network outputs the **logit** of the CDF; $\sigma$ turns it into a probability.
#
# The weights, per channel (PyTorch layouts, kept as they are):

# %%
for i in range(5):
    print(f"layer {i}: _matrix{i} {eb[f'_matrix{i}'].shape} (C, F_out, F_in)   _bias{i} {eb[f'_bias{i}'].shape}",
          f"  _factor{i} {eb[f'_factor{i}'].shape}" if i < 4 else "  (no factor)")
print(f"quantiles {eb['quantiles'].shape}: (C, 1, 3) = lower, median, upper of each channel")

# %% [markdown]
# ### Naive: one channel at a time
# Plain loops over channels and layers; each layer is a `(F_out, F_in) @ (F_in, N)` product
# over the N sample points.

# %%
def softplus(a):
    return np.log1p(np.exp(a))


def logits_cumulative_naive(v, eb):
    """v: (C, N) sample points per channel -> (C, N) logits of each channel's CDF."""
    C, N = v.shape
    out = np.empty_like(v)
    for c in range(C):
        h = v[c][None, :]  # (N,) -> (1, N): F_0 = 1 feature per point
        for i in range(5):
            H = softplus(eb[f"_matrix{i}"][c])  # (F_out, F_in), all entries > 0
            h = H @ h + eb[f"_bias{i}"][c]  # (F_in, N) -> (F_out, N); bias (F_out, 1) broadcasts
            if i < 4:
                h = h + np.tanh(eb[f"_factor{i}"][c]) * np.tanh(h)
        out[c] = h[0]  # (1, N) -> (N,)
    return out


# sample points: 201 values around each channel's median
N = 201
v = medians[:, None] + np.linspace(-12, 12, N, dtype=np.float32)  # (C, N)
logits_naive = logits_cumulative_naive(v, eb)  # (C, N)

# %% [markdown]
# ### Vectorized: all channels in one batched matmul
# `eb_logits_cumulative` takes `(C, 1, N)` and does each layer as one `np.matmul` of
# `(C, F_out, F_in)` with `(C, F_in, N)` — the channel is the batch dimension.

# %%
logits = em.eb_logits_cumulative(v[:, None, :], eb)  # (C, 1, N) -> (C, 1, N)
# float32 matrix products of widths 1-3-3-3-3-1 in another order: rounding ~1e-7 of unit-scale logits
np.testing.assert_allclose(logits[:, 0, :], logits_naive, rtol=1e-5, atol=1e-5)
print("naive loop == eb_logits_cumulative; max |diff|", np.abs(logits[:, 0, :] - logits_naive).max())
assert np.all(np.diff(logits_naive, axis=1) >= 0), "the CDF logits must be non-decreasing in v"

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
for c in range(min(4, C)):
    ax[0].plot(v[c] - medians[c], logits_naive[c], label=f"channel {c}")
    ax[1].plot(v[c] - medians[c], 1 / (1 + np.exp(-logits_naive[c])))
ax[0].set(title="logits $f_c(v)$", xlabel="v − median")
ax[1].set(title="CDF $\\sigma(f_c(v))$", xlabel="v − median")
ax[0].legend(fontsize=8)
fig.tight_layout()
lesson.show(fig, "cdf")

# %% [markdown]
# ## 3. Likelihoods, and the sign trick
#
# The probability of the unit bin around $v$ is a difference of two CDF values:
#
# $$ p_c(v) = \sigma\big(f_c(v + \tfrac12)\big) - \sigma\big(f_c(v - \tfrac12)\big). $$
#
# In the upper tail both sigmoids are close to 1 and float32 cancels them to 0. Since
# $\sigma(a) - \sigma(b) = \sigma(-b) - \sigma(-a)$, STF's fork evaluates the difference on the
# side where both are small: with $s = -\operatorname{sign}(\ell + u)$ (lower and upper logit),
#
# $$ p_c(v) = \big|\,\sigma(s\,u) - \sigma(s\,\ell)\,\big|. $$
#
# First with two made-up logits far in the upper tail:

# %%
def sigmoid(x):
    """float32 sigmoid written as minstf writes it: 1 / (1 + exp(-x)), exp's argument capped at 88."""
    return np.float32(1) / (np.float32(1) + np.exp(np.minimum(-x, np.float32(88))))


lo, up = np.float32(17.0), np.float32(18.0)
plain = sigmoid(up) - sigmoid(lo)
trick = sigmoid(-lo) - sigmoid(-up)  # s = -sign(lo + up) = -1
exact = 1 / (1 + np.exp(-18.0)) - 1 / (1 + np.exp(-17.0))  # float64 reference
print(f"plain {plain:.3e}   sign trick {trick:.3e}   float64 {exact:.3e}")

# %% [markdown]
# Now the naive likelihood of every z element, with the naive network of §2. z is
# `(B, h, w, C)`; the network wants one row of points per channel, `(C, B*h*w)`.
# Like forward(), the likelihood is evaluated at the *dequantized* value
# $\operatorname{round}(z - m) + m$ and bounded below by $10^{-9}$.

# %%
def likelihood_naive(z, eb):
    C = z.shape[-1]
    med = em.eb_medians(eb)
    z_tilde = np.rint(z - med) + med  # dequantize
    v = z_tilde.reshape(-1, C).T  # (B, h, w, C) -> (B*h*w, C) -> (C, B*h*w)
    lower = logits_cumulative_naive(v - np.float32(0.5), eb)  # (C, B*h*w)
    upper = logits_cumulative_naive(v + np.float32(0.5), eb)
    s = -np.sign(lower + upper)
    lik = np.abs(sigmoid(s * upper) - sigmoid(s * lower))
    lik = np.maximum(lik, np.float32(1e-9))
    return lik.T.reshape(z.shape)  # (C, B*h*w) -> (B, h, w, C)


lik_naive = likelihood_naive(z, eb)
lik = em.eb_likelihood(z, eb)  # (B, h, w, C)
# the naive network's float32 products in another order than eb_logits_cumulative: relative
# rounding ~1e-7, amplified a little by the sigmoid difference; 1e-9 is the likelihood floor
np.testing.assert_allclose(lik_naive, lik, rtol=1e-5, atol=1e-9)
# forward() calls this same eb_likelihood on this same z: one code path against itself, exact
np.testing.assert_array_equal(lik.transpose(0, 3, 1, 2), out["likelihoods"]["z"])  # forward(): NCHW
bits_z = -np.log2(lik.astype(np.float64)).sum()
print(f"z: {z.size} symbols, {bits_z:.0f} bits ideal = {bits_z / z.size:.2f} bits/symbol, "
      f"{bits_z / (image.shape[0] * image.shape[1]):.4f} bpp")

# %% [markdown]
# ## 4. From probabilities to 16-bit integer tables
#
# An entropy coder cannot use float probabilities: encoder and decoder would have to compute
# them bit-identically. Instead each channel gets a row of **integer cumulative frequencies**
# summing to $2^{16}$, computed once and stored in the weight file. Building the row of one
# channel (docs/entropy.md §3.5), step by step:
#
# 1. the range: from the learned quantiles (lower, median, upper),
#    `minima = max(ceil(median − lower), 0)`, `maxima = max(ceil(upper − median), 0)`;
#    the channel codes `pmf_length = minima + maxima + 1` values; symbol $k$ sits at position
#    $k - \text{offset}$ with `offset = −minima`;
# 2. the pmf at `median − minima + k`, for k = 0 .. max_length−1 (the **same** number of
#    points for every channel);
# 3. the tail mass: what lies outside, $\sigma(\ell_0) + \sigma(-u_{\text{last}})$ — a quirk:
#    the upper tail is taken at the last *common* point `max_length − 1`, not at the channel's own;
# 4. `pmf_to_quantized_cdf([pmf_0 … pmf_{len−1}, tail])`: the tail becomes the **escape** symbol.

# %%
q = eb["quantiles"]  # (C, 1, 3)
lower_q, med, upper_q = q[:, 0, 0], q[:, 0, 1], q[:, 0, 2]  # (C,) each, float32
minima = np.maximum(np.ceil(med - lower_q), 0).astype(np.int32)  # (C,)
maxima = np.maximum(np.ceil(upper_q - med), 0).astype(np.int32)
offset = -minima
pmf_length = minima + maxima + 1
max_length = int(pmf_length.max())

c = int(np.argmax(pmf_length))  # a channel with the widest range
print(f"channel {c}: quantiles {q[c, 0]} -> minima {minima[c]}, maxima {maxima[c]}, "
      f"offset {offset[c]}, pmf_length {pmf_length[c]} (max over channels {max_length})")

eb_c = {k: a[c:c + 1] for k, a in eb.items()}  # channel c's weights, each (1, ...)
t = med[c] - np.float32(minima[c]) + np.arange(max_length, dtype=np.float32)  # (max_length,) points
lower_l = em.eb_logits_cumulative((t - np.float32(0.5))[None, None], eb_c)[0, 0]  # (1, 1, L) -> (L,)
upper_l = em.eb_logits_cumulative((t + np.float32(0.5))[None, None], eb_c)[0, 0]
s = -np.sign(lower_l + upper_l)
pmf_c = np.abs(sigmoid(s * upper_l) - sigmoid(s * lower_l))  # (max_length,)
tail_c = sigmoid(lower_l[0]) + sigmoid(-upper_l[-1])

ref = em.eb_pmf(eb)  # the library's pmfs of all channels
# one channel's slice through the same float32 formulas as eb_pmf's all-channel arrays: the
# products may be blocked differently by BLAS, so allow float32 rounding (relative 1e-6; the
# sign trick keeps tail values accurate relatively, so rtol is the right measure down to 1e-30)
np.testing.assert_allclose(pmf_c, ref["pmf"][c], rtol=1e-6, atol=1e-30)
np.testing.assert_allclose(tail_c, ref["tail_mass"][c], rtol=1e-6, atol=1e-30)
np.testing.assert_array_equal(pmf_length, ref["pmf_length"])  # integers: exact
np.testing.assert_array_equal(offset, ref["offset"])
print(f"pmf sums to {pmf_c[:pmf_length[c]].sum():.9f}, tail mass {tail_c:.3g}; equal to eb_pmf "
      f"(max relative difference {lesson.max_diff(pmf_c / ref['pmf'][c].clip(1e-30), 1):.1e})")

# %% [markdown]
# ### `pmf_to_quantized_cdf`, naively (docs/entropy.md §5)
#
# 1. `f[i] = round_half_away(pmf[i−1] · 65536)` (the product is exact in float32), `f[0] = 0`;
# 2. renormalise: `f[i] = floor(65536 · f[i] / Σf)` (integers);
# 3. prefix sums → `cdf`, then force `cdf[n] = 65536` (the flooring deficit goes to the
#    last symbol, the escape);
# 4. **zero-frequency repair**: a symbol with frequency 0 could never be coded. Scan
#    i = 0 … n−1 once, in order; when `cdf[i] == cdf[i+1]`, take one unit from the symbol j
#    with the smallest frequency that is still > 1 (lowest j on ties) and shift the cdf
#    entries between i and j by one.

# %%
def pmf_to_quantized_cdf_naive(pmf, precision=16, verbose=False):
    total = 1 << precision
    scaled = (np.asarray(pmf, np.float32) * np.float32(total)).astype(np.float64)  # exact
    f = np.concatenate([[0], np.floor(scaled + 0.5)]).astype(np.int64)  # (n+1,) pmf >= 0: half away
    f = total * f // f.sum()  # renormalise, floor
    cdf = np.cumsum(f)  # (n+1,)
    cdf[-1] = total
    if verbose:
        print("  before repair:", cdf)
    for i in range(len(pmf)):  # repair, on the array as it is being modified
        if cdf[i] == cdf[i + 1]:
            freq = np.diff(cdf)  # (n,)
            donors = np.flatnonzero(freq > 1)
            j = donors[np.argmin(freq[donors])]  # smallest frequency > 1, lowest index on ties
            if j < i:
                cdf[j + 1:i + 1] -= 1
            else:
                cdf[i + 1:j + 1] += 1
            if verbose:
                print(f"  symbol {i} had frequency 0: donor {j} ->", cdf)
    return cdf.astype(np.int32)


# %% [markdown]
# The worked example of the spec is the Gaussian table's row 0 (scale 0.11): three regular
# values $-1, 0, 1$ and the escape. Almost all mass is on 0, so three symbols round to
# frequency zero and must be repaired:

# %%
g = em.gc_pmf()  # the Gaussian conditional's pmfs (lesson 7 uses them), rows = scale-table entries
row0 = np.append(g["pmf"][0, :g["pmf_length"][0]], g["tail_mass"][0])  # (4,): pmf of -1, 0, 1, escape
print("pmf x 65536:", row0 * 65536)
cdf0 = pmf_to_quantized_cdf_naive(row0, verbose=True)
np.testing.assert_array_equal(cdf0, [0, 1, 65534, 65535, 65536])
np.testing.assert_array_equal(cdf0, em.pmf_to_quantized_cdf(row0))
np.testing.assert_array_equal(cdf0, model.gc_table.cdf[0, :5])  # the table stored in the weight file

# %% [markdown]
# The library does the repair with a heap of (frequency, index): the donor chosen never
# depends on which zero symbol is being repaired, so it replays the same sequence of
# donations in O(n log n). Check the two on random pmfs full of zeros and ties:

# %%
rng = np.random.default_rng(0)
for trial in range(100 if FAST else 1000):
    n = int(rng.integers(2, 40))
    p = rng.random(n).astype(np.float32) ** rng.integers(1, 30)  # many tiny values
    p[rng.random(n) < 0.3] = 0
    p[int(rng.integers(n))] += np.float32(rng.random() + 1e-3)  # at least one real symbol
    p = p / p.sum()
    np.testing.assert_array_equal(pmf_to_quantized_cdf_naive(p), em.pmf_to_quantized_cdf(p))
print("naive repair == heap repair on", trial + 1, "random pmfs")

# %% [markdown]
# ### The whole z table
# One row per channel, zero-padded to `max_length + 2` columns; `cdf_length = pmf_length + 2`
# valid entries (0, one per regular value, one for the escape, 65536).

# %%
table = np.zeros((C, max_length + 2), dtype=np.int32)  # (C, max_length + 2)
for ch in range(C):
    n = pmf_length[ch]
    table[ch, :n + 2] = pmf_to_quantized_cdf_naive(np.append(ref["pmf"][ch, :n], ref["tail_mass"][ch]))

lib = em.eb_tables(eb)
np.testing.assert_array_equal(table, lib["entropy_bottleneck._quantized_cdf"])
np.testing.assert_array_equal(pmf_length + 2, lib["entropy_bottleneck._cdf_length"])
np.testing.assert_array_equal(offset, lib["entropy_bottleneck._offset"])
same = int(np.sum(np.all(model.eb_table.cdf[:, :table.shape[1]] == table, axis=1)))
print(f"naive table == eb_tables; rows equal to the table stored in the weight file: {same}/{C}")

# %% [markdown]
# That last number should read C/C. If a row differed, recomputing tables on this machine
# would give a different coder than the one that wrote the file: float32 `exp` differs in its
# last bit between libraries, and `pmf · 65536` landing on a .5 decides a whole unit
# (docs/entropy.md §7). This is why the tables are **stored** in the weight file and the model
# codes with the stored ones (`model.eb_table`), never with a recomputation.
#
# ## 5. A channel's pmf and CDF, float and integer
# What the coder sees is the integer table divided by $2^{16}$. Its cost over the float pmf
# is the cross-entropy gap $\sum_k p_k \log_2 (p_k / \hat p_k)$: usually a tiny fraction of a bit.

# %%
n = pmf_length[c]
freq = np.diff(table[c, :n + 2]) / 65536  # (n + 1,): regular values, then the escape
values = np.arange(n) + offset[c]  # the symbols round(z - median) of positions 0 .. n-1
p_float = np.append(ref["pmf"][c, :n], ref["tail_mass"][c]).astype(np.float64)
gap = np.sum(p_float * np.log2(p_float / freq)) / p_float.sum()
print(f"channel {c}: entropy {-(p_float * np.log2(p_float)).sum():.4f} bits, "
      f"16-bit quantization costs {gap:.2e} bits/symbol extra")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].bar(values, freq[:-1], color="C0", label="table freq / 65536")
ax[0].plot(values, p_float[:-1], "k.", label="float pmf")
ax[0].set(yscale="log", title=f"channel {c}: pmf (log)", xlabel="symbol round(z − median)")
ax[0].legend(fontsize=8)
# the table counts from the lower edge of the first bin (the lower tail went to the escape):
# compare it with the float CDF minus the lower tail, at the upper bin edges k + 0.5
dense = np.linspace(values[0] - 0.5, values[-1] + 0.5, 400, dtype=np.float32)  # (400,) in v − median
cont = sigmoid(em.eb_logits_cumulative((dense + med[c])[None, None], eb_c)[0, 0])  # (400,)
ax[1].plot(dense, cont - cont[0], "k", lw=1, label="σ(f(v)) − lower tail, float")
ax[1].plot(values + 0.5, table[c, 1:n + 1] / 65536, "o", ms=4, label="integer cdf[k+1] / 65536")
ax[1].set(title="CDF at the bin edges", xlabel="v − median")
ax[1].legend(fontsize=8)
fig.tight_layout()
lesson.show(fig, "pmf_cdf")

# %% [markdown]
# ## Summary
#
# * Symbols are `round(z − median)` (half to even); `z_hat = symbols + median`. Training uses
#   additive uniform noise for the rate and the straight-through round for the decoder input.
# * Each channel's CDF is a tiny monotone network (softplus weights, `v + tanh(a)·tanh(v)`);
#   `eb_logits_cumulative` runs all channels as one batched matmul.
# * The likelihood of a bin is a difference of sigmoids, taken on the small side (sign trick)
#   so that tails keep their precision; it is bounded below by 1e-9.
# * The coder uses integer tables: quantile range → pmf + tail → `pmf_to_quantized_cdf`
#   (round half away, renormalise, escape takes the deficit, zero-frequency repair). They are
#   computed once and stored with the weights.
#
# ## Exercises
#
# 1. Rebuild the z table with `precision=12` in `pmf_to_quantized_cdf_naive`, and compute
#    what the sample's z would cost with it (sum of $-\log_2$ of the table probability of each
#    symbol) compared with 16 bits.
#    *Hint:* the probability of symbol $k$ of channel $c$ is `(cdf[c, k+1] - cdf[c, k]) / 2**precision`
#    at position $k$ = symbol − offset; compare the two sums with `bits_z`.
# 2. Evaluate the plain difference of sigmoids instead of the sign trick on a grid far into
#    both tails of one channel. Where do the two first disagree by more than 1 %? How many bits
#    would the rate estimate be off for a symbol there?
#    *Hint:* reuse `lower_l`, `upper_l` on `t = med[c] + np.arange(-60, 61)`; the plain form
#    cancels once both sigmoids round to 1 in float32 (about $\sigma > 1 - 6\cdot10^{-8}$).
# 3. The quirk of step 3 takes the upper tail at the last *common* sample. For the channel
#    with the shortest range, compare that tail mass with the one at its own last sample:
#    does the escape symbol get a different frequency?
#    *Hint:* `c = int(np.argmin(pmf_length))`; evaluate `sigmoid(-upper_l[pmf_length[c] - 1])`
#    and feed both tails to `em.pmf_to_quantized_cdf`.
