"""A/B speed of two minstf checkouts: compress and decompress, alternating, in two processes.

    git worktree add /tmp/old <commit>
    python tools/ab_speed.py /tmp/old . --repeat 5

Each checkout runs in its own worker process (PYTHONPATH = that checkout), on the same
768x512 image (a Kodak crop if ../shared is there, else synthetic) and the full upstream
configuration with the recipe weights; after one warm-up each, the workers take turns
(A compress, B compress, A decompress, B decompress, ...), so a change in the machine's
load hits both alike. Prints min and median seconds per side and the ratios B / A.
Works with any checkout that has `minstf.model.STF` and `minstf.synthetic.recipe_weights`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
import numpy as np
from minstf.config import STFConfig
from minstf.entropy_models import eb_tables, gc_tables
from minstf.model import STF
from minstf.synthetic import recipe_weights
try:
    from minstf.tooling.bench import bench_image
except ImportError:
    from minstf.bench import bench_image
c = STFConfig()
p = recipe_weights(c)
eb = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("entropy_bottleneck.")}
model = STF(c, p, {**eb_tables(eb), **gc_tables()}, fingerprint="00" * 32)
x, _ = bench_image()
portable = sys.argv[1] == "portable"
compressed = model.compress(x, portable=portable)
model.decompress(compressed)
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    if line.strip() == "compress":
        model.compress(x, portable=portable)
    else:
        model.decompress(compressed)
    print(json.dumps(time.perf_counter() - t), flush=True)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="checkout A (e.g. the old commit's worktree)")
    parser.add_argument("b", help="checkout B")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mode", choices=("float32", "portable"), default="float32")
    args = parser.parse_args(argv)
    workers = {}
    for side, root in (("A", args.a), ("B", args.b)):
        env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()))
        workers[side] = subprocess.Popen([sys.executable, "-c", WORKER, args.mode], env=env, text=True,
                                         cwd=Path(root).resolve(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for w in workers.values():
        assert w.stdout.readline().strip() == "ready", "a worker failed to start"
    load = os.getloadavg()[0]
    times = {(side, op): [] for side in workers for op in ("compress", "decompress")}
    for _ in range(args.repeat):
        for op in ("compress", "decompress"):
            for side, w in workers.items():
                w.stdin.write(op + "\n")
                w.stdin.flush()
                times[side, op].append(json.loads(w.stdout.readline()))
    for w in workers.values():
        w.stdin.close()
        w.wait()
    print(f"A = {args.a}, B = {args.b}; {args.mode}, {args.repeat} runs each after a warm-up, alternating; "
          f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after (1-min, {os.cpu_count()} CPUs)")
    print(f"{'':12}{'A min':>8}{'A median':>10}{'B min':>8}{'B median':>10}{'B/A min':>9}{'B/A median':>12}")
    for op in ("compress", "decompress"):
        a, b = times["A", op], times["B", op]
        print(f"{op:12}{min(a):8.3f}{statistics.median(a):10.3f}{min(b):8.3f}{statistics.median(b):10.3f}"
              f"{min(b) / min(a):9.2f}{statistics.median(b) / statistics.median(a):12.2f}")


if __name__ == "__main__":
    main()
