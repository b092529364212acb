"""Cross-check minstf against the PyTorch mirror: every stage, every decision, the rate.

The same weights and the same image go through minstf (NumPy) and through the mirror
(`minstf.mirror.stf_torch.STFTorch`, or `wacnn_torch.WACNNTorch` for a WACNNConfig, written
independently from the same spec), both in eval mode and float32, and every stage is
compared in minstf's layout (tokens (B, L, C),
latent maps and WACNN's layer maps (B, H, W, C), image and likelihoods NCHW):

    x ─► minstf STF.forward(taps) ─► stages, decisions, likelihoods ─┐
    x ─► STFTorch / WACNNTorch.taps ─► stages, decisions, likelihoods ─┴─► rows, decisions, bpp

Continuous stages have a tolerance, discrete decisions have none:

* a stage is OK when max|minstf - torch| <= ATOL * max(1, max|torch|): 1e-4 absolute on
  unit-scale tensors, 1e-4 relative on larger ones (float32 noise here is 1e-7 .. 1e-5;
  a bug shows up as 1e-3 .. 1). Likelihoods are probabilities in [1e-9, 1], unit-scale
  tensors compared within LIK_ATOL = 1e-4 absolute, like the rest. They amplify the noise
  of their inputs (p moves by up to ~1.2 |d scale| and, at the smallest scale 0.11, by
  ~7 |d mu|): measured up to 1.5e-5. Not compared as bits: near the 1e-9 floor a relative
  error means nothing; the bpp lines compare the bits in aggregate.
* decisions (y symbols round(y - mu), scale indexes, z symbols round(z - median)) must be
  equal, except at a tie: when y - mu = 2.4999998 on one side and 2.5000002 on the other,
  the two correct float32 programs round differently. A disagreement is a tie when its
  margin is below TIE_MARGIN = 1e-4: |frac(v) - 0.5| for a symbol, the relative distance
  of the scale from the nearest table entry for an index. Ties must also be few (at most
  3, or MAX_TIE_FRACTION = 1e-3 of the decisions): with float32 noise of ~1e-6 a tie is a
  one-in-10^5 event.

Ties and teacher forcing. One flipped y symbol changes y_hat by 1 there and, through the
later slices' support and g_s, every stage after it: free-running, the two sides are not
comparable downstream of a tie. So when a free-running decision differs, minstf runs its
entropy path again *teacher-forced* on the mirror's decisions (the mirror's z symbols for
z_hat, its y symbols through run_slices' `quantize` hook, the hook decompress uses): both
sides then see the same inputs at every slice, every later stage is compared on equal
footing, and each of minstf's own decisions is compared with the mirror's on those equal
inputs (one decision, one comparison, no cascade). Free-running rows that fail only
downstream of a tie read `tie`; the verdict on those stages is the teacher-forced table's.

Rate: bits per pixel estimated from the likelihoods on both sides (upstream's
--entropy-estimation), minstf's actual coded size (compress), and the mirror's symbols and
indexes coded with minstf's coder (`coded_from_symbols`).

torch is imported only when a cross-check runs (`require_torch`).
"""
from dataclasses import dataclass, field

import numpy as np

from ..coding import SymbolEncoder, channel_first_flat, symbols_crc
from ..config import WACNNConfig
from ..entropy_models import (SCALE_BOUND, SCALE_TABLE, build_indexes, eb_likelihood, eb_tables, gc_likelihood,
                             gc_tables)
from ..errors import BadInput, MinstfError
from ..image import eval_padding, pad, to_float
from ..model import STF, Compressed
from ..slices import run_slices, slice_of

ATOL = 1e-4             # on unit-scale tensors; relative (x max|ref|) on larger ones
LIK_ATOL = 1e-4         # likelihoods (probabilities), absolute
TIE_MARGIN = 1e-4       # a disagreeing decision closer than this to its threshold is a tie
MAX_TIE_FRACTION = 1e-3  # ... and ties must be rare (at most 3, or this fraction of the decisions)

