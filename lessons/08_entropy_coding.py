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
# # Lesson 8 — Entropy coding with constriction
#
# Lessons 6 and 7 produced integer symbols and, for each, a probability model. An entropy
# coder turns them into bits, spending close to the **information content**
#
# $$ \sum_t -\log_2 p_t(s_t) \ \text{bits} $$
#
# for the whole message — fractional bits per symbol included. minstf uses the range-ANS
# coder of `constriction` (Bamler 2022): fast, and exact to within a few dozen bits per stream.
#
# The plan: a warm-up with constriction's own Gaussian model, then the integer tables that
# STF really uses (one `Categorical` per table row, as `minstf.coding.CdfTable` builds it),
# grouping symbols by row so that one call codes many symbols, the escape mechanism for values
# outside a table, and finally the bill: the length of the real y stream of the sample photo
# against its ideal $-\log_2$ likelihood. `minstf/coding.py` is the only module that talks to
# constriction; we check every step against its `SymbolEncoder` / `SymbolDecoder`.

# %%
import time

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures
import constriction
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import ndtr  # the standard normal CDF, float64

import minstf
from minstf import entropy_models as em
from minstf.coding import CHUNK_BITS, SymbolDecoder, SymbolEncoder, channel_first_flat
from minstf.image import to_float
from minstf.slices import slice_of

FAST = lesson.FAST


Ans = constriction.stream.stack.AnsCoder
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Warm-up: Gaussian symbols, coded directly
# Draw $x_t \sim \mathcal N(\mu_t, \sigma_t)$ with a different mean and scale for every
# symbol, round, and code with `QuantizedGaussian`: the probability of integer $s$ is the
# Gaussian mass on $[s - \frac12, s + \frac12]$ — the same bin integral as STF's Gaussian
# conditional. Its ideal cost is $\sum_t -\log_2\big(\Phi(\frac{s_t + 1/2 - \mu_t}{\sigma_t})
# - \Phi(\frac{s_t - 1/2 - \mu_t}{\sigma_t})\big)$.

# %%
n = 2000 if FAST else 20000
mu = rng.normal(0, 3, n)  # (n,) float64
sigma = np.exp(rng.uniform(np.log(0.2), np.log(20), n))  # (n,) log-uniform scales
symbols = np.rint(rng.normal(mu, sigma)).astype(np.int32)  # (n,)

gauss = constriction.stream.model.QuantizedGaussian(-200, 200)  # a family: mean, std given per symbol
coder = Ans()
coder.encode_reverse(symbols, gauss, mu, sigma)
stream = coder.get_compressed()  # (words,) uint32
ideal = -np.log2(ndtr((symbols + 0.5 - mu) / sigma) - ndtr((symbols - 0.5 - mu) / sigma)).sum()
print(f"{n} symbols: ideal {ideal:.0f} bits, stream {32 * len(stream)} bits "
      f"({32 * len(stream) - ideal:+.0f}), {32 * len(stream) / n:.3f} bits/symbol")

decoder = Ans(stream)
np.testing.assert_array_equal(decoder.decode(gauss, mu, sigma), symbols)
assert decoder.is_empty()

# %% [markdown]
# ## 2. ANS is a stack
# `encode_reverse(array, ...)` pushes a whole array so that `decode` pops it in order. But
# *between* calls the coder is last-in-first-out: what was pushed last comes out first.

# %%
ten = constriction.stream.model.Categorical(np.full(10, 0.1), perfect=False)  # uniform over 0..9
coder = Ans()
coder.encode_reverse(np.array([1, 2, 3], dtype=np.int32), ten)  # one call: order kept
coder.encode_reverse(7, ten)  # then two single pushes
coder.encode_reverse(8, ten)
decoder = Ans(coder.get_compressed())
print("pushed [1 2 3], 7, 8 -> popped", decoder.decode(ten), decoder.decode(ten), decoder.decode(ten, 3))

# %% [markdown]
# So an encoder that wants the decoder to read chunks A, B, C in that order must push
# C, B, A. `SymbolEncoder` therefore only *collects* `(positions, model)` chunks in stream
# order and pushes them reversed in `finish()`.
#
# ## 3. The integer tables, one `Categorical` per row
# The decoder must reproduce every probability bit for bit, so STF codes with the integer
# tables of lesson 6: a row r has `cdf_length[r] = L` valid entries and codes positions
# 0 … L−2, the last one (L−2) being the **escape**; symbol value $v$ sits at position
# $v - \text{offset}[r]$. For y the rows are the 64 entries of the scale table (index from
# `build_indexes`, lesson 7); for z they are the channels.

