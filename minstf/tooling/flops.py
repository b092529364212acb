"""The arithmetic of STF, counted: floating-point operations of every stage, and this machine's bound.

A third kernel layer for `minstf.switch`'s interface that computes nothing: each function
returns zeros of the right shape and adds the multiply-adds its reference twin would do
(2 flops each) to a counter. Running a transform through it counts that transform's
matrix-product arithmetic exactly, for any configuration and image size, in milliseconds:

    linear             2 * rows * in * out
    conv2d             2 * B * Ho * Wo * O * Cin * k * k
    window_attention   qkv and proj products, plus q k^T and attention @ v: 4 * B_ * N * N * C
    swin_block         window attention on the padded map (B * Hp * Wp tokens), fc1 and fc2
    conv_transpose2d   2 * B * H * W * Cin * O * k * k (every input pixel stamps k*k taps)
    gdn, igdn          the 1x1 convolution of x^2: 2 * B * H * W * C * C

Elementwise work (LayerNorm, GELU, softmax, adds) is not counted: it is not what BLAS
does, and it is a few percent of the flops. `gemm_rate` measures this machine's sgemm or
dgemm (GFLOP/s) on large square products with NumPy's BLAS, in this process and with its
threads, so `flops / rate` is the time the stage would take if all of it ran at BLAS speed.
"""
import time

import numpy as np

from ..backend import xp_of
from ..reference import ops as ref_ops
from ..reference import swin as ref_swin
from ..switch import INTERFACE


