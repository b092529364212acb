"""The .mstf file format, version 1: a small checked header, then the two rANS payloads.

The payloads are the z string and the y string of all slices, as minstf's
entropy coder (coding.py, constriction's ANS) writes them, raw and unframed.
Everything needed to decode them, and to
notice when decoding went wrong, is in the header. All integers are little-endian
(struct); `n` is the length of the model id, `S` the number of y slices.

    offset        size  type      field
    0             4     bytes     magic b"MSTF"
    4             1     u8        format version (1)
    5             1     u8        flags: bit 0 = portable mode (entropy parameters in
                                  float64); bits 1..7 must be 0
    6             1     u8        n, length of the model id (1..16)
    7             n     ASCII     model id, printable ASCII (e.g. "stf")
    7+n           16    bytes     weights fingerprint: first 16 bytes of the weight
                                  file's SHA-256
    23+n          4     u32       original image height h (1..MAX_SIDE)
    27+n          4     u32       original image width w (1..MAX_SIDE; h*w <= MAX_PIXELS)
    31+n          8     4 x u16   padding left, top, right, bottom; must equal
                                  image.eval_padding(h, w, multiple)
    39+n          2     u16       S, number of y slices (1..64)
    41+n          4     u32       z payload length in bytes
    45+n          4     u32       y payload length in bytes
    49+n          4     u32       CRC32 of the decoded z symbols (`coding.symbols_crc`)
    53+n          4*S   S x u32   CRC32 of the decoded symbols of y slice 0, 1, ..., S-1
    53+n+4S       4     u32       CRC32 of the payload bytes (z payload, then y payload)
    57+n+4S       4     u32       CRC32 of the header bytes [0, 57+n+4S)
    61+n+4S       -     bytes     z payload, then y payload; the file ends exactly there

`unpack` (bytes) and `read` (a file or pipe) check, in this order and before anything
large is allocated, read or decoded: magic, version, the header's own length, header
CRC, flags, model id, image size limits, padding, payload lengths against the bytes
actually present, payload CRC. `read` takes only the header, then exactly the declared
payload and one byte more: trailing data is refused without reading it.
Every failure is a `CorruptFile` with a one-line message. So a damaged file is
reported as damaged, and the symbol CRCs, checked by the decoder
(`coding.check_symbols`), catch what is left: a decoder whose entropy parameters drifted
from the encoder's (other machine, other backend) stops with `DecoderMismatch`
instead of returning a wrong image. The weights fingerprint is checked with `check_weights`.

Size claims (`check_payload_claim`, called by codec.read_header where the model is known): a
header whose image size asks for more symbols than its payload can carry is refused before any
work (a forged size with recomputed CRCs once cost 70 s and 3.6 GB before it failed). The bound:

- a symbol coded with CDF row r has probability <= top(r) = the row's largest frequency / 2**16,
  so it carries at least -log2 top(r) bits; every row gives its >= 2 positions (the escape
  included) a frequency >= 1 (coding.CdfTable checks it), so that is >= MIN_SYMBOL_BITS =
  -log2(1 - 2**-16) = 2.2e-5 bits for any row. z symbols use row = channel (known from the
  header's size), y symbols a row chosen by the decoder, so y counts the least over all rows;
  escapes only add symbols (the 4-bit chunks);
- range ANS spends close to that: in the coder's state range [2**32, 2**64) a symbol of
  frequency f multiplies the state by 2**16/f within a factor 1 +- 2**-16, which costs at most
  about a bit per 32-bit word over a word's worth of symbols (BOUND_SHARE = 7/8 allows four
  times that), and the final state, flushed at the end, is < STATE_BITS = 64 bits;
- but that is not a theorem about constriction: its AnsCoder starts at state 0, where a symbol
  at position 0 of its row (CDF start 0) leaves the state unchanged, so a run of such symbols
  costs nothing (1,000,000 of them at frequency 2**16 - 1 encode to 0 words;
  tests/test_bitstream.py). So the encoder checks the same bound (codec.encode_image) and
  refuses to write a file that breaks it (only an image whose latents sit at the lowest value
  of their rows could), which makes the decoder's refusal sound for every file minstf writes.

The bound stops a small payload claiming a large image; a forger who supplies as many bytes as
a flat image of the claimed size takes gets past it (and gets a wrong image or a CRC error).
"""
import math
import os
import stat
import struct
import zlib
from dataclasses import dataclass

