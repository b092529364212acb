"""Safe file I/O for the command line: nothing a user gave is ever overwritten.

Rules (cwebp/dwebp and cjxl/djxl habits), each enforced here and tested in test_cli.py:

- `-` is stdin or stdout; binary data is never read from or written to a terminal, and a
  closed stdout is an error of one line, not a traceback.
- An output is never one of the command's inputs (the image, the .mstf file, the weight
  file, the checkpoint, and stdin when it is a regular file), --force or not. Files are
  compared by device and inode (st_dev, st_ino), never by name, so other spellings, hard
  links and symbolic links are all caught.
- An existing output is kept unless `force`.
- A file is written to a temporary file next to it, `.mstf-XXXXXXXX.tmp` (short, so that
  any target name the file system allows, up to NAME_MAX, works), then renamed; a failure
  leaves neither a half-written nor a clobbered file, and its message names the target,
  never the temporary file. Devices and pipes (/dev/null) are written directly.

An OSError keeps its errno and carries the user's file name, so that cli.reports_errors
prints `minstf: error: <file>: <reason>` with exit code 1.
"""
import errno
import io
import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import bitstream
from .errors import BadInput, MinstfError, OutputExists
from .image import read_image, write_png

TEMP_PREFIX, TEMP_SUFFIX = ".mstf-", ".tmp"


def display_name(path, stream):
    """What messages call a file: its name, or `<stdin>` / `<stdout>` for `-`."""
    return f"<{stream}>" if path == "-" else str(path)


# --- inputs -----------------------------------------------------------------------------

def stdin():
    """The binary stdin, unless it is a terminal."""
    if sys.stdin is None:
        raise OSError(errno.EBADF, "standard input is closed", "<stdin>")
    stream = sys.stdin.buffer
    if stream.isatty():
        raise BadInput("refusing to read binary data from a terminal: pipe it in, or give a file name")
    return stream


@contextmanager
def opened(src):
    """A binary stream of the file `src` or of stdin (`-`). A directory, a missing or an
    unreadable file raise OSError (exit code 1)."""
    if src == "-":
        yield stdin()
        return
    with open(src, "rb") as f:
        yield f


def check_readable(src):
    """Raise OSError (exit code 1) unless `src` is a file that can be opened for reading."""
    with opened(src):
        pass


@contextmanager
def naming(name):
    """Prefix the message of a MinstfError raised inside with the file's name."""
    try:
        yield
    except MinstfError as err:
        if str(err).startswith(name):
            raise
        raise type(err)(f"{name}: {err}") from None


def read_image_file(src, notices=None, orient=False):
    """uint8 RGB (H, W, 3) of an image file or `-` (stdin); lossy conversions noted in `notices`;
    orient: apply the EXIF orientation (image.read_image)."""
    with opened(src) as f:
        if src == "-":
            f = io.BytesIO(f.read())
            f.name = "<stdin>"
        return read_image(f, notices=notices, orient=orient)


def read_mstf(src):
    """(bytes, (Header, z, y)) of a .mstf file or `-`: the header is checked before the payload
    is read, and only the declared payload is read (bitstream.read_bytes)."""
    with opened(src) as f, naming(display_name(src, "stdin")):
        data = bitstream.read_bytes(f)
        return data, bitstream.unpack(data)


def identity(src):
    """(st_dev, st_ino) of an input file, of stdin when it is a regular file (`-`), else None."""
    try:
        if src == "-":
            if sys.stdin is None:
                return None
            st = os.fstat(sys.stdin.fileno())
            return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
        st = os.stat(src)
        return st.st_dev, st.st_ino
    except (OSError, ValueError, AttributeError):  # missing; CliRunner's stdin has no fileno
        return None


# --- outputs ----------------------------------------------------------------------------

def check_output(out, force, inputs=(), suffix=None):
    """Refuse an output before any work is done (write_output checks again): an input of the
    command (`inputs`: paths or `-`), a terminal, a directory, an existing file without force."""
    if out == "-":
        stdout()
        return
    path = Path(out)
    _not_an_input(path, inputs)
    if path.is_dir():
        raise OSError(errno.EISDIR, "Is a directory", str(out))
    if not path.parent.is_dir():
        raise BadInput(f"{out}: directory {path.parent} does not exist")
    if _is_regular_or_missing(path):
        if suffix and path.suffix.lower() != suffix:
            raise BadInput(f"{out}: minstf writes {suffix[1:].upper()} only; name the output *{suffix}")
        if path.exists() and not force:
            raise OutputExists(f"{out} exists (use --force to overwrite)")


def _not_an_input(path, inputs):
    try:
        st = os.stat(path)
    except OSError:  # missing (or a dangling link): no input can be there
        return
    for src in inputs:
        if identity(src) == (st.st_dev, st.st_ino):
            raise BadInput(f"{path} is the input file {display_name(src, 'stdin')}: refusing to "
                           f"overwrite it (even with --force)")


def _is_regular_or_missing(path):
    return path.is_file() or not path.exists()  # devices and pipes (/dev/null) are written directly


def stdout():
    """The binary stdout, unless it is closed or a terminal."""
    if sys.stdout is None:  # `>&-`: Python starts without a stdout
        raise OSError(errno.EBADF, "standard output is closed (use -o FILE)", "<stdout>")
    stream = sys.stdout.buffer
    if stream.isatty():
        raise BadInput("refusing to write binary data to a terminal: use -o FILE, or redirect stdout")
    return stream


def default_output(kind, src, out):
    """The output of one file: `out`, or without -o the input's name with .mstf (encode) or
    .png (decode) next to it (photo.png -> photo.mstf -> photo.png); never for `-`."""
    if out is not None:
        return out
    if src == "-":
        raise BadInput(f"{kind} from stdin needs -o FILE (or -o - for stdout)")
    return str(Path(src).with_suffix(".mstf" if kind == "encode" else ".png"))


def png_bytes(image):
    """The PNG file of a uint8 (H, W, 3) image, as bytes for write_output."""
    buf = io.BytesIO()
    write_png(image, buf)
    return buf.getvalue()


def stdout_to_devnull():
    """After a BrokenPipeError on stdout (`| head`): point stdout at /dev/null, so that Python's
    final flush at exit has nowhere to fail (the Python docs' recipe for SIGPIPE)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no real stdout (CliRunner)
        pass


def write_output(out, data, force, inputs=()):
    """Write bytes to `out` (`-`: stdout) through a temporary file and a rename."""
    if out == "-":
        stream = stdout()
        stream.write(data)
        stream.flush()
        return
    path = Path(out)
    _not_an_input(path, inputs)
    try:
        if not _is_regular_or_missing(path):
            with open(path, "wb") as f:
                f.write(data)
            return
        _write_via_temporary(path, data, force)
    except OSError as err:  # named after the target, never the temporary file
        raise OSError(err.errno, err.strerror or str(err), str(out)) from None


def _write_via_temporary(path, data, force):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        if force:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _link_no_clobber(tmp, path):
    """Rename tmp to path unless path exists, atomically where the file system has hard links."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExists(f"{path} exists (use --force to overwrite)") from None
    except OSError:  # no hard links here: check, then rename
        if path.exists():
            raise OutputExists(f"{path} exists (use --force to overwrite)") from None
        os.replace(tmp, path)
