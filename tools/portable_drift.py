"""How far apart are the float32 and the float64 (portable) entropy-parameter paths?

For each image: run the slice loop in float32 (the encoder's symbols), then run it
again in float64 teacher-forced on those same symbols, and count the scale indexes
and symbols round(y - mu) that the float64 path would have chosen differently.
A differing index or symbol is what makes a float32 file undecodable on a machine
whose float32 arithmetic rounds differently (other BLAS, CPU or GPU).

    python tools/portable_drift.py ../shared/data/kodak/kodim0{1,2,3,4}.png --synthetic
    python tools/portable_drift.py ../shared/data/kodak/*.png                 # shipped q1..q3
"""
import argparse
import time

import numpy as np

from minstf.config import STFConfig
from minstf.entropy_models import build_indexes, eb_tables, gc_tables, quantize_symbols
from minstf.image import eval_padding, pad, read_image, to_float
from minstf.model import STF, nhwc
from minstf.slices import run_slices, slice_of
from minstf.synthetic import recipe_weights
from minstf.transforms import g_a, h_a
from minstf.zoo import QUALITIES, load_model


def drift(model, x):
    """(indexes differing, symbols differing, total) between float32 and teacher-forced float64."""
    xp, c = model.xp, model.config
    y = g_a(nhwc(x), model.params, c)
    z_hat = quantize_symbols(h_a(y, model.params, c), model.medians).astype(xp.float32) + model.medians
    decisions = {}

    def record(portable):
        def quantize(s, mu, scale):
            ours = quantize_symbols(slice_of(y, s, c).astype(mu.dtype), mu)
            decisions.setdefault(s, []).append((build_indexes(scale), ours))
            return decisions[s][0][1]  # both runs continue with the float32 path's symbols
        return quantize

    for portable in (False, True):
        dtype = xp.float64 if portable else xp.float32
        means, scales = model._hyper(z_hat.astype(dtype), portable)
        run_slices(means, scales, model.entropy_params(portable), c, record(portable))
    index_diff = sum(int((a[0] != b[0]).sum()) for a, b in decisions.values())
    symbol_diff = sum(int((a[1] != b[1]).sum()) for a, b in decisions.values())
    return index_diff, symbol_diff, int(y.size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+")
    p.add_argument("--synthetic", action="store_true", help="full-size recipe weights instead of the shipped ones")
    a = p.parse_args(argv)
    if a.synthetic:
        params = recipe_weights(STFConfig())
        eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
        models = {"synthetic full": STF(STFConfig(), params, {**eb_tables(eb), **gc_tables()})}
    else:
        models = {f"shipped q{q}": load_model(quality=q) for q in QUALITIES}
    print(f"{'weights':<16} {'image':<12} {'indexes differing':>18} {'symbols differing':>18} {'of':>9} {'s':>6}")
    for name, model in models.items():
        total = np.zeros(3, np.int64)
        for path in a.images:
            image = read_image(path)
            x = pad(to_float(image), eval_padding(*image.shape[:2], model.config.pad_multiple))
            t = time.perf_counter()
            counts = drift(model, x)
            total += counts
            print(f"{name:<16} {path.split('/')[-1]:<12} {counts[0]:>18} {counts[1]:>18} {counts[2]:>9} "
                  f"{time.perf_counter() - t:>6.1f}")
        print(f"{name:<16} {'all':<12} {total[0]:>18} {total[1]:>18} {total[2]:>9}")


if __name__ == "__main__":
    main()
