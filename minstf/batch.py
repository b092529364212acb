"""Many images: `minstf encode|decode IN... -o DIR/`, in this process or on a Dask cluster.

    plan(kind, sources, out)    inputs (directories recursed) -> [Job]: photos/a/b.png -> OUT/a/b.mstf
    run_batch(jobs, settings)   for each job: skip it (output exists), refuse it (output is an input,
                                or another job's output), or code it here or on a worker (code_file);
                                one manifest line per job as it finishes
    code_file(job, settings)    one file, as a Dask task runs it: a problem of the file becomes a
                                `failed` record (reported once, never retried); anything else propagates

    main process                                  workers (tooling/cluster.py: --workers N, --scheduler ADDRESS)
    plan -> skip / refuse -> submit ----------->  code_file: cached_model (loaded once a process)
    manifest.jsonl <- report <- as_completed <--  <- record {input, output, bytes, bpp, status, error}

A task is idempotent: coding is deterministic and every output is written to a temporary file and
renamed (fileio), so a task run again after its worker died writes the same bytes or nothing, and
never a half-written file. The single-file commands use encode_file / decode_file too.
"""
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

from . import fileio
from .backend import BackendUnavailable
from .codec import decode_image, encode_image
from .errors import BadInput, MinstfError, OutputExists
from .fileio import display_name
from .image import encode_lossless, output_format
from .progress import FileLines, Stages
from .tooling import cluster
from .zoo import claimed_fingerprint, load_model, weights_for, weights_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pnm", ".gif")
KINDS = {"encode": (IMAGE_SUFFIXES, ".mstf", "images"), "decode": ((".mstf",), ".png", ".mstf files")}
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Settings:
    """What every file of a command is coded with (it travels to the workers)."""
    weights: str = None      # encode: the weight file; decode: --weights, or None (found from each file)
    quality: int = None      # decode: -q
    backend: str = "numpy"
    kernels: str = "fast"
    portable: bool = True
    force: bool = False
    tile: object = "auto"    # codec.tile_rows: "auto", 0 (whole image) or image rows per band


@dataclass(frozen=True)
class Job:
    index: int               # place in the batch: the exit code is the first failure's in this order
    kind: str                # "encode" or "decode"
    src: str
    out: str


# --- one file ----------------------------------------------------------------------------

def encode_file(src, out, s, inputs, load, note=None, again=False, progress=None):
    """An image file (`-`: stdin) -> a .mstf file (`-`: stdout); the numbers of its report line.
    The EXIF orientation is applied. again: the output may already hold this very file's bytes
    (a task run a second time); progress: codec.encode_image's."""
    fileio.check_output(out, s.force or again, inputs)
    notices = []
    image = fileio.read_image_file(src, notices, orient=True)
    for line in notices if note else []:
        note(line)
    model = load(s.weights)
    t = time.perf_counter()
    data, stats = encode_image(model, image, portable=s.portable, progress=progress, tile=s.tile)
    seconds = time.perf_counter() - t
    _write(out, data, s.force, inputs, again)
    return {"width": stats.width, "height": stats.height, "bytes": stats.file_bytes, "bpp": stats.bpp,
            "payload_bpp": stats.payload_bpp, "seconds": seconds}


def decode_file(src, out, s, inputs, load, note=None, again=False, progress=None):
    """A .mstf file (`-`: stdin) -> an image file of the lossless format its extension names
    (image.LOSSLESS; `-`: PNG on stdout), with the weights it was made with."""
    given = [weights_path(s.weights, s.quality)] if s.weights or s.quality else []
    named = out != "-" and (os.path.isfile(out) or not os.path.exists(out))  # a device or pipe gets PNG
    name_of_format = out if named else "x.png"
    output_format(name_of_format)                          # a lossy or unknown format: BadInput
    fileio.check_output(out, s.force or again, list(inputs) + given)
    data, (header, _, _) = fileio.read_mstf(src)
    name = display_name(src, "stdin")
    path = weights_for(header, name, s.weights, s.quality)
    model = load(path)
    t = time.perf_counter()
    with fileio.naming(name):
        image, header = decode_image(model, data, progress=progress, tile=s.tile)
    seconds = time.perf_counter() - t
    _write(out, encode_lossless(image, name_of_format), s.force, list(inputs) + [path], again)
    return {"width": header.width, "height": header.height, "bytes": len(data),
            "bpp": 8 * len(data) / (header.width * header.height), "seconds": seconds}


