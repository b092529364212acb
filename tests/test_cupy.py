"""The CuPy backend against the NumPy one (runs only where CuPy and a CUDA device exist).

Tolerances as for the golden tests: 1e-4 on unit-scale tensors. Compressing on the
GPU and decoding on the CPU is expected to work in portable mode; in float32 mode it
may stop with DecoderMismatch when a scale index or symbol sits on a threshold, which
is exactly what the per-slice CRC is for.
"""
import numpy as np
import pytest

from minstf.backend import BackendUnavailable, get_xp, to_host
from minstf.config import STFConfig
from minstf.entropy_models import eb_tables, gc_tables
from minstf.model import STF

try:
    get_xp("cupy")
    REASON = None
except BackendUnavailable as e:
    REASON = str(e)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"CuPy unavailable: {REASON}")]


def models(params):
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    tables = {**eb_tables(eb), **gc_tables()}
    return (STF(STFConfig(), params, tables, "numpy", fingerprint="00" * 32),
            STF(STFConfig(), params, tables, "cupy", fingerprint="00" * 32))


def test_cupy_forward_matches_golden(golden_params, golden):
    _, gpu = models(golden_params)
    out = gpu.forward(golden["x"])
    assert np.abs(to_host(out["x_hat"]) - golden["x_hat_forward"]).max() <= 1e-4
    assert np.abs(to_host(out["likelihoods"]["y"]) - golden["lik_y"]).max() <= 1e-5


def test_cupy_compress_decodes_on_numpy_in_portable_mode(golden_params, golden):
    cpu, gpu = models(golden_params)
    c = gpu.compress(golden["x"], portable=True)
    x_hat = cpu.decompress(c)
    assert np.abs(x_hat - golden["x_hat_decompress"]).max() <= 1e-4
    assert c.slice_crcs == cpu.compress(golden["x"], portable=True).slice_crcs
