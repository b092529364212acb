"""Benchmark: minstf (NumPy) against the PyTorch mirror, stage by stage, time and peak memory.

    python -m minstf.tooling.bench                       # float32 + portable, minstf only
    python -m minstf.tooling.bench --torch               # ... and the torch mirror, with ratios
    python -m minstf.tooling.bench --torch --repeat 5 --stages g_a,g_s --modes float32
    python -m minstf.tooling.bench --reference           # ... and the reference layer beside the fast one

One 768x512 image (a Kodak photo from ../shared/data/kodak if present, else a
smooth synthetic one) through the full upstream configuration with the synthetic
recipe weights (minstf.synthetic). Stages:

    g_a, h_a         analysis transforms                    (float32 in both modes)
    hyper            h_mean_s + h_scale_s                    (float64 in portable mode)
    slices           the 12-slice loop, symbols = round(y - mu), no coding
    g_s              synthesis transform incl. end_conv      (float32 in both modes)
    compress         whole compress(): network + entropy coding (coding time shown apart)
    decompress       whole decompress()

The sides: minstf on its fast kernels (the default layer), optionally minstf on its
reference kernels (`--reference`: the readable layer of minstf/reference/, same
model, same stages) and the torch mirror (`--torch`).

Each side runs in its own subprocess (one for each side), so that
imports, allocator state and peak memory do not mix. Each side is set up and
warmed up by one compress and one decompress (excluded); then the stages run
`repeat` times round robin, every stage on one side right after the other (never
both at once), so that the ratios are fair on a machine whose load changes. The
median time is reported (the minimum is in the returned figures too). Peak memory of a stage is
the Linux peak resident set size (VmHWM, reset through /proc/self/clear_refs
before each run, after gc and malloc_trim) minus the resident size at the start
of the run: the memory the stage itself adds on top of the loaded model and
its inputs; the maximum over the runs is shown.

The torch side is the mirror (minstf.mirror.STFTorch) in eval mode under
torch.no_grad(), with torch.set_num_threads(the BLAS threads of NumPy); its
compress/decompress use the same entropy coder (minstf.coding) as minstf, so that
the network is the only difference. Portable mode on the torch side runs the
entropy-parameter networks on float64 copies of their modules.

The bound: the minstf worker measures this machine's sgemm and dgemm rates (GFLOP/s of
2048x2048 products, its own threads; once a round, while the other sides wait; the best
round counts) and counts each stage's flops (tooling/flops.py:
the matrix products of the network, 2 per multiply-add; float64 in portable mode's
entropy-parameter stages). `bound s` is the time the stage would take if all its flops
ran at that rate; `of bound` = bound s / the stage's median time, the fraction of this
machine's BLAS speed that the stage reaches.

`run_benchmark(...)` returns the figures as a dict and prints the table; `main(argv)`
is the command line.
"""
import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("g_a", "h_a", "hyper", "slices", "g_s", "compress", "decompress")
PORTABLE_STAGES = ("hyper", "slices", "compress", "decompress")  # the stages portable mode changes
MODES = ("float32", "portable")
KODAK = Path(__file__).resolve().parents[3] / "shared" / "data" / "kodak"
DEFAULT_SIZE = (768, 512)  # width, height


# --- inputs --------------------------------------------------------------------
def bench_image(size=DEFAULT_SIZE, kodak=KODAK):
    """(1, 3, H, W) float32 in [0, 1] and a description: the first Kodak photo with W >= H
    (top-left crop to `size`), else a smooth synthetic image."""
    W, H = size
    for path in sorted(Path(kodak).glob("kodim*.png")) if Path(kodak).is_dir() else []:
        from ..image import read_image, to_float
        image = read_image(path)  # (h, w, 3) uint8
        if image.shape[0] >= H and image.shape[1] >= W:
            return to_float(np.ascontiguousarray(image[:H, :W])), f"{path.name} (top-left {W}x{H})"
    v, u = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    rgb = [0.5 + 0.4 * np.sin(6 * u + 3 * v), 0.5 + 0.4 * np.cos(5 * v - 2 * u), 0.3 + 0.5 * u * v]
    return np.stack(rgb)[None].astype(np.float32), f"synthetic smooth {W}x{H}"