# mirror taps that are latent maps (NCHW there, channels-last in minstf)
_LATENT_MAPS = ("y", "z", "z_hat", "latent_means", "latent_scales", "mu", "scale", "y_hat_pre_lrp", "lrp_raw",
                "y_hat")


class TorchMissing(MinstfError):
    exit_code = 1


def require_torch():
    """Import the mirror and torch, or raise TorchMissing with the install line."""
    try:
        from ..mirror import stf_torch  # noqa: F401 (sets the OpenMP wait policy before torch loads)
        import torch
    except ImportError as e:
        if (e.name or "").split(".")[0] != "torch":
            raise
        raise TorchMissing("minstf crosscheck needs PyTorch: pip install 'minstf[torch]'") from None
    return torch


# --- weights ------------------------------------------------------------------------------

def synthetic_params(config, seed=0):
    """Synthetic weights for any config: the golden recipe (seed 0), or for seed > 0 the recipe with
    every tensor moved by 0.5 of its own standard deviation of seeded Gaussian noise (a different,
    equally well-scaled network). The entropy bottleneck's quantiles stay as drawn (they must stay
    ordered)."""
    from ..synthetic import recipe_weights

    params = recipe_weights(config)
    if seed == 0:
        return params
    out = {}
    for k, (key, value) in enumerate(params.items()):
        if key.endswith(".quantiles"):
            out[key] = value
            continue
        rng = np.random.default_rng([seed, k])
        spread = np.float32(0.5 * value.std()) if value.size > 1 else np.float32(0.05)
        out[key] = (value + spread * rng.standard_normal(value.shape).astype(np.float32)).astype(np.float32)
    return out


def minstf_model(model_params, config, tables=None, kernels="fast"):
    """A NumPy STF on these weights (kernels: "fast" or "reference"); CDF tables computed when not given."""
    if tables is None:
        eb = {k.split(".", 1)[1]: v for k, v in model_params.items() if k.startswith("entropy_bottleneck.")}
        tables = {**eb_tables(eb), **gc_tables()}
    return STF(config, model_params, tables, backend="numpy", fingerprint="00" * 32, kernels=kernels)


# --- results --------------------------------------------------------------------------------

@dataclass
class Row:
    """One stage: max |minstf - torch|, relative to max |torch|, and the verdict."""
    name: str
    shape: tuple
    max_ref: float
    max_abs: float
    rel: float
    tol: float
    verdict: str  # "OK", "NOT OK", or "tie" (free-running, downstream of a decision tie)


@dataclass
class Decisions:
    """minstf's decisions against the mirror's: how many differ, and how close each one was to its threshold."""
    name: str
    total: int
    differ: int
    margins: np.ndarray  # (differ,) margin of every disagreement
    examples: list = field(default_factory=list)  # up to 5 lines describing disagreements

    def all_ties(self, tie_margin=TIE_MARGIN):
        return bool(np.all(self.margins < tie_margin))

    def ok(self, tie_margin=TIE_MARGIN):
        return self.all_ties(tie_margin) and self.differ <= max(3, MAX_TIE_FRACTION * self.total)


@dataclass
class CrossCheck:
    rows: list  # free-running
    forced_rows: list  # teacher-forced (empty when no decision differed: it would equal `rows`)
    decisions: list  # [y symbols, scale indexes, z symbols], each decision on equal inputs
    free_decisions: list  # the same counted free-running (a tie cascades here)
    bpp: dict  # estimated_minstf, estimated_torch, coded_minstf, coded_torch_symbols (None if not coded)
    pixels: int
    shape: tuple
    config: object = None
    tie_margin: float = TIE_MARGIN
    atol: float = ATOL
    lik_atol: float = LIK_ATOL

    @property
    def ok(self):
        return (all(r.verdict != "NOT OK" for r in self.rows + self.forced_rows)
                and all(d.ok(self.tie_margin) for d in self.decisions))


