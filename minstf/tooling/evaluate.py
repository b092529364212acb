"""Rate-distortion evaluation: minstf and Pillow's JPEG, WebP and AVIF on a folder of images.

    evaluate_minstf(model, paths)       per image: encode_image -> decode_image, and forward()
    evaluate_pillow(codec, q, paths)    per image: Pillow encodes to bytes in memory, decodes
    summarize(name, description, ...)   CompressAI's JSON layout: means over the images per rate
                                        point, plus the per-image numbers
    bd_rate, bd_psnr                    Bjontegaard deltas (VCEG-M33 cubic fit, or piecewise cubic)
    format_table, bd_report, plot_rd    what `minstf eval` prints and draws

What each number is (per image; a rate point reports the arithmetic mean over the images,
as CompressAI's eval_model does, docs/architecture.md §7):

    bpp             8 * bytes of the whole file / (h * w): the .mstf file with its header,
                    or the JPEG/WebP/AVIF file as Pillow writes it
    payload-bpp     minstf: the z and y strings only, upstream's bpp (docs/architecture.md §7)
    estimated-bpp   minstf: sum of -log2(likelihoods) of y and z from forward() on the
                    padded image, over the ORIGINAL h * w
    psnr-rgb        the headline PSNR: 8-bit RGB original vs the 8-bit decoded image (PNG)
    psnr-float      minstf: upstream's PSNR, on the float reconstruction in [0, 1] before
                    rounding to 8 bits. decode_image returns 8 bits only, so this takes
                    clip(forward().x_hat): in float32 mode forward() runs the decoder's
                    operations on the same symbols, so it is the decoder's float image
                    whenever `forward-matches-decoded` (its 8-bit rounding equals the decode)
    ms-ssim-rgb     MS-SSIM of the 8-bit images as floats / 255 (image.ms_ssim)
    encoding_time,  wall seconds of encode_image / decode_image (file in, pixels out), or of
    decoding_time   Pillow's save / open + convert("RGB"); no warm-up; measured in the process
                    that evaluated the image (with --workers / --scheduler, a Dask worker, while
                    the others run beside it: the JSON description says which)

With --workers N or --scheduler ADDRESS, each image at each rate point is one Dask task
(evaluate_task, on the helpers of tooling/cluster.py; each worker loads each model once,
batch.cached_model); rows come back as they finish and are put back in order, so the
summaries, table, BD-rates and plot are computed as in-process. The numbers other than times
are the same code on the same inputs: identical when the workers run BLAS on as many threads
as this process would (float32 synthesis depends on it; bpp does not, portable mode).

A minstf decode is checked exactly by the decoder itself: every slice's symbols against
the encoder's CRC (a mismatch raises DecoderMismatch and stops the run).
"""
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

from ..backend import to_device, to_host
from ..codec import decode_image, encode_image
from ..errors import BadInput, MinstfError
from ..image import crop, eval_padding, ms_ssim, pad, psnr, psnr_uint8, read_image, to_float, to_uint8
from . import cluster

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
METRICS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "payload-bpp", "estimated-bpp", "psnr-float",
           "encoding_time", "decoding_time")

# Pillow codecs: format, quality range, save options besides quality (Pillow's defaults, spelt out)
PILLOW_CODECS = {
    "jpeg": ("JPEG", (1, 100), {"subsampling": "4:2:0"}),       # baseline, standard Huffman tables
    "webp": ("WEBP", (0, 100), {"method": 4}),                  # lossy WebP is always 4:2:0
    "avif": ("AVIF", (0, 100), {"speed": 6, "subsampling": "4:2:0"}),
}
PILLOW_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}
PILLOW_LIBRARIES = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}   # names for PIL.features


def image_paths(folder, limit=None):
    """The PNG and JPEG files of a folder, sorted by name; the first `limit` of them."""
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BadInput(f"{folder}: no PNG or JPEG images in this folder")
    return paths[:limit] if limit else paths


