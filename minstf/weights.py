"""minstf weight files: save, load and validate them (upstream checkpoints: convert.py).

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
  * every learned parameter of the model's spec (`param_spec(config)` for stf,
    `wacnn_param_spec(config)` for cnn): float32 (F32), upstream key names and
    PyTorch layouts (Linear (out, in), Conv (O, I, kH, kW)) — nothing is transposed;
  * the seven entropy-model tables of keys.TABLE_BUFFERS, computed at conversion:
    `*._quantized_cdf`, `*._offset`, `*._cdf_length` int32 (I32) and
    `gaussian_conditional.scale_table` float32.
  Constant buffers (relative_position_index, GDN's reparametrisation constants, bounds,
  target) are not stored; they are derived.

`__metadata__` (all values strings):
  format         "minstf-weights"
  format_version "1"
  model          "stf" or "cnn" (WACNN, docs/wacnn.md): MODELS below
  config         JSON of STFConfig.to_dict() (stf) or WACNNConfig.to_dict() (cnn)
  fingerprint    sha256 hex digest, see `fingerprint()`
  name, description, source   optional, free text

Fingerprint: SHA-256 over all tensors (parameters and tables) in sorted key order
(Python `sorted`, i.e. by code point); for each tensor it hashes one record line

    json.dumps([key, dtype, shape, nbytes], separators=(",", ":")) + "\\n"   (UTF-8)

e.g. `["h_a.0.bias","F32",[384],1536]\\n`, followed by the tensor's nbytes raw bytes
(C order, little-endian). Metadata is not hashed: the fingerprint names the numbers.

What the fingerprint covers. Metadata is not hashed, yet a .mstf file names its weights
by fingerprint alone, so no metadata may change what the weights compute. Of the reserved
keys, `format`, `format_version` and `model` must be exactly the values above, the
tensors must be the keys of that model, and `config` must be exactly the configuration
that the tensors' keys and shapes imply (keys.config_from_shapes, or
keys.wacnn_config_from_shapes for cnn: every field is readable off some shape, e.g.
mlp_ratio = fc1 rows / embed_dim, the support cap from the last slice network's inputs);
a file whose `config` says anything else is refused. So the fingerprint, over the
tensors, pins the whole behaviour, without a change to its definition: the shipped
weight files keep their fingerprints. Free-text keys (name, ...) change nothing.

Files are untrusted input. Before any tensor memory is allocated, every header field is
checked: a header of at most MAX_HEADER_BYTES, JSON nested no deeper than the format
needs, at most MAX_TENSORS tensors, a data section of at most MAX_DATA_BYTES, dtypes,
shapes of at most MAX_NDIM integer dimensions (not bools) each at most MAX_DIM, offsets
inside the data section and not overlapping, byte counts matching shapes (so the tensors
allocated never exceed the file). The container accepts zero-size tensors (the empty CDF
buffers of upstream state dicts); a minstf weight file never holds one. Then the
configuration is range-checked (config.py) before anything is built from it, every
parameter must be finite (a NaN weight would otherwise decode to a black image with exit
code 0), and every failure is one WeightsError naming the file and the problem.
"""
import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import STFConfig, WACNNConfig
from .errors import OutputExists, WeightsError
from .keys import TABLE_BUFFERS, config_from_shapes, param_spec, wacnn_config_from_shapes, wacnn_param_spec

FORMAT, FORMAT_VERSION, MODEL = "minstf-weights", "1", "stf"  # MODEL: the first model, STF


@dataclass(frozen=True)
class Model:
    """What a weight file's `model` id stands for: its configuration class, its learned
    parameters and the configuration its shapes imply."""
    name: str  # "STF", "WACNN": for messages
    config_class: type
    param_spec: object  # config -> [KeySpec]
    config_from_shapes: object  # {key: shape} -> config


MODELS = {"stf": Model("STF", STFConfig, param_spec, config_from_shapes),
          "cnn": Model("WACNN", WACNNConfig, wacnn_param_spec, wacnn_config_from_shapes)}


def model_of(config):
    """The Model of a configuration (STFConfig -> stf, WACNNConfig -> cnn)."""
    for m in MODELS.values():
        if type(config) is m.config_class:
            return m
    raise TypeError(f"not a model configuration: {type(config).__name__}")
RESERVED_METADATA = ("format", "format_version", "model", "config", "fingerprint")
MAX_HEADER_BYTES = 16 * 2**20  # the full STF's header is ~80 kB
MAX_TENSORS = 65536  # the largest configuration config.py allows has ~16 k keys
MAX_DATA_BYTES = 2**32  # the full STF is 0.4 GB
MAX_NDIM, MAX_DIM = 8, 2**31
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
        raise ValueError(f"duplicate keys {listed(k for k, n in counts.items() if n > 1)}")
    return dict(pairs)