# --- the comparison ---------------------------------------------------------------------------

def _wacnn_layer_names(name, kinds):
    """WACNN's layer maps `g_a{i}` / `g_s{i}`, each attention block's internals before its output."""
    out = []
    for i, kind in enumerate(kinds):
        if kind.startswith("attn"):
            out += [f"{name}{i}_{part}" for part in ("conv_a", "attn", "gate")]
        out.append(f"{name}{i}")
    return out


def stage_names(config):
    """Every compared stage in data-flow order."""
    entropy = ["y", "z", "z_hat", "latent_means", "latent_scales", "mu", "scale", "y_hat_pre_lrp", "lrp_raw", "y_hat"]
    if isinstance(config, WACNNConfig):  # g_a's last layer is y, g_s's last is x_hat
        from ..wacnn import G_A, G_S
        return (_wacnn_layer_names("g_a", G_A)[:-1] + entropy + _wacnn_layer_names("g_s", G_S)[:-1]
                + ["x_hat", "likelihoods y", "likelihoods z"])
    enc = [f"enc{i}_blk{b}" for i, d in enumerate(config.depths) for b in range(d)]
    enc_out = {i: f"enc{i}_out" for i in range(len(config.depths))}
    dec = [f"dec{i}_blk{b}" for i, d in enumerate(config.depths[::-1]) for b in range(d)]
    names = ["patch_embed"]
    for i, d in enumerate(config.depths):
        names += [n for n in enc if n.startswith(f"enc{i}_")] + [enc_out[i]]
    names += entropy
    for i, d in enumerate(config.depths[::-1]):
        names += [n for n in dec if n.startswith(f"dec{i}_")] + [f"dec{i}_out"]
    return names + ["x_hat", "likelihoods y", "likelihoods z"]


_AFTER_Z = "z_hat"  # a z decision reaches every stage from here on (and the z likelihoods)
_AFTER_Y = "mu"     # a y decision reaches the later slices, g_s and the y likelihoods


def _row(name, ours, ref, tol):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return Row(name, tuple(ours.shape), float("nan"), float("inf"), float("inf"), tol, "NOT OK")
    max_ref = float(np.abs(ref).max()) if ref.size else 0.0
    max_abs = float(np.abs(ours - ref).max()) if ref.size else 0.0
    rel = max_abs / max_ref if max_ref > 0 else max_abs
    return Row(name, tuple(ours.shape), max_ref, max_abs, rel, tol, "OK" if max_abs <= tol else "NOT OK")


def compare_stages(ours, theirs, names, atol=ATOL, lik_atol=LIK_ATOL):
    """Rows for `names` present in both dicts (same layouts)."""
    rows = []
    for name in names:
        if name not in ours or name not in theirs:
            continue
        ref = np.asarray(theirs[name])
        tol = lik_atol if name.startswith("likelihoods") else atol * max(1.0, float(np.abs(ref).max()))
        rows.append(_row(name, ours[name], ref, tol))
    return rows


def _mirror_stages(t):
    """The mirror's taps in minstf's layouts and names."""
    is_map = lambda k: k in _LATENT_MAPS or k[:3] in ("g_a", "g_s")  # noqa: E731 — WACNN's layer maps too
    d = {k: (v.transpose(0, 2, 3, 1) if is_map(k) else v) for k, v in t.items()}  # NCHW -> NHWC
    d["likelihoods y"], d["likelihoods z"] = t["lik_y"], t["lik_z"]
    return d


def _half_margin(v):
    """|frac(v) - 0.5|: distance of v from a rounding threshold (0 = a tie)."""
    return np.abs(np.asarray(v, np.float64) % 1.0 - 0.5)


