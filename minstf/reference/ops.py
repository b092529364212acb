"""The reference primitives: linear, conv2d, pixel_shuffle, layer_norm, gelu, softmax, end_conv.

Each function is the formula of the paper (or of PyTorch's layer of the same name)
on whole arrays, in as few lines as it takes to read it: no threads, no blocks,
no cached weight layouts. Feature maps are channels-last `(B, H, W, C)`; weights
keep PyTorch's layouts (Linear `(out, in)`, Conv2d `(O, Cin, k, k)`), so any array
can be compared with a PyTorch printout.

The fast twins of these functions are in `minstf/kernels/`, with the same
signatures; `tests/test_kernels.py` proves each pair equal within float32 noise.
Every function keeps its input's dtype (float32, or float64 in portable mode) and
takes its array module from its inputs (`xp_of`), so it runs on NumPy and CuPy.
"""
import math

from ..backend import erf, xp_of


def linear(x, weight, bias=None):
    """`x @ weight.T + bias` over the last axis: (..., in) -> (..., out)."""
    y = x @ weight.T  # (..., in) -> (..., out)
    return y if bias is None else y + bias


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation with zero padding (PyTorch's Conv2d), by im2col.

    Every output pixel gathers its k*k input pixels, each with Cin channels, into one
    row of k*k*Cin values; the convolution is then one matrix product with the kernel.
    Args: x (B, H, W, Cin); weight (O, Cin, k, k); bias (O,) or None.
    Returns: (B, Ho, Wo, O), Ho = (H + 2*padding - k) // stride + 1.
    """
    xp = xp_of(x)
    O, Cin, k, _ = weight.shape
    x = xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))  # (B, H+2p, W+2p, Cin)
    B, Hp, Wp, _ = x.shape
    Ho, Wo = (Hp - k) // stride + 1, (Wp - k) // stride + 1
    taps = [x[:, dy:dy + stride * (Ho - 1) + 1:stride, dx:dx + stride * (Wo - 1) + 1:stride]
            for dy in range(k) for dx in range(k)]  # k*k shifted views, each (B, Ho, Wo, Cin)
    cols = xp.stack(taps, axis=-1)  # (B, Ho, Wo, Cin, k*k): the order of weight's (Cin, k, k)
    cols = cols.reshape(B, Ho, Wo, Cin * k * k)  # -> (B, Ho, Wo, Cin*k*k)
    return linear(cols, weight.reshape(O, Cin * k * k), bias)  # -> (B, Ho, Wo, O)


def conv2d_gelu(x, weight, bias=None, stride=1, padding=0):
    """GELU(conv2d(x)), the pair that h_a, h_s and the slice networks repeat."""
    return gelu(conv2d(x, weight, bias, stride, padding))


def pixel_shuffle(x, r):
    """PyTorch's PixelShuffle on channels-last maps: (B, H, W, C*r*r) -> (B, H*r, W*r, C).

    Input channel `c*r*r + i*r + j` of pixel (h, w) becomes channel c of pixel (h*r + i, w*r + j).
    """
    B, H, W, Crr = x.shape
    C = Crr // (r * r)
    x = x.reshape(B, H, W, C, r, r)  # channel -> (c, i, j)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # -> (B, H, i, W, j, C)
    return x.reshape(B, H * r, W * r, C)  # -> (B, H*r, W*r, C)


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis (biased variance, as PyTorch): (..., C) -> (..., C)."""
    xp = xp_of(x)
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # (..., 1)
    return (x - mean) / xp.sqrt(var + x.dtype.type(eps)) * weight + bias


def gelu(x):
    """Exact GELU, `x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt 2))` (not the tanh approximation)."""
    f = x.dtype.type
    return f(0.5) * x * (f(1.0) + erf(x * f(1.0 / math.sqrt(2.0))))


def softmax(x, axis=-1):
    """`exp(x) / sum(exp(x))` along `axis`, computed stably (the maximum subtracted first)."""
    xp = xp_of(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def end_conv(x, params, patch_size):
    """The last part of g_s: 5x5 conv, PixelShuffle(patch_size), 3x3 conv, no activation.

    Args: x (B, h, w, e), the last synthesis stage as a map. Returns: x_hat (B, p*h, p*w, 3).
    """
    w0, w2 = params["end_conv.0.weight"], params["end_conv.2.weight"]
    x = conv2d(x, w0, params["end_conv.0.bias"], padding=w0.shape[-1] // 2)  # (B, h, w, e) -> (B, h, w, p*p*e)
    x = pixel_shuffle(x, patch_size)  # -> (B, p*h, p*w, e)
    return conv2d(x, w2, params["end_conv.2.bias"], padding=w2.shape[-1] // 2)  # -> (B, p*h, p*w, 3)
