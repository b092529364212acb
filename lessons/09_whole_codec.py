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
# # Lesson 9 — The whole codec: rate, distortion, and decoding on another machine
#
# Lessons 6–8 built every piece; `minstf.encode_image` / `decode_image` put them together:
#
# ```
# encode: uint8 image → [0,1] → pad to ×64 → g_a → y → h_a → z ─Q─► z string
#                                        z_hat → h_s → slice loop (mu, scale → Q, index) ─► y string
#         → .mstf = header (size, padding, weights fingerprint, CRCs) + z string + y string
# decode: .mstf → z string → z_hat → h_s → slice loop (index → decode → + mu, LRP) → g_s → crop
# ```
#
# This lesson measures what the codec does — rate-distortion points of the three shipped
# qualities, and where in the image the bits go — and then looks at its most fragile part:
# the decoder must repeat the encoder's **discrete decisions** exactly, with its own floating
# point arithmetic. We trigger a failure on purpose, and see the two defences: the portable
# float64 mode and the per-slice CRC that turns silent garbage into a `DecoderMismatch`.
#
# Spec: docs/architecture.md §6–7, docs/entropy.md §7, docs/determinism.md; code: `minstf/codec.py`, `minstf/model.py`,
# `minstf/bitstream.py`.

# %%
import dataclasses

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf import bitstream
from minstf.coding import (SymbolDecoder, SymbolEncoder, channel_first_flat, check_symbols,
                           from_channel_first_flat, symbols_crc)
from minstf.entropy_models import SCALE_TABLE, build_indexes, quantize_symbols
from minstf.errors import CorruptFile, DecoderMismatch
from minstf.image import psnr, psnr_uint8, to_float, to_uint8
from minstf.model import Compressed
from minstf.slices import run_slices, slice_of
from minstf.transforms import g_a, g_s, h_a, h_mean_s, h_scale_s
from minstf.zoo import QUALITIES

FAST = lesson.FAST


# fast: a 64 x 128 strip through a parrot (this lesson runs the codec often)
image = lesson.sample_image((slice(64, 128), slice(128, 256)) if FAST else None)  # uint8 (H, W, 3)
H, W = image.shape[:2]
print("image", image.shape)

# %% [markdown]
# ## 1. Rate-distortion points
# For each shipped quality: encode to a `.mstf` file, decode, and measure
#
# * **bpp** — bits per pixel of the whole file (header included), and of the payload alone
#   (the two strings; what papers report), and the rate `forward()` *estimates* from its
#   likelihoods without coding (the training objective's rate);
# * **PSNR** $= 10 \log_{10}(255^2 / \mathrm{MSE})$ of the decoded 8-bit image.
#
# Decoding must give exactly `forward()`'s reconstruction (clamped, cropped, rounded to 8 bits):
# the slice loop is the same code on both sides (lesson 7).

# %%
models = {q: minstf.load_model(quality=q) for q in QUALITIES}
x = to_float(image)  # (1, 3, H, W); H, W are multiples of 64 here, so no padding
rd, outs, taps, coded = [], {}, {}, {}
for q, m in models.items():
    data, stats = minstf.encode_image(m, image, portable=False)
    decoded, header = minstf.decode_image(m, data)  # uint8 (H, W, 3)
    coded[q] = data, stats, decoded
    taps[q] = {}
    out = outs[q] = m.forward(x, taps=taps[q])
    # one code path: decode recomputes forward()'s numbers with the same functions from the same
    # integer symbols (z_hat = symbols + medians is forward's rint(z - m) + m), so exact
    np.testing.assert_array_equal(decoded, to_uint8(np.clip(out["x_hat"], 0, 1)))
    est = sum(-np.log2(lik.astype(np.float64)).sum() for lik in out["likelihoods"].values()) / (H * W)
    rd.append((q, len(data), stats.bpp, stats.payload_bpp, est, psnr_uint8(image, decoded)))

