"""minstf against the PyTorch mirror (minstf/tooling/crosscheck.py), llm.c check_tensor style.

Tolerances (tooling/crosscheck.py's docstring): every stage within 1e-4 x max(1, max|torch|) (1e-4
absolute on unit-scale tensors; float32 noise is 1e-7 .. 1e-5), likelihoods within 1e-4
absolute (they amplify the noise of mu and scale: up to 1.5e-5 seen); y symbols, scale
indexes and z symbols equal except at ties (margin < 1e-4 from the rounding threshold or
table entry), and few of those. Several seeds of random weights at the small
configuration and odd sizes, the full configuration once; then a file coded from the
mirror's decisions decoded by minstf, minstf's decoded y_hat through the mirror's g_s, planted
ties and bugs, and the `minstf crosscheck` command.
"""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

import minstf.transforms  # noqa: E402
from minstf.tooling import crosscheck as xc  # noqa: E402
from minstf.cli import main  # noqa: E402
from minstf.config import STFConfig  # noqa: E402
from minstf.errors import BadInput  # noqa: E402
from minstf.image import eval_padding, pad, to_float  # noqa: E402
from minstf.config import SMALL_CONFIG  # noqa: E402
from minstf.mirror.stf_torch import STFTorch  # noqa: E402
from minstf.synthetic import recipe_weights  # noqa: E402

from test_codec import sample_image  # noqa: E402

torch.set_num_threads(1)  # robust on a shared 2-core machine (spinning OpenMP threads)

# (weight seed, height, width, pad to 64): square, odd padded, odd raw (ceil(57/16) = ceil(63/16) = 4)
CASES = [(0, 64, 64, False), (1, 70, 90, True), (2, 57, 63, False)]


@pytest.fixture(scope="module")
def small_params():
    return {seed: xc.synthetic_params(SMALL_CONFIG, seed) for seed in (0, 1, 2)}


