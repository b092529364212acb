"""The fast primitives: linear, conv2d, conv2d_gelu, pixel_shuffle, layer_norm, gelu, softmax, add.

The twins of `minstf/reference/ops.py`, with the same signatures (a few take extra
keyword arguments such as `out=`), proven equal to them by tests/test_kernels.py.
Every function takes its array module from its inputs (`xp_of`), so the same
code runs on NumPy and CuPy, and keeps the input's float dtype (float32, or
float64 in portable mode). Weights keep PyTorch layouts (Linear `(out, in)`,
Conv2d `(O, I, kH, kW)`); feature maps are channels-last `(B, H, W, C)`.

Convolutions (stride 1) are matrix products on whole rows of pixels: a 1x1 one is a
single product, the others go one of three ways:

    1x1 (WACNN's residual units and gates): one product over the channels, `linear`
    shifted products ("same" padding, 16 <= O <= Cin: the slice networks, h_a, h_s's last conv):
        the map zero-padded and flattened to (rows * Wp, Cin); tap (dy, dx) is the product
        of the slice that starts dy*Wp + dx rows further down, and BLAS adds all k*k of them
        into one output (gemm's beta = 1, `blas.gemm_into`, in NumPy's own OpenBLAS)
    taps first (the other O <= Cin: no padding, or few outputs like end_conv's last 3x3;
    and where NumPy's BLAS is not the OpenBLAS of its wheel):
        Y = x @ [W_tap0 | W_tap1 | ...]        one product, (H*W, Cin) @ (Cin, k*k*O)
        out[i, j] = bias + sum over taps (dy, dx) of Y[i + dy - p, j + dx - p, tap's O columns]
        (shifted views of Y; taps that would read the zero padding are left out, so
        no padded pixel is multiplied)
    im2col (O > Cin: the 5x5 end_conv, the hyper synthesis):
        per block of output rows, the k*k shifted views of the zero-padded map side by
        side, (rows, k*k*Cin), then one product with the (k*k*Cin, O) matrix

Weights keep PyTorch's layout in `params`; the (k*k, Cin, O), (Cin, k*k*O) and (k*k*Cin, O)
matrices are made once per weight array (`layouts.derived`). Stride 2 (PatchEmbed,
h_a, WACNN's g_a) uses im2col on strided views, by blocks of output rows on all cores.

Elementwise work (GELU, LayerNorm, softmax, residual adds) runs on NumPy in
cache-sized blocks of rows (`threads.parallel_rows`: several passes over a block
while it is in cache, on all cores); on CuPy the same kernels run once on the
whole array. Every ufunc call holds the GIL for about 1.5 us around its loop, so
GELU's 21 passes use larger blocks (BLOCK["gelu"]) in reused work arrays
(`threads.scratch`): fewer calls a value, and two threads no longer wait on each other.
"""
import math
from functools import partial

from ..backend import erf, on_host, xp_of
from . import blas
from .layouts import derived, matmul_into
from .threads import BLOCK, parallel_blocks, parallel_ranges, parallel_rows, row_blocks, scratch

_SQRT_HALF = 1.0 / math.sqrt(2.0)
SHIFTED_MIN_OUT = 16  # narrower outputs stay taps first: BLAS runs products only O columns wide slowly


