"""Peak memory and time of one encode or one decode of a large image, tiled or whole.

    python tools/tile_memory.py encode IMAGE.png OUT.mstf [--tile auto|0|ROWS] [--full] [--fast]
    python tools/tile_memory.py decode IN.mstf OUT.png [--tile ...] [--full]

One coding per process, so the figure is that coding's own peak (the process' maximum
resident set size, as `/usr/bin/time -v` reports it). Weights: the shipped default, or with
--full the full-size upstream STF with the synthetic recipe weights (the same arithmetic
as converted upstream checkpoints; its files decode only with --full). docs/tiling.md quotes
its figures.
"""
import argparse
import resource
import time



def full_model():
    from minstf.config import STFConfig
    from minstf.synthetic import recipe_weights
    from minstf.tooling.crosscheck import minstf_model
    return minstf_model(recipe_weights(STFConfig()), STFConfig())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["encode", "decode"])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--tile", default="auto")
    p.add_argument("--full", action="store_true", help="the full-size STF with recipe weights")
    p.add_argument("--fast", action="store_true", help="float32 entropy parameters (encode)")
    args = p.parse_args()
    import minstf
    from minstf.codec import decode_image, encode_image
    from minstf.image import read_image, write_png
    tile = args.tile if args.tile == "auto" else int(args.tile)
    model = full_model() if args.full else minstf.load_model()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if args.kind == "encode":
        image = read_image(args.src)
        data, stats = encode_image(model, image, portable=not args.fast, progress=None, tile=tile)
        seconds = time.perf_counter() - t
        open(args.dst, "wb").write(data)
        h, w = image.shape[:2]
        extra = f"{stats.bpp:.4f} bpp"
    else:
        data = open(args.src, "rb").read()
        image, header = decode_image(model, data, tile=tile)
        seconds = time.perf_counter() - t
        write_png(image, args.dst)
        h, w = image.shape[:2]
        extra = ""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    print(f"{args.kind} {w}x{h} ({w * h / 1e6:.1f} MP) {'full STF' if args.full else model.name} tile={args.tile}: "
          f"{seconds:.1f} s, peak RSS {peak / 1024:.0f} MB (after loading: {base / 1024:.0f} MB) {extra}")


if __name__ == "__main__":
    main()
