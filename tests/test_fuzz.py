"""Damaged .mstf files never crash, hang or decode to a wrong image.

A sample of the fuzz campaign (tools/fuzz_decoder.py: mutated files decoded in worker
processes under a time and memory limit) must end without a bug, timeout, memory or crash
outcome. Then a hypothesis test, in-process:

One valid small file is damaged by a few random edits anywhere (header and payload):
truncation, bit flips, inserted or deleted bytes, and header edits whose header CRC is
recomputed (a forged header, so that the checks behind the CRC are reached too).
Decoding must then raise a MinstfError (CorruptFile, WrongWeights, DecoderMismatch)
or return exactly the original image, within the per-example deadline.
"""
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from minstf.codec import decode_image, encode_image
from minstf.errors import MinstfError

from test_codec import HEADER_BYTES, model, sample_image, small_weights  # noqa: F401 (fixtures)

FLAGS_AT = 5  # the portable flag: see forged_header_edit
REPO = Path(__file__).resolve().parent.parent


def test_fuzz_campaign_sample():
    """`python tools/fuzz_decoder.py --cases 300`: every case a clean error or a legitimate decode."""
    r = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz_decoder.py"), "--cases", "300", "--seed", "7",
                        "--workers", "2"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
    rows = {re.split(r"\s{2,}", line)[0]: line.split()[-1] for line in r.stdout.splitlines()[3:]}
    assert rows.pop("total") == "300" and not any(name.startswith("BUG") for name in rows), r.stdout
    assert any(name.startswith("error DecoderMismatch") for name in rows), "no case reached the entropy decoder"


@pytest.fixture(scope="module")
def valid(model):  # noqa: F811
    data, _ = encode_image(model, sample_image(20, 28, seed=11))
    return data, decode_image(model, data)[0]


def forged_header_edit():
    """A byte of the header (before its CRC) XORed, then the header CRC recomputed. Not bit 0
    of the flags: a file whose portable flag is forged decodes, correctly, in the other mode
    (its symbols usually pass their CRCs) to an image a level off in a few pixels."""
    return st.tuples(st.just("forge"), st.integers(0, HEADER_BYTES - 5), st.integers(1, 255)).filter(
        lambda e: not (e[1] == FLAGS_AT and e[2] & 1))


def edits(size):
    anywhere = st.integers(0, size - 1)
    header = st.integers(len(b"MSTF"), HEADER_BYTES - 1)  # the magic is hit by `anywhere` enough
    payload = st.integers(HEADER_BYTES, size - 1)
    position = st.one_of(header, payload, payload, anywhere)  # most damage lands in the payload
    flip = st.tuples(st.just("flip"), position, st.integers(0, 7))
    return st.one_of(  # flips reach the entropy decoder; length changes stop at the header checks
        st.tuples(st.just("truncate"), st.integers(0, size - 1)),
        flip, flip, flip,
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), position, st.integers(1, 8)),
        forged_header_edit(),
    )


def apply(data, edit):
    data = bytearray(data)
    kind, at = edit[0], min(edit[1], max(len(data) - 1, 0))
    if kind == "truncate":
        del data[at:]
    elif kind == "flip" and data:
        data[at] ^= 1 << edit[2]
    elif kind == "insert":
        data[at:at] = edit[2]
    elif kind == "delete":
        del data[at:at + edit[2]]
    elif kind == "forge" and len(data) >= HEADER_BYTES:
        data[at] ^= edit[2]
        struct.pack_into("<I", data, HEADER_BYTES - 4, zlib.crc32(bytes(data[:HEADER_BYTES - 4])))
    return bytes(data)


@settings(max_examples=60, derandomize=True, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damage_is_detected_or_harmless(model, valid, data):  # noqa: F811
    original, image = valid
    damaged = original
    for edit in data.draw(st.lists(edits(len(original)), min_size=1, max_size=3), label="edits"):
        damaged = apply(damaged, edit)
    try:
        decoded, _ = decode_image(model, damaged)
    except MinstfError as err:
        assert str(err) and "\n" not in str(err)
        event(f"{type(err).__name__}: {str(err)[:30]}")  # --hypothesis-show-statistics
        return
    event("decoded")
    np.testing.assert_array_equal(decoded, image)
