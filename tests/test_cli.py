"""The `minstf` command line: encode, decode, info, demo; stdin/stdout; outputs that are
never clobbered; and every kind of bad input ending in one line and its own exit code."""
import io
import os
import pty
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from minstf import cli as cli_module
from minstf import fileio
from minstf.cli import main
from minstf.codec import decode_image, encode_image
from minstf.errors import BadInput, CorruptFile, DecoderMismatch, OutputExists, WeightsError, WrongWeights
from minstf.zoo import load_model

from test_codec import HEADER_BYTES, sample_image, small_weights  # noqa: F401 (a fixture)
from test_image import png_bytes

REPO = Path(__file__).resolve().parent.parent
IMAGE = sample_image(24, 40, seed=5)


@pytest.fixture(autouse=True)
def shipped(small_weights, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(small_weights))
    return small_weights


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_error(r, code, words=""):
    """Exit code, exactly one line `minstf: error: ...` on stderr, no traceback anywhere."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert r.stderr.startswith("minstf: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert words in r.stderr, r.stderr
    assert "Traceback" not in r.output and not isinstance(r.exception, (AssertionError, TypeError))


def png_file(path, array=IMAGE, mode=None, **kw):
    Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
    return path


@pytest.fixture(scope="module")
def mstf(tmp_path_factory, small_weights):  # noqa: F811
    """A valid .mstf file of IMAGE made with the shipped q2 weights in the CLI's default
    (portable) mode, and its decoded image."""
    path = tmp_path_factory.mktemp("mstf") / "image.mstf"
    m = load_model(small_weights / "stf-small-q2.safetensors")
    data, _ = encode_image(m, IMAGE, portable=True)
    path.write_bytes(data)
    return path, decode_image(m, data)[0]


def png_of(data):
    return np.array(Image.open(io.BytesIO(data)))


# --- happy paths ------------------------------------------------------------------------------

def test_encode_decode_info(tmp_path, mstf):
    src, out, png = png_file(tmp_path / "in.png"), tmp_path / "out.mstf", tmp_path / "out.png"
    r = run("encode", src, "-o", out)
    assert r.exit_code == 0 and r.stdout == ""
    line = r.stderr
    assert line.count("\n") == 1 and line.startswith(f"minstf: {src} -> {out}: 40x24, ")
    assert " bytes, " in line and " bpp (" in line and " payload), " in line and line.endswith(" s\n")
    assert out.read_bytes() == mstf[0].read_bytes()            # -q 2 is the default

    r = run("decode", out, "-o", png)                          # weights found by fingerprint
    assert r.exit_code == 0 and r.stderr.startswith(f"minstf: {out} -> {png}: 40x24, ")
    np.testing.assert_array_equal(np.array(Image.open(png)), mstf[1])

    r = run("info", out)
    assert r.exit_code == 0, r.output
    fields = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert set(fields) == {"file", "model", "weights", "image", "mode", "slices", "payload", "bpp"}
    assert fields["model"] == "stf" and fields["slices"] == "4" and fields["image"].startswith("40x24, coded as 64x64")
    assert "(shipped q2)" in fields["weights"] and fields["mode"].startswith("portable")
    assert f"header {HEADER_BYTES} bytes" in fields["payload"]


def test_quality_and_weights_options(tmp_path, shipped):
    src = png_file(tmp_path / "in.png")
    q3, q1 = shipped / "stf-small-q3.safetensors", shipped / "stf-small-q1.safetensors"
    assert run("encode", src, "-o", tmp_path / "a.mstf", "-q", "3", "--quiet").stderr == ""
    assert run("encode", src, "-o", tmp_path / "b.mstf", "--weights", q3, "--fast").exit_code == 0
    assert "float32" in run("info", tmp_path / "b.mstf").stdout
    for name in ("a", "b"):                                    # no -q needed to decode
        assert run("decode", tmp_path / f"{name}.mstf", "-o", tmp_path / f"{name}.png").exit_code == 0
    assert run("decode", tmp_path / "a.mstf", "-o", tmp_path / "c.png", "-w", q3, "-v").exit_code == 0

    r = run("decode", tmp_path / "a.mstf", "-o", tmp_path / "d.png", "-q", "1")
    fp3, fp1 = (load_model(p).fingerprint[:12] for p in (q3, q1))
    assert_error(r, WrongWeights.exit_code, f"made with weights {fp3}…, but {q1} are {fp1}…")
    assert not (tmp_path / "d.png").exists()

    r = run("info", tmp_path / "a.mstf", "--weights", q1)
    assert r.exit_code == WrongWeights.exit_code and r.stdout.splitlines()[-1].startswith("match    NO")
    assert run("info", tmp_path / "a.mstf", "--weights", q3).stdout.splitlines()[-1].startswith("match    yes")

    assert run("encode", src, "-o", tmp_path / "e.mstf", "-q", "1", "-w", q1).exit_code == 2   # usage
    assert run("encode", src, "-o", tmp_path / "e.mstf", "-q", "9").exit_code == 2
    assert run("encode", src, "-o", tmp_path / "e.mstf", "-v", "--quiet").exit_code == 2


def test_file_made_with_other_weights(tmp_path, mstf, shipped, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()                                              # shipped weights that are not q2's
    (other / "stf-small-q1.safetensors").write_bytes((shipped / "stf-small-q1.safetensors").read_bytes())
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(other))
    r = run("decode", mstf[0], "-o", tmp_path / "x.png")
    assert_error(r, WrongWeights.exit_code, "none of the shipped ones (q1 ")
    assert "not a shipped one" in run("info", mstf[0]).stdout
    (other / "stf-small-q2.safetensors").write_bytes(b"broken")
    assert run("info", mstf[0]).exit_code == 0                 # info needs no weights
    assert_error(run("decode", mstf[0], "-o", tmp_path / "x.png"), WeightsError.exit_code, "stf-small-q2")
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(tmp_path / "empty"))
    assert_error(run("decode", mstf[0], "-o", tmp_path / "x.png"), WeightsError.exit_code, "no shipped weights")
    assert_error(run("encode", png_file(tmp_path / "i.png"), "-o", tmp_path / "x.mstf"), WeightsError.exit_code,
                 "shipped weights not found")


def test_stdin_and_stdout(tmp_path, mstf):
    png = io.BytesIO()
    Image.fromarray(IMAGE).save(png, format="PNG")
    r = run("encode", "-", "-o", "-", input=png.getvalue())
    assert r.exit_code == 0 and r.stdout_bytes == mstf[0].read_bytes()
    assert r.stderr.startswith("minstf: <stdin> -> <stdout>: 40x24")
    r = run("decode", "-", "-o", "-", input=r.stdout_bytes)
    assert r.exit_code == 0
    np.testing.assert_array_equal(png_of(r.stdout_bytes), mstf[1])
    assert run("info", "-", input=mstf[0].read_bytes()).stdout.startswith("file     <stdin>, ")
    assert_error(run("decode", "-", "-o", "-", input=b""), CorruptFile.exit_code, "<stdin>: empty file")


def _on_a_terminal(args, stream):
    """Run the real entry point (python -m minstf.cli) with a pseudo-terminal as stdin or stdout."""
    leader, follower = pty.openpty()
    try:
        return subprocess.run([sys.executable, "-m", "minstf.cli", *map(str, args)], **{stream: follower},
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(follower)
        os.close(leader)


def test_never_binary_to_or_from_a_terminal(tmp_path, mstf):
    r = _on_a_terminal(["decode", mstf[0], "-o", "-"], "stdout")
    assert r.returncode == BadInput.exit_code
    assert r.stderr == "minstf: error: refusing to write binary data to a terminal: use -o FILE, or redirect stdout\n"
    r = _on_a_terminal(["encode", "-", "-o", tmp_path / "x.mstf"], "stdin")
    assert r.returncode == BadInput.exit_code and r.stderr.startswith("minstf: error: refusing to read binary")


def test_output_devices_are_written_directly(mstf):
    assert run("decode", mstf[0], "-o", os.devnull).exit_code == 0   # no --force, no temp file in /dev


# --- outputs are never clobbered -------------------------------------------------------------

def test_no_overwrite_without_force(tmp_path, mstf):
    src, out = png_file(tmp_path / "in.png"), tmp_path / "out.mstf"
    out.write_bytes(b"keep me")
    assert_error(run("encode", src, "-o", out), OutputExists.exit_code, f"{out} exists (use --force")
    assert out.read_bytes() == b"keep me"
    png = tmp_path / "out.png"
    png.write_bytes(b"keep me too")
    assert_error(run("decode", mstf[0], "-o", png), OutputExists.exit_code)
    assert png.read_bytes() == b"keep me too"
    assert run("encode", src, "-o", out, "--force").exit_code == 0
    assert out.read_bytes() == mstf[0].read_bytes()
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()   # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.mstf", "out.png"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_output_is_never_the_input(tmp_path):
    src = png_file(tmp_path / "in.png")
    before = src.read_bytes()
    for out in (src, tmp_path / "." / "in.png"):
        assert_error(run("encode", src, "-o", out, "--force"), BadInput.exit_code, "is the input file")
    assert src.read_bytes() == before


def test_failed_write_leaves_nothing(tmp_path, mstf, monkeypatch):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fileio.os, "replace", disk_full)
    assert_error(run("decode", mstf[0], "-o", out, "--force"), 1, f"{out}: No space left on device")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_output_path_problems(tmp_path, mstf):
    assert_error(run("decode", mstf[0], "-o", tmp_path / "no" / "x.png"), BadInput.exit_code, "does not exist")
    assert_error(run("decode", mstf[0], "-o", tmp_path / "x.jpg"), BadInput.exit_code, "JPEG is lossy")
    r = run("decode", mstf[0], "-o", tmp_path)                 # a directory: a batch of one (test_batch.py)
    assert r.exit_code == 0 and (tmp_path / "image.png").is_file() and (tmp_path / "manifest.jsonl").is_file()


def _subprocess(args, shipped, **kw):
    """The real entry point (python -m minstf.cli) with the small shipped weights."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINSTF_WEIGHTS_DIR": str(shipped)}
    return subprocess.run([sys.executable, "-m", "minstf.cli", *map(str, args)], cwd=REPO, timeout=60,
                          env=env, **kw)


