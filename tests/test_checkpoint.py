"""The restricted torch-checkpoint reader: values as torch loads them, and no code execution.

torch writes the reference checkpoints; hand-assembled pickles cover the malformed cases.
`torch_state_dict` and `save_checkpoint` are shared with test_convert_cli.py.
"""
import collections
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minstf.checkpoint import read_checkpoint, read_state_dict
from minstf.config import STFConfig
from minstf.errors import WeightsError
from minstf.keys import TABLE_BUFFERS, relative_position_index, state_dict_spec
from minstf.synthetic import recipe_weights

from test_weights_forged_checkpoints import _str

torch = pytest.importorskip("torch")

SMALL = STFConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_slices=4,
                  max_support_slices=2, slice_hidden=(64, 48, 40, 32))
REPO = Path(__file__).resolve().parent.parent


def torch_state_dict(params, config=SMALL, prefix="", eb_names="_matrix", tables="empty", extra=()):
    """An upstream-style state dict (OrderedDict of torch tensors, buffers included).

    eb_names: "_matrix" (STF fork), "matrices" (CompressAI 1.2.7+), "_matrices" (older);
    tables: "empty" (train.py) or "filled" (saved after update(); values are arbitrary here).
    """
    rng = np.random.default_rng(0)
    sd = collections.OrderedDict()
    for s in state_dict_spec(config):
        if s.kind == "param":
            value = torch.from_numpy(params[s.key].copy())
        elif s.key.endswith("relative_position_index"):
            value = torch.from_numpy(relative_position_index(config.window_size))
        elif s.key in TABLE_BUFFERS and tables == "filled":
            rows = config.N_z if s.key.startswith("entropy_bottleneck") else 64
            shape = (rows, 7) if s.key.endswith("_quantized_cdf") else (rows,)
            dtype = np.float32 if s.key.endswith("scale_table") else np.int32
            value = torch.from_numpy(rng.integers(0, 100, shape).astype(dtype))
        else:
            value = torch.zeros(s.shape, dtype=getattr(torch, s.dtype))
        key = s.key
        if eb_names != "_matrix" and key.startswith("entropy_bottleneck._"):
            for one, many in (("_matrix", "matrices"), ("_bias", "biases"), ("_factor", "factors")):
                name = key.split(".")[1]
                if name.startswith(one) and name[len(one):].isdigit():
                    lead = "_" if eb_names == "_matrices" else ""
                    key = f"entropy_bottleneck.{lead}{many}.{name[len(one):]}"
        sd[prefix + key] = value
    for key in extra:
        sd[prefix + key] = torch.zeros(3)
    return sd


def save_checkpoint(path, state_dict, training=True):
    """torch.save like upstream train.py (docs/weights.md §4), or a bare state dict."""
    if not training:
        torch.save(state_dict, path)
        return
    # Adam's state_dict() layout, built directly: torch.optim's first import costs seconds
    params = [v for v in state_dict.values() if v.is_floating_point() and v.numel()]
    group = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
             "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
             "fused": None, "decoupled_weight_decay": False}

    def adam(ps, first):
        state = {first + i: {"step": torch.tensor(10.0), "exp_avg": torch.full_like(p, 1e-3),
                             "exp_avg_sq": torch.full_like(p, 1e-6)} for i, p in enumerate(ps)}
        return {"state": state, "param_groups": [dict(group, params=list(state))]}

    scheduler = {"factor": 0.5, "min_lrs": [0], "patience": 4, "cooldown": 0, "eps": 1e-8,
                 "last_epoch": 7, "_last_lr": [1e-4], "mode": "min", "best": float("inf")}
    torch.save({"epoch": 7, "state_dict": state_dict, "loss": torch.tensor(1.25),
                "optimizer": adam(params[:-1], 0), "aux_optimizer": adam(params[-1:], 0),
                "lr_scheduler": scheduler}, path)