def _quality_metrics(image, decoded):
    """PSNR and MS-SSIM of two uint8 (H, W, 3) images."""
    return {"psnr-rgb": psnr_uint8(image, decoded), "ms-ssim-rgb": ms_ssim(to_float(image), to_float(decoded))}


# --- minstf -------------------------------------------------------------------------------

def _forward(model, image):
    """(estimated bpp, clipped float reconstruction (1, 3, H, W) on the host): forward() on the
    image padded as encode_image pads it."""
    h, w = image.shape[:2]
    xp, ltrb = model.xp, eval_padding(h, w, model.config.pad_multiple)
    out = model.forward(pad(to_float(to_device(image, xp)), ltrb))      # (1, 3, Hp, Wp)
    bits = sum(float(-xp.log2(lik.astype(xp.float64)).sum()) for lik in out["likelihoods"].values())
    return bits / (h * w), to_host(xp.clip(crop(out["x_hat"], ltrb), 0, 1))  # -> (1, 3, H, W)


def minstf_row(model, path):
    """One image through one model: encode_image -> decode_image, and forward() (module docstring)."""
    image = read_image(path)
    t0 = time.perf_counter()
    data, stats = encode_image(model, image, portable=False)  # float32: the mode forward() mirrors (psnr-float)
    t1 = time.perf_counter()
    decoded, _ = decode_image(model, data)      # DecoderMismatch unless every CRC holds
    t2 = time.perf_counter()
    estimated, x_hat = _forward(model, image)
    return {"image": Path(path).name, "bpp": stats.bpp, "payload-bpp": stats.payload_bpp,
            "estimated-bpp": estimated, **_quality_metrics(image, decoded),
            "psnr-float": psnr(to_float(image), x_hat),
            "forward-matches-decoded": bool(np.array_equal(to_uint8(x_hat), decoded)),
            "encoding_time": t1 - t0, "decoding_time": t2 - t1}


def evaluate_minstf(model, paths, progress=None):
    """Encode and decode every image with one model: [per-image dict] (module docstring).

    progress: called with each path when its image is done.
    """
    rows = []
    for path in paths:
        rows.append(minstf_row(model, path))
        if progress:
            progress(path)
    return rows


MINSTF_DESCRIPTION = (
    "minstf (STF in NumPy/CuPy), float32 mode. bpp: whole .mstf files (header included); "
    "payload-bpp: z + y strings (upstream's bpp); estimated-bpp: forward() likelihoods on the "
    "padded image over the original h*w. psnr-rgb: 8-bit RGB of the decoded PNG (headline); "
    "psnr-float: upstream's float PSNR, of clip(forward().x_hat). MS-SSIM on 8-bit images / 255. "
    "Every decode CRC-checked. Means over the images.")


# --- Pillow baselines ---------------------------------------------------------------------

def check_quality(codec, quality):
    """Raise BadInput unless Pillow can use this codec at this quality."""
    if codec not in PILLOW_CODECS:
        raise BadInput(f"unknown baseline {codec!r}: one of {', '.join(PILLOW_CODECS)}")
    lo, hi = PILLOW_CODECS[codec][1]
    if not lo <= quality <= hi:
        raise BadInput(f"{PILLOW_NAMES[codec]} quality must be in {lo}..{hi}, got {quality}")
    if not features.check(PILLOW_LIBRARIES[codec]):
        raise BadInput(f"this Pillow has no {PILLOW_NAMES[codec]} support")


def pillow_row(codec, quality, path):
    """One image through Pillow at one quality, in memory: encode to bytes, decode."""
    check_quality(codec, quality)
    fmt, _, options = PILLOW_CODECS[codec]
    image = read_image(path)
    h, w = image.shape[:2]
    buf = io.BytesIO()
    t0 = time.perf_counter()
    Image.fromarray(image, "RGB").save(buf, format=fmt, quality=quality, **options)
    t1 = time.perf_counter()
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        decoded = np.array(im.convert("RGB"))
    t2 = time.perf_counter()
    return {"image": Path(path).name, "bpp": 8 * buf.tell() / (h * w),
            **_quality_metrics(image, decoded), "encoding_time": t1 - t0, "decoding_time": t2 - t1}


