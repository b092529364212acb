"""The continuous networks of STF: g_a, g_s, h_a, h_mean_s / h_scale_s and the slice networks.

    x --g_a--> y --h_a--> z            (analysis: image -> latent -> hyper-latent)
    z_hat --h_mean_s--> latent_means   (hyper synthesis, two heads with separate weights)
    z_hat --h_scale_s--> latent_scales
    support --slice_network--> mu / scale / lrp of one slice (docs/architecture.md §3.4)
    y_hat --g_s--> x_hat               (synthesis: latent -> image)

Written once over the kernel interface of `minstf.switch`: every function takes
`kernels` ("fast", the default, or "reference", or the layer's module) and calls
only its functions (`k.swin_block`, `k.conv2d`, ...). All maps are channels-last
`(B, H, W, C)`; all sizes come from an `STFConfig`, so small configurations run
through exactly the same code.

`taps` (optional dict) records intermediate outputs under the golden npz key
names (docs/golden.md §4): `patch_embed` as NCHW `(B, C, H1, W1)` like the golden
file; `enc{i}_blk{b}`, `enc{i}_out`, `dec{i}_blk{b}`, `dec{i}_out` as tokens
`(B, L, C)`; the shift masks as `enc{i}_mask` / `dec{i}_mask` `(nW, N, N)`
(golden `attn_mask_64x96` = `enc0_mask` and `attn_mask_8x12` = `enc3_mask` of
input A, `b_enc_mask_layer0` = `enc0_mask` of input B).
"""
from .backend import xp_of
from .rows import LATENT_BAND, RowLayer, apply, collect
from .switch import DEFAULT_KERNELS, get_kernels