def test_training_checkpoint_reads_like_torch(tmp_path):
    sd = torch_state_dict(recipe_weights(SMALL))
    path = tmp_path / "stf_0035.pth.tar"
    save_checkpoint(path, sd)
    tree = read_checkpoint(path)
    ref = torch.load(path, weights_only=True)
    assert tree["epoch"] == 7 and tree["loss"].shape == () and tree["loss"] == np.float32(1.25)
    assert list(tree["state_dict"]) == list(sd)
    for key, value in ref["state_dict"].items():
        assert tree["state_dict"][key].dtype == value.numpy().dtype
        np.testing.assert_array_equal(tree["state_dict"][key], value.numpy(), err_msg=key)
    state = tree["optimizer"]["state"][0]
    np.testing.assert_array_equal(state["exp_avg"], ref["optimizer"]["state"][0]["exp_avg"].numpy())
    assert tree["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert tree["lr_scheduler"]["mode"] == "min"
    only = read_state_dict(path)  # the optimizer's storages are never read
    assert list(only) == list(sd)


def test_dtypes_views_and_parameters(tmp_path):
    base = torch.arange(24, dtype=torch.float32)
    sd = collections.OrderedDict(
        view=base[3:9],  # storage offset into a shared storage
        strided=base.view(4, 6).t()[1:, ::2],  # non-contiguous
        whole=base,
        half=torch.linspace(-2, 2, 5).half(),
        bf16=torch.linspace(-2, 2, 5).bfloat16(),
        long=torch.arange(6).view(2, 3),
        empty=torch.zeros(0, dtype=torch.int32),
        scalar=torch.tensor(3.5, dtype=torch.float64),
        param=torch.nn.Parameter(torch.ones(2, 2)),
    )
    path = tmp_path / "mixed.pt"
    torch.save(sd, path)
    got = read_checkpoint(path)
    assert got["half"].dtype == np.float16 and got["long"].dtype == np.int64
    assert got["bf16"].dtype == np.float32  # widened: NumPy has no bfloat16
    for key, value in sd.items():
        want = value.detach().float().numpy() if key == "bf16" else value.detach().numpy()
        assert got[key].shape == want.shape
        np.testing.assert_array_equal(got[key], want, err_msg=key)
        assert got[key].flags.writeable and got[key].flags.owndata


def test_legacy_and_non_checkpoint_files_are_refused(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"a": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="not a PyTorch zip checkpoint"):
        read_checkpoint(legacy)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(WeightsError, match="no <name>/data.pkl"):
        read_checkpoint(other)
    bare = tmp_path / "list.pt"
    torch.save([1, 2], bare)
    with pytest.raises(WeightsError, match="no state dict"):
        read_state_dict(bare)


# --- malicious pickles ------------------------------------------------------------------------

class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _replace_pickle(path, data):
    """Rewrite a torch zip checkpoint with another data.pkl."""
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, content in entries.items():
            z.writestr(name, data if name.endswith("/data.pkl") else content)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "stack_global", "nested_in_state_dict"])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"a": torch.ones(2)}}, path)
    if how == "os.system":
        payload = pickle.dumps({"state_dict": _Evil(os.system, f"touch {marker}")}, protocol=2)
    elif how == "builtins.exec":
        payload = pickle.dumps(_Evil(exec, f"open({str(marker)!r}, 'w').close()"), protocol=2)
    elif how == "stack_global":  # protocol 4 names the callable with STACK_GLOBAL
        payload = pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=4)
        assert b"\x93" in payload
    else:  # hidden among real tensors, after the allowed globals have been used
        with zipfile.ZipFile(path) as z:
            good = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        evil = pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=2)[2:-1]  # strip PROTO, STOP
        payload = good[:-1] + _str("x") + evil + b"s."  # top-level dict["x"] = <evil>
    _replace_pickle(path, payload)
    with pytest.raises(WeightsError, match="refuses"):
        read_checkpoint(path)
    assert not marker.exists()


def test_extension_opcodes_are_refused(tmp_path):
    path = tmp_path / "ext.pt"
    torch.save({"a": torch.ones(1)}, path)
    _replace_pickle(path, b"\x80\x02\x82\x01.")  # EXT1 code 1: a copyreg-registered callable
    with pytest.raises(WeightsError, match="refuses pickle opcode EXT1"):
        read_checkpoint(path)


# --- without torch ---------------------------------------------------------------------------

def test_reader_and_convert_work_without_torch(tmp_path):
    params = recipe_weights(SMALL)
    ckpt = tmp_path / "stf.pth.tar"
    save_checkpoint(ckpt, torch_state_dict(params, prefix="module.", eb_names="matrices"))
    np.savez(tmp_path / "ref.npz", **{k.replace(".", "/"): v for k, v in params.items()})
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from minstf.checkpoint import read_checkpoint
from minstf.convert import convert
from minstf.weights import load_weights
import minstf.cli
tree = read_checkpoint({str(ckpt)!r})
assert tree["epoch"] == 7 and "exp_avg" in tree["optimizer"]["state"][0]
convert({str(ckpt)!r}, {str(tmp_path / 'out.safetensors')!r})
w = load_weights({str(tmp_path / 'out.safetensors')!r})
ref = np.load({str(tmp_path / 'ref.npz')!r})
assert all(np.array_equal(w.params[k], ref[k.replace(".", "/")]) for k in w.params)
assert len(w.params) == len(ref.files)
assert sys.modules["torch"] is None
print("ok", w.fingerprint)
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok ")
