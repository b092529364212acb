"""Forged torch checkpoints, assembled by hand with zipfile and pickle opcodes (never by running
a pickle, and without torch): every bound of minstf/checkpoint.py, each refused with a WeightsError
before the memory it asks for is allocated."""
import struct
import zipfile
import zlib

import numpy as np
import pytest

from minstf.checkpoint import read_checkpoint, read_state_dict
from minstf.errors import WeightsError


# --- hand-assembled checkpoints: bounds and storage checks -----------------------------------

def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(v):
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)  # BININT
    raw = v.to_bytes(8, "little", signed=True)
    return b"\x8a\x08" + raw  # LONG1


def _tuple(vals):
    return b"(" + b"".join(_int(v) for v in vals) + b"t"


def _tensor_pickle(numel, offset, size, stride, storage="FloatStorage", key="0"):
    """{'t': _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}."""
    pid = (b"(" + _str("storage") + f"ctorch\n{storage}\n".encode() + _str(key) + _str("cpu")
           + _int(numel) + b"tQ")
    call = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _int(offset) + _tuple(size) + _tuple(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR")
    return b"\x80\x02}" + _str("t") + call + b"s."


def _write_zip(path, pkl, storages, byteorder="little"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ck/data.pkl", pkl)
        z.writestr("ck/byteorder", byteorder)
        for key, raw in storages.items():
            z.writestr(f"ck/data/{key}", raw)


def test_hand_made_strided_view_and_big_endian(tmp_path):
    data = np.arange(12, dtype=np.float32)
    _write_zip(tmp_path / "a.pt", _tensor_pickle(12, 1, (2, 3), (5, 2)), {"0": data.astype("<f4").tobytes()})
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "a.pt")["t"], [[1, 3, 5], [6, 8, 10]])
    big_endian = {"0": data.astype(">f4").tobytes()}
    _write_zip(tmp_path / "b.pt", _tensor_pickle(12, 0, (12,), (1,)), big_endian, "big")
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "b.pt")["t"], data)


@pytest.mark.parametrize("numel, offset, size, stride, raw_len, match", [
    (12, 0, (3, 4), (5, 1), 48, "reaches element 13"),  # view beyond the storage
    (12, 0, (4, 4), (4, 1), 48, "more elements than its storage"),
    (3, 0, (2**28,), (0,), 12, "more elements than its storage"),  # a 1 GB expanded view of 12 bytes
    (12, 10, (3,), (1,), 48, "reaches element 12"),
    (12, 0, (3,), (-1,), 48, "negative"),
    (12, 0, (3,), (1,), 40, "holds 40 bytes"),  # storage entry shorter than declared
    (2**40, 0, (3,), (1,), 48, "holds 48 bytes"),  # huge declared storage: refused, not allocated
])
def test_out_of_bounds_tensors_are_refused(tmp_path, numel, offset, size, stride, raw_len, match):
    _write_zip(tmp_path / "c.pt", _tensor_pickle(numel, offset, size, stride), {"0": bytes(raw_len)})
    with pytest.raises(WeightsError, match=match):
        read_checkpoint(tmp_path / "c.pt")


@pytest.mark.parametrize("target", [b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
                                    _tensor_pickle(12, 0, (3,), (1,))[3 + 6:-2]])
def test_build_cannot_modify_stand_ins(tmp_path, target):
    """BUILD (None, {attr: value}) sets attributes: e.g. a checked tensor's offset, or a shared dtype tag."""
    attack = target + b"N}(" + _str("dtype") + _str("O") + _str("offset") + _int(10**6) + b"u\x86b."
    _write_zip(tmp_path / "g.pt", b"\x80\x02" + attack, {"0": bytes(48)})
    with pytest.raises(WeightsError, match="refuses to modify"):
        read_checkpoint(tmp_path / "g.pt")
    _write_zip(tmp_path / "h.pt", _tensor_pickle(12, 0, (3,), (1,)), {"0": bytes(48)})
    assert read_checkpoint(tmp_path / "h.pt")["t"].dtype == np.float32  # the shared stand-ins are intact


