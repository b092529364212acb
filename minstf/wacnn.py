"""The continuous networks of WACNN (`cnn`), the second upstream model: g_a, g_s and the hyperprior.

    x --g_a--> y --h_a--> z            conv/GDN stacks with two attention blocks (docs/wacnn.md §1)
    z_hat --h_mean_s / h_scale_s--> latent_means / latent_scales     (STF's hyperprior, other widths)
    y_hat --g_s--> x_hat               transposed conv/IGDN stacks with two attention blocks

    g_a:  conv5/2  GDN  conv5/2  GDN  [attn ws0]  conv5/2  GDN  conv5/2  [attn ws1]
    g_s:  [attn ws1]  deconv5/2  IGDN  deconv5/2  IGDN  [attn ws0]  deconv5/2  IGDN  deconv5/2

    [attn] = Win_noShift_Attention: x + conv_a(x) * sigmoid(conv_b(x)), where
             conv_a = 3 residual units, conv_b = window attention, 3 residual units, 1x1 conv

Written once over the kernel interface of `minstf.switch`, like `minstf/transforms.py`,
with the same signatures (`(x, params, config, taps=None, kernels=...)`), so that a
model holds either module. The slice networks and the slice loop are STF's
(`transforms.slice_network`, `slices.run_slices`), driven by the config's
num_slices / max_support_slices. Maps are channels-last `(B, H, W, C)`.

`taps` (optional dict) records the golden file's names (docs/wacnn.md §6), as
channels-last maps: `g_a{i}` / `g_s{i}` after layer i (`y` is g_a8's output, and
`x_hat_forward` g_s8's), and inside the attention blocks g_a.8 and g_s.0 the three
internals `{name}_conv_a`, `{name}_attn` (window attention + shortcut) and
`{name}_gate` (the gate logits, before the sigmoid); the shift masks as
`{name}_mask` `(nW, N, N)`.
"""
from .backend import xp_of
from .rows import RowLayer
from .switch import DEFAULT_KERNELS, get_kernels
from .transforms import _conv  # conv2d with padding k//2, GELU after it if asked
from .transforms import h_a, h_mean_s, h_scale_s  # noqa: F401 — STF's layer lists, widths from the weights


# --- the attention block (docs/wacnn.md §4) --------------------------------------------------
def residual_unit(x, params, prefix, kernels=DEFAULT_KERNELS):
    """GELU(x + conv1x1(GELU(conv3x3(GELU(conv1x1(x)))))), widths C -> C/2 -> C/2 -> C.

    Args: x (B, H, W, C). Returns: (B, H, W, C).
    """
    k = get_kernels(kernels)
    t = _conv(x, params, f"{prefix}.conv.0", k, gelu=True)  # (B, H, W, C) -> (B, H, W, C/2)
    t = _conv(t, params, f"{prefix}.conv.2", k, gelu=True)  # 3x3, (B, H, W, C/2)
    t = _conv(t, params, f"{prefix}.conv.4", k)  # -> (B, H, W, C)
    return k.gelu(t + x)


def attention_block(x, params, prefix, num_heads, ws, taps=None, tap_name=None, kernels=DEFAULT_KERNELS):
    """Win_noShift_Attention: `x + conv_a(x) * sigmoid(conv_b(x))` (docs/wacnn.md §4).

    Despite upstream's name the attention is shifted, by ws // 2. H and W must be
    multiples of ws. Args: x (B, H, W, C). Returns: (B, H, W, C).
    """
    k, xp = get_kernels(kernels), xp_of(x)
    B, H, W, C = x.shape
    shift = ws // 2
    a = x
    for u in range(3):
        a = residual_unit(a, params, f"{prefix}.conv_a.{u}", k)  # (B, H, W, C)
    mask = k.shift_attention_mask(H, W, ws, shift, xp) if shift else None  # (nW, N, N)
    b = k.window_attention_block(x, params, f"{prefix}.conv_b.0", num_heads, ws, shift, mask)
    attn = b
    for u in range(1, 4):
        b = residual_unit(b, params, f"{prefix}.conv_b.{u}", k)
    gate = _conv(b, params, f"{prefix}.conv_b.4", k)  # 1x1: the gate logits, (B, H, W, C)
    if taps is not None:
        taps.update({f"{tap_name}_conv_a": a, f"{tap_name}_attn": attn, f"{tap_name}_gate": gate})
        if mask is not None:
            taps[f"{tap_name}_mask"] = mask
    half = x.dtype.type(0.5)
    return x + a * (half + half * xp.tanh(half * gate))  # the gate sigmoid(g) = (1 + tanh(g/2)) / 2


