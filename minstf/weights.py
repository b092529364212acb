"""minstf weight files: save, load and validate them, and convert upstream checkpoints.

File format
-----------
A minstf weight file is a safetensors file, read and written here by plain Python:

    8 bytes     n = header length, unsigned little-endian
    n bytes     JSON header (UTF-8, padded with spaces to a multiple of 8):
                  {"<key>": {"dtype": "F32", "shape": [48, 3, 2, 2], "data_offsets": [begin, end]},
                   ...,
                   "__metadata__": {"format": "minstf-weights", ...}}
    the rest    data section; a tensor's bytes are data[begin:end], C order, little-endian

Tensors:
  * every learned parameter of `param_spec(config)`: float32 (F32), upstream key names and
    PyTorch layouts (Linear (out, in), Conv (O, I, kH, kW)) — nothing is transposed;
  * the seven entropy-model tables of keys.TABLE_BUFFERS, computed at conversion:
    `*._quantized_cdf`, `*._offset`, `*._cdf_length` int32 (I32) and
    `gaussian_conditional.scale_table` float32.
  Constant buffers (relative_position_index, bounds, target) are not stored; they are derived.

`__metadata__` (all values strings):
  format         "minstf-weights"
  format_version "1"
  model          "stf"
  config         JSON of STFConfig.to_dict()
  fingerprint    sha256 hex digest, see `fingerprint()`
  name, description, source   optional, free text

Fingerprint: SHA-256 over all tensors (parameters and tables) in sorted key order
(Python `sorted`, i.e. by code point); for each tensor it hashes one record line

    json.dumps([key, dtype, shape, nbytes], separators=(",", ":")) + "\\n"   (UTF-8)

e.g. `["h_a.0.bias","F32",[384],1536]\\n`, followed by the tensor's nbytes raw bytes
(C order, little-endian). Metadata is not hashed: the fingerprint names the numbers.

Files are untrusted input: every header field is checked (size limits, dtypes, offsets
inside the data section and not overlapping, byte counts matching shapes) before any
tensor memory is allocated, and every failure is a WeightsError naming the problem.
"""
import hashlib
import json
import math
import os
import re
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import STFConfig
from .errors import OutputExists, WeightsError
from .keys import TABLE_BUFFERS, param_spec, state_dict_spec
from .swin import relative_position_index

