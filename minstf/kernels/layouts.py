"""Weights in the layouts the fast kernels want, made once per weight array; products into views.

The params dict keeps PyTorch's layouts (what the reference layer reads); a fast
kernel asks `derived(weight, tag, make)` for its own layout, e.g. a convolution's
(O, Cin, k, k) -> (Cin, k*k*O), and gets it without a copy per call.
"""
import weakref

import numpy as np

from ..backend import on_host

_layouts = {}  # (id(weight), tag) -> (weak reference to weight, derived array)


def derived(weight, tag, make):
    """`make(weight)`, computed once per weight array and kept while the array lives.

    Weights are treated as immutable: to change one, assign a new array. The cache is
    keyed on the array's identity and checked through a weak reference, so a new array
    that reuses a freed one's id() is never given the old layout.
    """
    key = (id(weight), tag)
    hit = _layouts.get(key)
    if hit is not None and hit[0]() is weight:
        return hit[1]
    value = make(weight)
    try:
        ref = weakref.ref(weight, lambda _, key=key, cache=_layouts: cache.pop(key, None))  # safe at exit too
    except TypeError:  # an array type without weak references: no caching
        return value
    _layouts[key] = (ref, value)
    return value


def matmul_into(a, b, out):
    """out[...] = a @ b; NumPy writes straight into `out` (any strides), CuPy through a temporary."""
    if on_host(out):
        return np.matmul(a, b, out=out)
    out[...] = a @ b
    return out