def evaluate_pillow(codec, quality, paths, progress=None):
    """Encode every image with Pillow at one quality, in memory: [per-image dict]."""
    check_quality(codec, quality)
    rows = []
    for path in paths:
        rows.append(pillow_row(codec, quality, path))
        if progress:
            progress(path)
    return rows


def pillow_description(codec):
    fmt, _, options = PILLOW_CODECS[codec]
    settings = ", ".join(f"{k}={v}" for k, v in options.items())
    extra = {"jpeg": "not optimized, not progressive",
             "webp": "lossy (4:2:0)",
             "avif": "codec auto (aom), range full, max_threads = CPU count"}[codec]
    return (f"{PILLOW_NAMES[codec]} with Pillow {Image.__version__} ({PILLOW_LIBRARIES[codec]} "
            f"{features.version(PILLOW_LIBRARIES[codec])}), encoded in memory: quality=q, {settings}, "
            f"{extra}; Pillow's defaults. bpp: whole files; PSNR on 8-bit RGB; MS-SSIM on 8-bit "
            f"images / 255. Means over the images.")


# --- results ------------------------------------------------------------------------------

def summarize(name, description, points, point_key="quality"):
    """[(rate-point label, per-image rows)] -> CompressAI's layout: {"name", "description",
    "results": {metric: [mean over the images, one per point]}, "per_image": [...]}."""
    keys = [k for k in METRICS if k in points[0][1][0]]
    results = {point_key: [label for label, _ in points]}
    results.update({k: [float(np.mean([row[k] for row in rows])) for _, rows in points] for k in keys})
    return {"name": name, "description": description, "results": results,
            "per_image": [{point_key: label, "images": rows} for label, rows in points]}


def format_table(results):
    """One line per codec and rate point: bpp, PSNR, MS-SSIM, times."""
    lines = [f"{'codec':<8}{'point':>7}{'bpp':>9}{'payload':>9}{'est.':>9}{'PSNR dB':>9}{'MS-SSIM':>9}"
             f"{'enc s':>8}{'dec s':>8}"]
    for res in results:
        r, key = res["results"], next(iter(res["results"]))
        for i, label in enumerate(r[key]):
            cell = {k: (r[k][i] if k in r else None) for k in METRICS}
            opt = [f"{cell[k]:9.4f}" if cell[k] is not None else f"{'-':>9}" for k in ("payload-bpp", "estimated-bpp")]
            lines.append(f"{res['name']:<8}{str(label):>7}{cell['bpp']:9.4f}{opt[0]}{opt[1]}{cell['psnr-rgb']:9.2f}"
                         f"{cell['ms-ssim-rgb']:9.4f}{cell['encoding_time']:8.3f}{cell['decoding_time']:8.3f}")
    return "\n".join(lines)


# --- Bjontegaard deltas -------------------------------------------------------------------

def overlap(a, b):
    """(lo, hi) of the common range of two sets of values, or None when they do not overlap."""
    lo, hi = max(np.min(a), np.min(b)), min(np.max(a), np.max(b))
    return (float(lo), float(hi)) if hi > lo else None


def _integral(x, y, lo, hi, method):
    """Integral over [lo, hi] of a curve y(x) through the points: a least-squares cubic
    (VCEG-M33) or the piecewise cubic Hermite interpolant (PCHIP, through every point)."""
    if method == "cubic":
        if len(x) < 4:
            raise ValueError(f"a cubic fit needs at least 4 rate points, got {len(x)}")
        p = np.polyint(np.polyfit(x, y, 3))
        return np.polyval(p, hi) - np.polyval(p, lo)
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator
        order = np.argsort(x)
        x, y = x[order], y[order]
        if len(x) < 2 or np.any(np.diff(x) <= 0):
            raise ValueError("piecewise cubic needs at least 2 rate points with distinct values")
        return float(PchipInterpolator(x, y).integrate(lo, hi))
    raise ValueError(f"method must be 'cubic' or 'pchip', got {method!r}")