def test_no_input_is_ever_an_output(tmp_path, mstf, shipped):
    """Every input of a command (image, .mstf, --weights, checkpoint), under any name (hard
    link, symbolic link), is refused as its output, --force or not."""
    src = png_file(tmp_path / "in.png")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes((shipped / "stf-small-q2.safetensors").read_bytes())
    (tmp_path / "link.png").hardlink_to(src)
    (tmp_path / "sym.png").symlink_to(src)
    kept = {p: p.read_bytes() for p in (src, weights)}
    for out in (tmp_path / "link.png", tmp_path / "sym.png"):
        assert_error(run("encode", src, "-o", out, "--force"), BadInput.exit_code, f"is the input file {src}")
    assert_error(run("encode", src, "-o", weights, "-w", weights, "--force"), BadInput.exit_code,
                 f"{weights} is the input file {weights}")
    assert_error(run("demo", src, "-w", weights, "--keep", tmp_path, "--force"), BadInput.exit_code,
                 "is the input file")                               # demo would write in.png
    as_png = tmp_path / "file.png"                                  # a .mstf file named like a PNG
    as_png.write_bytes(mstf[0].read_bytes())
    assert_error(run("decode", as_png, "-o", as_png, "--force"), BadInput.exit_code, "is the input file")
    weights_png = tmp_path / "w.png"
    weights_png.write_bytes(weights.read_bytes())
    assert_error(run("decode", mstf[0], "-o", weights_png, "-w", weights_png, "--force"), BadInput.exit_code,
                 "is the input file")
    assert_error(run("convert", weights, weights, "--force"), BadInput.exit_code, "is the input file")
    (tmp_path / "w-link").hardlink_to(weights)
    assert_error(run("convert", weights, tmp_path / "w-link", "--force"), BadInput.exit_code, "is the input file")
    assert {p: p.read_bytes() for p in kept} == kept and as_png.read_bytes() == mstf[0].read_bytes()
    assert weights_png.read_bytes() == weights.read_bytes()


