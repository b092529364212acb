"""Every state-dict key of the STF model, with its shape, in upstream order.

`state_dict_spec(config)` is the single source of truth for key names and
shapes: the weight loader validates against it, the synthetic-weight recipe
walks it, and the PyTorch mirror must produce exactly these keys. For the
default configuration it reproduces `spec/keys-stf.tsv` row for row.

`config_from_shapes` runs the other way: the one configuration whose keys and
shapes a set of tensors has (a minstf weight file's metadata must name exactly it).
`wacnn_state_dict_spec` and `wacnn_config_from_shapes` are the same pair for WACNN (`cnn`).
`constant_buffers` gives the values of the constant buffers that checkpoints carry and
minstf derives (relative_position_index, from minstf/reference/swin.py; GDN's
reparametrisation constants), so that a converter can check them.

Layouts are PyTorch's: Linear (out, in), Conv2d (out, in, kH, kW).
"""
import math
from dataclasses import dataclass

import numpy as np

from .config import MAX_STAGES, STFConfig, WACNNConfig
from .reference.swin import relative_position_index  # the formula lives with the attention
from .reference.wacnn import BETA_MIN, PEDESTAL  # GDN's reparametrisation constants

# Entropy-model buffers whose shape is only known after the CDF tables are built
# (empty in a freshly constructed upstream model and in train.py checkpoints).
TABLE_BUFFERS = (
    "entropy_bottleneck._offset",
    "entropy_bottleneck._quantized_cdf",
    "entropy_bottleneck._cdf_length",
    "gaussian_conditional._offset",
    "gaussian_conditional._quantized_cdf",
    "gaussian_conditional._cdf_length",
    "gaussian_conditional.scale_table",
)


@dataclass(frozen=True)
class KeySpec:
    key: str
    shape: tuple
    dtype: str  # "float32" | "int32" | "int64"
    kind: str  # "param" | "buffer"


def _swin_block(prefix, C, heads, ws, mlp_ratio):
    hidden = int(C * mlp_ratio)
    P, B = "param", "buffer"
    return [
        KeySpec(f"{prefix}.norm1.weight", (C,), "float32", P),
        KeySpec(f"{prefix}.norm1.bias", (C,), "float32", P),
        KeySpec(f"{prefix}.attn.relative_position_bias_table", ((2 * ws - 1) ** 2, heads), "float32", P),
        KeySpec(f"{prefix}.attn.relative_position_index", (ws * ws, ws * ws), "int64", B),
        KeySpec(f"{prefix}.attn.qkv.weight", (3 * C, C), "float32", P),
        KeySpec(f"{prefix}.attn.qkv.bias", (3 * C,), "float32", P),
        KeySpec(f"{prefix}.attn.proj.weight", (C, C), "float32", P),
        KeySpec(f"{prefix}.attn.proj.bias", (C,), "float32", P),
        KeySpec(f"{prefix}.norm2.weight", (C,), "float32", P),
        KeySpec(f"{prefix}.norm2.bias", (C,), "float32", P),
        KeySpec(f"{prefix}.mlp.fc1.weight", (hidden, C), "float32", P),
        KeySpec(f"{prefix}.mlp.fc1.bias", (hidden,), "float32", P),
        KeySpec(f"{prefix}.mlp.fc2.weight", (C, hidden), "float32", P),
        KeySpec(f"{prefix}.mlp.fc2.bias", (C,), "float32", P),
    ]


def _conv(prefix, cin, cout, k=3):
    return [
        KeySpec(f"{prefix}.weight", (cout, cin, k, k), "float32", "param"),
        KeySpec(f"{prefix}.bias", (cout,), "float32", "param"),
    ]


def _linear_norm(prefix, cin, cout, norm_dim):
    """PatchMerging / PatchSplit: reduction (no bias) before norm in key order."""
    return [
        KeySpec(f"{prefix}.reduction.weight", (cout, cin), "float32", "param"),
        KeySpec(f"{prefix}.norm.weight", (norm_dim,), "float32", "param"),
        KeySpec(f"{prefix}.norm.bias", (norm_dim,), "float32", "param"),
    ]


