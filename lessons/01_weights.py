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
# # Lesson 1 — The weights
#
# A trained network is a dictionary of named arrays. minstf keeps upstream PyTorch's names and
# layouts unchanged, so any array can be compared with a printout of the PyTorch model:
#
# * `Linear(in, out)`: weight `(out, in)`, bias `(out,)`, and $y = x W^\top + b$;
# * `Conv2d(in, out, k)`: weight `(out, in, k, k)`, bias `(out,)`;
# * `LayerNorm(C)`: weight and bias `(C,)`.
#
# `minstf.keys.state_dict_spec(config)` lists every key of upstream's `state_dict()` with its
# shape, in upstream's order; `param_spec` keeps the learned parameters. This lesson counts them,
# compares the upstream model with the small one minstf ships, and then reads a weight file
# byte by byte.

# %%
import hashlib
import json
import math
from collections import defaultdict

import _lesson as lesson  # lessons/_lesson.py: fast mode, the sample photo, figures
import matplotlib.pyplot as plt
import numpy as np

import minstf
from minstf import STFConfig
from minstf.keys import TABLE_BUFFERS, param_spec, state_dict_spec
from minstf.weights import fingerprint, read_safetensors


# %% [markdown]
# ## Every key of upstream STF
#
# `STFConfig()` is upstream's `SymmetricalTransFormer()` with its default arguments. Its state
# dict has 779 entries: 743 learned parameters and 36 buffers (constants such as the relative
# position index of every attention block, and the entropy coder's tables).

# %%
full = STFConfig()
spec = state_dict_spec(full)
params = param_spec(full)
print(f"{len(spec)} keys: {len(params)} parameters, {len(spec) - len(params)} buffers")
print(f"{'key':52s} {'shape':18s} {'dtype':8s} kind")
for k in spec[:18]:  # PatchEmbed and the first Swin block
    print(f"{k.key:52s} {str(k.shape):18s} {k.dtype:8s} {k.kind}")
assert (len(spec), len(params)) == (779, 743)

# %% [markdown]
# ## Parameter counts per module
#
# Grouping the parameters by the first part of their key gives the table of the spec
# (docs/weights.md §1, "Parameter totals per top-level module"); the total must be
# upstream's 99,855,639.

# %%
def count_by_module(config):
    """{top-level module: number of parameter values} in upstream order."""
    counts = defaultdict(int)
    for k in param_spec(config):
        counts[k.key.split(".")[0]] += math.prod(k.shape)
    return dict(counts)


WEIGHTS_MD = {  # docs/weights.md §1, "Parameter totals per top-level module"
    "patch_embed": 720, "layers": 6_894_858, "syn_layers": 6_893_514, "end_conv": 231_891,
    "h_a": 4_397_472, "h_mean_s": 9_749_568, "h_scale_s": 9_749_568,
    "cc_mean_transforms": 20_384_064, "cc_scale_transforms": 20_384_064,
    "lrp_transforms": 21_158_208, "entropy_bottleneck": 11_712,
}
counts = count_by_module(full)
total = sum(counts.values())
for module, n in counts.items():
    print(f"{module:20s} {n:12,d} {100 * n / total:5.1f} %")
print(f"{'total':20s} {total:12,d}")
assert counts == WEIGHTS_MD  # integers: exact
assert total == 99_855_639

# %% [markdown]
# Surprise: the Swin transforms $g_a$ (`layers`) and $g_s$ (`syn_layers`) are only 14 % of
# the model. Most parameters sit in the entropy model: the hyperprior synthesis and the 36
# small convolutional networks that predict, slice by slice, the mean, the scale and the latent
# residual (`cc_*_transforms`, `lrp_transforms`).
#
# Two formulas explain every number. A convolution with $I$ inputs, $O$ outputs and a
# $k \times k$ kernel has $O (I k^2 + 1)$ parameters. A Swin block of width $C$ with $n_H$ heads
# and window size $w_s$ has
#
# $$ \underbrace{2C}_{\text{norm1}} + \underbrace{(2w_s-1)^2 n_H}_{\text{bias table}}
#  + \underbrace{3C^2 + 3C}_{\text{qkv}} + \underbrace{C^2 + C}_{\text{proj}}
#  + \underbrace{2C}_{\text{norm2}} + \underbrace{4C^2 + 4C}_{\text{fc1}}
#  + \underbrace{4C^2 + C}_{\text{fc2}} = 12 C^2 + 13 C + (2 w_s - 1)^2 n_H. $$

