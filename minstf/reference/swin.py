"""The reference Swin Transformer pieces of STF: windows, attention, the (shifted) Swin block.

Read top to bottom, this is Liu et al.'s Swin block as STF uses it
(docs/architecture.md §2.2–2.6), written on whole arrays:

    tokens (B, H*W, C) --LayerNorm--> map (B, H, W, C) --pad--> (B, Hp, Wp, C)
        --roll by -shift--> --partition--> windows (B*nW, N, C) --attention-->
        --reverse--> (B, Hp, Wp, C) --roll by +shift--> --crop--> + shortcut
        --> x + MLP(LayerNorm(x))

Tokens are row-major (`L = H*W`, token `h*W + w`); a window holds `N = ws*ws`
tokens; a map padded to whole windows has `nW` windows, `B_ = B*nW` in a batch.
Weights come from the flat params dict under upstream key names, e.g.
`params["layers.0.blocks.1.attn.qkv.weight"]`; functions take the key prefix.

The fast twins (`minstf/kernels/swin.py`) gather a group of windows straight from
the tokens by an index and never build the padded, rolled map; `tests/test_kernels.py`
proves them equal to these.
"""
import numpy as np

from ..backend import to_device, xp_of
from .ops import gelu, layer_norm, linear, softmax


# --- windows -----------------------------------------------------------------
def window_partition(x, ws):
    """Cut a map into non-overlapping ws x ws windows.

    Args: x (B, Hp, Wp, C) with Hp, Wp multiples of ws.
    Returns: (B*nW, N, C); windows ordered batch, window row, window column;
    token n = i*ws + j for pixel (i, j) of a window.
    """
    B, Hp, Wp, C = x.shape
    x = x.reshape(B, Hp // ws, ws, Wp // ws, ws, C)  # (B, Hp, Wp, C) -> (B, nh, ws, nw, ws, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # -> (B, nh, nw, ws, ws, C)
    return x.reshape(-1, ws * ws, C)  # -> (B*nW, N, C)


def window_reverse(windows, ws, Hp, Wp):
    """Put windows back together: the inverse of `window_partition`, (B*nW, N, C) -> (B, Hp, Wp, C)."""
    C = windows.shape[-1]
    x = windows.reshape(-1, Hp // ws, Wp // ws, ws, ws, C)  # -> (B, nh, nw, ws, ws, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # -> (B, nh, ws, nw, ws, C)
    return x.reshape(-1, Hp, Wp, C)  # -> (B, Hp, Wp, C)


# --- relative position bias and the shift mask -------------------------------------
def relative_position_index(ws):
    """(N, N) int64: the row of the bias table for query n and key m (docs/architecture.md §2.3).

    Tokens n = (r, c) and m = (r', c') of a window are (r - r', c - c') apart, each in
    -(ws-1)..ws-1; the table has (2ws-1)^2 rows, one per offset, row-major.
    """
    r, c = np.divmod(np.arange(ws * ws), ws)  # (N,), (N,): window coordinates of each token
    dr = r[:, None] - r[None, :] + (ws - 1)  # (N, N), 0 .. 2ws-2
    dc = c[:, None] - c[None, :] + (ws - 1)
    return (dr * (2 * ws - 1) + dc).astype(np.int64)


def relative_position_bias(table, ws):
    """The bias of every head for every query and key: table ((2ws-1)^2, nH) -> (nH, N, N)."""
    xp = xp_of(table)
    index = to_device(relative_position_index(ws), xp)  # (N, N)
    return table[index].transpose(2, 0, 1)  # (N, N, nH) -> (nH, N, N)


def shift_attention_mask(H, W, ws, shift, xp=np):
    """The mask of shifted-window attention for a map of H x W tokens (docs/architecture.md §2.5).

    After the cyclic roll by -shift, a window at the bottom or right edge holds pixels
    from opposite ends of the map. The padded map (Hp, Wp) is cut into 3 x 3 regions
    by the rows and columns `Hp-ws` and `Hp-shift` (`Wp-ws`, `Wp-shift`); a query may
    attend only to keys of its own region.
    Returns: (nW, N, N) float32, 0 within a region and -100 across regions.
    """
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    label = np.zeros((1, Hp, Wp, 1))  # region number of every pixel of the rolled map
    region = 0
    for rows in (slice(0, Hp - ws), slice(Hp - ws, Hp - shift), slice(Hp - shift, Hp)):
        for cols in (slice(0, Wp - ws), slice(Wp - ws, Wp - shift), slice(Wp - shift, Wp)):
            label[:, rows, cols, :] = region
            region += 1
    label = window_partition(label, ws)[..., 0]  # (1, Hp, Wp, 1) -> (nW, N)
    mask = np.where(label[:, :, None] == label[:, None, :], 0.0, -100.0)  # (nW, N, N)
    return to_device(mask.astype(np.float32), xp)


# --- attention and the block ----------------------------------------------------
def window_attention(x, params, prefix, num_heads, mask=None):
    """Multi-head self-attention inside each window, with relative position bias (§2.4).

        Attention(Q, K, V) = softmax(Q K^T / sqrt(hd) + B + mask) V

    Args: x (B_, N, C) windows; mask (nW, N, N) or None, B_ = B*nW.
    Returns: (B_, N, C).
    """
    p = lambda name: params[f"{prefix}.{name}"]  # noqa: E731
    B_, N, C = x.shape
    nH, hd = num_heads, C // num_heads
    qkv = linear(x, p("qkv.weight"), p("qkv.bias"))  # (B_, N, 3C)
    qkv = qkv.reshape(B_, N, 3, nH, hd).transpose(2, 0, 3, 1, 4)  # -> (3, B_, nH, N, hd)
    q, k, v = qkv[0], qkv[1], qkv[2]  # each (B_, nH, N, hd)
    q = q * x.dtype.type(hd ** -0.5)
    attn = q @ k.swapaxes(-1, -2)  # (B_, nH, N, N): query n, key m
    attn = attn + relative_position_bias(p("relative_position_bias_table"), int(round(N ** 0.5)))
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.reshape(B_ // nW, nW, nH, N, N) + mask[None, :, None]  # the mask of each window
        attn = attn.reshape(B_, nH, N, N)
    attn = softmax(attn, axis=-1)  # over the keys
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(B_, N, C)  # (B_, nH, N, hd) -> (B_, N, C)
    return linear(out, p("proj.weight"), p("proj.bias"))


def mlp(x, params, prefix):
    """The block's feed-forward network: fc2(GELU(fc1(x))), (..., C) -> (..., 4C) -> (..., C)."""
    h = gelu(linear(x, params[f"{prefix}.fc1.weight"], params[f"{prefix}.fc1.bias"]))  # (..., 4C)
    return linear(h, params[f"{prefix}.fc2.weight"], params[f"{prefix}.fc2.bias"])  # (..., C)


def swin_block(x, H, W, params, prefix, num_heads, ws, shift=0, mask=None):
    """One Swin block: (shifted) window attention and an MLP, each with a residual (§2.6).

    Args: x tokens (B, H*W, C); shift 0 or ws//2; mask (nW, N, N), used when shift > 0.
    Returns: tokens (B, H*W, C).
    """
    xp = xp_of(x)
    p = lambda name: params[f"{prefix}.{name}"]  # noqa: E731
    B, L, C = x.shape
    shortcut = x
    x = layer_norm(x, p("norm1.weight"), p("norm1.bias")).reshape(B, H, W, C)  # (B, L, C) -> (B, H, W, C)
    pad_b, pad_r = -H % ws, -W % ws
    x = xp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))  # -> (B, Hp, Wp, C), zeros after the norm
    Hp, Wp = H + pad_b, W + pad_r
    if shift:
        x = xp.roll(x, (-shift, -shift), axis=(1, 2))  # cyclic shift up and left
    windows = window_partition(x, ws)  # -> (B*nW, N, C)
    windows = window_attention(windows, params, f"{prefix}.attn", num_heads, mask if shift else None)
    x = window_reverse(windows, ws, Hp, Wp)  # -> (B, Hp, Wp, C)
    if shift:
        x = xp.roll(x, (shift, shift), axis=(1, 2))  # shift back
    x = x[:, :H, :W].reshape(B, L, C)  # crop the padding: -> (B, L, C)
    x = shortcut + x
    return x + mlp(layer_norm(x, p("norm2.weight"), p("norm2.bias")), params, f"{prefix}.mlp")
