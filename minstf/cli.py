"""The `minstf` command line: a thin layer of click commands over the library.

    minstf encode IN -o OUT.mstf        image -> .mstf      (codec.encode_image)
    minstf decode IN.mstf -o OUT.png    .mstf -> PNG        (codec.decode_image)
    minstf info FILE.mstf               header fields, nothing decoded (codec.read_header)
    minstf demo [IMAGE]                 encode + decode + bpp, PSNR, MS-SSIM, in a temp dir
    minstf convert CKPT OUT             upstream checkpoint -> minstf weight file

Habits of cwebp/dwebp and cjxl/djxl: `-` is stdin or stdout; binary data is never
written to (or read from) a terminal; an existing output is kept unless --force,
and never the input; an output is written to a temporary file next to it and then
renamed, so a failure leaves no half-written or clobbered file. Messages go to
stderr (`minstf: note: ...`, a summary line), so stdout stays free for data.

Every command is wrapped by `reports_errors`: a MinstfError (a problem with the
user's input) becomes one line `minstf: error: ...` on stderr and the error's exit
code (errors.py); so does an OSError (missing file, permission, full disk), with
exit code 1. Anything else is a bug and keeps its traceback. Usage errors are
click's own (exit 2).
"""
import functools
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from . import __version__
from .backend import BACKENDS, BackendUnavailable
from .bitstream import MAGIC, fingerprint_of, unpack
from .codec import decode_image, encode_image, read_header
from .errors import BadInput, MinstfError, OutputExists, WeightsError, WrongWeights
from .image import ms_ssim, psnr_uint8, read_image, to_float, write_png
from .weights import read_metadata
from .zoo import DEFAULT_QUALITY, QUALITIES, default_weights, load_model, weights_dir

SAMPLE = Path(__file__).parent / "data" / "sample.png"


def reports_errors(command):
    """Turn a MinstfError or OSError raised by `command` into `minstf: error: <message>` and an exit code."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MinstfError as err:
            _fail(str(err), err.exit_code)
        except BackendUnavailable as err:
            _fail(str(err), 1)
        except OSError as err:  # missing file, permission, disk full, broken pipe
            where = f"{err.filename}: " if err.filename else ""
            _fail(where + (err.strerror or str(err) or type(err).__name__), 1)
    return wrapper


def _fail(message, code):
    click.echo("minstf: error: " + " ".join(message.split()), err=True)
    sys.exit(code)


def _say(text):
    click.echo("minstf: " + text, err=True)


def _name(path, stream):
    return f"<{stream}>" if path == "-" else str(path)


class _naming:
    """Prefix the message of a MinstfError raised inside with the file's name."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, MinstfError) and not str(err).startswith(self.name):
            raise type(err)(f"{self.name}: {err}") from None


# --- reading and writing files -------------------------------------------------------

def _stdin():
    stream = sys.stdin.buffer
    if stream.isatty():
        raise BadInput("refusing to read binary data from a terminal: pipe it in, or give a file name")
    return stream


def _read_image(src, quiet):
    """uint8 RGB (H, W, 3) of an image file or `-`; notices printed unless quiet."""
    notices = []
    if src == "-":
        f = io.BytesIO(_stdin().read())
        f.name = "<stdin>"
        image = read_image(f, notices=notices)
    else:
        with open(src, "rb") as f:  # an OSError here is reported as such
            image = read_image(f, notices=notices)
    if not quiet:
        for line in notices:
            _say("note: " + line)
    return image


