"""The channel-conditional slice loop with latent residual prediction (docs/architecture.md §5).

Written once and shared by forward(), compress() and decompress(): the three
entry points differ only in how a slice's integer symbols are obtained
(`quantize` below), which is the single path-dependent step:

    forward / compress:  symbols = round(y_s - mu)           (from the encoder's y)
    decompress:          symbols = decoded from the stream    (with index(scale))

The latent's M channels are cut into S slices of Cs = M / S channels. For slice s,
with the first k = min(s, max_support) finished slices as support:

    latent_means  ─┐                      ┌─► cc_mean_transforms[s]  ─► mu
    y_hat[0:k]   ──┼─► mean support ──────┤
                   │                      └──────────────┐
    latent_scales ─┴─► scale support ───► cc_scale_transforms[s] ─► scale
                                                          │
    symbols = quantize(s, mu, scale);  y_hat_s = symbols + mu
    y_hat_s += 0.5 * tanh(lrp_transforms[s](mean support ++ y_hat_s))

The slice networks run in bands of BAND latent rows (minstf/rows.py, docs/tiling.md §4),
each band's support concatenated only for its rows: memory follows the band, not the
image. BAND is fixed, never an option, so the encoder and the decoder always run the
same products; a latent of at most BAND rows (an image of at most 16 * BAND pixel
rows) is one band, the whole-map computation.
"""
from .backend import xp_of
from .rows import LATENT_BAND as BAND, collect
from .switch import DEFAULT_KERNELS
from .transforms import slice_network_rows


def run_slices(latent_means, latent_scales, params, config, quantize, taps=None, kernels=DEFAULT_KERNELS,
               on_slice=None):
    """Decode-order loop over the slices; returns y_hat (B, H, W, M).

    latent_means, latent_scales: (B, H, W, M) from h_mean_s / h_scale_s, H, W the latent size.
    quantize(s, mu, scale) -> integer-valued array (B, H, W, Cs) of symbols for slice s.
    taps: optional dict; receives the per-slice tensors concatenated over the slices
    under the golden names mu, scale, y_hat_pre_lrp, lrp_raw (each (B, H, W, M)).
    on_slice: optional callback, called with s as slice s begins (progress reports).
    """
    xp = xp_of(latent_means)
    B, H, W, M = latent_means.shape
    Cs = config.slice_channels
    y_hat = xp.empty((B, H, W, M), dtype=latent_means.dtype)  # filled slice by slice
    record = {"mu": [], "scale": [], "y_hat_pre_lrp": [], "lrp_raw": []}

    def network(prefix, *maps):  # slice network on the channels of `maps` side by side, band by band
        rows = lambda a, b: xp.concatenate([m[:, a:b] for m in maps], axis=-1)  # noqa: E731 (B, b-a, W, sum C)
        return collect(slice_network_rows(params, prefix, kernels), rows, H, BAND)  # (B, H, W, Cs)

    for s in range(config.num_slices):
        if on_slice is not None:
            on_slice(s)
        support = y_hat[..., :Cs * min(s, config.max_support_slices)]  # the FIRST finished slices
        mu = network(f"cc_mean_transforms.{s}", latent_means, support)  # mean support (B, H, W, M + Cs*k) -> mu
        scale = network(f"cc_scale_transforms.{s}", latent_scales, support)
        symbols = quantize(s, mu, scale)
        y_hat_s = symbols.astype(mu.dtype) + mu  # dequantize
        lrp = network(f"lrp_transforms.{s}", latent_means, support, y_hat_s)  # (M + Cs*(k+1)) -> Cs
        if taps is not None:
            for name, value in zip(record, (mu, scale, y_hat_s, lrp)):
                record[name].append(value)
        y_hat[..., s * Cs:(s + 1) * Cs] = y_hat_s + mu.dtype.type(0.5) * xp.tanh(lrp)  # latent residual prediction
    if taps is not None:
        taps.update({name: xp.concatenate(values, axis=-1) for name, values in record.items()})
    return y_hat  # (B, H, W, M)


def slice_of(y, s, config):
    """Channels of slice s of a (B, H, W, M) latent: (B, H, W, Cs)."""
    Cs = config.slice_channels
    return y[..., s * Cs:(s + 1) * Cs]
