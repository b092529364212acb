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
# # Lesson 10 — Cross-checking against PyTorch
#
# How do we know minstf computes STF correctly? Tests of single functions catch many bugs,
# but not a misread of the paper's block diagram. The strongest check is a second,
# **independent** implementation of the same spec: `minstf/mirror/stf_torch.py` is STF
# written in PyTorch from the spec (docs/architecture.md, docs/entropy.md; the same spec minstf was written from,
# not from minstf's code), with upstream's parameter names and layouts. Load the same weights
# into both, feed the same image, and compare every stage:
#
# * continuous tensors **with a tolerance**: two float32 programs that sum in different
#   orders (other GEMM kernels, other convolution algorithms) disagree in the last bits;
# * discrete outputs — symbols, scale indexes — **exactly**.
#
# To know which tolerance is right we also need the *true* values. minstf's functions run in
# any float dtype, so we compute a float64 reference with minstf itself: then we can see
# that both float32 programs are equally close to the truth, and their difference is float32
# noise, not a bug. That part needs no torch; the comparison with the mirror is skipped
# (with a message) where torch is not installed.

# %%
import time

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo
import numpy as np

import minstf
from minstf import entropy_models as em
from minstf.image import to_float
from minstf.slices import run_slices, slice_of
from minstf.transforms import g_a, g_s, h_a, h_mean_s, h_scale_s

FAST = lesson.FAST

try:
    import torch
except ImportError:
    torch = None
    print("PyTorch is not installed, so the comparison with the torch mirror is skipped.\n"
          "Install it with  python3 -m pip install -e '.[torch]'  and run this lesson again.")

model = minstf.load_model(quality=2)
cfg, params = model.config, model.params
image = lesson.sample_image((slice(0, 128), slice(0, 192)) if FAST else None)  # uint8 (H, W, 3)
x = to_float(image)  # (1, 3, H, W) float32
print(model.name, "| image", image.shape)

# %% [markdown]
# ## 1. How big is float32 noise?
# float32 keeps 24 significant bits: each operation rounds with a relative error up to
# $u = 2^{-24} \approx 6\cdot10^{-8}$. A dot product of length $n$ accumulates up to
# $n u \sum |a_i b_i|$ in the worst case, about $\sqrt{n}\,u$ relative in practice, and the
# network stacks dozens of them (attention, MLPs, convolutions with $n = 9 \cdot C_{in}$).
# We expect relative differences of $10^{-7} \dots 10^{-5}$ — and define "relative" against the
# tensor's largest magnitude, since elements near zero have no meaningful relative error.
#
# An llm.c-style checker: one line per tensor, a verdict, and a hint when it fails.

# %%
def relative_diff(name, ours, ref):
    """max |ours - ref| / max |ref|, in float64; the arrays must have the same layout."""
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape} (a layout mix-up?)"
    a, b = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(b).max()
    return np.abs(a - b).max() / scale if scale > 0 else np.abs(a - b).max()


def check_tensor(name, ours, ref, rtol):
    """One line per tensor: name, shape, max|ref|, max|diff|, relative, OK / NOT OK (with a hint)."""
    rel = relative_diff(name, ours, ref)
    diff = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64)).max()
    verdict = "OK" if rel <= rtol else "NOT OK  <- first stage to look at"
    print(f"{name:16s} {str(ours.shape):18s} {np.abs(ref).max():9.3g} {diff:10.3g} {rel:9.2e}  {verdict}")
    return rel <= rtol


# %% [markdown]
# ## 2. minstf in float32, and a float64 reference
# `model.forward(x, taps)` records every stage (lessons 5–7 introduced them). Then the same
# pipeline with float64 weights, written out with minstf's transforms. The discrete steps are
# **teacher-forced**: the float64 run uses the float32 run's z and y symbols (through
# `run_slices`' `quantize` hook), so that one symbol decided differently at a rounding
# boundary cannot make everything downstream incomparable. We count such decisions
# separately.

