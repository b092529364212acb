"""Read PyTorch checkpoints without PyTorch, and without running pickled code.

A `torch.save` file (KEYS.md §4) is a zip archive with one top folder `<stem>/`:

    <stem>/data.pkl        the pickled object tree; every tensor in it is a call
                           _rebuild_tensor_v2(storage, offset, size, stride, ...)
                           whose storage is a *persistent id*
                           ("storage", torch.FloatStorage, "<key>", "cpu", numel)
    <stem>/data/<key>      the raw bytes of that storage (numel elements)
    <stem>/byteorder       "little" (or "big")

A pickle is a small program: its GLOBAL opcode imports any callable and REDUCE
calls it, so `pickle.load` on an untrusted file can run `os.system`. Here the
unpickler's `find_class` knows only the few names a checkpoint of tensors,
dicts and numbers needs (ALLOWED_GLOBALS) and maps them to harmless NumPy
stand-ins; any other name raises WeightsError before anything is called.
Opcodes that reach objects by other routes (copyreg extensions, INST/OBJ,
out-of-band buffers) are refused by a scan of the pickle before it is loaded.

Tensors become `TensorRef`s while unpickling (shape and bounds checked, no data
read); `materialize` then reads only the storages that are actually needed, so
reading `state_dict` does not load the optimizer's moments. Arrays keep their
storage dtype (float16 stays float16, int64 stays int64) except bfloat16,
which NumPy lacks and which is widened to float32 (exactly).
"""
import io
import pickle
import pickletools
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from .errors import WeightsError

MAX_PICKLE_BYTES = 64 * 2**20  # data.pkl of a training checkpoint is a few hundred kB
MAX_STORAGE_BYTES = 2**32  # the largest STF storage is ~40 MB; bounds what a forged size can allocate

# storage class name (as written in the pickle) -> NumPy dtype of its elements
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
    "BFloat16Storage": "bf16",  # read as uint16, widened to float32
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}

# Opcodes that would let a pickle reach callables without find_class, or that
# torch never writes: refused outright by _scan_opcodes.
REFUSED_OPCODES = {"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX",
                   "PERSID", "NEXT_BUFFER", "READONLY_BUFFER"}


class _ReadOnly:
    """Base of every object the unpickler hands out: a pickle's BUILD opcode sets attributes
    on the object below it, so these refuse it (no __dict__, no __setattr__) — otherwise a
    file could move a tensor's checked offset, or retag a shared storage type."""
    __slots__ = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise WeightsError(f"checkpoint: refuses to modify a {type(self).__name__}")


class StorageType(_ReadOnly):
    """Stand-in for torch.FloatStorage & co: only a dtype tag inside a persistent id."""
    __slots__ = ("name", "dtype")

    def __repr__(self):
        return f"torch.{self.name}"


class Storage(_ReadOnly):
    """One `<stem>/data/<key>` entry, not yet read."""
    __slots__ = ("key", "dtype", "numel")


class TensorRef(_ReadOnly):
    """A tensor as the pickle describes it: a strided view into a storage."""
    __slots__ = ("storage", "offset", "shape", "stride")


class _Function(_ReadOnly):
    """An allowlisted callable (a plain function object would accept BUILD's attributes)."""
    __slots__ = ("func",)

    def __call__(self, *args):
        return self.func(*args)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor_v2 (requires_grad, hooks, metadata ignored)."""
    if not isinstance(storage, Storage):
        raise WeightsError("checkpoint: a tensor's storage is not a storage reference")
    ints = lambda t: isinstance(t, tuple) and all(type(v) is int for v in t)  # noqa: E731
    if type(storage_offset) is not int or not ints(size) or not ints(stride) or len(size) != len(stride):
        raise WeightsError("checkpoint: a tensor has a malformed offset, size or stride")
    if storage_offset < 0 or min(size + stride, default=0) < 0:
        raise WeightsError("checkpoint: a tensor has a negative offset, size or stride")
    if 0 not in size:  # the last element the view touches must lie inside the storage
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise WeightsError(f"checkpoint: tensor of size {size} reaches element {last} "
                               f"of storage {storage.key!r} with only {storage.numel} elements")
    elif storage_offset > storage.numel:
        raise WeightsError(f"checkpoint: tensor offset beyond storage {storage.key!r}")
    return TensorRef(storage=storage, offset=storage_offset, shape=size, stride=stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter: a Parameter is just its tensor."""
    if not isinstance(data, TensorRef):
        raise WeightsError("checkpoint: a parameter does not wrap a tensor")
    return data


