"""Every fast kernel (minstf/kernels/) against its reference twin (minstf/reference/).

The fast kernels cut their work into blocks and run them on threads; the
reference functions compute each formula on whole arrays. They are different
float code paths, so they are compared with stated tolerances (float32: 2e-5
absolute on unit-scale values, relative to the magnitude elsewhere; float64: 1e-12),
on random shapes, odd sizes, shifted and unshifted blocks, and - with the
block-size table shrunk (`tiny_blocks`) - inputs that cross many block and
group edges. Pure permutations (pixel shuffle) compare exactly.

The thread helpers are tested directly: every row and block is visited exactly
once, whatever the thread count and block size.
"""
import inspect
import threading

import numpy as np
import pytest

import minstf.kernels as fast
import minstf.reference as ref
from minstf.kernels import blas, threads
from minstf.kernels import ops as fast_ops
from minstf.kernels.layouts import derived
from minstf.switch import INTERFACE, get_kernels, kernels_name

F32 = 2e-5  # float32 tolerance on unit-scale values
F64 = 1e-12


def rand(rng, *shape, scale=1.0, dtype=np.float32):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def close(got, want, tol=F32):
    """|got - want| <= tol * max(1, max|want|), same shape and dtype."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= tol * scale, f"max |fast - reference| {err:.3e} > {tol * scale:.3e}"


@pytest.fixture(params=["default blocks", "tiny blocks"])
def blocks(request, monkeypatch):
    """Run a test with the real block-size table and with one shrunk so that every kernel
    crosses many block, group and band edges on small inputs."""
    if request.param == "tiny blocks":
        for name in threads.BLOCK:
            monkeypatch.setitem(threads.BLOCK, name, 96)
    return request.param


# --- the interface -----------------------------------------------------------------------------
def test_both_layers_have_the_whole_interface_with_compatible_signatures():
    for name in INTERFACE:
        r, f = inspect.signature(getattr(ref, name)), inspect.signature(getattr(fast, name))
        rp, fp = list(r.parameters.values()), list(f.parameters.values())
        assert [p.name for p in fp[:len(rp)]] == [p.name for p in rp], name  # the reference's arguments first
        assert all(p.default is not inspect.Parameter.empty or p.kind == p.VAR_KEYWORD for p in fp[len(rp):]), name
    assert kernels_name(get_kernels("fast")) == "fast" and kernels_name(get_kernels("reference")) == "reference"
    with pytest.raises(ValueError, match="unknown kernels"):
        get_kernels("quick")


# --- primitives ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(np.float32, F32), (np.float64, F64)])
def test_linear(blocks, dtype, tol):
    rng = np.random.default_rng(0)
    x, w, b = rand(rng, 3, 7, 13, dtype=dtype), rand(rng, 9, 13, dtype=dtype), rand(rng, 9, dtype=dtype)
    close(fast.linear(x, w, b), ref.linear(x, w, b), tol)
    close(fast.linear(x, w), ref.linear(x, w), tol)
    out = np.empty((3, 7, 9), dtype)
    fast.linear(x, w, b, out=out)
    close(out, ref.linear(x, w, b), tol)


CONVS = [  # B, H, W, Cin, O, k, stride, padding: every fast path (shifted products: 16 <= O <= Cin,
    # "same" padding; taps first: the other O <= Cin; im2col: O > Cin)
    (1, 7, 9, 24, 16, 3, 1, 1),  # shifted products, odd sizes
    (2, 5, 6, 20, 17, 5, 1, 2),  # shifted products 5x5, batch 2
    (1, 1, 1, 16, 16, 3, 1, 1),  # shifted products on a 1x1 map: every tap but the centre reads padding
    (1, 40, 7, 16, 16, 3, 1, 1),  # shifted products, many rows: several row blocks (with tiny blocks)
    (1, 7, 9, 8, 5, 3, 1, 1),  # taps first, odd sizes
    (2, 11, 6, 3, 12, 5, 1, 2),  # im2col 5x5, batch 2
    (1, 9, 13, 6, 6, 3, 2, 1),  # stride 2, odd sizes (h_a)
    (2, 8, 10, 3, 5, 2, 2, 0),  # PatchEmbed: k=2, stride 2
    (1, 6, 5, 7, 4, 3, 1, 0),  # taps first, no padding
    (1, 5, 4, 2, 9, 3, 1, 0),  # im2col, no padding
    (1, 1, 1, 4, 4, 3, 1, 1),  # a 1x1 map: only the centre tap reads pixels
    (1, 2, 3, 4, 2, 5, 1, 2),  # a map smaller than the kernel
    (1, 4, 6, 3, 3, 1, 1, 0),  # 1x1 conv
    (1, 33, 17, 16, 8, 3, 1, 1),  # many rows: several row blocks
]


@pytest.mark.parametrize("B,H,W,Cin,O,k,stride,padding", CONVS)
def test_conv2d(blocks, B, H, W, Cin, O, k, stride, padding):
    rng = np.random.default_rng(H * 100 + W + O)
    x, w, b = rand(rng, B, H, W, Cin), rand(rng, O, Cin, k, k, scale=0.3), rand(rng, O)
    close(fast.conv2d(x, w, b, stride, padding), ref.conv2d(x, w, b, stride, padding))
    close(fast.conv2d(x, w, None, stride, padding), ref.conv2d(x, w, None, stride, padding))
    close(fast.conv2d_gelu(x, w, b, stride, padding), ref.conv2d_gelu(x, w, b, stride, padding))


def test_conv2d_float64(blocks):
    rng = np.random.default_rng(7)
    for Cin, O in ((8, 4), (3, 10), (24, 16)):  # taps first, im2col, shifted products
        x, w, b = (rand(rng, 1, 9, 7, Cin, dtype=np.float64), rand(rng, O, Cin, 3, 3, dtype=np.float64),
                   rand(rng, O, dtype=np.float64))
        close(fast.conv2d_gelu(x, w, b, 1, 1), ref.conv2d_gelu(x, w, b, 1, 1), F64)


needs_numpy_blas = pytest.mark.skipif(not blas.available(np.float32),
                                      reason="NumPy's BLAS is not the OpenBLAS of its PyPI wheel")


@needs_numpy_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_into_adds_the_product_in_place(dtype):
    rng = np.random.default_rng(3)
    a, b = rand(rng, 40, 7, dtype=dtype)[5:37], rand(rng, 7, 9, dtype=dtype)  # a: a row slice, as the shifts use
    out = np.full((32, 9), np.nan, dtype)  # beta 0 must not read it
    assert blas.gemm_into(a, b, out, beta=0) is out
    want = a.astype(np.float64) @ b
    close(out, want.astype(dtype), 1e-6 if dtype == np.float32 else F64)
    blas.gemm_into(a, b, out, beta=1)
    close(out, (2 * want).astype(dtype), 1e-6 if dtype == np.float32 else F64)
    with pytest.raises(ValueError, match="row-major"):
        blas.gemm_into(a.T, b[:, :7].T, out[:7, :7], beta=0)  # column-major operands
    with pytest.raises(ValueError, match="one dtype"):
        blas.gemm_into(a.astype(np.float32 if dtype == np.float64 else np.float64), b, out, beta=0)


@needs_numpy_blas
def test_same_padded_convolutions_take_the_shifted_products(monkeypatch):
    calls = []
    monkeypatch.setattr(fast_ops, "_conv_shifted", lambda *a: calls.append(a[1].shape) or a[3].fill(0))
    rng = np.random.default_rng(4)
    fast.conv2d(rand(rng, 1, 4, 5, 32), rand(rng, 24, 32, 3, 3), None, 1, 1)  # 16 <= O <= Cin, same padding
    fast.conv2d(rand(rng, 1, 4, 5, 32), rand(rng, 8, 32, 3, 3), None, 1, 1)  # too few outputs: taps first
    fast.conv2d(rand(rng, 1, 4, 5, 32), rand(rng, 24, 32, 3, 3), None, 1, 0)  # no padding: taps first
    assert calls == [(24, 32, 3, 3)]


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_is_the_same_permutation(r):
    rng = np.random.default_rng(r)
    x = rand(rng, 2, 3, 5, 4 * r * r)
    np.testing.assert_array_equal(fast.pixel_shuffle(x, r), ref.pixel_shuffle(x, r))
    out = np.empty((2, 3 * r, 5 * r, 4), np.float32)
    fast.pixel_shuffle(x, r, out=out)
    np.testing.assert_array_equal(out, ref.pixel_shuffle(x, r))
    # "ijc": input channel (i*r + j)*C + c instead of c*r*r + i*r + j
    ijc = x.reshape(2, 3, 5, 4, r * r).swapaxes(-1, -2).reshape(x.shape)
    np.testing.assert_array_equal(fast.pixel_shuffle(ijc, r, channel_order="ijc"), ref.pixel_shuffle(x, r))


@pytest.mark.parametrize("dtype, tol", [(np.float32, F32), (np.float64, F64)])
def test_layer_norm(blocks, dtype, tol):
    rng = np.random.default_rng(4)
    x = rand(rng, 3, 37, 48, scale=3.0, dtype=dtype) + 2.0
    w, b = 1 + rand(rng, 48, scale=0.1, dtype=dtype), rand(rng, 48, scale=0.1, dtype=dtype)
    close(fast.layer_norm(x, w, b), ref.layer_norm(x, w, b), tol)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, F64)])
def test_gelu(blocks, dtype, tol):
    """float32: the fast erfc fit vs the library erf (absolute error < 1.5e-7 in erfc by design)."""
    rng = np.random.default_rng(5)
    x = rand(rng, 301, 33, scale=4.0, dtype=dtype)
    x[0, :5] = [0.0, -0.0, 12.0, -12.0, 1e-30]
    close(fast.gelu(x), ref.gelu(x), tol)
    b = rand(rng, 33, dtype=dtype)
    close(fast.gelu(x, bias=b), ref.gelu(x + b), tol)
    y = x.copy()
    fast.gelu(y, out=y)  # in place
    close(y, ref.gelu(x), tol)


def test_gelu_float32_error_is_below_pytorchs():
    """The erfc fit's GELU error is at most |x| * 7.5e-8 (plus float32 rounding): on a dense grid of
    [-12, 12] it stays below 4e-7 of the float64 value, and below PyTorch's own float32 GELU's error."""
    torch = pytest.importorskip("torch")
    x = np.linspace(-12.0, 12.0, 400_001).astype(np.float32)
    exact = ref.gelu(x.astype(np.float64))  # the library erf in float64
    ours = np.abs(fast.gelu(x).astype(np.float64) - exact).max()
    theirs = np.abs(torch.nn.functional.gelu(torch.from_numpy(x)).numpy().astype(np.float64) - exact).max()
    assert ours < 4e-7 and ours < theirs, (ours, theirs)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(blocks, axis):
    rng = np.random.default_rng(6)
    x = rand(rng, 40, 16, scale=10.0)
    x[0, :3] -= 100.0  # masked-like entries
    close(fast.softmax(x, axis=axis), ref.softmax(x, axis=axis), 1e-6)


# --- attention and Swin blocks ------------------------------------------------------------------
def block_params(rng, prefix, C, heads, ws, hidden):
    p = lambda *shape: rand(rng, *shape, scale=0.2)  # noqa: E731
    return {f"{prefix}.norm1.weight": 1 + p(C), f"{prefix}.norm1.bias": p(C),
            f"{prefix}.attn.qkv.weight": p(3 * C, C), f"{prefix}.attn.qkv.bias": p(3 * C),
            f"{prefix}.attn.relative_position_bias_table": p((2 * ws - 1) ** 2, heads),
            f"{prefix}.attn.proj.weight": p(C, C), f"{prefix}.attn.proj.bias": p(C),
            f"{prefix}.norm2.weight": 1 + p(C), f"{prefix}.norm2.bias": p(C),
            f"{prefix}.mlp.fc1.weight": p(hidden, C), f"{prefix}.mlp.fc1.bias": p(hidden),
            f"{prefix}.mlp.fc2.weight": p(C, hidden), f"{prefix}.mlp.fc2.bias": p(C)}


@pytest.mark.parametrize("masked", [False, True])
def test_window_attention(blocks, masked):
    rng = np.random.default_rng(8)
    ws, C, heads, B, H, W = 4, 12, 3, 2, 8, 12
    params = block_params(rng, "b", C, heads, ws, 4 * C)
    nW = (H // ws) * (W // ws)
    x = rand(rng, B * nW, ws * ws, C)
    mask = ref.shift_attention_mask(H, W, ws, ws // 2) if masked else None
    close(fast.window_attention(x, params, "b.attn", heads, mask), ref.window_attention(x, params, "b.attn", heads, mask))


@pytest.mark.parametrize("B,H,W,C,heads,ws", [
    (1, 8, 12, 12, 3, 4),  # whole windows
    (2, 6, 10, 8, 2, 4),  # padded to 8x12, batch 2
    (1, 5, 3, 6, 1, 4),  # smaller than a window on both axes
    (1, 13, 9, 16, 4, 4),  # odd, several window rows
    (1, 7, 11, 6, 2, 3),  # window size 3, shift 1
])
@pytest.mark.parametrize("shifted", [False, True])
def test_swin_block(blocks, B, H, W, C, heads, ws, shifted):
    rng = np.random.default_rng(B * 1000 + H * 10 + W)
    params = block_params(rng, "blk", C, heads, ws, 4 * C)
    x = rand(rng, B, H * W, C)
    shift = ws // 2 if shifted else 0
    mask = ref.shift_attention_mask(H, W, ws, ws // 2)
    got = fast.swin_block(x, H, W, params, "blk", heads, ws, shift=shift, mask=mask)
    close(got, ref.swin_block(x, H, W, params, "blk", heads, ws, shift=shift, mask=mask))
    assert not np.shares_memory(got, x)


def test_swin_block_float64(blocks):
    rng = np.random.default_rng(9)
    params = {k: v.astype(np.float64) for k, v in block_params(rng, "blk", 8, 2, 4, 32).items()}
    x = rand(rng, 1, 6 * 10, 8, dtype=np.float64)
    mask = ref.shift_attention_mask(6, 10, 4, 2)
    close(fast.swin_block(x, 6, 10, params, "blk", 2, 4, 2, mask), ref.swin_block(x, 6, 10, params, "blk", 2, 4, 2, mask),
          F64)


@pytest.mark.parametrize("h, w", [(3, 5), (8, 12), (17, 4)])
def test_end_conv(blocks, h, w):
    rng = np.random.default_rng(h + w)
    e, p = 6, 2
    params = {"end_conv.0.weight": rand(rng, p * p * e, e, 5, 5, scale=0.2), "end_conv.0.bias": rand(rng, p * p * e),
              "end_conv.2.weight": rand(rng, 3, e, 3, 3, scale=0.2), "end_conv.2.bias": rand(rng, 3)}
    x = rand(rng, 2, h, w, e)
    close(fast.end_conv(x, params, p), ref.end_conv(x, params, p))


# --- WACNN: the transposed convolution and the window attention block -----------------------------
DECONVS = [  # B, H, W, Cin, O, k, stride, padding, output_padding
    (1, 5, 7, 40, 36, 5, 2, 2, 1),  # WACNN's layer shape, im2col by phases (O >= IM2COL_MIN_OUT)
    (2, 6, 3, 8, 3, 5, 2, 2, 1),  # the last layer's shape (O = 3): taps first by phases, batch 2
    (1, 4, 4, 6, 40, 3, 2, 1, 1),  # 3x3: phases of 2 and 1 taps
    (1, 3, 6, 5, 4, 5, 2, 2, 0),  # no output padding: an odd output size, phases of unequal length
    (1, 4, 5, 3, 33, 4, 3, 0, 2),  # stride 3, even kernel
    (1, 3, 3, 4, 34, 2, 3, 0, 0),  # a kernel smaller than the stride: phases without a tap (bias only)
    (1, 1, 1, 4, 40, 5, 2, 2, 1),  # a 1x1 map
    (1, 17, 9, 16, 40, 5, 2, 2, 1),  # many rows: several row blocks per phase
]


@pytest.mark.parametrize("B,H,W,Cin,O,k,stride,padding,output_padding", DECONVS)
def test_conv_transpose2d(blocks, B, H, W, Cin, O, k, stride, padding, output_padding):
    rng = np.random.default_rng(H * 100 + W + O)
    x, w, b = rand(rng, B, H, W, Cin), rand(rng, Cin, O, k, k, scale=0.3), rand(rng, O)
    for bias in (b, None):
        close(fast.conv_transpose2d(x, w, bias, stride, padding, output_padding),
              ref.conv_transpose2d(x, w, bias, stride, padding, output_padding))


def test_conv_transpose2d_float64(blocks):
    rng = np.random.default_rng(11)
    x, w, b = (rand(rng, 1, 6, 5, 40, dtype=np.float64), rand(rng, 40, 40, 5, 5, scale=0.1, dtype=np.float64),
               rand(rng, 40, dtype=np.float64))
    close(fast.conv_transpose2d(x, w, b), ref.conv_transpose2d(x, w, b), F64)


@pytest.mark.parametrize("B,H,W,C,heads,ws", [(1, 8, 12, 12, 3, 4), (2, 8, 8, 8, 2, 4), (1, 16, 8, 6, 1, 8)])
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_block(blocks, B, H, W, C, heads, ws, shifted):
    rng = np.random.default_rng(B * 100 + H + W)
    params = block_params(rng, "b", C, heads, ws, 4 * C)
    x = rand(rng, B, H, W, C)
    shift = ws // 2 if shifted else 0
    mask = ref.shift_attention_mask(H, W, ws, ws // 2)
    close(fast.window_attention_block(x, params, "b", heads, ws, shift, mask),
          ref.window_attention_block(x, params, "b", heads, ws, shift, mask))
    with pytest.raises(ValueError, match="multiples of"):
        fast.window_attention_block(x[:, 1:], params, "b", heads, ws, shift, mask)


# --- the thread helpers and the layout cache -------------------------------------------------------
@pytest.mark.parametrize("rows, row_elements, overlap, block", [
    (0, 5, 0, 10), (1, 5, 0, 10), (10, 1, 0, 3), (10, 4, 2, 8), (7, 100, 0, 10), (100, 3, 0, 1 << 22)])
def test_row_blocks_cover_every_row_once(rows, row_elements, overlap, block):
    got = threads.row_blocks(rows, row_elements, overlap, block)
    covered = [r for lo, n in got for r in range(lo, lo + n)]
    assert covered == list(range(rows)) and all(n >= 1 for _, n in got)


@pytest.mark.parametrize("threads_env", ["1", "2", "3"])
@pytest.mark.parametrize("rows, block", [(1, 1), (17, 4), (100, 7), (5, 1000)])
def test_parallel_ranges_and_rows_visit_every_row_once(monkeypatch, threads_env, rows, block):
    monkeypatch.setenv("MINSTF_NUM_THREADS", threads_env)
    seen, lock = [], threading.Lock()

    def kernel(lo, hi):
        with lock:
            seen.extend(range(lo, hi))

    threads.parallel_ranges(kernel, rows, 1, block=block)
    assert sorted(seen) == list(range(rows))
    a = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    out = np.zeros_like(a)
    threads.parallel_rows(lambda o, x: np.add(x, 1, out=o), out, a, block=block)
    np.testing.assert_array_equal(out, a + 1)


@pytest.mark.parametrize("threads_env", ["1", "2"])
def test_parallel_blocks_run_every_block_once_and_nest(monkeypatch, threads_env):
    monkeypatch.setenv("MINSTF_NUM_THREADS", threads_env)
    counts = np.zeros(20, int)
    inner = np.zeros(20 * 8, int)

    def work(i, n):
        counts[i] += n
        threads.parallel_ranges(lambda lo, hi: inner.__setitem__(slice(8 * i + lo, 8 * i + hi),
                                                                 inner[8 * i + lo:8 * i + hi] + 1), 8, 1, block=3)

    threads.parallel_blocks(work, [(i, 1) for i in range(20)])
    assert counts.tolist() == [1] * 20 and inner.tolist() == [1] * 160


def test_parallel_blocks_propagate_errors():
    def work(i):
        if i == 3:
            raise RuntimeError("block 3")

    with pytest.raises(RuntimeError, match="block 3"):
        threads.parallel_blocks(work, [(i,) for i in range(6)])


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    rng = np.random.default_rng(10)
    params = block_params(rng, "blk", 12, 3, 4, 48)
    x = rand(rng, 1, 13 * 9, 12)
    mask = ref.shift_attention_mask(13, 9, 4, 2)
    monkeypatch.setitem(threads.BLOCK, "window group", 200)
    outs = []
    for n in ("1", "2"):
        monkeypatch.setenv("MINSTF_NUM_THREADS", n)
        outs.append(fast.swin_block(x, 13, 9, params, "blk", 3, 4, 2, mask))
    close(outs[0], outs[1], 1e-6)


def test_scratch_is_reused_in_a_thread_and_never_shared_between_threads():
    a, b = threads.scratch(100, np.float32, 2)
    assert a.shape == (100,) and not np.shares_memory(a, b)
    again = threads.scratch(50, np.float32, 2)[0]
    assert np.shares_memory(again, a)  # the same thread: the same memory, no new allocation
    assert threads.scratch(50, np.float64, 1)[0].dtype == np.float64
    other = []
    t = threading.Thread(target=lambda: other.append(threads.scratch(100, np.float64, 1)[0]))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], threads.scratch(100, np.float64, 1)[0])


def test_derived_layouts_are_made_once_per_array():
    calls = []
    w = np.arange(6.0).reshape(2, 3)
    make = lambda a: calls.append(1) or a.T.copy()  # noqa: E731
    assert derived(w, "t", make) is derived(w, "t", make) and len(calls) == 1
    w2 = w.copy()  # a new array: its own layout, even if it reuses a freed id()
    np.testing.assert_array_equal(derived(w2, "t", make), w.T)
    assert len(calls) == 2
