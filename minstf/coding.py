"""Entropy coding of integer symbols with `constriction` (the only module that imports it).

A symbol is coded with one row of an integer CDF table (entropy_models.py):

    table row r:  positions 0 .. L-3 are regular values, position L-2 is the escape,
                  where L = cdf_length[r]; value v = symbol - offset[r] is coded at position v.

    value in range      -> [position v]
    value out of range  -> [escape position] + later: [chunk count] [4-bit chunks of raw]

        raw = -2*v - 1 if v < 0, else 2*(v - (L-2))     (sign folded, >= 0)

Every int32 symbol round-trips: the escape payload is the raw value in 4-bit
chunks, least significant first, after a count of chunks (at most 9, since
|v| < 2**32 needs < 2**34 raw); all payload numbers use uniform models.

The coder is constriction's AnsCoder (range ANS, 32-bit words): a STACK. The
encoder therefore only collects (symbols, model) chunks in stream order and
pushes them in reverse in `finish()`, so the decoder pops them in stream order.

Stream layout of one `add(symbols, indexes, table)`, mirrored by `read`:

    [regular positions of all elements using row r0] [... row r1] ...   (rows ascending)
    [chunk count of each escaped element]                                 (element order)
    [all 4-bit chunks of all escaped elements]                            (element order)

Grouping by row lets one constriction call code a whole group (no Python loop
per symbol); the decoder knows the indexes, so it forms the same groups.
Several adds continue one stream (STF: one y stream across its 12 slices).

Symbol order and check sums (used by model.py on both sides):

    channel_first_flat      a (B, H, W, C) map of symbols -> flat, in upstream's NCHW C order
    symbols_crc             CRC32 of symbols as int32 little-endian bytes: the file stores one for
                            z and one per y slice, so a decoder that drifted is caught
"""
import zlib

import constriction
import numpy as np

from .backend import to_host, xp_of
from .errors import CorruptFile, DecoderMismatch, WeightsError

PRECISION = 16          # the tables' frequencies sum to 2**16
CHUNK_BITS = 4          # escape payload: raw value in 4-bit chunks
MAX_CHUNKS = 9          # |symbol - offset| < 2**32, so raw < 2**34 fits in 9 chunks

_CHUNK = constriction.stream.model.Uniform(1 << CHUNK_BITS)    # counts and chunks alike
_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


class CdfTable:
    """Rows of integer CDFs, and one cached constriction model per row.

    Args:
        cdf: (rows, width) cumulative frequencies, row r valid in [:cdf_length[r]],
            from 0 up to 2**16; every symbol (incl. the escape) has frequency >= 1.
        cdf_length: (rows,) valid entries per row (= regular values + 2).
        offset: (rows,) the symbol coded at position 0 of each row.
    """

    def __init__(self, cdf, cdf_length, offset):
        self.cdf = np.asarray(to_host(cdf), dtype=np.int64)
        self.cdf_length = np.asarray(to_host(cdf_length), dtype=np.int64)
        self.offset = np.asarray(to_host(offset), dtype=np.int64)
        rows = len(self.cdf_length)
        if self.cdf.ndim != 2 or self.cdf.shape[0] != rows or self.offset.shape != (rows,):
            raise WeightsError(f"CDF table: shapes {self.cdf.shape}, {self.cdf_length.shape}, "
                               f"{self.offset.shape} do not fit together")
        if rows and (self.cdf_length.min() < 3 or self.cdf_length.max() > self.cdf.shape[1]):
            raise WeightsError("CDF table: cdf_length out of range")
        top = np.empty(rows, dtype=np.int64)  # the largest frequency of each row
        for r, n in enumerate(self.cdf_length):
            freq = np.diff(self.cdf[r, :n])
            if self.cdf[r, 0] != 0 or self.cdf[r, n - 1] != 1 << PRECISION or np.any(freq < 1):
                raise WeightsError(f"CDF table: row {r} is not a valid 16-bit CDF")
            top[r] = freq.max()
        self.max_value = self.cdf_length - 2            # (rows,) escape position per row
        self.least_bits = -np.log2(top / 2.0 ** PRECISION)  # (rows,) the fewest bits a symbol of a row carries
        self._models = {}

    @classmethod
    def from_buffers(cls, buffers, prefix):
        """From checkpoint buffers, e.g. prefix "gaussian_conditional" or "entropy_bottleneck"."""
        return cls(buffers[f"{prefix}._quantized_cdf"], buffers[f"{prefix}._cdf_length"],
                   buffers[f"{prefix}._offset"])

    def __len__(self):
        return len(self.cdf_length)

    def model(self, row):
        """constriction Categorical over positions 0 .. cdf_length[row]-2 (escape last)."""
        m = self._models.get(row)
        if m is None:
            freq = np.diff(self.cdf[row, :self.cdf_length[row]])           # exact in float64
            m = constriction.stream.model.Categorical(freq / float(1 << PRECISION), perfect=False)
            self._models[row] = m
        return m


def _flat_rows(indexes, table):
    rows = np.asarray(to_host(indexes)).reshape(-1).astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(table)):
        raise ValueError(f"indexes must lie in [0, {len(table)}), got [{rows.min()}, {rows.max()}]")
    return rows


def _groups(rows):
    """Element positions grouped by table row, rows ascending: [(row, positions), ...]."""
    order = np.argsort(rows, kind="stable")
    uniq, starts = np.unique(rows[order], return_index=True)
    return list(zip(uniq.tolist(), np.split(order, starts[1:])))


