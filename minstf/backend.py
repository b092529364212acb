"""Array-module selection: NumPy by default, CuPy on request.

Every function in minstf takes the array module from its inputs (`xp_of`), so
the same code runs on the CPU and on a GPU. Weights move to the device once,
when a model is loaded; images move at the public edges (`to_device` /
`to_host`), and symbols cross to the host around entropy coding only.
"""
import itertools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BACKENDS = ("numpy", "cupy")


class BackendUnavailable(RuntimeError):
    pass


def get_xp(backend="numpy"):
    """The array module for a backend name ("numpy" or "cupy")."""
    if backend == "numpy":
        return np
    if backend == "cupy":
        try:
            import cupy
        except ImportError as e:
            raise BackendUnavailable(
                "backend 'cupy' needs CuPy: pip install 'minstf[gpu]' on a machine with a CUDA GPU") from e
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # no driver / no device
            raise BackendUnavailable(f"backend 'cupy': no usable CUDA device ({e})") from e
        return cupy
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def xp_of(*arrays):
    """The array module of the given arrays (NumPy unless one is a CuPy array)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy
    return np


def backend_name(xp):
    return "cupy" if xp.__name__.startswith("cupy") else "numpy"


def to_device(array, xp):
    """Host array -> array of module `xp` (no copy for NumPy)."""
    return array if xp is np else xp.asarray(array)


def to_host(array):
    """Any array -> NumPy array."""
    if isinstance(array, np.ndarray):
        return array
    return array.get() if hasattr(array, "get") else np.asarray(array)


def erf(x):
    """The error function of the module that owns `x` (scipy / cupyx)."""
    if xp_of(x) is np:
        from scipy.special import erf as _erf
    else:
        from cupyx.scipy.special import erf as _erf
    return _erf(x)


def erfc(x):
    if xp_of(x) is np:
        from scipy.special import erfc as _erfc
    else:
        from cupyx.scipy.special import erfc as _erfc
    return _erfc(x)


# --- host threads for elementwise work ---------------------------------------------
# NumPy's ufuncs run on one core, but they release the GIL. `parallel_rows` cuts
# the rows of its arrays into cache-sized blocks and lets every core pull blocks
# from a shared counter (the calling thread works too), so a multi-pass kernel
# reads each block from cache, and a core that the OS takes away for a while
# (a shared machine) leaves its blocks to the others instead of stalling the op.
# CuPy arrays skip all this: the kernel runs once on the whole arrays.
BLOCK_ELEMENTS = 1 << 15  # float32 elements per operand block: 128 KB, a few operands fit in L2

_pool = None
_inside = threading.local()  # set in pool threads: a nested parallel_rows runs serially


def num_threads():
    """Host threads for elementwise work: $MINSTF_NUM_THREADS, else the usable CPUs."""
    env = os.environ.get("MINSTF_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _executor():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max(num_threads() - 1, 1), thread_name_prefix="minstf",
                                   initializer=lambda: setattr(_inside, "flag", True))
    return _pool


def parallel_rows(kernel, *arrays, block=BLOCK_ELEMENTS):
    """Call `kernel(*views)` on consecutive row ranges of `arrays`, covering every row once.

    Args: arrays with the same first axis (rows); `kernel` reads and writes its
    views in place (outputs are among `arrays`) and must not depend on the order
    of the ranges. block: about how many elements of the first array a range holds.
    NumPy: ranges run on all cores (`num_threads()`); CuPy: one call on the whole arrays.
    """
    rows = arrays[0].shape[0]
    parallel_ranges(lambda lo, hi: kernel(*(a[lo:hi] for a in arrays)), rows,
                    arrays[0].size // max(rows, 1), block, on_host(arrays[0]))


def parallel_ranges(kernel, rows, row_elements, block=BLOCK_ELEMENTS, host=True):
    """Call `kernel(lo, hi)` on consecutive ranges [lo, hi) covering range(rows), each of about
    `block` elements (`row_elements` a row), on all cores; one call kernel(0, rows) if not host."""
    if not host:
        kernel(0, rows)
        return
    step = max(1, block // max(row_elements, 1))  # rows per range
    count = -(-rows // step)
    threads = 1 if getattr(_inside, "flag", False) else min(num_threads(), count)
    ranges = itertools.count()

    def work():
        while (i := next(ranges)) < count:  # a shared counter: whoever is free takes the next range
            kernel(i * step, min((i + 1) * step, rows))

    helpers = [_executor().submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for h in helpers:
            if not h.cancel():  # a helper that has not started yet (a busy machine) is not waited for
                h.result()


# --- threads over independent blocks of work ----------------------------------------
# A NumPy kernel made of many short ufunc calls gains little from a second thread:
# every call needs the GIL, and two threads hand it back and forth. Whole blocks of
# a layer (LayerNorm, two matrix products and a GELU on a block of tokens) do gain:
# while one thread is inside a matrix product (no GIL, milliseconds), the other runs
# its elementwise passes. BLAS is held to one thread meanwhile, else its own threads
# and ours would fight over the cores; that needs threadpoolctl. Without it (or on
# CuPy) the blocks run one after the other, with BLAS using its own threads.
try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # optional: pip install threadpoolctl
    ThreadpoolController = None
_blas = None


def _blas_limited_to_one_thread():
    """A context manager that holds BLAS to one thread, or None when that is not possible."""
    global _blas
    if ThreadpoolController is None:
        return None
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def parallel_blocks(work, blocks, host=True):
    """Call `work(*block)` for every block (independent pieces of work: disjoint outputs), on all
    cores with BLAS held to one thread when possible, else in order in this thread."""
    blocks = list(blocks)
    threads = min(num_threads(), len(blocks))
    nested = getattr(_inside, "flag", False)
    limit = _blas_limited_to_one_thread() if host and threads > 1 and not nested else None
    if limit is None:
        for block in blocks:
            work(*block)
        return
    taken = itertools.count()

    def worker():
        while (i := next(taken)) < len(blocks):  # whoever is free takes the next block
            work(*blocks[i])

    with limit:
        _inside.flag = True  # parallel_rows inside a block runs in its own thread
        helpers = [_executor().submit(worker) for _ in range(threads - 1)]
        try:
            worker()
        finally:
            _inside.flag = False
            for h in helpers:
                if not h.cancel():
                    h.result()


def matmul_into(a, b, out):
    """out[...] = a @ b; NumPy writes straight into `out` (any strides), CuPy through a temporary."""
    if on_host(out):
        return np.matmul(a, b, out=out)
    out[...] = a @ b
    return out


def on_host(array):
    """True for a NumPy array (the host), False for CuPy."""
    return xp_of(array) is np


def row_blocks(rows, row_elements, overlap=0, block_elements=1 << 22):
    """[(start, count)] covering `rows` rows in blocks whose work arrays hold about `block_elements`
    values (`row_elements` a row, plus `overlap` rows that a block also reads)."""
    step = max(1, block_elements // max(row_elements, 1) - overlap)
    return [(lo, min(step, rows - lo)) for lo in range(0, rows, step)]


# --- weights in the layouts the kernels want ----------------------------------------------
_layouts = {}  # (id(weight), tag) -> (weak reference to weight, derived array)


def derived(weight, tag, make):
    """`make(weight)`, computed once per weight array and kept while the array lives.

    For re-layouts such as a convolution's (O, Cin, k, k) -> (Cin, k*k*O): the
    params keep PyTorch's layouts, the kernels get theirs without a copy per call.
    Weights are treated as immutable: to change one, assign a new array.
    """
    key = (id(weight), tag)
    hit = _layouts.get(key)
    if hit is not None and hit[0]() is weight:
        return hit[1]
    value = make(weight)
    try:
        ref = weakref.ref(weight, lambda _, key=key: _layouts.pop(key, None))
    except TypeError:  # an array type without weak references: no caching
        return value
    _layouts[key] = (ref, value)
    return value