def test_stdin_file_is_never_the_output(tmp_path, shipped):
    src = png_file(tmp_path / "in.png")
    before = src.read_bytes()
    with open(src, "rb") as stdin:                                   # minstf encode - -o in.png < in.png
        r = _subprocess(["encode", "-", "-o", src, "--force"], shipped, stdin=stdin, capture_output=True, text=True)
    assert r.returncode == BadInput.exit_code, r.stderr
    assert r.stderr == f"minstf: error: {src} is the input file <stdin>: refusing to overwrite it (even with --force)\n"
    assert src.read_bytes() == before


def test_closed_stdout_is_one_line(mstf, shipped):
    r = subprocess.run(["bash", "-c", 'exec "$@" >&-', "_", sys.executable, "-m", "minstf.cli", "decode", mstf[0],
                        "-o", "-"], cwd=REPO, timeout=60, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "MINSTF_WEIGHTS_DIR": str(shipped)})
    assert r.returncode == 1 and r.stderr == "minstf: error: <stdout>: standard output is closed (use -o FILE)\n"


def _into_a_closed_pipe(args, shipped):
    """Run with stdout a pipe whose reader has gone (what `| head -c 10` does once it has its bytes)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return _subprocess(args, shipped, stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)


def test_broken_pipe_ends_quietly(tmp_path, mstf, shipped):
    src = png_file(tmp_path / "in.png")
    for args in (["decode", mstf[0], "-o", "-"], ["demo", src], ["info", mstf[0]]):   # binary, text, text
        r = _into_a_closed_pipe(args, shipped)
        assert r.returncode in (0, 141) and r.stderr == "", (args, r.returncode, r.stderr)


def test_longest_file_names_work(tmp_path, mstf):
    """Names up to NAME_MAX (255 bytes): the temporary file's name is short, not derived from it."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    src = png_file(tmp_path / "in.png")
    out, png = tmp_path / ("m" * (limit - 5) + ".mstf"), tmp_path / ("p" * (limit - 4) + ".png")
    assert run("encode", src, "-o", out).exit_code == 0 and run("decode", out, "-o", png).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.png", out.name, png.name])


