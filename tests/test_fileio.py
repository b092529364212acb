"""fileio.py, the CLI's safe file I/O, without the CLI: inputs by identity, outputs through a
short temporary name, errors that name the target."""
import errno
import os

import pytest

from minstf import fileio
from minstf.errors import BadInput, CorruptFile, OutputExists


def test_identity_is_device_and_inode_not_name(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"x")
    (tmp_path / "hard").hardlink_to(a)
    (tmp_path / "soft").symlink_to(a)
    ids = {fileio.identity(str(p)) for p in (a, tmp_path / "hard", tmp_path / "soft", tmp_path / "." / "a")}
    assert len(ids) == 1 and None not in ids
    assert fileio.identity(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("name", ["hard", "soft", "a"])
def test_an_input_is_never_an_output(tmp_path, name):
    a = tmp_path / "a"
    a.write_bytes(b"keep")
    if name != "a":
        getattr(tmp_path / name, "hardlink_to" if name == "hard" else "symlink_to")(a)
    for check in (lambda: fileio.check_output(str(tmp_path / name), True, [str(a)]),
                  lambda: fileio.write_output(str(tmp_path / name), b"new", True, [str(a)])):
        with pytest.raises(BadInput, match="is the input file"):
            check()
    assert a.read_bytes() == b"keep"


def test_write_output_keeps_existing_files_and_leaves_no_temporary(tmp_path):
    out = tmp_path / ("n" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".png")
    fileio.write_output(str(out), b"one", force=False)
    with pytest.raises(OutputExists):
        fileio.write_output(str(out), b"two", force=False)
    fileio.write_output(str(out), b"three", force=True)
    assert out.read_bytes() == b"three" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_write_errors_name_the_target(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", src)
    monkeypatch.setattr(fileio.os, "replace", full)
    out = tmp_path / "out.bin"
    with pytest.raises(OSError) as err:
        fileio.write_output(str(out), b"data", force=True)
    assert err.value.filename == str(out) and err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_and_closed_stdout(tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="does not exist"):
        fileio.check_output(str(tmp_path / "no" / "x"), False)
    with pytest.raises(IsADirectoryError):
        fileio.check_output(str(tmp_path), True)
    monkeypatch.setattr(fileio.sys, "stdout", None)
    with pytest.raises(OSError, match="standard output is closed"):
        fileio.write_output("-", b"x", False)


def test_read_mstf_names_the_file(tmp_path):
    bad = tmp_path / "bad.mstf"
    bad.write_bytes(b"MSTF\x01")
    with pytest.raises(CorruptFile, match=f"^{bad}: truncated"):
        fileio.read_mstf(str(bad))
    with pytest.raises(IsADirectoryError):
        fileio.read_mstf(str(tmp_path))


def test_png_bytes():
    import numpy as np
    data = fileio.png_bytes(np.zeros((2, 3, 3), np.uint8))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