def _read_mstf(src):
    """The bytes of a .mstf file or `-`; a file that does not start like one is refused unread."""
    if src == "-":
        data = _stdin().read()
    else:
        with open(src, "rb") as f:
            data = f.read(len(MAGIC))
            if data == MAGIC:
                data += f.read()
    with _naming(_name(src, "stdin")):
        if data[:len(MAGIC)] != MAGIC:
            unpack(data)  # raises the precise CorruptFile (empty, truncated, bad magic)
        return data


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _check_output(out, force, inputs=(), suffix=None):
    """Refuse an output before any work is done (write_output checks again)."""
    if out == "-":
        if sys.stdout.buffer.isatty():
            raise BadInput("refusing to write binary data to a terminal: use -o FILE, or redirect stdout")
        return
    for src in inputs:
        if src != "-" and _same_file(src, out):
            raise BadInput(f"{out} is the input file: refusing to overwrite it (even with --force)")
    path = Path(out)
    if path.is_dir():
        raise BadInput(f"{out} is a directory")
    if not path.parent.is_dir():
        raise BadInput(f"{out}: directory {path.parent} does not exist")
    if _is_regular_or_missing(path):
        if suffix and path.suffix.lower() != suffix:
            raise BadInput(f"{out}: minstf writes {suffix[1:].upper()} only; name the output *{suffix}")
        if path.exists() and not force:
            raise OutputExists(f"{out} exists (use --force to overwrite)")


def _is_regular_or_missing(path):
    return path.is_file() or not path.exists()  # devices and pipes (/dev/null) are written directly


def write_output(out, data, force):
    """Write bytes to `out` (`-`: stdout) through a temporary file and a rename."""
    if out == "-":
        stream = sys.stdout.buffer
        stream.write(data)
        stream.flush()
        return
    path = Path(out)
    if not _is_regular_or_missing(path):
        with open(path, "wb") as f:
            f.write(data)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        if os.path.exists(tmp):
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


def _png_bytes(image):
    buf = io.BytesIO()
    write_png(image, buf)
    return buf.getvalue()


# --- weights ----------------------------------------------------------------------------

def _claimed_fingerprint(path):
    """The 16-byte fingerprint a weight file's metadata claims, from its header alone
    (load_model then verifies it against the tensors)."""
    meta = read_metadata(path)
    try:
        return fingerprint_of(meta.get("fingerprint", ""))
    except ValueError:
        raise WeightsError(f"{path}: not a minstf weight file (no fingerprint in its metadata)") from None


def _shipped():
    """[(quality, path, fingerprint)] of the shipped weight files present."""
    found = []
    for q in QUALITIES:
        try:
            path = default_weights(q)
        except WeightsError:  # not shipped (yet)
            continue
        found.append((q, path, _claimed_fingerprint(path)))
    return found


def _weights_path(weights, quality):
    if weights and quality:
        raise click.UsageError("give --weights or -q/--quality, not both")
    return Path(weights) if weights else default_weights(quality or DEFAULT_QUALITY)


def _weights_for(header, name, weights, quality):
    """The weight file a .mstf file was made with: the given one if it matches, else the
    shipped one whose fingerprint is in the header."""
    made_with = header.fingerprint.hex()[:12]
    if weights or quality:
        path = _weights_path(weights, quality)
        have = _claimed_fingerprint(path)
        if have != header.fingerprint:
            raise WrongWeights(f"{name} was made with weights {made_with}…, but {path} are "
                               f"{have.hex()[:12]}…")
        return path
    shipped = _shipped()
    if not shipped:
        raise WeightsError(f"no shipped weights in {weights_dir()}: pass --weights "
                           f"(or set MINSTF_WEIGHTS_DIR)")
    for _, path, fp in shipped:
        if fp == header.fingerprint:
            return path
    listed = ", ".join(f"q{q} {fp.hex()[:12]}…" for q, _, fp in shipped)
    raise WrongWeights(f"{name} was made with weights {made_with}…, none of the shipped ones "
                       f"({listed}): pass the weights it was made with, --weights FILE")


def _load(path, backend, verbose):
    t = time.perf_counter()
    model = load_model(path, backend=backend)
    if verbose:
        _say(f"weights {path} (fingerprint {model.fingerprint[:12]}…), backend {backend}, "
             f"loaded in {time.perf_counter() - t:.2f} s")
    return model


# --- options shared by the commands ------------------------------------------------------