def _index_margin(scale):
    """Relative distance of max(scale, 0.11) from the nearest entry of the scale table."""
    s = np.maximum(np.asarray(scale, np.float64), float(SCALE_BOUND))
    table = SCALE_TABLE[:-1].astype(np.float64)
    return np.min(np.abs(s[..., None] - table) / table, axis=-1)


def _decisions(name, ours, theirs, value, margin, label):
    """Compare integer decision maps (B, H, W, C); `margin(value)` of each disagreement, where
    `value` is minstf's quantity behind the decision (y - mu, scale, z - median)."""
    diff = np.asarray(ours) != np.asarray(theirs)
    margins = margin(np.asarray(value)[diff])  # only where they differ: cheap
    examples = []
    for e, m in zip(np.argwhere(diff)[:5], margins):
        e = tuple(int(i) for i in e)
        b, h, w, c = e
        examples.append(f"(channel {c}, row {h}, col {w}): minstf {int(ours[e])}, torch {int(theirs[e])}, "
                        f"{label} = {float(value[e]):.8g}, margin {float(m):.2e}")
    return Decisions(name, int(diff.size), int(diff.sum()), margins, examples)


def _forced_entropy_path(model, y, z_symbols, y_symbols):
    """minstf's entropy path and g_s on the mirror's decisions (teacher forcing).

    y: minstf's own (B, H4, W4, M); z_symbols (B, h, w, N_z), y_symbols (B, H4, W4, M): the mirror's.
    Returns (stages dict in minstf's layout, minstf's own y decisions on these inputs).
    """
    c, p, t = model.config, model.params, model.t  # t: the model's transforms module (STF's or WACNN's)
    taps = {}
    z_hat = z_symbols.astype(np.float32) + model.medians  # as decompress builds it
    latent_means, latent_scales = t.h_mean_s(z_hat, p, c), t.h_scale_s(z_hat, p, c)
    lik_y, own = [], []

    def quantize(s, mu, scale):  # the mirror's symbols; minstf's own decision recorded
        q = slice_of(y_symbols, s, c)
        own.append(np.rint(slice_of(y, s, c) - mu))
        lik_y.append(gc_likelihood(q.astype(mu.dtype) + mu, scale, mu))  # the likelihood of symbol q
        return q

    y_hat = run_slices(latent_means, latent_scales, p, c, quantize, taps)
    x_hat = t.g_s(y_hat, p, c, taps)
    taps.update(z_hat=z_hat, latent_means=latent_means, latent_scales=latent_scales, y_hat=y_hat,
                x_hat=x_hat.transpose(0, 3, 1, 2))
    taps["likelihoods y"] = np.concatenate(lik_y, axis=-1).transpose(0, 3, 1, 2)
    taps["likelihoods z"] = eb_likelihood(z_hat, model.eb).transpose(0, 3, 1, 2)  # rint(z_hat - med) = symbols
    return taps, np.concatenate(own, axis=-1)


def coded_from_symbols(model, z_symbols, y_symbols, y_indexes, portable=False):
    """A Compressed made with minstf's coder from given decisions (e.g. the mirror's), as compress makes it.

    z_symbols (1, h, w, N_z); y_symbols, y_indexes (1, H4, W4, M); integer arrays, channels-last.
    """
    c = model.config
    B, h, w, N_z = z_symbols.shape
    z_flat = channel_first_flat(np.asarray(z_symbols, np.int32))
    z_rows = np.broadcast_to(np.arange(N_z, dtype=np.int32)[None, :, None, None], (B, N_z, h, w)).reshape(-1)
    z_encoder = SymbolEncoder()
    z_encoder.add(z_flat, z_rows, model.eb_table)  # CDF row = channel
    y_encoder, crcs = SymbolEncoder(), []
    for s in range(c.num_slices):  # one stream across the slices, slice by slice
        flat = channel_first_flat(np.asarray(slice_of(y_symbols, s, c), np.int32))
        y_encoder.add(flat, channel_first_flat(slice_of(y_indexes, s, c)), model.gc_table)
        crcs.append(symbols_crc(flat))
    return Compressed(z_encoder.finish(), y_encoder.finish(), tuple(y_symbols.shape[1:3]), symbols_crc(z_flat),
                      tuple(crcs), portable)