def slice_network_widths(config: STFConfig, in_channels: int):
    """(in, h0, h1, h2, h3, Cs): the five 3x3 convolutions of one slice network."""
    return (in_channels,) + tuple(config.slice_hidden) + (config.slice_channels,)


def slice_in_channels(config: STFConfig, s: int, kind: str):
    """Input channels of slice network s: latent params + the support slices."""
    Cs, k = config.slice_channels, min(s, config.max_support_slices)
    if kind == "lrp":  # LRP also sees the current slice
        k = min(s + 1, config.max_support_slices + 1)
    return config.M + Cs * k


def _slice_networks(config):
    """The channel-conditional slice networks' keys (both models): mean, scale, LRP, per slice."""
    spec = []
    for kind, name in (("mean", "cc_mean_transforms"), ("scale", "cc_scale_transforms"),
                       ("lrp", "lrp_transforms")):
        for s in range(config.num_slices):
            widths = slice_network_widths(config, slice_in_channels(config, s, kind))
            for j in range(5):
                spec += _conv(f"{name}.{s}.{2 * j}", widths[j], widths[j + 1])
    return spec


def state_dict_spec(config: STFConfig = STFConfig()):
    """All keys of the upstream state dict for `config`, in upstream order."""
    c, ws = config, config.window_size
    spec = []
    e, p = c.embed_dim, c.patch_size
    spec += _conv("patch_embed.proj", c.in_chans, e, k=p)
    spec += [KeySpec("patch_embed.norm.weight", (e,), "float32", "param"),
             KeySpec("patch_embed.norm.bias", (e,), "float32", "param")]
    last = len(c.depths) - 1
    # analysis stages: blocks, then PatchMerging (C -> 2C, norm over 4C)
    for i, (depth, heads, C) in enumerate(zip(c.depths, c.num_heads, c.stage_dims)):
        for b in range(depth):
            spec += _swin_block(f"layers.{i}.blocks.{b}", C, heads, ws, c.mlp_ratio)
        if i < last:
            spec += _linear_norm(f"layers.{i}.downsample", 4 * C, 2 * C, 4 * C)
    # synthesis stages: reversed widths, PatchSplit (norm over C, C -> 2C)
    for i, (depth, heads, C) in enumerate(zip(c.depths[::-1], c.num_heads[::-1], c.stage_dims[::-1])):
        for b in range(depth):
            spec += _swin_block(f"syn_layers.{i}.blocks.{b}", C, heads, ws, c.mlp_ratio)
        if i < last:
            spec += _linear_norm(f"syn_layers.{i}.downsample", C, 2 * C, C)
    spec += _conv("end_conv.0", e, e * p * p, k=5)
    spec += _conv("end_conv.2", e, c.in_chans, k=3)
    # hyperprior
    hw = c.hyper_widths  # (8e, 7e, 6e, 5e, 4e)
    for j, (cin, cout) in enumerate(zip((c.M,) + hw[:-1], hw)):
        spec += _conv(f"h_a.{2 * j}", cin, cout)
    for name in ("h_mean_s", "h_scale_s"):
        rev = hw[::-1]  # (4e, 5e, 6e, 7e, 8e)
        spec += _conv(f"{name}.0", rev[0], rev[1])
        spec += _conv(f"{name}.2.0", rev[1], rev[2] * 4)  # subpel conv, PixelShuffle(2)
        spec += _conv(f"{name}.4", rev[2], rev[3])
        spec += _conv(f"{name}.6.0", rev[3], rev[4] * 4)
        spec += _conv(f"{name}.8", rev[4], c.M)
    spec += _slice_networks(c)
    spec += _entropy_models(c.N_z)
    return spec


