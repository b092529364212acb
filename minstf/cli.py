"""The `minstf` command line: a thin layer of click commands over the library.

    encode IN [-o OUT.mstf] image -> .mstf (batch.encode_file)     info FILE     the header (bitstream)
    decode IN [-o OUT.png]  .mstf -> PNG, TIFF.. (batch.decode_file) demo [IMAGE]  encode + decode + numbers
    encode|decode IN... -o DIR/   many files, here or on Dask (batch.py)
    eval DIR                R-D against Pillow (tooling/evaluate)  convert CKPT OUT  checkpoint -> weights
    crosscheck IMAGE        minstf vs the PyTorch mirror (tooling/crosscheck)

Files go through fileio.py, which holds the rules (`-`, terminals, no output is ever an input,
--force, temporary file and rename). Messages go to stderr, so stdout stays free for data.
`reports_errors` turns a MinstfError into one line `minstf: error: ...` and its exit code
(errors.py), an OSError into one line and exit code 1, a closed pipe on stdout (`| head`) into
a quiet exit 141 (the shell's SIGPIPE code); anything else is a bug and keeps its traceback.
"""
import functools
import io
import os
import signal
import sys
import time
from pathlib import Path

import click

from . import __version__, batch, bitstream, fileio, progress
from .backend import BACKENDS, BackendUnavailable
from .config import SYNTHETIC_CONFIGS
from .errors import MinstfError, WrongWeights
from .fileio import display_name as _name
from .switch import KERNELS
from .tooling import evaluate
from .zoo import QUALITIES, claimed_fingerprint, load_model, shipped_name, weights_path

SAMPLE = Path(__file__).parent / "data" / "sample.png"