class SymbolEncoder:
    """Collects symbols (possibly over several `add` calls) into one ANS stream."""

    def __init__(self):
        self._chunks = []   # (int32 positions, constriction model), in stream (decoding) order

    def add(self, symbols, indexes, table):
        """Append int symbols coded with rows `indexes` of `table` (same shape, C order)."""
        sym = np.asarray(to_host(symbols)).reshape(-1).astype(np.int64)
        rows = _flat_rows(indexes, table)
        if sym.shape != rows.shape:
            raise ValueError(f"{sym.size} symbols but {rows.size} indexes")
        v = sym - table.offset[rows]                                   # (n,) coded value
        max_value = table.max_value[rows]
        escape = (v < 0) | (v >= max_value)
        position = np.where(escape, max_value, v).astype(np.int32)
        for row, where in _groups(rows):
            self._chunks.append((position[where], table.model(row)))

        ve, me = v[escape], max_value[escape]                         # escaped elements only
        raw = np.where(ve < 0, -2 * ve - 1, 2 * (ve - me))             # (n_esc,) >= 0
        shifts = CHUNK_BITS * np.arange(MAX_CHUNKS)
        nibbles = (raw[:, None] >> shifts) & ((1 << CHUNK_BITS) - 1)  # (n_esc, MAX_CHUNKS)
        count = ((raw[:, None] >> shifts) != 0).sum(axis=1)           # chunks needed (0 for raw 0)
        used = shifts[None, :] < CHUNK_BITS * count[:, None]
        self._chunks.append((count.astype(np.int32), _CHUNK))
        self._chunks.append((nibbles[used].astype(np.int32), _CHUNK))  # row-major: per element, LSB first

    def finish(self):
        """The stream as bytes (32-bit words, little endian)."""
        coder = constriction.stream.stack.AnsCoder()
        for positions, model in reversed(self._chunks):               # a stack: last chunk first
            if positions.size:
                coder.encode_reverse(positions, model)
        return coder.get_compressed().astype("<u4").tobytes()


class SymbolDecoder:
    """Reads symbols back from one stream, in the order and groups of the encoder's adds.

    Damaged data never hangs and never allocates more than the indexes ask for:
    it raises CorruptFile or decodes to some symbols (the file's CRC catches those).
    """

    def __init__(self, data):
        data = bytes(data)
        if len(data) % 4:
            raise CorruptFile(f"entropy-coded stream of {len(data)} bytes is not whole 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except (ValueError, RuntimeError) as e:
            raise CorruptFile(f"entropy-coded stream is damaged: {e}") from None

    def _decode(self, model, amount):
        try:
            return np.asarray(self._coder.decode(model, amount), dtype=np.int64)
        except (ValueError, RuntimeError, OverflowError) as e:
            raise CorruptFile(f"entropy-coded stream is damaged: {e}") from None

    def read(self, indexes, table):
        """Symbols for `indexes` (rows of `table`), as an int32 array of the same shape."""
        shape = np.shape(indexes)
        rows = _flat_rows(indexes, table)
        position = np.empty(rows.size, dtype=np.int64)
        for row, where in _groups(rows):
            position[where] = self._decode(table.model(row), where.size)
        offset, max_value = table.offset[rows], table.max_value[rows]
        value = position

        escape = position == max_value
        n_esc = int(escape.sum())
        if n_esc:
            count = self._decode(_CHUNK, n_esc)                        # (n_esc,)
            if count.max() > MAX_CHUNKS:
                raise CorruptFile(f"escape with {count.max()} chunks (at most {MAX_CHUNKS})")
            nibbles = self._decode(_CHUNK, int(count.sum()))
            shifts = CHUNK_BITS * np.arange(MAX_CHUNKS)
            used = shifts[None, :] < CHUNK_BITS * count[:, None]      # (n_esc, MAX_CHUNKS)
            grid = np.zeros(used.shape, dtype=np.int64)
            grid[used] = nibbles
            raw = (grid << shifts).sum(axis=1)                          # (n_esc,)
            half = raw >> 1
            value = position.copy()
            value[escape] = np.where(raw & 1, -half - 1, half + max_value[escape])
        symbols = value + offset
        if symbols.size and (symbols.min() < _INT32_MIN or symbols.max() > _INT32_MAX):
            raise CorruptFile("entropy-coded stream decodes to a symbol outside int32")
        return symbols.astype(np.int32).reshape(shape)

    def at_end(self):
        """True when every word of the stream has been consumed (a valid, fully read stream)."""
        return self._coder.is_empty()


# --- symbol order and check sums ----------------------------------------------------------
def channel_first_flat(a):
    """(B, H, W, C) -> C-order flattening of (B, C, H, W): upstream's symbol order."""
    xp = xp_of(a)
    return xp.ascontiguousarray(a.transpose(0, 3, 1, 2)).reshape(-1)  # (B, H, W, C) -> (B*C*H*W,)


def from_channel_first_flat(flat, shape):
    """Inverse of channel_first_flat for a (B, H, W, C) shape."""
    B, H, W, C = shape
    return flat.reshape(B, C, H, W).transpose(0, 2, 3, 1)  # (B*C*H*W,) -> (B, H, W, C)


def symbols_crc(symbols):
    """CRC32 of the symbols as int32 little-endian bytes, in C order (any shape, any backend)."""
    host = np.ascontiguousarray(to_host(symbols)).astype("<i4", copy=False)
    return zlib.crc32(host.tobytes())


def check_symbols(symbols, expected_crc, what):
    """Raise DecoderMismatch when decoded symbols (`what`: "z", "y slice 3") are not the encoder's."""
    crc = symbols_crc(symbols)
    if crc != expected_crc:
        raise DecoderMismatch(f"decoded {what} symbols differ from the encoder's (CRC {crc:08x}, "
                              f"expected {expected_crc:08x}): this machine or backend computed other "
                              f"entropy parameters than the encoder's (files encoded with --portable "
                              f"avoid this)")
