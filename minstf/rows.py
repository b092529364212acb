"""Row streaming: a transform run top to bottom in bands of rows, equal to the whole-image run.

Every layer of STF and WACNN is local in the rows of its map (docs/tiling.md): a
convolution reads k//2 rows beyond each output row, a Swin block reads only the rows of
its own windows, PatchEmbed / PatchMerging read two rows per output row, PatchSplit and
pixel shuffles make two rows of one. So a transform can run on a band of rows at a time,
each layer emitting the output rows its inputs already determine and keeping the few
rows it will need again (the band's *halo*):

    image rows ──► layer 1 ──► layer 2 ──► ... ──► layer n ──► sink(rows)
                   (buffer)    (buffer)              (buffer)

A layer is described by a `RowLayer`: its function on a map of rows (the same function
as on a whole image), its row ratio (`up` / `down`), its `halo` and the grid of rows at
which its output bands may start (`align`, `offset`: whole windows of a Swin block). The
function always sees a sub-image that starts and ends where the whole image's windows,
strides and paddings fall, so each output row is computed from exactly the inputs the
whole-image run uses; bands change only the shapes of the matrix products (float32
noise) and how much memory is held at once. Nothing here knows about any model: the
layer lists come from `minstf.transforms` (STF) and `minstf.wacnn` (WACNN).
"""
from dataclasses import dataclass
from typing import Callable

from .backend import xp_of

LATENT_BAND = 64  # latent rows per band of the hyperprior and slice networks: fixed, so encoder and decoder agree


@dataclass(frozen=True)
class RowLayer:
    """One layer as a function of rows.

    fn: map (B, h, W, C) -> the layer's output on it, as if it were a whole image.
    up / down: output rows per input row = up / down (outputs of an odd input: ceil).
    halo: input rows read beyond a band on each side (a multiple of `down`).
    align, offset: output bands start at rows offset + k*align (and at 0); `up` divides align.
    """
    fn: Callable
    up: int = 1
    down: int = 1
    halo: int = 0
    align: int = 1
    offset: int = 0

    def out_rows(self, rows):
        return -(-rows * self.up // self.down)

    def needs(self, a, b, rows):
        """The input rows [a', b') that output rows [a, b) are computed from, of `rows` in all."""
        return max(a * self.down // self.up - self.halo, 0), min(-(-b * self.down // self.up) + self.halo, rows)

    def ready(self, have, rows):
        """The end of the output rows that input rows [0, have) of `rows` determine."""
        if have >= rows:
            return self.out_rows(rows)
        b = (have - self.halo) * self.up // self.down  # the last output row its halo allows
        return 0 if b < self.offset else self.offset + (b - self.offset) // self.align * self.align


class _Stream:
    """One layer's state while a map streams through it: the input rows it still needs."""

    def __init__(self, layer, rows):
        self.layer, self.rows = layer, rows
        self.buffer, self.top = None, 0  # buffer[:, 0] is input row `top`
        self.have = self.done = 0  # input rows received, output rows emitted

    def push(self, chunk):
        """Take the next input rows (B, h, W, C); return the output rows they complete, or None."""
        xp = xp_of(chunk)
        self.buffer = chunk if self.buffer is None else xp.concatenate([self.buffer, chunk], axis=1)
        self.have += chunk.shape[1]
        L = self.layer
        b = L.ready(self.have, self.rows)
        if b <= self.done:
            return None
        ia, ib = L.needs(self.done, b, self.rows)
        out = L.fn(self.buffer[:, ia - self.top:ib - self.top])  # the sub-image's output
        first = ia * L.up // L.down  # the global output row of out[:, 0]
        out = out[:, self.done - first:b - first]
        self.done = b
        keep = L.needs(b, b, self.rows)[0]  # the first input row a later band reads
        self.buffer, self.top = self.buffer[:, keep - self.top:], keep
        return out


def stream(layers, source, rows, band, sink):
    """Run `layers` over an input of `rows` rows, `band` input rows at a time.

    source(a, b) -> input rows [a, b) as a map (B, b - a, W, C);
    sink(a, out) receives output rows [a, a + len) of the last layer, in order.
    Returns the number of output rows.
    """
    streams = []
    for layer in layers:
        streams.append(_Stream(layer, rows))
        rows = layer.out_rows(rows)
    done = 0
    for a in range(0, streams[0].rows if streams else 0, band):
        chunk = source(a, min(a + band, streams[0].rows))
        for s in streams:
            chunk = s.push(chunk)
            if chunk is None:
                break
        else:
            sink(done, chunk)
            done += chunk.shape[1]
    return done


def apply(layers, x):
    """The whole-image run of a layer list: each function once on the whole map (B, H, W, C)."""
    for layer in layers:
        x = layer.fn(x)
    return x


def collect(layers, source, rows, band):
    """`stream` gathered into one array: the layers' output (B, H', W', C') for input rows [0, rows)."""
    out = []

    def sink(a, part):
        if not out:
            B, _, W, C = part.shape
            out.append(xp_of(part).empty((B, total, W, C), dtype=part.dtype))
        out[0][:, a:a + part.shape[1]] = part

    total = rows
    for layer in layers:
        total = layer.out_rows(total)
    stream(layers, source, rows, band, sink)
    return out[0]
