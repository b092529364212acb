"""The continuous network against the golden vector (docs/golden.md §4–5), stage by stage, on
both kernel layers (reference and fast: the `k` fixture).

Every stage is teacher-forced: it gets the GOLDEN input of that stage, so an
error shows up where it is made. The whole g_a / g_s chains are checked too.
Tolerance: atol 1e-4 on unit-scale tensors. Run with `pytest -s` to see the
largest error of every stage; the summary is printed at the end of the module.
"""
import numpy as np
import pytest

from minstf.config import STFConfig
from minstf.switch import kernels_name
from minstf.synthetic import recipe_weights
from minstf.transforms import (basic_layer, g_a, g_s, h_a, h_mean_s, h_scale_s, patch_embed, patch_merging,
                               patch_split, slice_network)

ATOL = 1e-4
CFG = STFConfig()
ERRORS = {}  # (layer, stage name) -> max abs error


@pytest.fixture(scope="module", autouse=True)
def error_summary():
    yield
    if ERRORS:
        print("\nmax |error| per golden stage:")
        for (layer, name), err in ERRORS.items():
            print(f"  {layer:9s} {name:28s} {err:.2e}  {'OK' if err <= ATOL else 'NOT OK'}")


def check(k, name, got, want, atol=ATOL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == np.float32, f"{name}: {got.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != golden {want.shape}"
    err = float(np.abs(got - want).max())
    ERRORS[kernels_name(k), name] = err
    assert err <= atol, f"{name}: max |error| {err:.3e} > {atol}"


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return a.transpose(0, 3, 1, 2)


def stage_sizes(H1, W1, n=4):
    """Map size at the input of each encoder stage (before merging)."""
    sizes = [(H1, W1)]
    for _ in range(n - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def tokens(a):
    """NCHW -> (B, H*W, C)."""
    B, C, H, W = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1).reshape(B, H * W, C))


# --- encoder ------------------------------------------------------------------
@pytest.mark.parametrize("run", ["", "b_"])
def test_patch_embed(k, golden, golden_params, run):
    x, H, W = patch_embed(nhwc(golden[f"{run}x"]), golden_params, CFG.patch_size, k)
    want = golden[f"{run}patch_embed"]
    check(k, f"{run}patch_embed", x, tokens(want))
    assert (H, W) == want.shape[2:]


ENC_BLOCKS = [(i, b) for i, d in enumerate(CFG.depths) for b in range(d)]


