"""Host threads and block sizes of the fast kernels.

NumPy's ufuncs and BLAS calls release the GIL, so a kernel that cuts its work into
blocks can run them on all cores. Two ways are used:

* `parallel_rows` / `parallel_ranges`: the rows of elementwise work (GELU, LayerNorm,
  softmax, residual adds) in cache-sized blocks; every core pulls blocks from a
  shared counter (the calling thread works too), so a block is read from cache by
  all the passes of a kernel, and a core that the OS takes away for a while leaves
  its blocks to the others.
* `parallel_blocks`: whole independent pieces of a layer (a group of windows: LayerNorm,
  two products and a softmax) with BLAS held to one thread meanwhile (threadpoolctl):
  while one thread is inside a matrix product, the other runs its elementwise passes.

CuPy arrays skip all this: a kernel runs once on the whole arrays. Blocks only decide
who computes which rows: the same numbers come out with any number of threads.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from ..backend import on_host

# --- the block-size table: values (float32 elements) per block of each kind of work ------
BLOCK = {
    "elementwise": 1 << 15,  # an operand block of parallel_rows: 128 KB, a few operands fit in L2
    "gelu": 1 << 17,  # GELU's blocks: 21 passes over 3 work arrays of 512 KB (`scratch`), fewer calls a value
    "attention": 1 << 17,  # scores of a block of windows inside one group
    "conv sums": 1 << 17,  # output rows of the shifted tap sums of a taps-first convolution
    "im2col": 1 << 19,  # the k*k shifted views of a block of output rows: ~2 MB, in cache
    "end_conv band": 1 << 20,  # the p*p-times-wider 5x5 output of one band of rows
    "window group": 1 << 21,  # qkv (3C a token) of a group of windows: ~8 MB
    "mlp tokens": 1 << 21,  # the 4C-wide hidden activations of a block of tokens: ~8 MB
    "conv rows": 1 << 22,  # Y of one row of taps of a taps-first convolution
}

_pool = None
_inside = threading.local()  # .flag set in pool threads (nested parallel work runs serially there); .scratch
_blas = None


def num_threads():
    """Host threads for the kernels: $MINSTF_NUM_THREADS, else the CPUs this process may use."""
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


def scratch(n, dtype, count):
    """`count` flat work arrays of n values for the calling thread, reused from call to call.

    A kernel of many passes over a block would otherwise allocate its temporaries anew for
    every block; from 128 KB up, glibc maps each one fresh from the OS and every first touch
    of a page faults. Reused, blocks can be large enough that a ufunc call's fixed cost (the
    GIL held for about 1.5 us) is small beside its loop.
    """
    have = getattr(_inside, "scratch", None)
    if have is None or len(have) < count or have[0].size < n or have[0].dtype != dtype:
        have = [np.empty(n, dtype=dtype) for _ in range(count)]
        _inside.scratch = have
    return [a[:n] for a in have[:count]]


def row_blocks(rows, row_elements, overlap=0, block_elements=None):
    """[(start, count)] covering `rows` rows in blocks whose work arrays hold about `block_elements`
    values (default BLOCK["conv rows"]; `row_elements` a row, plus `overlap` rows that a block also reads)."""
    block_elements = BLOCK["conv rows"] if block_elements is None else block_elements
    step = max(1, block_elements // max(row_elements, 1) - overlap)
    return [(lo, min(step, rows - lo)) for lo in range(0, rows, step)]


def parallel_rows(kernel, *arrays, block=None):
    """Call `kernel(*views)` on consecutive row ranges of `arrays`, covering every row once.

    Args: arrays with the same first axis (rows); `kernel` reads and writes its
    views in place (outputs are among `arrays`) and must not depend on the order
    of the ranges. block: about how many elements of the first array a range holds
    (default BLOCK["elementwise"]).
    NumPy: ranges run on all cores (`num_threads()`); CuPy: one call on the whole arrays.
    """
    rows = arrays[0].shape[0]
    parallel_ranges(lambda lo, hi: kernel(*(a[lo:hi] for a in arrays)), rows,
                    arrays[0].size // max(rows, 1), block, on_host(arrays[0]))


def parallel_ranges(kernel, rows, row_elements, block=None, host=True):
    """Call `kernel(lo, hi)` on consecutive ranges [lo, hi) covering range(rows), each of about
    `block` elements (default BLOCK["elementwise"]; `row_elements` a row), on all cores;
    one call kernel(0, rows) if not host."""
    block = BLOCK["elementwise"] if block is None else block
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

    _run(work, threads)


def parallel_blocks(work, blocks, host=True):
    """Call `work(*block)` for every block (independent pieces of work: disjoint outputs), on all
    cores with BLAS held to one thread; in order in this thread on CuPy or when nested."""
    blocks = list(blocks)
    threads = min(num_threads(), len(blocks))
    if not host or threads < 2 or getattr(_inside, "flag", False):
        for block in blocks:
            work(*block)
        return
    taken = itertools.count()

    def worker():
        while (i := next(taken)) < len(blocks):  # whoever is free takes the next block
            work(*blocks[i])

    with _blas_limited_to_one_thread():
        _inside.flag = True  # parallel_rows inside a block runs in its own thread
        try:
            _run(worker, threads)
        finally:
            _inside.flag = False


def _run(work, threads):
    """work() in this thread and in threads-1 pool threads; returns when all have finished."""
    helpers = [_executor().submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        for h in helpers:
            if not h.cancel():  # a helper that has not started yet (a busy machine) is not waited for
                h.result()


def _blas_limited_to_one_thread():
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")