def weights_options(command):
    for option in reversed((
            click.option("--weights", "-w", type=click.Path(dir_okay=False),
                         help="A minstf weight file (default: the shipped weights)."),
            click.option("-q", "--quality", type=click.IntRange(min(QUALITIES), max(QUALITIES)),
                         help=f"Shipped weights of this quality, {QUALITIES[0]} (low rate) .. "
                              f"{QUALITIES[-1]} (high rate)."),
            click.option("--backend", type=click.Choice(BACKENDS), default="numpy", show_default=True,
                         help="Where the network runs (cupy: a CUDA GPU)."))):
        command = option(command)
    return command


def output_options(command):
    for option in reversed((
            click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file."),
            click.option("-v", "--verbose", is_flag=True, help="Say more: weights, modes, timings."),
            click.option("--quiet", is_flag=True, help="Print nothing but errors."))):
        command = option(command)
    return command


def _verbosity(verbose, quiet):
    if verbose and quiet:
        raise click.UsageError("give -v/--verbose or --quiet, not both")


# --- the commands -------------------------------------------------------------------------

@click.group()
@click.version_option(__version__, prog_name="minstf")
def main():
    """minstf: the STF learned image codec in NumPy/CuPy."""


@main.command()
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="The .mstf file to write ('-': stdout).")
@weights_options
@click.option("--portable/--fast", default=True, show_default=True,
              help="Portable: entropy parameters in float64, so the file decodes on other machines and "
                   "backends. Fast: float32, decodable only where float32 rounds alike (same machine/backend).")
@output_options
@reports_errors
def encode(src, out, weights, quality, backend, portable, force, verbose, quiet):
    """Compress an image (PNG, JPEG, ...; '-': stdin) to a .mstf file."""
    _verbosity(verbose, quiet)
    _check_output(out, force, [src])
    image = _read_image(src, quiet)
    model = _load(_weights_path(weights, quality), backend, verbose)
    t = time.perf_counter()
    data, stats = encode_image(model, image, portable=portable)
    seconds = time.perf_counter() - t
    write_output(out, data, force)
    if not quiet:
        _say(f"{_name(src, 'stdin')} -> {_name(out, 'stdout')}: {stats.width}x{stats.height}, "
             f"{stats.file_bytes:,} bytes, {stats.bpp:.4f} bpp ({stats.payload_bpp:.4f} payload), "
             f"{'portable' if portable else 'fast'} mode, {seconds:.2f} s")


@main.command()
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="The PNG file to write ('-': stdout).")
@weights_options
@output_options
@reports_errors
def decode(src, out, weights, quality, backend, force, verbose, quiet):
    """Decompress a .mstf file ('-': stdin) to a PNG image.

    Without --weights or -q, the shipped weights the file was made with are found by
    their fingerprint.
    """
    _verbosity(verbose, quiet)
    _check_output(out, force, [src], suffix=".png")
    data = _read_mstf(src)
    name = _name(src, "stdin")
    with _naming(name):
        header, _, _ = read_header(data)
    model = _load(_weights_for(header, name, weights, quality), backend, verbose)
    t = time.perf_counter()
    with _naming(name):
        image, header = decode_image(model, data)
    seconds = time.perf_counter() - t
    write_output(out, _png_bytes(image), force)
    if not quiet:
        bpp = 8 * len(data) / (header.width * header.height)
        _say(f"{name} -> {_name(out, 'stdout')}: {header.width}x{header.height}, {len(data):,} bytes, "
             f"{bpp:.4f} bpp, {seconds:.2f} s")


@main.command()
@click.argument("src", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--weights", "-w", type=click.Path(dir_okay=False),
              help="Also say whether this weight file can decode FILE (exit code 5 if not).")