# %%
def swin_block_params(C, heads, ws):
    return 12 * C * C + 13 * C + (2 * ws - 1) ** 2 * heads


def conv_params(cin, cout, k=3):
    return cout * (cin * k * k + 1)


def spec_count(config, prefix):
    return sum(math.prod(k.shape) for k in param_spec(config) if k.key.startswith(prefix))


for i, (C, heads) in enumerate(zip(full.stage_dims, full.num_heads)):
    n = spec_count(full, f"layers.{i}.blocks.0.")
    print(f"layers.{i}.blocks.0  C={C:3d} nH={heads:2d}: {n:9,d} parameters")
    assert n == swin_block_params(C, heads, full.window_size)
# the first mean network of slice 0 sees the 384 latent means: 384 -> 224 -> 176 -> 128 -> 64 -> 32
widths = (full.M,) + full.slice_hidden + (full.slice_channels,)
n = spec_count(full, "cc_mean_transforms.0.")
print(f"cc_mean_transforms.0  {' -> '.join(map(str, widths))}: {n:,d} parameters")
assert n == sum(conv_params(a, b) for a, b in zip(widths, widths[1:]))

# %% [markdown]
# ## The small model minstf ships
#
# Upstream STF is 400 MB of float32 per rate point. The weights shipped in `weights/` are a
# small STF that runs through exactly the same code (four stages with shifted windows,
# PatchMerging/PatchSplit, hyperprior, slices with the support cap, LRP); only widths and depths
# differ. Its configuration is stored inside the weight file.

# %%
model = minstf.load_model()
small = model.config
for field, default in full.to_dict().items():
    value = small.to_dict()[field]
    print(f"{field:20s} upstream {str(default):22s} shipped {value}{'' if value == default else '   <-'}")

# %%
small_counts = count_by_module(small)
assert small_counts.keys() == counts.keys()
assert sum(small_counts.values()) == sum(a.size for a in model.params.values())
print(f"{'module':20s} {'upstream':>12s} {'shipped':>10s}")
for module in counts:
    print(f"{module:20s} {counts[module]:12,d} {small_counts[module]:10,d}")
print(f"{'total':20s} {total:12,d} {sum(small_counts.values()):10,d}")

# %%
fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
names = list(counts)[::-1]
ypos = np.arange(len(names))
ax.barh(ypos + 0.2, [counts[m] for m in names], height=0.4, label="upstream STFConfig()")
ax.barh(ypos - 0.2, [small_counts[m] for m in names], height=0.4, label=f"shipped (e={small.embed_dim})")
ax.set_yticks(ypos, names)
ax.set_xscale("log")
ax.set_xlabel("parameters (log scale)")
ax.legend()
lesson.show(fig, "params_per_module")

# %% [markdown]
# ## A weight file, byte by byte
#
# A minstf weight file is a [safetensors](https://github.com/huggingface/safetensors) file:
#
# ```
# 8 bytes   n = length of the header, unsigned little-endian
# n bytes   JSON header: {"<key>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
#                         "__metadata__": {...}}
# the rest  the data section: tensor <key> is data[begin:end], C order, little-endian
# ```
#
# We read the shipped file with nothing but `open`, `json` and `np.frombuffer`.

# %%
path = minstf.zoo.default_weights()
raw = path.read_bytes()
n = int.from_bytes(raw[:8], "little")
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
metadata = header.pop("__metadata__")
print(f"{path.name}: {len(raw):,} bytes = 8 + {n:,} header + {len(data):,} data")
print(raw[8:8 + 160].decode(), "…")

# %%
for key in list(header)[:5]:
    print(key, header[key])
print("…")
print("metadata:", {k: (v[:60] + "…" if len(v) > 60 else v) for k, v in metadata.items()})

# %% [markdown]
# The dtype names map to NumPy dtypes; a tensor is its byte range reinterpreted and reshaped.
# The file stores the 743 parameters of the config (upstream names) and the seven entropy
# coder tables; the constant buffers (e.g. `relative_position_index`) are derived, not stored.

