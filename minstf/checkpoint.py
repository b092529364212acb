"""Read PyTorch checkpoints without PyTorch, and without running pickled code.

A `torch.save` file (docs/weights.md §4) is a zip archive with one top folder `<stem>/`:

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

Allocation is bounded by the file, so that a file of a few hundred bytes cannot
make a gigabyte array:

* before anything is unpickled, every zip entry must be unencrypted, stored or
  deflated (torch stores), and deflated at most MAX_COMPRESSION_RATIO : 1;
* while unpickling, a storage's declared size (numel x itemsize) must be exactly
  its entry's size and at most MAX_STORAGE_BYTES, and all storages together at
  most `budget` = 4 x the file size + 1 MiB (and MAX_TOTAL_BYTES);
* a tensor has at most MAX_NDIM dimensions, a non-negative offset, sizes and
  strides, no more elements than its storage (nor than MAX_ELEMENTS, counting
  zero sizes as one), and its last element inside the storage;
* storages are read by streaming into an array of the declared size (a member
  whose header lies is caught by its length and CRC), and the arrays handed out
  (copies of views) are held to the same budget;
* BUILD state on a dict must be a plain dict of names (torch writes `_metadata`),
  and containers nest at most MAX_DEPTH deep.

Every failure is one WeightsError naming the file.
"""
import io
import math
import os
import pickle
import pickletools
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from .errors import WeightsError

MAX_PICKLE_BYTES = 64 * 2**20  # data.pkl of a training checkpoint is a few hundred kB
MAX_STORAGE_BYTES = 2**32  # the largest STF storage is ~40 MB; bounds what a forged size can allocate
MAX_TOTAL_BYTES = 2**34  # all storages of a file together (the full STF with Adam's moments: 1.2 GB)
MAX_COMPRESSION_RATIO = 1000  # zlib's own limit is ~1032:1; torch does not compress at all
MAX_ENTRIES = 200_000  # zip entries (a training checkpoint of the full STF has ~2,300)
MAX_NDIM, MAX_ELEMENTS = 8, 2**40  # a tensor's dimensions; its elements (counting 0 as 1)
MAX_DEPTH = 64  # nesting of containers (a training checkpoint: ~6)

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
    if len(size) > MAX_NDIM:
        raise WeightsError(f"checkpoint: a tensor has {len(size)} dimensions (at most {MAX_NDIM})")
    if storage_offset < 0 or min(size + stride, default=0) < 0:
        raise WeightsError("checkpoint: a tensor has a negative offset, size or stride")
    if storage_offset > storage.numel:
        raise WeightsError(f"checkpoint: tensor offset beyond storage {storage.key!r}")
    if math.prod(max(n, 1) for n in size) > MAX_ELEMENTS:  # even an empty (0, 2**62) NumPy refuses
        raise WeightsError(f"checkpoint: a tensor of size {size} is larger than {MAX_ELEMENTS} elements")
    numel = math.prod(size)
    if numel > storage.numel:  # e.g. a stride-0 "expanded" view: refused, it would multiply memory
        raise WeightsError(f"checkpoint: tensor of size {size} has more elements than its storage "
                           f"{storage.key!r} ({storage.numel})")
    if numel:  # the last element the view touches must lie inside the storage
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise WeightsError(f"checkpoint: tensor of size {size} reaches element {last} "
                               f"of storage {storage.key!r} with only {storage.numel} elements")
    # a dimension of size 1 never steps: its stride (any number) must not reach NumPy
    stride = tuple(0 if n == 1 else s for n, s in zip(size, stride))
    return TensorRef(storage=storage, offset=storage_offset, shape=size, stride=stride)


class _OrderedDict(OrderedDict):
    """OrderedDict as the pickle builds it. torch's state dicts carry BUILD state
    {"_metadata": ...}; any other state (a slot tuple that would set attributes such as
    `items`) is refused, and the state is dropped: minstf needs no module versions."""

    def __setstate__(self, state):
        if not (type(state) is dict and all(type(k) is str for k in state)):
            raise WeightsError(f"checkpoint: refuses BUILD state of type {type(state).__name__} on a dict")


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    """Stand-in for torch._utils._rebuild_parameter: a Parameter is just its tensor."""
    if not isinstance(data, TensorRef):
        raise WeightsError("checkpoint: a parameter does not wrap a tensor")
    return data