def check_result(result, config):
    """Every stage within tolerance, decisions equal but for a few documented ties."""
    print(xc.format_report(result))
    assert [r.name for r in result.rows] == xc.stage_names(config)  # no stage left out
    for r in result.rows + result.forced_rows:
        assert r.verdict in ("OK", "tie"), f"{r.name}: max|diff| {r.max_abs:.3g} > {r.tol:.3g}"
        if r.verdict == "OK":
            assert r.max_abs <= r.tol
    if any(r.verdict == "tie" for r in result.rows):
        assert result.forced_rows and all(r.verdict == "OK" for r in result.forced_rows)
    for d in result.decisions:
        assert np.all(d.margins < 1e-4), f"{d.name}: a disagreement away from any threshold: {d.examples}"
        assert d.differ <= max(3, d.total // 1000), f"{d.name}: {d.differ} ties of {d.total}"
    b = result.bpp
    assert abs(b["estimated_minstf"] - b["estimated_torch"]) <= 1e-3 * b["estimated_torch"]
    assert result.ok


@pytest.mark.parametrize("seed, h, w, padded", CASES, ids=[f"seed{c[0]}-{c[2]}x{c[1]}" for c in CASES])
def test_small_config_every_stage(small_params, seed, h, w, padded):
    image = sample_image(h, w, seed=seed)
    result, ltrb = xc.crosscheck_image(image, small_params[seed], SMALL_CONFIG, pad_to_eval=padded,
                                       force_teacher=seed == 1)
    assert result.shape[2:] == ((128, 128) if padded else (h, w)) and result.pixels == h * w
    assert bool(result.forced_rows) == (seed == 1 or any(d.differ for d in result.free_decisions[::2]))
    check_result(result, SMALL_CONFIG)
    if not any(d.differ for d in result.decisions):  # the same decisions code to the same bits
        assert result.bpp["coded_minstf"] == result.bpp["coded_torch_symbols"]


def test_full_config_once(golden_params):
    image = sample_image(64, 64, seed=7)
    result, _ = xc.crosscheck_image(image, golden_params, STFConfig(), code=False)
    check_result(result, STFConfig())
    assert len(result.rows) == 1 + 4 + 12 + 10 + 12 + 4 + 3  # patch_embed, stage outs, blocks, latents, ...


def test_synthetic_params_seeds(small_params):
    base = recipe_weights(SMALL_CONFIG)
    one, two = small_params[1], small_params[2]
    assert all(np.array_equal(base[k], small_params[0][k]) for k in base)  # seed 0: the recipe itself
    again = xc.synthetic_params(SMALL_CONFIG, 1)
    assert all(np.array_equal(one[k], again[k]) and one[k].dtype == np.float32 for k in base)
    assert not np.array_equal(one["h_a.0.weight"], two["h_a.0.weight"])
    assert np.array_equal(one["entropy_bottleneck.quantiles"], base["entropy_bottleneck.quantiles"])


def test_size_the_slice_loop_cannot_use(small_params):
    with pytest.raises(BadInput, match="multiple of 4"):
        xc.crosscheck_image(sample_image(70, 90), small_params[0], SMALL_CONFIG)


# --- compress on one side, decode on the other ------------------------------------------------

def test_mirror_decisions_coded_by_minstf_decode_like_minstf(small_params, monkeypatch):
    """The mirror's symbols and indexes through minstf's coder make the very file minstf's compress makes;
    minstf decodes it to its own decode; minstf's decoded y_hat through the mirror's g_s is minstf's x_hat."""
    params = small_params[1]
    image = sample_image(70, 90, seed=1)
    x = pad(to_float(image), eval_padding(70, 90, SMALL_CONFIG.pad_multiple))  # (1, 3, 128, 128)
    model = xc.minstf_model(params, SMALL_CONFIG)
    mirror = STFTorch(SMALL_CONFIG).load_params(params).eval()
    t = mirror.taps(x)
    z_symbols = np.rint(t["z"].transpose(0, 2, 3, 1) - model.medians).astype(np.int32)  # (1, h, w, N_z)
    y_symbols, y_indexes = t["symbols"].transpose(0, 2, 3, 1), t["index"].transpose(0, 2, 3, 1)  # (1, H4, W4, M)

    from_torch = xc.coded_from_symbols(model, z_symbols, y_symbols, y_indexes)
    own = model.compress(x)
    assert from_torch == own  # strings, shape, CRCs: no decision differs on this image (else: a tie)

    seen = []
    real_g_s = minstf.transforms.g_s
    monkeypatch.setattr(minstf.transforms, "g_s", lambda y_hat, *a, **kw: seen.append(y_hat) or real_g_s(y_hat, *a, **kw))
    x_from_torch = model.decompress(from_torch)
    x_own = model.decompress(own)
    assert np.array_equal(x_from_torch, x_own)

    with torch.no_grad():  # the reverse direction: minstf's decoded y_hat, the mirror's synthesis
        x_mirror = mirror.g_s(torch.from_numpy(np.ascontiguousarray(seen[-1].transpose(0, 3, 1, 2)))).clamp(0, 1)
    assert np.abs(x_mirror.numpy() - x_own).max() <= 1e-4


# --- planted ties and bugs: the machinery says the right thing --------------------------------

def _nudged(params, config, x, margin=1e-5, noise_floor=5e-6):
    """Copy of params whose mu moves one of minstf's y decisions across its rounding threshold, `margin`
    beyond it, via the bias of its slice's last mean conv (which moves the whole channel's mu, by less
    than mu's tolerance). Returns (params, element, shift).

    The element is the one closest to a tie among those at least `noise_floor` from it: float32 noise
    between two implementations (~1e-6 here) cannot decide it either way, so the mirror (original
    weights) keeps the original decision and minstf (nudged) takes the other, on every CPU and BLAS.
    It is taken from a slice that no later slice reads as support, so the moved channel of mu cannot
    move a later slice's mean or scale across a threshold of its own (which one would depend on
    where float noise falls)."""
    taps = {}
    xc.minstf_model(params, config).forward(x, taps)
    d = (taps["y"] - taps["mu"]).astype(np.float64)  # (1, H4, W4, M)
    distance = np.abs(d % 1.0 - 0.5)  # to the nearest rounding threshold
    distance[distance < noise_floor] = np.inf  # too close to call: float noise decides those
    distance[..., :config.slice_channels * config.max_support_slices] = np.inf  # support slices: read later
    b, h, w, ch = np.unravel_index(np.argmin(distance), d.shape)
    signed = d[b, h, w, ch] % 1.0 - 0.5  # < 0: rounds down now: raise y - mu by |signed| + margin, else lower
    shift = -(abs(signed) + margin) if signed < 0 else abs(signed) + margin  # added to mu
    S = config.slice_channels
    key = f"cc_mean_transforms.{ch // S}.8.bias"
    nudged = dict(params)
    nudged[key] = params[key].copy()
    nudged[key][ch % S] += np.float32(shift)
    return nudged, (ch, h, w), shift / max(1.0, float(np.abs(taps["mu"]).max()))


def test_a_planted_tie_is_reported_as_a_tie(small_params):
    config, params = SMALL_CONFIG, small_params[2]
    x = to_float(sample_image(256, 256, seed=3))  # 16,384 decisions: some within 1e-4 of a tie
    nudged, (ch, h, w), relative_shift = _nudged(params, config, x)
    assert abs(relative_shift) < 1e-4  # within mu's tolerance: the decision moves
    mirror = STFTorch(config).load_params(params).eval()  # the mirror keeps the original weights
    result = xc.crosscheck(nudged, config, x, mirror=mirror, code=False)
    report = xc.format_report(result)
    print(report)
    y = result.decisions[0]
    assert 1 <= y.differ <= 3 and np.all(y.margins < 1e-4)
    assert any(f"(channel {ch}, row {h}, col {w})" in e for e in y.examples)
    # Teacher-forced, everything up to y_hat is within tolerance. The synthesis after it sees a
    # whole channel of mu moved by the nudge (minstf's side only) and amplifies that: its rows
    # stay within 10x tolerance (1e-3 relative) rather than the float32-noise tolerance.
    assert result.forced_rows
    names = [r.name for r in result.forced_rows]
    upto = names.index("y_hat") + 1
    assert all(r.verdict == "OK" for r in result.forced_rows[:upto]), report
    assert all(r.max_abs <= 10 * r.tol for r in result.forced_rows[upto:]), report
    assert {r.name for r in result.rows if r.verdict == "tie"} >= {"y_hat_pre_lrp", "y_hat"}
    assert "(ties)" in report and "note: rows marked `tie`" in report


def test_a_planted_bug_is_not_ok_with_a_hint(small_params):
    config, params = SMALL_CONFIG, small_params[0]
    x = to_float(sample_image(64, 64, seed=4))
    mirror = STFTorch(config).load_params(params).eval()
    buggy = dict(params, **{"h_a.4.bias": params["h_a.4.bias"] + np.float32(0.01)})  # minstf's side only
    result = xc.crosscheck(buggy, config, x, mirror=mirror, code=False)
    report = xc.format_report(result)
    assert not result.ok and "verdict: NOT OK" in report
    first = next(r for r in result.rows if r.verdict == "NOT OK")
    assert first.name == "z" and all(r.verdict == "OK" for r in result.rows[:result.rows.index(first)])
    assert "hint: free-running: the first NOT OK stage is z" in report and "transforms.h_a" in report


# --- the command line --------------------------------------------------------------------------

def _png(path, h, w, seed=0):
    Image.fromarray(sample_image(h, w, seed)).save(path)
    return str(path)


def test_cli_synthetic_small(tmp_path):
    r = CliRunner().invoke(main, ["crosscheck", _png(tmp_path / "a.png", 64, 64), "--synthetic", "small"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "weights  synthetic small, seed 0" in out and "verdict: OK" in out
    assert "patch_embed" in out and "x_hat" in out and "likelihoods z" in out and "y symbols" in out
    assert "estimated      minstf" in out and "coded          minstf" in out


def test_cli_synthetic_wacnn(tmp_path):
    """--synthetic offers WACNN too: the mirror (WACNNTorch) is picked by the config."""
    r = CliRunner().invoke(main, ["crosscheck", _png(tmp_path / "a.png", 64, 64), "--synthetic", "cnn-small"])
    out = r.output
    assert r.exit_code == 0, out
    assert "weights  synthetic cnn-small, seed 0" in out and "verdict: OK" in out
    assert "g_a" in out  # WACNN's layers are in the report


def test_cli_pad_and_size_errors(tmp_path):
    src = _png(tmp_path / "b.png", 70, 90)
    r = CliRunner().invoke(main, ["crosscheck", src, "--synthetic", "small", "--seed", "2", "--pad"])
    assert r.exit_code == 0, r.output
    assert "90x70, padded to 128x128 (left, top, right, bottom: 19, 29, 19, 29)" in r.stdout
    assert "over 6,300 pixels" in r.stdout
    r = CliRunner().invoke(main, ["crosscheck", src, "--synthetic", "small"])
    assert r.exit_code == 3 and "multiple of 4" in r.stderr and "--pad" in r.stderr
    r = CliRunner().invoke(main, ["crosscheck", src, "--seed", "1"])
    assert r.exit_code == 2


def test_cli_not_ok_exits_1(tmp_path, monkeypatch):
    real = xc.minstf_model

    def with_a_bug(params, config, tables=None):  # minstf's side only: a brighter image
        return real(dict(params, **{"end_conv.2.bias": params["end_conv.2.bias"] + np.float32(0.01)}), config)

    monkeypatch.setattr(xc, "minstf_model", with_a_bug)
    r = CliRunner().invoke(main, ["crosscheck", _png(tmp_path / "c.png", 64, 64), "--synthetic", "small"])
    assert r.exit_code == 1, r.output
    assert "verdict: NOT OK" in r.stdout and "hint: free-running: the first NOT OK stage is x_hat" in r.stdout


def test_cli_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    r = CliRunner().invoke(main, ["crosscheck", _png(tmp_path / "d.png", 64, 64), "--synthetic", "small"])
    assert r.exit_code == 1
    assert r.stderr == "minstf: error: minstf crosscheck needs PyTorch: pip install 'minstf[torch]'\n"
    assert "Traceback" not in r.output