from .errors import CorruptFile, WrongWeights
from .image import MAX_PIXELS, MAX_SIDE, eval_padding

MAGIC = b"MSTF"
FORMAT_VERSION = 1
FLAG_PORTABLE = 0x01
KNOWN_FLAGS = FLAG_PORTABLE
MAX_MODEL_ID = 16
FINGERPRINT_BYTES = 16

_PREFIX = struct.Struct("<4sBBB")            # magic, version, flags, n        (7 bytes)
_FIXED = struct.Struct("<16sII4HHII")        # fingerprint .. y length       (42 bytes)
_U32 = struct.Struct("<I")
MIN_SYMBOL_BITS = -math.log2(1 - 2.0 ** -16)   # the least information of one coded symbol
BOUND_SHARE = 7 / 8                            # of it, what range ANS surely spends
STATE_BITS = 64                                # the coder's final state, flushed at the end


@dataclass(frozen=True)
class Limits:
    """What `unpack` accepts; anything outside is a damaged or hostile file."""
    max_side: int = MAX_SIDE        # pixels per side of the original image
    max_pixels: int = MAX_PIXELS    # h * w
    max_slices: int = 64


@dataclass(frozen=True)
class Header:
    model_id: str           # e.g. "stf"
    fingerprint: bytes      # 16 bytes: first half of the weight file's SHA-256
    height: int             # original (unpadded) image size
    width: int
    padding: tuple          # (left, top, right, bottom), eval_padding(height, width)
    z_crc: int              # symbols_crc of the z symbols
    y_crcs: tuple           # symbols_crc of each y slice's symbols
    portable: bool = False  # flags bit 0
    version: int = FORMAT_VERSION

    @property
    def num_slices(self):
        return len(self.y_crcs)

    @property
    def padded_size(self):
        """(Hp, Wp): the size the codec actually saw."""
        left, top, right, bottom = self.padding
        return self.height + top + bottom, self.width + left + right


def fingerprint_of(sha256):
    """The 16-byte fingerprint from a SHA-256 given as 64 hex characters or 32 bytes."""
    digest = bytes.fromhex(sha256) if isinstance(sha256, str) else bytes(sha256)
    if len(digest) != 32:
        raise ValueError(f"expected a SHA-256 (32 bytes), got {len(digest)} bytes")
    return digest[:FINGERPRINT_BYTES]


def _short(fingerprint):
    return fingerprint[:6].hex()


# --- writing -------------------------------------------------------------------

def pack(header, z_bytes, y_bytes, multiple=64):
    """Header + payloads -> the bytes of a .mstf file. Raises ValueError for a header
    that `unpack` would refuse, so minstf never writes a file it cannot read."""
    try:
        _validate(header, Limits(), multiple)
    except CorruptFile as e:
        raise ValueError(f"refusing to write an invalid header: {e}") from None
    model_id = header.model_id.encode("ascii")
    head = _PREFIX.pack(MAGIC, header.version, FLAG_PORTABLE if header.portable else 0, len(model_id))
    head += model_id
    head += _FIXED.pack(bytes(header.fingerprint), header.height, header.width, *header.padding,
                        header.num_slices, len(z_bytes), len(y_bytes))
    head += struct.pack(f"<{1 + header.num_slices}I", header.z_crc, *header.y_crcs)
    head += _U32.pack(zlib.crc32(bytes(y_bytes), zlib.crc32(bytes(z_bytes))))  # payload CRC
    head += _U32.pack(zlib.crc32(head))
    return head + bytes(z_bytes) + bytes(y_bytes)


# --- reading -------------------------------------------------------------------

def unpack(data, limits=Limits(), multiple=64):
    """The bytes of a .mstf file -> (Header, z_bytes, y_bytes), everything validated."""
    data = bytes(data)
    header, header_len, z_len, y_len, payload_crc = _parse_header(_Prefix(data), limits, multiple)
    _check_length(len(data), header_len + z_len + y_len)
    if zlib.crc32(data[header_len:]) != payload_crc:
        raise CorruptFile("payload checksum mismatch (the file is damaged)")
    return header, data[header_len:header_len + z_len], data[header_len + z_len:]