def _entropy_models(C):
    """The entropy bottleneck (STF fork naming) for z of C channels, then the Gaussian conditional."""
    spec = []
    F = (1, 3, 3, 3, 3, 1)
    for i in range(5):
        spec.append(KeySpec(f"entropy_bottleneck._matrix{i}", (C, F[i + 1], F[i]), "float32", "param"))
        spec.append(KeySpec(f"entropy_bottleneck._bias{i}", (C, F[i + 1], 1), "float32", "param"))
        if i < 4:
            spec.append(KeySpec(f"entropy_bottleneck._factor{i}", (C, F[i + 1], 1), "float32", "param"))
    spec.append(KeySpec("entropy_bottleneck.quantiles", (C, 1, 3), "float32", "param"))
    spec += [
        KeySpec("entropy_bottleneck._offset", (0,), "int32", "buffer"),
        KeySpec("entropy_bottleneck._quantized_cdf", (0,), "int32", "buffer"),
        KeySpec("entropy_bottleneck._cdf_length", (0,), "int32", "buffer"),
        KeySpec("entropy_bottleneck.target", (3,), "float32", "buffer"),
        KeySpec("entropy_bottleneck.likelihood_lower_bound.bound", (1,), "float32", "buffer"),
        KeySpec("gaussian_conditional._offset", (0,), "int32", "buffer"),
        KeySpec("gaussian_conditional._quantized_cdf", (0,), "int32", "buffer"),
        KeySpec("gaussian_conditional._cdf_length", (0,), "int32", "buffer"),
        KeySpec("gaussian_conditional.scale_table", (0,), "float32", "buffer"),
        KeySpec("gaussian_conditional.scale_bound", (1,), "float32", "buffer"),
        KeySpec("gaussian_conditional.likelihood_lower_bound.bound", (1,), "float32", "buffer"),
        KeySpec("gaussian_conditional.lower_bound_scale.bound", (1,), "float32", "buffer"),
    ]
    return spec


def param_spec(config: STFConfig = STFConfig()):
    """Only the learned parameters: what a minstf weight file must hold."""
    return [k for k in state_dict_spec(config) if k.kind == "param"]


def config_from_shapes(shapes):
    """The STFConfig of {minstf key: shape}; KeyError, IndexError or ValueError if there is none.

    Every field is read off one tensor (the rest are checked against
    state_dict_spec by the caller): the patch embedding gives e, in_chans and
    the patch size; the stage and block numbers give depths; the bias tables give
    heads and window size; fc1 gives mlp_ratio = hidden / e; the slice networks
    give num_slices, slice_hidden and the support cap (from the last slice's inputs).
    """
    def ids(prefix, at):  # the numbers at position `at` of the keys under prefix
        return {int(k.split(".")[at]) for k in shapes
                if k.startswith(prefix) and k.split(".")[at].isdecimal() and len(k.split(".")[at]) < 4}

    e, in_chans, p, p2 = shapes["patch_embed.proj.weight"]
    if p != p2:
        raise ValueError(f"patch_embed.proj.weight is not square: {p}x{p2}")
    stages = range(max(ids("layers.", 1)) + 1)
    if len(stages) > MAX_STAGES:  # before a loop over them
        raise ValueError(f"{len(stages)} stages (at most {MAX_STAGES})")
    depths = tuple(max(ids(f"layers.{i}.blocks.", 3)) + 1 for i in stages)
    heads = tuple(shapes[f"layers.{i}.blocks.0.attn.relative_position_bias_table"][1] for i in stages)
    ws = (math.isqrt(shapes["layers.0.blocks.0.attn.relative_position_bias_table"][0]) + 1) // 2
    mlp_ratio = shapes["layers.0.blocks.0.mlp.fc1.weight"][0] / e
    num_slices = max(ids("cc_mean_transforms.", 1)) + 1
    hidden = tuple(shapes[f"cc_mean_transforms.0.{j}.weight"][0] for j in (0, 2, 4, 6))
    M = e * 2 ** (len(depths) - 1)
    support = (shapes[f"cc_mean_transforms.{num_slices - 1}.0.weight"][1] - M) // (M // num_slices)
    return STFConfig(patch_size=p, in_chans=in_chans, embed_dim=e, depths=depths, num_heads=heads,
                     window_size=ws, mlp_ratio=mlp_ratio, num_slices=num_slices,
                     max_support_slices=support, slice_hidden=hidden)