# --- measuring -------------------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def _malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak RSS added by a piece of code, in MB: VmHWM after minus VmRSS before.

    Resets the kernel's high-water mark with `echo 5 > /proc/self/clear_refs`; where
    that is impossible (not Linux), `peak_mb` stays None.
    """
    METHOD = "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS at stage start"

    def __init__(self):
        self.peak_mb = None

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _status_kb("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is not None:
            self.peak_mb = (_status_kb("VmHWM") - self._start) / 1024


class CodingClock:
    """Seconds spent inside the entropy coder (minstf.coding), accumulated while enabled."""

    def __init__(self):
        from .. import coding
        self.seconds = 0.0
        for cls, names in ((coding.SymbolEncoder, ("add", "finish")),
                           (coding.SymbolDecoder, ("__init__", "read", "at_end"))):
            for name in names:
                setattr(cls, name, self._timed(getattr(cls, name)))

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
        return wrapper


def blas_threads():
    """(threads, how it was found) of NumPy's BLAS."""
    try:
        from threadpoolctl import threadpool_info
        n = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        if n:
            return max(n), "threadpoolctl"
    except ImportError:
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]), f"${var}"
    return os.cpu_count(), "assumed: OpenBLAS default = os.cpu_count()"


NARROW_OPENBLAS_CORES = ("haswell", "zen", "sandybridge", "nehalem", "prescott")  # OpenBLAS cores without AVX-512


def blas_kernels():
    """What NumPy's BLAS runs on, e.g. "openblas 0.3.31, Haswell kernels ($OPENBLAS_CORETYPE=Haswell
    is set); CPU: AVX-512", with a warning when the BLAS kernels use less than the CPU has.

    OpenBLAS picks its kernels for the CPU at load time unless $OPENBLAS_CORETYPE names them;
    a machine image that pins an older core (seen here: Haswell, AVX2, on an AVX-512 CPU)
    halves the products' speed while torch (oneDNN, MKL) still uses the whole CPU.
    """
    from ..kernels.blas import numpy_library
    try:
        from threadpoolctl import threadpool_info
        blas = numpy_library() or next((p for p in threadpool_info() if p.get("user_api") == "blas"), None)
    except ImportError:
        blas = None
    arch = (blas or {}).get("architecture") or ""
    pin = os.environ.get("OPENBLAS_CORETYPE")
    text = f"{blas.get('internal_api', '?')} {blas.get('version', '?')}" if blas else "unknown (no threadpoolctl)"
    if arch:
        text += f", {arch} kernels"
    if pin:
        text += f" ($OPENBLAS_CORETYPE={pin} is set)"
    simd = cpu_simd()
    if simd:
        text += f"; CPU: {simd}"
        if simd == "AVX-512" and arch.lower() in NARROW_OPENBLAS_CORES:
            text += " -- the BLAS kernels use less than the CPU has" + (
                "; `env -u OPENBLAS_CORETYPE` lets OpenBLAS choose" if pin else "")
    return text