# Everything a pickled training checkpoint (dicts, numbers, tensors) refers to.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _OrderedDict,  # state dicts; also the empty backward_hooks
    ("torch._utils", "_rebuild_tensor_v2"): _Function(func=_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Function(func=_rebuild_parameter),
    **{("torch", name): StorageType(name=name, dtype=dtype) for name, dtype in STORAGE_DTYPES.items()},
}


def _itemsize(dtype):
    return 2 if dtype == "bf16" else np.dtype(dtype).itemsize


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, infos, stem, budget):
        super().__init__(io.BytesIO(data))
        self._infos, self._stem, self._storages = infos, stem, {}
        self._budget, self._total = budget, 0

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsError(f"checkpoint: refuses to load {module}.{name} — the pickle asks for "
                               f"something other than tensors and containers (unsafe or unsupported)") from None

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            what = repr(pid)[:80] if type(pid) in (str, int) else type(pid).__name__  # no deep repr
            raise WeightsError(f"checkpoint: refuses unknown persistent id {what}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, StorageType) or type(key) is not str or type(numel) is not int or numel < 0:
            raise WeightsError("checkpoint: malformed storage reference")
        old = self._storages.get(key)
        if old is not None:
            if (old.dtype, old.numel) != (stype.dtype, numel):
                raise WeightsError(f"checkpoint: storage {key[:80]!r} is declared twice with different types")
            return old
        info = self._infos.get(f"{self._stem}/data/{key}")
        if info is None:
            raise WeightsError(f"checkpoint: storage {key[:80]!r} is missing from the archive")
        itemsize = _itemsize(stype.dtype)
        if info.file_size != numel * itemsize or info.file_size > MAX_STORAGE_BYTES:
            raise WeightsError(f"checkpoint: storage {key[:80]!r} holds {info.file_size} bytes, the pickle "
                               f"declares {numel} x {itemsize} (limit {MAX_STORAGE_BYTES})")
        self._total += info.file_size
        if self._total > self._budget:
            raise WeightsError(f"checkpoint: its storages declare more than {self._budget} bytes "
                               f"(4 x the file size + 1 MiB, at most {MAX_TOTAL_BYTES})")
        self._storages[key] = Storage(key=key, dtype=stype.dtype, numel=numel)
        return self._storages[key]


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
            size = os.path.getsize(self.path)
            self._zip = zipfile.ZipFile(self.path)
        except Exception as e:  # BadZipFile, OSError, and what a forged central directory trips
            raise WeightsError(f"{self.path}: damaged checkpoint ({type(e).__name__}: {e})") from None
        # storages may hold up to this much together; so may the arrays handed out
        self.budget = min(4 * size + 2**20, MAX_TOTAL_BYTES)
        self._handed_out = 0
        try:
            self._infos = self._check_archive()
            self.tree = self._load_tree()
        except Exception as e:
            self._zip.close()
            if isinstance(e, WeightsError):
                msg = str(e)
                raise (e if msg.startswith(self.path) else WeightsError(f"{self.path}: {msg}")) from None
            # a damaged archive, or anything the unpickler trips over in a malformed pickle
            kind = "damaged" if isinstance(e, (zipfile.BadZipFile, OSError, EOFError)) else "malformed"
            raise WeightsError(f"{self.path}: {kind} checkpoint ({type(e).__name__}: {e})") from None

    def _check_archive(self):
        """{name: ZipInfo}, after refusing entries that zipfile cannot read safely."""
        infos = self._zip.infolist()
        if len(infos) > MAX_ENTRIES:
            raise WeightsError(f"{self.path}: {len(infos)} zip entries (at most {MAX_ENTRIES})")
        by_name = {}
        for i in infos:
            name = i.filename[:80]
            if i.filename in by_name:
                raise WeightsError(f"{self.path}: zip entry {name!r} appears twice")
            if i.flag_bits & 1:
                raise WeightsError(f"{self.path}: zip entry {name!r} is encrypted")
            if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise WeightsError(f"{self.path}: zip entry {name!r} uses compression method "
                                   f"{i.compress_type} (only stored and deflated are read)")
            if i.compress_type == zipfile.ZIP_STORED and i.compress_size != i.file_size:
                raise WeightsError(f"{self.path}: zip entry {name!r} is stored with {i.compress_size} bytes "
                                   f"but claims {i.file_size}")
            if i.file_size > MAX_COMPRESSION_RATIO * max(i.compress_size, 1):
                raise WeightsError(f"{self.path}: zip entry {name!r} expands {i.compress_size} bytes to "
                                   f"{i.file_size} (more than {MAX_COMPRESSION_RATIO}:1)")
            by_name[i.filename] = i
        return by_name

    def _read_member(self, info, out):
        """Stream entry `info` into the writable byte buffer `out` of exactly its size."""
        view = memoryview(out).cast("B")
        try:
            with self._zip.open(info) as f:
                got = 0
                while got < len(view):
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
                extra = f.read(1)  # at the end zipfile checks the CRC
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as e:
            raise WeightsError(f"{self.path}: damaged zip entry {info.filename[:80]!r} "
                               f"({type(e).__name__}: {e})") from None
        if got != len(view) or extra:
            raise WeightsError(f"{self.path}: zip entry {info.filename[:80]!r} does not hold the "
                               f"{len(view)} bytes its header declares")
        return out

    def _load_tree(self):
        pkls = [i for name, i in self._infos.items() if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise WeightsError(f"{self.path}: a zip file, but not a PyTorch checkpoint (no <name>/data.pkl)")
        self.stem = pkls[0].filename.split("/")[0]
        if pkls[0].file_size > MAX_PICKLE_BYTES:
            raise WeightsError(f"{self.path}: data.pkl is {pkls[0].file_size} bytes, "
                               f"more than the {MAX_PICKLE_BYTES} allowed")
        order = self._infos.get(f"{self.stem}/byteorder")
        self.byteorder = "little"
        if order is not None:
            if order.file_size > 16:
                raise WeightsError(f"{self.path}: byteorder entry of {order.file_size} bytes")
            raw = self._read_member(order, bytearray(order.file_size))
            self.byteorder = raw.decode("ascii", "replace").strip()
        if self.byteorder not in ("little", "big"):
            raise WeightsError(f"{self.path}: unknown byte order {self.byteorder!r}")
        data = bytes(self._read_member(pkls[0], bytearray(pkls[0].file_size)))
        _scan_opcodes(data)
        return _RestrictedUnpickler(data, self._infos, self.stem, self.budget).load()

    def _spend(self, nbytes, what):
        """Count bytes handed out; refuse before allocating past the budget."""
        self._handed_out += nbytes
        if self._handed_out > self.budget:
            raise WeightsError(f"{self.path}: {what} would bring the arrays read to more than {self.budget} "
                               f"bytes (4 x the file size + 1 MiB): the pickle reuses its storages too often")

    def storage_array(self, storage):
        """The whole storage as a 1-D native-endian array (read once, cached)."""
        if storage.key not in self._cache:
            info = self._infos[f"{self.stem}/data/{storage.key}"]  # sizes checked at unpickling
            raw = self._read_member(info, np.empty(info.file_size, np.uint8))
            end = "<" if self.byteorder == "little" else ">"
            if storage.dtype == "bf16":  # bfloat16 = the top 16 bits of a float32
                arr = (raw.view(end + "u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = raw.view(end + storage.dtype).astype(storage.dtype, copy=False)  # native
            self._cache[storage.key] = arr
        return self._cache[storage.key]

    def tensor(self, ref):
        """A TensorRef as an owned, contiguous NumPy array."""
        base = self.storage_array(ref.storage)
        self._spend(math.prod(ref.shape) * base.itemsize, f"tensor of size {ref.shape}")
        if 0 in ref.shape:
            return np.empty(ref.shape, base.dtype)
        view = np.lib.stride_tricks.as_strided(base[ref.offset:], ref.shape,  # bounds checked at unpickling
                                               tuple(s * base.itemsize for s in ref.stride), writeable=False)
        return np.array(view, copy=True)

    def materialize(self, obj, depth=0):
        """`obj` (a subtree of self.tree) with every TensorRef replaced by its array."""
        if depth > MAX_DEPTH:
            raise WeightsError(f"{self.path}: containers nested deeper than {MAX_DEPTH} levels")
        if isinstance(obj, TensorRef):
            return self.tensor(obj)
        if isinstance(obj, dict):
            kind = OrderedDict if isinstance(obj, OrderedDict) else dict
            return kind((k, self.materialize(v, depth + 1)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.materialize(v, depth + 1) for v in obj)
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
        if not (isinstance(tree, dict) and tree and all(type(k) is str and isinstance(v, TensorRef)
                                                        for k, v in tree.items())):
            keys = [k if type(k) is str else type(k).__name__ for k in tree][:10] \
                if isinstance(tree, dict) else type(tree).__name__
            raise WeightsError(f"{path}: no state dict found (neither ['state_dict'] nor a dict of tensors; "
                               f"top level: {keys})")
        return OrderedDict((k, ck.tensor(v)) for k, v in tree.items())