def _curves(rate_ref, psnr_ref, rate_test, psnr_test):
    arrays = [np.asarray(a, np.float64) for a in (rate_ref, psnr_ref, rate_test, psnr_test)]
    if arrays[0].shape != arrays[1].shape or arrays[2].shape != arrays[3].shape:
        raise ValueError("each curve needs as many rates as PSNRs")
    if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(arrays[0] <= 0) or np.any(arrays[2] <= 0):
        raise ValueError("rates must be positive and PSNRs finite")
    return arrays


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test, method="cubic"):
    """Bjontegaard delta rate in percent (VCEG-M33): the mean difference of log-rate at equal
    PSNR, over the overlapping PSNR range, as a rate ratio. Negative: test needs fewer bits.
    log-rate is fitted as a function of PSNR (method "cubic" or "pchip")."""
    r0, p0, r1, p1 = _curves(rate_ref, psnr_ref, rate_test, psnr_test)
    span = overlap(p0, p1)
    if span is None:
        raise ValueError("the PSNR ranges do not overlap")
    lo, hi = span
    diff = (_integral(p1, np.log(r1), lo, hi, method) - _integral(p0, np.log(r0), lo, hi, method)) / (hi - lo)
    return float((np.exp(diff) - 1) * 100)


def bd_psnr(rate_ref, psnr_ref, rate_test, psnr_test, method="cubic"):
    """Bjontegaard delta PSNR in dB: the mean PSNR difference at equal rate over the
    overlapping log-rate range. Positive: test is better."""
    r0, p0, r1, p1 = _curves(rate_ref, psnr_ref, rate_test, psnr_test)
    span = overlap(np.log(r0), np.log(r1))
    if span is None:
        raise ValueError("the rate ranges do not overlap")
    lo, hi = span
    return float((_integral(np.log(r1), p1, lo, hi, method) - _integral(np.log(r0), p0, lo, hi, method)) / (hi - lo))


BASELINE_ORDER = ("avif", "webp", "jpeg")    # newest first: each is compared with those after it


def bd_report(results):
    """BD-rate and BD-PSNR of every result against every later one (bpp of whole files vs
    psnr-rgb), one line each. Cubic (VCEG-M33) when both curves have 4 points or more, else
    piecewise cubic; ranges that overlap on less than half the narrower curve are flagged."""
    lines = ["BD-rate of whole-file bpp vs PSNR-RGB, computed over the overlapping PSNR range "
             "(negative: fewer bits for the same PSNR):"]
    for i, test in enumerate(results):
        for ref in results[i + 1:]:
            label = f"  {test['name']} vs {ref['name']}"
            rr, pr = ref["results"]["bpp"], ref["results"]["psnr-rgb"]
            rt, pt = test["results"]["bpp"], test["results"]["psnr-rgb"]
            method = "cubic" if min(len(rr), len(rt)) >= 4 else "pchip"
            try:
                rate, dpsnr = bd_rate(rr, pr, rt, pt, method), bd_psnr(rr, pr, rt, pt, method)
            except ValueError as err:
                lines.append(f"{label:<20} not computable: {err} ({test['name']} {min(pt):.1f}-{max(pt):.1f} "
                             f"dB, {ref['name']} {min(pr):.1f}-{max(pr):.1f} dB)")
                continue
            lo, hi = overlap(pr, pt)
            narrower = min(np.ptp(pr), np.ptp(pt))
            note = "; the ranges barely overlap" if hi - lo < max(1.0, 0.5 * narrower) else ""
            lines.append(f"{label:<20}{rate:+7.1f} %   BD-PSNR {dpsnr:+.2f} dB   "
                         f"(PSNR {lo:.1f}-{hi:.1f} dB, {method}{note})")
    return "\n".join(lines)