# --- WACNN (`cnn`, docs/wacnn.md §1) -------------------------------------------------------------
# g_s's transposed convolutions: their weights are (Cin, O, k, k), PyTorch's ConvTranspose2d layout
WACNN_DECONVS = ("g_s.1", "g_s.3", "g_s.6", "g_s.8")


def _gdn(prefix, C):
    """GDN / IGDN: the stored (reparametrised) beta and gamma, then four constant buffers."""
    B = "buffer"
    return [KeySpec(f"{prefix}.beta", (C,), "float32", "param"),
            KeySpec(f"{prefix}.gamma", (C, C), "float32", "param")] + [
        KeySpec(f"{prefix}.{name}_reparam.{buffer}", (1,), "float32", B)
        for name in ("beta", "gamma") for buffer in ("pedestal", "lower_bound.bound")]


def _residual_unit(prefix, C):
    """1x1 conv C -> C/2, 3x3 conv C/2 -> C/2, 1x1 conv C/2 -> C (keys .conv.0, .conv.2, .conv.4)."""
    return (_conv(f"{prefix}.conv.0", C, C // 2, k=1) + _conv(f"{prefix}.conv.2", C // 2, C // 2, k=3)
            + _conv(f"{prefix}.conv.4", C // 2, C, k=1))


def _attention_block(prefix, C, heads, ws):
    """Win_noShift_Attention: conv_a (3 residual units), conv_b (window attention, 3 units, 1x1 conv)."""
    spec = [item for u in range(3) for item in _residual_unit(f"{prefix}.conv_a.{u}", C)]
    a, P = f"{prefix}.conv_b.0.attn", "param"
    spec += [KeySpec(f"{a}.relative_position_bias_table", ((2 * ws - 1) ** 2, heads), "float32", P),
             KeySpec(f"{a}.relative_position_index", (ws * ws, ws * ws), "int64", "buffer"),
             KeySpec(f"{a}.qkv.weight", (3 * C, C), "float32", P), KeySpec(f"{a}.qkv.bias", (3 * C,), "float32", P),
             KeySpec(f"{a}.proj.weight", (C, C), "float32", P), KeySpec(f"{a}.proj.bias", (C,), "float32", P)]
    spec += [item for u in range(1, 4) for item in _residual_unit(f"{prefix}.conv_b.{u}", C)]
    return spec + _conv(f"{prefix}.conv_b.4", C, C, k=1)


def _deconv(prefix, cin, cout, k=5):
    return [KeySpec(f"{prefix}.weight", (cin, cout, k, k), "float32", "param"),
            KeySpec(f"{prefix}.bias", (cout,), "float32", "param")]


def wacnn_state_dict_spec(config: WACNNConfig = WACNNConfig()):
    """All keys of upstream's WACNN state dict for `config`, in upstream order (spec keys-cnn.tsv)."""
    c, N, M, h = config, config.N, config.M, config.num_heads
    ws_N, ws_M = c.window_sizes
    spec = []
    # g_a: conv, GDN, conv, GDN, attention, conv, GDN, conv, attention
    spec += _conv("g_a.0", c.in_chans, N, k=5) + _gdn("g_a.1", N) + _conv("g_a.2", N, N, k=5) + _gdn("g_a.3", N)
    spec += _attention_block("g_a.4", N, h, ws_N)
    spec += _conv("g_a.5", N, N, k=5) + _gdn("g_a.6", N) + _conv("g_a.7", N, M, k=5)
    spec += _attention_block("g_a.8", M, h, ws_M)
    # g_s: attention, deconv, IGDN, deconv, IGDN, attention, deconv, IGDN, deconv
    spec += _attention_block("g_s.0", M, h, ws_M)
    spec += _deconv("g_s.1", M, N) + _gdn("g_s.2", N) + _deconv("g_s.3", N, N) + _gdn("g_s.4", N)
    spec += _attention_block("g_s.5", N, h, ws_N)
    spec += _deconv("g_s.6", N, N) + _gdn("g_s.7", N) + _deconv("g_s.8", N, c.in_chans)
    # hyperprior: STF's layer list with WACNN's widths
    hw = c.hyper_widths  # (M, M-s, M-2s, M-3s, N)
    for j, (cin, cout) in enumerate(zip((M,) + hw[:-1], hw)):
        spec += _conv(f"h_a.{2 * j}", cin, cout)
    sw = c.hyper_synthesis_widths  # (N, N+s, N+2s, N+3s, M)
    for name in ("h_mean_s", "h_scale_s"):
        spec += _conv(f"{name}.0", N, sw[0])
        spec += _conv(f"{name}.2.0", sw[0], sw[1] * 4)  # subpel conv, PixelShuffle(2)
        spec += _conv(f"{name}.4", sw[1], sw[2])
        spec += _conv(f"{name}.6.0", sw[2], sw[3] * 4)
        spec += _conv(f"{name}.8", sw[3], sw[4])
    return spec + _slice_networks(c) + _entropy_models(c.N_z)  # the slice networks as STF's


def wacnn_param_spec(config: WACNNConfig = WACNNConfig()):
    """Only WACNN's learned parameters."""
    return [k for k in wacnn_state_dict_spec(config) if k.kind == "param"]


def wacnn_config_from_shapes(shapes):
    """The WACNNConfig of {minstf key: shape}; KeyError, IndexError or ValueError if there is none.

    As config_from_shapes: g_a.0 gives N and in_chans, g_a.7 gives M, the bias tables of
    the two g_a attention blocks give num_heads and the two window sizes, the slice
    networks give num_slices, slice_hidden and the support cap.
    """
    N, in_chans, _, _ = shapes["g_a.0.weight"]
    M = shapes["g_a.7.weight"][0]
    rows0, heads = shapes["g_a.4.conv_b.0.attn.relative_position_bias_table"]
    rows1 = shapes["g_a.8.conv_b.0.attn.relative_position_bias_table"][0]
    ws = tuple((math.isqrt(rows) + 1) // 2 for rows in (rows0, rows1))  # rows = (2 ws - 1)^2
    num_slices = max(int(k.split(".")[1]) for k in shapes if k.startswith("cc_mean_transforms.")
                     and k.split(".")[1].isdecimal() and len(k.split(".")[1]) < 4) + 1
    hidden = tuple(shapes[f"cc_mean_transforms.0.{j}.weight"][0] for j in (0, 2, 4, 6))
    support = (shapes[f"cc_mean_transforms.{num_slices - 1}.0.weight"][1] - M) // (M // num_slices)
    return WACNNConfig(in_chans=in_chans, N=N, M=M, num_heads=heads, window_sizes=ws, num_slices=num_slices,
                       max_support_slices=support, slice_hidden=hidden)


# --- constant buffers: what a checkpoint holds and minstf derives --------------------------------
# GDN's NonNegativeParametrizer (docs/wacnn.md §3): pedestal (2^-18)^2 and the bound
# sqrt(minimum + pedestal), computed in double and stored as float32 (minimum 1e-6 for beta, 0 for gamma)
_REPARAM_MINIMUM = {"beta_reparam": BETA_MIN, "gamma_reparam": 0.0}


def constant_buffers(spec):
    """{key: value} of the constant buffers of a state-dict spec that have a formula:
    every `relative_position_index` (its window size read off its shape) and GDN's
    `*_reparam.pedestal` / `*_reparam.lower_bound.bound`."""
    values = {}
    for s in spec:
        if s.key.endswith("relative_position_index"):
            values[s.key] = relative_position_index(math.isqrt(s.shape[0]))
        for name, minimum in _REPARAM_MINIMUM.items():
            if s.key.endswith(f".{name}.pedestal"):
                values[s.key] = np.array([PEDESTAL], np.float32)
            elif s.key.endswith(f".{name}.lower_bound.bound"):
                values[s.key] = np.array([(minimum + PEDESTAL) ** 0.5], np.float32)
    return values