# --- embedding, resampling and one stage (docs/architecture.md §2.1, §2.7–2.9) ------------------
def patch_embed(x, params, patch_size, kernels=DEFAULT_KERNELS, prefix="patch_embed"):
    """Image to tokens: pad to a multiple of patch_size, strided conv, LayerNorm (§2.1).

    Args: x (B, H, W, Cin) image. Returns: tokens (B, H1*W1, C), H1, W1.
    """
    k, xp = get_kernels(kernels), xp_of(x)
    _, H, W, _ = x.shape
    if H % patch_size or W % patch_size:
        x = xp.pad(x, ((0, 0), (0, -H % patch_size), (0, -W % patch_size), (0, 0)))  # pad right / bottom
    x = k.conv2d(x, params[f"{prefix}.proj.weight"], params[f"{prefix}.proj.bias"],
                 stride=patch_size)  # (B, H, W, Cin) -> (B, H1, W1, C)
    B, H1, W1, C = x.shape
    x = k.layer_norm(x, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    return x.reshape(B, H1 * W1, C), H1, W1  # (B, H1, W1, C) -> (B, L, C)


def patch_merging(x, H, W, params, prefix, kernels=DEFAULT_KERNELS):
    """Encoder downsampling: 2x2 neighbours to channels, LayerNorm(4C), Linear 4C -> 2C (§2.7).

    Args: tokens (B, H*W, C). Returns: tokens (B, H'*W', 2C), H' = ceil(H/2), W' = ceil(W/2).
    """
    k, xp = get_kernels(kernels), xp_of(x)
    B, L, C = x.shape
    x = x.reshape(B, H, W, C)  # (B, L, C) -> (B, H, W, C)
    if H % 2 or W % 2:
        x = xp.pad(x, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))  # to even sizes
    # the four neighbours in the order x0 (0,0), x1 (1,0), x2 (0,1), x3 (1,1) of (row, col) offsets
    x = xp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                       axis=-1)  # -> (B, H', W', 4C)
    _, H2, W2, _ = x.shape
    x = k.layer_norm(x, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    x = k.linear(x, params[f"{prefix}.reduction.weight"])  # (B, H', W', 4C) -> (B, H', W', 2C)
    return x.reshape(B, H2 * W2, 2 * C), H2, W2  # -> (B, L', 2C)


def patch_split(x, H, W, params, prefix, kernels=DEFAULT_KERNELS):
    """Decoder upsampling: LayerNorm(C), Linear C -> 2C, PixelShuffle(2) (§2.8).

    Args: tokens (B, H*W, C). Returns: tokens (B, 4*H*W, C/2), 2H, 2W.
    """
    k = get_kernels(kernels)
    B, L, C = x.shape
    x = k.layer_norm(x, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    x = k.linear(x, params[f"{prefix}.reduction.weight"])  # (B, L, C) -> (B, L, 2C)
    x = k.pixel_shuffle(x.reshape(B, H, W, 2 * C), 2)  # (B, H, W, 2C) -> (B, 2H, 2W, C/2)
    return x.reshape(B, 4 * L, C // 2), 2 * H, 2 * W  # -> (B, 4L, C/2)


def basic_layer(x, H, W, params, prefix, depth, num_heads, ws, resample=None, taps=None, tap_name=None,
                kernels=DEFAULT_KERNELS):
    """One stage: `depth` Swin blocks (odd ones shifted by ws//2), then the resampler (§2.9).

    Args: tokens (B, H*W, C); resample None, "merge" (PatchMerging) or "split" (PatchSplit).
    taps: optional dict; records `{tap_name}_blk{b}` (tokens after block b),
    `{tap_name}_mask` (the shift mask) and `{tap_name}_out` (after resampling).
    Returns: tokens, new H, new W.
    """
    k = get_kernels(kernels)
    shift = ws // 2
    mask = k.shift_attention_mask(H, W, ws, shift, xp_of(x)) if depth > 1 else None  # (nW, N, N)
    if taps is not None and mask is not None:
        taps[f"{tap_name}_mask"] = mask
    for b in range(depth):
        x = k.swin_block(x, H, W, params, f"{prefix}.blocks.{b}", num_heads, ws,
                         shift=shift if b % 2 else 0, mask=mask)  # (B, L, C) -> (B, L, C)
        if taps is not None:
            taps[f"{tap_name}_blk{b}"] = x
    if resample == "merge":
        x, H, W = patch_merging(x, H, W, params, f"{prefix}.downsample", k)
    elif resample == "split":
        x, H, W = patch_split(x, H, W, params, f"{prefix}.downsample", k)
    if taps is not None:
        taps[f"{tap_name}_out"] = x
    return x, H, W


# --- analysis and synthesis transforms (§3.1, §3.5) -----------------------------------------
def g_a(x, params, config, taps=None, kernels=DEFAULT_KERNELS):
    """Analysis transform: PatchEmbed, then the Swin stages with PatchMerging (§3.1).

    Args: x (B, H, W, 3) float32 image. Returns: y (B, H4, W4, M), H4 = ceil(H/16).
    """
    k = get_kernels(kernels)
    B = x.shape[0]
    x, H, W = patch_embed(x, params, config.patch_size, k)  # (B, H, W, 3) -> (B, H1*W1, e)
    if taps is not None:
        taps["patch_embed"] = x.reshape(B, H, W, -1).transpose(0, 3, 1, 2)  # NCHW like the golden file
    last = len(config.depths) - 1
    for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
        x, H, W = basic_layer(x, H, W, params, f"layers.{i}", depth, heads, config.window_size,
                              resample="merge" if i < last else None, taps=taps, tap_name=f"enc{i}", kernels=k)
    return x.reshape(B, H, W, -1)  # (B, H4*W4, M) -> (B, H4, W4, M)


def g_s(y_hat, params, config, taps=None, kernels=DEFAULT_KERNELS):
    """Synthesis transform: the Swin stages with PatchSplit, then end_conv (§3.5).

    Args: y_hat (B, H4, W4, M). Returns: x_hat (B, 16*H4, 16*W4, 3), unclamped.
    """
    k = get_kernels(kernels)
    B, H, W, M = y_hat.shape
    x = y_hat.reshape(B, H * W, M)  # (B, H4, W4, M) -> (B, L, M)
    last = len(config.depths) - 1
    for i, (depth, heads) in enumerate(zip(config.depths[::-1], config.num_heads[::-1])):
        x, H, W = basic_layer(x, H, W, params, f"syn_layers.{i}", depth, heads, config.window_size,
                              resample="split" if i < last else None, taps=taps, tap_name=f"dec{i}", kernels=k)
    x = x.reshape(B, H, W, -1)  # (B, L, e) -> (B, 8*H4, 8*W4, e)
    return k.end_conv(x, params, config.patch_size)  # 5x5 conv, shuffle, 3x3 conv: -> (B, 16*H4, 16*W4, 3)


# --- the same two transforms as row layers, for tiling (minstf/rows.py, docs/tiling.md) ----------
def _as_map(tokens_fn):
    """A function of tokens (B, h*W, C), h, W -> (tokens, h', W') as a function of maps (B, h, W, C)."""
    def fn(x):
        B, h, W, C = x.shape
        t, h2, W2 = tokens_fn(x.reshape(B, h * W, C), h, W)  # (B, h, W, C) -> (B, h*W, C) -> (B, h'*W', C')
        return t.reshape(B, h2, W2, -1)  # -> (B, h', W', C')
    return fn


def swin_rows(params, prefix, num_heads, ws, shift, k, masks):
    """A Swin block as a row layer: bands of whole windows of its grid (rows shift + k*ws when
    shifted), each band read with `shift` rows on either side, the wrapped halves of the
    windows that the roll brings in and the mask keeps apart (docs/tiling.md §2).
    masks: a dict the blocks of a transform share: per map width, the last band's mask, which
    the next shifted block (and, but for the first and last, the next band) can use again."""
    def block(t, h, W):
        mask = None
        if shift:
            if masks.get(W, (None,))[0] != h:
                masks[W] = h, k.shift_attention_mask(h, W, ws, shift, xp_of(t))  # (nW, N, N)
            mask = masks[W][1]
        return k.swin_block(t, h, W, params, prefix, num_heads, ws, shift=shift, mask=mask), h, W
    return RowLayer(_as_map(block), halo=shift, align=ws, offset=shift)


def g_a_rows(params, config, kernels=DEFAULT_KERNELS):
    """g_a's layers (PatchEmbed, the blocks, PatchMerging) as row layers."""
    k, ws, last, masks = get_kernels(kernels), config.window_size, len(config.depths) - 1, {}
    layers = [RowLayer(_as_map(lambda t, h, W: patch_embed(t.reshape(t.shape[0], h, W, -1), params,
                                                           config.patch_size, k)),
                       down=config.patch_size)]
    for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
        layers += [swin_rows(params, f"layers.{i}.blocks.{b}", heads, ws, ws // 2 if b % 2 else 0, k, masks)
                   for b in range(depth)]
        if i < last:
            merge = lambda t, h, W, i=i: patch_merging(t, h, W, params, f"layers.{i}.downsample", k)  # noqa: E731
            layers.append(RowLayer(_as_map(merge), down=2))
    return layers


def g_s_rows(params, config, kernels=DEFAULT_KERNELS):
    """g_s's layers (the blocks, PatchSplit, end_conv) as row layers."""
    k, ws, last, masks = get_kernels(kernels), config.window_size, len(config.depths) - 1, {}
    layers = []
    for i, (depth, heads) in enumerate(zip(config.depths[::-1], config.num_heads[::-1])):
        layers += [swin_rows(params, f"syn_layers.{i}.blocks.{b}", heads, ws, ws // 2 if b % 2 else 0, k, masks)
                   for b in range(depth)]
        if i < last:
            split = lambda t, h, W, i=i: patch_split(t, h, W, params, f"syn_layers.{i}.downsample", k)  # noqa: E731
            layers.append(RowLayer(_as_map(split), up=2, align=2))
    p = config.patch_size
    # end_conv: the 3x3 reads a row of the shuffled map on either side, the 5x5 two rows of its input
    halo = -(-(params["end_conv.2.weight"].shape[-1] // 2) // p) + params["end_conv.0.weight"].shape[-1] // 2
    layers.append(RowLayer(lambda x: k.end_conv(x, params, p), up=p, align=p, halo=halo))
    return layers


# --- hyperprior (§3.2, §3.3) ---------------------------------------------------------------
def _conv(x, params, prefix, k, stride=1, gelu=False):
    """Conv2d with padding k//2 and weights `{prefix}.weight` / `.bias`, GELU after it if asked."""
    w = params[f"{prefix}.weight"]
    conv = k.conv2d_gelu if gelu else k.conv2d
    return conv(x, w, params[f"{prefix}.bias"], stride=stride, padding=w.shape[-1] // 2)


def conv_rows(params, prefix, k, stride=1, gelu=False):
    """`_conv` as a row layer: it reads k//2 rows beyond a band, rounded up to whole strides."""
    pad = params[f"{prefix}.weight"].shape[-1] // 2
    return RowLayer(lambda x: _conv(x, params, prefix, k, stride, gelu), down=stride,
                    halo=-(-pad // stride) * stride)


def subpel_rows(params, prefix, k):
    """Conv, GELU and PixelShuffle(2) (upstream's subpel_conv3x3 with the GELU after it) as a row layer."""
    return RowLayer(lambda x: k.pixel_shuffle(_conv(x, params, prefix, k, gelu=True), 2), up=2, align=2,
                    halo=params[f"{prefix}.weight"].shape[-1] // 2)  # GELU before the shuffle: they commute


def h_a_rows(params, config, kernels=DEFAULT_KERNELS):
    """Hyper analysis: five 3x3 convs, GELU between, strides 1, 1, 2, 1, 2 (§3.2)."""
    k = get_kernels(kernels)
    return ([conv_rows(params, f"h_a.{2 * j}", k, stride, gelu=True) for j, stride in enumerate((1, 1, 2, 1))]
            + [conv_rows(params, "h_a.8", k, stride=2)])


def h_a(y, params, config, kernels=DEFAULT_KERNELS):
    """Hyper analysis: h_a_rows by bands of LATENT_BAND rows (one band up to 16 * LATENT_BAND image rows).

    Args: y (B, H4, W4, M). Returns: z (B, ceil(ceil(H4/2)/2), ..., N_z).
    """
    layers = h_a_rows(params, config, kernels)
    return collect(layers, lambda a, b: y[:, a:b], y.shape[1], LATENT_BAND)  # (B, H4, W4, M) -> (B, H4/4, W4/4, N_z)


def h_s_rows(params, prefix, kernels=DEFAULT_KERNELS):
    """h_mean_s / h_scale_s: conv, GELU, subpel x2, GELU, conv, GELU, subpel x2, GELU, conv (§3.3).

    Widths (B, zh, zw, 4e) -> 5e -> (2zh, 2zw, 6e) -> 7e -> (4zh, 4zw, 8e) -> M.
    """
    k = get_kernels(kernels)
    return [conv_rows(params, f"{prefix}.0", k, gelu=True), subpel_rows(params, f"{prefix}.2.0", k),
            conv_rows(params, f"{prefix}.4", k, gelu=True), subpel_rows(params, f"{prefix}.6.0", k),
            conv_rows(params, f"{prefix}.8", k)]


def _h_s(z_hat, params, prefix, k):
    """h_s_rows by bands of LATENT_BAND / 4 rows of z (one band for images up to 16 * LATENT_BAND rows)."""
    layers = h_s_rows(params, prefix, k)
    return collect(layers, lambda a, b: z_hat[:, a:b], z_hat.shape[1], LATENT_BAND // 4)  # -> (B, 4zh, 4zw, M)


def h_mean_s(z_hat, params, config, kernels=DEFAULT_KERNELS):
    """latent_means: (B, zh, zw, N_z) -> (B, 4*zh, 4*zw, M)."""
    return _h_s(z_hat, params, "h_mean_s", get_kernels(kernels))


def h_scale_s(z_hat, params, config, kernels=DEFAULT_KERNELS):
    """latent_scales: (B, zh, zw, N_z) -> (B, 4*zh, 4*zw, M)."""
    return _h_s(z_hat, params, "h_scale_s", get_kernels(kernels))


# --- channel-conditional slice networks (§3.4) ------------------------------------------------
def slice_network_rows(params, prefix, kernels=DEFAULT_KERNELS):
    """One of cc_mean_transforms.{s} / cc_scale_transforms.{s} / lrp_transforms.{s}:
    five 3x3 convs with GELU between; widths come from the weights."""
    k = get_kernels(kernels)
    return [conv_rows(params, f"{prefix}.{2 * j}", k, gelu=True) for j in range(4)] + [conv_rows(params, f"{prefix}.8", k)]


def slice_network(x, params, prefix, kernels=DEFAULT_KERNELS):
    """slice_network_rows on the whole map.

    Args: x (B, h, w, Cin) support; prefix e.g. "cc_mean_transforms.3". Returns: (B, h, w, Cs).
    """
    return apply(slice_network_rows(params, prefix, kernels), x)  # (B, h, w, Cin) -> (B, h, w, Cs)