@pytest.mark.parametrize("i,b", ENC_BLOCKS)
def test_encoder_block_teacher_forced(k, golden, golden_params, i, b):
    H, W = stage_sizes(64, 96)[i]
    if b > 0:
        x = golden[f"enc{i}_blk{b - 1}"]
    else:
        x = tokens(golden["patch_embed"]) if i == 0 else golden[f"enc{i - 1}_out"]
    ws = CFG.window_size
    mask = k.shift_attention_mask(H, W, ws, ws // 2)
    got = k.swin_block(x, H, W, golden_params, f"layers.{i}.blocks.{b}", CFG.num_heads[i], ws,
                     shift=ws // 2 if b % 2 else 0, mask=mask)
    check(k, f"enc{i}_blk{b}", got, golden[f"enc{i}_blk{b}"])


@pytest.mark.parametrize("i", range(len(CFG.depths) - 1))
def test_patch_merging_teacher_forced(k, golden, golden_params, i):
    H, W = stage_sizes(64, 96)[i]
    x = golden[f"enc{i}_blk{CFG.depths[i] - 1}"]
    got, H2, W2 = patch_merging(x, H, W, golden_params, f"layers.{i}.downsample", k)
    assert (H2, W2) == stage_sizes(64, 96)[i + 1]
    check(k, f"enc{i}_merge", got, golden[f"enc{i}_out"])


@pytest.mark.parametrize("run", ["", "b_"])
@pytest.mark.parametrize("i", range(len(CFG.depths)))
def test_encoder_stage_teacher_forced(k, golden, golden_params, run, i):
    pe = golden[f"{run}patch_embed"]
    H, W = stage_sizes(*pe.shape[2:])[i]
    x = tokens(pe) if i == 0 else golden[f"{run}enc{i - 1}_out"]
    last = len(CFG.depths) - 1
    got, _, _ = basic_layer(x, H, W, golden_params, f"layers.{i}", CFG.depths[i], CFG.num_heads[i],
                            CFG.window_size, resample="merge" if i < last else None, kernels=k)
    want = golden[f"{run}enc{i}_out"] if (i < last or run) else golden[f"enc{i}_blk{CFG.depths[i] - 1}"]
    check(k, f"{run}enc{i}_out (stage)", got, want)


@pytest.mark.parametrize("run", ["", "b_"])
def test_g_a_chain(k, golden, golden_params, run):
    taps = {}
    y = g_a(nhwc(golden[f"{run}x"]), golden_params, CFG, taps=taps, kernels=k)
    check(k, f"{run}y (g_a chain)", nchw(y), golden[f"{run}y"])
    if run == "":
        for key in ["patch_embed"] + [f"enc{i}_blk{b}" for i, b in ENC_BLOCKS] + \
                   [f"enc{i}_out" for i in range(3)]:
            check(k, f"{key} (g_a chain)", taps[key], golden[key])
        np.testing.assert_array_equal(taps["enc0_mask"], golden["attn_mask_64x96"])
        np.testing.assert_array_equal(taps["enc3_mask"], golden["attn_mask_8x12"])
    else:
        np.testing.assert_array_equal(taps["enc0_mask"], golden["b_enc_mask_layer0"])


# --- hyperprior -------------------------------------------------------------------
@pytest.mark.parametrize("run", ["", "b_"])
def test_h_a(k, golden, golden_params, run):
    z = h_a(nhwc(golden[f"{run}y"]), golden_params, CFG, k)
    check(k, f"{run}z (h_a)", nchw(z), golden[f"{run}z"])


def test_h_mean_s_and_h_scale_s(k, golden, golden_params):
    z_hat = nhwc(golden["z_hat"])
    check(k, "latent_means", nchw(h_mean_s(z_hat, golden_params, CFG, k)), golden["latent_means"])
    check(k, "latent_scales", nchw(h_scale_s(z_hat, golden_params, CFG, k)), golden["latent_scales"])


# --- slice networks, teacher-forced --------------------------------------------------
@pytest.mark.parametrize("s", range(CFG.num_slices))
def test_slice_networks_teacher_forced(k, golden, golden_params, s):
    Cs = CFG.slice_channels
    means, scales = nhwc(golden["latent_means"]), nhwc(golden["latent_scales"])
    y_hat, pre = nhwc(golden["y_hat"]), nhwc(golden["y_hat_pre_lrp"])
    H4, W4 = y_hat.shape[1:3]
    support = [y_hat[..., Cs * j:Cs * (j + 1)] for j in range(min(s, CFG.max_support_slices))]
    mean_support = np.concatenate([means] + support, axis=-1)
    scale_support = np.concatenate([scales] + support, axis=-1)
    sl = slice(Cs * s, Cs * (s + 1))
    mu = slice_network(mean_support, golden_params, f"cc_mean_transforms.{s}", k)[:, :H4, :W4]
    check(k, f"mu[{s}]", nchw(mu), golden["mu"][:, sl])
    scale = slice_network(scale_support, golden_params, f"cc_scale_transforms.{s}", k)[:, :H4, :W4]
    check(k, f"scale[{s}]", nchw(scale), golden["scale"][:, sl])
    lrp_in = np.concatenate([mean_support, pre[..., sl]], axis=-1)
    lrp = slice_network(lrp_in, golden_params, f"lrp_transforms.{s}", k)[:, :H4, :W4]
    check(k, f"lrp_raw[{s}]", nchw(lrp), golden["lrp_raw"][:, sl])


# --- decoder ----------------------------------------------------------------------
DEC_DEPTHS, DEC_HEADS = CFG.depths[::-1], CFG.num_heads[::-1]
DEC_BLOCKS = [(i, b) for i, d in enumerate(DEC_DEPTHS) for b in range(d)]


def dec_size(i):
    return 8 * 2**i, 12 * 2**i  # input A: y is 8x12


@pytest.mark.parametrize("i,b", DEC_BLOCKS)
def test_decoder_block_teacher_forced(k, golden, golden_params, i, b):
    H, W = dec_size(i)
    if b > 0:
        x = golden[f"dec{i}_blk{b - 1}"]
    else:
        x = tokens(golden["y_hat"]) if i == 0 else golden[f"dec{i - 1}_out"]
    ws = CFG.window_size
    got = k.swin_block(x, H, W, golden_params, f"syn_layers.{i}.blocks.{b}", DEC_HEADS[i], ws,
                       shift=ws // 2 if b % 2 else 0, mask=k.shift_attention_mask(H, W, ws, ws // 2))
    check(k, f"dec{i}_blk{b}", got, golden[f"dec{i}_blk{b}"])


@pytest.mark.parametrize("i", range(len(CFG.depths) - 1))
def test_patch_split_teacher_forced(k, golden, golden_params, i):
    H, W = dec_size(i)
    got, H2, W2 = patch_split(golden[f"dec{i}_blk{DEC_DEPTHS[i] - 1}"], H, W, golden_params,
                              f"syn_layers.{i}.downsample", k)
    assert (H2, W2) == dec_size(i + 1)
    check(k, f"dec{i}_split", got, golden[f"dec{i}_out"])


@pytest.mark.parametrize("i", range(len(CFG.depths)))
def test_decoder_stage_teacher_forced(k, golden, golden_params, i):
    H, W = dec_size(i)
    x = tokens(golden["y_hat"]) if i == 0 else golden[f"dec{i - 1}_out"]
    last = len(CFG.depths) - 1
    got, _, _ = basic_layer(x, H, W, golden_params, f"syn_layers.{i}", DEC_DEPTHS[i], DEC_HEADS[i],
                            CFG.window_size, resample="split" if i < last else None, kernels=k)
    want = golden[f"dec{i}_out"] if i < last else golden[f"dec{i}_blk{DEC_DEPTHS[i] - 1}"]
    check(k, f"dec{i}_out (stage)", got, want)


def test_end_conv_teacher_forced(k, golden, golden_params):
    H, W = dec_size(3)
    x = golden["dec3_blk1"].reshape(1, H, W, -1)
    check(k, "x_hat (end_conv)", nchw(k.end_conv(x, golden_params, CFG.patch_size)), golden["x_hat_forward"])


def test_g_s_chain(k, golden, golden_params):
    taps = {}
    x_hat = g_s(nhwc(golden["y_hat"]), golden_params, CFG, taps=taps, kernels=k)
    check(k, "x_hat (g_s chain)", nchw(x_hat), golden["x_hat_forward"])
    for key in [f"dec{i}_blk{b}" for i, b in DEC_BLOCKS] + [f"dec{i}_out" for i in range(3)]:
        if key in golden:
            check(k, f"{key} (g_s chain)", taps[key], golden[key])


# --- a small configuration, odd sizes -------------------------------------------------
SMALL = STFConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_slices=4,
                  max_support_slices=2, slice_hidden=(64, 48, 40, 32))


@pytest.fixture(scope="module")
def small_params():
    return recipe_weights(SMALL)


@pytest.mark.parametrize("H,W", [(37, 53), (64, 64), (17, 90)])
def test_small_config_shapes_and_batch(k, small_params, H, W):
    c, P = SMALL, small_params
    x = np.random.default_rng(H * W).random((2, H, W, 3), dtype=np.float32)
    taps = {}
    y = g_a(x, P, c, taps=taps, kernels=k)
    H4, W4 = -(-H // 16), -(-W // 16)
    assert y.shape == (2, H4, W4, c.M) and y.dtype == np.float32 and np.isfinite(y).all()
    assert taps["patch_embed"].shape == (2, c.embed_dim, -(-H // 2), -(-W // 2))
    # batch items are independent: the batched convolution/attention equals one item at a time
    np.testing.assert_allclose(g_a(x[1:], P, c, kernels=k), y[1:], atol=1e-5)
    z = h_a(y, P, c, k)
    zh, zw = -(-H4 // 4), -(-W4 // 4)
    assert z.shape == (2, zh, zw, c.N_z) and z.dtype == np.float32
    for f in (h_mean_s, h_scale_s):
        assert f(z, P, c, k).shape == (2, 4 * zh, 4 * zw, c.M)
    for kind in ("cc_mean_transforms", "cc_scale_transforms", "lrp_transforms"):
        for s in range(c.num_slices):
            cin = P[f"{kind}.{s}.0.weight"].shape[1]
            out = slice_network(np.zeros((2, H4, W4, cin), np.float32), P, f"{kind}.{s}", k)
            assert out.shape == (2, H4, W4, c.slice_channels)
    x_hat = g_s(y, P, c, kernels=k)
    assert x_hat.shape == (2, 16 * H4, 16 * W4, 3) and x_hat.dtype == np.float32
    assert np.isfinite(x_hat).all()
    np.testing.assert_allclose(g_s(y[:1], P, c, kernels=k), x_hat[:1], atol=1e-5)
