"""A fuzz campaign against the .mstf decoder: N mutated files, each decoded under a time and
memory limit, and a table of what happened.

    python tools/fuzz_decoder.py                          # 50,000 cases, one worker per CPU
    python tools/fuzz_decoder.py --cases 300 --seed 1 --workers 2

The files come from a tiny random-weight model (the golden recipe on an 8-channel STF, a
64x64 coded image: a decode takes milliseconds), encoded from two small images, one portable
and one float32. Each case applies one mutation, chosen and parametrised by (seed, case):

    truncate    cut the file anywhere
    flip        1..4 bit flips anywhere
    overwrite   1..4 bytes set to random values
    insert      1..16 random bytes inserted anywhere
    delete      1..16 bytes deleted anywhere
    forge       a header field (version, flags, model id, fingerprint, size, padding, slices,
                lengths, symbol CRCs, payload CRC) set to a random or boundary value, and
                the header CRC recomputed, so that the checks behind it are reached
    payload     1..8 payload bytes changed, payload CRC and header CRC recomputed: the
                entropy decoder and the symbol CRCs get garbage that passed every file check
    split       the z/y boundary moved, or the other file's payload spliced in; CRCs recomputed

A case ends in one outcome: a clean error (a MinstfError with a one-line message: its type
and exit code), an exact decode (the original image), an other image that a forged header
legitimately describes (a forged size, crop or portable flag passes every check by design:
the header CRC is not a signature), or a problem: a traceback (any other exception), a
wrong image from an unforged header, a message that is not one line, a timeout (per-case
alarm, and a watchdog that kills a worker stuck in native code), memory (MemoryError under
RLIMIT_AS), or a crash (the worker died). Exit status 1 when any problem occurred.

Cases run in worker processes (forked once the model is built, one chunk of cases at a time,
decoding in-process for speed); a worker that dies or hangs is replaced, and the chunk
continues after the case that killed it.
"""
import argparse
import collections
import io
import os
import random
import resource
import signal
import struct
import sys
import time
import zlib

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per worker: cheap forks, small address space

import multiprocessing as mp  # noqa: E402
from multiprocessing.connection import wait  # noqa: E402

import numpy as np  # noqa: E402

from minstf import bitstream  # noqa: E402
from minstf.codec import decode_image, encode_image  # noqa: E402
from minstf.config import STFConfig  # noqa: E402
from minstf.entropy_models import eb_tables, gc_tables  # noqa: E402
from minstf.errors import MinstfError  # noqa: E402
from minstf.model import STF  # noqa: E402
from minstf.synthetic import recipe_weights  # noqa: E402

TINY = STFConfig(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 4), num_slices=4,
                 max_support_slices=2, slice_hidden=(16, 16, 16, 16))
CASE_SECONDS = 5.0           # per-case alarm
MEMORY_BYTES = 1 << 30       # address space a case may add to the worker's
CHUNK = 250                  # cases per worker assignment
KINDS = ("truncate", "flip", "overwrite", "insert", "delete", "forge", "payload", "split")
WEIGHTS = (10, 15, 10, 10, 5, 20, 25, 5)
PROBLEMS = ("traceback", "wrong image", "not one line", "timeout", "memory", "crash")


# --- the files ----------------------------------------------------------------------------

def tiny_model():
    params = recipe_weights(TINY)
    eb = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("entropy_bottleneck.")}
    return STF(TINY, params, {**eb_tables(eb), **gc_tables()}, fingerprint="5a" * 32)


def sample_images():
    rng = np.random.default_rng(2022)
    yy, xx = np.mgrid[0:20, 0:28]
    smooth = np.stack([9 * yy, 9 * xx, 128 + 0 * yy], axis=-1) + rng.normal(0, 30, (20, 28, 3))
    return [np.clip(smooth, 0, 255).astype(np.uint8), rng.integers(0, 256, (13, 37, 3), dtype=np.uint8)]


