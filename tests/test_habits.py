"""Habits of cwebp/cjxl/avifenc on the command line: progress on a terminal (and only there),
--threads, a default output name, lossless output formats by extension, EXIF orientation and
dropped metadata, and size claims that the payload cannot carry refused before any work."""
import os
import re
import pty
import select
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from minstf import cli as cli_module
from minstf.codec import decode_image
from minstf.errors import BadInput, CorruptFile, OutputExists
from minstf.image import eval_padding
from minstf.zoo import load_model

from test_cli import IMAGE, REPO, assert_error, mstf, png_file, run, shipped  # noqa: F401 (fixtures)
from test_codec import HEADER_BYTES, small_weights  # noqa: F401 (a fixture)


def _cli(args, shipped, stderr):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINSTF_WEIGHTS_DIR": str(shipped)}
    return subprocess.Popen([sys.executable, "-m", "minstf.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def _on_a_terminal(args, shipped):  # noqa: F811
    """stderr of the real entry point when it is a pseudo-terminal."""
    leader, follower = pty.openpty()
    proc, out = _cli(args, shipped, follower), b""
    os.close(follower)
    try:
        while True:
            if select.select([leader], [], [], 60)[0]:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:                                 # EIO: the child closed it
                    break
                if not chunk:
                    break
                out += chunk
        proc.wait(60)
    finally:
        os.close(leader)
    return proc.returncode, out.decode()


def test_progress_on_a_terminal_only(tmp_path, shipped):  # noqa: F811
    src = png_file(tmp_path / "in.png")
    code, text = _on_a_terminal(["encode", src, "-o", tmp_path / "a.mstf"], shipped)
    steps = r"(pad|analysis|hyperprior|slice [1-4]/4|pack|check header|synthesis|crop)"
    assert code == 0 and re.search(r"minstf: \S+: " + steps + r"… \d", text) and "\x1b[K" in text, text
    code, text = _on_a_terminal(["decode", tmp_path / "a.mstf", "-o", tmp_path / "a.png"], shipped)
    assert code == 0 and re.search(r"minstf: \S+: " + steps + r"… \d", text), text
    assert "stages:" not in text                                # timings only with -v

    proc = _cli(["encode", src, "-o", tmp_path / "b.mstf"], shipped, subprocess.PIPE)   # a pipe: one line
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0 and err.count("\n") == 1 and "…" not in err and "\r" not in err, err
    proc = _cli(["decode", tmp_path / "b.mstf", "-o", tmp_path / "b.png", "-v"], shipped, subprocess.PIPE)
    err = proc.communicate(timeout=60)[1].decode()
    assert "minstf: stages: check header " in err and ", hyperprior " in err and ", slice 4/4 " in err
    assert ", synthesis " in err and "synthesis…" not in err and "\r" not in err


def test_threads_option(tmp_path, monkeypatch):
    seen = []
    real = cli_module.load_model

    def load(*args, **kw):
        from threadpoolctl import threadpool_info
        seen.append((os.environ.get("MINSTF_NUM_THREADS"), {i["num_threads"] for i in threadpool_info()
                                                             if i["user_api"] == "blas"}))
        return real(*args, **kw)

    monkeypatch.setattr(cli_module, "load_model", load)
    monkeypatch.delenv("MINSTF_NUM_THREADS", raising=False)
    src = png_file(tmp_path / "in.png")
    assert run("encode", src, "-o", tmp_path / "a.mstf", "--threads", "1").exit_code == 0
    assert run("decode", tmp_path / "a.mstf", "-o", tmp_path / "a.png", "--threads", "2").exit_code == 0
    assert [env for env, _ in seen] == ["1", "2"] and all(blas <= {env} or not blas for env, blas in
                                                          [(int(e), b) for e, b in seen])
    assert "MINSTF_NUM_THREADS" not in os.environ             # restored after the run
    assert run("encode", src, "-o", tmp_path / "b.mstf", "--threads", "0").exit_code == 2
    for command in ("encode", "decode", "demo"):
        text = " ".join(run(command, "--help").output.split())
        assert "--threads N" in text and "$MINSTF_NUM_THREADS" in text and "$OPENBLAS_NUM_THREADS" in text


def test_default_output_names(tmp_path, mstf):  # noqa: F811
    src = png_file(tmp_path / "photo.png")
    before = src.read_bytes()
    r = run("encode", src)
    assert r.exit_code == 0 and (tmp_path / "photo.mstf").is_file(), r.output
    assert r.stderr.startswith(f"minstf: {src} -> {tmp_path / 'photo.mstf'}: ")
    assert_error(run("encode", src), OutputExists.exit_code, "photo.mstf exists")
    assert_error(run("decode", tmp_path / "photo.mstf"), OutputExists.exit_code, "photo.png exists")
    assert src.read_bytes() == before                          # never overwritten without --force
    assert run("decode", tmp_path / "photo.mstf", "--force").exit_code == 0
    assert np.array(Image.open(src)).shape == IMAGE.shape
    odd = tmp_path / "odd.png"                                 # a .mstf file named .png: its default output
    odd.write_bytes(mstf[0].read_bytes())                      # is itself, refused even with --force
    assert_error(run("decode", odd, "--force"), BadInput.exit_code, "is the input file")
    assert odd.read_bytes() == mstf[0].read_bytes()
    assert run("encode", "-", input=src.read_bytes()).exit_code == 2          # stdin: give -o
    assert run("encode", src, tmp_path / "photo.png").exit_code == 2           # several: give -o DIR/


@pytest.mark.parametrize("suffix", [".png", ".ppm", ".pnm", ".tif", ".tiff", ".bmp", ".tga", ".webp"])
def test_decode_to_lossless_formats(tmp_path, mstf, suffix):  # noqa: F811
    out = tmp_path / f"out{suffix}"
    assert run("decode", mstf[0], "-o", out).exit_code == 0
    np.testing.assert_array_equal(np.array(Image.open(out).convert("RGB")), mstf[1])


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".avif", ".gif", ".jxl", ".xyz", ""])
def test_lossy_or_unknown_formats_are_refused(tmp_path, mstf, suffix):  # noqa: F811
    out = tmp_path / f"out{suffix}"
    r = run("decode", mstf[0], "-o", out)
    assert_error(r, BadInput.exit_code, "lossy" if suffix in (".jpg", ".jpeg", ".avif", ".gif", ".jxl") else "unknown")
    assert not out.exists()