def single(kind, src, out, s, load, say, quiet=False, verbose=False):
    """One file of the encode or decode command: notes, a progress line on a terminal (stderr),
    stage timings when verbose, then its report line, all through say(text) (nothing if quiet)."""
    out = fileio.default_output(kind, src, out)
    inputs = [src, s.weights] if kind == "encode" else [src]
    stages = Stages(display_name(src, "stdin"), not quiet and sys.stderr.isatty(), verbose)
    note = None if quiet else lambda line: say("note: " + line)
    try:
        n = (encode_file if kind == "encode" else decode_file)(src, out, s, inputs, load, note, progress=stages)
    finally:
        stages.close()
    stages.report()
    where = f"{display_name(src, 'stdin')} -> {display_name(out, 'stdout')}: {n['width']}x{n['height']}, "
    if quiet:
        return
    if kind == "decode":
        say(where + f"{n['bytes']:,} bytes, {n['bpp']:.4f} bpp, {n['seconds']:.2f} s")
    else:
        say(where + f"{n['bytes']:,} bytes, {n['bpp']:.4f} bpp ({n['payload_bpp']:.4f} payload), "
            f"{'portable' if s.portable else 'fast'} mode, {n['seconds']:.2f} s")


def _write(out, data, force, inputs, again):
    try:
        fileio.write_output(out, data, force, inputs)
    except OutputExists:  # written by an earlier run of this task (its worker died): the same bytes?
        if not again or os.path.getsize(out) != len(data) or Path(out).read_bytes() != data:
            raise


_MODELS, _LOCK = {}, threading.Lock()
LOADS = []  # the cache keys of every model this process loaded (tests check: once a worker)


def cached_model(path, backend="numpy", kernels="fast"):
    """The model of a weight file, loaded once a process (a Dask worker) and kept: the key is
    the file, the fingerprint its header claims (a replaced file loads again), kernels, backend."""
    key = (str(Path(path).resolve()), claimed_fingerprint(path).hex(), kernels, backend)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(path, backend=backend, kernels=kernels)
            LOADS.append(key)
        return _MODELS[key]


def code_file(job, s):
    """Code one job and return its manifest record; what is wrong with the file (MinstfError,
    OSError, an unusable backend) is a `failed` record, anything else (a bug) propagates."""
    code = encode_file if job.kind == "encode" else decode_file
    try:
        Path(job.out).parent.mkdir(parents=True, exist_ok=True)
        numbers = code(job.src, job.out, s, [job.src], lambda p: cached_model(p, s.backend, s.kernels),
                       again=True)
    except (MinstfError, BackendUnavailable) as err:
        return record(job, "failed", _named(job.src, str(err)), getattr(err, "exit_code", 1))
    except OSError as err:  # missing, unreadable, disk full
        where = f"{err.filename}: " if err.filename else ""
        return record(job, "failed", where + (err.strerror or str(err) or type(err).__name__), 1)
    return record(job, "ok", **numbers)


def _named(src, message):
    return message if str(src) in message else f"{src}: {message}"


def record(job, status, message=None, exit_code=None, **numbers):
    """One manifest line: input, output, bytes, bpp, seconds, status (ok/skipped/failed), error."""
    error = None if message is None else {"message": " ".join(message.split()), "exit_code": exit_code}
    return {"input": job.src, "output": job.out, "bytes": numbers.get("bytes"), "bpp": numbers.get("bpp"),
            "seconds": numbers.get("seconds"), "status": status, "error": error,
            **{k: v for k, v in numbers.items() if k in ("width", "height")}}


# --- many files --------------------------------------------------------------------------

def is_batch(sources, out, manifest=None, workers=None, scheduler=None):
    """Whether the command is a batch (several inputs, a directory among them, or -o DIR/ that
    ends with a slash or is a directory); usage errors for what a batch cannot be. Without -o
    (`out` None) one file is written next to its input (fileio.default_output)."""
    if out is None:
        if len(sources) > 1 or any(os.path.isdir(s) for s in sources):
            raise click.UsageError("several inputs or a directory are written into a directory: give -o DIR/")
        if "-" in sources:
            raise click.UsageError("reading stdin needs -o FILE (or -o - for stdout)")
        out = ""
    if not (len(sources) > 1 or out.endswith(("/", os.sep)) or os.path.isdir(out)
            or any(os.path.isdir(s) for s in sources)):
        if manifest or workers or scheduler:
            raise click.UsageError("--manifest, --workers and --scheduler are for batches: several inputs, "
                                   "a directory, or -o DIR/")
        return False
    if "-" in sources or out == "-":
        raise click.UsageError("'-' (stdin or stdout) is for one file; a batch reads and writes files")
    if not os.path.isdir(out) and (os.path.lexists(out) or not out.endswith(("/", os.sep))):
        raise click.UsageError(f"several inputs or a directory are written into a directory: -o {out.rstrip('/')}/ "
                               f"(created if missing), not a file")
    if workers and scheduler:
        raise click.UsageError("give --workers or --scheduler, not both")
    return True