def test_errors_name_the_target_not_the_temporary_file(tmp_path, mstf, monkeypatch):
    def refused(src, dst):
        raise PermissionError(13, "Permission denied", src)      # as os.replace names its first argument
    monkeypatch.setattr(fileio.os, "replace", refused)
    out = tmp_path / "out.png"
    r = run("decode", mstf[0], "-o", out, "--force")
    assert_error(r, 1, f"minstf: error: {out}: Permission denied")
    assert fileio.TEMP_PREFIX not in r.stderr and list(tmp_path.iterdir()) == []


def test_directories_and_unreadable_inputs(tmp_path, mstf, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    for args in (["info", folder], ["convert", folder, tmp_path / "w.safetensors"]):
        assert_error(run(*args), 1, f"{folder}: Is a directory")
    for command, out in (("decode", "x.png"), ("encode", "x")):  # a folder is a batch: into a directory
        r = run(command, folder, "-o", tmp_path / out)
        assert r.exit_code == 2 and f"-o {tmp_path / out}/ (created if missing)" in r.stderr
        assert_error(run(command, folder, "-o", f"{tmp_path / out}/"), BadInput.exit_code, f"{folder}: no ")

    def refused(path, *args, **kw):  # chmod 0 means nothing to root: refuse in open() itself
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(fileio, "open", refused, raising=False)
    assert_error(run("decode", mstf[0], "-o", tmp_path / "x.png"), 1, f"{mstf[0]}: Permission denied")
    assert_error(run("info", mstf[0]), 1, f"{mstf[0]}: Permission denied")
    assert list(tmp_path.iterdir()) == [folder]


def test_huge_and_sparse_files_are_refused_unread(tmp_path, mstf, shipped):
    """A valid header followed by 40 GB (sparse) or 1 GB through a pipe: refused from the header and
    the file's size, or after one byte past the payload; the process stays small."""
    sparse = tmp_path / "sparse.mstf"
    sparse.write_bytes(mstf[0].read_bytes())
    try:
        os.truncate(sparse, 40 * 10**9)
    except OSError:
        pytest.skip("no sparse files here")
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE, text=True);"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode, repr(r.stderr))")
    size = len(mstf[0].read_bytes())
    for command in ([sys.executable, "-m", "minstf.cli", "info", str(sparse)],
                    [sys.executable, "-m", "minstf.cli", "decode", str(sparse), "-o", str(tmp_path / "x.png")],
                    ["bash", "-c", f'(cat {mstf[0]}; head -c 1000000000 /dev/zero) | "{sys.executable}" -m minstf.cli '
                                   f'decode - -o {tmp_path / "y.png"}']):
        r = subprocess.run([sys.executable, "-c", measure, *command], cwd=REPO, timeout=60, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO), "MINSTF_WEIGHTS_DIR": str(shipped)})
        kib, code, stderr = r.stdout.split(" ", 2)
        assert int(code) == CorruptFile.exit_code, r.stdout
        assert eval(stderr).startswith("minstf: error: ") and eval(stderr).count("\n") == 1
        assert f"trailing garbage: expected {size} bytes" in stderr
        assert int(kib) < 400_000, f"{command[-1]}: peak RSS {int(kib) // 1024} MB"
    assert not (tmp_path / "x.png").exists()