# %%
t0 = time.perf_counter()
taps32 = {}
out32 = model.forward(x, taps=taps32)
t_minstf = time.perf_counter() - t0
z_sym32 = np.rint(taps32["z"] - model.medians)  # (1, h, w, N_z) float
y_sym32 = np.rint(taps32["y"] - taps32["mu"])  # (1, H4, W4, M) float

p64 = {k: v.astype(np.float64) for k, v in params.items()}
med64 = model.medians.astype(np.float64)
taps64 = {}
y64 = g_a(x.transpose(0, 2, 3, 1).astype(np.float64), p64, cfg, taps64)  # (1, H, W, 3) -> (1, H4, W4, M)
z64 = h_a(y64, p64, cfg)  # -> (1, h, w, N_z)
z_hat64 = z_sym32 + med64  # teacher-forced z symbols
lm64, ls64 = h_mean_s(z_hat64, p64, cfg), h_scale_s(z_hat64, p64, cfg)  # (1, H4, W4, M) each
y_hat64 = run_slices(lm64, ls64, p64, cfg, quantize=lambda s, mu, scale: slice_of(y_sym32, s, cfg), taps=taps64)
x_hat64 = g_s(y_hat64, p64, cfg, taps64)  # (1, H, W, 3)
taps64.update(y=y64, z=z64, z_hat=z_hat64, latent_means=lm64, latent_scales=ls64, y_hat=y_hat64)

flips_z = int(np.sum(np.rint(z64 - med64) != z_sym32))
flips_y = int(np.sum(np.rint(y64 - taps64["mu"]) != y_sym32))
flips_i = int(np.sum(em.build_indexes(taps64["scale"]) != em.build_indexes(taps32["scale"])))
print(f"float64 would decide differently: {flips_z} z symbols, {flips_y} y symbols, {flips_i} scale indexes "
      f"(of {z_sym32.size}, {y_sym32.size}, {y_sym32.size})")

# %% [markdown]
# The stages, in data-flow order, each in minstf's layout: tokens `(B, L, C)` for the Swin
# stages, channels-last maps `(B, H, W, C)` for the latents, NCHW for the image and the
# likelihoods (as `forward()` returns them). Likelihoods are compared as bits, $-\log_2 p$.

# %%
STAGES = (["patch_embed"] + [f"enc{i}_out" for i in range(len(cfg.depths))]
          + ["y", "z", "z_hat", "latent_means", "latent_scales", "mu", "scale", "y_hat_pre_lrp", "lrp_raw",
             "y_hat"] + [f"dec{i}_out" for i in range(len(cfg.depths))] + ["x_hat", "bits_z", "bits_y"])


def minstf_stages(taps, x_hat, lik_z, lik_y):
    d = {name: taps[name] for name in STAGES if name in taps}
    d["x_hat"] = x_hat  # (1, 3, H, W)
    d["bits_z"] = -np.log2(lik_z)  # (1, N_z, h, w)
    d["bits_y"] = -np.log2(lik_y)  # (1, M, H4, W4)
    return d


lik_z64 = np.maximum(em.eb_likelihood(z64, model.eb), 1e-9).transpose(0, 3, 1, 2)  # (1, h, w, N_z) -> NCHW
lik_y64 = em.gc_likelihood(y64, taps64["scale"], taps64["mu"]).transpose(0, 3, 1, 2)  # -> (1, M, H4, W4)
ours = minstf_stages(taps32, out32["x_hat"], out32["likelihoods"]["z"], out32["likelihoods"]["y"])
truth = minstf_stages(taps64, x_hat64.transpose(0, 3, 1, 2), lik_z64, lik_y64)

RTOL = 1e-4  # float32 noise is 1e-7 .. 1e-5 relative; a real bug is usually >= 1e-2
print("minstf float32 against minstf float64 (teacher-forced)")
print(f"{'stage':16s} {'shape':18s} {'max|ref|':>9s} {'max|diff|':>10s} {'relative':>9s}  verdict")
ok = [check_tensor(name, ours[name], truth[name], RTOL) for name in STAGES]
assert all(ok)

