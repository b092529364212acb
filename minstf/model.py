"""The STF model (and WACNN, `cnn`, on the same code): weights, CDF tables and the three entry points.

    x ─► g_a ─► y ─► h_a ─► z ─► Q ─► factorized prior (EB) ─► z string
                │                │
                │              z_hat ─┬─► h_mean_s ─► latent_means ─┐
                │                     └─► h_scale_s ─► latent_scales ┤
                │                                                    ▼
                └─────────────► slice loop (slices.py): per slice mu, scale ─► Q ─► GC ─► y string
                                                  │                 (index)
                                                y_hat ─► g_s ─► x_hat

`forward` estimates the rate from likelihoods (no coding); `compress` and
`decompress` are mirror images that produce and consume the two strings. Inside,
maps are channels-last (B, H, W, C); the public methods take and return NCHW.

Kernels: `kernels="fast"` (default) or `"reference"` picks the layer of `minstf.switch`
that every network of the model runs on; the strings and files are the same format
either way, so a file encoded on one layer decodes on the other.

Models: the class holds its transforms module, `minstf.transforms` for an STFConfig
(stf) and `minstf.wacnn` for a WACNNConfig (cnn, docs/wacnn.md); both provide
g_a, g_s, h_a, h_mean_s, h_scale_s with the same signatures. The entropy models,
the slice loop (its num_slices / max_support_slices from the config) and the coding
are shared.

Tiling: `tile=` (image rows per band, None: whole) runs g_a and g_s band by band
(minstf/rows.py, docs/tiling.md): memory follows the band, and the result is the
whole-image one within float32 noise. x may then also be an `image.PaddedRows`, the
padded float image made band by band. The hyperprior and slice networks always run in
fixed bands of latent rows (rows.LATENT_BAND), whatever `tile` is.

Portable mode: the entropy-parameter path (h_mean_s, h_scale_s and the slice
networks) runs in float64, so that the discrete decisions that must agree
between encoder and decoder (scale indexes, round(y - mu)) do not depend on the
BLAS library, CPU or GPU that computed them. The analysis and synthesis
transforms stay float32.
"""
from dataclasses import dataclass

import numpy as np

from .backend import get_xp, to_device, to_host
from .coding import (CdfTable, SymbolDecoder, SymbolEncoder, channel_first_flat, check_symbols,
                     from_channel_first_flat, symbols_crc)
from . import transforms, wacnn
from .config import STFConfig, WACNNConfig
from .entropy_models import build_indexes, eb_likelihood, eb_medians, gc_likelihood, quantize_symbols
from .errors import BadInput, CorruptFile, DecoderMismatch
from .image import PaddedRows
from .rows import collect
from .slices import run_slices, slice_of
from .switch import DEFAULT_KERNELS, get_kernels, kernels_name

ENTROPY_PARAMETER_PREFIXES = ("h_mean_s.", "h_scale_s.", "cc_mean_transforms.",
                              "cc_scale_transforms.", "lrp_transforms.")


@dataclass
class Compressed:
    """What compress() produces for one image: the two strings and their check sums."""
    z_string: bytes
    y_string: bytes
    y_shape: tuple  # (H4, W4), the latent size; z is (H4 // 4, W4 // 4)
    z_crc: int  # CRC32 of the z symbols
    slice_crcs: tuple  # CRC32 of each y slice's symbols
    portable: bool


def nchw(a):
    return a.transpose(0, 3, 1, 2)


def nhwc(a):
    return a.transpose(0, 2, 3, 1)


def _told(rows, say, step, total):
    """A row source that reports progress ("analysis 40%") as each band is taken."""
    def told(a, b):
        say(f"{step} {100 * a // total}%")
        return rows(a, b)
    return told


def transforms_of(config):
    """The module of a configuration's continuous networks: minstf.wacnn (cnn) or minstf.transforms (stf)."""
    return wacnn if isinstance(config, WACNNConfig) else transforms


