"""WACNN (`cnn`) against its golden vector (docs/wacnn.md §6), layer by layer, on both kernel layers.

Teacher-forced: every layer gets the GOLDEN input of that layer, so an error shows up
where it is made (g_a.1 and g_s.7 take our own conv output: only 32 channels of their
inputs are stored). Chains: g_a and g_s whole, inputs A (128x192) and B (189x125, not a
multiple of 64). Entropy path: z symbols, the slice loop teacher-forced with the golden
y and hyper-latent (symbols and scale indexes exactly), likelihoods.
Tolerances (docs/wacnn.md §6): atol 1e-4 on every float tensor, 1e-5 on likelihoods.
Run with `pytest -s` to see the largest error of every stage.
"""
import numpy as np
import pytest

from minstf import wacnn
from minstf.coding import channel_first_flat
from minstf.config import WACNN_CONFIG as CFG
from minstf.entropy_models import build_indexes, eb_likelihood, eb_medians, gc_likelihood, quantize_symbols
from minstf.reference.wacnn import conv_transpose2d, gdn
from minstf.slices import run_slices, slice_of
from minstf.switch import kernels_name
from minstf.transforms import slice_network


ATOL, LIK_ATOL = 1e-4, 1e-5
ERRORS = {}  # (layer, stage) -> max abs error


@pytest.fixture(scope="module", autouse=True)
def error_summary():
    yield
    if ERRORS:
        print("\nmax |error| per WACNN golden stage:")
        for (layer, name), (err, atol) in ERRORS.items():
            print(f"  {layer:9s} {name:28s} {err:.2e}  {'OK' if err <= atol else 'NOT OK'}")


def check(k, name, got, want, atol=ATOL):
    """got channels-last (B, H, W, C) against a golden NCHW array."""
    got, want = np.asarray(got), nhwc(want)
    assert got.dtype == np.float32, f"{name}: {got.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != golden {want.shape}"
    err = float(np.abs(got - want).max())
    ERRORS[kernels_name(k), name] = (err, atol)
    assert err <= atol, f"{name}: max |error| {err:.3e} > {atol}"


def nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def golden_input(g, name, i):
    """The golden input of layer i of g_a / g_s (None where only 32 channels are stored)."""
    if i == 0:
        return g["x"] if name == "g_a" else g["y_hat"]
    prev = f"{name}{i - 1}"
    return g[prev] if prev in ("g_a1", "g_a2", "g_a3", "g_a4", "g_a5", "g_a6", "g_a7", "g_s0", "g_s1", "g_s2",
                               "g_s3", "g_s4", "g_s5", "g_s7") else None


# --- g_a and g_s, one layer at a time ----------------------------------------------------
LAYERS = [("g_a", i, kind) for i, kind in enumerate(wacnn.G_A)] + [("g_s", i, kind) for i, kind in enumerate(wacnn.G_S)]


@pytest.mark.parametrize("name,i,kind", LAYERS, ids=[f"{n}{i}-{kind}" for n, i, kind in LAYERS])
def test_layer_teacher_forced(k, cnn_golden, cnn_params, name, i, kind):
    g, P = cnn_golden, cnn_params
    x = golden_input(g, name, i)
    if x is None:  # g_a.1 / g_s.7: our own conv output of the golden input before it, checked on 32 channels
        kind_before = (wacnn.G_A if name == "g_a" else wacnn.G_S)[i - 1]
        x = wacnn.layer(kind_before, nhwc(golden_input(g, name, i - 1)), P, f"{name}.{i - 1}", CFG, kernels=k)
        check(k, f"{name}{i - 1}_c32 (own input)", x[..., :32], g[f"{name}{i - 1}_c32"])
    else:
        x = nhwc(x)
    taps = {}
    got = wacnn.layer(kind, x, P, f"{name}.{i}", CFG, taps, k)
    want = {"g_a8": "y", "g_s8": "x_hat_forward"}.get(f"{name}{i}", f"{name}{i}")
    if f"{name}{i}" in ("g_a0", "g_s6"):
        check(k, f"{name}{i}_c32", got[..., :32], g[f"{name}{i}_c32"])
    else:
        check(k, f"{name}{i} ({kind})", got, g[want])
    if f"{name}{i}" in ("g_a8", "g_s0"):  # the attention block's internals
        for part in ("conv_a", "attn", "gate"):
            check(k, f"{name}{i}_{part}", taps[f"{name}{i}_{part}"], g[f"{name}{i}_{part}"])