class FlopCounter:
    """A kernel layer (same functions as minstf.reference) that counts flops instead of computing.

    `flops` is the running total; read it before and after a call to count that call.
    """

    # computed for real: cheap, and their values matter (masks, indexes, permutations)
    window_partition = staticmethod(ref_swin.window_partition)
    window_reverse = staticmethod(ref_swin.window_reverse)
    relative_position_index = staticmethod(ref_swin.relative_position_index)
    relative_position_bias = staticmethod(ref_swin.relative_position_bias)
    shift_attention_mask = staticmethod(ref_swin.shift_attention_mask)
    pixel_shuffle = staticmethod(ref_ops.pixel_shuffle)

    def __init__(self):
        self.flops = 0
        self.__name__ = "flop counter"

    def _zeros(self, like, shape):
        return xp_of(like).zeros(shape, dtype=like.dtype)

    def linear(self, x, weight, bias=None):
        rows = x.size // x.shape[-1]
        self.flops += 2 * rows * weight.shape[0] * weight.shape[1]
        return self._zeros(x, x.shape[:-1] + (weight.shape[0],))  # (..., in) -> (..., out)

    def conv2d(self, x, weight, bias=None, stride=1, padding=0):
        B, H, W, Cin = x.shape
        O, _, k, _ = weight.shape
        Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
        self.flops += 2 * B * Ho * Wo * O * Cin * k * k
        return self._zeros(x, (B, Ho, Wo, O))

    def conv2d_gelu(self, x, weight, bias=None, stride=1, padding=0):
        return self.conv2d(x, weight, bias, stride, padding)

    def layer_norm(self, x, weight, bias, eps=1e-5):
        return x

    def gelu(self, x):
        return x

    def softmax(self, x, axis=-1):
        return x

    def end_conv(self, x, params, patch_size):
        w0, w2 = params["end_conv.0.weight"], params["end_conv.2.weight"]
        x = self.conv2d(x, w0, padding=w0.shape[-1] // 2)  # (B, h, w, e) -> (B, h, w, p*p*e)
        x = self.pixel_shuffle(x, patch_size)  # -> (B, p*h, p*w, e)
        return self.conv2d(x, w2, padding=w2.shape[-1] // 2)  # -> (B, p*h, p*w, 3)

    def window_attention(self, x, params, prefix, num_heads, mask=None):
        B_, N, C = x.shape
        self.linear(x, params[f"{prefix}.qkv.weight"])  # (B_, N, C) -> (B_, N, 3C)
        self.flops += 4 * B_ * N * N * C  # q k^T and attention @ v, all heads
        return self.linear(x, params[f"{prefix}.proj.weight"])  # -> (B_, N, C)

    # WACNN's kernels (minstf/reference/wacnn.py)
    def conv_transpose2d(self, x, weight, bias=None, stride=2, padding=2, output_padding=1):
        B, H, W, Cin = x.shape
        _, O, k, _ = weight.shape
        self.flops += 2 * B * H * W * Cin * O * k * k  # every input pixel stamps k*k taps
        Ho = (H - 1) * stride - 2 * padding + k + output_padding
        Wo = (W - 1) * stride - 2 * padding + k + output_padding
        return self._zeros(x, (B, Ho, Wo, O))

    def gdn(self, x, beta, gamma, inverse=False):
        self.linear(x, gamma)  # the 1x1 convolution of x^2
        return x

    def igdn(self, x, beta, gamma):
        return self.gdn(x, beta, gamma, inverse=True)

    def window_attention_block(self, x, params, prefix, num_heads, ws, shift=0, mask=None):
        B, H, W, C = x.shape
        self.window_attention(self._zeros(x, (B * H * W // (ws * ws), ws * ws, C)), params, f"{prefix}.attn",
                              num_heads, mask)
        return x

    def swin_block(self, x, H, W, params, prefix, num_heads, ws, shift=0, mask=None):
        B, L, C = x.shape
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        windows = self._zeros(x, (B * Hp * Wp // (ws * ws), ws * ws, C))  # the padded map's windows
        self.window_attention(windows, params, f"{prefix}.attn", num_heads, mask)
        h = self.linear(x, params[f"{prefix}.mlp.fc1.weight"])  # (B, L, C) -> (B, L, 4C)
        self.linear(h, params[f"{prefix}.mlp.fc2.weight"])  # -> (B, L, C)
        return x


assert all(hasattr(FlopCounter, name) for name in INTERFACE)  # the whole interface


def count(fn, *args, **kwargs):
    """(flops, result) of `fn(*args, kernels=counter, **kwargs)` run on a fresh FlopCounter."""
    counter = FlopCounter()
    result = fn(*args, kernels=counter, **kwargs)
    return counter.flops, result


def stage_flops(config, x):
    """{stage: flops} of the bench's stages for a configuration and an NCHW image x (1, 3, H, W).

    g_a, h_a, hyper (h_mean_s + h_scale_s), slices (the slice networks), g_s; compress =
    g_a + h_a + hyper + slices, decompress = hyper + slices + g_s (entropy coding has no flops).
    The counts depend on shapes only: the weights are zeros of the configuration's shapes.
    """
    from ..model import transforms_of
    from ..slices import run_slices, slice_of
    from ..weights import model_of

    c = config
    t = transforms_of(c)  # STF's or WACNN's
    g_a, g_s, h_a, h_mean_s, h_scale_s = t.g_a, t.g_s, t.h_a, t.h_mean_s, t.h_scale_s
    p = {s.key: np.zeros(s.shape, np.float32) for s in model_of(c).param_spec(c)}
    f = {}
    f["g_a"], y = count(g_a, np.zeros(x.shape, np.float32).transpose(0, 2, 3, 1), p, c)  # (1, H, W, 3)
    f["h_a"], z = count(h_a, y, p, c)
    f_means, means = count(h_mean_s, z, p, c)
    f_scales, scales = count(h_scale_s, z, p, c)
    f["hyper"] = f_means + f_scales
    H4, W4 = y.shape[1:3]
    f["slices"], y_hat = count(run_slices, means[:, :H4, :W4], scales[:, :H4, :W4], p, c,
                               lambda s, mu, scale: slice_of(y, s, c) - mu)
    f["g_s"], _ = count(g_s, y_hat, p, c)
    f["compress"] = f["g_a"] + f["h_a"] + f["hyper"] + f["slices"]
    f["decompress"] = f["hyper"] + f["slices"] + f["g_s"]
    return f


def gemm_rate(dtype=np.float32, n=2048, repeat=3):
    """GFLOP/s of NumPy's BLAS on an (n, n) @ (n, n) product of `dtype`: the best of `repeat` runs."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    np.matmul(a, b, out=out)  # warm-up: threads started, pages touched
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