@reports_errors
def info(src, weights):
    """Print the header of a .mstf file without decoding it."""
    data = _read_mstf(src)
    name = _name(src, "stdin")
    with _naming(name):
        header, z, y = read_header(data)
    h, w = header.height, header.width
    Hp, Wp = header.padded_size
    try:
        shipped = [f"shipped q{q}" for q, _, fp in _shipped() if fp == header.fingerprint]
    except WeightsError:  # a broken shipped weight file is decode's business, not info's
        shipped = []
    rows = [
        ("file", f"{name}, {len(data):,} bytes, format version {header.version}"),
        ("model", header.model_id),
        ("weights", f"{header.fingerprint.hex()[:12]}… ({', '.join(shipped) or 'not a shipped one'})"),
        ("image", f"{w}x{h}, coded as {Wp}x{Hp} (padding left, top, right, bottom: "
                  f"{', '.join(map(str, header.padding))})"),
        ("mode", "portable (entropy parameters in float64)" if header.portable
         else "float32 (fast; a decoder on another machine or backend may disagree)"),
        ("slices", str(header.num_slices)),
        ("payload", f"{len(z) + len(y):,} bytes (z {len(z):,}, y {len(y):,}); header "
                    f"{len(data) - len(z) - len(y)} bytes"),
        ("bpp", f"{8 * len(data) / (h * w):.4f} (file), {8 * (len(z) + len(y)) / (h * w):.4f} (payload)"),
    ]
    for key, value in rows:
        click.echo(f"{key:<9}{value}")
    if weights:
        have = _claimed_fingerprint(weights)
        match = have == header.fingerprint
        click.echo(f"{'match':<9}{'yes' if match else 'NO'}: {weights} are {have.hex()[:12]}…")
        if not match:
            sys.exit(WrongWeights.exit_code)


