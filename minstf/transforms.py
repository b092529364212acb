"""The continuous networks of STF: g_a, g_s, h_a, h_mean_s / h_scale_s and the slice networks.

    x --g_a--> y --h_a--> z            (analysis: image -> latent -> hyper-latent)
    z_hat --h_mean_s--> latent_means   (hyper synthesis, two heads with separate weights)
    z_hat --h_scale_s--> latent_scales
    support --slice_network--> mu / scale / lrp of one slice (STF.md §3.4)
    y_hat --g_s--> x_hat               (synthesis: latent -> image)

All maps are channels-last `(B, H, W, C)`; all sizes come from an `STFConfig`,
so small configurations run through exactly the same code (STF.md §3).

`taps` (optional dict) records intermediate outputs under the golden npz key
names (GOLDEN.md §4): `patch_embed` as NCHW `(B, C, H1, W1)` like the golden
file; `enc{i}_blk{b}`, `enc{i}_out`, `dec{i}_blk{b}`, `dec{i}_out` as tokens
`(B, L, C)`; the shift masks as `enc{i}_mask` / `dec{i}_mask` `(nW, N, N)`
(golden `attn_mask_64x96` = `enc0_mask` and `attn_mask_8x12` = `enc3_mask` of
input A, `b_enc_mask_layer0` = `enc0_mask` of input B).
"""
from .backend import derived, on_host, parallel_blocks, row_blocks, xp_of
from .ops import conv2d, gelu, pixel_shuffle
from .swin import basic_layer, patch_embed