def check_plotting():
    """Raise MinstfError unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MinstfError("the R-D plot needs matplotlib: pip install matplotlib "
                          "(or pip install 'minstf[eval]'), or pass --no-plot") from None


def plot_rd(results, path, title=None):
    """R-D plot (PNG): whole-file bpp vs PSNR-RGB, one line per codec, a marker per rate point.
    `path` is a file name or a binary file object."""
    check_plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)                    # no pyplot: no global state, no display needed
    ax = fig.add_subplot()
    for res in results:
        ax.plot(res["results"]["bpp"], res["results"]["psnr-rgb"], marker="o", label=res["name"])
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("PSNR-RGB (dB, 8-bit)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")


# --- the `minstf eval` command ------------------------------------------------------------

def int_list(text):
    """'1,2,3' -> [1, 2, 3]; 'none' -> []; None -> None. ValueError for anything else."""
    if text is None or text.strip().lower() == "none":
        return None if text is None else []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers or 'none', got {text!r}") from None


def run_demo(model, image, src, weights, backend, portable=True, keep=None, force=False, inputs=()):
    """What `minstf demo` does: encode and decode a uint8 (H, W, 3) image read from `src` (a file
    name or `-`) through real files `<stem>.mstf` and `<stem>.png` (in `keep`, else in a temporary
    folder, deleted); returns the report: size, weights, rate, PSNR and MS-SSIM, times, files."""
    import tempfile

    from .. import fileio

    name, stem = fileio.display_name(src, "stdin"), "stdin" if src == "-" else Path(src).stem

    with tempfile.TemporaryDirectory(prefix="minstf-demo-") as tmp:
        folder = Path(keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        mstf, png = str(folder / f"{stem}.mstf"), str(folder / f"{stem}.png")
        for out in (mstf, png):
            fileio.check_output(out, force, inputs)
        t0 = time.perf_counter()
        data, stats = encode_image(model, image, portable=portable)
        t1 = time.perf_counter()
        fileio.write_output(mstf, data, force, inputs)
        with fileio.naming(mstf):
            decoded, _ = decode_image(model, fileio.read_mstf(mstf)[0])
        t2 = time.perf_counter()
        fileio.write_output(png, fileio.png_bytes(decoded), force, inputs)
    return (f"image    {name}, {stats.width}x{stats.height}\n"
            f"weights  {weights} ({model.fingerprint[:12]}…), backend {backend}, "
            f"{'portable' if portable else 'fast'} mode\n"
            f"rate     {stats.file_bytes:,} bytes: {stats.bpp:.4f} bpp (file), {stats.payload_bpp:.4f} bpp (payload)\n"
            f"quality  PSNR {psnr_uint8(image, decoded):.2f} dB (8-bit RGB), "
            f"MS-SSIM {ms_ssim(to_float(image), to_float(decoded)):.4f}\n"
            f"time     encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s\n"
            f"files    {'kept in ' + str(folder) if keep else 'none kept (use --keep DIR)'}")


def plan(weights=(), qualities=None, baselines="jpeg,webp,avif", workers=None, scheduler=None):
    """(runs [(label, weight file)], codecs) from `minstf eval`'s options: the weight files given,
    else the shipped ones of `qualities` (default all); `baselines`: Pillow codecs or "none".
    click.UsageError for options that exclude each other."""
    import click

    from ..zoo import QUALITIES, default_weights

    for a, b, both in (("--weights", "--qualities", weights and qualities is not None),
                       ("--workers", "--scheduler", workers and scheduler)):
        if both:
            raise click.UsageError(f"give {a} or {b}, not both")

    runs = [(Path(w).stem, Path(w)) for w in weights] or \
        [(q, default_weights(q)) for q in (QUALITIES if qualities is None else qualities)]
    codecs = [] if baselines.strip().lower() == "none" else [c.strip().lower() for c in baselines.split(",")]
    return runs, codecs


@dataclass(frozen=True)
class Task:
    """One image at one rate point: what this process, or a Dask worker, evaluates."""
    index: int               # place in the evaluation: rows go back into this order
    kind: str                # "minstf" or a Pillow codec
    point: object            # the run's label (minstf) or the quality (Pillow)
    image: str               # absolute, so that --scheduler workers find it on a shared file system
    weights: str = None      # minstf: the weight file


def evaluate_task(task, backend="numpy", load=None):
    """The per-image row of a task; load(path) -> model, by default batch.cached_model (once a
    process: a Dask worker loads each weight file once). A bad image raises, as in-process."""
    if task.kind != "minstf":
        return pillow_row(task.kind, task.point, task.image)
    from ..batch import cached_model

    return minstf_row((load or (lambda p: cached_model(p, backend, "fast")))(task.weights), task.image)


def evaluate_tasks(tasks, backend="numpy", load=None, client=None, tick=lambda task: None):
    """[row] in task order: evaluated here one after the other, or on the workers of the Dask
    `client`, tick(task) as each one finishes (in the order they finish). The first task that
    fails stops the evaluation with its error (Dask does not retry a task that raised); a task
    whose workers kept dying (KilledWorker) is an error too."""
    def died(task, err):
        raise MinstfError(f"{task.image}: the workers evaluating it died ({err})")

    rows = [None] * len(tasks)
    if client is None:
        results = ((task, evaluate_task(task, backend, load)) for task in tasks)
    else:
        results = cluster.as_completed(client, tasks, evaluate_task, backend, died)
    for task, row in results:
        rows[task.index] = row
        tick(task)
    return rows


def run_eval(folder, out_dir, runs, codecs, points, limit=None, backend="numpy", plot=True, force=False,
             load=None, say=None, progress=None, out=None, workers=None, scheduler=None):
    """What `minstf eval` does: evaluate every weight file of `runs` [(label, path)] and every Pillow
    codec of `codecs` at its `points[codec]` qualities on the images of `folder`, in this process
    or on Dask (`workers` local processes, or the cluster of `scheduler`: tooling/cluster.py);
    print the table and BD-rates on `out`; write <codec>.json and rd.png to `out_dir` (fileio:
    never over an input, an existing file only with `force`). load(path) -> model (in this
    process); say(text): notes on stderr or None; progress(task): called with each finished Task."""
    import json

    from .. import fileio
    from ..zoo import claimed_fingerprint, load_model

    for codec in codecs:
        for q in points.get(codec, [None]):
            check_quality(codec, q)
    codecs = sorted((c for c in codecs if points[c]), key=BASELINE_ORDER.index)
    if not runs and not codecs:
        raise BadInput("nothing to evaluate")
    paths = image_paths(folder, limit)
    target, names = Path(out_dir), (["minstf.json"] if runs else []) + [f"{c}.json" for c in codecs]
    names += [] if not plot else ["rd.png"]
    target.mkdir(parents=True, exist_ok=True)
    inputs = [str(p) for p in paths] + [str(path) for _, path in runs]
    for name in names:
        fileio.check_output(str(target / name), force, inputs)
    if plot:
        check_plotting()
    used = [f"{label}: {Path(path).name} ({claimed_fingerprint(path).hex()[:12]})" for label, path in runs]
    series = [("minstf", label, str(Path(path).resolve())) for label, path in runs] + \
        [(codec, q, None) for codec in codecs for q in points[codec]]     # one rate point each
    tasks = [Task(i * len(paths) + j, kind, label, str(Path(image).resolve()), weights)
             for i, (kind, label, weights) in enumerate(series) for j, image in enumerate(paths)]
    models, load = {}, load or (lambda path: load_model(path, backend=backend))
    with cluster.client(workers, scheduler) as client:
        if client is not None and say:
            say(f"dask: {len(client.scheduler_info()['workers'])} workers ({client.scheduler.address})")
        where = _timed_where(client)
        rows = evaluate_tasks(tasks, backend, lambda p: models[p] if p in models else models.setdefault(p, load(p)),
                              client, progress or (lambda task: None))
    done = {}  # kind -> [(label, rows of its images, in order)]
    for i, (kind, label, _) in enumerate(series):
        done.setdefault(kind, []).append((label, rows[i * len(paths):(i + 1) * len(paths)]))
    results = []
    if runs:
        results.append(summarize("minstf", f"{MINSTF_DESCRIPTION} Weights {'; '.join(used)}. "
                                           f"Backend {backend}. {where}", done["minstf"]))
        drift = sum(not row["forward-matches-decoded"] for _, rows in done["minstf"] for row in rows)
        if drift and say:
            say(f"note: {drift} decoded images differ from forward()'s: their psnr-float is forward()'s")
    for codec in codecs:
        results.append(summarize(PILLOW_NAMES[codec], f"{pillow_description(codec)} {where}", done[codec]))
    print(f"{folder}: {len(paths)} images\n{format_table(results)}\n\n{bd_report(results)}", file=out)
    for res, name in zip(results, names):
        fileio.write_output(str(target / name), (json.dumps(res, indent=2) + "\n").encode(), force, inputs)
    if plot:
        buf = io.BytesIO()
        plot_rd(results, buf, title=f"{Path(folder).resolve().name}: {len(paths)} images")
        fileio.write_output(str(target / "rd.png"), buf.getvalue(), force, inputs)
    if say:
        say(f"wrote {', '.join(names)} to {target}")
    return results


def _timed_where(client):
    """Where the times were measured, for the JSON descriptions."""
    if client is None:
        return "Times: wall seconds in one process, one image after the other."
    return (f"Times: wall seconds measured on the Dask worker that evaluated each image "
            f"({len(client.scheduler_info()['workers'])} workers, running in parallel).")


# Relative cost of one image at one rate point, for the progress bar's ETA: seconds per Kodak
# image on a 2-core AMD EPYC, minstf's shipped small model (encode + decode + forward) about 5 s,
# Pillow's JPEG 0.01 s, WebP 0.08 s, AVIF 0.16 s (encode + decode).
COST = {"minstf": 500, "jpeg": 1, "webp": 8, "avif": 16}


def total_steps(folder, limit, runs, codecs, points):
    """The progress bar's length: the sum of COST over the tasks run_eval makes (images x rate
    points), so that its ETA weighs a minstf image as much as ~500 JPEG ones."""
    n = len(image_paths(folder, limit))
    return n * (COST["minstf"] * len(runs) + sum(COST[c] * len(points.get(c) or []) for c in codecs
                                                 if c in PILLOW_CODECS))


def total_tasks(folder, limit, runs, codecs, points):
    """How many tasks run_eval makes: images x rate points."""
    n = len(image_paths(folder, limit))
    return n * (len(runs) + sum(len(points.get(c) or []) for c in codecs if c in PILLOW_CODECS))


class TaskProgress:
    """progress(task) for run_eval: advances a click progress bar by the task's COST (so its ETA
    weighs the codecs' costs) and, given say, says one line per finished task (stderr not a terminal)."""

    def __init__(self, bar, tasks, say=None):
        self.bar, self.tasks, self.say, self.done, self.start = bar, tasks, say, 0, time.perf_counter()

    def __call__(self, task):
        self.done += 1
        self.bar.update(COST[task.kind])
        if self.say:
            self.say(task_line(task, self.done, self.tasks, time.perf_counter() - self.start))


def task_line(task, done, total, seconds):
    """The line `minstf eval` prints for a finished task when stderr is not a terminal."""
    point = f"q{task.point}" if isinstance(task.point, int) else task.point  # a shipped quality or a file's label
    what = f"minstf {point}" if task.kind == "minstf" else f"{PILLOW_NAMES[task.kind]} q{task.point}"
    return f"eval: {Path(task.image).name}, {what} ({done}/{total} tasks, {seconds:.0f} s)"