# %%
DTYPES = {"F32": "<f4", "I32": "<i4", "I64": "<i8"}


def tensor_by_hand(entry):
    begin, end = entry["data_offsets"]
    return np.frombuffer(data[begin:end], dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])


by_hand = {key: tensor_by_hand(entry) for key, entry in header.items()}
w = by_hand["layers.0.blocks.0.attn.qkv.weight"]  # Linear(C, 3C): (out, in) = (3C, C)
print("layers.0.blocks.0.attn.qkv.weight", w.shape, w.dtype, w.ravel()[:4])

tensors, meta = read_safetensors(path)  # the library's reader
assert meta == metadata and tensors.keys() == by_hand.keys()
for key in tensors:
    np.testing.assert_array_equal(tensors[key], by_hand[key])
assert set(by_hand) == {k.key for k in param_spec(small)} | set(TABLE_BUFFERS)
assert STFConfig.from_dict(json.loads(metadata["config"])) == small
print(f"{len(by_hand)} tensors read by hand = read_safetensors ({len(TABLE_BUFFERS)} of them tables)")

# %% [markdown]
# The byte ranges tile the data section exactly: no gaps, no overlaps (minstf's reader checks
# this before it allocates anything, because a weight file is untrusted input).

# %%
ranges = sorted(tuple(e["data_offsets"]) for e in header.values())
assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
assert all(a_end == b_begin for (_, a_end), (b_begin, _) in zip(ranges, ranges[1:]))

# %% [markdown]
# ## The fingerprint
#
# A weight file is named by the SHA-256 of its numbers (the metadata is not hashed). For each
# tensor in sorted key order, hash one JSON record line `[key, dtype, shape, nbytes]` and then
# the tensor's raw bytes. `.mstf` files carry the first 16 bytes of it (lesson 0), so a file is
# never decoded with the wrong weights.

# %%
h = hashlib.sha256()
for key in sorted(by_hand):
    entry = header[key]
    a = by_hand[key]
    record = json.dumps([key, entry["dtype"], entry["shape"], a.nbytes], separators=(",", ":")) + "\n"
    h.update(record.encode())
    h.update(a.tobytes())
print(record.strip(), "  <- the last record line")
print("by hand        ", h.hexdigest())
print("metadata       ", metadata["fingerprint"])
print("fingerprint()  ", fingerprint(tensors))
assert h.hexdigest() == metadata["fingerprint"] == fingerprint(tensors) == model.fingerprint

# %%
changed = dict(tensors)
changed["end_conv.2.bias"] = tensors["end_conv.2.bias"].copy()
changed["end_conv.2.bias"][0] = np.nextafter(changed["end_conv.2.bias"][0], np.float32(1))  # one ulp
print("one ulp of one bias later:", fingerprint(changed))
assert fingerprint(changed) != model.fingerprint

# %% [markdown]
# ## Summary
#
# * Keys and layouts are upstream PyTorch's; `state_dict_spec(config)` lists them for any
#   configuration. Upstream STF has 99,855,639 parameters, 86 % of them in the entropy model.
# * Parameter counts follow from two formulas: $O(Ik^2+1)$ per convolution and
#   $12C^2 + 13C + (2w_s-1)^2 n_H$ per Swin block.
# * A minstf weight file is safetensors: an 8-byte length, a JSON header with dtypes, shapes
#   and byte ranges, and the raw little-endian data; its fingerprint is a SHA-256 of the tensors.
#
# ## Exercises
#
# 1. How many parameters would STF have with `window_size=8`? Which modules change, and why
#    so little?
#    *Hint:* `count_by_module(STFConfig(window_size=8))`; only the bias tables, $(2w_s-1)^2 n_H$ each.
# 2. Derive the parameter count of `lrp_transforms` for upstream STF by hand and check it
#    against the table.
#    *Hint:* `minstf.keys.slice_in_channels` gives each slice network's input width; then
#    `conv_params` over the widths `slice_hidden`, as for `cc_mean_transforms.0` above.
# 3. Write a weight file with `minstf.weights.write_safetensors`, change one byte in its data
#    section, and see what `minstf.weights.load_weights` says.
#    *Hint:* the stored fingerprint no longer matches the tensors (`verify=True` checks it).