FORMAT, FORMAT_VERSION, MODEL = "minstf-weights", "1", "stf"
RESERVED_METADATA = ("format", "format_version", "model", "config", "fingerprint")
MAX_HEADER_BYTES = 100 * 2**20
DTYPES = {"F32": np.dtype("<f4"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8")}
DTYPE_CODES = {dt: code for code, dt in DTYPES.items()}
TABLE_DTYPES = {k: ("F32" if k.endswith("scale_table") else "I32") for k in TABLE_BUFFERS}


# --- the safetensors container ---------------------------------------------------------

def _dtype_code(key, array):
    code = DTYPE_CODES.get(array.dtype.newbyteorder("<"))
    if code is None:
        raise WeightsError(f"{key}: dtype {array.dtype} cannot be stored (only float32, int32, int64)")
    return code


def fingerprint(tensors):
    """SHA-256 hex digest of {key: array} as defined in the module docstring."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        code = _dtype_code(key, a)
        a = a.astype(DTYPES[code], copy=False)  # little-endian bytes
        h.update(json.dumps([key, code, list(a.shape), a.nbytes], separators=(",", ":")).encode() + b"\n")
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def write_safetensors(path, tensors, metadata):
    """Write {key: array} and a str->str metadata dict to `path` (no checks on `path`)."""
    # widest dtypes first, so that every tensor starts at a multiple of its item size
    keys = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header, offset = {}, 0
    for key in keys:
        a = tensors[key]
        header[key] = {"dtype": _dtype_code(key, a), "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for key in keys:
            a = np.ascontiguousarray(tensors[key], dtype=tensors[key].dtype.newbyteorder("<"))
            f.write(a.reshape(-1).view(np.uint8))


def _no_duplicates(pairs):
    """json object_pairs_hook: a key given twice would make the file mean two things."""
    counts = Counter(k for k, _ in pairs)
    if len(counts) != len(pairs):
        raise ValueError(f"duplicate keys {_listed(k for k, n in counts.items() if n > 1)}")
    return dict(pairs)


def _parse_header(path, size, f):
    """The validated header: ([(key, dtype, shape, begin, end)], metadata, data start)."""
    head = f.read(8)
    if len(head) < 8:
        raise WeightsError(f"{path}: too short for a weight file ({size} bytes)")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise WeightsError(f"{path}: declared header length {n} exceeds the file size {size} "
                           f"or the limit {MAX_HEADER_BYTES} (truncated or not a weight file)")
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise WeightsError(f"{path}: __metadata__ must map strings to strings")
    data_len = size - 8 - n
    entries = []
    for key, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (code in DTYPES and isinstance(shape, list)
                  and all(type(v) is int and v >= 0 for v in (*shape, begin, end)))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise WeightsError(f"{path}: bad header entry for {key!r}: {str(info)[:120]} "
                               f"(dtypes allowed: {', '.join(DTYPES)})")
        if not begin <= end <= data_len:
            raise WeightsError(f"{path}: {key}: data_offsets [{begin}, {end}] outside the data section "
                               f"of {data_len} bytes (truncated file?)")
        if end - begin != math.prod(shape) * DTYPES[code].itemsize:
            raise WeightsError(f"{path}: {key}: {end - begin} bytes do not hold {code} {shape}")
        entries.append((key, code, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    for a, b in zip(entries, entries[1:]):
        if b[3] < a[4]:
            raise WeightsError(f"{path}: tensors {a[0]} and {b[0]} overlap")
    return entries, metadata, 8 + n


def read_metadata(path):
    """The `__metadata__` of a safetensors file, from its validated header alone (cheap)."""
    try:
        with open(path, "rb") as f:
            return _parse_header(str(path), os.fstat(f.fileno()).st_size, f)[1]
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None


def read_safetensors(path):
    """({key: array}, metadata) of any safetensors file with F32/I32/I64 tensors."""
    path = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            entries, metadata, start = _parse_header(path, size, f)
            tensors = {}
            for key, code, shape, begin, end in entries:
                a = np.empty(math.prod(shape), DTYPES[code])  # owned, writable
                f.seek(start + begin)
                if f.readinto(a.view(np.uint8)) != end - begin:
                    raise WeightsError(f"{path}: truncated while reading {key}")
                tensors[key] = a.astype(a.dtype.newbyteorder("="), copy=False).reshape(shape)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    return tensors, metadata


# --- validation: import with asserted alignment ------------------------------------------

def _listed(keys, limit=10):
    keys = list(keys)
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def alignment_problems(arrays, expected):
    """Missing, unknown and mis-shaped keys of {key: array} against {key: shape}, as text."""
    missing = [k for k in expected if k not in arrays]
    unknown = [k for k in arrays if k not in expected]
    misshaped = [f"{k} {tuple(arrays[k].shape)} (expected {tuple(expected[k])})"
                 for k in expected if k in arrays and tuple(arrays[k].shape) != tuple(expected[k])]
    return [f"{len(ks)} {what}: {_listed(ks)}" for what, ks in
            (("missing", missing), ("unknown", unknown), ("mis-shaped", misshaped)) if ks]


def table_problems(tables, config):
    """Shape, dtype and range problems of the seven entropy tables (their widths vary)."""
    missing = [k for k in TABLE_BUFFERS if k not in tables]
    unknown = [k for k in tables if k not in TABLE_BUFFERS]
    problems = [f"{len(ks)} {what} tables: {_listed(ks)}"
                for what, ks in (("missing", missing), ("unknown", unknown)) if ks]
    problems += [f"{k} has dtype {a.dtype}, expected {TABLE_DTYPES[k]}" for k, a in tables.items()
                 if k in TABLE_DTYPES and DTYPE_CODES.get(a.dtype.newbyteorder("<")) != TABLE_DTYPES[k]]
    # one CDF row per z channel, one per scale-table entry; one offset and length per row
    for model, rows in (("entropy_bottleneck", config.N_z), ("gaussian_conditional", None)):
        cdf = tables.get(f"{model}._quantized_cdf")
        if cdf is None:
            continue
        if cdf.ndim != 2 or cdf.shape[0] != (rows or cdf.shape[0]):
            problems.append(f"{model}._quantized_cdf has shape {cdf.shape}, expected ({rows or 'n'}, width)")
            continue
        rows = cdf.shape[0]
        for k in TABLE_BUFFERS:
            if k.startswith(model) and k in tables and k != f"{model}._quantized_cdf" \
                    and tables[k].shape != (rows,):
                problems.append(f"{k} has shape {tables[k].shape}, expected ({rows},)")
        length = tables.get(f"{model}._cdf_length")
        if length is not None and length.shape == (rows,) and length.size \
                and not (length.min() >= 3 and length.max() <= cdf.shape[1]):
            problems.append(f"{model}._cdf_length has values outside 3..{cdf.shape[1]} (the table width)")
    return problems


def _check(params, tables, config, where):
    expected = {s.key: s.shape for s in param_spec(config)}
    problems = alignment_problems(params, expected) + table_problems(tables, config)
    problems += [f"{k} has dtype {a.dtype}, expected float32" for k, a in params.items()
                 if k in expected and a.dtype != np.float32]
    if problems:
        raise WeightsError(f"{where}: does not fit the STF configuration: " + "; ".join(problems))


# --- minstf weight files -----------------------------------------------------------------

@dataclass
class WeightsFile:
    config: STFConfig
    params: dict  # key -> float32 array, upstream names and layouts
    tables: dict  # the seven TABLE_BUFFERS
    metadata: dict = field(default_factory=dict)
    fingerprint: str = ""


def save_weights(path, params, tables, config, metadata=None, force=False):
    """Validate and write a minstf weight file; returns its WeightsFile (with fingerprint)."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExists(f"{path} exists (use --force to overwrite)")
    params = {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
              for k, v in params.items()}
    tables = {k: np.asarray(v) for k, v in tables.items()}
    _check(params, tables, config, str(path))
    extra = dict(metadata or {})
    clash = [k for k in extra if k in RESERVED_METADATA]
    if clash or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError(f"metadata must map strings to strings, without the reserved keys {clash}")
    tensors = {**params, **tables}
    digest = fingerprint(tensors)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": MODEL,
            "config": json.dumps(config.to_dict()), "fingerprint": digest, **extra}
    # write next to the target, then rename: a crash never leaves a half-written weight file
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_safetensors(tmp, tensors, meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; weights are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return WeightsFile(config, params, tables, meta, digest)


def load_weights(path, verify=True):
    """Read and validate a minstf weight file; `verify` recomputes the fingerprint."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a minstf weight file (no minstf metadata); "
                           f"convert a checkpoint with `minstf convert`")
    if meta.get("format_version") != FORMAT_VERSION or meta.get("model") != MODEL:
        raise WeightsError(f"{path}: format version {meta.get('format_version')!r} / model "
                           f"{meta.get('model')!r} not supported "
                           f"(this minstf reads {FORMAT_VERSION!r} / {MODEL!r})")
    try:
        config = STFConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: bad configuration in metadata ({e})") from None
    tables = {k: v for k, v in tensors.items() if k in TABLE_BUFFERS}
    params = {k: v for k, v in tensors.items() if k not in TABLE_BUFFERS}
    _check(params, tables, config, str(path))
    params = {s.key: params[s.key] for s in param_spec(config)}  # upstream order, for printouts
    tables = {k: tables[k] for k in TABLE_BUFFERS}
    digest = meta.get("fingerprint", "")
    if verify and fingerprint(tensors) != digest:
        raise WeightsError(f"{path}: fingerprint mismatch — the tensors were changed after the file "
                           f"was written")
    return WeightsFile(config, params, tables, meta, digest)


# --- upstream checkpoints ----------------------------------------------------------------

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


def state_dict_to_params(state_dict, config):
    """Upstream state dict -> {key: float32 array} aligned with param_spec(config)."""
    renamed = {}
    for key, value in state_dict.items():
        new = rename_upstream_key(key)
        if new is None:
            continue
        if new in renamed:
            raise WeightsError(f"checkpoint holds {new} twice (under two naming schemes)")
        renamed[new] = np.asarray(value)
    spec = state_dict_spec(config)
    buffers = {s.key for s in spec if s.kind == "buffer"}  # constants and tables: derived, not read
    index = relative_position_index(config.window_size)
    wrong = [s.key for s in spec if s.key.endswith("relative_position_index") and s.key in renamed
             and not np.array_equal(renamed[s.key], index)]
    if wrong:
        raise WeightsError(f"checkpoint: relative_position_index differs from the one for window size "
                           f"{config.window_size}: {_listed(wrong)}")
    params = {k: v for k, v in renamed.items() if k not in buffers}
    expected = {s.key: s.shape for s in spec if s.kind == "param"}
    problems = alignment_problems(params, expected)
    problems += [f"{k} has dtype {a.dtype}" for k, a in params.items() if k in expected and a.dtype.kind != "f"]
    if problems:
        raise WeightsError("checkpoint does not fit the STF configuration: " + "; ".join(problems))
    return {k: np.asarray(params[k], dtype=np.float32) for k in expected}


def infer_config(state_dict):
    """The STFConfig whose shapes a (renamed or upstream) state dict has."""
    shapes = {rename_upstream_key(k): tuple(np.shape(v)) for k, v in state_dict.items()}
    ids = lambda prefix, at: {int(k.split(".")[at]) for k in shapes  # noqa: E731
                              if k and k.startswith(prefix) and k.split(".")[at].isdigit()}
    try:
        e, in_chans, p, _ = shapes["patch_embed.proj.weight"]
        stages = range(max(ids("layers.", 1)) + 1)
        depths = tuple(max(ids(f"layers.{i}.blocks.", 3)) + 1 for i in stages)
        heads = tuple(shapes[f"layers.{i}.blocks.0.attn.relative_position_bias_table"][1] for i in stages)
        ws = (math.isqrt(shapes["layers.0.blocks.0.attn.relative_position_bias_table"][0]) + 1) // 2
        mlp_ratio = shapes["layers.0.blocks.0.mlp.fc1.weight"][0] / e
        num_slices = max(ids("cc_mean_transforms.", 1)) + 1
        hidden = tuple(shapes[f"cc_mean_transforms.0.{j}.weight"][0] for j in (0, 2, 4, 6))
        M = e * 2 ** (len(depths) - 1)
        support = (shapes[f"cc_mean_transforms.{num_slices - 1}.0.weight"][1] - M) // (M // num_slices)
        return STFConfig(patch_size=p, in_chans=in_chans, embed_dim=e, depths=depths, num_heads=heads,
                         window_size=ws, mlp_ratio=mlp_ratio, num_slices=num_slices,
                         max_support_slices=support, slice_hidden=hidden)
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as err:
        raise WeightsError(f"cannot infer the STF configuration from the checkpoint's shapes "
                           f"({type(err).__name__}: {err})") from None


def read_any_state_dict(path):
    """The state dict of a torch zip checkpoint, or the tensors of a safetensors/minstf file."""
    from .checkpoint import read_state_dict

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
    """Upstream checkpoint (or safetensors state dict) -> minstf weight file.

    `config=None` infers the configuration from the shapes; a given config is checked
    against them. The entropy tables are computed here, whatever the checkpoint holds.
    """
    from .entropy_models import eb_tables, gc_tables

    if Path(out_path).exists() and not force:
        raise OutputExists(f"{out_path} exists (use --force to overwrite)")
    state_dict = read_any_state_dict(checkpoint_path)
    try:
        inferred = infer_config(state_dict)
    except WeightsError:
        inferred = None  # state_dict_to_params below names the keys that are off
    if config is None:
        config = inferred or STFConfig()
    elif inferred is not None and inferred != config:
        given, found = config.to_dict(), inferred.to_dict()
        diff = [f"{k}: checkpoint {found[k]}, given {given[k]}" for k in given if given[k] != found[k]]
        raise WeightsError(f"{checkpoint_path}: checkpoint does not fit the given configuration "
                           f"({'; '.join(diff)})")
    params = state_dict_to_params(state_dict, config)
    prefix = "entropy_bottleneck."
    eb = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    tables = {**eb_tables(eb), **gc_tables()}
    metadata = {"source": Path(checkpoint_path).name}
    if name:
        metadata["name"] = name
    return save_weights(out_path, params, tables, config, metadata, force=force)
