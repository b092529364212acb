"""The .mstf container: round trip, every field validated, damage always detected; reading
from a stream takes the header, then exactly the declared payload."""
import io
import os
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minstf import bitstream
from minstf.bitstream import Header, Limits, check_weights, pack, read, unpack
from minstf.coding import check_symbols, symbols_crc
from minstf.errors import CorruptFile, DecoderMismatch, WrongWeights
from minstf.image import eval_padding

FP = bytes(range(16))
Z, Y = b"zz-payload", b"the y payload, a bit longer"


def make_header(**changes):
    h, w = changes.pop("size", (121, 183))
    fields = dict(model_id="stf", fingerprint=FP, height=h, width=w, padding=eval_padding(h, w),
                  z_crc=0x01234567, y_crcs=tuple(range(100, 112)), portable=True)
    fields.update(changes)
    return Header(**fields)


HEADER = make_header()
FILE = pack(HEADER, Z, Y)
HEADER_LEN = len(FILE) - len(Z) - len(Y)


def field_offset(name, n=3):
    """Byte offsets of the docstring's table (n = model id length)."""
    return {"version": 4, "flags": 5, "n": 6, "model_id": 7, "fingerprint": 7 + n, "height": 23 + n,
            "width": 27 + n, "padding": 31 + n, "slices": 39 + n, "z_len": 41 + n, "y_len": 45 + n,
            "z_crc": 49 + n}[name]


def patched(data, offset, fmt, *values, fix_crc=True):
    """Overwrite one field and (by default) recompute the header CRC, so the field's own check
    is what fails."""
    data = bytearray(data)
    struct.pack_into(fmt, data, offset, *values)
    if fix_crc:
        crc_at = HEADER_LEN - 4
        struct.pack_into("<I", data, crc_at, zlib.crc32(bytes(data[:crc_at])))
    return bytes(data)


# --- round trip and layout ----------------------------------------------------------

def test_round_trip():
    header, z, y = unpack(FILE)
    assert (header, z, y) == (HEADER, Z, Y)
    assert header.num_slices == 12 and header.padded_size == (128, 192)


def test_round_trip_empty_payloads_and_flags_off():
    h = make_header(portable=False, y_crcs=(7,), model_id="stf-tiny_v2.0")
    assert unpack(pack(h, b"", b"")) == (h, b"", b"")


def test_layout_matches_docstring():
    n, S = 3, 12
    assert FILE[:4] == b"MSTF" and FILE[4] == 1 and FILE[5] == 1 and FILE[6] == n
    assert FILE[7:10] == b"stf" and FILE[10:26] == FP
    assert struct.unpack_from("<II4HHII", FILE, 23 + n) == (121, 183, 4, 3, 5, 4, S, len(Z), len(Y))
    assert struct.unpack_from("<I", FILE, 49 + n)[0] == 0x01234567
    assert struct.unpack_from(f"<{S}I", FILE, 53 + n) == tuple(range(100, 112))
    assert struct.unpack_from("<I", FILE, 53 + n + 4 * S)[0] == zlib.crc32(Z + Y)
    crc_at = 57 + n + 4 * S
    assert struct.unpack_from("<I", FILE, crc_at)[0] == zlib.crc32(FILE[:crc_at])
    assert HEADER_LEN == 61 + n + 4 * S and FILE[HEADER_LEN:] == Z + Y


def test_symbols_crc_is_crc32_of_int32_le():
    s = np.array([[0, -1], [5, 70000]], dtype=np.int64)
    assert symbols_crc(s) == zlib.crc32(struct.pack("<4i", 0, -1, 5, 70000))
    assert symbols_crc(s.astype(np.int32)) == symbols_crc(s)
    assert symbols_crc(np.asfortranarray(s)) == symbols_crc(s)   # C order of the values, not memory


def test_fingerprint_of():
    digest = bytes(range(32))
    assert bitstream.fingerprint_of(digest.hex()) == digest[:16] == bitstream.fingerprint_of(digest)
    with pytest.raises(ValueError):
        bitstream.fingerprint_of("abcd")


# --- decoder-side checks ------------------------------------------------------------

def test_check_weights():
    check_weights(HEADER, FP)
    other = bytes(16 * [0xAB])
    with pytest.raises(WrongWeights, match=r"000102030405.*abababababab"):
        check_weights(HEADER, other)


def test_check_symbols():
    sym = np.arange(24, dtype=np.int32).reshape(1, 2, 3, 4)
    check_symbols(sym, symbols_crc(sym), "y slice 0")
    sym2 = sym.copy()
    sym2[0, 1, 2, 3] += 1
    with pytest.raises(DecoderMismatch, match="y slice 0"):
        check_symbols(sym2, symbols_crc(sym), "y slice 0")


# --- every field validated -----------------------------------------------------------

