"""Swin Transformer pieces of STF: windows, attention, blocks, resamplers, stages (STF.md §2).

Tokens are `(B, L, C)` with `L = H*W` in row-major order; inside a block they
are viewed as maps `(B, H, W, C)`, padded to whole windows `(B, Hp, Wp, C)` and
cut into `nW` windows of `N = ws*ws` tokens, `B_ = B*nW` windows in all.

Speed: a block runs by groups of windows (then by blocks of tokens for the MLP),
so that the wide intermediates (qkv: 3C, the MLP's 4C) stay a few MB, and the
groups run on all cores (`backend.parallel_blocks`). A group gathers its tokens
through `window_token_index`, which does padding, cyclic shift and partition in
one copy; `window_partition` / `window_reverse` / `shift_attention_mask` say the
same thing on whole maps.

Weights come from the flat params dict under upstream key names, e.g.
`params["layers.0.blocks.1.attn.qkv.weight"]`; functions take the key prefix.
"""
from functools import lru_cache, partial

import numpy as np

from .backend import matmul_into, on_host, parallel_blocks, parallel_rows, row_blocks, to_device, xp_of
from .ops import add, conv2d, gelu, layer_norm, linear, pixel_shuffle, softmax_inplace


# --- windows -----------------------------------------------------------------
def window_partition(x, ws):
    """Cut a map into non-overlapping windows.

    Args: x (B, Hp, Wp, C) with Hp, Wp multiples of ws.
    Returns: (B*nW, ws*ws, C); windows ordered batch, window row, window column;
    token n = i*ws + j for pixel (i, j) of a window.
    """
    B, Hp, Wp, C = x.shape
    x = x.reshape(B, Hp // ws, ws, Wp // ws, ws, C)  # (B, Hp, Wp, C) -> (B, nh, ws, nw, ws, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # -> (B, nh, nw, ws, ws, C)
    return x.reshape(-1, ws * ws, x.shape[-1])  # -> (B*nW, N, C)


def window_reverse(windows, ws, Hp, Wp):
    """Inverse of `window_partition`.

    Args: windows (B*nW, ws*ws, C). Returns: (B, Hp, Wp, C).
    """
    C = windows.shape[-1]
    nh, nw = Hp // ws, Wp // ws
    x = windows.reshape(-1, nh, nw, ws, ws, C)  # (B*nW, N, C) -> (B, nh, nw, ws, ws, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # -> (B, nh, ws, nw, ws, C)
    return x.reshape(-1, Hp, Wp, C)  # -> (B, Hp, Wp, C)


@lru_cache(maxsize=None)
def _relative_position_index(ws):
    r, c = np.divmod(np.arange(ws * ws), ws)  # window coordinates of token n
    dr = r[:, None] - r[None, :] + (ws - 1)  # (N, N), 0..2ws-2
    dc = c[:, None] - c[None, :] + (ws - 1)
    index = (dr * (2 * ws - 1) + dc).astype(np.int64)
    index.flags.writeable = False
    return index


def relative_position_index(ws):
    """(N, N) int64: row of the bias table for query n and key m (STF.md §2.3)."""
    return _relative_position_index(ws).copy()


def shift_attention_mask(H, W, ws, shift, xp=np):
    """The shifted-window mask of a stage, on the padded size (STF.md §2.5).

    Args: H, W the stage's map size; Hp, Wp = H, W rounded up to multiples of ws.
    Returns: (nW, N, N) float32, 0 where query and key come from the same
    region of the rolled map, -100 otherwise.
    """
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws

    def bands(n):  # band index 0, 1, 2 of each row (column) of the rolled map
        return np.searchsorted([n - ws, n - shift], np.arange(n), side="right")

    label = 3 * bands(Hp)[:, None] + bands(Wp)[None, :]  # (Hp, Wp), values 0..8
    label = window_partition(label[None, :, :, None], ws)[..., 0]  # (1, Hp, Wp, 1) -> (nW, N)
    mask = np.where(label[:, :, None] == label[:, None, :], 0.0, -100.0)  # (nW, N, N)
    return to_device(mask.astype(np.float32), xp)


# --- attention and blocks ------------------------------------------------------
def relative_position_bias(params, prefix, ws):
    """(nH, N, N): the bias table gathered by the relative position index (STF.md §2.3)."""
    xp = xp_of(params[f"{prefix}.relative_position_bias_table"])
    table = params[f"{prefix}.relative_position_bias_table"]  # ((2ws-1)^2, nH)
    index = to_device(_relative_position_index(ws), xp).reshape(-1)
    N = ws * ws
    return xp.ascontiguousarray(table[index].reshape(N, N, -1).transpose(2, 0, 1))  # (N*N, nH) -> (nH, N, N)


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
    return row_blocks(B_, N * 3 * C, block_elements=1 << 21)


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
    pos_bias = relative_position_bias(params, prefix, int(round(N ** 0.5)))  # (nH, N_q, N_k)
    kernel = partial(_attend, qkv_bias=p("qkv.bias"), pos_bias=xp.ascontiguousarray(pos_bias.transpose(2, 0, 1)))

    def attend(windows, w0, out):
        n = windows.shape[0]
        qkv = linear(windows, p("qkv.weight"))  # (n, N, 3C); the bias is added in _attend
        heads = xp.empty((n, N, nH, hd), dtype=windows.dtype)
        parallel_rows(kernel, heads, qkv, *([] if mask is None else [mask[w0:w0 + n]]), block=1 << 17)
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

    parallel_blocks(block, row_blocks(rows.shape[0], p("mlp.fc1.weight").shape[0], block_elements=1 << 21),
                    on_host(x))  # the hidden activations of a block: ~8 MB
    return x


@lru_cache(maxsize=64)
def window_token_index(H, W, ws, shift, xp=np):
    """(nW, N) int64: the token (h*W + w) at each place of each window of the map rolled by
    -shift, in window_partition order; -1 where the place is padding (Hp, Wp > H, W).

    Gathering tokens by this index does pad + roll + window_partition in one copy, and
    writing back through it does window_reverse + roll back + crop (STF.md §2.2-2.5).
    """
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    r = (xp.arange(Hp) + shift) % Hp  # rolled row i shows row (i + shift) mod Hp
    c = (xp.arange(Wp) + shift) % Wp
    token = xp.where((r[:, None] < H) & (c[None, :] < W), r[:, None] * W + c[None, :], -1)  # (Hp, Wp)
    return window_partition(token[None, :, :, None], ws)[..., 0]  # (1, Hp, Wp, 1) -> (nW, N)


def swin_block(x, H, W, params, prefix, num_heads, ws, shift=0, mask=None):
    """One Swin block: (shifted) window attention and an MLP, each with a residual (STF.md §2.6).

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


# --- embedding and resampling --------------------------------------------------
def patch_embed(x, params, patch_size, prefix="patch_embed"):
    """Image to tokens: pad to a multiple of patch_size, strided conv, LayerNorm (STF.md §2.1).

    Args: x (B, H, W, Cin) image. Returns: tokens (B, H1*W1, C), H1, W1.
    """
    xp = xp_of(x)
    _, H, W, _ = x.shape
    ph, pw = -H % patch_size, -W % patch_size
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))  # pad right / bottom
    x = conv2d(x, params[f"{prefix}.proj.weight"], params[f"{prefix}.proj.bias"],
               stride=patch_size)  # (B, H, W, Cin) -> (B, H1, W1, C)
    B, H1, W1, C = x.shape
    x = layer_norm(x, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    return x.reshape(B, H1 * W1, C), H1, W1  # (B, H1, W1, C) -> (B, L, C)


def patch_merging(x, H, W, params, prefix):
    """Encoder downsampling: 2x2 neighbours to channels, LayerNorm(4C), Linear 4C -> 2C (STF.md §2.7).

    Args: tokens (B, H*W, C). Returns: tokens (B, H'*W', 2C), H' = ceil(H/2), W' = ceil(W/2).
    """
    xp = xp_of(x)
    B, L, C = x.shape
    x = x.reshape(B, H, W, C)  # (B, L, C) -> (B, H, W, C)
    if H % 2 or W % 2:
        x = xp.pad(x, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    # order x0 (0,0), x1 (1,0), x2 (0,1), x3 (1,1) in (row, col) offsets
    x = xp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                       axis=-1)  # -> (B, H', W', 4C)
    _, H2, W2, _ = x.shape
    x = layer_norm(x, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    x = linear(x, params[f"{prefix}.reduction.weight"])  # (B, H', W', 4C) -> (B, H', W', 2C)
    return x.reshape(B, H2 * W2, 2 * C), H2, W2  # -> (B, L', 2C)


def patch_split(x, H, W, params, prefix):
    """Decoder upsampling: LayerNorm(C), Linear C -> 2C, PixelShuffle(2) (STF.md §2.8).

    Args: tokens (B, H*W, C). Returns: tokens (B, 4*H*W, C/2), 2H, 2W.
    """
    B, L, C = x.shape
    x = layer_norm(x, params[f"{prefix}.norm.weight"], params[f"{prefix}.norm.bias"])
    x = linear(x, params[f"{prefix}.reduction.weight"])  # (B, L, C) -> (B, L, 2C)
    x = pixel_shuffle(x.reshape(B, H, W, 2 * C), 2)  # (B, H, W, 2C) -> (B, 2H, 2W, C/2)
    return x.reshape(B, 4 * L, C // 2), 2 * H, 2 * W  # -> (B, 4L, C/2)


# --- one stage -----------------------------------------------------------------
def basic_layer(x, H, W, params, prefix, depth, num_heads, ws, resample=None, taps=None, tap_name=None):
    """One stage: `depth` blocks (odd ones shifted by ws//2), then the resampler (STF.md §2.9).

    Args: tokens (B, H*W, C); resample None, "merge" (PatchMerging) or "split" (PatchSplit).
    taps: optional dict; records `{tap_name}_blk{b}` (tokens after block b),
    `{tap_name}_mask` (the shift mask) and `{tap_name}_out` (after resampling).
    Returns: tokens, new H, new W.
    """
    shift = ws // 2
    mask = shift_attention_mask(H, W, ws, shift, xp_of(x)) if depth > 1 else None
    if taps is not None and mask is not None:
        taps[f"{tap_name}_mask"] = mask
    for b in range(depth):
        x = swin_block(x, H, W, params, f"{prefix}.blocks.{b}", num_heads, ws,
                       shift=shift if b % 2 else 0, mask=mask)
        if taps is not None:
            taps[f"{tap_name}_blk{b}"] = x
    if resample == "merge":
        x, H, W = patch_merging(x, H, W, params, f"{prefix}.downsample")
    elif resample == "split":
        x, H, W = patch_split(x, H, W, params, f"{prefix}.downsample")
    if taps is not None:
        taps[f"{tap_name}_out"] = x
    return x, H, W