# %%
model = minstf.load_model(quality=2)
gc = model.gc_table  # CdfTable with the weight file's y tables
print("y table: cdf", gc.cdf.shape, "(rows, width); cdf_length", gc.cdf_length.shape, "offset", gc.offset.shape)
for r in (0, 20, 63):
    L = gc.cdf_length[r]
    print(f"row {r:2d}: scale {em.SCALE_TABLE[r]:8.3f}, values {gc.offset[r]} .. {gc.offset[r] + L - 3}, "
          f"escape at position {L - 2}, first frequencies {np.diff(gc.cdf[r, :min(L, 6)])}")

# %% [markdown]
# A frequency `f` of the 16-bit table is the probability `f / 65536`. constriction's
# `Categorical` takes float probabilities and re-quantizes them to its own fixed point
# (24 bits); from `f / 65536` it gets our frequencies back up to a negligible change — the
# cost below stays within a constant few dozen bits of the table's ideal, however many
# symbols are coded. What decoding needs is that encoder and decoder build the same model
# from the same integers, with the same `perfect=False` (pass it explicitly; docs/entropy.md §6.1).
# This is `CdfTable.model(row)`:

# %%
def row_model(table, r):
    freq = np.diff(table.cdf[r, :table.cdf_length[r]])  # (L-1,) frequencies of positions 0 .. L-2
    return constriction.stream.model.Categorical(freq / 65536.0, perfect=False)


r = 20
freq = np.diff(gc.cdf[r, :gc.cdf_length[r]])
positions = rng.choice(len(freq), size=n, p=freq / 65536).astype(np.int32)  # (n,) drawn from row r
mine, lib = Ans(), Ans()
mine.encode_reverse(positions, row_model(gc, r))
lib.encode_reverse(positions, gc.model(r))
np.testing.assert_array_equal(mine.get_compressed(), lib.get_compressed())
ideal = -np.log2(freq[positions] / 65536).sum()
print(f"row {r}: {n} positions, ideal {ideal:.0f} bits, stream {mine.num_bits()} bits: "
      f"the overhead is per stream, not per symbol")

# %% [markdown]
# ## 4. Escapes: values outside a row
# constriction's models have finite support and no escape code, so minstf adds its own
# (docs/entropy.md §6.2 in spirit). A value $v$ below 0 or at/above the escape position
# $E = L - 2$ is coded as the escape position, followed later in the stream by a
# sign-folded integer
#
# $$ \text{raw} = \begin{cases} -2v - 1 & v < 0 \ \text{(odd)}\\ 2(v - E) & v \ge E \ \text{(even)} \end{cases} $$
#
# written as a count of 4-bit chunks and then the chunks, least significant first, all with a
# uniform model over 0 … 15. Every int32 symbol round-trips (at most 9 chunks). Upstream's
# CompressAI coder escapes the same values with the same `raw`, but its own rANS, count
# encoding and stream layout: minstf's bytes are its own, only the symbols are shared.

# %%
def escape_payload(v, E):
    """Naive: one out-of-range value v (E = escape position) -> (raw, [4-bit chunks])."""
    raw = -2 * v - 1 if v < 0 else 2 * (v - E)
    chunks = []
    while raw >> (CHUNK_BITS * len(chunks)):
        chunks.append((raw >> (CHUNK_BITS * len(chunks))) & 15)
    return raw, chunks


def unescape(raw, E):
    return -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + E


r = 0  # row 0 codes only -1, 0, 1
E = int(gc.cdf_length[r]) - 2
tests = [0, 1, -1, 2, -2, 5, 40, -1000, 2**31 - 1, -(2**31)]
print(f"row {r}: offset {gc.offset[r]}, escape position E = {E}")
for sym in tests:
    v = sym - int(gc.offset[r])
    if 0 <= v < E:
        print(f"symbol {sym:>12}: position {v}")
        continue
    raw, chunks = escape_payload(v, E)
    assert unescape(raw, E) == v
    print(f"symbol {sym:>12}: position {E} (escape), raw {raw}, count {len(chunks)}, chunks {chunks}")