def read(stream, limits=Limits(), multiple=64):
    """A .mstf file from a binary stream (file or pipe) -> (Header, z_bytes, y_bytes).

    The header is read and checked first; then exactly the payload it declares, and at
    most one byte more (to notice trailing data). A regular file's size is compared with
    the declared length before any of the payload is read, so a huge or sparse file is
    refused without reading it; a pipe is read in chunks, never with one allocation of
    the declared size.
    """
    return unpack(read_bytes(stream, limits, multiple), limits, multiple)


def read_bytes(stream, limits=Limits(), multiple=64):
    """The bytes of a .mstf file read from `stream` as `read` does (header and lengths
    checked on the way; the payload CRC is left to `unpack`)."""
    size = _regular_file_size(stream)
    prefix = _Prefix(b"", stream)
    _, header_len, z_len, y_len, _ = _parse_header(prefix, limits, multiple)
    total = header_len + z_len + y_len
    if size is not None:
        _check_length(size, total)
    rest = _read_upto(stream, total - header_len + 1)
    _check_length(header_len + len(rest), total, exact=size is not None)
    return bytes(prefix.data) + rest


class _Prefix:
    """The first bytes of a file: all of them (bytes), or read from a stream as far as asked."""

    def __init__(self, data, stream=None):
        self.data, self.stream = data, stream

    def peek(self, size):
        """Up to `size` bytes (fewer at the end of the file)."""
        if len(self.data) < size and self.stream is not None:
            self.data += _read_upto(self.stream, size - len(self.data))
        return self.data[:size]

    def need(self, size):
        if len(self.peek(size)) < size:
            raise CorruptFile(f"truncated: expected at least {size} bytes, got {len(self.data)}")
        return self.data


def _parse_header(prefix, limits, multiple):
    """Check the header of the file whose first bytes `prefix` gives, field by field in the
    order of the table -> (Header, header length, z length, y length, payload CRC)."""
    start = prefix.peek(len(MAGIC))
    if not start:
        raise CorruptFile("empty file (not a .mstf file)")
    if start != MAGIC:
        if MAGIC.startswith(start):
            raise CorruptFile(f"truncated: expected at least {_PREFIX.size} bytes, got {len(start)}")
        raise CorruptFile("not a .mstf file (bad magic)")
    _, version, flags, n = _PREFIX.unpack_from(prefix.need(_PREFIX.size), 0)
    if version > FORMAT_VERSION:
        raise CorruptFile(f"made by a newer minstf (format version {version}; this one reads {FORMAT_VERSION})")
    if version != FORMAT_VERSION:
        raise CorruptFile(f"unknown format version {version}")
    if not 1 <= n <= MAX_MODEL_ID:
        raise CorruptFile(f"bad model id length {n} (1..{MAX_MODEL_ID})")

    fixed_at = _PREFIX.size + n
    (fingerprint, height, width, left, top, right, bottom,
     num_slices, z_len, y_len) = _FIXED.unpack_from(prefix.need(fixed_at + _FIXED.size), fixed_at)
    if not 1 <= num_slices <= limits.max_slices:       # bounds the header length below
        raise CorruptFile(f"bad number of y slices {num_slices} (1..{limits.max_slices})")
    crcs_at = fixed_at + _FIXED.size
    payload_crc_at = crcs_at + 4 * (1 + num_slices)
    crc_at = payload_crc_at + _U32.size
    header_len = crc_at + _U32.size
    data = bytes(prefix.need(header_len)[:header_len])
    (stored,) = _U32.unpack_from(data, crc_at)
    if zlib.crc32(data[:crc_at]) != stored:
        raise CorruptFile("header checksum mismatch (the file is damaged)")

    if flags & ~KNOWN_FLAGS:
        raise CorruptFile(f"unsupported flags 0x{flags:02x}")
    try:
        model_id = data[_PREFIX.size:fixed_at].decode("ascii")
    except UnicodeDecodeError:
        model_id = "\x00"                                  # fails the printable check below
    z_crc, *y_crcs = struct.unpack_from(f"<{1 + num_slices}I", data, crcs_at)
    header = Header(model_id=model_id, fingerprint=fingerprint, height=height, width=width,
                    padding=(left, top, right, bottom), z_crc=z_crc, y_crcs=tuple(y_crcs),
                    portable=bool(flags & FLAG_PORTABLE), version=version)
    _validate(header, limits, multiple)
    (payload_crc,) = _U32.unpack_from(data, payload_crc_at)
    return header, header_len, z_len, y_len, payload_crc