def plan(kind, sources, out):
    """[Job]: the files given, and the files of each directory given (recursed in sorted order,
    hidden names skipped) with the suffixes of `kind`; outputs keep the names relative to it."""
    suffixes, new_suffix, what = KINDS[kind]
    found = []
    for source in map(Path, sources):
        if not source.is_dir():
            found.append((source, Path(source.name)))
            continue
        inside = [(p, p.relative_to(source)) for p in _walk(source) if p.suffix.lower() in suffixes]
        if not inside:
            raise BadInput(f"{source}: no {what} in this directory ({', '.join(suffixes)}; recursing)")
        found += inside
    return [Job(i, kind, str(p), str(Path(out) / rel.with_suffix(new_suffix))) for i, (p, rel) in enumerate(found)]


def _walk(top):
    """The files under `top`, sorted by their path (a/b.png before c.png), hidden names skipped."""
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files if not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(top).parts)


def run_batch(jobs, s, manifest, client=None, report=lambda job, rec: None):
    """Code every job, here or on the workers of the Dask `client`; one manifest line (appended,
    flushed) per job as it finishes, and report(job, record). Returns the records in job order."""
    taken = {fileio.identity(p) for p in [j.src for j in jobs] + [s.weights, manifest] if p} - {None}
    records, todo, claimed = [None] * len(jobs), [], {}
    with open(manifest, "a", encoding="utf-8") as log:
        def done(job, rec):
            records[job.index] = rec
            log.write(json.dumps(rec) + "\n")
            log.flush()
            report(job, rec)

        for job in jobs:
            first = claimed.setdefault(os.path.normpath(job.out), job)
            if first is not job:
                done(job, record(job, "failed", f"{job.src}: its output {job.out} is also the output of "
                                 f"{first.src}", BadInput.exit_code))
            elif fileio.identity(job.out) in taken:
                done(job, record(job, "failed", f"{job.out} is an input: refusing to overwrite it (even with "
                                 f"--force)", BadInput.exit_code))
            elif os.path.lexists(job.out) and not os.path.isdir(job.out) and not s.force:  # a folder: fails
                done(job, record(job, "skipped", **_existing(job)))
            else:
                todo.append(job)
        if client is None:
            results = ((job, code_file(job, s)) for job in todo)
        else:  # a file whose worker died runs again on another (Dask); one whose workers kept dying fails
            results = cluster.as_completed(client, todo, code_file, s, lambda job, err: record(
                job, "failed", f"{job.src}: the workers coding it died ({err})", 1))
        for job, rec in results:
            done(job, rec)
    return records


def _existing(job):
    """bytes and bpp of a skipped job, from the header of its .mstf file (the output or the input)."""
    try:
        data, (header, _, _) = fileio.read_mstf(job.out if job.kind == "encode" else job.src)
    except (MinstfError, OSError):
        return {}
    return {"bytes": len(data), "bpp": 8 * len(data) / (header.width * header.height),
            "width": header.width, "height": header.height}


def exit_code(records):
    """0 if every file is ok or skipped, else the exit code of the first failure in input order."""
    return next(((r["error"] or {}).get("exit_code") or 1 for r in records if r["status"] == "failed"), 0)


def run(kind, sources, out, s, manifest=None, workers=None, scheduler=None, quiet=False, verbose=False):
    """The batch command: plan, code (here, or on Dask), report; returns the exit code."""
    jobs = plan(kind, sources, out)
    manifest = manifest or os.path.join(out, MANIFEST)
    if fileio.identity(manifest) in {fileio.identity(p) for p in [j.src for j in jobs] + [s.weights] if p}:
        raise BadInput(f"{manifest} is an input: refusing to write the manifest there")
    if os.path.normpath(manifest) in {os.path.normpath(j.out) for j in jobs}:
        raise BadInput(f"{manifest} is an output of the batch: give another --manifest")
    if s.weights and kind == "encode":
        claimed_fingerprint(s.weights)  # a bad weight file is one line before any work
    with cluster.client(workers, scheduler) as client:
        os.makedirs(out, exist_ok=True)
        if client is None and kind == "encode":
            cached_model(s.weights, s.backend, s.kernels)
        elif client is not None and verbose:
            click.echo(f"minstf: dask: {len(client.scheduler_info()['workers'])} workers "
                       f"({client.scheduler.address})", err=True)
        with FileLines(len(jobs), kind[:-1] + "ing", quiet, verbose) as progress:
            records = run_batch(jobs, s, manifest, client, progress)
    progress.summary(records, manifest)
    return exit_code(records)