sym = np.array(tests, dtype=np.int32)  # (10,)
rows = np.zeros_like(sym)  # all with row 0
enc = SymbolEncoder()
enc.add(sym, rows, gc)
data = enc.finish()
np.testing.assert_array_equal(SymbolDecoder(data).read(rows, gc), sym)
print(f"SymbolEncoder/SymbolDecoder round trip: {len(data)} bytes")

# %% [markdown]
# ## 5. Grouping by row, and the stream layout
# Coding one symbol per call costs a Python round trip per symbol. Since the decoder knows
# every element's row *before* it decodes (the indexes come from `scale`, which it computes),
# both sides can instead form the same groups: all elements of row r₀ in one call, then row
# r₁, … (rows ascending). The escape payloads follow: all counts, then all chunks, in element
# order. One `add(symbols, indexes, table)` of `SymbolEncoder` writes
#
# ```
# [positions of the elements with row r0] [... row r1] ... [escape counts] [escape chunks]
# ```
#
# Here it is from scratch, for several adds continuing one stream — it must produce the very
# same bytes as `SymbolEncoder`:

# %%
UNIFORM16 = constriction.stream.model.Uniform(16)


def encode_grouped(adds, table):
    """adds: [(symbols, rows), ...] each (n,) int -> the bytes of one stream."""
    chunks = []  # (positions, model) in the order the decoder reads them
    for sym, rows in adds:
        v = sym.astype(np.int64) - table.offset[rows]  # (n,) coded value
        E = table.max_value[rows]  # (n,) escape position of each element's row
        esc = (v < 0) | (v >= E)
        position = np.where(esc, E, v).astype(np.int32)
        for r in np.unique(rows):  # rows ascending
            chunks.append((position[rows == r], table.model(r)))  # this row's elements, in element order
        payloads = [escape_payload(int(ve), int(me))[1] for ve, me in zip(v[esc], E[esc])]
        chunks.append((np.array([len(p) for p in payloads], dtype=np.int32), UNIFORM16))
        chunks.append((np.array([c for p in payloads for c in p], dtype=np.int32), UNIFORM16))
    coder = Ans()
    for positions, m in reversed(chunks):  # a stack: push the last chunk first
        if positions.size:
            coder.encode_reverse(positions, m)
    return coder.get_compressed().astype("<u4").tobytes()  # 32-bit words, little-endian


def encode_library(adds, table):
    enc = SymbolEncoder()
    for sym, rows in adds:
        enc.add(sym, rows, table)
    return enc.finish()


assert encode_grouped([(sym, rows)], gc) == data  # the escape example above
rand = [(rng.integers(-40, 40, 500).astype(np.int32), rng.integers(0, 64, 500)) for _ in range(3)]
assert encode_grouped(rand, gc) == encode_library(rand, gc)
print("encode_grouped == SymbolEncoder, byte for byte")

# %% [markdown]
# ## 6. The real stream: y of the sample photo
# `compress(x, taps=...)` records, per slice, `mu`, `scale` and `y_hat_pre_lrp` = symbols + mu
# (lesson 7), so the symbols are `round(y_hat_pre_lrp − mu)` (exact: an integer plus and minus
# mu is within rounding of the integer) and the rows `build_indexes(scale)`. Upstream's order
# inside a slice is channel, row, column of `(B, Cs, H, W)` — `channel_first_flat` in
# `minstf/coding.py` — and the slices follow each other in one stream. Rebuilt from scratch
# from compress's own numbers (one code path, so the bytes must be equal), it equals the y
# string of `model.compress`:

# %%
image = lesson.sample_image((slice(0, 128), slice(0, 192)) if FAST else None)  # uint8 (H, W, 3)
x = to_float(image)  # (1, 3, H, W)
taps = {}
out = model.forward(x, taps=taps)
cfg = model.config
ctaps = {}
compressed = model.compress(x, taps=ctaps)  # float32 mode: the same entropy parameters as forward()
y_symbols = np.rint(ctaps["y_hat_pre_lrp"] - ctaps["mu"]).astype(np.int32)  # (1, H4, W4, M) int32
y_index = em.build_indexes(ctaps["scale"])  # (1, H4, W4, M) int32
adds = [(channel_first_flat(slice_of(y_symbols, s, cfg)),  # (1, H4, W4, Cs) -> (Cs*H4*W4,)
         channel_first_flat(slice_of(y_index, s, cfg))) for s in range(cfg.num_slices)]