def cpu_simd():
    """The widest x86 vector extension in /proc/cpuinfo ("AVX-512", "AVX2", "SSE4.2"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return None


# --- the two sides ----------------------------------------------------------------
def _minstf_side(config, x, modes, kernels="fast"):
    """{mode: {stage: callable}} for minstf (NumPy) on one kernel layer ("fast" or "reference")."""
    from ..slices import run_slices, slice_of
    from ..synthetic import recipe_weights
    from .crosscheck import minstf_model

    model = minstf_model(recipe_weights(config), config, kernels=kernels)
    p, c, xp, k = model.params, config, model.xp, model.k
    g_a, g_s, h_a = model.t.g_a, model.t.g_s, model.t.h_a  # STF's or WACNN's
    x_nhwc = model._input(x)
    y = g_a(x_nhwc, p, c, kernels=k)
    z = h_a(y, p, c, k)
    stages = {}
    for mode in modes:
        portable = mode == "portable"
        dtype = xp.float64 if portable else xp.float32
        z_hat = (xp.rint(z - model.medians) + model.medians).astype(dtype)
        means, scales = model._hyper(z_hat, portable)
        compressed = model.compress(x, portable=portable)
        pe = model.entropy_params(portable)
        y_d = y.astype(dtype)
        y_hat = run_slices(means, scales, pe, c, lambda s, mu, scale: xp.rint(slice_of(y_d, s, c) - mu), kernels=k)
        y_hat = y_hat.astype(xp.float32)
        stages[mode] = {
            "g_a": lambda: g_a(x_nhwc, p, c, kernels=k),
            "h_a": lambda: h_a(y, p, c, k),
            "hyper": lambda z_hat=z_hat, portable=portable: model._hyper(z_hat, portable),
            "slices": lambda means=means, scales=scales, pe=pe, y_d=y_d: run_slices(
                means, scales, pe, c, lambda s, mu, scale: xp.rint(slice_of(y_d, s, c) - mu), kernels=k),
            "g_s": lambda y_hat=y_hat: g_s(y_hat, p, c, kernels=k),
            "compress": lambda portable=portable: model.compress(x, portable=portable),
            "decompress": lambda compressed=compressed: model.decompress(compressed),
        }
    return stages


def _torch_side(config, x, modes, threads):
    """{mode: {stage: callable}} for the torch mirror, with minstf's entropy coder."""
    import copy

    import torch

    from ..coding import CdfTable, SymbolDecoder, SymbolEncoder
    from ..entropy_models import eb_tables, gc_tables
    from ..config import WACNNConfig
    from ..mirror.stf_torch import STFTorch, build_indexes
    from ..mirror.wacnn_torch import WACNNTorch
    from ..synthetic import recipe_weights

    torch.set_num_threads(threads)
    params = recipe_weights(config)
    model = (WACNNTorch if isinstance(config, WACNNConfig) else STFTorch)(config).load_params(params).eval()
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    t = {**eb_tables(eb), **gc_tables()}
    del params
    eb_table = CdfTable(t["entropy_bottleneck._quantized_cdf"], t["entropy_bottleneck._cdf_length"],
                        t["entropy_bottleneck._offset"])
    gc_table = CdfTable(t["gaussian_conditional._quantized_cdf"], t["gaussian_conditional._cdf_length"],
                        t["gaussian_conditional._offset"])
    c = config
    xt = torch.from_numpy(x)
    med = model.entropy_bottleneck.medians().detach().view(1, -1, 1, 1)  # (1, N_z, 1, 1)
    flat = lambda a: a.contiguous().view(-1).numpy()  # noqa: E731 — NCHW C-order, minstf's symbol order

    def entropy_nets(dtype):
        if dtype == torch.float32:
            return model.h_mean_s, model.h_scale_s, model.cc_mean_transforms, model.cc_scale_transforms, \
                model.lrp_transforms
        return tuple(copy.deepcopy(m).to(dtype) for m in (
            model.h_mean_s, model.h_scale_s, model.cc_mean_transforms, model.cc_scale_transforms,
            model.lrp_transforms))

    def slice_loop(nets, means, scales, quantize):
        _, _, cc_mean, cc_scale, lrp_t = nets
        H, W = means.shape[2:]
        slices = []
        for s in range(c.num_slices):
            support = slices[:c.max_support_slices]
            mean_support = torch.cat([means] + support, 1)
            mu = cc_mean[s](mean_support)[:, :, :H, :W]
            scale = cc_scale[s](torch.cat([scales] + support, 1))[:, :, :H, :W]
            y_hat_s = quantize(s, mu, scale).to(mu.dtype) + mu
            lrp = lrp_t[s](torch.cat([mean_support, y_hat_s], 1))
            slices.append(y_hat_s + 0.5 * torch.tanh(lrp))
        return torch.cat(slices, 1)

    def compress(nets, dtype):
        y = model.g_a(xt)
        z = model.h_a(y)
        z_symbols = torch.round(z - med).to(torch.int32)
        z_enc = SymbolEncoder()
        z_enc.add(flat(z_symbols), _z_rows(z.shape), eb_table)
        z_hat = z_symbols.to(dtype) + med.to(dtype)
        means, scales = nets[0](z_hat), nets[1](z_hat)
        y_enc, Cs = SymbolEncoder(), c.slice_channels
        y64 = y.to(dtype)

        def quantize(s, mu, scale):
            symbols = torch.round(y64[:, s * Cs:(s + 1) * Cs] - mu).to(torch.int32)
            y_enc.add(flat(symbols), flat(build_indexes(scale)), gc_table)
            return symbols

        slice_loop(nets, means, scales, quantize)
        return z_enc.finish(), y_enc.finish(), tuple(y.shape)

    def decompress(nets, dtype, strings):
        z_string, y_string, (B, M, H4, W4) = strings
        z_shape = (1, c.N_z, H4 // 4, W4 // 4)
        z_symbols = torch.from_numpy(SymbolDecoder(z_string).read(_z_rows(z_shape), eb_table)).view(z_shape)
        z_hat = z_symbols.to(dtype) + med.to(dtype)
        means, scales = nets[0](z_hat), nets[1](z_hat)
        dec = SymbolDecoder(y_string)

        def dequantize(s, mu, scale):
            return torch.from_numpy(dec.read(flat(build_indexes(scale)), gc_table)).view(mu.shape)

        y_hat = slice_loop(nets, means, scales, dequantize)
        return model.g_s(y_hat.float()).clamp(0, 1)

    stages = {}
    with torch.no_grad():
        y = model.g_a(xt)
        z = model.h_a(y)
        for mode in modes:
            dtype = torch.float64 if mode == "portable" else torch.float32
            nets = entropy_nets(dtype)
            z_hat = (torch.round(z - med) + med).to(dtype)
            means, scales = nets[0](z_hat), nets[1](z_hat)
            y_d, Cs = y.to(dtype), c.slice_channels
            strings = compress(nets, dtype)
            y_hat = slice_loop(nets, means, scales,
                               lambda s, mu, scale, y_d=y_d: torch.round(y_d[:, s * Cs:(s + 1) * Cs] - mu)).float()
            stages[mode] = {
                "g_a": lambda: model.g_a(xt),
                "h_a": lambda: model.h_a(y),
                "hyper": lambda nets=nets, z_hat=z_hat: (nets[0](z_hat), nets[1](z_hat)),
                "slices": lambda nets=nets, means=means, scales=scales, y_d=y_d: slice_loop(
                    nets, means, scales, lambda s, mu, scale: torch.round(y_d[:, s * Cs:(s + 1) * Cs] - mu)),
                "g_s": lambda y_hat=y_hat: model.g_s(y_hat),
                "compress": lambda nets=nets, dtype=dtype: compress(nets, dtype),
                "decompress": lambda nets=nets, dtype=dtype, strings=strings: decompress(nets, dtype, strings),
            }
    return stages


def _z_rows(shape):
    B, C, h, w = shape
    return np.broadcast_to(np.arange(C, dtype=np.int32)[None, :, None, None], (B, C, h, w)).reshape(-1)


class _Side:
    """One side's stages, set up and warmed up in this (worker) process."""

    def __init__(self, side, config_dict, size, modes, threads):
        config = _config_of(config_dict)
        x, image = bench_image(tuple(size))
        self.clock = CodingClock()
        t0 = time.perf_counter()
        if side == "torch":
            import torch
            torch.set_grad_enabled(False)
            self.table = _torch_side(config, x, modes, threads)
            self.info = {"threads": torch.get_num_threads(), "threads_how": "torch.set_num_threads",
                         "version": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        else:
            from ..kernels import threads as host
            self.table = _minstf_side(config, x, modes, kernels="reference" if side == "reference" else "fast")
            n, how = blas_threads()
            self.info = {"threads": n, "threads_how": how, "version": np.__version__,
                         "host_threads": host.num_threads(), "blocks_threaded": host.num_threads() > 1,
                         "blas_kernels": blas_kernels()}
        if side == "numpy":  # the arithmetic and this machine's BLAS rates, measured in this process
            from .flops import gemm_rate, stage_flops
            self.info.update(flops=stage_flops(config, x))
        for mode in modes:  # warm-up, excluded: one compress and one decompress per mode
            self.table[mode]["compress"]()
            self.table[mode]["decompress"]()
        self.info.update(image=image, setup_s=time.perf_counter() - t0, memory_method=PeakMemory.METHOD)

    def run(self, mode, stage):
        """{seconds, cpu_s, coding_s, peak_mb} of one run of a stage (cpu_s: CPU time of all threads);
        the pseudo-stage "bound gemm": this process's sgemm and dgemm GFLOP/s."""
        if stage == "gemm":
            from .flops import gemm_rate
            return {"sgemm_gflops": gemm_rate(np.float32), "dgemm_gflops": gemm_rate(np.float64)}
        self.clock.seconds = 0.0
        with PeakMemory() as mem:
            t, cpu = time.perf_counter(), time.process_time()
            out = self.table[mode][stage]()
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        del out
        return {"seconds": seconds, "cpu_s": cpu, "coding_s": self.clock.seconds, "peak_mb": mem.peak_mb}


def _serve(job):
    """Worker main loop: set up, say ready, then run `<mode> <stage>` lines from stdin until EOF."""
    side = _Side(job["side"], job["config"], job["size"], job["modes"], job["threads"])
    print(json.dumps(side.info), flush=True)
    for line in sys.stdin:
        mode, stage = line.split()
        print(json.dumps(side.run(mode, stage)), flush=True)


class _Worker:
    """A side in a subprocess, driven one stage at a time."""

    def __init__(self, side, job, env):
        """Start the worker; it sets up (model, inputs, warm-up) while the caller goes on: see `ready`."""
        job = json.dumps({"side": side, **job})
        self.proc = subprocess.Popen([sys.executable, "-m", "minstf.tooling.bench", "--worker", job], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.side = side

    def ready(self):
        """Wait for the end of the set-up; its facts (threads, versions, image) -> self.info."""
        self.info = self._reply(self.side)
        return self

    def _reply(self, side):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker for {side} failed (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, mode, stage):
        try:
            self.proc.stdin.write(f"{mode} {stage}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"benchmark worker for {self.side} died (exit {self.proc.wait()})") from None
        return self._reply(self.side)

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


# --- driver ------------------------------------------------------------------------------
def run_benchmark(config=None, size=DEFAULT_SIZE, repeat=3, stages=STAGES, modes=MODES, torch=False,
                  threads=None, out=sys.stdout, reference=False):
    """Benchmark minstf's fast kernels (and its reference kernels when `reference`, the torch
    mirror when `torch`); print a table to `out`, return the figures.

    Both sides are set up in their own processes first; then the stages run round
    robin, each stage on one side and then on the other, so that a change in the
    machine's load hits both alike. threads: BLAS threads for both sides (sets
    OPENBLAS/OMP/MKL_NUM_THREADS and MINSTF_NUM_THREADS in the workers); default:
    NumPy's own setting, and torch uses the same number.
    Returns {"numpy": {...figures}, "reference": {...} or None, "torch": {...} or None,
    "load_before"/"load_after", ...}.
    """
    from ..config import STFConfig

    config = config or STFConfig()
    unknown = set(stages) - set(STAGES) | set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown stages/modes {sorted(unknown)}; stages: {STAGES}, modes: {MODES}")
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP threads sleep instead of spinning when idle
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MINSTF_NUM_THREADS"):
            env[var] = str(threads)
    job = {"config": _dict_of(config), "size": list(size), "modes": list(modes)}
    workers = {"numpy": _Worker("numpy", {**job, "threads": None}, env)}
    if reference:
        workers["reference"] = _Worker("reference", {**job, "threads": None}, env)
    if torch:  # set up at the same time as the numpy side; the timed runs never overlap
        workers["torch"] = _Worker("torch", {**job, "threads": threads or blas_threads()[0]}, env)
    for worker in workers.values():
        worker.ready()
    load_before = os.getloadavg()
    runs = [(mode, stage) for mode in modes for stage in STAGES
            if stage in stages and (mode == "float32" or stage in PORTABLE_STAGES)]
    samples = {(side, mode, stage): [] for side in workers for mode, stage in runs}
    gemm = []  # the BLAS bound, measured on the minstf side each round while the other sides are idle
    try:
        for _ in range(repeat):
            gemm.append(workers["numpy"].run("bound", "gemm"))
            for mode, stage in runs:
                for side, worker in workers.items():
                    samples[side, mode, stage].append(worker.run(mode, stage))
    finally:
        for worker in workers.values():
            worker.close()
    result = {"torch": None, "reference": None}
    for side, worker in workers.items():
        figures = {mode: {} for mode in modes}
        for mode, stage in runs:
            s = samples[side, mode, stage]
            mb = [r["peak_mb"] for r in s]
            figures[mode][stage] = {"seconds": [r["seconds"] for r in s],
                                    "median_s": float(np.median([r["seconds"] for r in s])),
                                    "min_s": min(r["seconds"] for r in s),
                                    "cpu_s": float(np.median([r["cpu_s"] for r in s])),
                                    "coding_s": float(np.median([r["coding_s"] for r in s])),
                                    "peak_mb": None if None in mb else max(mb)}
        result[side] = {**worker.info, "figures": figures}
    result["numpy"].update({key: max(g[key] for g in gemm) for key in ("sgemm_gflops", "dgemm_gflops")})
    result.update(load_before=load_before, load_after=os.getloadavg(), repeat=repeat, size=list(size),
                  config=_dict_of(config))
    print(format_table(result), file=out)
    return result


def format_table(result):
    np_, ref, th = result["numpy"], result.get("reference"), result["torch"]
    lines = [f"image {np_['image']}, config {_config_name(result['config'])}, median of {result['repeat']} runs "
             f"after one warm-up compress+decompress, sides alternating stage by stage",
             f"load average {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} after "
             f"(1-min; {os.cpu_count()} CPUs)",
             f"minstf: NumPy {np_['version']}, BLAS threads {np_['threads']} ({np_['threads_how']}), "
             f"{np_['host_threads']} host threads, blocks of a layer on them: "
             f"{'yes (BLAS held to 1 thread by threadpoolctl)' if np_['blocks_threaded'] else 'no'}",
             f"BLAS: {np_.get('blas_kernels', 'unknown')}"]
    bound = _bound_seconds(np_)
    if bound:
        lines.append(f"bound: sgemm {np_['sgemm_gflops']:.0f} GFLOP/s, dgemm {np_['dgemm_gflops']:.0f} GFLOP/s "
                     f"(2048x2048 products, minstf's BLAS threads, best round); GFLOP = the stage's matrix products "
                     f"(tooling/flops.py); bound s = GFLOP at that rate; of bound = bound s / fast s")
    if ref:
        lines.append("reference: minstf's reference kernels (minstf/reference/), same model and stages; "
                     "ref x = reference / fast")
    if th:
        lines.append(f"torch:  {th['version']}, {th['threads']} threads ({th['threads_how']}), "
                     f"CPU capability {th.get('cpu_capability', '?')}, eval, no_grad")
    lines.append(f"memory: {np_['memory_method']}; max over runs")
    lines.append("cpu s: CPU time of the process (all threads; spinning BLAS/OpenMP threads count too)")
    if th:
        lines.append("ratios fast/torch: time x of the medians, min x of the fastest runs (the least disturbed)")
    head = f"{'mode':<9}{'stage':<17}{'fast s':>9}{'cpu s':>7}{'MB':>6}"
    if bound:
        head += f"{'GFLOP':>7}{'bound s':>8}{'of bound':>9}"
    if ref:
        head += f"{'ref s':>9}{'MB':>6}{'ref x':>7}"
    if th:
        head += f"{'torch s':>9}{'cpu s':>7}{'MB':>6}{'time x':>8}{'min x':>7}{'cpu x':>7}{'mem x':>7}"
    lines += ["", head, "-" * len(head)]
    for mode, stages in np_["figures"].items():
        for stage, f in stages.items():
            r = ref["figures"][mode][stage] if ref else {}
            g = th["figures"][mode][stage] if th else {}
            rows = [(stage, f["median_s"], f["min_s"], f["cpu_s"], f["peak_mb"], r.get("median_s"), r.get("peak_mb"),
                     g.get("median_s"), g.get("min_s"), g.get("cpu_s"), g.get("peak_mb"))]
            if stage in ("compress", "decompress"):
                rows += [("  network", f["median_s"] - f["coding_s"], None, None, None,
                          r and r["median_s"] - r["coding_s"], None,
                          g and g["median_s"] - g["coding_s"], None, None, None),
                         ("  entropy coding", f["coding_s"], None, None, None, r.get("coding_s"), None,
                          g.get("coding_s"), None, None, None)]
            for name, s, smin, cpu, mb, rs, rmb, ts, tmin, tcpu, tmb in rows:
                line = f"{mode:<9}{name:<17}{s:>9.3f}{_num(cpu, 7, 2)}{_num(mb, 6, 0)}"
                if bound:
                    b = bound[mode].get(stage) if name == stage else None
                    gflop = np_["flops"][stage] / 1e9 if b is not None else None
                    line += f"{_num(gflop, 7, 1)}{_num(b, 8, 3)}" + (f"{b / s:>9.0%}" if b else " " * 9)
                if ref:
                    line += f"{rs:>9.3f}{_num(rmb, 6, 0)}{_ratio(rs, s)}"
                if th:
                    line += (f"{ts:>9.3f}{_num(tcpu, 7, 2)}{_num(tmb, 6, 0)}{s / ts:>8.2f}"
                             f"{_ratio(smin, tmin)}{_ratio(cpu, tcpu)}{_ratio(mb, tmb)}")
                lines.append(line)
    return "\n".join(lines)


def _bound_seconds(info):
    """{mode: {stage: seconds at BLAS speed}} from the minstf worker's flops and gemm rates, or None."""
    if "flops" not in info:
        return None
    f, s, d = info["flops"], info["sgemm_gflops"] * 1e9, info["dgemm_gflops"] * 1e9
    entropy = f["hyper"] + f["slices"]  # float64 in portable mode
    return {"float32": {stage: n / s for stage, n in f.items()},
            "portable": {"hyper": f["hyper"] / d, "slices": f["slices"] / d,
                         "compress": (f["g_a"] + f["h_a"]) / s + entropy / d,
                         "decompress": f["g_s"] / s + entropy / d}}


def _num(v, width, digits):
    return " " * width if v is None else f"{v:>{width}.{digits}f}"


def _ratio(a, b):
    return " " * 7 if a is None or b is None or b <= 0 else f"{a / b:>7.2f}"


def _dict_of(config):
    """A configuration as JSON for the workers: its model id (stf, cnn) and its fields."""
    from ..weights import MODELS, model_of
    return {"model": next(k for k, m in MODELS.items() if m is model_of(config)), **config.to_dict()}


def _config_of(d):
    from ..weights import MODELS
    d = dict(d)
    return MODELS[d.pop("model", "stf")].config_class.from_dict(d)


def _config_name(d):
    config = _config_of(d)
    name = "WACNN" if d.get("model") == "cnn" else "STF"
    return f"{name} full (upstream)" if config == type(config)() else f"{name} custom {config.to_dict()}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minstf.tooling.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", action="store_true", help="also run the torch mirror and print ratios")
    parser.add_argument("--reference", action="store_true", help="also run minstf's reference kernels")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per stage (after a warm-up)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--modes", default=",".join(MODES), help="float32,portable or one of them")
    parser.add_argument("--threads", type=int, help="BLAS threads for both sides (default: NumPy's)")
    parser.add_argument("--size", default="%dx%d" % DEFAULT_SIZE, help="image WxH, multiples of 64")
    parser.add_argument("--model", choices=["stf", "cnn"], default="stf",
                        help="STF or WACNN (cnn), the full upstream configuration with recipe weights")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _serve(json.loads(args.worker))
    size = tuple(int(v) for v in args.size.lower().split("x"))
    from ..config import STFConfig, WACNNConfig
    result = run_benchmark(config=WACNNConfig() if args.model == "cnn" else STFConfig(), size=size, repeat=args.repeat, stages=args.stages.split(","),
                           modes=args.modes.split(","), torch=args.torch, threads=args.threads,
                           reference=args.reference)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