# %% [markdown]
# Read the `relative` column: a few units of $u$ at every stage, and it does not pile up
# through the dozens of layers — LayerNorm re-normalises every block, residual connections add
# small corrections to large values, and rounding errors of independent sums mostly cancel.
# float32 noise looks like this: small, spread evenly, nothing structural.
#
# ## 3. The torch mirror, stage by stage
# `STFTorch(config)` builds the model with upstream's module names; `load_params(params)`
# copies minstf's arrays in, asserting that the key sets match and every shape agrees (no
# transposes: both keep PyTorch layouts). `taps(x)` runs an eval-mode forward and returns
# every stage under the same names, as NumPy arrays, maps in NCHW.

# %%
def torch_stages(t):
    """The mirror's taps in minstf's layouts (latent maps NCHW -> channels-last)."""
    nhwc = {"y", "z", "z_hat", "latent_means", "latent_scales", "mu", "scale", "y_hat_pre_lrp", "lrp_raw", "y_hat"}
    d = {name: (t[name].transpose(0, 2, 3, 1) if name in nhwc else t[name])  # (B, C, H, W) -> (B, H, W, C)
         for name in STAGES if name in t}
    d["bits_z"] = -np.log2(t["lik_z"])
    d["bits_y"] = -np.log2(t["lik_y"])
    return d


if torch is not None:
    from minstf.mirror.stf_torch import STFTorch

    torch.set_num_threads(2)
    mirror = STFTorch(cfg).load_params(params).eval()
    n_params = sum(p.numel() for p in mirror.parameters())
    print(f"STFTorch: {n_params:,} parameters, loaded from minstf's {len(params)} arrays")
    t0 = time.perf_counter()
    tt = mirror.taps(x)
    t_torch = time.perf_counter() - t0
    theirs = torch_stages(tt)
    print(f"forward: minstf {t_minstf:.2f} s, torch {t_torch:.2f} s")

# %% [markdown]
# First the decisions, exactly. A disagreement is only acceptable where the two programs
# stood on a rounding boundary — then the value they rounded sits within float32 noise of a
# half-integer (or the scale within noise of a table entry). We print how close each one was.

# %%
if torch is not None:
    sym_t = tt["symbols"].transpose(0, 2, 3, 1)  # (1, M, H4, W4) -> (1, H4, W4, M) int32
    idx_t = tt["index"].transpose(0, 2, 3, 1)
    z_sym_t = np.rint(tt["z"].transpose(0, 2, 3, 1) - model.medians)  # (1, N_z, h, w) -> (1, h, w, N_z)
    idx32 = em.build_indexes(taps32["scale"])
    for what, a, b in [("z symbols", z_sym32, z_sym_t), ("y symbols", y_sym32, sym_t), ("scale indexes", idx32, idx_t)]:
        print(f"{what:14s}: {int(np.sum(a != b))} of {a.size} differ")
    flipped = y_sym32 != sym_t  # (1, H4, W4, M)
    for e in (tuple(int(i) for i in e) for e in np.argwhere(flipped)[:5]):
        print(f"  y element {e}: minstf y - mu = {str(taps32['y'][e] - taps32['mu'][e])} -> {int(y_sym32[e])}, "
              f"torch y - mu = {str(tt['y'].transpose(0, 2, 3, 1)[e] - tt['mu'].transpose(0, 2, 3, 1)[e])} -> "
              f"{int(sym_t[e])}")
    near_half = np.abs((taps32["y"] - taps32["mu"]) % 1.0 - 0.5)  # distance from a rounding boundary
    s = np.maximum(taps32["scale"], np.float32(0.11)).astype(np.float64)
    near_entry = np.min(np.abs(s[..., None] - em.SCALE_TABLE[:-1]) / em.SCALE_TABLE[:-1], axis=-1)
    assert np.all(near_half[flipped] < 1e-4), "a y symbol differs away from any rounding boundary: a bug"
    assert np.all(near_entry[idx32 != idx_t] < 1e-4), "an index differs away from any table entry: a bug"
    lesson.rounding_agrees("z symbols, minstf vs torch", z_sym32, z_sym_t, taps32["z"] - model.medians, noise=1e-4)
    FLIPPED = bool(flipped.any())

