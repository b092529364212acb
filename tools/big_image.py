"""A large test photograph: a mosaic of the images of a folder, cut to WIDTHxHEIGHT.

    python tools/big_image.py ../shared/data/kodak 4000x3000 /tmp/big/12mp.png
    /usr/bin/time -v minstf encode /tmp/big/12mp.png -o /tmp/big/12mp.mstf

For the memory and time figures of tiling (docs/tiling.md): photographs side by side have
the statistics of photographs, which a synthetic pattern has not.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def mosaic(folder, width, height):
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(folder).glob("*.png"))]
    if not tiles:
        raise SystemExit(f"no .png images in {folder}")
    out = np.zeros((height, width, 3), np.uint8)
    i, top = 0, 0
    while top < height:
        left, row_h = 0, 0
        while left < width:
            t = tiles[i % len(tiles)]
            i += 1
            h, w = min(t.shape[0], height - top), min(t.shape[1], width - left)
            out[top:top + h, left:left + w] = t[:h, :w]
            left, row_h = left + w, max(row_h, h)
        top += row_h
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4 or "x" not in sys.argv[2]:
        raise SystemExit(__doc__)
    w, h = (int(v) for v in sys.argv[2].split("x"))
    Image.fromarray(mosaic(sys.argv[1], w, h)).save(sys.argv[3], compress_level=1)
