"""The fast Swin pieces: window attention and the (shifted) Swin block by groups of windows.

The twins of `minstf/reference/swin.py` (same signatures), proven equal to them by
tests/test_kernels.py. A block runs by groups of windows (then by blocks of tokens for
the MLP), so that the wide intermediates (qkv: 3C, the MLP's 4C) stay a few MB, and
the groups run on all cores (`threads.parallel_blocks`). A group gathers its tokens
through `window_token_index`, which does the reference block's pad, roll and
partition in one copy, and writes back through it (reverse, roll back, crop).

Weights come from the flat params dict under upstream key names; functions take the key prefix.
"""
from functools import lru_cache, partial

import numpy as np

from ..backend import on_host, xp_of
from ..reference.swin import relative_position_bias, window_partition
from .layouts import matmul_into
from .ops import add, gelu, layer_norm, linear, softmax_inplace
from .threads import BLOCK, parallel_blocks, parallel_rows, row_blocks


# --- attention and blocks ------------------------------------------------------
def window_attention(x, params, prefix, num_heads, mask=None):
    """Multi-head self-attention inside each window, with relative position bias.

    Args: x (B_, N, C) windows; mask (nW, N, N) or None, with B_ = B*nW.
    Returns: (B_, N, C).
    Runs by groups of windows (`_attention_of_group`), on all cores where possible.
    """
    xp = xp_of(x)
    B_, N, C = x.shape
    attend = _group_attention(params, prefix, num_heads, N, B_, mask, xp)
    out = xp.empty((B_, N, C), dtype=x.dtype)
    parallel_blocks(lambda w0, n: attend(x[w0:w0 + n], w0, out[w0:w0 + n]), _window_groups(B_, N, C), on_host(x))
    return out


def _window_groups(B_, N, C):
    """[(first window, count)]: groups whose qkv (3C values a token) holds ~8 MB."""
    return row_blocks(B_, N * 3 * C, block_elements=BLOCK["window group"])