def _conv(x, params, prefix, stride=1):
    """Conv2d with "same"-style padding k//2, weights `{prefix}.weight` / `.bias`."""
    w = params[f"{prefix}.weight"]
    return conv2d(x, w, params[f"{prefix}.bias"], stride=stride, padding=w.shape[-1] // 2)


def _conv_gelu(x, params, prefix, stride=1):
    """GELU(_conv(x)): the conv's bias is added inside GELU's pass over the map."""
    w = params[f"{prefix}.weight"]
    x = conv2d(x, w, None, stride=stride, padding=w.shape[-1] // 2)
    return gelu(x, bias=params[f"{prefix}.bias"], out=x)


# --- analysis and synthesis transforms -----------------------------------------
def g_a(x, params, config, taps=None):
    """Analysis transform: PatchEmbed, then 4 Swin stages with PatchMerging (STF.md §3.1).

    Args: x (B, H, W, 3) float32 image. Returns: y (B, H4, W4, M), H4 = ceil(H/16).
    """
    B = x.shape[0]
    x, H, W = patch_embed(x, params, config.patch_size)  # (B, H, W, 3) -> (B, H1*W1, e)
    if taps is not None:
        taps["patch_embed"] = x.reshape(B, H, W, -1).transpose(0, 3, 1, 2)  # NCHW like the golden file
    last = len(config.depths) - 1
    for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
        x, H, W = basic_layer(x, H, W, params, f"layers.{i}", depth, heads, config.window_size,
                              resample="merge" if i < last else None, taps=taps, tap_name=f"enc{i}")
    return x.reshape(B, H, W, -1)  # (B, H4*W4, M) -> (B, H4, W4, M)


def g_s(y_hat, params, config, taps=None):
    """Synthesis transform: 4 Swin stages with PatchSplit, then end_conv (STF.md §3.5).

    Args: y_hat (B, H4, W4, M). Returns: x_hat (B, 16*H4, 16*W4, 3), unclamped.
    """
    B, H, W, M = y_hat.shape
    x = y_hat.reshape(B, H * W, M)  # (B, H4, W4, M) -> (B, L, M)
    last = len(config.depths) - 1
    for i, (depth, heads) in enumerate(zip(config.depths[::-1], config.num_heads[::-1])):
        x, H, W = basic_layer(x, H, W, params, f"syn_layers.{i}", depth, heads, config.window_size,
                              resample="split" if i < last else None, taps=taps, tap_name=f"dec{i}")
    return end_conv(x.reshape(B, H, W, -1), params, config)  # (B, L, e) -> (B, 8*H4, 8*W4, e) -> image


def end_conv(x, params, config):
    """The last part of g_s: 5x5 conv, PixelShuffle(patch_size), 3x3 conv; no activation.

    The 5x5 convolution runs by bands of rows, each shuffled straight into the full-size
    map, so that its p*p-times-wider output never exists whole.
    Args: x (B, h, w, e), the last synthesis stage as a map. Returns: (B, p*h, p*w, 3).
    """
    xp = xp_of(x)
    p, w0 = config.patch_size, params["end_conv.0.weight"]
    B, h, w, e = x.shape
    k = w0.shape[-1]
    # output channels c*p*p + i*p + j -> (i*p + j)*e + c, so that the shuffle moves whole pixels
    w0 = derived(w0, "ijc", lambda a: a.reshape(e, p * p, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape))
    b0 = params["end_conv.0.bias"].reshape(e, p * p).T.reshape(-1)
    x = xp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))  # (B, h+k-1, w+k-1, e)
    shuffled = xp.empty((B, p * h, p * w, e), dtype=x.dtype)

    def band(h0, n):  # 5x5 on rows h0..h0+n-1: (B, n, w, p*p*e), shuffled to (B, p*n, p*w, e)
        pixel_shuffle(conv2d(x[:, h0:h0 + n + k - 1], w0, b0), p, out=shuffled[:, p * h0:p * (h0 + n)],
                      channel_order="ijc")

    parallel_blocks(band, row_blocks(h, w * p * p * e, block_elements=1 << 20), on_host(x))
    w2 = params["end_conv.2.weight"]
    return conv2d(shuffled, w2, params["end_conv.2.bias"], padding=w2.shape[-1] // 2)  # 3x3: -> (B, p*h, p*w, 3)


# --- hyperprior ------------------------------------------------------------------
def h_a(y, params, config):
    """Hyper analysis: five 3x3 convs, GELU between, strides 1, 1, 2, 1, 2 (STF.md §3.2).

    Args: y (B, H4, W4, M). Returns: z (B, ceil(ceil(H4/2)/2), ..., N_z).
    """
    x = y
    for j, stride in enumerate((1, 1, 2, 1)):
        x = _conv_gelu(x, params, f"h_a.{2 * j}", stride=stride)  # (B, h, w, c) -> (B, h/stride, w/stride, c')
    return _conv(x, params, "h_a.8", stride=2)  # -> (B, h/2, w/2, N_z)


def _h_s(z_hat, params, prefix):
    """h_mean_s / h_scale_s: conv, GELU, subpel x2, GELU, conv, GELU, subpel x2, GELU, conv (STF.md §3.3)."""
    x = _conv_gelu(z_hat, params, f"{prefix}.0")  # (B, zh, zw, 4e) -> (B, zh, zw, 5e)
    x = pixel_shuffle(_conv_gelu(x, params, f"{prefix}.2.0"), 2)  # -> (B, 2zh, 2zw, 6e); GELU commutes with the shuffle
    x = _conv_gelu(x, params, f"{prefix}.4")  # -> (B, 2zh, 2zw, 7e)
    x = pixel_shuffle(_conv_gelu(x, params, f"{prefix}.6.0"), 2)  # -> (B, 4zh, 4zw, 8e)
    return _conv(x, params, f"{prefix}.8")  # -> (B, 4zh, 4zw, M)


def h_mean_s(z_hat, params, config):
    """latent_means: (B, zh, zw, N_z) -> (B, 4*zh, 4*zw, M)."""
    return _h_s(z_hat, params, "h_mean_s")


def h_scale_s(z_hat, params, config):
    """latent_scales: (B, zh, zw, N_z) -> (B, 4*zh, 4*zw, M)."""
    return _h_s(z_hat, params, "h_scale_s")


# --- channel-conditional slice networks -------------------------------------------
def slice_network(x, params, prefix):
    """One of cc_mean_transforms.{s} / cc_scale_transforms.{s} / lrp_transforms.{s}:
    five 3x3 convs with GELU between (STF.md §3.4); widths come from the weights.

    Args: x (B, h, w, Cin) support; prefix e.g. "cc_mean_transforms.3". Returns: (B, h, w, S).
    """
    for j in range(4):
        x = _conv_gelu(x, params, f"{prefix}.{2 * j}")  # (B, h, w, c) -> (B, h, w, c')
    return _conv(x, params, f"{prefix}.8")  # -> (B, h, w, S)
