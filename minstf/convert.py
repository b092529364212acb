"""Upstream checkpoints (STF `stf` and WACNN `cnn`) -> minstf weight files.

    torch .pth.tar (checkpoint.py)  ─┐
    safetensors state dict          ─┴─> rename keys -> model and config from the keys and shapes
                                         -> check alignment and constant buffers
                                         -> float32 params -> CDF tables -> save_weights

Upstream checkpoints come in several layouts (docs/weights.md §4): a training checkpoint
`{"state_dict": ..., "optimizer": ...}` or a bare state dict, with or without
nn.DataParallel's `module.` prefix, with the entropy bottleneck's density network
named as in the STF fork (`_matrix0`) or as in CompressAI (`matrices.0`,
`_matrices.0`). The model is read off the keys (STF begins with `patch_embed.*`, WACNN
with `g_a.0.*`), its configuration off the shapes (keys.config_from_shapes,
keys.wacnn_config_from_shapes), so no option is needed. Constant buffers are not kept;
where a checkpoint has them they must equal their formulas (keys.constant_buffers:
relative_position_index, GDN's reparametrisation constants). The entropy tables are
always recomputed, whatever the checkpoint holds. torch is never imported.
"""
import re
import zipfile
from pathlib import Path

import numpy as np

from .checkpoint import read_state_dict
from .config import STFConfig
from .errors import OutputExists, WeightsError
from .keys import constant_buffers, state_dict_spec, wacnn_state_dict_spec
from .weights import MODELS, listed, alignment_problems, model_of, nonfinite_problem, read_safetensors, save_weights

STATE_DICT_SPECS = {"stf": state_dict_spec, "cnn": wacnn_state_dict_spec}  # model id -> config -> [KeySpec]
# the key that tells the models apart: STF starts with its patch embedding, WACNN with a conv
FIRST_KEYS = {"stf": "patch_embed.proj.weight", "cnn": "g_a.0.weight"}

_EB_LIST = re.compile(r"entropy_bottleneck\._?(matrices|biases|factors)\.(\d+)")
_SINGULAR = {"matrices": "matrix", "biases": "bias", "factors": "factor"}


def rename_upstream_key(key):
    """The minstf (= STF fork) name of a checkpoint key, or None for keys to drop."""
    # nn.DataParallel keeps the model as `.module`; upstream train.py uses it with 2+ GPUs
    if key.startswith("module."):
        key = key[len("module."):]
    # h_s.* are left-overs of older CompressAI models; the STF fork's own loader drops them
    if key.startswith("h_s."):
        return None
    # the entropy bottleneck's density network: CompressAI 1.2.7+ stores ParameterLists
    # (`matrices.0`), some older checkpoints `_matrices.0`; the STF fork says `_matrix0`
    m = _EB_LIST.fullmatch(key)
    if m:
        return f"entropy_bottleneck._{_SINGULAR[m[1]]}{m[2]}"
    return key


def renamed_state_dict(state_dict):
    """{minstf key: array} of an upstream state dict (rename_upstream_key; dropped keys left out)."""
    renamed = {}
    for key, value in state_dict.items():
        new = rename_upstream_key(key)
        if new is None:
            continue
        if new in renamed:
            raise WeightsError(f"checkpoint holds {new} twice (under two naming schemes)")
        renamed[new] = np.asarray(value)
    return renamed


def model_of_keys(keys):
    """"stf" or "cnn" from a renamed state dict's keys, or None if it is neither."""
    keys = set(keys)
    if FIRST_KEYS["stf"] in keys or any(k.startswith("patch_embed.") for k in keys):
        return "stf"
    return "cnn" if FIRST_KEYS["cnn"] in keys else None


def constant_problems(renamed, spec):
    """The constant buffers of a renamed state dict that differ from their formulas, as text."""
    wrong = [k for k, value in constant_buffers(spec).items() if k in renamed
             and not (renamed[k].shape == value.shape and np.array_equal(renamed[k], value))]
    index = [k for k in wrong if k.endswith("relative_position_index")]
    reparam = [k for k in wrong if k not in index]
    return ([f"relative_position_index differs from the one for its window size: {listed(index)}"]
            if index else []) + ([f"GDN reparametrisation buffers differ from their constants (pedestal "
                                  f"2^-36, bound sqrt(minimum + pedestal), docs/wacnn.md §3): {listed(reparam)}"]
                                 if reparam else [])


