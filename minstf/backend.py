"""Array-module selection: NumPy by default, CuPy on request.

Every function in minstf takes the array module from its inputs (`xp_of`), so
the same code runs on the CPU and on a GPU. Weights move to the device once,
when a model is loaded; images move at the public edges (`to_device` /
`to_host`), and symbols cross to the host around entropy coding only.
"""
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


def on_host(array):
    """True for a NumPy array (the host), False for CuPy."""
    return xp_of(array) is np