def check_size(config, H, W):
    """The slice loop needs a latent (ceil(H/16), ceil(W/16)) of multiples of 4 (docs/architecture.md §4)."""
    d = config.downsampling
    H4, W4 = -(-H // d), -(-W // d)
    if H4 % 4 or W4 % 4:
        raise BadInput(f"a {W}x{H} image has a {W4}x{H4} latent, which the slice loop cannot use (it must be a "
                       f"multiple of 4): pad it to a multiple of {config.pad_multiple} (minstf.image.eval_padding; "
                       f"minstf crosscheck --pad)")


def crosscheck(model_params, config, x_nchw, tables=None, pixels=None, force_teacher=False, code=True,
               atol=ATOL, lik_atol=LIK_ATOL, tie_margin=TIE_MARGIN, mirror=None, kernels="fast"):
    """Run minstf and the torch mirror on the same weights and image; compare everything.

    model_params: {key: float32 array} (PyTorch names and layouts); config: STFConfig or WACNNConfig;
    x_nchw: (1, 3, H, W) float32 in [0, 1] with a latent of multiples of 4 (pad to 64 first).
    tables: the CDF tables (computed from the weights when None); pixels: the bpp denominator
    (default H*W; the eval convention counts the unpadded image); force_teacher: run the
    teacher-forced pass even when every decision agrees; code: also compress (coded bpp);
    mirror: an already loaded STFTorch / WACNNTorch (eval mode) to reuse; kernels: minstf's layer (minstf.switch).
    Returns a CrossCheck (`.ok`, rows, decisions, bpp); `format_report` prints it.
    """
    torch = require_torch()
    from ..mirror.stf_torch import STFTorch
    from ..mirror.wacnn_torch import WACNNTorch

    x = np.ascontiguousarray(x_nchw, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != config.in_chans:
        raise BadInput(f"expected one image (1, {config.in_chans}, H, W), got shape {x.shape}")
    check_size(config, *x.shape[2:])
    pixels = pixels or x.shape[2] * x.shape[3]
    names = stage_names(config)

    # minstf, free-running
    model = minstf_model(model_params, config, tables, **({} if kernels == "fast" else {"kernels": kernels}))
    taps = {}
    out = model.forward(x, taps)
    ours = {k: v for k, v in taps.items() if not k.endswith("_mask")}
    ours["x_hat"] = out["x_hat"]
    ours["likelihoods y"], ours["likelihoods z"] = out["likelihoods"]["y"], out["likelihoods"]["z"]

    # the mirror, free-running
    if mirror is None:
        mirror = (WACNNTorch if isinstance(config, WACNNConfig) else STFTorch)(config)
        mirror = mirror.load_params(model_params).eval()
    with torch.no_grad():
        t = mirror.taps(x)
    theirs = _mirror_stages(t)
    med = model.medians
    z_sym_t = np.rint(theirs["z"] - med).astype(np.int32)  # (1, h, w, N_z), the mirror's z_hat - median
    y_sym_t = t["symbols"].transpose(0, 2, 3, 1)  # (1, M, H4, W4) -> (1, H4, W4, M)
    index_t = t["index"].transpose(0, 2, 3, 1)

    # decisions, free-running
    z_sym = np.rint(ours["z"] - med).astype(np.int32)
    y_sym = np.rint(ours["y"] - ours["mu"]).astype(np.int32)
    index = build_indexes(ours["scale"])
    free = [
        _decisions("y symbols", y_sym, y_sym_t, ours["y"] - ours["mu"], _half_margin, "y - mu"),
        _decisions("scale indexes", index, index_t, ours["scale"], _index_margin, "scale"),
        _decisions("z symbols", z_sym, z_sym_t, ours["z"] - med, _half_margin, "z - median"),
    ]
    rows = compare_stages(ours, theirs, names, atol, lik_atol)
    z_flip, y_flip = free[2].differ > 0, free[0].differ > 0

    # teacher-forced: minstf on the mirror's decisions
    forced_rows, decisions = [], free
    if z_flip or y_flip or force_teacher:
        forced, own = _forced_entropy_path(model, ours["y"], z_sym_t, y_sym_t)
        forced_rows = compare_stages(forced, theirs, names[names.index(_AFTER_Z):], atol, lik_atol)
        decisions = [
            _decisions("y symbols", own.astype(np.int32), y_sym_t, ours["y"] - forced["mu"], _half_margin, "y - mu"),
            _decisions("scale indexes", build_indexes(forced["scale"]), index_t, forced["scale"], _index_margin,
                       "scale"),
            free[2],
        ]
        # free-running rows past a tie are not comparable: the teacher-forced rows judge those stages
        if all(d.ok(tie_margin) for d in decisions):
            first = names.index(_AFTER_Z if z_flip else _AFTER_Y) if (z_flip or y_flip) else len(names)
            downstream = set(names[first:]) - ({"likelihoods z"} if not z_flip else set())
            for r in rows:
                if r.verdict == "NOT OK" and r.name in downstream:
                    r.verdict = "tie"

    # rate
    bits = lambda liks: sum(float(-np.log2(np.asarray(v, np.float64)).sum()) for v in liks)  # noqa: E731
    bpp = {"estimated_minstf": bits([ours["likelihoods y"], ours["likelihoods z"]]) / pixels,
           "estimated_torch": bits([t["lik_y"], t["lik_z"]]) / pixels,
           "coded_minstf": None, "coded_torch_symbols": None}
    if code:
        c = model.compress(x)
        bpp["coded_minstf"] = 8 * (len(c.z_string) + len(c.y_string)) / pixels
        c = coded_from_symbols(model, z_sym_t, y_sym_t, index_t)
        bpp["coded_torch_symbols"] = 8 * (len(c.z_string) + len(c.y_string)) / pixels
    return CrossCheck(rows, forced_rows, decisions, free, bpp, pixels, tuple(x.shape), config, tie_margin, atol,
                      lik_atol)


def crosscheck_image(image, model_params, config, tables=None, pad_to_eval=False, **options):
    """crosscheck on a uint8 (H, W, 3) image, with the evaluation conventions: optionally zero-padded to
    a multiple of 64 (centred, eval_padding), bpp counted over the original H*W pixels.
    Returns (CrossCheck, padding (left, top, right, bottom))."""
    h, w = image.shape[:2]
    ltrb = eval_padding(h, w, config.pad_multiple) if pad_to_eval else (0, 0, 0, 0)
    x = pad(to_float(image), ltrb)  # (1, 3, H, W)
    return crosscheck(model_params, config, x, tables=tables, pixels=h * w, **options), ltrb


# --- the report --------------------------------------------------------------------------------

_WHERE = {  # stage -> the code that computes it: minstf / the mirror
    "patch_embed": "swin.patch_embed (2x2 conv, LayerNorm) / STFTorch.g_a",
    "enc": "swin.swin_block, patch_merging (g_a) / SwinBlock, PatchMerging",
    "y": "the last stage of transforms.g_a / STFTorch.g_a",
    "z": "transforms.h_a / hyper_analysis",
    "z_hat": "rounding around entropy_models.eb_medians / EntropyBottleneck.medians",
    "latent_means": "transforms.h_mean_s / hyper_synthesis",
    "latent_scales": "transforms.h_scale_s / hyper_synthesis",
    "mu": "slices.run_slices (support), transforms.slice_network / STFTorch.slice_loop",
    "scale": "slices.run_slices (support), transforms.slice_network / STFTorch.slice_loop",
    "y_hat_pre_lrp": "slices.run_slices (symbols + mu) / STFTorch.slice_loop",
    "lrp_raw": "slices.run_slices (LRP input: mean support + slice) / STFTorch.slice_loop",
    "y_hat": "slices.run_slices (+ 0.5 tanh(lrp)) / STFTorch.slice_loop",
    "dec": "swin.swin_block, patch_split (g_s) / SwinBlock, PatchSplit",
    "x_hat": "transforms.end_conv / STFTorch.end_conv",
    "likelihoods y": "entropy_models.gc_likelihood / GaussianConditional",
    "likelihoods z": "entropy_models.eb_likelihood / EntropyBottleneck",
}
_WHERE_WACNN = {  # WACNN's transforms (the rest is STF's)
    "y": "the last layer of wacnn.g_a (attention block) / WACNNTorch.g_a",
    "x_hat": "the last layer of wacnn.g_s (transposed conv) / WACNNTorch.g_s",
    "g_a": "wacnn.layer (the G_A entry of that index) / wacnn_torch.analysis",
    "g_s": "wacnn.layer (the G_S entry of that index) / wacnn_torch.synthesis",
}


def _where(name, config=None):
    if isinstance(config, WACNNConfig) and (name in _WHERE_WACNN or name[:3] in _WHERE_WACNN):
        return _WHERE_WACNN.get(name) or _WHERE_WACNN[name[:3]]  # g_a{i}... / g_s{i}...
    return _WHERE.get(name) or _WHERE[name[:3]]  # enc{i}_... / dec{i}_...


def format_table(rows):
    """llm.c check_tensor style: one line per stage."""
    lines = [f"{'stage':16s} {'shape':20s} {'max|ref|':>9s} {'max|diff|':>10s} {'rel':>9s} {'tol':>8s}  verdict"]
    for r in rows:
        lines.append(f"{r.name:16s} {str(r.shape):20s} {r.max_ref:9.4g} {r.max_abs:10.3g} {r.rel:9.2e} "
                     f"{r.tol:8.1e}  {r.verdict}")
    return lines


def hints(result):
    """Lines saying where to look when something is off (empty when all is well)."""
    out = []
    for table, rows in (("free-running", result.rows), ("teacher-forced", result.forced_rows)):
        bad = [i for i, r in enumerate(rows) if r.verdict == "NOT OK"]
        if bad:
            r = rows[bad[0]]
            before = f"after {rows[bad[0] - 1].name} ({rows[bad[0] - 1].verdict}), " if bad[0] else ""
            out.append(f"hint: {table}: the first NOT OK stage is {r.name} ({r.rel:.1e} relative): the bug is in the "
                       f"code {before}that computes it: {_where(r.name, result.config)}")
            if bad[0] == 0 and table == "free-running":
                out.append("hint: the very first stage differs: did both sides get the same weights and image "
                           "(layouts, key names, padding)?")
            break
    for d in result.decisions:
        if not d.all_ties(result.tie_margin):
            what = "round(y - mu) (half to even) or mu" if "symbol" in d.name else "the scale table or build_indexes"
            out.append(f"hint: {d.differ} {d.name} differ away from any threshold (margin up to "
                       f"{d.margins.max():.2g}): {what} disagree, this is not float32 noise")
        elif not d.ok(result.tie_margin):
            out.append(f"hint: {d.differ} {d.name} differ, all near a threshold but too many to be chance ties")
    if any(r.verdict == "tie" for r in result.rows):
        out.append("note: rows marked `tie` differ only downstream of a decision taken at a rounding threshold; the "
                   "teacher-forced table compares those stages on equal decisions")
    return out


def format_report(result):
    """The whole report as text: tables, decisions, bpp, verdict, hints."""
    c = result.config
    B, C, H, W = result.shape
    lines = []
    if isinstance(c, WACNNConfig):
        lines.append(f"WACNN N {c.N}, M {c.M}, windows {tuple(c.window_sizes)}, {c.num_slices} slices; "
                     f"image {W}x{H}; minstf (NumPy) vs torch mirror, float32, eval mode")
    elif c is not None:
        lines.append(f"STF embed_dim {c.embed_dim}, depths {tuple(c.depths)}, {c.num_slices} slices; "
                     f"image {W}x{H}; minstf (NumPy) vs torch mirror, float32, eval mode")
    lines.append(f"tolerance: max|diff| <= {result.atol:g} x max(1, max|ref|), likelihoods {result.lik_atol:g} "
                 f"absolute; decisions exact except ties (margin < {result.tie_margin:g})")
    lines += ["", "free-running (each side takes its own decisions)"] + format_table(result.rows)
    if result.forced_rows:
        lines += ["", "teacher-forced (minstf takes the mirror's z and y symbols)"] + format_table(result.forced_rows)
    forced = bool(result.forced_rows)
    lines += ["", "decisions" + (" (teacher-forced: each one on equal inputs)" if forced else "")]
    for d, f in zip(result.decisions, result.free_decisions):
        text = f"{d.name:14s} {d.differ:,} of {d.total:,} differ"
        if d.differ:
            text += f", margins {', '.join(f'{m:.1e}' for m in np.sort(d.margins)[::-1][:5])}"
            text += " (ties)" if d.all_ties(result.tie_margin) else "  NOT OK"
        if forced and f.differ != d.differ:
            text += f"; free-running {f.differ:,} (a tie cascades through the later slices)"
        lines.append(text)
        lines += ["    " + e for e in d.examples]
    b = result.bpp
    lines += ["", f"bpp over {result.pixels:,} pixels",
              f"estimated      minstf {b['estimated_minstf']:.4f}   torch {b['estimated_torch']:.4f}   "
              f"(difference {b['estimated_minstf'] - b['estimated_torch']:+.2e})"]
    if b["coded_minstf"] is not None:
        lines.append(f"coded          minstf {b['coded_minstf']:.4f}   torch symbols {b['coded_torch_symbols']:.4f}"
                     f" (minstf's coder)")
    lines += ["", "verdict: " + ("OK" if result.ok else "NOT OK")]
    return "\n".join(lines + hints(result))


# --- the `minstf crosscheck` command -------------------------------------------------------

def run_crosscheck(image, name, weights=None, synthetic=None, seed=0, pad_to_eval=False, kernels="fast", out=None):
    """What `minstf crosscheck` does: compare minstf with the mirror on a uint8 (H, W, 3) image
    called `name`, with the weight file `weights` or the synthetic recipe weights `synthetic`
    (a name of config.SYNTHETIC_CONFIGS: "full", "small", "cnn", "cnn-small"; perturbed by `seed`), minstf on `kernels`; print the report on `out`.
    Returns result.ok."""
    require_torch()
    if synthetic:
        from ..config import SYNTHETIC_CONFIGS
        config, tables, what = SYNTHETIC_CONFIGS[synthetic], None, f"synthetic {synthetic}, seed {seed}"
        params = synthetic_params(config, seed)
    else:
        from ..weights import load_weights
        w = load_weights(weights)
        config, params, tables, what = w.config, w.params, w.tables, f"{weights} ({w.fingerprint[:12]}…)"
    try:
        result, ltrb = crosscheck_image(image, params, config, tables, pad_to_eval, kernels=kernels)
    except MinstfError as err:
        raise type(err)(f"{name}: {err}") from None
    h, w_ = image.shape[:2]
    print(f"image    {name}, {w_}x{h}" + (f", padded to {result.shape[3]}x{result.shape[2]} "
          f"(left, top, right, bottom: {', '.join(map(str, ltrb))})" if any(ltrb) else ""), file=out)
    print(f"weights  {what}", file=out)
    print(format_report(result), file=out)
    return result.ok