print("quality  file bytes   bpp (file)  bpp (payload)  bpp (estimate)   PSNR dB")
for q, n, bpp, pay, est, p in rd:
    print(f"{q:7d}  {n:10d}  {bpp:11.4f}  {pay:13.4f}  {est:14.4f}  {p:8.2f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
by_rate = sorted(rd, key=lambda r: r[3])
ax.plot([r[3] for r in by_rate], [r[5] for r in by_rate], "o-")
for q, n, bpp, pay, est, p in rd:
    ax.annotate(f"q{q}", (pay, p), textcoords="offset points", xytext=(4, -10))
ax.set(xlabel="bpp (payload)", ylabel="PSNR (dB)", title="minstf STF-small on the sample photo")
fig.tight_layout()
lesson.show(fig, "rd")

# %% [markdown]
# ## 2. Where the bits go
# The rate is a sum over latent elements, so it can be drawn. A y element at latent position
# $(i, j)$ describes a 16×16 block of pixels, a z element a 64×64 block; spreading each
# position's bits (summed over channels) evenly over its block gives bits per pixel, a map
# whose mean is the estimated bpp.

# %%
model, out = models[2], outs[2]
bits_y = -np.log2(out["likelihoods"]["y"].astype(np.float64))[0].sum(axis=0)  # (M, H4, W4) -> (H4, W4)
bits_z = -np.log2(out["likelihoods"]["z"].astype(np.float64))[0].sum(axis=0)  # (N_z, h, w) -> (h, w)
d = model.config.downsampling  # 16
bpp_map = (np.kron(bits_y, np.ones((d, d))) / d**2  # (H4, W4) -> (H, W): each value over a d x d block
           + np.kron(bits_z, np.ones((4 * d, 4 * d))) / (4 * d) ** 2)
assert bpp_map.shape == (H, W)
np.testing.assert_allclose(bpp_map.mean(), rd[1][4], rtol=1e-9)  # = the estimated bpp of quality 2
print(f"bpp map: mean {bpp_map.mean():.4f}, from {bpp_map.min():.4f} to {bpp_map.max():.4f}; "
      f"z is {bits_z.sum() / (bits_y.sum() + bits_z.sum()):.1%} of the bits")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
ax[0].imshow(image)
ax[0].set_title("image")
im = ax[1].imshow(bpp_map, cmap="inferno")
ax[1].set_title("bits per pixel (y + z), quality 2")
fig.colorbar(im, ax=ax[1], shrink=0.8)
for a in ax:
    a.axis("off")
fig.tight_layout()
lesson.show(fig, "bit_allocation")

# %% [markdown]
# ## 3. Why decoding on another machine can fail
#
# The decoder recomputes `mu` and `scale` itself — same weights, but its own BLAS, CPU or
# GPU, so its floats may differ from the encoder's in the last bits. Floats that differ a
# little are harmless; **decisions** that differ are not. The decisions (docs/entropy.md §7):
#
# * `round(y − mu)` — made by the encoder only; the decoder reads the symbol;
# * `build_indexes(scale)` — made by **both**: the table row a symbol was coded with must be
#   the row the decoder decodes it with, or the ANS state goes astray and everything after it
#   is garbage.
#
# To play with the decisions we write compress and decompress out, with a hook
# `tweak(s, mu, scale) -> (mu, scale)` where a "different machine" can change the numbers
# it computed. Without a tweak they must reproduce the library bit for bit.

# %%
def z_rows(model, z_shape):
    """CDF row of every z element in channel-first order: its channel."""
    _, h, w, C = z_shape
    return np.repeat(np.arange(C, dtype=np.int32), h * w)  # (C*h*w,)


def my_compress(model, x, tweak=None, record=None):
    """(1, 3, H, W) -> Compressed, as model.compress (float32). record: dict of per-slice lists."""
    c, p = model.config, model.params
    y = g_a(x.transpose(0, 2, 3, 1), p, c)  # (1, H, W, 3) -> (1, H4, W4, M)
    z = h_a(y, p, c)  # -> (1, h, w, N_z)
    z_symbols = quantize_symbols(z, model.medians)  # (1, h, w, N_z) int32
    z_flat = channel_first_flat(z_symbols)  # (N_z*h*w,)
    z_encoder = SymbolEncoder()
    z_encoder.add(z_flat, z_rows(model, z.shape), model.eb_table)
    z_hat = z_symbols.astype(np.float32) + model.medians
    latent_means, latent_scales = h_mean_s(z_hat, p, c), h_scale_s(z_hat, p, c)  # (1, H4, W4, M) each
    y_encoder, crcs = SymbolEncoder(), []

    def quantize(s, mu, scale):  # mu, scale: (1, H4, W4, Cs)
        if tweak is not None:
            mu, scale = tweak(s, mu, scale)
        symbols = quantize_symbols(slice_of(y, s, c), mu)  # decision 1: round(y - mu)
        index = build_indexes(scale)  # decision 2: the table row
        flat = channel_first_flat(symbols)  # (Cs*H4*W4,)
        y_encoder.add(flat, channel_first_flat(index), model.gc_table)
        crcs.append(symbols_crc(flat))
        if record is not None:
            record["y"] = y
            record.setdefault("symbols", []).append(symbols)
            record.setdefault("index", []).append(index)
            record.setdefault("mu", []).append(mu)
        return symbols

    run_slices(latent_means, latent_scales, p, c, quantize)
    return Compressed(z_encoder.finish(), y_encoder.finish(), tuple(y.shape[1:3]), symbols_crc(z_flat),
                      tuple(crcs), False)


def my_decompress(model, comp, tweak=None, check=True):
    """Compressed -> x_hat (1, 3, H, W) in [0, 1], as model.decompress; check=False skips the CRCs."""
    c, p = model.config, model.params
    H4, W4 = comp.y_shape
    z_shape = (1, H4 // 4, W4 // 4, c.N_z)
    z_flat = SymbolDecoder(comp.z_string).read(z_rows(model, z_shape), model.eb_table)
    z_hat = from_channel_first_flat(z_flat, z_shape).astype(np.float32) + model.medians  # (1, h, w, N_z)
    latent_means, latent_scales = h_mean_s(z_hat, p, c), h_scale_s(z_hat, p, c)
    y_decoder = SymbolDecoder(comp.y_string)

    def dequantize(s, mu, scale):
        if tweak is not None:
            mu, scale = tweak(s, mu, scale)
        index = channel_first_flat(build_indexes(scale))  # the decoder's own decision 2
        flat = y_decoder.read(index, model.gc_table)  # (Cs*H4*W4,)
        if check:
            check_symbols(flat, comp.slice_crcs[s], f"y slice {s}")  # raises DecoderMismatch
        return from_channel_first_flat(flat, mu.shape)  # -> (1, H4, W4, Cs)

    y_hat = run_slices(latent_means, latent_scales, p, c, dequantize)  # (1, H4, W4, M)
    return np.clip(g_s(y_hat, p, c), 0, 1).transpose(0, 3, 1, 2)  # (1, H, W, 3) -> (1, 3, H, W)


ref = model.compress(x)
record = {}
mine = my_compress(model, x, record=record)
# my_compress calls the library's functions in compress()'s order on the same layer and the same
# input: one code path, so its decisions, and with them the strings and CRCs, must be identical
assert mine == ref, "my_compress must equal model.compress: strings and CRCs"
correct = model.decompress(ref)  # (1, 3, H, W): what the encoder's machine decodes
# decoding the strings of one code path with the same functions: exact
np.testing.assert_array_equal(my_decompress(model, mine), correct)
print(f"my_compress == model.compress ({len(ref.z_string)} + {len(ref.y_string)} bytes), "
      f"my_decompress == model.decompress")

# %% [markdown]
# ### A threshold decision, one ulp wide
# **Rounding.** Take an element of slice 0 and suppose the network had produced a `mu` that
# puts `y − mu` right at a half-integer. Two adjacent float32 values of `mu` — one *ulp*
# (unit in the last place) apart — then give different symbols.

# %%
c = model.config
y_full = record["y"]  # (1, H4, W4, M): the encoder's y
mu0 = record["mu"][0]  # (1, H4, W4, Cs): slice 0's mu
e = np.unravel_index(np.argmax(np.abs(mu0)), mu0.shape)  # (batch, row, column, channel) with the largest |mu|
y_e = y_full[e]
k = np.rint(y_e - mu0[e])  # the symbol this element got
mu_b = np.float32(np.float64(y_e) - (k + 0.5))  # a mu that puts y - mu (nearly) on k + 0.5
candidates = [mu_b]  # consecutive float32 values around mu_b, one ulp apart
for _ in range(16):
    candidates = [np.nextafter(candidates[0], np.float32(-np.inf))] + candidates
    candidates.append(np.nextafter(candidates[-1], np.float32(np.inf)))
decisions = [np.rint(y_e - m) for m in candidates]  # float32 subtraction, as the encoder does it
i = next(i for i in range(len(decisions) - 1) if decisions[i] != decisions[i + 1])
mu_lo, mu_hi = candidates[i], candidates[i + 1]
assert np.nextafter(mu_lo, np.float32(np.inf)) == mu_hi  # neighbours: exactly one ulp apart
print(f"element e = {tuple(int(i) for i in e)} (batch, row, column, channel) of slice 0")
print(f"y = {str(y_e)}")  # str(): the shortest decimal that is this float32
print(f"mu = {str(mu_lo)}: y - mu = {str(y_e - mu_lo)} -> symbol {int(decisions[i])}")
print(f"mu = {str(mu_hi)}: y - mu = {str(y_e - mu_hi)} -> symbol {int(decisions[i + 1])}   (one ulp more)")

# %% [markdown]
# **Scale index.** A scale exactly on a table entry and the float32 right above it land in
# neighbouring rows — two different CDF tables:

# %%
for t in (0, 20):
    s_on = SCALE_TABLE[t]
    s_up = np.nextafter(s_on, np.float32(np.inf))
    print(f"scale {str(s_on)} -> index {build_indexes(np.array([s_on]))[0]},  "
          f"scale {str(s_up)} -> index {build_indexes(np.array([s_up]))[0]}")

# %% [markdown]
# ### One flipped symbol changes the rest of the stream
# Two encoders that differ only in that one-ulp `mu` of element e: the symbol differs, so
# y_hat of slice 0 differs by 1 there, and every slice that has slice 0 in its support sees
# it — their `mu`, `scale`, hence symbols and indexes change too. Both streams are valid
# (each decodes fine), but they are different streams.

# %%
def set_mu(value):
    def tweak(s, mu, scale):
        if s == 0:
            mu = mu.copy()
            mu[e] = value
        return mu, scale
    return tweak


rec_lo, rec_hi = {}, {}
comp_lo = my_compress(model, x, set_mu(mu_lo), rec_lo)
comp_hi = my_compress(model, x, set_mu(mu_hi), rec_hi)
for s in range(c.num_slices):
    dsym = int(np.sum(rec_lo["symbols"][s] != rec_hi["symbols"][s]))
    didx = int(np.sum(rec_lo["index"][s] != rec_hi["index"][s]))
    print(f"slice {s}: {dsym:4d} symbols and {didx:4d} indexes differ")
print("y strings equal:", comp_lo.y_string == comp_hi.y_string)
assert rec_lo["symbols"][0][e] != rec_hi["symbols"][0][e]

# %% [markdown]
# ### A drifted decoder
# Now the dangerous case. Element e's `scale` sits exactly on its table entry on the
# encoder's machine (the stream is then the library's own: the index does not change), and
# the decoder's machine computes it **one ulp larger**. The decoder picks the next row for
# that one symbol; the ANS state then follows a different path, and every symbol decoded
# after it is wrong.

# %%
index0 = record["index"][0]  # (1, H4, W4, Cs)
e = np.unravel_index(np.argmax(index0 < 63), index0.shape)  # the first element not in the last row
t_e = int(index0[e])
on_entry, one_ulp_up = SCALE_TABLE[t_e], np.nextafter(SCALE_TABLE[t_e], np.float32(np.inf))


def set_scale(value):
    def tweak(s, mu, scale):
        if s == 0:
            scale = scale.copy()
            scale[e] = value
        return mu, scale
    return tweak


encoded = my_compress(model, x, set_scale(on_entry))
assert encoded == ref  # on the entry, the index is unchanged: the library's own stream
print(f"element e: scale {str(on_entry)} (index {t_e}) on the encoder, {str(one_ulp_up)} "
      f"(index {build_indexes(np.array([one_ulp_up]))[0]}) on the decoder")
try:
    my_decompress(model, encoded, set_scale(one_ulp_up))
    raise AssertionError("the drifted decoder should have been stopped")
except (DecoderMismatch, CorruptFile) as err:  # see below for the second one
    print(f"with the CRC check:   {type(err).__name__}: {err}")

# %% [markdown]
# Usually the slice CRC stops the drifted decoder (`DecoderMismatch`). Sometimes the stream
# goes astray so badly that the entropy decoder notices first — an escape longer than any
# int32 needs — and raises `CorruptFile` even though the file is intact (its payload CRC
# passed). Either way no wrong image comes out. Without any check:

# %%
try:
    garbage = my_decompress(model, encoded, set_scale(one_ulp_up), check=False)
    print(f"without the check:    decodes to PSNR {psnr(x, garbage):.2f} dB "
          f"(the correct decode: {psnr(x, correct):.2f} dB)")
except CorruptFile as err:  # the stream can also go so wrong that the coder notices
    garbage = None
    print("without the check:    the entropy decoder itself gave up:", err)

if garbage is not None:
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].imshow(to_uint8(correct))
    ax[0].set_title("decoded on the encoder's machine")
    ax[1].imshow(to_uint8(garbage))
    ax[1].set_title("one scale one ulp larger, no CRC")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    lesson.show(fig, "drift")

# %% [markdown]
# ## 4. Defence 1: the portable float64 mode
# How likely is such a boundary case? The chance that some element's `scale` or `y − mu` lies
# within the drift δ of a threshold grows with δ. In float32, two implementations (another
# BLAS, summation order, a GPU) typically differ by δ ≈ 1e-6 relative; across the ~10⁵–10⁶
# elements of a photo that happens now and then. In **portable** mode the entropy-parameter
# path (h_mean_s, h_scale_s, the slice networks) runs in float64: δ ≈ 1e-15, and a collision
# becomes about a billion times less likely. (g_a and g_s stay float32: the encoder's y may
# differ between machines, that only changes *which* valid stream is written.)
#
# Measure δ here as the difference between the float32 and float64 computations of the same
# `mu`, `scale`, and count the elements closer than δ to a decision threshold:

# %%
taps32, taps64 = taps[2], {}  # §1's forward(): the same float32 mu and scale as compress()
model.compress(x, portable=True, taps=taps64)
mu32, mu64 = taps32["mu"], taps64["mu"]  # (1, H4, W4, M), float32 and float64
sc32, sc64 = taps32["scale"], taps64["scale"]  # raw scales: the threshold at 0.11 is on the raw value
delta_mu = np.abs(mu32 - mu64).max()
delta_sc = (np.abs(sc32 - sc64) / np.maximum(np.abs(sc64), 0.11)).max()  # relative drift
frac = np.abs((y_full - mu64) % 1.0 - 0.5)  # (1, H4, W4, M): distance of y - mu from a half-integer
table = SCALE_TABLE[:-1].astype(np.float64)  # (63,) the entries build_indexes compares with
gap = np.min(np.abs(sc64[..., None] - table) / table, axis=-1)  # (1, H4, W4, M, 63) -> (1, H4, W4, M)
print(f"float32 vs float64: max |mu diff| {delta_mu:.2e}, max relative scale diff {delta_sc:.2e}")
print(f"elements within that drift of a threshold: rounding {np.sum(frac < delta_mu)}, "
      f"scale index {np.sum(gap < delta_sc)} of {mu64.size}")
print(f"nearest any element comes: {frac.min():.2e} (rounding), {gap.min():.2e} relative (scale)")

# %% [markdown]
# With the library, portable mode is one flag; the file header records it and the decoder
# follows it (`header.portable`). Its `mu` and `scale` differ from float32 mode's only in the
# last bits, which almost never changes a decision — so the stream is usually the very same;
# what changes is how safely another machine decodes it:

# %%
data_p, stats_p = minstf.encode_image(model, image, portable=True)
decoded_p, header_p = minstf.decode_image(model, data_p)  # the decoder follows the header's flag
assert header_p.portable
data_f, stats_f, decoded_f = coded[2]  # §1: the same model and image in float32 mode
print(f"float32 mode: {stats_f.bpp:.4f} bpp, PSNR {psnr_uint8(image, decoded_f):.2f} dB")
print(f"portable:     {stats_p.bpp:.4f} bpp, PSNR {psnr_uint8(image, decoded_p):.2f} dB; "
      f"same y string as float32 mode: {bitstream.unpack(data_p)[2] == bitstream.unpack(data_f)[2]}")

# %% [markdown]
# ## 5. Defence 2: a CRC per slice
# The `.mstf` header stores a CRC32 of the z symbols and of each y slice's symbols, next to
# a CRC of the payload bytes and one of the header itself (`bitstream.py`). The two kinds
# answer different questions:
#
# * header and payload CRCs, checked before decoding: *is the file damaged?* → `CorruptFile`;
# * symbol CRCs, checked after each slice is decoded: *did this decoder get the encoder's
#   symbols?* In an intact file a mismatch can only mean drifted entropy parameters →
#   `DecoderMismatch` (exit code 7 on the command line), as in §3 — instead of a wrong image.
#
# Forge one: flip a bit of slice 0's CRC and re-pack the file (`pack` recomputes the header
# and payload checksums, so the file looks healthy):

# %%
data = data_f  # the float32-mode file of quality 2
header, z_bytes, y_bytes = bitstream.unpack(data)
forged = dataclasses.replace(header, y_crcs=(header.y_crcs[0] ^ 1,) + header.y_crcs[1:])
try:
    minstf.decode_image(model, bitstream.pack(forged, z_bytes, y_bytes))
    raise AssertionError("a forged CRC must not decode")
except DecoderMismatch as err:
    print("forged slice CRC ->", type(err).__name__ + ":", err)

# %% [markdown]
# Damage, for comparison, is reported as damage before anything is decoded:

# %%
for what, where in [("header", 12), ("payload", len(data) - 3)]:
    blob = bytearray(data)
    blob[where] ^= 0x10  # flip one bit
    try:
        minstf.decode_image(model, bytes(blob))
        raise AssertionError("a damaged file must not decode")
    except CorruptFile as err:
        print(f"flipped a {what} bit -> CorruptFile: {err}")

# %% [markdown]
# ## Summary
#
# * The codec's rate is measured as file bytes; `forward()`'s likelihoods estimate it closely
#   and can be drawn as a bits-per-pixel map (each latent position covers 16×16 pixels).
# * Decoding repeats the encoder's discrete decisions; `round(y − mu)` is the encoder's alone,
#   but the scale index is computed on both sides. A one-ulp difference at a table boundary
#   sends the decoder into the wrong table and the rest of the stream into garbage.
# * Portable mode computes the entropy parameters in float64, making such collisions
#   vanishingly rare; the per-slice CRCs make any that remain loud (`DecoderMismatch`).
#
# ## Exercises
#
# 1. Pick element e in the *last* slice instead of slice 0 in the drifted-decoder demo. Which
#    slices decode correctly now, and why is the error still caught?
#    *Hint:* slices decode in order and only later slices depend on earlier ones, so every slice
#    before the last is right; the last slice's CRC in the header catches it.
# 2. Add the z bits to the bit-allocation map separately: where in the photo does the side
#    information matter most?
#    *Hint:* `-np.log2(outs[2]["likelihoods"]["z"])` summed over channels is `(zh, zw)`; one z
#    position covers 64×64 pixels (`np.kron` with a 64×64 block of ones, divided by 4096).
# 3. Simulate a float32 "other machine" honestly: compute `mu`, `scale` with the slice networks
#    in float64 and cast to float32, and decode a float32-mode stream with them. Did any index
#    change? Repeat on 64×64 crops until one does.
#    *Hint:* `model.entropy_params(True)` gives float64 weights; pass a `tweak` to `my_decompress`
#    that replaces `mu, scale` with the float64 slice networks' output cast to float32.