class STF:
    """An STF (or WACNN) model on one backend. Build it with `minstf.load_model`."""

    def __init__(self, config: STFConfig, params, tables, backend="numpy", fingerprint="", name="",
                 kernels=DEFAULT_KERNELS):
        self.config, self.fingerprint, self.name = config, fingerprint, name
        self.model = "cnn" if isinstance(config, WACNNConfig) else "stf"  # the bitstream's model id
        self.t = transforms_of(config)  # g_a, g_s, h_a, h_mean_s, h_scale_s of this model
        self.xp = xp = get_xp(backend)
        self.backend = backend
        self.k = get_kernels(kernels)  # the layer every network runs on
        self.kernels = kernels_name(self.k)
        self.params = {k: to_device(np.asarray(v, np.float32), xp) for k, v in params.items()}  # once
        self._params64 = None  # float64 copies of the entropy-parameter path, made on first use
        self.eb = {k.split(".", 1)[1]: v for k, v in self.params.items() if k.startswith("entropy_bottleneck.")}
        self.medians = eb_medians(self.eb)  # (C,)
        t = {k: np.asarray(v) for k, v in tables.items()}
        self.eb_table = CdfTable(t["entropy_bottleneck._quantized_cdf"], t["entropy_bottleneck._cdf_length"],
                                 t["entropy_bottleneck._offset"])
        self.gc_table = CdfTable(t["gaussian_conditional._quantized_cdf"], t["gaussian_conditional._cdf_length"],
                                 t["gaussian_conditional._offset"])

    # --- helpers ---------------------------------------------------------------
    def entropy_params(self, portable):
        """The weights of the entropy-parameter path, in float64 when portable."""
        if not portable:
            return self.params
        if self._params64 is None:
            self._params64 = {k: (v.astype(self.xp.float64) if k.startswith(ENTROPY_PARAMETER_PREFIXES) else v)
                              for k, v in self.params.items()}
        return self._params64

    def _input(self, x):
        x = to_device(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x, self.xp)
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise BadInput(f"expected an image batch (B, {self.config.in_chans}, H, W), got shape {tuple(x.shape)}")
        return nhwc(x)  # (B, 3, H, W) -> (B, H, W, 3)

    def _analysis(self, x, taps, tile, say):
        """g_a on the whole image, or band by band when `tile` is set (never with taps)."""
        if not tile or taps is not None:
            return self.t.g_a(self._input(x), self.params, self.config, taps, self.k)
        if isinstance(x, PaddedRows):
            rows = x.rows
        else:
            self._input(x[:, :, :0])  # its checks, on no rows
            rows = lambda a, b: self._input(x[:, :, a:b])  # noqa: E731 (1, b-a, Wp, 3)
        H = x.shape[2]
        return collect(self.t.g_a_rows(self.params, self.config, self.k), _told(rows, say, "analysis", H), H, tile)

    def _synthesis(self, y_hat, tile, say):
        """g_s of y_hat as float32, whole or band by band (tile // downsampling latent rows a band)."""
        xp, c, k = self.xp, self.config, self.k
        if not tile:
            return self.t.g_s(y_hat.astype(xp.float32), self.params, c, kernels=k)
        rows = lambda a, b: y_hat[:, a:b].astype(xp.float32)  # noqa: E731
        H4 = y_hat.shape[1]
        return collect(self.t.g_s_rows(self.params, c, k), _told(rows, say, "synthesis", H4), H4,
                       max(1, tile // c.downsampling))

    def _hyper(self, z_hat, portable):
        p = self.entropy_params(portable)
        return self.t.h_mean_s(z_hat, p, self.config, self.k), self.t.h_scale_s(z_hat, p, self.config, self.k)

    def _check_codable(self, y):
        H4, W4 = y.shape[1:3]
        if H4 % 4 or W4 % 4:
            m = self.config.pad_multiple
            raise BadInput(f"compress() needs image sizes whose latent ({H4}x{W4}) is a multiple of 4: "
                           f"pad the image to a multiple of {m} first (minstf.image.eval_padding)")

    # --- the three entry points ---------------------------------------------------
    def forward(self, x, taps=None):
        """Reconstruction and likelihoods without entropy coding (eval mode).

        x: (B, 3, H, W) float32 in [0, 1]. Returns {"x_hat": (B, 3, 16*H4, 16*W4) unclamped,
        "likelihoods": {"y": (B, M, H4, W4), "z": (B, N_z, zh, zw)}} as arrays of the backend.
        """
        xp, c, p, k = self.xp, self.config, self.params, self.k
        y = self.t.g_a(self._input(x), p, c, taps, k)  # (B, H4, W4, M)
        z = self.t.h_a(y, p, c, k)  # (B, zh, zw, N_z)
        lik_z = eb_likelihood(z, self.eb)
        z_hat = xp.rint(z - self.medians) + self.medians
        latent_means, latent_scales = self._hyper(z_hat, False)
        lik_y = []

        def quantize(s, mu, scale):
            y_s = slice_of(y, s, c)
            lik_y.append(gc_likelihood(y_s, scale, mu))
            return xp.rint(y_s - mu)

        y_hat = run_slices(latent_means, latent_scales, p, c, quantize, taps, k)
        x_hat = self.t.g_s(y_hat, p, c, taps, k)
        if taps is not None:
            taps.update(y=y, z=z, z_hat=z_hat, latent_means=latent_means, latent_scales=latent_scales, y_hat=y_hat)
        return {"x_hat": nchw(x_hat), "likelihoods": {"y": nchw(xp.concatenate(lik_y, axis=-1)), "z": nchw(lik_z)}}

    def compress(self, x, portable=False, taps=None, progress=None, tile=None):
        """Encode one image (1, 3, H, W) whose latent size is a multiple of 4 -> Compressed.

        taps (optional dict) records what forward() records, the encoder's side of it.
        progress (optional) is called with the name of each step as it begins.

        The steps, mirrored one for one by decompress():
        """
        xp, c, k = self.xp, self.config, self.k
        say = progress or (lambda name: None)
        if len(x.shape) != 4 or x.shape[0] != 1:
            raise BadInput(f"compress() takes one image (1, {c.in_chans}, H, W), got shape {tuple(x.shape)}")
        say("analysis")
        y = self._analysis(x, taps, tile, say)  # 1. analysis: (1, H4, W4, M)
        self._check_codable(y)
        say("hyperprior")
        z = self.t.h_a(y, self.params, c, k)  # 2. hyper analysis: (1, zh, zw, N_z)
        z_symbols = quantize_symbols(z, self.medians)  # 3. z symbols = round(z - medians), int32
        z_flat = to_host(channel_first_flat(z_symbols))
        z_encoder = SymbolEncoder()  # 4. z string: factorized prior, CDF row = channel
        z_encoder.add(z_flat, self._z_indexes(z.shape), self.eb_table)
        dtype = xp.float64 if portable else xp.float32
        z_hat = z_symbols.astype(dtype) + self.medians.astype(dtype)  # 5. z_hat, the decoder's too
        latent_means, latent_scales = self._hyper(z_hat, portable)  # 6. hyper synthesis
        y_encoder, crcs = SymbolEncoder(), []

        def quantize(s, mu, scale):  # 7. per slice: symbols from y, coded with CDF row = index(scale)
            symbols = quantize_symbols(slice_of(y, s, c).astype(dtype), mu)  # (1, H4, W4, Cs) int32
            flat = to_host(channel_first_flat(symbols))
            y_encoder.add(flat, to_host(channel_first_flat(build_indexes(scale))), self.gc_table)
            crcs.append(symbols_crc(flat))  # 8. a CRC per slice, for the decoder to check
            return symbols

        y_hat = run_slices(latent_means, latent_scales, self.entropy_params(portable), c, quantize, taps, k,
                           on_slice=lambda s: say(f"slice {s + 1}/{c.num_slices}"))
        if taps is not None:
            taps.update(y=y, z=z, z_hat=z_hat, latent_means=latent_means, latent_scales=latent_scales, y_hat=y_hat)
        return Compressed(z_encoder.finish(), y_encoder.finish(), tuple(y.shape[1:3]),
                          symbols_crc(z_flat), tuple(crcs), portable)

    def decompress(self, compressed: Compressed, progress=None, tile=None):
        """Decode -> x_hat (1, 3, 16*H4, 16*W4) clamped to [0, 1], an array of the backend.

        progress (optional) is called with the name of each step as it begins.

        The steps of compress(), backwards:
        """
        xp, c, k = self.xp, self.config, self.k
        say = progress or (lambda name: None)
        say("hyperprior")
        H4, W4 = compressed.y_shape
        z_shape = (1, H4 // 4, W4 // 4, c.N_z)  # 2. the hyper analysis' output size
        z_flat = SymbolDecoder(compressed.z_string).read(self._z_indexes(z_shape), self.eb_table)  # 4. z string
        if symbols_crc(z_flat) != compressed.z_crc:
            raise CorruptFile("hyper-latent symbols fail their CRC: the file is damaged")
        z_symbols = from_channel_first_flat(to_device(z_flat, xp), z_shape)  # 3. z symbols (1, zh, zw, N_z)
        dtype = xp.float64 if compressed.portable else xp.float32
        z_hat = z_symbols.astype(dtype) + self.medians.astype(dtype)  # 5. z_hat, the encoder's too
        latent_means, latent_scales = self._hyper(z_hat, compressed.portable)  # 6. hyper synthesis
        y_decoder = SymbolDecoder(compressed.y_string)

        def dequantize(s, mu, scale):  # 7. per slice: symbols decoded with CDF row = index(scale)
            index = to_host(channel_first_flat(build_indexes(scale)))
            try:
                flat = y_decoder.read(index, self.gc_table)
            except CorruptFile as e:  # the container's payload CRC passed: the decoder went astray
                raise DecoderMismatch(f"y slice {s}: decoding went astray ({e}): this machine or backend "
                                      "computed other entropy parameters than the encoder's, or the strings "
                                      "are damaged (files encoded with --portable avoid the first)") from None
            check_symbols(flat, compressed.slice_crcs[s], f"y slice {s}")  # 8. the slice's CRC, else DecoderMismatch
            return from_channel_first_flat(to_device(flat, xp), mu.shape)  # (1, H4, W4, Cs)

        y_hat = run_slices(latent_means, latent_scales, self.entropy_params(compressed.portable), c, dequantize,
                           kernels=k, on_slice=lambda s: say(f"slice {s + 1}/{c.num_slices}"))
        if not y_decoder.at_end():
            raise CorruptFile("the y payload has data left over after the last slice: the file is damaged")
        del latent_means, latent_scales  # before the synthesis, the largest stage
        say("synthesis")
        x_hat = self._synthesis(y_hat, tile, say)  # 1. synthesis: (1, 16*H4, 16*W4, 3)
        return nchw(xp.clip(x_hat, 0, 1, out=x_hat))

    def _z_indexes(self, z_shape):
        B, h, w, C = z_shape
        return np.broadcast_to(np.arange(C, dtype=np.int32)[None, :, None, None], (B, C, h, w)).reshape(-1)