assert encode_grouped(adds, gc) == compressed.y_string  # bytes of one code path: exact
print(f"y: {y_symbols.size} symbols -> {len(compressed.y_string)} bytes, rebuilt from scratch byte for byte")

# %% [markdown]
# ### Naive: one symbol per call
# The same symbols coded one at a time (pushed in reverse, so that they pop in order), and
# decoded one at a time. The stream differs from the grouped one — the symbols are in
# another order — but it codes the same information and is as long, within a word or two.
# (Slice 0 only, and without escapes, to keep the loop short.)

# %%
sym0, rows0 = adds[0]
E0 = gc.max_value[rows0]
pos0 = sym0 - gc.offset[rows0]
inside = (pos0 >= 0) & (pos0 < E0)  # (n,) the elements that need no escape
sym0, rows0, pos0 = sym0[inside], rows0[inside], pos0[inside].astype(np.int32)
if FAST:
    sym0, rows0, pos0 = sym0[:1000], rows0[:1000], pos0[:1000]

def encode_one_by_one(pos, rows):
    coder = Ans()
    for t in reversed(range(len(pos))):  # last symbol first
        coder.encode_reverse(int(pos[t]), gc.model(int(rows[t])))
    return coder.get_compressed()


def best_time(f, *args, repeat=3):
    """(result, best wall time of `repeat` runs): the machine is shared, take the least disturbed run."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = f(*args)
        times.append(time.perf_counter() - t0)
    return result, min(times)


naive_words, t_naive = best_time(encode_one_by_one, pos0, rows0)

decoder = Ans(naive_words)
decoded = np.array([decoder.decode(gc.model(int(r))) for r in rows0]) + gc.offset[rows0]
np.testing.assert_array_equal(decoded, sym0)

grouped, t_grouped = best_time(encode_grouped, [(sym0, rows0)], gc)
np.testing.assert_array_equal(SymbolDecoder(grouped).read(rows0, gc), sym0)
print(f"{len(sym0)} symbols: one per call {4 * len(naive_words)} bytes, {1e6 * t_naive / len(sym0):.2f} µs/symbol; "
      f"grouped {len(grouped)} bytes, {1e6 * t_grouped / len(sym0):.2f} µs/symbol")

# %% [markdown]
# ## 7. What the bits cost
# Three bills for the same y, from ideal to real:
#
# 1. **continuous**: $-\log_2$ of the Gaussian bin probability with the network's own
#    scale, floored at $10^{-9}$ (the rate that `forward()` reports and training minimises);
# 2. **tables**: $-\log_2 (f / 2^{16})$ with the frequency $f$ of each symbol's position in
#    its row — scale rounded *up* to the table, 16-bit frequencies — plus, for an escape,
#    4 bits for the count and 4 per chunk;
# 3. **stream**: 8 × the byte length of the y string.
#
# Bills 1 and 2 per element (any shape; `rows` = the table row of each symbol):

# %%
def table_bits(symbols, rows, table):
    """-> (bits, escaped): the cost of every element with the integer tables, and which escaped."""
    v = symbols.astype(np.int64) - table.offset[rows]  # coded value
    E = table.max_value[rows]
    esc = (v < 0) | (v >= E)
    position = np.where(esc, E, v)
    f = table.cdf[rows, position + 1] - table.cdf[rows, position]  # frequency of each position
    raw = np.where(v < 0, -2 * v - 1, 2 * (v - E))  # meaningful where esc
    n_chunks = ((raw[..., None] >> (CHUNK_BITS * np.arange(9))) != 0).sum(axis=-1)  # escape_payload, vectorized
    return -np.log2(f / 65536) + np.where(esc, 4 * (1 + n_chunks), 0), esc


cont = -np.log2(em.gc_likelihood(taps["y"], taps["scale"], taps["mu"]).astype(np.float64))  # (1, H4, W4, M)
# forward() computes the same likelihoods slice by slice; the two sums run in other orders (NHWC
# vs NCHW), so compare the float64 totals to 1e-9 relative, far below a bit's worth
np.testing.assert_allclose(cont.sum(), -np.log2(out["likelihoods"]["y"].astype(np.float64)).sum(), rtol=1e-9)
tab, esc = table_bits(y_symbols, y_index, gc)  # (1, H4, W4, M) each
bits_stream = 8 * len(compressed.y_string)
diff = tab - cont  # (1, H4, W4, M): what the tables charge beyond the continuous model
print(f"y: {y_symbols.size} symbols, {esc.sum()} escapes")
print(f"  continuous  {cont.sum():9.0f} bits")
print(f"  tables      {tab.sum():9.0f} bits: {diff[diff > 0].sum():+.0f} on {np.sum(diff > 0)} elements, "
      f"{diff[diff < 0].sum():+.0f} on {np.sum(diff < 0)}")
print(f"  stream      {bits_stream:9d} bits  ({bits_stream - tab.sum():+.0f} over the tables)")
assert 0 <= bits_stream - tab.sum() < 96, "ANS costs a few dozen bits per stream, not per symbol"

# %% [markdown]
# The tables are not uniformly worse than the continuous model. Their Gaussian is slightly
# *wider* (the scale is rounded up to the next table entry, at most one step of the
# log-spaced table, ~13 %) and no position costs more than 16 bits (every frequency is at
# least 1 of 65536; an escape costs its frequency plus the payload). So a symbol the network
# expected (near `mu`, a few hundredths of a bit) costs a little more with the tables, and a
# *surprising* one — where the network was over-confident — costs less than the continuous
# estimate, which charges up to $-\log_2 10^{-9} \approx 30$ bits:

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(cont.ravel(), diff.ravel(), ".", ms=2, alpha=0.3)
ax.axhline(0, color="k", lw=0.5)
ax.set(xlabel="continuous bits of the element", ylabel="table − continuous bits",
       title="integer tables vs the continuous model, per y element")
fig.tight_layout()
lesson.show(fig, "overhead")

# %% [markdown]
# The z stream, the same way (rows = channels, z's tables from lesson 6):

# %%
z_symbols = em.quantize_symbols(taps["z"], model.medians)  # (1, h, w, N_z)
z_rows = np.broadcast_to(np.arange(cfg.N_z), z_symbols.shape)  # row of each element = its channel
assert encode_grouped([(channel_first_flat(z_symbols), channel_first_flat(z_rows))], model.eb_table) \
    == compressed.z_string
bits_z = 8 * len(compressed.z_string)
print(f"z: {z_symbols.size} symbols: continuous {-np.log2(out['likelihoods']['z'].astype(np.float64)).sum():.0f}, "
      f"tables {table_bits(z_symbols, z_rows, model.eb_table)[0].sum():.0f}, stream {bits_z} bits")
npx = image.shape[0] * image.shape[1]
print(f"total {(bits_stream + bits_z) / npx:.4f} bpp (payload, without the .mstf header)")

# %% [markdown]
# ## Summary
#
# * An ANS coder spends the information content of the message plus a few dozen bits; it is
#   a stack, so the encoder pushes chunks in reverse.
# * STF codes with integer tables: one `Categorical(freq / 65536, perfect=False)` per row;
#   positions 0 … L−2, the last one is the escape.
# * Out-of-range values become the escape plus a sign-folded payload in 4-bit chunks.
# * Grouping elements by row codes a whole group per call; the decoder forms the same groups
#   because it knows the rows before decoding. minstf's y stream is rebuilt here byte for byte.
# * The bill: the tables cost a little more than the continuous likelihood on expected symbols
#   and less on surprising ones (wider Gaussian, 16-bit floor); the stream adds under 96 bits.
#
# ## Exercises
#
# 1. Code the y symbols with `QuantizedGaussian` and the network's own `mu`, `max(scale, 0.11)`
#    instead of the tables. How much smaller is the stream? Why can't STF do that safely
#    across machines?
#    *Hint:* the warm-up of section 1 does it for random symbols; use `taps["y"]`, `taps["mu"]`,
#    `taps["scale"]` flattened. Lesson 9 shows what a one-ulp difference in `mu` does to a decoder.
# 2. Make the escape cheaper: code the count with a `Categorical` fitted to the counts of the
#    test symbols above. When would it matter for STF?
#    *Hint:* `np.bincount` of the chunk counts gives the probabilities; escapes are rare in y
#    (print `esc.sum()` above), so only a badly trained or mismatched model would notice.
# 3. Build a table with only 16 rows (every 4th scale) and measure the table bits of y. How
#    does the overhead grow with coarser scale tables?
#    *Hint:* map each index to `4 * (index // 4) + 3` (the widest scale of its group, so
#    nothing is cheaper than it should be) and sum `table_bits(y_symbols, rows, gc)[0]`.
