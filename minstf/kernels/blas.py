"""`C += A @ B` in NumPy's own BLAS: the accumulating product that numpy.matmul lacks.

BLAS's gemm computes C = alpha A B + beta C; with beta = 1 a convolution's k*k taps can
be added into one output by BLAS itself (ops._conv_shifted) instead of k*k passes of
NumPy adds. NumPy does not expose beta, and SciPy's `blas.sgemm` runs in SciPy's own
copy of OpenBLAS: a second pool of BLAS threads, which busy-wait after each call while
NumPy's pool works (measured: the hyperprior stages ran 1.4-2x slower beside it). So the
product is called in the library NumPy itself links, through ctypes:

    NumPy's wheels on PyPI bundle OpenBLAS as numpy.libs/libscipy_openblas64_*.so, whose
    row-major `scipy_cblas_sgemm64_` / `scipy_cblas_dgemm64_` take 64-bit integers.

Where that library is not found (another build of NumPy, e.g. against MKL or Accelerate),
`available()` is False and the convolutions take their NumPy-only paths.
"""
import ctypes
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS = 101, 111  # CBLAS enums


def numpy_library():
    """threadpoolctl's record of the OpenBLAS that NumPy's wheel bundles (in numpy.libs), or None.
    Other BLAS libraries may be loaded beside it (SciPy's wheel bundles its own)."""
    try:
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().info()
    except Exception:  # noqa: BLE001 — no BLAS introspection
        return None
    return next((lib for lib in libs if lib.get("internal_api") == "openblas"
                 and os.path.basename(os.path.dirname(lib.get("filepath") or "")) == "numpy.libs"), None)


def _find():
    """{dtype: cblas gemm function} of NumPy's bundled OpenBLAS, or None."""
    lib = numpy_library()
    if lib is None:
        return None
    try:
        dll = ctypes.CDLL(lib["filepath"])  # already loaded by NumPy: the same library, the same threads
        fns = {np.dtype(np.float32): dll.scipy_cblas_sgemm64_, np.dtype(np.float64): dll.scipy_cblas_dgemm64_}
    except (OSError, AttributeError):
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for dtype, fn in fns.items():
        real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        fn.restype = None
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, real, ptr, i64, ptr, i64,
                       real, ptr, i64]
    return fns


_GEMM = _find()


def _rows(a):
    """(rows, cols) row-major operand with unit column stride: its leading dimension, or None."""
    s0, s1 = a.strides
    if s1 != a.itemsize or s0 % a.itemsize or s0 // a.itemsize < a.shape[1]:
        return None
    return s0 // a.itemsize


def gemm_into(a, b, out, beta):
    """out = a @ b + beta * out, in NumPy's BLAS (beta 0 or 1). a (m, k), b (k, n), out (m, n):
    host arrays of one float dtype, rows contiguous. Returns out."""
    m, k = a.shape
    n = b.shape[1]
    lda, ldb, ldc = _rows(a), _rows(b), _rows(out)
    if None in (lda, ldb, ldc) or b.shape[0] != k or out.shape != (m, n) or not (a.dtype == b.dtype == out.dtype):
        raise ValueError(f"gemm_into: operands {a.shape} {a.strides}, {b.shape} {b.strides}, {out.shape} "
                         f"{out.strides} are not row-major matrices of one dtype")
    if m and n:
        _GEMM[out.dtype](_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
                         float(beta), out.ctypes.data, ldc)
    return out


def available(dtype):
    """Whether gemm_into runs for this dtype here."""
    return _GEMM is not None and np.dtype(dtype) in _GEMM