# --- analysis and synthesis transforms (docs/wacnn.md §1) ----------------------------------------
# The layers of g_a and g_s, key `g_a.{i}` / `g_s.{i}` for entry i (output for an H x W image):
G_A = ("conv",    # 5x5 stride 2, 3 -> N         N @ H/2
       "gdn",
       "conv",    # N -> N                       N @ H/4
       "gdn",
       "attn0",   # windows window_sizes[0]
       "conv",    # N -> N                       N @ H/8
       "gdn",
       "conv",    # N -> M                       M @ H/16 (= y after the attention)
       "attn1")   # windows window_sizes[1]
G_S = ("attn1",   #                              M @ H/16
       "deconv",  # 5x5 stride 2, M -> N         N @ H/8
       "igdn",
       "deconv",  # N -> N                       N @ H/4
       "igdn",
       "attn0",
       "deconv",  # N -> N                       N @ H/2
       "igdn",
       "deconv")  # N -> 3                       3 @ H


def layer(kind, x, params, prefix, config, taps=None, kernels=DEFAULT_KERNELS):
    """One entry of G_A / G_S under the key prefix `g_a.{i}` / `g_s.{i}`: (B, h, w, C) -> (B, h', w', C')."""
    k = get_kernels(kernels)
    if kind == "conv":
        return _conv(x, params, prefix, k, stride=2)  # (B, h, w, Cin) -> (B, ceil(h/2), ceil(w/2), O)
    if kind == "deconv":  # ConvTranspose2d(k 5, stride 2, padding 2, output_padding 1)
        return k.conv_transpose2d(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"], stride=2, padding=2,
                                  output_padding=1)  # (B, h, w, Cin) -> (B, 2h, 2w, O)
    if kind in ("gdn", "igdn"):
        return getattr(k, kind)(x, params[f"{prefix}.beta"], params[f"{prefix}.gamma"])
    ws = config.window_sizes[int(kind[-1])]  # "attn0" / "attn1"
    _, h, w, _ = x.shape
    if h % ws or w % ws:
        raise ValueError(f"{prefix}: WACNN's attention needs the {h}x{w} map to be whole {ws}x{ws} windows; "
                         "image sides may be at most 3 short of a multiple of 64 (docs/wacnn.md §5)")
    return attention_block(x, params, prefix, config.num_heads, ws, taps, prefix.replace(".", ""), k)


def rows_geometry(kind, config):
    """How an entry of G_A / G_S reads rows (minstf/rows.py, docs/tiling.md §3): the RowLayer fields."""
    if kind == "conv":  # 5x5 stride 2: two rows of input beyond a band
        return dict(down=2, halo=2)
    if kind == "deconv":  # output row r gathers inputs (r - 2) / 2 .. (r + 2) / 2
        return dict(up=2, align=2, halo=1)
    if kind in ("gdn", "igdn"):
        return {}
    ws = config.window_sizes[int(kind[-1])]
    shift, reach = ws // 2, 3  # conv_a and the units after the attention: three 3x3 convs
    # bands of whole shifted windows, read with enough whole windows around them for the
    # three units to see real rows, and the half window the roll wraps in
    return dict(align=ws, offset=shift, halo=-(-reach // ws) * ws + shift)


def _rows(layers, name, params, config, k):
    return [RowLayer(lambda x, i=i, kind=kind: layer(kind, x, params, f"{name}.{i}", config, kernels=k),
                     **rows_geometry(kind, config)) for i, kind in enumerate(layers)]


def g_a_rows(params, config, kernels=DEFAULT_KERNELS):
    """G_A as row layers (minstf/rows.py)."""
    return _rows(G_A, "g_a", params, config, get_kernels(kernels))


def g_s_rows(params, config, kernels=DEFAULT_KERNELS):
    """G_S as row layers (minstf/rows.py)."""
    return _rows(G_S, "g_s", params, config, get_kernels(kernels))


def _run(layers, name, x, params, config, taps, k):
    for i, kind in enumerate(layers):
        x = layer(kind, x, params, f"{name}.{i}", config, taps, k)
        if taps is not None:
            taps[f"{name}{i}"] = x
    return x


def g_a(x, params, config, taps=None, kernels=DEFAULT_KERNELS):
    """Analysis transform, the layers of G_A. Args: x (B, H, W, 3). Returns: y (B, ceil(H/16), ceil(W/16), M)."""
    return _run(G_A, "g_a", x, params, config, taps, get_kernels(kernels))


def g_s(y_hat, params, config, taps=None, kernels=DEFAULT_KERNELS):
    """Synthesis transform, the layers of G_S. Args: y_hat (B, H4, W4, M). Returns: x_hat (B, 16*H4, 16*W4, 3),
    unclamped."""
    return _run(G_S, "g_s", y_hat, params, config, taps, get_kernels(kernels))