# Everything a pickled training checkpoint (dicts, numbers, tensors) refers to.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,  # state dicts; also the empty backward_hooks
    ("torch._utils", "_rebuild_tensor_v2"): _Function(func=_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Function(func=_rebuild_parameter),
    **{("torch", name): StorageType(name=name, dtype=dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, zip_names, stem):
        super().__init__(io.BytesIO(data))
        self._zip_names, self._stem, self._storages = zip_names, stem, {}

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsError(f"checkpoint: refuses to load {module}.{name} — the pickle asks for "
                               f"something other than tensors and containers (unsafe or unsupported)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsError(f"checkpoint: refuses unknown persistent id {str(pid)[:80]!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, StorageType) or type(key) is not str or type(numel) is not int or numel < 0:
            raise WeightsError("checkpoint: malformed storage reference")
        if f"{self._stem}/data/{key}" not in self._zip_names:
            raise WeightsError(f"checkpoint: storage {key!r} is missing from the archive")
        old = self._storages.setdefault(key, Storage(key=key, dtype=stype.dtype, numel=numel))
        if (old.dtype, old.numel) != (stype.dtype, numel):
            raise WeightsError(f"checkpoint: storage {key!r} is declared twice with different types")
        return old


def _scan_opcodes(data):
    """Refuse opcodes that bypass find_class, without executing anything."""
    try:
        for op, _arg, _pos in pickletools.genops(data):
            if op.name in REFUSED_OPCODES:
                raise WeightsError(f"checkpoint: refuses pickle opcode {op.name}")
    except (ValueError, EOFError) as e:  # genops: malformed stream
        raise WeightsError(f"checkpoint: data.pkl is not a valid pickle ({e})") from None


class Checkpoint:
    """An open torch zip checkpoint: the unpickled tree (with TensorRefs) and its archive."""

    def __init__(self, path):
        self.path = str(path)
        if not zipfile.is_zipfile(self.path):
            raise WeightsError(f"{self.path}: not a PyTorch zip checkpoint (files from torch < 1.6 or "
                               f"saved with _use_new_zipfile_serialization=False are not supported; "
                               f"re-save them with a current torch.save)")
        self._cache = {}
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise WeightsError(f"{self.path}: damaged checkpoint ({e})") from None
        try:
            self.tree = self._load_tree()
        except Exception as e:
            self._zip.close()
            if isinstance(e, WeightsError):
                raise
            # a damaged archive, or anything the unpickler trips over in a malformed pickle
            kind = "damaged" if isinstance(e, (zipfile.BadZipFile, OSError, EOFError)) else "malformed"
            raise WeightsError(f"{self.path}: {kind} checkpoint ({type(e).__name__}: {e})") from None

    def _load_tree(self):
        pkls = [i for i in self._zip.infolist() if i.filename.count("/") == 1
                and i.filename.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise WeightsError(f"{self.path}: a zip file, but not a PyTorch checkpoint (no <name>/data.pkl)")
        self.stem = pkls[0].filename.split("/")[0]
        if pkls[0].file_size > MAX_PICKLE_BYTES:
            raise WeightsError(f"{self.path}: data.pkl is {pkls[0].file_size} bytes, "
                               f"more than the {MAX_PICKLE_BYTES} allowed")
        names = set(self._zip.namelist())
        order = f"{self.stem}/byteorder"
        self.byteorder = "little"
        if order in names:
            with self._zip.open(order) as f:
                self.byteorder = f.read(16).decode("ascii", "replace").strip()
        if self.byteorder not in ("little", "big"):
            raise WeightsError(f"{self.path}: unknown byte order {self.byteorder!r}")
        data = self._zip.read(pkls[0])
        _scan_opcodes(data)
        return _RestrictedUnpickler(data, names, self.stem).load()

    def storage_array(self, storage):
        """The whole storage as a 1-D native-endian array (read once, cached)."""
        if storage.key not in self._cache:
            info = self._zip.getinfo(f"{self.stem}/data/{storage.key}")
            itemsize = 2 if storage.dtype == "bf16" else np.dtype(storage.dtype).itemsize
            if info.file_size != storage.numel * itemsize or info.file_size > MAX_STORAGE_BYTES:
                raise WeightsError(f"{self.path}: storage {storage.key!r} holds {info.file_size} bytes, "
                                   f"the pickle declares {storage.numel} x {itemsize} "
                                   f"(limit {MAX_STORAGE_BYTES})")
            try:
                raw = self._zip.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                raise WeightsError(f"{self.path}: damaged storage {storage.key!r} ({e})") from None
            end = "<" if self.byteorder == "little" else ">"
            if storage.dtype == "bf16":  # bfloat16 = the top 16 bits of a float32
                arr = (np.frombuffer(raw, end + "u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, end + storage.dtype).astype(storage.dtype)  # native, owned
            self._cache[storage.key] = arr
        return self._cache[storage.key]

    def tensor(self, ref):
        """A TensorRef as an owned, contiguous NumPy array."""
        base = self.storage_array(ref.storage)
        if 0 in ref.shape:
            return np.empty(ref.shape, base.dtype)
        view = np.lib.stride_tricks.as_strided(base[ref.offset:], ref.shape,  # bounds checked at unpickling
                                               tuple(s * base.itemsize for s in ref.stride), writeable=False)
        return np.array(view, copy=True)

    def materialize(self, obj):
        """`obj` (a subtree of self.tree) with every TensorRef replaced by its array."""
        if isinstance(obj, TensorRef):
            return self.tensor(obj)
        if isinstance(obj, dict):
            return type(obj)((k, self.materialize(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.materialize(v) for v in obj)
        return obj

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_checkpoint(path):
    """The whole object tree of a torch zip checkpoint, tensors as NumPy arrays."""
    with Checkpoint(path) as ck:
        return ck.materialize(ck.tree)


def read_state_dict(path):
    """Only the model's state dict of a checkpoint: `ckpt["state_dict"]`, or the file's
    top-level dict if that is itself a state dict. Other entries (optimizer state) are never read."""
    with Checkpoint(path) as ck:
        tree = ck.tree
        if isinstance(tree, dict) and isinstance(tree.get("state_dict"), dict):
            tree = tree["state_dict"]
        if not (isinstance(tree, dict) and tree and all(isinstance(v, TensorRef) for v in tree.values())):
            keys = list(tree)[:10] if isinstance(tree, dict) else type(tree).__name__
            raise WeightsError(f"{path}: no state dict found (neither ['state_dict'] nor a dict of tensors; "
                               f"top level: {keys})")
        return OrderedDict((str(k), ck.tensor(v)) for k, v in tree.items())