def state_dict_to_params(state_dict, config):
    """Upstream state dict -> {key: float32 array} aligned with the parameters of `config`
    (an STFConfig or a WACNNConfig)."""
    renamed = renamed_state_dict(state_dict)
    spec = STATE_DICT_SPECS[config.model](config)
    problems = constant_problems(renamed, spec)
    if problems:
        raise WeightsError("checkpoint: " + "; ".join(problems))
    buffers = {s.key for s in spec if s.kind == "buffer"}  # constants and tables: derived, not read
    params = {k: v for k, v in renamed.items() if k not in buffers}
    expected = {s.key: s.shape for s in spec if s.kind == "param"}
    problems = alignment_problems(params, expected)
    problems += [f"{k} has dtype {a.dtype}" for k, a in params.items() if k in expected and a.dtype.kind != "f"]
    if problems:
        raise WeightsError(f"checkpoint does not fit the {model_of(config).name} configuration: "
                           + "; ".join(problems))
    params = {k: np.asarray(params[k], dtype=np.float32) for k in expected}
    bad = nonfinite_problem(params)  # before the CDF tables are built from them
    if bad:
        raise WeightsError(f"checkpoint: {bad}")
    return params


def infer_config(state_dict):
    """The STFConfig or WACNNConfig whose keys and shapes a (renamed or upstream) state dict has."""
    shapes = {}
    for key, value in state_dict.items():
        new = rename_upstream_key(key)
        if new is not None:
            shapes[new] = tuple(np.shape(value))
    model = model_of_keys(shapes)
    if model is None:
        raise WeightsError(f"cannot infer the model from the checkpoint's keys: neither STF's "
                           f"{FIRST_KEYS['stf']} nor WACNN's {FIRST_KEYS['cnn']} is there")
    try:
        return MODELS[model].config_from_shapes(shapes)
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as err:
        raise WeightsError(f"cannot infer the {MODELS[model].name} configuration from the checkpoint's "
                           f"shapes ({type(err).__name__}: {err})") from None


def read_any_state_dict(path):
    """The state dict of a torch zip checkpoint, or the tensors of a safetensors/minstf file."""
    path = str(path)
    if zipfile.is_zipfile(path):
        return read_state_dict(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(head) == 9 and head[8:] == b"{":
        return read_safetensors(path)[0]
    legacy = " (it looks like a legacy torch < 1.6 pickle; re-save it with a current torch.save)" \
        if head[:1] == b"\x80" else ""
    raise WeightsError(f"{path}: neither a PyTorch zip checkpoint nor a safetensors file{legacy}")


def convert(checkpoint_path, out_path, config=None, force=False, name=None):
    """Upstream checkpoint (or safetensors state dict) of STF or WACNN -> minstf weight file.

    `config=None` infers the model from the keys and the configuration from the shapes;
    a given config (STFConfig or WACNNConfig) is checked against them. The entropy tables
    are computed here, whatever the checkpoint holds.
    """
    from .entropy_models import eb_tables, gc_tables

    if Path(out_path).exists() and not force:
        raise OutputExists(f"{out_path} exists (use --force to overwrite)")
    state_dict = read_any_state_dict(checkpoint_path)
    try:
        inferred = infer_config(state_dict)
    except WeightsError as e:
        # with a configuration to check against, or STF's keys (the default STF's keys are then
        # the ones named missing), state_dict_to_params below names the keys that are off;
        # otherwise the reason the shapes imply no configuration names them
        if config is None and model_of_keys(filter(None, map(rename_upstream_key, state_dict))) != "stf":
            raise WeightsError(f"{checkpoint_path}: {e}") from None
        inferred = None
    if config is None:
        config = inferred or STFConfig()
    elif inferred is not None and type(inferred) is not type(config):
        raise WeightsError(f"{checkpoint_path}: checkpoint of model {inferred.model!r}, "
                           f"the given configuration is of model {config.model!r}")
    elif inferred is not None and inferred != config:
        given, found = config.to_dict(), inferred.to_dict()
        diff = [f"{k}: checkpoint {found[k]}, given {given[k]}" for k in given if given[k] != found[k]]
        raise WeightsError(f"{checkpoint_path}: checkpoint does not fit the given configuration "
                           f"({'; '.join(diff)})")
    try:
        params = state_dict_to_params(state_dict, config)
    except WeightsError as e:
        raise WeightsError(f"{checkpoint_path}: {e}") from None
    prefix = "entropy_bottleneck."
    eb = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    tables = {**eb_tables(eb), **gc_tables()}
    metadata = {"source": Path(checkpoint_path).name}
    if name:
        metadata["name"] = name
    return save_weights(out_path, params, tables, config, metadata, force=force)