def _short(value, limit=120):
    """A bounded printout of a JSON value (the repr of a deep one would recurse)."""
    try:
        return json.dumps(value)[:limit]
    except (RecursionError, TypeError, ValueError):
        return type(value).__name__


def _nesting_at_most(value, limit):
    """True if a parsed JSON value nests at most `limit` containers deep (no recursion)."""
    todo = [(value, 1)]
    while todo:
        v, depth = todo.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return False
            todo.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return True


def _parse_json(where, raw, limit=3):
    """JSON nested at most `limit` deep (the header: {key: {"shape": [...]}})."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise WeightsError(f"{where}: JSON nested too deeply") from None
    except MemoryError:
        raise WeightsError(f"{where}: JSON too large to parse") from None
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: also ints of more than 4300 digits
        raise WeightsError(f"{where}: not valid JSON ({str(e)[:200]})") from None
    if not _nesting_at_most(value, limit):
        raise WeightsError(f"{where}: JSON nested deeper than the {limit} levels of the format")
    return value


def _parse_header(path, size, f):
    """The validated header: ([(key, dtype, shape, begin, end)], metadata, data start)."""
    head = f.read(8)
    if len(head) < 8:
        raise WeightsError(f"{path}: too short for a weight file ({size} bytes)")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise WeightsError(f"{path}: declared header length {n} exceeds the file size {size} "
                           f"or the limit {MAX_HEADER_BYTES} (truncated or not a weight file)")
    data_len = size - 8 - n
    if data_len > MAX_DATA_BYTES:
        raise WeightsError(f"{path}: data section of {data_len} bytes exceeds the limit {MAX_DATA_BYTES}")
    header = _parse_json(path, f.read(n))
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise WeightsError(f"{path}: __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise WeightsError(f"{path}: {len(header)} tensors, more than the {MAX_TENSORS} allowed")
    entries = []
    for key, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (type(code) is str and code in DTYPES and type(shape) is list and len(shape) <= MAX_NDIM
                  and all(type(v) is int and 0 <= v <= MAX_DIM for v in shape)
                  and all(type(v) is int and v >= 0 for v in (begin, end)))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise WeightsError(f"{path}: bad header entry for {key[:100]!r}: {_short(info)} (dtypes allowed: "
                               f"{', '.join(DTYPES)}; at most {MAX_NDIM} integer dimensions, each "
                               f"0..{MAX_DIM}; offsets non-negative integers)")
        if not begin <= end <= data_len:
            raise WeightsError(f"{path}: {key[:100]}: data_offsets [{begin}, {end}] outside the data section "
                               f"of {data_len} bytes (truncated file?)")
        if end - begin != math.prod(shape) * DTYPES[code].itemsize:
            raise WeightsError(f"{path}: {key[:100]}: {end - begin} bytes do not hold {code} {shape}")
        entries.append((key, code, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    for a, b in zip(entries, entries[1:]):
        if b[3] < a[4]:
            raise WeightsError(f"{path}: tensors {a[0][:100]} and {b[0][:100]} overlap")
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

def listed(keys, limit=10):
    keys = list(keys)
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def alignment_problems(arrays, expected):
    """Missing, unknown and mis-shaped keys of {key: array} against {key: shape}, as text."""
    missing = [k for k in expected if k not in arrays]
    unknown = [k for k in arrays if k not in expected]
    misshaped = [f"{k} {tuple(arrays[k].shape)} (expected {tuple(expected[k])})"
                 for k in expected if k in arrays and tuple(arrays[k].shape) != tuple(expected[k])]
    return [f"{len(ks)} {what}: {listed(ks)}" for what, ks in
            (("missing", missing), ("unknown", unknown), ("mis-shaped", misshaped)) if ks]


def table_problems(tables, config):
    """Shape, dtype and range problems of the seven entropy tables (their widths vary)."""
    missing = [k for k in TABLE_BUFFERS if k not in tables]
    unknown = [k for k in tables if k not in TABLE_BUFFERS]
    problems = [f"{len(ks)} {what} tables: {listed(ks)}"
                for what, ks in (("missing", missing), ("unknown", unknown)) if ks]
    problems += [f"{k} has dtype {a.dtype}, expected {TABLE_DTYPES[k]}" for k, a in tables.items()
                 if k in TABLE_DTYPES and DTYPE_CODES.get(a.dtype.newbyteorder("<")) != TABLE_DTYPES[k]]
    # one CDF row per z channel, one per scale-table entry; one offset and length per row
    for model, rows in (("entropy_bottleneck", config.N_z), ("gaussian_conditional", None)):
        cdf = tables.get(f"{model}._quantized_cdf")
        if cdf is None:
            continue
        if cdf.ndim != 2 or cdf.shape[0] != (rows or cdf.shape[0]) or cdf.shape[0] < 1 or cdf.shape[1] < 3:
            problems.append(f"{model}._quantized_cdf has shape {cdf.shape}, expected ({rows or 'n'}, width), "
                            f"at least one row of width 3 or more")
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
    scales = tables.get("gaussian_conditional.scale_table")
    if scales is not None and scales.dtype.kind == "f" and not (scales.size and np.all(scales > 0)
                                                                and np.isfinite(scales).all()):
        problems.append("gaussian_conditional.scale_table must be non-empty, finite and positive")
    return problems


def nonfinite_problem(arrays, limit=5):
    """'' if every float array of {key: array} is finite, else one line naming the first bad keys."""
    bad = [k for k, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
    if not bad:
        return ""
    return f"non-finite values (NaN or Inf) in {len(bad)} parameters: {listed(bad, limit)}"


def config_problems(params, config):
    """How `config` differs from the one the keys and shapes of params imply (an aligned set)."""
    try:
        implied = model_of(config).config_from_shapes({k: a.shape for k, a in params.items()})
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as e:
        return [f"the shapes imply no configuration ({type(e).__name__}: {e})"]
    given, found = config.to_dict(), implied.to_dict()
    return [f"{k} is {given[k]} in the configuration but {found[k]} in the tensors"
            for k in given if given[k] != found[k]]


def _check(params, tables, config, where):
    model = model_of(config)
    expected = {s.key: s.shape for s in model.param_spec(config)}
    problems = alignment_problems(params, expected) + table_problems(tables, config)
    problems += [f"{k} has dtype {a.dtype}, expected float32" for k, a in params.items()
                 if k in expected and a.dtype != np.float32]
    if problems:
        raise WeightsError(f"{where}: does not fit the {model.name} configuration: " + "; ".join(problems))
    # shapes that fit can still leave a field open (mlp_ratio 4.0 and 4.01 give the same fc1):
    # the configuration must be the one the tensors imply, so that the fingerprint pins it
    problems = config_problems(params, config)
    if problems:
        raise WeightsError(f"{where}: configuration is not the one its tensors imply: " + "; ".join(problems))
    bad = nonfinite_problem({k: params[k] for k in expected})  # first bad keys in upstream order
    if bad:
        raise WeightsError(f"{where}: {bad}")


# --- minstf weight files -----------------------------------------------------------------

@dataclass
class WeightsFile:
    config: STFConfig  # or WACNNConfig; `config.model` is the model id
    params: dict  # key -> float32 array, upstream names and layouts
    tables: dict  # the seven TABLE_BUFFERS
    metadata: dict = field(default_factory=dict)
    fingerprint: str = ""


def save_weights(path, params, tables, config, metadata=None, force=False):
    """Validate and write a minstf weight file; returns its WeightsFile (with fingerprint).

    The model id ("stf" or "cnn") is the configuration's: an STFConfig or a WACNNConfig."""
    path = Path(path)
    model_of(config)  # TypeError for anything else
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
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": config.model,
            "config": json.dumps(config.to_dict()), "fingerprint": digest, **extra}
    # write next to the target, then rename: a crash never leaves a half-written weight file
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=".minstf-", suffix=".tmp")  # short: any name fits
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
    model = MODELS.get(meta.get("model"))
    if meta.get("format_version") != FORMAT_VERSION or model is None:
        raise WeightsError(f"{path}: format version {meta.get('format_version')!r} / model "
                           f"{meta.get('model')!r} not supported "
                           f"(this minstf reads {FORMAT_VERSION!r} / {' or '.join(map(repr, MODELS))})")
    if "config" not in meta:
        raise WeightsError(f"{path}: bad configuration in metadata (no config)")
    try:  # range-checked (__post_init__) before anything is built from it
        config = model.config_class.from_dict(_parse_json(f"{path}: config", meta["config"].encode(), limit=2))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: bad configuration in metadata ({str(e)[:300]})") from None
    tables = {k: v for k, v in tensors.items() if k in TABLE_BUFFERS}
    params = {k: v for k, v in tensors.items() if k not in TABLE_BUFFERS}
    _check(params, tables, config, str(path))
    params = {s.key: params[s.key] for s in model.param_spec(config)}  # upstream order, for printouts
    tables = {k: tables[k] for k in TABLE_BUFFERS}
    digest = meta.get("fingerprint", "")
    if verify and fingerprint(tensors) != digest:
        raise WeightsError(f"{path}: fingerprint mismatch — the tensors were changed after the file "
                           f"was written")
    return WeightsFile(config, params, tables, meta, digest)
