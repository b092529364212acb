"""The fast twin of `minstf/reference/wacnn.py`: the transposed convolution by output phases.

The reference scatters one k x k stamp per tap into a canvas, with a strided add per tap.
Here the same sums are gathered instead. Output pixel (r, c) of a stride-s transposed
convolution only meets the taps a with a = r + padding (mod s), so the outputs split
into s*s phases (r mod s, c mod s), and each phase is an ordinary stride-1 correlation
of the input with its own sub-kernel (WACNN's k 5, stride 2: 3x3, 3x2, 2x3 and 2x2 taps,
25 in all, none of them multiplying a zero):

    out[s*m + r, s*n + c] = bias + sum over taps (t, a) of phase r, (u, b) of phase c of
                            x[m - t, n - u] @ weight[:, :, a, b]          a = r + padding + s*t

Each phase is computed like `kernels.ops.conv2d` computes a convolution, chosen by which
moves fewer bytes:

    im2col (O >= IM2COL_MIN_OUT, WACNN's 192 -> 192 layers): per block of output rows, the
        phase's taps side by side, (pixels, taps*Cin), then one product with (taps*Cin, O)
    taps first (few output channels, the last layer 192 -> 3): Y = x @ (Cin, taps*O), then
        the shifted sums of Y's column groups

and written into the strided view out[:, r::s, c::s]. Blocks of rows of every phase run
on all cores (`threads.parallel_blocks`), so one thread gathers while another multiplies.

The window attention block runs by groups of windows like the fast Swin block
(`kernels/swin.py`), without LayerNorm or MLP. GDN and IGDN are the reference functions
(one product and two passes, as fast as PyTorch's).
"""
from ..backend import on_host, xp_of
from .layouts import derived
from .swin import _group_attention, _window_groups, window_token_index
from .threads import BLOCK, parallel_blocks, row_blocks

IM2COL_MIN_OUT = 32  # below this many output channels, gathering the inputs costs more than the product