# --- chains, inputs A and B ----------------------------------------------------------------
@pytest.mark.parametrize("run", ["", "b_"])
def test_g_a_chain(k, cnn_golden, cnn_params, run):
    g, taps = cnn_golden, {}
    y = wacnn.g_a(nhwc(g[f"{run}x"]), cnn_params, CFG, taps=taps, kernels=k)
    check(k, f"{run}y (g_a chain)", y, g[f"{run}y"])
    grids = {"": ("32x48", "8x12"), "b_": ("48x32", "12x8")}[run]
    np.testing.assert_array_equal(taps["g_a4_mask"], g[f"{run}attn_mask_{grids[0]}"])  # 0 / -100, one formula
    np.testing.assert_array_equal(taps["g_a8_mask"], g[f"{run}attn_mask_{grids[1]}"])
    for key in ("g_a1", "g_a2", "g_a3", "g_a4", "g_a5", "g_a6", "g_a7") if run == "" else ():
        if key in g:  # the fixture subset lacks the large maps
            check(k, f"{key} (g_a chain)", taps[key], g[key])


@pytest.mark.parametrize("run", ["", "b_"])
def test_g_s_chain(k, cnn_golden, cnn_params, run):
    g, taps = cnn_golden, {}
    x_hat = wacnn.g_s(nhwc(g[f"{run}y_hat"]), cnn_params, CFG, taps=taps, kernels=k)
    check(k, f"{run}x_hat_forward (g_s chain)", x_hat, g[f"{run}x_hat_forward"])
    for key in ("g_s0", "g_s1", "g_s2", "g_s3", "g_s4", "g_s5", "g_s7") if run == "" else ():
        if key in g:
            check(k, f"{key} (g_s chain)", taps[key], g[key])


def test_inadmissible_sizes_are_refused(k, cnn_params):
    """docs/wacnn.md §5: 124 rows give a 31-row map at g_a.4, not whole 8x8 windows (upstream fails too)."""
    x = np.zeros((1, 124, 64, 3), np.float32)
    with pytest.raises(ValueError, match="whole 8x8 windows"):
        wacnn.g_a(x, cnn_params, CFG, kernels=k)


# --- hyperprior and entropy path ------------------------------------------------------------
@pytest.mark.parametrize("run", ["", "b_"])
def test_h_a_and_z_symbols(k, cnn_golden, cnn_params, run):
    g = cnn_golden
    z = wacnn.h_a(nhwc(g[f"{run}y"]), cnn_params, CFG, k)
    check(k, f"{run}z (h_a)", z, g[f"{run}z"])
    eb = {key.split(".", 1)[1]: v for key, v in cnn_params.items() if key.startswith("entropy_bottleneck.")}
    medians = eb_medians(eb)
    np.testing.assert_array_equal(medians, g["eb_medians"])
    symbols = quantize_symbols(nhwc(g[f"{run}z"]), medians)  # from the golden z: one code path, exact
    np.testing.assert_array_equal(symbols.astype(np.float32) + medians, nhwc(g[f"{run}z_hat"]))
    if run == "":
        np.testing.assert_array_equal(channel_first_flat(symbols), g["z_symbols_flat"])
    check(k, f"{run}lik_z", eb_likelihood(nhwc(g[f"{run}z"]), eb), g[f"{run}lik_z"], LIK_ATOL)


@pytest.mark.parametrize("run", ["", "b_"])
def test_slice_loop_teacher_forced(k, cnn_golden, cnn_params, run):
    """Golden z_hat and y in, our hyper synthesis and slice loop: symbols and indexes exactly."""
    g, P = cnn_golden, cnn_params
    z_hat = nhwc(g[f"{run}z_hat"])
    means, scales = wacnn.h_mean_s(z_hat, P, CFG, k), wacnn.h_scale_s(z_hat, P, CFG, k)
    if run == "":
        check(k, "latent_means", means, g["latent_means"])
        check(k, "latent_scales", scales, g["latent_scales"])
    y, lik = nhwc(g[f"{run}y"]), []

    def quantize(s, mu, scale):
        lik.append(gc_likelihood(slice_of(y, s, CFG), scale, mu))
        return quantize_symbols(slice_of(y, s, CFG), mu)

    taps = {}
    y_hat = run_slices(means, scales, P, CFG, quantize, taps, k)
    symbols = quantize_symbols(y, taps["mu"])
    np.testing.assert_array_equal(symbols, nhwc(g[f"{run}symbols"]))  # margins >= 2.3e-5 (§5)
    np.testing.assert_array_equal(build_indexes(taps["scale"]), nhwc(g[f"{run}index"]))
    check(k, f"{run}mu", taps["mu"], g[f"{run}mu"])
    check(k, f"{run}scale", taps["scale"], g[f"{run}scale"])
    check(k, f"{run}y_hat", y_hat, g[f"{run}y_hat"])
    check(k, f"{run}lik_y", np.concatenate(lik, axis=-1), g[f"{run}lik_y"], LIK_ATOL)
    if run == "":
        check(k, "lrp_raw", taps["lrp_raw"], g["lrp_raw"])
        check(k, "y_hat_pre_lrp", taps["y_hat_pre_lrp"], g["y_hat_pre_lrp"])
        np.testing.assert_array_equal(channel_first_flat(symbols), g["y_symbols_flat"])
        np.testing.assert_array_equal(channel_first_flat(build_indexes(taps["scale"])), g["y_indexes_flat"])


