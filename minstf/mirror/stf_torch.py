"""STF in PyTorch, written from docs/architecture.md and docs/entropy.md — the mirror of minstf.

An independent, compact re-implementation of upstream's `SymmetricalTransFormer`
used as the oracle in cross-check tests, as the training engine for minstf's
default weights and as the speed yardstick. Every width comes from an
`STFConfig`; `state_dict()` has exactly the keys, shapes, dtypes and order of
`minstf.keys.state_dict_spec(config)`.

Data flow (forward; docs/architecture.md §6.1):

    x ─ g_a ─> y ─ h_a ─> z ─ Q ─> z_hat ─ h_mean_s ─> latent_means ─┐
                 │            │          └ h_scale_s ─> latent_scales ┤
                 │            └ EntropyBottleneck: likelihoods of z   │
                 └─ slice loop (per slice: support -> mu, scale -> Q -> LRP) ─> y_hat ─ g_s ─> x_hat
                       └ GaussianConditional: likelihoods of y

Training mode (upstream's behaviour): both entropy models evaluate their
likelihoods on `value + U(-0.5, 0.5)`; z_hat and y_hat use the straight-through
round; DropPath is active. Eval mode rounds everywhere.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import STFConfig
from ..keys import TABLE_BUFFERS, slice_in_channels, slice_network_widths, state_dict_spec

# docs/entropy.md §4.6: the exact float32 scale table (bit patterns), lower scale bound and likelihood bound.
SCALE_TABLE_BITS = (
    0x3de147ae, 0x3dfec793, 0x3e101230, 0x3e22efc7, 0x3e3845c8, 0x3e506704, 0x3e6bb124, 0x3e85470a,
    0x3e96bacd, 0x3eaa779a, 0x3ec0ca0e, 0x3eda08ca, 0x3ef695cc, 0x3f0b6ff2, 0x3f1db234, 0x3f325889,
    0x3f49b318, 0x3f641c86, 0x3f80fdab, 0x3f91e1bd, 0x3fa4fc07, 0x3fba96af, 0x3fd3058f, 0x3feea77c,
    0x4006f3dc, 0x40189fc7, 0x402c9c16, 0x4043365c, 0x405cc651, 0x4079af2f, 0x408d3097, 0x409fad98,
    0x40b4965b, 0x40cc3c0e, 0x40e6fa78, 0x41029cb1, 0x4113b71b, 0x41270edd, 0x413cef07, 0x4155ac83,
    0x4171a758, 0x4188a610, 0x419a8ad8, 0x41aec774, 0x41c5aa71, 0x41df8ca9, 0x41fcd28b, 0x420ef6dd,
    0x4221af59, 0x4236db65, 0x424ecd30, 0x4269e1a0, 0x428440f0, 0x42959263, 0x42a9285d, 0x42bf4eec,
    0x42d85c06, 0x42f4b0de, 0x430a5dbd, 0x431c7c18, 0x4330f9ce, 0x43482672, 0x43625beb, 0x43800000,
)
SCALE_TABLE = np.array(SCALE_TABLE_BITS, dtype=np.uint32).view(np.float32)  # (64,)
SCALE_BOUND = np.float32(0.11)  # == SCALE_TABLE[0] bit for bit
LIKELIHOOD_BOUND = 1e-9
TAIL_MASS = 1e-9


# --------------------------------------------------------------------------- primitives

def ste_round(x):
    """Straight-through round: value round(x) (half to even, exact), gradient 1."""
    return torch.round(x) - x.detach() + x


class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound); the gradient passes where x >= bound or where it pushes x up (CompressAI)."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad):
        x, bound = ctx.saved_tensors
        return grad * ((x >= bound) | (grad < 0)).to(grad.dtype), None


class LowerBound(nn.Module):
    def __init__(self, bound):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)], dtype=torch.float32))

    def forward(self, x):
        return _LowerBoundFn.apply(x, self.bound)


class DropPath(nn.Module):
    """Stochastic depth per sample (training only; identity at inference)."""

    def __init__(self, p):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


def tokens_to_nchw(x, H, W):
    """(B, H*W, C) -> (B, C, H, W)."""
    return x.view(x.shape[0], H, W, -1).permute(0, 3, 1, 2)


def nchw_to_tokens(x):
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------- windows (docs/architecture.md §2.2-2.5)

def window_partition(x, ws):
    """(B, Hp, Wp, C) -> (B*nW, ws*ws, C); windows row-major, tokens row-major inside."""
    B, Hp, Wp, C = x.shape
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows, ws, Hp, Wp):
    """(B*nW, ws*ws, C) -> (B, Hp, Wp, C), the inverse of window_partition."""
    C = windows.shape[-1]
    x = windows.view(-1, Hp // ws, Wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, Hp, Wp, C)


def relative_position_index(ws):
    """(N, N) int64: (r_n - r_m + ws-1) * (2ws-1) + (c_n - c_m + ws-1)."""
    r, c = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    r, c = r.flatten(), c.flatten()  # (N,)
    return (r[:, None] - r[None, :] + ws - 1) * (2 * ws - 1) + (c[:, None] - c[None, :] + ws - 1)


def shift_mask(Hp, Wp, ws, shift):
    """(nW, N, N) float32: 0 within a region, -100 across regions of the rolled frame."""
    label = torch.zeros(1, Hp, Wp, 1)
    bands = lambda n: (slice(0, n - ws), slice(n - ws, n - shift), slice(n - shift, n))  # noqa: E731
    for i, hs in enumerate(bands(Hp)):
        for j, wsl in enumerate(bands(Wp)):
            label[:, hs, wsl, :] = 3 * i + j
    label = window_partition(label, ws).squeeze(-1)  # (nW, N)
    return (label[:, :, None] != label[:, None, :]).float() * -100.0


class WindowAttention(nn.Module):
    def __init__(self, dim, num_heads, ws):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        """x (B_, N, C); mask (nW, N, N) or None."""
        B_, N, C = x.shape
        nH = self.num_heads
        qkv = self.qkv(x).view(B_, N, 3, nH, C // nH).permute(2, 0, 3, 1, 4)  # (3, B_, nH, N, hd)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, nH).permute(2, 0, 1)  # (nH, N, N)
        attn = q @ k.transpose(-2, -1) + bias  # (B_, nH, N, N)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(B_ // nW, nW, nH, N, N) + mask[:, None]).view(B_, nH, N, N)
        out = attn.softmax(dim=-1) @ v  # (B_, nH, N, hd)
        return self.proj(out.transpose(1, 2).reshape(B_, N, C))


class SwinBlock(nn.Module):
    def __init__(self, dim, num_heads, ws, shift, mlp_ratio, drop_path):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, ws)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()  # keys mlp.fc1 / mlp.fc2
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())  # exact erf form
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x, H, W, mask):
        B, L, C = x.shape
        ws, s = self.ws, self.shift
        h = self.norm1(x).view(B, H, W, C)
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        if Hp > H or Wp > W:
            h = F.pad(h, (0, 0, 0, Wp - W, 0, Hp - H))  # zero padding AFTER LayerNorm1
        if s:
            h = torch.roll(h, (-s, -s), (1, 2))
        h = self.attn(window_partition(h, ws), mask if s else None)  # (B*nW, N, C)
        h = window_reverse(h, ws, Hp, Wp)
        if s:
            h = torch.roll(h, (s, s), (1, 2))
        x = x + self.drop_path(h[:, :H, :W].reshape(B, L, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """(H, W, C) -> (ceil(H/2), ceil(W/2), 2C); concat order (0,0), (1,0), (0,1), (1,1)."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)  # registered first: key order
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x, H, W):
        B, L, C = x.shape
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        H, W = x.shape[1], x.shape[2]
        return self.reduction(self.norm(x.view(B, H * W, 4 * C))), H, W