@main.command()
@click.argument("src", metavar="[IMAGE]", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@weights_options
@click.option("--portable/--fast", default=True, show_default=True, help="Entropy-parameter mode (see encode).")
@click.option("--keep", type=click.Path(file_okay=False),
              help="Keep the .mstf and decoded PNG in this folder (default: a temporary one, deleted).")
@output_options
@reports_errors
def demo(src, weights, quality, backend, portable, keep, force, verbose, quiet):
    """Encode and decode an image (default: a packaged sample) and print bpp, PSNR and MS-SSIM."""
    _verbosity(verbose, quiet)
    src = src or str(SAMPLE)
    stem = "stdin" if src == "-" else Path(src).stem
    image = _read_image(src, quiet)
    path = _weights_path(weights, quality)
    model = _load(path, backend, verbose)
    with tempfile.TemporaryDirectory(prefix="minstf-demo-") as tmp:
        folder = Path(keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        mstf, png = str(folder / f"{stem}.mstf"), str(folder / f"{stem}.png")
        for out in (mstf, png):
            _check_output(out, force, [src])
        t0 = time.perf_counter()
        data, stats = encode_image(model, image, portable=portable)
        t1 = time.perf_counter()
        write_output(mstf, data, force)
        with open(mstf, "rb") as f, _naming(mstf):
            decoded, _ = decode_image(model, f.read())
        t2 = time.perf_counter()
        write_output(png, _png_bytes(decoded), force)
    x, x_hat = to_float(image), to_float(decoded)
    click.echo(f"image    {_name(src, 'stdin')}, {stats.width}x{stats.height}")
    click.echo(f"weights  {path} ({model.fingerprint[:12]}…), backend {backend}, "
               f"{'portable' if portable else 'fast'} mode")
    click.echo(f"rate     {stats.file_bytes:,} bytes: {stats.bpp:.4f} bpp (file), "
               f"{stats.payload_bpp:.4f} bpp (payload)")
    click.echo(f"quality  PSNR {psnr_uint8(image, decoded):.2f} dB (8-bit RGB), MS-SSIM {ms_ssim(x, x_hat):.4f}")
    click.echo(f"time     encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s")
    click.echo(f"files    {'kept in ' + str(folder) if keep else 'none kept (use --keep DIR)'}")


def _int_list(ctx, param, value):
    """'1,2,3' -> [1, 2, 3]; 'none' -> []; not given -> None."""
    if value is None or value.strip().lower() == "none":
        return None if value is None else []
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers or 'none', got {value!r}") from None


@main.command("eval")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", default="minstf-eval", show_default=True, type=click.Path(file_okay=False),
              help="Folder for <codec>.json and rd.png (made if missing).")
@click.option("--qualities", callback=_int_list, help="Shipped weights to evaluate: 1,2,3 (default) or none.")
@click.option("--weights", "-w", multiple=True, type=click.Path(dir_okay=False),
              help="Evaluate this weight file (repeat for more) instead of the shipped ones.")
@click.option("--baselines", default="jpeg,webp,avif", show_default=True, help="Pillow codecs, or none.")
@click.option("--jpeg-qualities", default="10,20,30,45,60,75,85,90", show_default=True, callback=_int_list)
@click.option("--webp-qualities", default="0,5,15,30,50,70,80,90", show_default=True, callback=_int_list)
@click.option("--avif-qualities", default="10,20,30,40,50,60,70,80", show_default=True, callback=_int_list)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (sorted by name).")
@click.option("--backend", type=click.Choice(BACKENDS), default="numpy", show_default=True,
              help="Where the network runs (cupy: a CUDA GPU).")
@click.option("--no-plot", is_flag=True, help="Skip rd.png (and matplotlib).")
@output_options
@reports_errors
def eval_(folder, out_dir, qualities, weights, baselines, jpeg_qualities, webp_qualities, avif_qualities,
          limit, backend, no_plot, force, verbose, quiet):
    """Rate-distortion evaluation of minstf and Pillow's JPEG, WebP, AVIF on the images of DIR:
    a table and BD-rates on stdout, CompressAI-style <codec>.json and rd.png in --out."""
    import json

    from .tooling import evaluate as ev

    _verbosity(verbose, quiet)
    if weights and qualities is not None:
        raise click.UsageError("give --weights or --qualities, not both")
    runs = [(Path(w).stem, Path(w)) for w in weights] or \
        [(q, default_weights(q)) for q in (QUALITIES if qualities is None else qualities)]
    points = {"jpeg": jpeg_qualities, "webp": webp_qualities, "avif": avif_qualities}
    codecs = [] if baselines.strip().lower() == "none" else [c.strip().lower() for c in baselines.split(",")]
    for codec in codecs:
        for q in points.get(codec, [None]):
            ev.check_quality(codec, q)
    codecs = sorted((c for c in codecs if points[c]), key=ev.BASELINE_ORDER.index)
    if not runs and not codecs:
        raise click.UsageError("nothing to evaluate")
    paths = ev.image_paths(folder, limit)
    out, names = Path(out_dir), (["minstf.json"] if runs else []) + [f"{c}.json" for c in codecs]
    out.mkdir(parents=True, exist_ok=True)
    for name in names + ([] if no_plot else ["rd.png"]):
        _check_output(str(out / name), force)
    if not no_plot:
        ev.check_plotting()
    results, total = [], len(paths) * (len(runs) + sum(len(points[c]) for c in codecs))
    shown = not quiet and sys.stderr.isatty()             # (click 8.1 has no hidden=)
    with click.progressbar(length=total, label="evaluating", file=sys.stderr if shown else io.StringIO()) as bar:
        if runs:
            done, used = [], []
            for label, path in runs:
                model = _load(path, backend, verbose)
                done.append((label, ev.evaluate_minstf(model, paths, lambda _: bar.update(1))))
                used.append(f"{label}: {path.name} ({model.fingerprint[:12]})")
            results.append(ev.summarize("minstf", f"{ev.MINSTF_DESCRIPTION} Weights {'; '.join(used)}. "
                                                  f"Backend {backend}.", done))
            drift = sum(not row["forward-matches-decoded"] for _, rows in done for row in rows)
            if drift and not quiet:
                _say(f"note: {drift} decoded images differ from forward()'s: their psnr-float is forward()'s")
        for codec in codecs:
            done = [(q, ev.evaluate_pillow(codec, q, paths, lambda _: bar.update(1))) for q in points[codec]]
            results.append(ev.summarize(ev.PILLOW_NAMES[codec], ev.pillow_description(codec), done))
    click.echo(f"{folder}: {len(paths)} images\n{ev.format_table(results)}\n\n{ev.bd_report(results)}")
    for res, name in zip(results, names):
        write_output(str(out / name), (json.dumps(res, indent=2) + "\n").encode(), force)
    if not no_plot:
        buf = io.BytesIO()
        ev.plot_rd(results, buf, title=f"{Path(folder).resolve().name}: {len(paths)} images")
        write_output(str(out / "rd.png"), buf.getvalue(), force)
    if not quiet:
        _say(f"wrote {', '.join(names + ([] if no_plot else ['rd.png']))} to {out}")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--name", help="A name stored in the weight file's metadata.")
@reports_errors
def convert(checkpoint, out, force, name):
    """Convert an upstream STF checkpoint (torch .pth.tar, or safetensors) to a minstf weight file.

    The configuration is inferred from the checkpoint's shapes; torch is not needed.
    """
    from .weights import convert as convert_weights

    w = convert_weights(checkpoint, out, force=force, name=name)
    n = sum(a.size for a in w.params.values())
    click.echo(f"wrote {out}: {len(w.params)} parameters ({n:,} values), "
               f"fingerprint {w.fingerprint[:16]}", err=True)


@main.command("crosscheck")
@click.argument("src", metavar="IMAGE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--weights", "-w", type=click.Path(dir_okay=False), help="A minstf weight file (default: shipped q2).")
@click.option("-q", "--quality", type=click.IntRange(min(QUALITIES), max(QUALITIES)), help="Shipped weights.")
@click.option("--synthetic", type=click.Choice(["full", "small"]),
              help="Synthetic recipe weights (minstf.synthetic) of the full-size STF or the small configuration.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="With --synthetic: 0 is the golden recipe, other seeds perturb it.")
@click.option("--pad", "pad_to_eval", is_flag=True,
              help="Zero-pad to a multiple of 64 as the evaluation does (needed unless the size already fits).")
@reports_errors
def crosscheck_(src, weights, quality, synthetic, seed, pad_to_eval):
    """Compare minstf with the PyTorch mirror stage by stage on IMAGE (needs torch); exit code 1 if any
    stage or decision is NOT OK. Table, decisions and bpp on stdout (minstf/tooling/crosscheck.py)."""
    from .tooling import crosscheck as xc
    from .weights import load_weights

    xc.require_torch()
    if sum(map(bool, (weights, quality, synthetic))) > 1 or (seed and not synthetic):
        raise click.UsageError("give at most one of --weights, -q/--quality, --synthetic; --seed only with --synthetic")
    image = _read_image(src, False)
    if synthetic:
        from .mirror.configs import CONFIGS
        config, tables, what = CONFIGS[synthetic], None, f"synthetic {synthetic}, seed {seed}"
        params = xc.synthetic_params(config, seed)
    else:
        path = _weights_path(weights, quality)
        w = load_weights(path)
        config, params, tables, what = w.config, w.params, w.tables, f"{path} ({w.fingerprint[:12]}…)"
    with _naming(_name(src, "stdin")):
        result, ltrb = xc.crosscheck_image(image, params, config, tables, pad_to_eval)
    h, w_ = image.shape[:2]
    click.echo(f"image    {_name(src, 'stdin')}, {w_}x{h}" + (f", padded to {result.shape[3]}x{result.shape[2]} "
               f"(left, top, right, bottom: {', '.join(map(str, ltrb))})" if any(ltrb) else ""))
    click.echo(f"weights  {what}")
    click.echo(xc.format_report(result))
    sys.exit(0 if result.ok else 1)

if __name__ == "__main__":  # python -m minstf.cli, as the tests run it without installing
    main(prog_name="minstf")
