"""Write the training run's held-out validation images as PNG, to evaluate shipped weights on them.

    python tools/holdout_images.py OUT_DIR [--data ../shared/data/train] [--holdout 8] [--seed 0] [--patch-size 128]

The same images `python -m minstf.mirror.train` keeps out of training with the same
--data, --holdout, --seed and --patch-size (images smaller than a crop are skipped there
too), so `minstf eval OUT_DIR` measures weights on images they were never trained on.
"""
import argparse
from pathlib import Path

from PIL import Image

from minstf.mirror.train import DEFAULT_DATA, held_out, load_images


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--holdout", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch-size", type=int, default=128)
    args = p.parse_args(argv)
    images = load_images(args.data, args.patch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in sorted(held_out(len(images), args.holdout, args.seed)):
        path = out / f"holdout_{i:04d}.png"
        Image.fromarray(images[i]).save(path)
        print(path, images[i].shape)


if __name__ == "__main__":
    main()