def linear(x, weight, bias=None, out=None):
    """`x @ weight.T + bias` over the last axis.

    Args: x (..., in); weight (out, in); bias (out,) or None; out: C-contiguous (..., out) or None.
    Returns: (..., out).
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # (..., in) -> (rows, in)
    if out is None:
        y = x2 @ weight.T  # (rows, out): one GEMM
    else:
        y = matmul_into(x2, weight.T, _rows_of(out, weight.shape[0]))
    if bias is not None:
        add(y, bias, out=y)
    return y.reshape(*lead, weight.shape[0])  # (rows, out) -> (..., out)


def add(x, *terms, out=None):
    """x + terms in one pass over x, e.g. residual + h + bias; out may be x (in place).

    Args: x (..., C); terms: arrays of x's shape or (C,) vectors. Returns: (..., C).
    """
    xp = xp_of(x)
    C = x.shape[-1]
    out = _rows_of(xp.empty(x.shape, dtype=x.dtype) if out is None else out, C)
    full = [a.reshape(-1, C) for a in terms if a.ndim == x.ndim]  # cut into blocks with x
    vectors = [a for a in terms if a.ndim != x.ndim]  # the same for every row
    parallel_rows(partial(_add_rows, vectors=vectors), out, x.reshape(-1, C), *full)
    return out.reshape(x.shape)


def _add_rows(out, x, *full, vectors):
    xp = xp_of(x)
    first, *rest = list(full) + vectors
    xp.add(x, first, out=out)
    for a in rest:
        out += a


def _rows_of(out, C):
    """(rows, C) view of an output array, which must be C-contiguous (a reshape would copy)."""
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out.reshape(-1, C)


# --- convolutions -------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation with zero padding, channels-last.

    Args: x (B, H, W, Cin); weight (O, Cin, k, k); bias (O,) or None.
    Returns: (B, Ho, Wo, O) with Ho = (H + 2*padding - k) // stride + 1.
    """
    xp = xp_of(x, weight)
    B, H, W, Cin = x.shape
    O, _, k, _ = weight.shape
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    if stride != 1:
        x = xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))  # (B, Hp, Wp, Cin)
        out = xp.empty((B, Ho, Wo, O), dtype=x.dtype)
        blocks = [(b, h0, n) for b in range(B)
                  for h0, n in row_blocks(Ho, Wo * k * k * Cin, block_elements=BLOCK["im2col"])]
        parallel_blocks(partial(_conv_strided_rows, x=x, weight=weight, bias=bias, stride=stride, out=out),
                        blocks, on_host(x))
        return out
    if k == 1 and padding == 0:  # a 1x1 convolution is one product over the channels
        return linear(x, weight.reshape(O, Cin), bias)  # (B, H, W, Cin) -> (B, H, W, O)
    x = xp.ascontiguousarray(x)
    out = xp.empty((B, Ho, Wo, O), dtype=x.dtype)
    if on_host(x) and blas.available(x.dtype) and k % 2 == 1 and padding == k // 2 and SHIFTED_MIN_OUT <= O <= Cin:
        for b in range(B):
            _conv_shifted(x[b], weight, bias, out[b])  # (H, W, Cin) -> (H, W, O)
    elif O <= Cin:  # fewer bytes moved: Y has k*k*O values a pixel, im2col k*k*Cin (and needs less memory)
        for b in range(B):
            _conv_taps_first(x[b], weight, bias, padding, out[b])  # (H, W, Cin) -> (Ho, Wo, O)
    else:
        if padding:
            x = xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))  # (B, Hp, Wp, Cin)
        for b in range(B):
            _conv_im2col(x[b], weight, bias, out[b])  # (Hp, Wp, Cin) -> (Ho, Wo, O)
    return out


def conv2d_gelu(x, weight, bias=None, stride=1, padding=0):
    """GELU(conv2d(x)): the convolution's bias is added inside GELU's pass over the map."""
    x = conv2d(x, weight, None, stride=stride, padding=padding)
    return gelu(x, bias=bias, out=x)


def _taps_first_matrix(weight):
    O, Cin, k, _ = weight.shape
    return weight.reshape(O, Cin, k * k).transpose(1, 2, 0).reshape(Cin, k * k * O)  # -> (Cin, k*k*O)


def _im2col_matrix(weight):
    O, Cin, k, _ = weight.shape
    return weight.transpose(2, 3, 1, 0).reshape(k * k * Cin, O)  # -> (k*k*Cin, O)


def _shifted_matrices(weight):
    O, Cin, k, _ = weight.shape
    return weight.transpose(2, 3, 1, 0).reshape(k * k, Cin, O).copy()  # -> (k*k, Cin, O), tap (dy, dx) first


