"""The PyTorch mirror (minstf.mirror) against the key inventory and the golden upstream vector."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minstf.config import STFConfig  # noqa: E402
from minstf.keys import state_dict_spec  # noqa: E402
from minstf.mirror.stf_torch import SCALE_TABLE, STFTorch, relative_position_index, shift_mask  # noqa: E402
from minstf.synthetic import recipe_weights  # noqa: E402

torch.set_num_threads(1)  # robust on a shared 2-core machine (spinning OpenMP threads)

SMALL = STFConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 4), num_slices=4,
                  max_support_slices=2, slice_hidden=(32, 24, 16, 16))

# golden key -> atol; discrete outputs are compared exactly
TOLERANCES = {
    "patch_embed": 1e-4, "enc0_out": 1e-4, "enc1_out": 1e-4, "enc2_out": 1e-4, "enc3_out": 1e-4,
    "y": 1e-4, "z": 1e-4, "latent_means": 1e-4, "latent_scales": 1e-4, "mu": 1e-4, "scale": 1e-4,
    "lrp_raw": 1e-4, "y_hat_pre_lrp": 1e-4, "y_hat": 1e-4, "x_hat_forward": 1e-4,
    "dec0_out": 1e-4, "dec1_out": 1e-4, "dec2_out": 1e-4, "dec3_blk1": 1e-4, "enc3_blk1": 1e-4,
    "lik_y": 1e-5, "lik_z": 1e-5,
    "z_hat": 0, "symbols": 0, "index": 0,
}


def check_tensor(name, ours, ref, atol):
    """llm.c-style verdict: name, max |difference|, OK / NOT OK."""
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != golden {ref.shape}"
    err = float(np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
    print(f"{name:16s} max|diff| {err:.3g}  {'OK' if err <= atol else 'NOT OK'}")
    assert err <= atol, f"{name}: max |diff| {err:.3g} > {atol} (stale fixture? regenerate golden subset)"
    return err


@pytest.mark.parametrize("config", [STFConfig(), SMALL], ids=["default", "small"])
def test_state_dict_matches_key_spec(config):
    state = STFTorch(config).state_dict()
    spec = state_dict_spec(config)
    assert list(state) == [s.key for s in spec]
    for s in spec:
        assert tuple(state[s.key].shape) == s.shape, s.key
        assert str(state[s.key].dtype) == f"torch.{s.dtype}", s.key


@pytest.fixture(scope="module")
def golden_model(golden_params):
    return STFTorch(STFConfig()).load_params(golden_params).eval()


@pytest.mark.parametrize("prefix", ["", "b_"], ids=["input_A", "input_B"])
def test_taps_match_golden(golden, golden_model, prefix):
    taps = golden_model.taps(golden[prefix + "x"])
    compared = 0
    for name, atol in TOLERANCES.items():
        if prefix + name in golden:
            check_tensor(prefix + name, taps[name], golden[prefix + name], atol)
            compared += 1
    assert compared >= (20 if prefix == "" else 8)


def test_block_taps_match_golden(golden, golden_model):
    if not golden.full:
        pytest.skip("per-block taps are only in the full golden file")
    taps = golden_model.taps(golden["x"])
    names = [k for k in taps if "_blk" in k]
    assert len(names) == 24
    for name in names:
        check_tensor(name, taps[name], golden[name], 1e-4)


def test_masks_and_index_match_golden(golden):
    assert np.array_equal(relative_position_index(4).numpy(), golden["rel_pos_index"])
    assert np.array_equal(shift_mask(8, 12, 4, 2).numpy(), golden["attn_mask_8x12"])
    for key, (H, W) in (("attn_mask_64x96", (64, 96)), ("b_enc_mask_layer0", (64, 92))):
        if key in golden:
            assert np.array_equal(shift_mask(H, W, 4, 2).numpy(), golden[key])
    assert np.array_equal(SCALE_TABLE, golden["gc_scale_table"])


def test_load_export_roundtrip_small():
    params = recipe_weights(SMALL)
    model = STFTorch(SMALL).load_params(params)
    out = model.export_params()
    assert list(out) == list(params)
    assert all(out[k].dtype == np.float32 and np.array_equal(out[k], params[k]) for k in params)
    with pytest.raises(AssertionError):
        STFTorch(SMALL).load_params({k: v for k, v in params.items() if k != "h_a.0.bias"})


def test_training_mode_small():
    torch.manual_seed(0)
    model = STFTorch(SMALL).train()
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, SMALL.M, 4, 4)
    assert out["likelihoods"]["z"].shape == (2, SMALL.N_z, 1, 1)
    for lik in out["likelihoods"].values():
        assert torch.all((lik >= 1e-9) & (lik <= 1))
    bpp = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values()) / (2 * 64 * 64)
    (bpp + torch.mean((out["x_hat"] - x) ** 2)).backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0  # straight-through rounding lets gradients reach g_a
    assert model.entropy_bottleneck.quantiles.grad is None or model.entropy_bottleneck.quantiles.grad.abs().sum() == 0
    model.zero_grad()
    model.aux_loss().backward()  # the aux loss trains only the quantiles
    assert model.entropy_bottleneck.quantiles.grad.abs().sum() > 0
    assert model.entropy_bottleneck._matrix0.grad is None


def test_eval_forward_is_deterministic_small():
    model = STFTorch(SMALL).load_params(recipe_weights(SMALL)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a["x_hat"], b["x_hat"]) and torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    taps = model.taps(x)
    assert np.array_equal(taps["x_hat"], a["x_hat"].numpy())


def _tiny_dataset(folder, n=3):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (80 + 8 * i, 96, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_train_resume_is_exact_and_export(tmp_path):
    from minstf.mirror import train

    data = _tiny_dataset(tmp_path)
    common = ["--config", "small", "--data", str(data), "--batch-size", "2", "--patch-size", "64",
              "--threads", "1", "--log-every", "1", "--save-every", "2", "--val-every", "2", "--holdout", "1",
              "--lr", "1e-3"]
    train.main(["--out", str(tmp_path / "a"), "--steps", "4"] + common)
    train.main(["--out", str(tmp_path / "b"), "--steps", "2"] + common)
    train.main(["--out", str(tmp_path / "b"), "--steps", "4", "--resume"] + common)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # --resume alone takes the recipe (lr, batch, crops, data, ...) from the checkpoint
    train.main(["--out", str(tmp_path / "e"), "--steps", "2"] + common)
    train.main(["--out", str(tmp_path / "e"), "--steps", "4", "--resume", "--threads", "1", "--save-every", "2",
                "--val-every", "2", "--log-every", "1"])
    e = torch.load(tmp_path / "e" / "checkpoint.pt", weights_only=True)
    assert e["args"]["lr"] == 1e-3 and e["args"]["batch_size"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], e["model"][k]), k
    log = (tmp_path / "b" / "log.tsv").read_text().splitlines()
    assert log[0].startswith("step\tloss\tbpp\tmse\tpsnr\taux") and len(log) == 5
    params, config = train.export_params(tmp_path / "a" / "checkpoint.pt")
    assert config == SMALL and list(params) == [s.key for s in state_dict_spec(SMALL) if s.kind == "param"]
    assert all(v.dtype == np.float32 for v in params.values())
    # fine-tune start from another checkpoint at another lambda
    train.main(["--out", str(tmp_path / "c"), "--steps", "1", "--init", str(tmp_path / "a" / "checkpoint.pt"),
                "--lmbda", "0.013"] + common)
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)["step"] == 1
    # a wall-clock budget stops the run and is counted across resumes
    train.main(["--out", str(tmp_path / "d"), "--minutes", "1e-5"] + common)
    assert torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=False)["step"] == 1


def test_train_init_from_shipped_weight_file(tmp_path):
    """--init takes a minstf .safetensors weight file: continued training of the shipped weights."""
    from pathlib import Path

    from minstf.mirror import train
    from minstf.weights import load_weights

    shipped = Path(__file__).resolve().parents[1] / "weights" / "stf-small-q2.safetensors"
    w = load_weights(shipped)
    model = train.init_model(STFTorch(SMALL, drop_path_rate=0.0), shipped)
    params = model.export_params()
    assert list(params) == list(w.params) and all(np.array_equal(params[k], w.params[k]) for k in params)
    data = _tiny_dataset(tmp_path)
    train.main(["--out", str(tmp_path / "q"), "--init", str(shipped), "--steps", "1", "--lr", "0", "--config", "small",
                "--data", str(data), "--batch-size", "2", "--patch-size", "64", "--threads", "1",
                "--val-every", "1", "--holdout", "1", "--lmbda", "0.013"])
    log = (tmp_path / "q" / "log.tsv").read_text().splitlines()
    assert log[1].startswith("0\t") and log[1].split("\t")[-1]  # the starting point's validation
    ck = torch.load(tmp_path / "q" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 1
    for k, v in w.params.items():  # lr 0: the main parameters are still the file's (aux Adam moves quantiles)
        if not k.endswith("quantiles"):
            assert np.array_equal(ck["model"][k].numpy(), v), k
    with pytest.raises(SystemExit):  # another configuration is refused
        train.init_model(STFTorch(STFConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 4),
                                            num_slices=4, max_support_slices=2, slice_hidden=(16, 16, 16, 16)),
                                  drop_path_rate=0.0), shipped)


def test_train_refuses_kodak(tmp_path):
    from minstf.mirror import train

    with pytest.raises(SystemExit):
        train.load_images(tmp_path / "kodak", 64)


def test_holdout_images_are_the_training_runs_validation_images(tmp_path):
    """tools/holdout_images.py writes exactly the images train.py keeps out, under the same options."""
    import importlib.util
    from pathlib import Path
    from PIL import Image
    from minstf.mirror import train
    spec = importlib.util.spec_from_file_location("holdout_images", Path(__file__).parents[1] / "tools/holdout_images.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(data / f"im{i}.png")
    tool.main([str(tmp_path / "val"), "--data", str(data), "--holdout", "2", "--seed", "5", "--patch-size", "16"])
    images = train.load_images(data, 16)
    held = sorted(train.held_out(len(images), 2, 5))
    assert len(held) == 2
    written = sorted((tmp_path / "val").iterdir())
    assert [p.name for p in written] == [f"holdout_{i:04d}.png" for i in held]
    for p, i in zip(written, held):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), images[i])