# %% [markdown]
# Now every continuous stage, with three comparisons side by side: minstf against torch (the
# verdict), and each of them against the float64 truth. If they agree with each other and both
# agree with the truth to the same order, the difference is float32 noise. (Had a y symbol
# flipped above, the stages after it would not be comparable without teacher-forcing the
# mirror; the table would say so.)

# %%
if torch is not None:
    downstream = set(STAGES[STAGES.index("mu"):]) - {"bits_z"}  # what a flipped y symbol can reach
    print(f"{'stage':16s} {'shape':18s} {'minstf-torch':>13s} {'minstf-f64':>11s} {'torch-f64':>10s}  verdict")
    ok = []
    for name in STAGES:
        if FLIPPED and name in downstream:
            print(f"{name:16s} {str(ours[name].shape):18s} not comparable after a symbol flip")
            continue
        rel = relative_diff(name, ours[name], theirs[name])
        rel_m64, rel_t64 = relative_diff(name, ours[name], truth[name]), relative_diff(name, theirs[name], truth[name])
        ok.append(rel <= RTOL)
        print(f"{name:16s} {str(ours[name].shape):18s} {rel:13.2e} {rel_m64:11.2e} {rel_t64:10.2e}  "
              f"{'OK' if ok[-1] else 'NOT OK'}")
    assert all(ok), "minstf and the torch mirror disagree beyond float32 noise"

# %% [markdown]
# Reading the table: the three columns have the same order of magnitude at every stage.
# minstf and torch are each about as far from the float64 truth as from each other, so
# neither is "the reference" — both are correct float32 programs. A bug looks different: a
# wrong GELU, a mask of −∞ instead of −100, a PatchMerging in the wrong order shows up as a
# relative difference of $10^{-3}$ to $1$ from the first stage that contains it onward.
#
# ## Summary
#
# * Cross-checking against an independent implementation finds the bugs unit tests cannot:
#   misread architecture, wrong order, wrong constants.
# * Compare continuous tensors with a relative tolerance (here 1e-4 of the tensor's largest
#   magnitude), discrete decisions exactly — allowing a disagreement only where both sides
#   stood on a rounding boundary.
# * A float64 run of the same code, teacher-forced on the float32 symbols, tells you what the
#   float32 noise is, and so what tolerance is honest.
#
# ## Exercises
#
# 1. Plant a bug in the mirror: `for m in mirror.modules(): if isinstance(m, torch.nn.GELU):
#    m.approximate = "tanh"` (picoGPT's GELU). Which stage is the first NOT OK, and by how much?
#    *Hint:* the tanh form differs from the erf form by up to 4.7e-4 (near |x| ≈ 2.7), far above
#    float32 noise: expect the first encoder block to fail.
# 2. Run the mirror in float64 (`STFTorch(cfg).double()`, `load_params`, input as float64) and
#    compare it with the float64 reference: how close are two float64 programs?
#    *Hint:* use `relative_diff` as above; expect ~1e-15 .. 1e-13, the float64 analogue of the
#    float32 table (docs/determinism.md §2 relies on it).
# 3. Run on the full-size photo and on a 64×64 crop. Does the relative error at `x_hat` depend
#    on the image size? Why (think of the attention and convolution sums)?
#    *Hint:* the sums inside each layer have the same lengths at any image size (windows of 16
#    tokens, 3×3 kernels); only the number of elements, so the chance of an outlier, grows.