class Layout:
    """Offsets of a file's header fields, from its model id length n and slice count S (bitstream.py)."""

    def __init__(self, data):
        self.n = data[6] if len(data) > 6 else 3
        at = 39 + self.n
        self.S = struct.unpack_from("<H", data, at)[0] if len(data) >= at + 2 else 4
        n, S = self.n, self.S
        self.fields = {  # name: (offset, struct format)
            "version": (4, "<B"), "flags": (5, "<B"), "n": (6, "<B"), "model id": (7, f"<{n}s"),
            "fingerprint": (7 + n, "<16s"), "height": (23 + n, "<I"), "width": (27 + n, "<I"),
            "padding": (31 + n, "<4H"), "slices": (39 + n, "<H"), "z length": (41 + n, "<I"),
            "y length": (45 + n, "<I"), "z crc": (49 + n, "<I"), "y crc": (53 + n + 4 * (S // 2), "<I"),
            "payload crc": (53 + n + 4 * S, "<I"),
        }
        self.crc_at = 57 + n + 4 * S
        self.header_len = self.crc_at + 4


def with_crcs(data, payload=False):
    """The header CRC recomputed (and first the payload CRC, when `payload`), where the layout allows."""
    data = bytearray(data)
    lay = Layout(data)
    if payload and len(data) >= lay.header_len:
        struct.pack_into("<I", data, lay.fields["payload crc"][0], zlib.crc32(bytes(data[lay.header_len:])))
    if len(data) >= lay.header_len:
        struct.pack_into("<I", data, lay.crc_at, zlib.crc32(bytes(data[:lay.crc_at])))
    return bytes(data)


def _forged_value(rnd, name, fmt, old):
    if name == "model id":
        return (rnd.choice([b"stg", b"STF", b"st\x00", b"s f", bytes(rnd.randrange(256) for _ in range(len(old[0])))]),)
    if name == "fingerprint":
        fp = bytearray(old[0])
        fp[rnd.randrange(16)] ^= 1 << rnd.randrange(8)
        return (bytes(fp),)
    if name == "padding":
        return tuple(rnd.choice([0, 1, 18, 63, 64, 65535, v + 1, max(v - 1, 0)]) for v in old)
    bits = 8 * struct.calcsize(fmt)
    (v,) = old
    return (rnd.choice([0, 1, 2, v + 1, max(v - 1, 0), v ^ (1 << rnd.randrange(bits)), (1 << bits) - 1,
                        rnd.randrange(1 << bits), 64, 32768, 32769, 1 << 14]) % (1 << bits),)


def mutate(data, other, rnd):
    """(kind, detail, mutated bytes, forged): one mutation of `data` drawn from `rnd`."""
    kind = rnd.choices(KINDS, WEIGHTS)[0]
    b = bytearray(data)
    lay = Layout(data)
    forged = False
    if kind == "truncate":
        at = rnd.randrange(len(b))
        del b[at:]
        detail = f"to {at}"
    elif kind == "flip":
        spots = [rnd.randrange(len(b) * 8) for _ in range(rnd.randint(1, 4))]
        for bit in spots:
            b[bit // 8] ^= 1 << (bit % 8)
        detail = f"bits {spots}"
    elif kind == "overwrite":
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        detail = "bytes"
    elif kind == "insert":
        at = rnd.randrange(len(b) + 1)
        b[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        detail = f"at {at}"
    elif kind == "delete":
        at = rnd.randrange(len(b))
        del b[at:at + rnd.randint(1, 16)]
        detail = f"at {at}"
    elif kind == "forge":
        name = rnd.choice(sorted(lay.fields))
        at, fmt = lay.fields[name]
        value = _forged_value(rnd, name, fmt, struct.unpack_from(fmt, b, at))
        struct.pack_into(fmt, b, at, *value)
        b = bytearray(with_crcs(b, payload=name != "payload crc"))
        forged = name in ("height", "width", "padding", "flags")  # may describe another valid crop/mode
        detail = f"{name} = {value[0] if len(value) == 1 else value}"
    elif kind == "payload":
        for _ in range(rnd.randint(1, 8)):
            at = rnd.randrange(lay.header_len, len(b))
            b[at] = rnd.randrange(256) if rnd.random() < 0.5 else b[at] ^ (1 << rnd.randrange(8))
        b = bytearray(with_crcs(b, payload=True))
        detail = "payload bytes, CRCs recomputed"
    else:  # split
        z_at, y_at = lay.fields["z length"][0], lay.fields["y length"][0]
        z_len, y_len = struct.unpack_from("<II", b, z_at)
        if rnd.random() < 0.5:
            shift = rnd.choice([-4, -1, 1, 4])
            struct.pack_into("<II", b, z_at, max(z_len + shift, 0), max(y_len - shift, 0))
            detail = f"z/y boundary {shift:+d}"
        else:
            o = Layout(other)
            oz, oy = struct.unpack_from("<II", other, o.fields["z length"][0])
            b = b[:lay.header_len] + bytearray(other[o.header_len:])
            struct.pack_into("<II", b, z_at, oz, oy)
            detail = "the other file's payload"
        b = bytearray(with_crcs(b, payload=True))
    return kind, detail, bytes(b), forged


# --- one case, in a worker ----------------------------------------------------------------

class CaseTimeout(BaseException):
    """Raised by the per-case alarm (a BaseException, so that no `except Exception` in the
    decoder swallows it)."""


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(model, files, references, seed, index):
    """(kind, outcome, detail) of case `index`."""
    rnd = random.Random(seed * 1_000_003 + index)
    which = rnd.randrange(len(files))
    kind, detail, data, forged = mutate(files[which], files[1 - which], rnd)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        decoded, _ = decode_image(model, bitstream.read_bytes(io.BytesIO(data)))
    except CaseTimeout:
        return kind, "timeout", detail
    except MemoryError:
        return kind, "memory", detail
    except MinstfError as err:
        message = str(err)
        if not message or "\n" in message:
            return kind, "not one line", f"{detail}: {message!r}"
        return kind, f"error {type(err).__name__} (exit {err.exit_code})", detail
    except Exception as err:  # noqa: BLE001 — any other exception is a bug in minstf
        return kind, "traceback", f"{detail}: {type(err).__name__}: {err}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if decoded.shape == references[which].shape and np.array_equal(decoded, references[which]):
        return kind, "decoded exactly", detail
    if forged:
        return kind, "other image (forged size/flags)", detail
    return kind, "wrong image", detail


def worker(conn, model, files, references, seed):
    """Run the chunks the parent sends ((start, stop), or None to end); one message per case."""
    signal.signal(signal.SIGALRM, _alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + MEMORY_BYTES
    if hard == resource.RLIM_INFINITY or limit < hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    while True:
        job = conn.recv()
        if job is None:
            return
        for index in range(*job):
            conn.send((index, *run_case(model, files, references, seed, index)))
        conn.send(("done", job))


def _address_space():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# --- the campaign -------------------------------------------------------------------------

class Worker:
    def __init__(self, ctx, args):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        self.job, self.next, self.heard = None, None, time.monotonic()

    def give(self, job):
        self.job, self.next, self.heard = job, job[0], time.monotonic()
        self.conn.send(job)

    def kill(self):
        self.proc.kill()
        self.proc.join()


def campaign(cases, seed=0, workers=None, out=sys.stdout):
    """Run `cases` cases; print the table on `out`; return {(kind, outcome): count}, examples."""
    t0 = time.monotonic()
    model, images = tiny_model(), sample_images()
    files = [encode_image(model, images[0], portable=True)[0], encode_image(model, images[1], portable=False)[0]]
    decoded = [decode_image(model, data)[0] for data in files]  # what an undamaged file decodes to
    ctx = mp.get_context("fork")
    args = (model, files, decoded, seed)
    jobs = collections.deque((s, min(s + CHUNK, cases)) for s in range(0, cases, CHUNK))
    pool = [Worker(ctx, args) for _ in range(max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1)))]
    counts, examples = collections.Counter(), {}

    def record(index, kind, outcome, detail):
        counts[kind, outcome] += 1
        examples.setdefault(outcome, f"case {index} ({kind}: {detail})"[:200])

    for w in pool:
        if jobs:
            w.give(jobs.popleft())
    while any(w.job for w in pool):
        ready = wait([w.conn for w in pool if w.job], timeout=1.0)
        for w in pool:
            if not w.job:
                continue
            if w.conn in ready:
                try:
                    msg = w.conn.recv()
                except EOFError:
                    msg = None
                if msg is not None:
                    w.heard = time.monotonic()
                    if msg[0] == "done":
                        w.job = None
                    else:
                        record(*msg)
                        w.next = msg[0] + 1
                    if w.job is None and jobs:
                        w.give(jobs.popleft())
                    continue
            stuck = time.monotonic() - w.heard > 3 * CASE_SECONDS
            if not w.proc.is_alive() or stuck or (w.conn in ready):
                rnd = random.Random(seed * 1_000_003 + w.next)  # the case it was on, drawn again
                which = rnd.randrange(len(files))
                kind = mutate(files[which], files[1 - which], rnd)[0]
                hung = stuck and w.proc.is_alive()
                w.kill()
                record(w.next, kind, "timeout" if hung else "crash",
                       "worker killed by the watchdog" if hung else f"worker exit code {w.proc.exitcode}")
                rest = (w.next + 1, w.job[1])
                pool[pool.index(w)] = fresh = Worker(ctx, args)
                if rest[0] < rest[1]:
                    fresh.give(rest)
                elif jobs:
                    fresh.give(jobs.popleft())
    for w in pool:
        w.conn.send(None)
        w.proc.join(timeout=5)
    print_table(counts, examples, cases, seed, len(pool), time.monotonic() - t0, out)
    return counts, examples


def print_table(counts, examples, cases, seed, workers, seconds, out):
    kinds = [k for k in KINDS if any(key[0] == k for key in counts)]
    outcomes = sorted({o for _, o in counts}, key=lambda o: (o in PROBLEMS, o))
    width = max(len(o) for o in outcomes) + 2
    print(f"fuzz_decoder: {cases:,} cases, seed {seed}, {workers} workers, {seconds:.0f} s; per case "
          f"{CASE_SECONDS:.0f} s alarm, {MEMORY_BYTES >> 20} MiB address space", file=out)
    print(f"{'outcome':<{width}}" + "".join(f"{k:>10}" for k in kinds) + f"{'total':>10}", file=out)
    print("-" * (width + 10 * len(kinds) + 10), file=out)
    for o in outcomes:
        row = [counts[k, o] for k in kinds]
        label = ("BUG " if o in PROBLEMS else "") + o
        print(f"{label:<{width}}" + "".join(f"{n:>10,}" for n in row) + f"{sum(row):>10,}", file=out)
    print(f"{'total':<{width}}" + "".join(f"{sum(counts[k, o] for o in outcomes):>10,}" for k in kinds)
          + f"{sum(counts.values()):>10,}", file=out)
    for o in outcomes:
        if o in PROBLEMS:
            print(f"first {o}: {examples[o]}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python tools/fuzz_decoder.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=50_000, help="number of mutated files (default 50,000)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (cases are reproducible from it)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    args = parser.parse_args(argv)
    counts, _ = campaign(args.cases, args.seed, args.workers)
    return 1 if any(o in PROBLEMS for _, o in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