def _conv_shifted(x, weight, bias, out):
    """One image, "same" padding: the k*k tap products accumulated by BLAS into one output,
    by blocks of output rows (the padded copy and the accumulator of a block stay ~16 MB).

    A block's input rows are laid out with p zero pixels on both sides of every row and
    zero rows above and below the image, flattened to (rows * Wp, Cin) with Wp = W + 2p.
    Tap (dy, dx) of output pixel t = i*Wp + j then reads input row t + dy*Wp + dx: every
    tap is the same product on a shifted, contiguous slice of the padded rows, and BLAS
    adds it into the output itself (gemm with beta = 1, `blas.gemm_into`): no pass of tap
    sums. Output columns j >= W are products of wrapped-around pixels and are dropped.
    Args: x (H, W, Cin); out (H, W, O).
    """
    xp = xp_of(x)  # NumPy: BLAS is called on host memory
    H, W, Cin = x.shape
    O = out.shape[-1]
    k = weight.shape[-1]
    p = k // 2
    Wp = W + 2 * p
    w = derived(weight, "shifted", _shifted_matrices)  # (k*k, Cin, O)
    for h0, n in row_blocks(H, Wp * max(Cin, O), overlap=2 * p):
        r0, r1 = max(0, h0 - p), min(H, h0 + n + p)  # the input rows these outputs read
        xpad = xp.zeros(((n + 2 * p) * Wp + 2 * p, Cin), dtype=x.dtype)  # ((n+2p)*Wp + 2p, Cin), zero border
        top = r0 - (h0 - p)  # zero rows above the image in this block
        xpad[:(n + 2 * p) * Wp].reshape(n + 2 * p, Wp, Cin)[top:top + r1 - r0, p:p + W] = x[r0:r1]
        acc = xp.empty((n * Wp, O), dtype=x.dtype)  # the block's output on the padded grid
        for tap in range(k * k):
            s = (tap // k) * Wp + tap % k  # the shift of tap (dy, dx)
            blas.gemm_into(xpad[s:s + n * Wp], w[tap], acc, beta=tap > 0)  # (n*Wp, Cin) @ (Cin, O), added to acc
        y = acc.reshape(n, Wp, O)[:, :W]  # (n*Wp, O) -> (n, Wp, O) -> (n, W, O): the valid columns
        if bias is None:
            out[h0:h0 + n] = y
        else:
            xp.add(y, bias, out=out[h0:h0 + n])


def _conv_taps_first(x, weight, bias, p, out):
    """One image, one product per row of taps, then the shifted sums; by blocks of output rows.

    Y_dy = x @ (Cin, k*O), on the pixels of the image only (no padding): Y_dy[i, j] holds,
    in columns [dx*O, (dx+1)*O), the contribution of input pixel (i, j) through tap
    (dy, dx) to output pixel (i - dy + p, j - dx + p); taps that would read the zero
    padding are simply left out of the sums. One row of taps at a time keeps Y small.
    Args: x (H, W, Cin); p the padding; out (Ho, Wo, O).
    """
    H, W, Cin = x.shape
    Ho, Wo, O = out.shape
    k = weight.shape[-1]
    w = derived(weight, "taps first", _taps_first_matrix)  # (Cin, k*k*O), columns (dy, dx, o)
    same = k % 2 == 1 and p == k // 2  # then the centre tap covers every output pixel: it goes first
    rows_of_taps = [p] + [dy for dy in range(k) if dy != p] if same else list(range(k))
    for h0, n in row_blocks(Ho, W * k * O, overlap=k - 1):
        r0, r1 = max(0, h0 - p), min(H, h0 + n + k - 1 - p)  # the input rows these outputs read
        xr = x[r0:r1].reshape(-1, Cin)
        for g, dy in enumerate(rows_of_taps):
            y = (xr @ w[:, dy * k * O:(dy + 1) * k * O]).reshape(r1 - r0, W, k * O)  # taps (dy, 0..k-1)
            kernel = partial(_sum_taps, out=out, y=y, y_row0=r0, p=p, dy=dy, k=k,
                             bias=bias if g == 0 else None, first=g == 0, same=same)
            parallel_ranges(lambda lo, hi: kernel(h0 + lo, h0 + hi), n, Wo * O, block=BLOCK["conv sums"])


def _sum_taps(lo, hi, out, y, y_row0, p, dy, k, bias, first, same):
    """Output rows [lo, hi) += the k shifted, clipped views of Y_dy (the first row of taps sets them)."""
    Ho, Wo, O = out.shape
    rows, W, _ = y.shape
    taps = list(range(k))
    if first and same:
        taps.remove(p)
        taps.insert(0, p)
    elif first:
        out[lo:hi] = 0
    # output pixel (i, j) reads Y[i + dy - p - y_row0, j + dx - p], where that lies inside Y
    i0, i1 = max(lo, y_row0 + p - dy), min(hi, y_row0 + rows + p - dy)
    for n, dx in enumerate(taps):
        j0, j1 = max(0, p - dx), min(Wo, W + p - dx)
        if i0 < i1 and j0 < j1:
            view = y[i0 + dy - p - y_row0:i1 + dy - p - y_row0, j0 + dx - p:j1 + dx - p, dx * O:(dx + 1) * O]
            if first and same and n == 0:
                out[i0:i1, j0:j1] = view
            else:
                out[i0:i1, j0:j1] += view
    if bias is not None:
        out[lo:hi] += bias


def _conv_im2col(x, weight, bias, out):
    """One image by blocks of output rows: the k*k shifted views side by side, then one product.

    Args: x (Hp, Wp, Cin) padded; out (Ho, Wo, O).
    """
    xp = xp_of(x)
    Hp, Wp, Cin = x.shape
    Ho, Wo, O = out.shape
    k = weight.shape[-1]
    w = derived(weight, "im2col", _im2col_matrix)  # (k*k*Cin, O)
    for h0, n in row_blocks(Ho, Wo * k * k * Cin, block_elements=BLOCK["im2col"]):  # cols of ~2 MB: in cache
        cols = xp.empty((n, Wo, k * k * Cin), dtype=x.dtype)  # (n, Wo, k*k*Cin)
        parallel_rows(partial(_side_by_side, k=k), cols, *[x[h0 + dy:h0 + dy + n] for dy in range(k)])
        o = out[h0:h0 + n].reshape(n * Wo, O)
        matmul_into(cols.reshape(n * Wo, -1), w, o)
        if bias is not None:
            add(o, bias, out=o)


def _conv_strided_rows(b, h0, n, x, weight, bias, stride, out):
    """Output rows h0 .. h0+n-1 of image b of a strided convolution: im2col on strided views, one product.

    Args: x (B, Hp, Wp, Cin) padded; out (B, Ho, Wo, O).
    """
    xp = xp_of(x)
    Cin, (Wo, O), k = x.shape[-1], out.shape[2:], weight.shape[-1]
    w = derived(weight, "im2col", _im2col_matrix)  # (k*k*Cin, O)
    cols = xp.empty((n, Wo, k * k * Cin), dtype=x.dtype)  # (n, Wo, k*k*Cin)
    _side_by_side(cols, *[x[b, stride * h0 + dy:stride * (h0 + n - 1) + dy + 1:stride] for dy in range(k)],
                  k=k, stride=stride)  # the rows tap row dy reads, (n, Wp, Cin) each
    o = out[b, h0:h0 + n].reshape(n * Wo, O)
    matmul_into(cols.reshape(n * Wo, -1), w, o)
    if bias is not None:
        o += bias


def _side_by_side(cols, *rows, k, stride=1):
    """cols (n, Wo, k*k*Cin) <- tap (dy, dx) = rows[dy][:, dx::stride] (Wo columns) at columns (dy*k + dx)*Cin..."""
    Wo, Cin = cols.shape[1], rows[0].shape[-1]
    for dy, r in enumerate(rows):  # r (n, Wp, Cin): input rows dy below the output rows
        for dx in range(k):
            t = dy * k + dx
            cols[:, :, t * Cin:(t + 1) * Cin] = r[:, dx:dx + stride * (Wo - 1) + 1:stride]


def pixel_shuffle(x, r, out=None, channel_order="cij"):
    """PyTorch's PixelShuffle on channels-last maps.

    Input channel `c*r*r + i*r + j` of pixel (h, w) -> output channel c at (h*r + i, w*r + j).
    channel_order "ijc": input channel `(i*r + j)*C + c` instead, so that whole C-vectors
    move (a faster copy; end_conv permutes its convolution's output channels to this order).
    Args: x (B, H, W, C*r*r); out (B, H*r, W*r, C) or None. Returns: (B, H*r, W*r, C).
    """
    B, H, W, Crr = x.shape
    C = Crr // (r * r)
    if channel_order == "cij":
        x = x.reshape(B, H, W, C, r, r).transpose(0, 1, 4, 2, 5, 3)  # (B, H, W, C, i, j) -> (B, H, i, W, j, C)
    else:
        x = x.reshape(B, H, W, r, r, C).transpose(0, 1, 3, 2, 4, 5)  # (B, H, W, i, j, C) -> (B, H, i, W, j, C)
    if out is None:
        return x.reshape(B, H * r, W * r, C)  # -> (B, H*r, W*r, C)
    out.reshape(B, H, r, W, r, C)[...] = x  # out may be a view, e.g. the inside of a padded map
    return out


# --- normalisation and activations (elementwise, in blocks of rows) --------------------------
def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis with biased variance. x (..., C) -> (..., C)."""
    xp = xp_of(x)
    C = x.shape[-1]
    out = xp.empty(x.shape, dtype=x.dtype)
    parallel_rows(partial(_layer_norm_rows, weight=weight, bias=bias, eps=eps),
                  out.reshape(-1, C), x.reshape(-1, C))  # (..., C) -> (rows, C)
    return out


def _layer_norm_rows(out, x, weight, bias, eps):
    xp = xp_of(x)
    scale = x.dtype.type(1.0 / x.shape[-1])
    mean = xp.einsum("rc->r", x) * scale  # (rows,)
    xp.subtract(x, mean[:, None], out=out)  # d = x - mean
    var = xp.einsum("rc,rc->r", out, out) * scale  # mean of d*d, without a (rows, C) temporary
    out *= (1.0 / xp.sqrt(var + x.dtype.type(eps)))[:, None]
    out *= weight
    out += bias


def gelu(x, bias=None, out=None):
    """Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))` (not the tanh approximation), of x (+ bias).

    out may be x (in place). On NumPy in float32, erfc comes from a fit with an absolute
    error < 1.5e-7 (`_gelu_float32_rows`, 21 passes): SciPy's float32 erf costs ~15 ns a
    value and GELU runs on ~90 M values per image and transform.
    float64 (portable mode, whose results must not depend on the backend) and CuPy use
    the library erf.
    """
    xp = xp_of(x)
    C = x.shape[-1]
    out = _rows_of(xp.empty(x.shape, dtype=x.dtype) if out is None else out, C)
    if on_host(x) and x.dtype == xp.float32:
        kernel, block = _gelu_float32_rows, BLOCK["gelu"]
    else:
        kernel, block = _gelu_erf_rows, None
    parallel_rows(partial(kernel, bias=bias), out, x.reshape(-1, C), block=block)  # (..., C) -> (rows, C)
    return out.reshape(x.shape)


def _gelu_erf_rows(out, x, bias=None):
    xp = xp_of(x)
    if bias is not None:
        xp.add(x, bias, out=out)
        x = out
    y = erf(x * x.dtype.type(_SQRT_HALF))
    y += 1.0
    y *= x
    y *= x.dtype.type(0.5)
    out[...] = y


# erfc(z) ~ t * (a1 + a2 t + ... + a5 t^4) * exp(-z^2), t = 1 / (1 + p z), z >= 0: Abramowitz &
# Stegun 7.1.26, absolute error < 1.5e-7. In GELU the error is |x| * 7.5e-8 at most: 3.3e-7 over
# [-12, 12] in float32, below the 1.2e-6 of PyTorch's own float32 GELU there (tests/test_kernels.py).
_ERFC_P = 0.3275911
_ERFC_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # a1..a5


def _gelu_float32_rows(out, x, bias=None):
    """GELU in float32 as relu(x) - |x| * Phi(-|x|), with Phi(-|x|) = erfc(|x|/sqrt 2) / 2.

    For x >= 0: x*Phi(x) = x - x*Phi(-x); for x < 0: x*Phi(x) = -|x|*Phi(-|x|): both are
    relu(x) - |x|*Phi(-|x|), whose second term is small where the first is large.
    GELU(x) = (x + |x| - |x| erfc(|x|/sqrt 2)) / 2 (np.maximum costs several times a pass of abs),
    the fit's z = |x|/sqrt 2 folded into the constants: t = 1 / (1 + p/sqrt 2 |x|), exp(-x^2/2).
    21 passes over a block, all into this thread's 3 work arrays (`threads.scratch`): no pass
    allocates, and blocks of BLOCK["gelu"] values keep the number of calls a value low.
    """
    xp = xp_of(x)
    f = x.dtype.type
    ax, t, q = (a.reshape(x.shape) for a in scratch(x.size, x.dtype, 3))
    if bias is not None:
        xp.add(x, bias, out=out)
        x = out
    xp.abs(x, out=ax)  # |x|
    xp.multiply(ax, f(_ERFC_P * _SQRT_HALF), out=t)
    t += f(1.0)
    xp.divide(f(1.0), t, out=t)  # t = 1 / (1 + p |x| / sqrt 2)
    xp.multiply(t, f(_ERFC_A[4]), out=q)  # t * (a1 + t * (a2 + ...)) by Horner
    for c in _ERFC_A[3::-1]:
        q += f(c)
        q *= t
    xp.multiply(ax, f(-0.5), out=t)  # t is free again
    t *= ax
    xp.exp(t, out=t)  # exp(-x^2 / 2)
    q *= t  # erfc(|x| / sqrt 2)
    q *= ax  # |x| erfc(|x| / sqrt 2) = 2 |x| Phi(-|x|)
    xp.add(x, ax, out=out)  # x + |x| = 2 relu(x); x may be out
    out -= q
    out *= f(0.5)


def softmax(x, axis=-1):
    """Numerically stable softmax along `axis` (in blocks of rows when it is the last axis)."""
    xp = xp_of(x)
    if axis not in (-1, x.ndim - 1):
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        return e
    out = x.copy()  # C-contiguous
    parallel_rows(softmax_inplace, out.reshape(-1, x.shape[-1]))  # (..., n) -> (rows, n)
    return out


def softmax_inplace(x, axis=-1):
    """Softmax of a 2-D array along `axis` (-1: rows, 0: columns), in place, in the calling thread."""
    xp = xp_of(x)
    x -= x.max(axis=axis, keepdims=True)
    xp.exp(x, out=x)
    if axis == 0:
        x *= 1.0 / x.sum(axis=0)
    else:
        x *= (1.0 / xp.einsum("rn->r", x))[:, None]  # for short rows einsum sums faster than .sum


# --- the end of the synthesis ------------------------------------------------------------
def end_conv(x, params, patch_size):
    """5x5 conv, PixelShuffle(patch_size), 3x3 conv (reference: `minstf/reference/ops.py`).

    The 5x5 convolution runs by bands of rows, each shuffled straight into the full-size
    map, so that its p*p-times-wider output never exists whole; its output channels are
    permuted once (c*p*p + i*p + j -> (i*p + j)*e + c) so that the shuffle moves whole pixels.
    Args: x (B, h, w, e), the last synthesis stage as a map. Returns: (B, p*h, p*w, 3).
    """
    xp = xp_of(x)
    p, w0 = patch_size, params["end_conv.0.weight"]
    B, h, w, e = x.shape
    k = w0.shape[-1]
    w0 = derived(w0, "ijc", lambda a: a.reshape(e, p * p, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape))
    b0 = params["end_conv.0.bias"].reshape(e, p * p).T.reshape(-1)
    x = xp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))  # (B, h+k-1, w+k-1, e)
    shuffled = xp.empty((B, p * h, p * w, e), dtype=x.dtype)

    def band(h0, n):  # 5x5 on rows h0..h0+n-1: (B, n, w, p*p*e), shuffled to (B, p*n, p*w, e)
        pixel_shuffle(conv2d(x[:, h0:h0 + n + k - 1], w0, b0), p, out=shuffled[:, p * h0:p * (h0 + n)],
                      channel_order="ijc")

    parallel_blocks(band, row_blocks(h, w * p * p * e, block_elements=BLOCK["end_conv band"]), on_host(x))
    w2 = params["end_conv.2.weight"]
    return conv2d(shuffled, w2, params["end_conv.2.bias"], padding=w2.shape[-1] // 2)  # 3x3: -> (B, p*h, p*w, 3)