def test_missing_storage_and_bad_persistent_id(tmp_path):
    _write_zip(tmp_path / "d.pt", _tensor_pickle(3, 0, (3,), (1,), key="7"), {"0": bytes(12)})
    with pytest.raises(WeightsError, match="missing from the archive"):
        read_checkpoint(tmp_path / "d.pt")
    _write_zip(tmp_path / "e.pt", b"\x80\x02" + _str("x") + b"Q.", {})
    with pytest.raises(WeightsError, match="persistent id"):
        read_checkpoint(tmp_path / "e.pt")
    _write_zip(tmp_path / "f.pt", b"\x80\x02}(" + _str("a"), {})  # truncated pickle
    with pytest.raises(WeightsError, match="not a valid pickle"):
        read_checkpoint(tmp_path / "f.pt")


# --- the archive: entries zipfile would read unsafely or not at all ---------------------------

def _patch_entry(path, name, flag=None, method=None, file_size=None):
    """Rewrite fields of one entry in both its local header and the central directory."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for sig, flag_at, method_at, size_at, name_at in ((b"PK\x03\x04", 6, 8, 22, 30),
                                                      (b"PK\x01\x02", 8, 10, 24, 46)):
        at = raw.find(sig)
        while at >= 0:
            if raw[at + name_at:at + name_at + len(encoded)] == encoded:
                if flag is not None:
                    raw[at + flag_at:at + flag_at + 2] = struct.pack("<H", flag)
                if method is not None:
                    raw[at + method_at:at + method_at + 2] = struct.pack("<H", method)
                if file_size is not None:
                    raw[at + size_at:at + size_at + 4] = struct.pack("<I", file_size)
            at = raw.find(sig, at + 1)
    path.write_bytes(bytes(raw))


def _good(path, raw_len=48, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("ck/data.pkl", _tensor_pickle(raw_len // 4, 0, (raw_len // 4,), (1,)), zipfile.ZIP_STORED)
        z.writestr("ck/byteorder", "little", zipfile.ZIP_STORED)
        z.writestr("ck/data/0", bytes(raw_len))
    return path


@pytest.mark.parametrize("patch, match", [
    (dict(flag=1), "is encrypted"),  # zipfile would ask for a password (RuntimeError)
    (dict(method=99), "uses compression method 99"),  # zipfile: NotImplementedError
    (dict(method=zipfile.ZIP_BZIP2), "uses compression method 12"),  # readable, but not what torch writes
])
def test_unreadable_zip_entries_are_refused_before_unpickling(tmp_path, patch, match):
    path = _good(tmp_path / "z.pt")
    assert read_checkpoint(path)["t"].shape == (12,)
    _patch_entry(path, "ck/data/0", **patch)
    with pytest.raises(WeightsError, match=f"z.pt: zip entry 'ck/data/0' {match}"):
        read_checkpoint(path)


def test_compression_ratio_is_capped(tmp_path):
    """10 MB of zeros deflate to 10 kB: a zip bomb in miniature."""
    path = _good(tmp_path / "bomb.pt", raw_len=10 * 2**20, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 20_000
    with pytest.raises(WeightsError, match=r"expands \d+ bytes to 10485760 \(more than 1000:1\)"):
        read_checkpoint(path)


def test_all_storages_together_are_bounded_by_the_file(tmp_path):
    """2 MiB of a repeated pattern deflate 250:1, under the ratio cap; but 4 x 9 kB + 1 MiB < 2 MiB."""
    pattern = bytes(range(256)) * 8192
    with zipfile.ZipFile(tmp_path / "many.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ck/data.pkl", _tensor_pickle(len(pattern) // 4, 0, (3,), (1,)))
        z.writestr("ck/data/0", pattern)
    assert (tmp_path / "many.pt").stat().st_size < 20_000
    with pytest.raises(WeightsError, match=r"storages declare more than \d+ bytes \(4 x the file size"):
        read_checkpoint(tmp_path / "many.pt")


def test_a_member_whose_header_lies_about_its_size(tmp_path):
    """The central directory says 52 bytes (and the pickle 13 floats); the deflated data holds 48."""
    with zipfile.ZipFile(tmp_path / "lie.pt", "w") as z:
        z.writestr("ck/data.pkl", _tensor_pickle(13, 0, (13,), (1,)))
        z.writestr("ck/data/0", bytes(48), zipfile.ZIP_DEFLATED)
    _patch_entry(tmp_path / "lie.pt", "ck/data/0", file_size=52)
    with pytest.raises(WeightsError, match="lie.pt: (damaged zip entry|zip entry 'ck/data/0' does not hold)"):
        read_checkpoint(tmp_path / "lie.pt")


# --- tensors: a 468-byte file cannot make a 1 GB array --------------------------------------

@pytest.mark.parametrize("numel, size, stride, match", [
    (3, (1, 3), (2**62, 1), None),  # a size-1 dimension's stride never steps: read, not overflowed
    (3, (0, 2**62), (1, 1), "larger than"),  # empty, but NumPy cannot make it
    (3, (1,) * 9, (1,) * 9, "9 dimensions"),
    (3, (2**14, 2**14), (0, 0), "more elements than its storage"),  # 1 GB of one float
    (3, (2**30, 2**30), (0, 0), "larger than"),
])
def test_tensor_geometry_is_bounded(tmp_path, numel, size, stride, match):
    _write_zip(tmp_path / "t.pt", _tensor_pickle(numel, 0, size, stride), {"0": bytes(4 * numel)})
    assert (tmp_path / "t.pt").stat().st_size < 1000
    if match is None:
        np.testing.assert_array_equal(read_checkpoint(tmp_path / "t.pt")["t"], np.zeros(size, np.float32))
        return
    with pytest.raises(WeightsError, match=f"t.pt: checkpoint: .*{match}"):
        read_checkpoint(tmp_path / "t.pt")


def test_reused_storages_cannot_multiply_memory(tmp_path):
    """One 256 kB tensor in a list 100 times (BINPUT once, BINGET 99 times): 25 MB of copies."""
    one = _tensor_pickle(2**16, 0, (2**16,), (1,))[len(b"\x80\x02}") + len(_str("t")):-2]
    pkl = b"\x80\x02](" + one + b"q\x00" + b"h\x00" * 99 + b"e."
    _write_zip(tmp_path / "reuse.pt", pkl, {"0": bytes(2**18)})
    with pytest.raises(WeightsError, match=r"arrays read to more than \d+ bytes"):
        read_checkpoint(tmp_path / "reuse.pt")
    few = b"\x80\x02](" + one + b"q\x00" + b"h\x00" * 2 + b"e."  # three copies fit
    _write_zip(tmp_path / "few.pt", few, {"0": bytes(2**18)})
    assert len(read_checkpoint(tmp_path / "few.pt")) == 3


# --- the pickle's own structure ----------------------------------------------------------------

OD = b"ccollections\nOrderedDict\n)R"


@pytest.mark.parametrize("pkl, match", [
    (OD + b"N}(" + _str("items") + _int(5) + b"u\x86b.", "BUILD state of type tuple"),  # would shadow .items
    (OD + b"}(J\x01\x00\x00\x00J\x02\x00\x00\x00ub.", "BUILD state of type dict"),  # non-name keys
    (b"]}b.", "malformed checkpoint"),  # BUILD on a list
])
def test_odd_build_state_is_refused(tmp_path, pkl, match):
    _write_zip(tmp_path / "b.pt", b"\x80\x02" + pkl, {})
    with pytest.raises(WeightsError, match=match):
        read_checkpoint(tmp_path / "b.pt")


def test_torch_metadata_build_state_is_accepted(tmp_path):
    """model.state_dict() carries {'_metadata': {...}} as BUILD state: read, and dropped."""
    tensor = _tensor_pickle(3, 0, (3,), (1,))[len(b"\x80\x02}") + len(_str("t")):-2]
    pkl = (b"\x80\x02" + OD + b"(" + _str("w") + tensor + b"u}(" + _str("_metadata") + OD
           + b"(" + _str("") + b"}(" + _str("version") + _int(1) + b"uuub.")
    _write_zip(tmp_path / "m.pt", pkl, {"0": bytes(12)})
    sd = read_state_dict(tmp_path / "m.pt")
    assert list(sd) == ["w"] and sd["w"].shape == (3,)


def test_deep_nesting_is_refused(tmp_path):
    depth = 100_000
    _write_zip(tmp_path / "deep.pt", b"\x80\x02" + b"(" * depth + b"l" * depth + b".", {})
    with pytest.raises(WeightsError, match="deep.pt: containers nested deeper than 64 levels"):
        read_checkpoint(tmp_path / "deep.pt")
    pid = b"(" * depth + b"t" * depth  # a persistent id nested 100,000 tuples deep
    _write_zip(tmp_path / "pid.pt", b"\x80\x02" + pid + b"Q.", {})
    with pytest.raises(WeightsError, match="pid.pt: checkpoint: refuses unknown persistent id tuple"):
        read_checkpoint(tmp_path / "pid.pt")