def test_help_alias_and_kernels_option(tmp_path, mstf, monkeypatch):
    assert run("-h").exit_code == 0 and "Usage: " in run("-h").stdout
    assert "--kernels [fast|reference]" in run("decode", "-h").stdout
    seen = []
    real = cli_module.load_model
    monkeypatch.setattr(cli_module, "load_model", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    assert run("decode", mstf[0], "-o", tmp_path / "x.png").exit_code == 0
    r = run("decode", mstf[0], "-o", tmp_path / "y.png", "--kernels", "reference")
    assert r.exit_code == 0, r.output
    assert seen[0]["kernels"] == "fast" and seen[1]["kernels"] == "reference"
    assert run("decode", mstf[0], "-o", tmp_path / "z.png", "--kernels", "slow").exit_code == 2


# --- bad images --------------------------------------------------------------------------------

def _truncated_png(path):
    png_file(path, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:500])


BAD_IMAGES = {  # name: (make the file, exit code, words)
    "not an image": (lambda p: p.write_text("hello\n"), BadInput.exit_code, "not an image"),
    "empty file": (lambda p: p.write_bytes(b""), BadInput.exit_code, "not an image"),
    "truncated PNG": (_truncated_png, BadInput.exit_code, "cannot decode image"),
    "absurd declared size": (lambda p: p.write_bytes(png_bytes(100_000, 100_000)), BadInput.exit_code,
                             "image too large"),
    "a .mstf file": (lambda p: p.write_bytes(b"MSTF\x01"), BadInput.exit_code, "not an image"),
    "missing": (lambda p: None, 1, "No such file or directory"),
    "unreadable": (lambda p: p.write_bytes(b"x"), 1, "Permission denied"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_images(tmp_path, case, monkeypatch):
    make, code, words = BAD_IMAGES[case]
    src = tmp_path / "bad.png"
    make(src)
    if case == "unreadable":  # chmod 0 means nothing to root: refuse in open() itself

        def refused(path, *args, **kw):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(fileio, "open", refused, raising=False)
    assert_error(run("encode", src, "-o", tmp_path / "out.mstf"), code, words)
    assert not (tmp_path / "out.mstf").exists()


CONVERTED = {  # name: (write the file, words of the note or None)
    "grayscale": (lambda p: png_file(p, IMAGE[..., 0], "L"), None),
    "RGBA": (lambda p: png_file(p, np.dstack([IMAGE, np.full(IMAGE.shape[:2], 7, np.uint8)]), "RGBA"),
             "alpha channel dropped"),
    "palette": (lambda p: Image.fromarray(IMAGE).convert("P").save(p), None),
    "16-bit RGB": (lambda p: p.write_bytes(png_bytes(3, 2, 16, 2, rows=[bytes(range(18))] * 2)), "16-bit colour"),
    "16-bit gray": (lambda p: p.write_bytes(png_bytes(3, 2, 16, 0, rows=[struct.pack(">3H", 0, 2313, 65535)] * 2)),
                    None),
    "1x1": (lambda p: png_file(p, IMAGE[:1, :1]), None),
}


@pytest.mark.parametrize("case", CONVERTED)
def test_converted_images(tmp_path, case):
    make, note = CONVERTED[case]
    src, out = tmp_path / "in.png", tmp_path / "out.mstf"
    make(src)
    r = run("encode", src, "-o", out)
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("minstf: note: ")]
    assert (notes == []) if note is None else (len(notes) == 1 and note in notes[0])
    assert run("encode", src, "-o", out, "--force", "--quiet").stderr == ""
    assert run("decode", out, "-o", tmp_path / "out.png").exit_code == 0


# --- damaged and forged .mstf files -------------------------------------------------------------

def _with_header_crc(data):
    data = bytearray(data)
    struct.pack_into("<I", data, HEADER_BYTES - 4, zlib.crc32(bytes(data[:HEADER_BYTES - 4])))
    return bytes(data)


def _flip(data, offset, bit=0):
    data = bytearray(data)
    data[offset] ^= 1 << bit
    return bytes(data)


def _forge(data, offset, fmt, value):
    data = bytearray(data)
    struct.pack_into(fmt, data, offset, value)
    return _with_header_crc(data)


Z_CRC_AT, Y_CRCS_AT = 49 + 3, 53 + 3
DAMAGE = {  # name: (damage(data), exit code, words)
    "empty": (lambda d: b"", CorruptFile.exit_code, "empty file"),
    "wrong magic": (lambda d: b"MSTG" + d[4:], CorruptFile.exit_code, "bad magic"),
    "a PNG": (lambda d: png_bytes(2, 2), CorruptFile.exit_code, "bad magic"),
    "future version": (lambda d: d[:4] + b"\x02" + d[5:], CorruptFile.exit_code, "newer minstf"),
    "header bit flip": (lambda d: _flip(d, 30, 3), CorruptFile.exit_code, "header checksum"),
    "header CRC bit flip": (lambda d: _flip(d, HEADER_BYTES - 1, 7), CorruptFile.exit_code, "header checksum"),
    "absurd size, CRC fixed": (lambda d: _forge(d, 26, "<I", 1 << 20), CorruptFile.exit_code, "absurd image size"),
    "trailing garbage": (lambda d: d + b"\0", CorruptFile.exit_code, "trailing garbage"),
    "z CRC forged": (lambda d: _forge(d, Z_CRC_AT, "<I", 12345), CorruptFile.exit_code, "hyper-latent"),
    "y CRC forged": (lambda d: _forge(d, Y_CRCS_AT + 4 * 2, "<I", 12345), DecoderMismatch.exit_code,
                     "decoded y slice 2 symbols differ"),
    "fingerprint forged": (lambda d: _forge(d, 10, "<B", d[10] ^ 1), WrongWeights.exit_code, "made with weights"),
}
DAMAGE.update({f"truncated to {n}": (lambda d, n=n: d[:n], CorruptFile.exit_code, "truncated")
               for n in (2, 6, 20, HEADER_BYTES - 1, HEADER_BYTES + 3)})
DAMAGE["truncated by 1"] = (lambda d: d[:-1], CorruptFile.exit_code, "truncated")


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_files(tmp_path, mstf, case):
    damage, code, words = DAMAGE[case]
    bad = tmp_path / "bad.mstf"
    bad.write_bytes(damage(mstf[0].read_bytes()))
    r = run("decode", bad, "-o", tmp_path / "out.png")
    assert_error(r, code, f"{bad}: " if case != "fingerprint forged" else words)
    assert words in r.stderr
    assert not (tmp_path / "out.png").exists()
    if code == CorruptFile.exit_code and "CRC forged" not in case:   # caught from the header alone
        assert_error(run("info", bad), code, words)


@pytest.mark.parametrize("where", [0.0, 0.3, 0.7, 1.0])
def test_payload_bit_flips(tmp_path, mstf, where):
    """Payload damage is caught by the payload checksum before any decoding: CorruptFile."""
    data = mstf[0].read_bytes()
    offset = HEADER_BYTES + round(where * (len(data) - HEADER_BYTES - 1))
    bad = tmp_path / "bad.mstf"
    bad.write_bytes(_flip(data, offset, 5))
    r = run("decode", bad, "-o", tmp_path / "out.png")
    assert_error(r, CorruptFile.exit_code, f"{bad}: ")
    assert "payload checksum" in r.stderr


def test_cupy_backend_unavailable(tmp_path, mstf):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    assert_error(run("decode", mstf[0], "-o", tmp_path / "x.png", "--backend", "cupy"), 1, "needs CuPy")


# --- demo -------------------------------------------------------------------------------------

def test_demo_keeps_files_only_when_asked(tmp_path, monkeypatch):
    src = png_file(tmp_path / "photo.png")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    r = run("demo", src, "-q", "1")
    assert r.exit_code == 0, r.output
    rows = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert list(rows) == ["image", "weights", "rate", "quality", "time", "files"]
    assert "bpp (file)" in rows["rate"] and "bpp (payload)" in rows["rate"]
    assert "PSNR" in rows["quality"] and "dB (8-bit RGB), MS-SSIM 0." in rows["quality"]
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "scratch"]

    keep = tmp_path / "kept"
    assert run("demo", src, "--keep", keep).exit_code == 0
    assert sorted(p.name for p in keep.iterdir()) == ["photo.mstf", "photo.png"]
    assert_error(run("demo", src, "--keep", keep), OutputExists.exit_code)
    assert run("demo", src, "--keep", keep, "--force", "--fast").exit_code == 0


def test_demo_of_the_packaged_sample():
    """`minstf demo` as README's Quick start runs it, through the real entry point."""
    r = subprocess.run([sys.executable, "-m", "minstf.cli", "demo"], capture_output=True, text=True,
                       cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"image    {REPO / 'minstf' / 'data' / 'sample.png'}, 384x256\n")
    assert "bpp (file)" in r.stdout and "MS-SSIM" in r.stdout and r.stderr == ""