@pytest.mark.parametrize("s", [0, 5, 9])
def test_slice_networks_teacher_forced(k, cnn_golden, cnn_params, s):
    """Slices 0 (no support), 5 (support full) and 9 (capped at 5) with golden inputs."""
    g, Cs = cnn_golden, CFG.slice_channels
    means, scales = nhwc(g["latent_means"]), nhwc(g["latent_scales"])
    y_hat, pre = nhwc(g["y_hat"]), nhwc(g["y_hat_pre_lrp"])
    support = [y_hat[..., Cs * j:Cs * (j + 1)] for j in range(min(s, CFG.max_support_slices))]
    mean_support = np.concatenate([means] + support, axis=-1)
    sl = slice(Cs * s, Cs * (s + 1))
    mu = slice_network(mean_support, cnn_params, f"cc_mean_transforms.{s}", k)
    check(k, f"mu[{s}]", mu, g["mu"][:, sl])
    scale = slice_network(np.concatenate([scales] + support, axis=-1), cnn_params, f"cc_scale_transforms.{s}", k)
    check(k, f"scale[{s}]", scale, g["scale"][:, sl])
    lrp = slice_network(np.concatenate([mean_support, pre[..., sl]], axis=-1), cnn_params, f"lrp_transforms.{s}", k)
    check(k, f"lrp_raw[{s}]", lrp, g["lrp_raw"][:, sl])


# --- the new primitives against their definitions --------------------------------------------
def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv_transpose(x), u> = <x, conv(u)>: ConvTranspose2d is the adjoint of the strided Conv2d
    with the same weight read as (O, Cin) -> so the layouts and offsets are right, without torch."""
    from minstf.reference.ops import conv2d
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 4))
    w = rng.standard_normal((4, 3, 5, 5))  # (Cin, O, k, k) of the transposed conv
    y = conv_transpose2d(x, w, None, stride=2, padding=2, output_padding=1)  # (2, 10, 14, 3)
    assert y.shape == (2, 10, 14, 3)
    u = rng.standard_normal(y.shape)
    # the forward conv maps the output space (O = 3 channels) back to the input's (Cin = 4)
    back = conv2d(u, w, None, stride=2, padding=2)  # weight (4, 3, 5, 5) read as Conv2d (O=4, Cin=3)
    assert back.shape == x.shape
    assert abs((y * u).sum() - (x * back).sum()) <= 1e-9 * abs((x * back).sum()) + 1e-9


def test_conv_transpose2d_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for H, W, Cin, O, kk, stride, pad, opad in [(5, 7, 4, 3, 5, 2, 2, 1), (4, 4, 2, 5, 3, 2, 1, 1),
                                                (3, 6, 3, 2, 5, 2, 2, 0), (4, 5, 3, 3, 4, 3, 0, 2)]:
        x = rng.standard_normal((2, H, W, Cin)).astype(np.float32)
        w = rng.standard_normal((Cin, O, kk, kk)).astype(np.float32)
        b = rng.standard_normal(O).astype(np.float32)
        want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                                    torch.from_numpy(w), torch.from_numpy(b), stride, pad, opad)
        got = conv_transpose2d(x, w, b, stride, pad, opad)
        np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), atol=2e-5 * kk * kk * Cin ** 0.5)


def test_gdn_and_igdn_follow_their_formulas():
    """In float64, against the formulas written out: bounds, squares, pedestal, gamma row = output channel."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 4, 6))
    beta, gamma = 1.0 + 0.1 * rng.standard_normal(6), 0.1 * np.eye(6) + 0.05 * rng.standard_normal((6, 6))
    norm = (np.maximum(beta, (1e-6 + 2.0 ** -36) ** 0.5) ** 2 - 2.0 ** -36) \
        + (x ** 2) @ (np.maximum(gamma, 2.0 ** -18) ** 2 - 2.0 ** -36).T
    np.testing.assert_allclose(gdn(x, beta, gamma), x / np.sqrt(norm), rtol=1e-12)
    np.testing.assert_allclose(gdn(x, beta, gamma, inverse=True), x * np.sqrt(norm), rtol=1e-12)


def test_array_code_takes_its_module_from_inputs():
    from test_backend import PACKAGE, numpy_calls
    for module in ("reference/wacnn.py", "wacnn.py"):
        assert not numpy_calls(PACKAGE / module, set()), module
