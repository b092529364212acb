"""Smoke test of the benchmark (minstf.tooling.bench) on a tiny configuration and a 64x64 image."""
import io
import importlib.util

import numpy as np

from minstf.tooling.bench import MODES, PORTABLE_STAGES, STAGES, bench_image, run_benchmark
from minstf.config import STFConfig

TINY = STFConfig(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 4), num_slices=4,
                 max_support_slices=2, slice_hidden=(16, 16, 16, 16))
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def test_bench_image_falls_back_to_a_smooth_synthetic_image(tmp_path):
    x, what = bench_image((128, 64), kodak=tmp_path)
    assert x.shape == (1, 3, 64, 128) and x.dtype == np.float32 and "synthetic" in what
    assert 0 <= x.min() and x.max() <= 1


def test_run_benchmark_tiny():
    out = io.StringIO()
    # one thread: on a busy machine, waking thread pools for tiny ops costs milliseconds each
    r = run_benchmark(config=TINY, size=(64, 64), repeat=1, torch=HAVE_TORCH, threads=1, out=out, reference=True)
    sides = ("numpy", "reference", "torch") if HAVE_TORCH else ("numpy", "reference")
    for side in sides:
        figures = r[side]["figures"]
        assert set(figures) == set(MODES)
        assert set(figures["float32"]) == set(STAGES) and set(figures["portable"]) == set(PORTABLE_STAGES)
        for stages in figures.values():
            for f in stages.values():
                assert f["median_s"] > 0 and 0 <= f["coding_s"] <= f["median_s"]
    table = out.getvalue()
    assert "g_a" in table and "entropy coding" in table and "load average" in table and "\nBLAS: " in table
    assert ("time x" in table) == HAVE_TORCH and "ref x" in table and "of bound" in table
    assert r["numpy"]["flops"]["compress"] > 0 and r["numpy"]["sgemm_gflops"] > 0
    assert r["numpy"]["threads"] == 1


def test_blas_kernels_names_the_pin(monkeypatch):
    from minstf.tooling import bench
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    text = bench.blas_kernels()  # the variable only matters at load time; the report names it
    assert "$OPENBLAS_CORETYPE=Haswell is set" in text
    monkeypatch.setattr(bench, "cpu_simd", lambda: "AVX-512")
    narrow = any(f"{core} kernels" in text.lower() for core in bench.NARROW_OPENBLAS_CORES)
    assert ("less than the CPU has" in bench.blas_kernels()) == narrow