def reports_errors(command):
    """Turn a MinstfError or OSError raised by `command` into `minstf: error: <message>` and an exit code."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            try:
                return command(*args, **kwargs)
            finally:  # a closed pipe shows here, not as "Exception ignored" at exit
                if sys.stdout is not None:
                    sys.stdout.flush()
        except BrokenPipeError:
            fileio.stdout_to_devnull()
            sys.exit(128 + signal.SIGPIPE)
        except MinstfError as err:
            _fail(str(err), err.exit_code)
        except BackendUnavailable as err:
            _fail(str(err), 1)
        except OSError as err:  # missing file, directory, permission, disk full
            where = f"{err.filename}: " if err.filename else ""
            _fail(where + (err.strerror or str(err) or type(err).__name__), 1)
    return wrapper


def _fail(message, code):
    try:
        click.echo("minstf: error: " + " ".join(message.split()), err=True)
    finally:
        sys.exit(code)


def _say(text):
    click.echo("minstf: " + text, err=True)


def _read_image(src, quiet, orient=False):
    notices = []
    image = fileio.read_image_file(src, notices, orient)
    for line in [] if quiet else notices:
        _say("note: " + line)
    return image


def _weights(weights, quality):
    if weights and quality:
        raise click.UsageError("give --weights or -q/--quality, not both")
    return weights_path(weights, quality)


def _load(path, backend, kernels, verbose):
    t = time.perf_counter()
    model = load_model(path, backend=backend, kernels=kernels)
    if verbose:
        _say(f"weights {path} (fingerprint {model.fingerprint[:12]}…), backend {backend}, kernels {kernels}, "
             f"loaded in {time.perf_counter() - t:.2f} s")
    return model


# --- options shared by the commands ------------------------------------------------------

def _options(*options):
    return lambda command: functools.reduce(lambda c, option: option(c), reversed(options), command)


OUTPUT = click.Path(allow_dash=True)
KERNELS_OPTION = click.option("--kernels", type=click.Choice(KERNELS), default="fast", show_default=True,
                              help="Kernels: fast, or reference (minstf/reference, written to be read; slow).")
weights_options = _options(
    click.option("--weights", "-w", type=click.Path(), help="A minstf weight file (default: the shipped weights)."),
    click.option("-q", "--quality", type=click.IntRange(min(QUALITIES), max(QUALITIES)),
                 help=f"Shipped weights of this quality, {QUALITIES[0]} (low rate) .. {QUALITIES[-1]} (high rate)."),
    click.option("--backend", type=click.Choice(BACKENDS), default="numpy", show_default=True,
                 help="Where the network runs (cupy: a CUDA GPU)."),
    KERNELS_OPTION)
output_options = _options(
    click.option("--force", "-f", is_flag=True, help="Overwrite an existing output file (never an input)."),
    click.option("-v", "--verbose", is_flag=True, help="Say more: weights, modes, timings."),
    click.option("--quiet", is_flag=True, help="Print nothing but errors."))
THREADS_OPTION = click.option("--threads", type=click.IntRange(min=1), metavar="N", help=progress.THREADS_HELP)
TILE_OPTION = click.option(
    "--tile", default="auto", show_default=True, metavar="ROWS|auto|0", callback=lambda c, p, v: _tile(v),
    help="Run the analysis/synthesis in bands of ROWS image rows: memory follows the band, the image is the "
         "same (docs/tiling.md). auto: bands above 4 megapixels; 0: the whole image at once.")
PORTABLE_OPTION = click.option(
    "--portable/--fast", default=True, show_default=True,
    help="Portable: entropy parameters in float64, so the file decodes on other machines and backends. "
         "Fast: float32, decodable only where float32 rounds alike (same machine/backend).")


def _tile(value):
    if value != "auto" and not (value.isdigit() and (int(value) == 0 or int(value) >= 16)):
        raise click.BadParameter(f"{value!r}: give auto, 0 or a number of rows (at least 16)")
    return value if value == "auto" else int(value)


def _verbosity(verbose, quiet):
    if verbose and quiet:
        raise click.UsageError("give -v/--verbose or --quiet, not both")


# --- the commands -------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minstf")
def main():
    """minstf: the STF learned image codec in NumPy/CuPy."""


batch_options = _options(
    click.option("--manifest", type=click.Path(dir_okay=False), help="Batch: the JSON-lines log (DIR/manifest.jsonl)."),
    click.option("--workers", type=click.IntRange(min=1), help="Batch: on a local Dask cluster of N processes."),
    click.option("--scheduler", metavar="ADDRESS", help="Batch: on the workers of this Dask scheduler."))


@main.command()
@click.argument("srcs", metavar="IN...", nargs=-1, required=True, type=OUTPUT)
@click.option("-o", "--output", "out", type=OUTPUT, help="The .mstf file ('-': stdout; default: IN.mstf), or DIR/.")
@weights_options
@PORTABLE_OPTION
@TILE_OPTION
@THREADS_OPTION
@batch_options
@output_options
@reports_errors
def encode(srcs, out, weights, quality, backend, kernels, portable, tile, threads, force, verbose, quiet, **batched):
    """Compress an image (PNG, JPEG, ...; '-': stdin) to a .mstf file, EXIF orientation applied, metadata
    dropped; several images or directories (recursed) into DIR/, names kept, existing outputs skipped."""
    _verbosity(verbose, quiet)
    s = batch.Settings(str(_weights(weights, quality)), None, backend, kernels, portable, force, tile)
    with progress.threads(threads):
        if batch.is_batch(srcs, out, **batched):
            sys.exit(batch.run("encode", srcs, out, s, quiet=quiet, verbose=verbose, **batched))
        batch.single("encode", srcs[0], out, s, lambda p: _load(p, backend, kernels, verbose), _say, quiet, verbose)


@main.command()
@click.argument("srcs", metavar="IN...", nargs=-1, required=True, type=OUTPUT)
@click.option("-o", "--output", "out", type=OUTPUT,
              help="The image, in the lossless format its name says: .png .ppm .pnm .tif .tiff .bmp .tga .webp "
                   "('-': PNG on stdout; default: IN.png), or DIR/.")
@weights_options
@TILE_OPTION
@THREADS_OPTION
@batch_options
@output_options
@reports_errors
def decode(srcs, out, weights, quality, backend, kernels, tile, threads, force, verbose, quiet, **batched):
    """Decompress a .mstf file ('-': stdin) to a lossless image (without --weights or -q: the shipped
    weights it was made with, found by their fingerprint); several, or directories, into DIR/."""
    _verbosity(verbose, quiet)
    if weights or quality:
        _weights(weights, quality)                               # not both; the file of -q exists
    s = batch.Settings(weights, quality, backend, kernels, force=force, tile=tile)
    with progress.threads(threads):
        if batch.is_batch(srcs, out, **batched):
            sys.exit(batch.run("decode", srcs, out, s, quiet=quiet, verbose=verbose, **batched))
        batch.single("decode", srcs[0], out, s, lambda p: _load(p, backend, kernels, verbose), _say, quiet, verbose)


@main.command()
@click.argument("src", metavar="FILE", type=OUTPUT)
@click.option("--weights", "-w", type=click.Path(), help="Also say whether these weights decode FILE (else exit 5).")
@reports_errors
def info(src, weights):
    """Print the header of a .mstf file without decoding it."""
    data, (header, z, y) = fileio.read_mstf(src)
    rows = [("file", f"{_name(src, 'stdin')}, {len(data):,} bytes, format version {header.version}")]
    rows += bitstream.describe(header, len(data), len(z), len(y), shipped_name(header.fingerprint))
    for key, value in rows:
        click.echo(f"{key:<9}{value}")
    if weights:
        have = claimed_fingerprint(weights)
        match = have == header.fingerprint
        click.echo(f"{'match':<9}{'yes' if match else 'NO'}: {weights} are {have.hex()[:12]}…")
        if not match:
            sys.exit(WrongWeights.exit_code)


@main.command()
@click.argument("src", metavar="[IMAGE]", required=False, type=OUTPUT)
@weights_options
@PORTABLE_OPTION
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the .mstf and PNG files in this folder.")
@THREADS_OPTION
@output_options
@reports_errors
def demo(src, weights, quality, backend, kernels, portable, keep, threads, force, verbose, quiet):
    """Encode and decode an image (default: a packaged sample) and print bpp, PSNR and MS-SSIM."""
    _verbosity(verbose, quiet)
    src, path = src or str(SAMPLE), _weights(weights, quality)
    image = _read_image(src, quiet, orient=True)
    model = _load(path, backend, kernels, verbose)
    with progress.threads(threads):
        click.echo(evaluate.run_demo(model, image, src, path, backend, portable, keep, force, inputs=[src, path]))


def _int_list(ctx, param, value):
    try:
        return evaluate.int_list(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@main.command("eval")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default="minstf-eval", show_default=True, help="Folder for <codec>.json, rd.png.")
@click.option("--qualities", callback=_int_list, help="Shipped weights to evaluate: 1,2,3 (default) or none.")
@click.option("--weights", "-w", multiple=True, help="Evaluate this weight file (repeat for more), not the shipped.")
@click.option("--baselines", default="jpeg,webp,avif", show_default=True, help="Pillow codecs, or none.")
@click.option("--jpeg-qualities", default="10,20,30,45,60,75,85,90", show_default=True, callback=_int_list)
@click.option("--webp-qualities", default="0,5,15,30,50,70,80,90", show_default=True, callback=_int_list)
@click.option("--avif-qualities", default="10,20,30,40,50,60,70,80", show_default=True, callback=_int_list)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (sorted by name).")
@click.option("--backend", type=click.Choice(BACKENDS), default="numpy", show_default=True, help="numpy or cupy (GPU)")
@click.option("--no-plot", is_flag=True, help="Skip rd.png (and matplotlib).")
@click.option("--workers", type=click.IntRange(min=1), help="Evaluate on a local Dask cluster of N processes.")
@click.option("--scheduler", metavar="ADDRESS", help="Evaluate on a running Dask cluster (tcp://host:8786).")
@output_options
@reports_errors
def eval_(folder, out_dir, qualities, weights, baselines, jpeg_qualities, webp_qualities, avif_qualities,
          limit, backend, no_plot, workers, scheduler, force, verbose, quiet):
    """Rate-distortion evaluation of minstf and Pillow's JPEG, WebP, AVIF on the images of DIR:
    a table and BD-rates on stdout, CompressAI-style <codec>.json and rd.png in --out."""
    _verbosity(verbose, quiet)
    runs, codecs = evaluate.plan(weights, qualities, baselines, workers, scheduler)  # or a usage error
    points = {"jpeg": jpeg_qualities, "webp": webp_qualities, "avif": avif_qualities}
    shown = not quiet and sys.stderr.isatty()             # (click 8.1 has no hidden=)
    steps, tasks = (f(folder, limit, runs, codecs, points) for f in (evaluate.total_steps, evaluate.total_tasks))
    with click.progressbar(length=steps, label="evaluating", file=sys.stderr if shown else io.StringIO()) as bar:
        tick = evaluate.TaskProgress(bar, tasks, None if shown or quiet else _say)  # on a pipe: a line per task
        evaluate.run_eval(folder, out_dir, runs, codecs, points, limit, backend, not no_plot, force,
                          load=lambda path: _load(path, backend, "fast", verbose), say=None if quiet else _say,
                          progress=tick, workers=workers, scheduler=scheduler)


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists (never the checkpoint).")
@click.option("--name", help="A name stored in the weight file's metadata.")
@reports_errors
def convert(checkpoint, out, force, name):
    """Convert an upstream checkpoint, STF or WACNN (torch .pth.tar, or safetensors), to a minstf weight file
    (the configuration is inferred from the checkpoint's shapes; torch is not needed)."""
    from .convert import convert as convert_weights

    fileio.check_readable(checkpoint)  # a directory, missing or unreadable: one line, exit code 1
    fileio.check_output(out, force, [checkpoint])
    w = convert_weights(checkpoint, out, force=force, name=name)
    click.echo(f"wrote {out}: {len(w.params)} parameters ({sum(a.size for a in w.params.values()):,} values), "
               f"fingerprint {w.fingerprint[:16]}", err=True)


@main.command("crosscheck")
@click.argument("src", metavar="IMAGE", type=OUTPUT)
@click.option("--weights", "-w", type=click.Path(), help="A minstf weight file (default: shipped q2).")
@click.option("-q", "--quality", type=click.IntRange(min(QUALITIES), max(QUALITIES)), help="Shipped weights.")
@click.option("--synthetic", type=click.Choice(list(SYNTHETIC_CONFIGS)),
              help="Recipe weights of the full or small STF, or of WACNN (cnn, cnn-small).")
@click.option("--seed", type=int, default=0, show_default=True, help="With --synthetic: 0 is the golden recipe.")
@click.option("--pad", "pad_to_eval", is_flag=True, help="Zero-pad to a multiple of 64 as the evaluation does.")
@KERNELS_OPTION
@reports_errors
def crosscheck_(src, weights, quality, synthetic, seed, pad_to_eval, kernels):
    """Compare minstf with the PyTorch mirror stage by stage on IMAGE (needs torch); exit code 1 if any
    stage or decision is NOT OK. Table, decisions and bpp on stdout (minstf/tooling/crosscheck.py)."""
    from .tooling import crosscheck

    crosscheck.require_torch()
    if sum(map(bool, (weights, quality, synthetic))) > 1 or (seed and not synthetic):
        raise click.UsageError("give at most one of --weights, -q/--quality, --synthetic; --seed only with --synthetic")
    image = _read_image(src, False)
    ok = crosscheck.run_crosscheck(image, _name(src, "stdin"), None if synthetic else _weights(weights, quality),
                                   synthetic, seed, pad_to_eval, kernels)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":  # python -m minstf.cli, as the tests run it without installing
    main(prog_name="minstf")
