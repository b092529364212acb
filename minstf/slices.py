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
"""
from .backend import xp_of
from .switch import DEFAULT_KERNELS
from .transforms import slice_network


def run_slices(latent_means, latent_scales, params, config, quantize, taps=None, kernels=DEFAULT_KERNELS,
               on_slice=None):
    """Decode-order loop over the slices; returns y_hat (B, H, W, M).

    latent_means, latent_scales: (B, H, W, M) from h_mean_s / h_scale_s
    (H, W = the latent size; the hyper-synthesis maps may be larger and are cropped).
    quantize(s, mu, scale) -> integer-valued array (B, H, W, Cs) of symbols for slice s.
    taps: optional dict; receives the per-slice tensors concatenated over the slices
    under the golden names mu, scale, y_hat_pre_lrp, lrp_raw (each (B, H, W, M)).
    on_slice: optional callback, called with s as slice s begins (progress reports).
    """
    xp = xp_of(latent_means)
    H, W = latent_means.shape[1:3]
    y_hat_slices = []
    record = {"mu": [], "scale": [], "y_hat_pre_lrp": [], "lrp_raw": []}
    for s in range(config.num_slices):
        if on_slice is not None:
            on_slice(s)
        support = y_hat_slices[: config.max_support_slices]  # the FIRST finished slices
        mean_support = xp.concatenate([latent_means] + support, axis=-1)  # (B, H, W, M + Cs*k)
        scale_support = xp.concatenate([latent_scales] + support, axis=-1)
        mu = slice_network(mean_support, params, f"cc_mean_transforms.{s}", kernels)[:, :H, :W]  # (B, H, W, Cs)
        scale = slice_network(scale_support, params, f"cc_scale_transforms.{s}", kernels)[:, :H, :W]
        symbols = quantize(s, mu, scale)
        y_hat_s = symbols.astype(mu.dtype) + mu  # dequantize
        lrp_in = xp.concatenate([mean_support, y_hat_s], axis=-1)  # (B, H, W, M + Cs*(k+1))
        lrp = slice_network(lrp_in, params, f"lrp_transforms.{s}", kernels)[:, :H, :W]
        if taps is not None:
            for name, value in zip(record, (mu, scale, y_hat_s, lrp)):
                record[name].append(value)
        y_hat_s = y_hat_s + mu.dtype.type(0.5) * xp.tanh(lrp)  # latent residual prediction
        y_hat_slices.append(y_hat_s)
    if taps is not None:
        taps.update({name: xp.concatenate(values, axis=-1) for name, values in record.items()})
    return xp.concatenate(y_hat_slices, axis=-1)  # (B, H, W, M)


def slice_of(y, s, config):
    """Channels of slice s of a (B, H, W, M) latent: (B, H, W, Cs)."""
    Cs = config.slice_channels
    return y[..., s * Cs:(s + 1) * Cs]