def expect_corrupt(data, match, **kw):
    with pytest.raises(CorruptFile, match=match) as e:
        unpack(data, **kw)
    assert "\n" not in str(e.value)


def test_magic_and_empty():
    expect_corrupt(b"", "empty")
    expect_corrupt(b"\x89PNG\r\n\x1a\n" + FILE[8:], "not a .mstf file")
    expect_corrupt(b"MS", "truncated")


def test_version():
    expect_corrupt(patched(FILE, 4, "<B", 2), "newer minstf")
    expect_corrupt(patched(FILE, 4, "<B", 0), "unknown format version 0")


def test_header_crc():
    expect_corrupt(patched(FILE, field_offset("height"), "<I", 122, fix_crc=False), "checksum")


def test_flags():
    expect_corrupt(patched(FILE, 5, "<B", 0b11), "unsupported flags 0x03")
    assert unpack(patched(FILE, 5, "<B", 0))[0].portable is False


def test_model_id():
    expect_corrupt(patched(FILE, 6, "<B", 0), "model id length 0")
    expect_corrupt(patched(FILE, 6, "<B", 17), "model id length 17")
    expect_corrupt(patched(FILE, 7, "<B", 0xC3), "bad model id")
    expect_corrupt(patched(FILE, 7, "<B", ord(" ")), "bad model id")
    with pytest.raises(ValueError, match="model id"):
        pack(make_header(model_id="x" * 17), Z, Y)


@pytest.mark.parametrize("h, w", [(0, 183), (121, 0), ((1 << 15) + 1, 64), (1 << 15, 1 << 15)])
def test_absurd_sizes(h, w):
    data = patched(FILE, field_offset("height"), "<II", h, w)
    data = patched(data, field_offset("padding"), "<4H", *eval_padding(h, w))
    expect_corrupt(data, "absurd image size")


def test_size_limits_are_parameters():
    expect_corrupt(FILE, "absurd image size", limits=Limits(max_side=120))
    expect_corrupt(FILE, "absurd image size", limits=Limits(max_pixels=121 * 183 - 1))
    expect_corrupt(FILE, "slices", limits=Limits(max_slices=11))


def test_one_pixel_image_is_valid():
    h = make_header(size=(1, 1))
    assert h.padding == (31, 31, 32, 32)
    assert unpack(pack(h, Z, Y))[0] == h


def test_padding():
    expect_corrupt(patched(FILE, field_offset("padding"), "<4H", 5, 3, 4, 4), "padding")
    expect_corrupt(FILE, "padding", multiple=128)
    with pytest.raises(ValueError, match="padding"):
        pack(make_header(padding=(0, 0, 0, 0)), Z, Y)


@pytest.mark.parametrize("slices", [0, 65, 0xFFFF])
def test_slice_count(slices):
    expect_corrupt(patched(FILE, field_offset("slices"), "<H", slices, fix_crc=False), "slices")


def test_fingerprint_length_checked_by_pack():
    with pytest.raises(ValueError, match="fingerprint"):
        pack(make_header(fingerprint=b"short"), Z, Y)


def test_payload_lengths():
    expect_corrupt(FILE + b"\0", f"trailing garbage: expected {len(FILE)} bytes, got {len(FILE) + 1}")
    expect_corrupt(FILE[:-1], f"truncated: expected {len(FILE)} bytes, got {len(FILE) - 1}")
    huge = patched(FILE, field_offset("y_len"), "<I", 0xFFFFFFFF)
    expect_corrupt(huge, "truncated: expected")
    swapped = patched(patched(FILE, field_offset("z_len"), "<I", len(Z) + 1), field_offset("y_len"), "<I",
                      len(Y) - 1)
    assert unpack(swapped)[1:] == (Z + Y[:1], Y[1:])   # lengths only split the bytes; the CRCs of
    # the decoded symbols catch this at decode time


def test_payload_crc():
    for at in (HEADER_LEN, HEADER_LEN + len(Z), len(FILE) - 1):   # z, y, last byte
        damaged = bytearray(FILE)
        damaged[at] ^= 0x10
        expect_corrupt(bytes(damaged), "payload checksum")


# --- damage anywhere is detected ----------------------------------------------------

def test_every_truncation():
    for cut in range(len(FILE)):
        with pytest.raises(CorruptFile):
            unpack(FILE[:cut])


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_header_bit_flips(data):
    """Any 1..4 flipped bits in the header are refused: CRC-32 has Hamming distance 5 at this
    length (under 2974 bits), and flips that change the header's own length fail earlier."""
    flips = data.draw(st.lists(st.integers(0, 8 * HEADER_LEN - 1), min_size=1, max_size=4, unique=True))
    damaged = bytearray(FILE)
    for bit in flips:
        damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptFile):
        unpack(bytes(damaged))


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(blob):
    for data in (blob, b"MSTF" + blob, FILE[:HEADER_LEN] + blob, FILE[:7] + blob):
        try:
            unpack(data)
        except CorruptFile as e:
            assert "\n" not in str(e)


