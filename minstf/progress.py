"""What one file's coding shows while it runs, and how many threads it runs on.

    Stages(label, shown, verbose)   the callback codec.encode_image / decode_image call with the
                                    name of each step as it begins (None: done). On a terminal
                                    (`shown`) one line is redrawn: `minstf: photo.png: slice 3/12…
                                    1.2 s`, and erased at the end; `verbose` prints every step's
                                    time afterwards. Steps: pad, analysis, hyperprior, slice s/S,
                                    pack (encode); check header, hyperprior, slice s/S, synthesis,
                                    crop (decode).
    FileLines(total, label)         a batch: a line per file (a progress bar on a terminal), a line
                                    per failure, a summary (batch.run)
    threads(n)                      for the run: minstf's host threads ($MINSTF_NUM_THREADS, read
                                    by kernels/threads.py) and the BLAS threads (threadpoolctl)

Nothing is drawn unless stderr is a terminal (pipes and log files get the final line only).
"""
import os
import sys
import threading
import time
from contextlib import contextmanager

import click

TICK = 0.2  # seconds between redraws
THREADS_HELP = ("Threads of minstf's kernels and of BLAS (default: $MINSTF_NUM_THREADS, else every CPU; "
                "BLAS: $OPENBLAS_NUM_THREADS / $OMP_NUM_THREADS, else its own).")


class Stages:
    def __init__(self, label, shown=None, verbose=False):
        self.label, self.verbose = label, verbose
        self.shown = sys.stderr.isatty() if shown is None else shown
        self.times, self.name, self.t = [], None, time.perf_counter()
        self._stop, self._lock, self._ticker = threading.Event(), threading.Lock(), None

    def __call__(self, name):
        now = time.perf_counter()
        with self._lock:
            if name is not None and self.name is not None and _step(name) == _step(self.name):
                self.name = name  # the same step further on ("analysis 40%": the bands of a tiled transform)
                return
            if self.name is not None:
                self.times.append((_step(self.name), now - self.t))
            self.name, self.t = name, now
        if self.shown and name is not None and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        if name is None:
            self.close()

    def _tick(self):
        while True:
            with self._lock:
                if self.name is None:
                    return
                click.echo(f"\r\x1b[Kminstf: {self.label}: {self.name}… {time.perf_counter() - self.t:.1f} s",
                           err=True, nl=False)
            if self._stop.wait(TICK):
                return

    def close(self):
        """Stop drawing and erase the line (also after an error)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
            click.echo("\r\x1b[K", err=True, nl=False)

    def report(self):
        """`minstf: stages: pad 0.00 s, compress (…) 1.93 s, pack 0.00 s` when verbose."""
        if self.verbose and self.times:
            click.echo("minstf: stages: " + ", ".join(f"{n} {s:.2f} s" for n, s in self.times), err=True)


def _step(name):
    return name.split(" ")[0] if name.endswith("%") else name


@contextmanager
def threads(n):
    """Run the block on n host threads and n BLAS threads (None: as configured)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    old = os.environ.get("MINSTF_NUM_THREADS")
    os.environ["MINSTF_NUM_THREADS"] = str(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if old is None:
            os.environ.pop("MINSTF_NUM_THREADS", None)
        else:
            os.environ["MINSTF_NUM_THREADS"] = old


class FileLines:
    """stderr: a line per file (or a progress bar on a terminal), a line per failure, a summary."""

    def __init__(self, total, label, quiet=False, verbose=False):
        self.total, self.quiet, self.count, self.t = total, quiet, 0, time.perf_counter()
        self.lines = verbose or not sys.stderr.isatty()
        self.bar = None if quiet or self.lines else click.progressbar(length=total, label=label, file=sys.stderr)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, job, rec):
        self.count += 1
        where = f"[{self.count}/{self.total}] {job.src} -> {job.out}"
        said = self.lines and not self.quiet
        if rec["status"] == "failed":
            clear = "" if self.bar is None else "\r\x1b[K"  # the bar's line, on a terminal
            click.echo(f"{clear}minstf: error: {rec['error']['message']}", err=True)
        elif rec["status"] == "skipped" and said:
            click.echo(f"minstf: {where}: skipped (it exists; --force codes it again)", err=True)
        elif said:
            click.echo(f"minstf: {where}: {rec['width']}x{rec['height']}, {rec['bytes']:,} bytes, "
                       f"{rec['bpp']:.4f} bpp, {rec['seconds']:.2f} s", err=True)
        if self.bar is not None:
            self.bar.update(1)

    def summary(self, records, manifest):
        if not self.quiet:
            n = {k: sum(r["status"] == k for r in records) for k in ("ok", "skipped", "failed")}
            click.echo(f"minstf: {len(records)} files: {n['ok']} ok, {n['skipped']} skipped, {n['failed']} failed, "
                       f"{time.perf_counter() - self.t:.1f} s (manifest {manifest})", err=True)
