"""Stateless primitives: linear, conv2d, pixel_shuffle, layer_norm, gelu, softmax.

Every function takes its array module from its inputs (`xp_of`), so the same
code runs on NumPy and CuPy, and keeps float32 in, float32 out. Weights keep
PyTorch layouts (Linear `(out, in)`, Conv2d `(O, I, kH, kW)`); feature maps are
channels-last `(B, H, W, C)`.

Convolutions are sums of plain matrix products. For stride 1 the zero-padded
map is flattened to rows `(B*Hp*Wp, Cin)`; kernel tap `(dy, dx)` then reads the
rows shifted by `dy*Wp + dx`, so each tap is one contiguous slice times a
`(Cin, O)` matrix, with no im2col copy. Rows that fall on the padding columns
produce garbage that is cropped at the end:

    padded map (Hp x Wp)      flat rows             output rows
    +---------+--+            [ x x x x x . . ]      l = b*Hp*Wp + h*Wp + w
    |  image  |p |   --->     tap (dy,dx) reads      keep w < Wo, h < Ho
    +---------+--+            row l + dy*Wp + dx
"""
import math

from .backend import erf, xp_of

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def linear(x, weight, bias=None):
    """`x @ weight.T + bias` over the last axis.

    Args: x (..., in); weight (out, in); bias (out,) or None.
    Returns: (..., out).
    """
    lead = x.shape[:-1]
    y = x.reshape(-1, x.shape[-1]) @ weight.T  # (..., in) -> (rows, out): one GEMM
    if bias is not None:
        y += bias
    return y.reshape(*lead, weight.shape[0])  # (rows, out) -> (..., out)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation with zero padding, channels-last.

    Args: x (B, H, W, Cin); weight (O, Cin, k, k); bias (O,) or None.
    Returns: (B, Ho, Wo, O) with Ho = (H + 2*padding - k) // stride + 1.
    """
    xp = xp_of(x, weight)
    B, H, W, Cin = x.shape
    O, _, k, _ = weight.shape
    if padding:
        x = xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))  # (B, Hp, Wp, Cin)
    _, Hp, Wp, _ = x.shape
    Ho, Wo = (Hp - k) // stride + 1, (Wp - k) // stride + 1
    w = xp.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # (O, Cin, k, k) -> (k, k, Cin, O)
    if stride != 1:
        # im2col on strided views: one column block per tap, then one GEMM
        taps = [x[:, dy:dy + stride * (Ho - 1) + 1:stride, dx:dx + stride * (Wo - 1) + 1:stride]
                for dy in range(k) for dx in range(k)]  # k*k views (B, Ho, Wo, Cin)
        cols = xp.concatenate(taps, axis=-1)  # (B, Ho, Wo, k*k*Cin)
        out = linear(cols, w.reshape(k * k * Cin, O).T, bias)  # (B, Ho, Wo, O)
        return out
    flat = x.reshape(B * Hp * Wp, Cin)  # (B, Hp, Wp, Cin) -> (B*Hp*Wp, Cin)
    L = (B - 1) * Hp * Wp + (Ho - 1) * Wp + Wo  # rows up to the last valid output
    out = xp.empty((B * Hp * Wp, O), dtype=x.dtype)
    for dy in range(k):
        for dx in range(k):
            off = dy * Wp + dx
            if dy == 0 and dx == 0:
                xp.matmul(flat[:L], w[0, 0], out=out[:L])
            else:
                out[:L] += flat[off:off + L] @ w[dy, dx]
    if bias is not None:
        out[:L] += bias
    out = out.reshape(B, Hp, Wp, O)[:, :Ho, :Wo]  # (B*Hp*Wp, O) -> (B, Ho, Wo, O), crop garbage
    return xp.ascontiguousarray(out)


def pixel_shuffle(x, r):
    """PyTorch's PixelShuffle on channels-last maps.

    Input channel `c*r*r + i*r + j` of pixel (h, w) -> output channel c at (h*r + i, w*r + j).
    Args: x (B, H, W, C*r*r). Returns: (B, H*r, W*r, C).
    """
    B, H, W, Crr = x.shape
    C = Crr // (r * r)
    x = x.reshape(B, H, W, C, r, r)  # (B, H, W, C*r*r) -> (B, H, W, C, i, j)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # -> (B, H, i, W, j, C)
    return x.reshape(B, H * r, W * r, C)  # -> (B, H*r, W*r, C)


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis with biased variance. x (..., C) -> (..., C)."""
    xp = xp_of(x)
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    d *= 1.0 / xp.sqrt(var + xp.float32(eps))
    d *= weight
    d += bias
    return d


def gelu(x):
    """Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))` (not the tanh approximation)."""
    xp = xp_of(x)
    y = erf(x * xp.float32(_SQRT_HALF))
    y += 1.0
    y *= x
    y *= xp.float32(0.5)
    return y


def softmax(x, axis=-1):
    """Numerically stable softmax along `axis`."""
    xp = xp_of(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e