def _check_length(got, total, exact=True):
    """`got`: the file's length (exact), or the bytes read when reading stopped one past `total`."""
    if got < total:
        raise CorruptFile(f"truncated: expected {total} bytes, got {got}")
    if got > total:
        raise CorruptFile(f"trailing garbage: expected {total} bytes, got "
                          + (f"{got}" if exact else "more"))


CHUNK = 1 << 20


def _read_upto(stream, size):
    """Up to `size` bytes of `stream` (fewer only at its end), read in chunks of at most CHUNK."""
    parts, left = [], size
    while left > 0:
        part = stream.read(min(left, CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _regular_file_size(stream):
    """The bytes from `stream`'s position to the end if it is a regular file, else None."""
    try:
        st = os.fstat(stream.fileno())
        return st.st_size - stream.tell() if stat.S_ISREG(st.st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def _validate(header, limits, multiple):
    """The header's own consistency (shared by pack and unpack)."""
    model_id = header.model_id
    if not (1 <= len(model_id) <= MAX_MODEL_ID and model_id.isascii() and model_id.isprintable()
            and " " not in model_id):
        raise CorruptFile(f"bad model id {model_id!r} (1..{MAX_MODEL_ID} printable ASCII characters)")
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise CorruptFile(f"bad weights fingerprint length {len(header.fingerprint)}")
    h, w = header.height, header.width
    if not (1 <= h <= limits.max_side and 1 <= w <= limits.max_side and h * w <= limits.max_pixels):
        raise CorruptFile(f"absurd image size {h}x{w} (at most {limits.max_side} per side "
                          f"and {limits.max_pixels} pixels)")
    expected = eval_padding(h, w, multiple)
    if tuple(header.padding) != expected:
        raise CorruptFile(f"padding {tuple(header.padding)} does not match a {h}x{w} image "
                          f"(expected {expected})")
    if not 1 <= header.num_slices <= limits.max_slices:
        raise CorruptFile(f"bad number of y slices {header.num_slices} (1..{limits.max_slices})")
    if header.version != FORMAT_VERSION:
        raise CorruptFile(f"unknown format version {header.version}")


def describe(header, file_bytes, z_len, y_len, weights_note):
    """[(field, text)]: what `minstf info` prints about a file of `file_bytes` bytes."""
    h, w, payload = header.height, header.width, z_len + y_len
    Hp, Wp = header.padded_size
    return [
        ("model", header.model_id),
        ("weights", f"{header.fingerprint.hex()[:12]}… ({weights_note})"),
        ("image", f"{w}x{h}, coded as {Wp}x{Hp} (padding left, top, right, bottom: "
                  f"{', '.join(map(str, header.padding))})"),
        ("mode", "portable (entropy parameters in float64)" if header.portable
         else "float32 (fast; a decoder on another machine or backend may disagree)"),
        ("slices", str(header.num_slices)),
        ("payload", f"{payload:,} bytes (z {z_len:,}, y {y_len:,}); header {file_bytes - payload} bytes"),
        ("bpp", f"{8 * file_bytes / (h * w):.4f} (file), {8 * payload / (h * w):.4f} (payload)"),
    ]


def min_payload_bytes(bits):
    """The fewest bytes (whole 32-bit words) an entropy-coded string of symbols carrying at least
    `bits` bits of information takes (the bound of the module docstring)."""
    return 4 * max(0, math.ceil((bits * BOUND_SHARE - STATE_BITS) / 32))


def check_payload_claim(header, z_len, y_len, z_bits, y_bits):
    """Raise CorruptFile when the z or y string is too short for the information that the
    symbols of the header's image size carry at least (z_bits, y_bits: codec.least_bits)."""
    for name, length, bits in (("z", z_len, z_bits), ("y", y_len, y_bits)):
        need = min_payload_bytes(bits)
        if length < need:
            raise CorruptFile(f"a {header.width}x{header.height} image needs a {name} payload of at least "
                              f"{need:,} bytes, this one has {length:,}: the size is forged or the file is damaged")


# --- checks done while decoding ---------------------------------------------------

def check_weights(header, fingerprint):
    """Raise WrongWeights unless the file was made with the weights of `fingerprint`."""
    if bytes(fingerprint)[:FINGERPRINT_BYTES] != header.fingerprint:
        raise WrongWeights(f"the file was made with weights {_short(header.fingerprint)}…, "
                           f"but the given weights are {_short(bytes(fingerprint))}…")