@settings(max_examples=200, deadline=1000)
@given(st.integers(1, 1 << 15), st.integers(1, 1 << 15), st.integers(1, 64), st.booleans(),
       st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=16))
def test_round_trip_any_valid_header(h, w, slices, portable, model_id):
    if h * w > bitstream.Limits().max_pixels:
        return
    header = make_header(size=(h, w), y_crcs=tuple(range(slices)), portable=portable, model_id=model_id)
    assert unpack(pack(header, Z, Y)) == (header, Z, Y)


def test_header_is_frozen():
    with pytest.raises(Exception):
        HEADER.height = 5
    assert replace(HEADER, height=121) == HEADER


# --- reading from a stream ------------------------------------------------------------

class Counting(io.RawIOBase):
    """A pipe-like stream (no fileno, no size): `data`, then `endless` zero bytes forever."""

    def __init__(self, data, endless=False):
        self.data, self.endless, self.taken = data, endless, 0

    def readable(self):
        return True

    def readinto(self, buf):
        part = self.data[self.taken:self.taken + len(buf)]
        if self.endless:
            part += bytes(len(buf) - len(part))
        buf[:len(part)] = part
        self.taken += len(part)
        return len(part)


def test_read_from_streams_and_files(tmp_path):
    assert read(io.BytesIO(FILE)) == (HEADER, Z, Y) == read(Counting(FILE))
    path = tmp_path / "f.mstf"
    path.write_bytes(FILE)
    with open(path, "rb") as f:
        assert read(f) == (HEADER, Z, Y)


def test_read_refuses_like_unpack():
    """Same messages as unpack for every truncation and damage (a pipe's trailing data: 'got more')."""
    for data in [FILE[:cut] for cut in range(len(FILE))] + [_flipped(FILE, at) for at in range(len(FILE))]:
        with pytest.raises(CorruptFile) as bytes_err:
            unpack(data)
        with pytest.raises(CorruptFile) as stream_err:
            read(Counting(data))
        assert str(stream_err.value) == str(bytes_err.value)
    with pytest.raises(CorruptFile, match=f"trailing garbage: expected {len(FILE)} bytes, got more"):
        read(Counting(FILE + b"\0"))


def _flipped(data, at):
    damaged = bytearray(data)
    damaged[at] ^= 0x04
    return bytes(damaged)


def test_read_takes_at_most_one_byte_past_the_payload():
    stream = Counting(FILE, endless=True)
    with pytest.raises(CorruptFile, match="trailing garbage"):
        read(stream)
    assert stream.taken == len(FILE) + 1
    stream = Counting(b"PNG\x89" * 1000, endless=True)
    with pytest.raises(CorruptFile, match="bad magic"):
        read(stream)
    assert stream.taken <= 8


def test_read_checks_a_files_size_before_its_payload(tmp_path):
    """A declared payload of 4 GiB, or a 40 GB sparse tail, is refused from the file's size."""
    huge = tmp_path / "huge.mstf"
    huge.write_bytes(patched(FILE, field_offset("y_len"), "<I", 0xFFFFFFFF))
    with open(huge, "rb") as f:
        with pytest.raises(CorruptFile, match="truncated: expected"):
            read(f)
        assert f.tell() <= HEADER_LEN + 8192       # the header and a buffer's worth, no payload
    sparse = tmp_path / "sparse.mstf"
    sparse.write_bytes(FILE)
    try:
        os.truncate(sparse, 40 * 10**9)
    except OSError:
        pytest.skip("no sparse files here")
    with open(sparse, "rb") as f:
        with pytest.raises(CorruptFile, match=f"trailing garbage: expected {len(FILE)} bytes, got {40 * 10**9}"):
            read(f)


def test_the_size_claim_bound_and_why_the_encoder_checks_it_too():
    """min_payload_bytes grows with the information and is 0 for what the final state holds;
    constriction codes a run of position-0 symbols from its initial state 0 in no words at all,
    which is why codec.encode_image refuses to write a file that breaks the bound."""
    import constriction
    import numpy as np

    from minstf.bitstream import MIN_SYMBOL_BITS, STATE_BITS, min_payload_bytes

    assert min_payload_bytes(0) == 0 and min_payload_bytes(STATE_BITS) == 0
    assert min_payload_bytes(10 ** 6) == 4 * -(-(10 ** 6 * 7 // 8 - STATE_BITS) // 32)
    assert MIN_SYMBOL_BITS == pytest.approx(2.2014e-5, rel=1e-4)
    probable = constriction.stream.model.Categorical(np.array([2 ** 16 - 1, 1]) / 2 ** 16, perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.zeros(10 ** 6, np.int32), probable)
    assert coder.get_compressed().size == 0
