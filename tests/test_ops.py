"""Each primitive of both kernel layers (reference and fast) against torch.nn.functional on random inputs."""
import numpy as np
import pytest

from minstf.switch import KERNELS, get_kernels

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(params=KERNELS)
def ops(request):
    """The layer under test: minstf.reference or minstf.kernels."""
    return get_kernels(request.param)


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def nchw_to_last(a):
    return a.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("bias", [True, False])
def test_linear(ops, bias):
    rng = np.random.default_rng(0)
    x, w = rand(rng, 2, 5, 7, 12), rand(rng, 9, 12)
    b = rand(rng, 9) if bias else None
    got = ops.linear(x, w, b)
    want = F.linear(t(x), t(w), None if b is None else t(b)).numpy()
    assert got.dtype == np.float32 and got.shape == (2, 5, 7, 9)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("B,H,W,Cin,O,k,stride,padding", [
    (1, 7, 9, 5, 6, 3, 1, 1),     # odd sizes, 3x3 "same"
    (2, 11, 6, 4, 3, 5, 1, 2),    # 5x5 (end_conv), batch 2
    (1, 9, 13, 6, 8, 3, 2, 1),    # stride 2, odd sizes (h_a)
    (2, 8, 10, 3, 5, 2, 2, 0),    # patch embed: k=2, stride 2, no padding
    (1, 6, 5, 3, 4, 3, 1, 0),     # no padding
    (1, 1, 1, 4, 4, 3, 1, 1),     # 1x1 map
])
def test_conv2d(ops, B, H, W, Cin, O, k, stride, padding):
    rng = np.random.default_rng(H * 100 + W)
    x, w, b = rand(rng, B, H, W, Cin), rand(rng, O, Cin, k, k), rand(rng, O)
    got = ops.conv2d(x, w, b, stride=stride, padding=padding)
    want = nchw_to_last(F.conv2d(t(x.transpose(0, 3, 1, 2)), t(w), t(b), stride=stride, padding=padding))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_conv2d_without_bias(ops):
    rng = np.random.default_rng(3)
    x, w = rand(rng, 1, 5, 6, 4), rand(rng, 2, 4, 3, 3)
    got = ops.conv2d(x, w, padding=1)
    want = nchw_to_last(F.conv2d(t(x.transpose(0, 3, 1, 2)), t(w), padding=1))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle(ops, r):
    rng = np.random.default_rng(r)
    x = rand(rng, 2, 3, 5, 4 * r * r)
    got = ops.pixel_shuffle(x, r)
    want = nchw_to_last(F.pixel_shuffle(t(x.transpose(0, 3, 1, 2)), r))
    np.testing.assert_array_equal(got, want)  # a pure permutation


def test_layer_norm(ops):
    rng = np.random.default_rng(4)
    x = rand(rng, 3, 7, 48, scale=3.0) + 2.0
    w, b = 1 + rand(rng, 48, scale=0.1), rand(rng, 48, scale=0.1)
    got = ops.layer_norm(x, w, b)
    want = F.layer_norm(t(x), (48,), t(w), t(b), eps=1e-5).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_gelu_is_exact_erf_form(ops):
    rng = np.random.default_rng(5)
    x = rand(rng, 1000, scale=4.0)
    got = ops.gelu(x)
    assert got.dtype == np.float32
    # PyTorch's float32 GELU is itself up to 1.2e-6 off the float64 value on [-12, 12] (0.9e-6 at
    # x = -3.44 here), the fast layer's up to 4e-7 (tests/test_kernels.py): the sum, with margin
    np.testing.assert_allclose(got, F.gelu(t(x)).numpy(), atol=2e-6, rtol=1e-6)
    # the tanh approximation differs by more than that somewhere
    assert np.abs(got - F.gelu(t(x), approximate="tanh").numpy()).max() > 1e-4


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(ops, axis):
    rng = np.random.default_rng(6)
    x = rand(rng, 4, 5, 16, scale=10.0)
    x[0, 0, :3] -= 100.0  # masked-like entries
    got = ops.softmax(x, axis=axis)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, F.softmax(t(x), dim=axis).numpy(), atol=1e-6, rtol=1e-5)