def _phases(size_out, stride, padding, k):
    """Per output phase r: [(t, a)], output position stride*m + r reads input m - t through tap a; and the
    number of outputs of the phase."""
    phases = []
    for r in range(stride):
        taps = [((a - r - padding) // stride, a) for a in range(k) if (a - r - padding) % stride == 0]
        phases.append((taps, len(range(r, size_out, stride))))
    return phases


def _phase_matrix(weight, taps, first):
    """(taps*Cin, O) for im2col (first=False) or (Cin, taps*O) for taps first (first=True)."""
    xp = xp_of(weight)
    blocks = [weight[:, :, a, b] for _, a, _, b in taps]  # each (Cin, O)
    return xp.concatenate(blocks, axis=1) if first else xp.concatenate(blocks, axis=0)


def conv_transpose2d(x, weight, bias=None, stride=2, padding=2, output_padding=1):
    """PyTorch's ConvTranspose2d by output phases (see the module docstring).

    Args: x (B, H, W, Cin); weight (Cin, O, k, k); bias (O,) or None.
    Returns: (B, Ho, Wo, O), Ho = (H - 1)*stride - 2*padding + k + output_padding.
    """
    xp = xp_of(x)
    B, H, W, Cin = x.shape
    _, O, k, _ = weight.shape
    s = stride
    Ho = (H - 1) * s - 2 * padding + k + output_padding
    Wo = (W - 1) * s - 2 * padding + k + output_padding
    rows, cols = _phases(Ho, s, padding, k), _phases(Wo, s, padding, k)
    # zero rows / columns around x so that every input m - t a phase reads exists
    ts = [t for taps, _ in rows for t, _ in taps] or [0]
    us = [u for taps, _ in cols for u, _ in taps] or [0]
    top, left = max(0, max(ts)), max(0, max(us))
    bottom = max([0] + [n - 1 - t - (H - 1) for taps, n in rows for t, _ in taps])
    right = max([0] + [n - 1 - u - (W - 1) for taps, n in cols for u, _ in taps])
    xpad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # (B, H+top+bottom, W+left+right, Cin)
    out = xp.empty((B, Ho, Wo, O), dtype=x.dtype)
    zero_bias = xp.zeros(O, dtype=x.dtype) if bias is None else bias
    use_im2col = O >= IM2COL_MIN_OUT

    def phase_rows(b, r, c, m0, n):
        """Output rows m0 .. m0+n-1 of phase (r, c) of image b."""
        taps = [(t, a, u, bb) for t, a in rows[r][0] for u, bb in cols[c][0]]
        Nc = cols[c][1]
        dest = out[b, r + s * m0:r + s * (m0 + n):s, c::s]  # (n, Nc, O), a strided view of out
        if not taps:
            dest[...] = zero_bias
            return
        tag = f"deconv phase {r},{c} s{s} p{padding} {'taps first' if not use_im2col else 'im2col'}"
        w = derived(weight, tag, lambda wt: _phase_matrix(wt, taps, first=not use_im2col))
        if use_im2col:
            g = xp.empty((n, Nc, len(taps) * Cin), dtype=x.dtype)  # (n, Nc, taps*Cin)
            for i, (t, _, u, _) in enumerate(taps):
                g[:, :, i * Cin:(i + 1) * Cin] = xpad[b, top + m0 - t:top + m0 - t + n, left - u:left - u + Nc]
            y = g.reshape(n * Nc, -1) @ w  # (n*Nc, taps*Cin) @ (taps*Cin, O) -> (n*Nc, O)
            xp.add(y.reshape(n, Nc, O), zero_bias, out=dest)
            return
        t_lo, t_hi = min(t for t, *_ in taps), max(t for t, *_ in taps)
        r0 = top + m0 - t_hi  # the padded input rows these outputs read: r0 .. r0 + n + t_hi - t_lo - 1
        xr = xpad[b, r0:r0 + n + t_hi - t_lo]
        y = (xr.reshape(-1, Cin) @ w).reshape(xr.shape[0], xr.shape[1], len(taps) * O)  # (rows, Wp, taps*O)
        acc = xp.empty((n, Nc, O), dtype=x.dtype)
        acc[...] = zero_bias
        for i, (t, _, u, _) in enumerate(taps):
            acc += y[top + m0 - t - r0:top + m0 - t - r0 + n, left - u:left - u + Nc, i * O:(i + 1) * O]
        dest[...] = acc

    per_row = max(Wo // s, 1) * (Cin if use_im2col else O) * max(len(rows[0][0]) * len(cols[0][0]), 1)
    blocks = [(b, r, c, m0, n) for b in range(B) for r in range(s) for c in range(s)
              for m0, n in row_blocks(rows[r][1], per_row, block_elements=BLOCK["im2col"])]
    parallel_blocks(phase_rows, blocks, on_host(x))
    return out


def window_attention_block(x, params, prefix, num_heads, ws, shift=0, mask=None):
    """WinBasedAttention (reference: `minstf/reference/wacnn.py`), by groups of windows.

    Like the fast Swin block, without its LayerNorm and MLP: each group gathers its tokens
    through `window_token_index` (roll and partition in one copy), attends on all cores
    and writes token + attention back to each token's place (reverse and roll back).
    Args: x (B, H, W, C), H and W multiples of ws; mask (nW, N, N), used when shift > 0.
    Returns: (B, H, W, C), a new array.
    """
    xp = xp_of(x)
    B, H, W, C = x.shape
    if H % ws or W % ws:
        raise ValueError(f"window attention needs a map whose sides are multiples of {ws}, got {H}x{W}")
    index = window_token_index(H, W, ws, shift, xp)  # (nW, N): token h*W + w at each window place
    nW, N = index.shape
    index = (index + H * W * xp.arange(B)[:, None, None]).reshape(B * nW, N)  # (B_, N) over the batch
    rows = xp.ascontiguousarray(x).reshape(B * H * W, C)  # (B*H*W, C)
    new = xp.empty_like(rows)
    attend = _group_attention(params, f"{prefix}.attn", num_heads, N, B * nW, mask if shift else None, xp)

    def group(w0, n):  # windows w0 .. w0+n-1
        idx = index[w0:w0 + n]  # (n, N)
        tokens = rows[idx]  # (n, N, C): roll + partition
        h = xp.empty_like(tokens)
        attend(tokens, w0, h)  # (n, N, C)
        h += tokens  # the shortcut
        new[idx] = h  # reverse + roll back

    parallel_blocks(group, _window_groups(B * nW, N, C), on_host(x))
    return new.reshape(B, H, W, C)