class PatchSplit(nn.Module):
    """(H, W, C) -> (2H, 2W, C/2): LayerNorm, Linear C -> 2C, then PixelShuffle(2)."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        x = F.pixel_shuffle(tokens_to_nchw(self.reduction(self.norm(x)), H, W), 2)  # (B, C/2, 2H, 2W)
        return nchw_to_tokens(x), 2 * H, 2 * W


class BasicLayer(nn.Module):
    """One stage: `depth` Swin blocks (odd ones shifted), then an optional resampler."""

    def __init__(self, dim, depth, num_heads, ws, mlp_ratio, drop_paths, resample=None):
        super().__init__()
        self.ws = ws
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, ws, 0 if b % 2 == 0 else ws // 2, mlp_ratio, drop_paths[b])
            for b in range(depth))
        self.downsample = resample(dim) if resample else None  # upstream's name, also for PatchSplit
        self._masks = {}

    def mask(self, H, W, device):
        ws = self.ws
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        key = (Hp, Wp, str(device))
        if key not in self._masks:
            self._masks[key] = shift_mask(Hp, Wp, ws, ws // 2).to(device)
        return self._masks[key]

    def forward(self, x, H, W, taps=None, name=""):
        mask = self.mask(H, W, x.device)
        for b, block in enumerate(self.blocks):
            x = block(x, H, W, mask)
            if taps is not None:
                taps[f"{name}_blk{b}"] = x
        if self.downsample is not None:
            x, H, W = self.downsample(x, H, W)
        return x, H, W


# --------------------------------------------------------------------------- convolution stacks

def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def subpel_conv3x3(cin, cout, r):
    return nn.Sequential(nn.Conv2d(cin, cout * r * r, 3, padding=1), nn.PixelShuffle(r))


def conv_stack(widths):
    """conv3x3 GELU conv3x3 ... conv3x3 (keys 0, 2, 4, ...)."""
    layers = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers += [conv3x3(cin, cout), nn.GELU()]
    return nn.Sequential(*layers[:-1])


def hyper_analysis(c):
    w = (c.M,) + c.hyper_widths  # 8e 8e 7e 6e 5e 4e
    strides = (1, 1, 2, 1, 2)
    layers = []
    for j in range(5):
        layers += [conv3x3(w[j], w[j + 1], strides[j]), nn.GELU()]
    return nn.Sequential(*layers[:-1])


def hyper_synthesis(c):
    w = c.hyper_widths[::-1]  # 4e 5e 6e 7e 8e
    return nn.Sequential(conv3x3(w[0], w[1]), nn.GELU(), subpel_conv3x3(w[1], w[2], 2), nn.GELU(),
                         conv3x3(w[2], w[3]), nn.GELU(), subpel_conv3x3(w[3], w[4], 2), nn.GELU(),
                         conv3x3(w[4], c.M))


# --------------------------------------------------------------------------- entropy models

class EntropyBottleneck(nn.Module):
    """Factorized prior for z (docs/entropy.md §3), STF-fork parameter names and sign trick."""

    def __init__(self, channels, filters=(3, 3, 3, 3), init_scale=10.0, tail_mass=TAIL_MASS):
        super().__init__()
        self.likelihood_lower_bound = LowerBound(LIKELIHOOD_BOUND)
        Fs = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.n_layers = len(filters) + 1
        for i in range(self.n_layers):
            init = math.log(math.expm1(1 / scale / Fs[i + 1]))
            self.register_parameter(f"_matrix{i}", nn.Parameter(torch.full((channels, Fs[i + 1], Fs[i]), init)))
            self.register_parameter(f"_bias{i}", nn.Parameter(torch.rand(channels, Fs[i + 1], 1) - 0.5))
            if i < len(filters):
                self.register_parameter(f"_factor{i}", nn.Parameter(torch.zeros(channels, Fs[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        for name in ("_offset", "_quantized_cdf", "_cdf_length"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))
        t = math.log(2 / tail_mass - 1)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def medians(self):
        return self.quantiles[:, :, 1:2]  # (C, 1, 1)

    def logits_cumulative(self, v, stop_gradient=False):
        """v (C, 1, n) -> logits of the CDF at v, (C, 1, n)."""
        for i in range(self.n_layers):
            get = (lambda p: p.detach()) if stop_gradient else (lambda p: p)
            v = torch.matmul(F.softplus(get(getattr(self, f"_matrix{i}"))), v) + get(getattr(self, f"_bias{i}"))
            if i < self.n_layers - 1:
                v = v + torch.tanh(get(getattr(self, f"_factor{i}"))) * torch.tanh(v)
        return v

    def likelihood(self, v):
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate on the small side of the sigmoid
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def forward(self, z):
        """z (B, C, h, w) -> likelihoods (B, C, h, w) of z+noise (training) or of the rounded z."""
        B, C, h, w = z.shape
        v = z.transpose(0, 1).reshape(C, 1, -1)  # (C, 1, B*h*w)
        if self.training:
            v = v + torch.empty_like(v).uniform_(-0.5, 0.5)
        else:
            v = torch.round(v - self.medians()) + self.medians()
        lik = self.likelihood_lower_bound(self.likelihood(v))
        return lik.reshape(C, B, h, w).transpose(0, 1)

    def aux_loss(self):
        """Pull the quantiles to the CDF logits (-t, 0, t) (docs/entropy.md §3.7)."""
        logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()


class GaussianConditional(nn.Module):
    """Conditional Gaussian for y (docs/entropy.md §4); the CDF tables are not built here."""

    def __init__(self):
        super().__init__()
        self.likelihood_lower_bound = LowerBound(LIKELIHOOD_BOUND)
        for name in ("_offset", "_quantized_cdf", "_cdf_length"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))
        self.register_buffer("scale_table", torch.zeros(0))
        self.register_buffer("scale_bound", torch.tensor([float(SCALE_BOUND)]))
        self.lower_bound_scale = LowerBound(SCALE_BOUND)

    def forward(self, y, scales, means):
        """Likelihoods of y+noise (training) or of round(y-mu)+mu, under N(mu, max(scale, 0.11))."""
        if self.training:
            v = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            v = torch.round(y - means) + means
        v = torch.abs(v - means)
        s = self.lower_bound_scale(scales)
        c = -(2 ** -0.5)
        lik = 0.5 * torch.erfc(c * ((0.5 - v) / s)) - 0.5 * torch.erfc(c * ((-0.5 - v) / s))
        return self.likelihood_lower_bound(lik)


def build_indexes(scales):
    """Scale bucket: smallest k with SCALE_TABLE[k] >= max(scale, 0.11), 63 if none (docs/entropy.md §4.4)."""
    table = torch.as_tensor(SCALE_TABLE[:-1], device=scales.device)
    s = torch.clamp_min(scales, float(SCALE_BOUND))
    return torch.searchsorted(table, s.contiguous(), right=False).to(torch.int32)


# --------------------------------------------------------------------------- the model

class MirrorModel(nn.Module):
    """What the torch mirrors of STF and WACNN share (docs/architecture.md §5–6): the slice
    networks and entropy models, the slice loop, forward, taps and load_params. A subclass
    gives `analyse(x, taps)`, `synthesise(y_hat, taps)` and `spec()` (its state_dict_spec)."""

    def _add_entropy_path(self, c):
        """The slice networks (cc_mean / cc_scale / lrp_transforms), then both entropy models."""
        for kind in ("mean", "scale", "lrp"):
            name = "lrp_transforms" if kind == "lrp" else f"cc_{kind}_transforms"
            self.add_module(name, nn.ModuleList(
                conv_stack(slice_network_widths(c, slice_in_channels(c, s, kind))) for s in range(c.num_slices)))
        self.entropy_bottleneck = EntropyBottleneck(c.N_z)
        self.gaussian_conditional = GaussianConditional()

    def _more_taps(self, t):
        """Extra golden names a model adds to taps()."""

    def slice_loop(self, y, latent_means, latent_scales, taps=None):
        """docs/architecture.md §5: returns y_hat and the y likelihoods, both (B, M, H4, W4)."""
        c = self.config
        H4, W4 = y.shape[2:]
        y_hat_slices, liks, rec = [], [], {k: [] for k in ("mu", "scale", "lrp_raw", "y_hat_pre_lrp")}
        for s, y_s in enumerate(y.chunk(c.num_slices, 1)):
            support = y_hat_slices[:c.max_support_slices]  # the FIRST decoded slices
            mean_support = torch.cat([latent_means] + support, 1)
            mu = self.cc_mean_transforms[s](mean_support)[:, :, :H4, :W4]
            scale = self.cc_scale_transforms[s](torch.cat([latent_scales] + support, 1))[:, :, :H4, :W4]
            liks.append(self.gaussian_conditional(y_s, scale, mu))
            y_hat_s = ste_round(y_s - mu) + mu
            lrp = self.lrp_transforms[s](torch.cat([mean_support, y_hat_s], 1))
            if taps is not None:
                for k, v in zip(rec, (mu, scale, lrp, y_hat_s)):
                    rec[k].append(v)
            y_hat_slices.append(y_hat_s + 0.5 * torch.tanh(lrp))
        if taps is not None:
            taps.update({k: torch.cat(v, 1) for k, v in rec.items()})
        return torch.cat(y_hat_slices, 1), torch.cat(liks, 1)

    def _run(self, x, taps=None):
        y = self.analyse(x, taps)
        z = self.h_a(y)
        z_lik = self.entropy_bottleneck(z)
        med = self.entropy_bottleneck.medians().view(1, -1, 1, 1)
        z_hat = ste_round(z - med) + med
        latent_means, latent_scales = self.h_mean_s(z_hat), self.h_scale_s(z_hat)
        y_hat, y_lik = self.slice_loop(y, latent_means, latent_scales, taps)
        x_hat = self.synthesise(y_hat, taps)
        if taps is not None:
            taps.update(y=y, z=z, z_hat=z_hat, latent_means=latent_means, latent_scales=latent_scales,
                        y_hat=y_hat, x_hat=x_hat, lik_y=y_lik, lik_z=z_lik)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}

    def forward(self, x):
        return self._run(x)

    @torch.no_grad()
    def taps(self, x):
        """Eval-mode forward returning every intermediate under the golden npz names (numpy)."""
        was_training = self.training
        self.eval()
        try:
            t = {}
            self._run(torch.as_tensor(x), t)
        finally:
            self.train(was_training)
        t["symbols"] = torch.round(t["y"] - t["mu"]).to(torch.int32)
        t["index"] = build_indexes(t["scale"])
        t["x_hat_forward"] = t["x_hat"]
        self._more_taps(t)
        return {k: v.detach().cpu().numpy() for k, v in t.items()}

    def load_params(self, params):
        """Load {key: float32 array} keyed like state_dict_spec params (buffers optional).

        Every parameter must be present with its exact shape; buffers, if given, must
        match the constructed ones, except the CDF table buffers, which are ignored
        (they are rebuilt by whoever codes with them).
        """
        spec = {s.key: s for s in self.spec()}
        unknown = set(params) - set(spec)
        missing = {k for k, s in spec.items() if s.kind == "param"} - set(params)
        assert not unknown and not missing, f"unknown keys {sorted(unknown)[:5]}, missing {sorted(missing)[:5]}"
        state = self.state_dict()
        with torch.no_grad():
            for key, value in params.items():
                if key in TABLE_BUFFERS:
                    continue
                value = torch.as_tensor(np.asarray(value))
                assert tuple(value.shape) == spec[key].shape, f"{key}: {tuple(value.shape)} != {spec[key].shape}"
                if spec[key].kind == "buffer":
                    assert torch.equal(value.to(state[key].dtype), state[key]), f"buffer {key} differs"
                else:
                    state[key].copy_(value)
        return self


class STFTorch(MirrorModel):
    def __init__(self, config: STFConfig = STFConfig(), drop_path_rate=0.2):
        super().__init__()
        c = self.config = config
        n, ws, e = len(c.depths), c.window_size, c.embed_dim
        # patch_embed.proj / patch_embed.norm
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c.in_chans, e, c.patch_size, stride=c.patch_size)
        self.patch_embed.norm = nn.LayerNorm(e)
        # stochastic depth: linear 0..rate over the blocks of each path
        dpr = torch.linspace(0, drop_path_rate, sum(c.depths)).tolist()
        self.layers = nn.ModuleList(
            BasicLayer(c.stage_dims[i], c.depths[i], c.num_heads[i], ws, c.mlp_ratio,
                       dpr[sum(c.depths[:i]):sum(c.depths[:i + 1])], PatchMerging if i < n - 1 else None)
            for i in range(n))
        d, h, dims = c.depths[::-1], c.num_heads[::-1], c.stage_dims[::-1]
        self.syn_layers = nn.ModuleList(
            BasicLayer(dims[i], d[i], h[i], ws, c.mlp_ratio, dpr[sum(d[:i]):sum(d[:i + 1])],
                       PatchSplit if i < n - 1 else None)
            for i in range(n))
        p = c.patch_size
        self.end_conv = nn.Sequential(nn.Conv2d(e, e * p * p, 5, padding=2), nn.PixelShuffle(p),
                                      nn.Conv2d(e, c.in_chans, 3, padding=1))
        self.h_a = hyper_analysis(c)
        self.h_mean_s = hyper_synthesis(c)
        self.h_scale_s = hyper_synthesis(c)
        self._add_entropy_path(c)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, WindowAttention):
            nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    # ----- transforms
    def g_a(self, x, taps=None):
        """x (B, 3, H, W) -> y (B, M, H/16, W/16)."""
        p = self.config.patch_size
        x = F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p))
        x = self.patch_embed.proj(x)  # (B, e, H1, W1)
        H, W = x.shape[2:]
        x = self.patch_embed.norm(nchw_to_tokens(x))  # (B, H1*W1, e)
        if taps is not None:
            taps["patch_embed"] = tokens_to_nchw(x, H, W)
        for i, layer in enumerate(self.layers):
            x, H, W = layer(x, H, W, taps, f"enc{i}")
            if taps is not None:
                taps[f"enc{i}_out"] = x
        return tokens_to_nchw(x, H, W).contiguous()

    def g_s(self, y_hat, taps=None):
        """y_hat (B, M, h, w) -> x_hat (B, 3, 16h, 16w), unclamped."""
        H, W = y_hat.shape[2:]
        x = nchw_to_tokens(y_hat)
        for i, layer in enumerate(self.syn_layers):
            x, H, W = layer(x, H, W, taps, f"dec{i}")
            if taps is not None:
                taps[f"dec{i}_out"] = x
        x = tokens_to_nchw(x, H, W)  # a channels-last view: faster CPU convolutions for training,
        return self.end_conv(x if self.training else x.contiguous())  # bit-exact upstream algorithm in eval

    analyse, synthesise = g_a, g_s  # what MirrorModel._run calls

    def spec(self):
        return state_dict_spec(self.config)

    def _more_taps(self, t):
        t["enc3_out"] = t[f"enc{len(self.config.depths) - 1}_out"]

    def aux_loss(self):
        return self.entropy_bottleneck.aux_loss()

    # ----- parameters in minstf's format
    def main_parameters(self):
        return [p for n, p in self.named_parameters() if not n.endswith(".quantiles")]

    def aux_parameters(self):
        return [p for n, p in self.named_parameters() if n.endswith(".quantiles")]


    def export_params(self):
        """{key: float32 numpy array} for every parameter, in state_dict_spec order."""
        state = self.state_dict()
        return {s.key: state[s.key].detach().cpu().numpy().astype(np.float32, copy=True)
                for s in state_dict_spec(self.config) if s.kind == "param"}