def test_exif_orientation_applied_and_metadata_dropped(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                           # rotate 90° clockwise to view
    exif[0x010F] = "camera"
    src = png_file(tmp_path / "o.png", exif=exif.tobytes(), icc_profile=b"\0" * 8)
    r = run("encode", src, "-o", tmp_path / "o.mstf")
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("minstf: note: ")]
    assert notes == [f"minstf: note: {src}: EXIF orientation 6 applied (the image is coded as a viewer shows it)",
                     f"minstf: note: {src}: metadata dropped: EXIF, ICC profile (pixels kept as stored, not "
                     f"converted) (a .mstf file holds pixels only)"], notes
    assert "24x40" in r.stderr.splitlines()[-1]                # width 24, height 40: rotated
    assert "image    24x40" in run("info", tmp_path / "o.mstf").stdout
    assert "note" not in run("encode", src, "-o", tmp_path / "q.mstf", "--quiet").stderr


def _forged(data, height, width, y_keep=None):
    """The file with another image size (padding to match) and, given y_keep, its y payload cut
    to that many bytes; the payload and header CRCs recomputed, as tools/fuzz_decoder.py does."""
    n, S = data[6], struct.unpack_from("<H", data, 39 + data[6])[0]
    z_len, y_len = struct.unpack_from("<II", data, 41 + n)
    head, z, y = bytearray(data[:HEADER_BYTES]), data[HEADER_BYTES:HEADER_BYTES + z_len], data[HEADER_BYTES + z_len:]
    y = y if y_keep is None else y[:y_keep]
    struct.pack_into("<II4H", head, 23 + n, height, width, *eval_padding(height, width))
    struct.pack_into("<I", head, 45 + n, len(y))
    struct.pack_into("<I", head, 53 + n + 4 * S, zlib.crc32(y, zlib.crc32(z)))
    struct.pack_into("<I", head, HEADER_BYTES - 4, zlib.crc32(bytes(head[:HEADER_BYTES - 4])))
    return bytes(head) + z + y


@pytest.mark.parametrize("size, y_keep", [((16384, 16384), None), ((4096, 4096), 8), ((1024, 2048), 4)])
def test_size_claims_the_payload_cannot_carry(tmp_path, mstf, small_weights, size, y_keep):  # noqa: F811
    bad = tmp_path / "forged.mstf"
    bad.write_bytes(_forged(mstf[0].read_bytes(), *size, y_keep))
    assert run("info", bad).exit_code == 0                     # a well-formed header: info shows it
    t = time.perf_counter()
    r = run("decode", bad, "-o", tmp_path / "out.png")
    assert time.perf_counter() - t < 1.0
    assert_error(r, CorruptFile.exit_code, "payload of at least")
    assert not (tmp_path / "out.png").exists()
    model = load_model(small_weights / "stf-small-q2.safetensors")
    t = time.perf_counter()
    with pytest.raises(CorruptFile, match="the size is forged or the file is damaged"):
        decode_image(model, bad.read_bytes())
    assert time.perf_counter() - t < 0.5
    honest = _forged(mstf[0].read_bytes(), 24, 40)             # the same bytes: decodes as before
    np.testing.assert_array_equal(decode_image(model, honest)[0], mstf[1])
