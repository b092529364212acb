"""The reference pieces of WACNN, the second upstream model (`cnn`, docs/wacnn.md):
the transposed convolution, GDN / IGDN, and the window attention without LayerNorm or MLP.

    conv_transpose2d   PyTorch's ConvTranspose2d: every input pixel scatters a k x k stamp
    gdn / igdn         generalized divisive normalization and its inverse, per pixel
    window_attention_block
                       roll -> partition -> attention -> reverse -> roll back -> + shortcut

The rest of WACNN (the residual units, the sigmoid-gated attention block, the layer
lists of g_a / g_s) is composition of these and of `reference/ops.py`, and lives in
`minstf/wacnn.py`, written over the kernel interface. Maps are channels-last
`(B, H, W, C)`; weights keep PyTorch's layouts: a transposed convolution's weight is
`(Cin, O, k, k)` (input channels first, the opposite of Conv2d's), GDN's gamma `(C, C)`.
"""
from ..backend import xp_of
from .ops import linear
from .swin import window_attention, window_partition, window_reverse


# --- the transposed convolution (docs/wacnn.md §2) -------------------------------------------
def conv_transpose2d(x, weight, bias=None, stride=2, padding=2, output_padding=1):
    """PyTorch's ConvTranspose2d, written as its definition: a scatter of k x k stamps.

        out[2i - p + a, 2j - p + b, o] += x[i, j, c] * weight[c, o, a, b]   (stride 2)

    Tap (a, b) of the kernel sends input pixel (i, j) to output pixel
    (stride*i - padding + a, stride*j - padding + b); positions outside the output
    are dropped. `output_padding` adds rows / columns at the bottom / right only.
    Args: x (B, H, W, Cin); weight (Cin, O, k, k); bias (O,) or None.
    Returns: (B, Ho, Wo, O), Ho = (H - 1)*stride - 2*padding + k + output_padding
    (= 2H for WACNN's k 5, stride 2, padding 2, output_padding 1).
    """
    xp = xp_of(x)
    B, H, W, Cin = x.shape
    _, O, k, _ = weight.shape
    Ho = (H - 1) * stride - 2 * padding + k + output_padding
    Wo = (W - 1) * stride - 2 * padding + k + output_padding
    # the uncropped canvas: stamps start at stride*i + a, before `padding` is taken off
    Hc, Wc = max(stride * (H - 1) + k, padding + Ho), max(stride * (W - 1) + k, padding + Wo)
    canvas = xp.zeros((B, Hc, Wc, O), dtype=x.dtype)  # (B, Hc, Wc, O)
    for a in range(k):
        for b in range(k):
            stamp = linear(x, weight[:, :, a, b].T)  # (B, H, W, Cin) -> (B, H, W, O): tap (a, b)
            canvas[:, a:a + stride * (H - 1) + 1:stride, b:b + stride * (W - 1) + 1:stride] += stamp
    out = canvas[:, padding:padding + Ho, padding:padding + Wo]  # crop: -> (B, Ho, Wo, O)
    return out if bias is None else out + bias


# --- GDN and IGDN (docs/wacnn.md §3) ----------------------------------------------------------
PEDESTAL = 2.0 ** -36  # (2^-18)^2, the reparametrisation offset squared
BETA_MIN = 1e-6


def nonnegative(param, minimum):
    """Upstream's lower-bounded reparametrisation: `max(p, sqrt(minimum + pedestal))^2 - pedestal`.

    GDN stores beta and gamma as square roots (plus a pedestal that keeps the gradient
    alive at 0); the effective value is never below `minimum`. The bound is a double
    rounded to the parameter's dtype, as upstream's float32 buffer; the rest is
    elementwise in that dtype (bit-exact with upstream in float32).
    """
    xp, f = xp_of(param), param.dtype.type
    bound = f((minimum + PEDESTAL) ** 0.5)
    p = xp.maximum(param, bound)
    return p * p - f(PEDESTAL)


def gdn_parameters(beta, gamma):
    """Effective (beta, gamma) of a GDN / IGDN layer from the stored ones: (C,), (C, C)."""
    return nonnegative(beta, BETA_MIN), nonnegative(gamma, 0.0)


def gdn(x, beta, gamma, inverse=False):
    """Generalized divisive normalization at every pixel (IGDN with `inverse=True`).

        norm_i = beta_i + sum_j gamma_ij * x_j^2
        GDN:  y_i = x_i / sqrt(norm_i)        IGDN: y_i = x_i * sqrt(norm_i)

    Args: x (B, H, W, C); beta (C,), gamma (C, C) as stored (row i = output channel).
    Returns: (B, H, W, C).
    """
    xp = xp_of(x)
    beta, gamma = gdn_parameters(beta, gamma)
    norm = linear(x * x, gamma, beta)  # (B, H, W, C) -> (B, H, W, C): a 1x1 conv of x^2
    return x * xp.sqrt(norm) if inverse else x / xp.sqrt(norm)


def igdn(x, beta, gamma):
    """Inverse GDN, the synthesis side: `x * sqrt(beta + gamma @ x^2)`, (B, H, W, C) -> same."""
    return gdn(x, beta, gamma, inverse=True)


# --- window attention without LayerNorm or MLP (docs/wacnn.md §4) -----------------------------
def window_attention_block(x, params, prefix, num_heads, ws, shift=0, mask=None):
    """WinBasedAttention: (shifted) window attention on a map, plus its input.

    Unlike STF's Swin block there is no LayerNorm, no MLP and no padding: H and W must
    be multiples of ws (upstream fails otherwise; docs/wacnn.md §5 gives the image sizes).
    Args: x (B, H, W, C) map; params[f"{prefix}.attn.*"]; mask (nW, N, N), used when shift > 0.
    Returns: (B, H, W, C).
    """
    xp = xp_of(x)
    B, H, W, C = x.shape
    if H % ws or W % ws:
        raise ValueError(f"window attention needs a map whose sides are multiples of {ws}, got {H}x{W}")
    shortcut = x
    if shift:
        x = xp.roll(x, (-shift, -shift), axis=(1, 2))  # cyclic shift up and left
    windows = window_partition(x, ws)  # (B, H, W, C) -> (B*nW, N, C)
    windows = window_attention(windows, params, f"{prefix}.attn", num_heads, mask if shift else None)
    x = window_reverse(windows, ws, H, W)  # -> (B, H, W, C)
    if shift:
        x = xp.roll(x, (shift, shift), axis=(1, 2))  # shift back
    return shortcut + x