def _group_attention(params, prefix, num_heads, N, B_, mask, xp):
    """attend(windows, w0, out): attention of the windows w0.. of a group, (n, N, C) -> out (n, N, C).

    qkv product, the attention itself (`_attend`, in cache-sized blocks), proj product.
    """
    p = lambda name: params[f"{prefix}.{name}"]  # noqa: E731
    C = p("proj.weight").shape[0]
    nH, hd = num_heads, C // num_heads
    if mask is not None:
        nW = mask.shape[0]
        mask = xp.ascontiguousarray(xp.broadcast_to(mask.swapaxes(-1, -2), (B_ // nW, nW, N, N)))
        mask = mask.reshape(B_, N, N)  # (B_, N_k, N_q): the mask of each window, keys first
    pos_bias = relative_position_bias(p("relative_position_bias_table"), int(round(N ** 0.5)))  # (nH, N_q, N_k)
    kernel = partial(_attend, qkv_bias=p("qkv.bias"), pos_bias=xp.ascontiguousarray(pos_bias.transpose(2, 0, 1)))

    def attend(windows, w0, out):
        n = windows.shape[0]
        qkv = linear(windows, p("qkv.weight"))  # (n, N, 3C); the bias is added in _attend
        heads = xp.empty((n, N, nH, hd), dtype=windows.dtype)
        parallel_rows(kernel, heads, qkv, *([] if mask is None else [mask[w0:w0 + n]]), block=BLOCK["attention"])
        linear(heads.reshape(n, N, C), p("proj.weight"), p("proj.bias"), out=out)

    return attend


def _attend(out, qkv, mask=None, *, qkv_bias, pos_bias):
    """softmax(q k^T / sqrt(hd) + bias + mask) v for a block of b windows.

    Args: out (b, N, nH, hd); qkv (b, N, 3C) without its bias; mask (b, N_k, N_q) or None;
    pos_bias (N_k, nH, N_q). The scores are kept keys first, (N_k, b, nH, N_q): then the
    softmax over the keys works on N rows of b*nH*N values each, with whole-row
    operations, instead of on b*nH*N rows of only N values.
    """
    xp = xp_of(qkv)
    b, N, nH, hd = out.shape
    qkv += qkv_bias  # in place, (3C,) on every token
    q, k, v = (qkv.reshape(b, N, 3, nH, hd)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (b, nH, N, hd)
    scores = xp.empty((N, b, nH, N), dtype=qkv.dtype)  # [key m, window, head, query n]
    matmul_into(k, q.swapaxes(-1, -2), scores.transpose(1, 2, 0, 3))  # (b, nH, m, n) = k_m . q_n
    scores *= qkv.dtype.type(hd ** -0.5)
    scores += pos_bias[:, None]  # (N_k, 1, nH, N_q)
    if mask is not None:
        scores += mask.transpose(1, 0, 2)[:, :, None]  # (N_k, b, 1, N_q)
    softmax_inplace(scores.reshape(N, -1), axis=0)  # over the keys
    matmul_into(scores.transpose(1, 2, 3, 0), v, out.transpose(0, 2, 1, 3))  # (b, nH, n, hd) = sum_m p v_m


def mlp_residual(x, params, prefix):
    """x + fc2(GELU(fc1(LayerNorm(x)))), in place on x, by blocks of tokens (the 4C-wide hidden
    activations of one block stay small). x (B, L, C) -> the same array."""
    p = lambda name: params[f"{prefix}.{name}"]  # noqa: E731
    x = xp_of(x).ascontiguousarray(x)
    rows = x.reshape(-1, x.shape[-1])  # (B*L, C), a view

    def block(lo, n):  # tokens lo .. lo+n-1
        r = rows[lo:lo + n]
        h = linear(layer_norm(r, p("norm2.weight"), p("norm2.bias")), p("mlp.fc1.weight"))  # (n, C) -> (n, 4C)
        h = gelu(h, bias=p("mlp.fc1.bias"), out=h)  # GELU(h + b1), in place
        h = linear(h, p("mlp.fc2.weight"))  # (n, 4C) -> (n, C)
        add(r, h, p("mlp.fc2.bias"), out=r)  # r + h + b2

    parallel_blocks(block, row_blocks(rows.shape[0], p("mlp.fc1.weight").shape[0], block_elements=BLOCK["mlp tokens"]),
                    on_host(x))  # the hidden activations of a block: ~8 MB
    return x


@lru_cache(maxsize=64)
def window_token_index(H, W, ws, shift, xp=np):
    """(nW, N) int64: the token (h*W + w) at each place of each window of the map rolled by
    -shift, in window_partition order; -1 where the place is padding (Hp, Wp > H, W).

    Gathering tokens by this index does pad + roll + window_partition in one copy, and
    writing back through it does window_reverse + roll back + crop (docs/architecture.md §2.2-2.5).
    """
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    r = (xp.arange(Hp) + shift) % Hp  # rolled row i shows row (i + shift) mod Hp
    c = (xp.arange(Wp) + shift) % Wp
    token = xp.where((r[:, None] < H) & (c[None, :] < W), r[:, None] * W + c[None, :], -1)  # (Hp, Wp)
    return window_partition(token[None, :, :, None], ws)[..., 0]  # (1, Hp, Wp, 1) -> (nW, N)


def swin_block(x, H, W, params, prefix, num_heads, ws, shift=0, mask=None):
    """One Swin block: (shifted) window attention and an MLP, each with a residual (docs/architecture.md §2.6).

    Args: x tokens (B, H*W, C); shift 0 or ws//2; mask (nW, N, N) when shift > 0.
    Returns: tokens (B, H*W, C), a new array.
    By groups of windows, on all cores where possible: gather the group's tokens
    (`window_token_index`: padding, shift and partition in one copy), LayerNorm,
    attention, and write token + attention back to each token's place.
    """
    xp = xp_of(x)
    B, L, C = x.shape
    index = window_token_index(H, W, ws, shift, xp)  # (nW, N)
    nW, N = index.shape
    padded = H % ws != 0 or W % ws != 0
    index = xp.where(index < 0, -1, index + L * xp.arange(B)[:, None, None]).reshape(B * nW, N)  # (B_, N)
    rows = xp.ascontiguousarray(x).reshape(B * L, C)
    new = xp.empty_like(rows)  # (B*L, C): x + attention
    attend = _group_attention(params, f"{prefix}.attn", num_heads, N, B * nW, mask if shift else None, xp)

    def group(w0, n):  # windows w0 .. w0+n-1
        idx = index[w0:w0 + n]  # (n, N)
        tokens = rows[xp.maximum(idx, 0)]  # (n, N, C): pad + roll + partition
        h = layer_norm(tokens, params[f"{prefix}.norm1.weight"], params[f"{prefix}.norm1.bias"])
        if padded:
            h[idx < 0] = 0  # zero padding after the LayerNorm: padded tokens are exact zeros
        attend(h, w0, h)  # (n, N, C), in place
        h += tokens
        if padded:
            new[idx[idx >= 0]] = h[idx >= 0]  # reverse + roll back + crop
        else:
            new[idx] = h

    parallel_blocks(group, _window_groups(B * nW, N, C), on_host(x))
    return mlp_residual(new.reshape(B, L, C), params, prefix)
