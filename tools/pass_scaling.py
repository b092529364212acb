"""How well one NumPy pass over a block scales from one thread to several, by block size.

    python tools/pass_scaling.py                  # multiply, add in place, exp; 8K..512K values a block
    python tools/pass_scaling.py --threads 2 --ops multiply,exp

The fast layer runs its elementwise work (GELU, LayerNorm, softmax, residual adds) as
passes of NumPy ufuncs over cache-sized blocks on all cores (`minstf/kernels/threads.py`).
A ufunc releases the GIL only inside its loop; the call around it (argument parsing, the
output, the dispatch: about 1.5 microseconds) holds it. For each ufunc and block size this
runs the same number of calls on one thread, then that number on each of N threads at once,
and prints the speed-up (N x the work in the time of one thread's work: N is perfect,
below 1 means the threads slow each other down).
"""
import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

OPS = {
    "multiply": lambda x, y: np.multiply(x, np.float32(0.5), out=y),  # a cheap pass: ~0.05 ns a value
    "add_inplace": lambda x, y: y.__iadd__(np.float32(1e-3)),
    "exp": lambda x, y: np.exp(x, out=y),  # an expensive one: ~0.4 ns a value
}


def calls(op, n, count):
    """count calls of op on blocks of n float32 values."""
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
    y = x.copy()
    for _ in range(count):
        OPS[op](x, y)


VALUES = 1 << 29  # values a measurement passes over: 30-250 ms


def scaling(op, n, threads, rounds=3):
    """(seconds on one thread, seconds on `threads` threads doing `threads` times the work, values
    one thread passed over), best of rounds."""
    count = max(50, VALUES // n)
    calls(op, n, count // 10)  # warm-up
    one = many = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            t = time.perf_counter()
            calls(op, n, count)
            one = min(one, time.perf_counter() - t)
            t = time.perf_counter()
            for f in [pool.submit(calls, op, n, count) for _ in range(threads)]:
                f.result()
            many = min(many, time.perf_counter() - t)
    return one, many, count * n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--sizes", default="8192,32768,131072,524288", help="values a block")
    args = parser.parse_args(argv)
    print(f"{'ufunc':<12}{'block':>8}{'ns a value':>12}{f'speed-up on {args.threads}':>16}")
    for op in args.ops.split(","):
        for n in map(int, args.sizes.split(",")):
            one, many, values = scaling(op, n, args.threads)
            print(f"{op:<12}{n:>8}{one / values * 1e9:>12.3f}{args.threads * one / many:>16.2f}")


if __name__ == "__main__":
    main()
