"""WACNN (`cnn`) in PyTorch, written from docs/wacnn.md — the mirror of minstf.wacnn.

An independent, compact re-implementation of upstream's `WACNN`, the oracle of the
WACNN cross-checks. Every width comes from a `WACNNConfig`; `state_dict()` has exactly
the keys, shapes, dtypes and order of `minstf.keys.wacnn_state_dict_spec(config)`.
Everything after the transforms is STF's and is imported from `stf_torch`: the
hyperprior's h_a, and (through `MirrorModel`) the slice networks, the slice loop, both entropy
models, forward, taps and load_params.

    g_a:  conv5/2  GDN  conv5/2  GDN  [attn ws0]  conv5/2  GDN  conv5/2  [attn ws1]  = y
    g_s:  [attn ws1]  deconv5/2  IGDN  deconv5/2  IGDN  [attn ws0]  deconv5/2  IGDN  deconv5/2  = x_hat

    [attn] = Win_noShift_Attention: x + conv_a(x) * sigmoid(conv_b(x))    (it does shift, by ws / 2)
             conv_a = 3 residual units; conv_b = window attention, 3 residual units, 1x1 conv

Maps are NCHW throughout, as upstream's.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import WACNNConfig
from ..keys import wacnn_state_dict_spec
from ..reference.wacnn import BETA_MIN, PEDESTAL
from .stf_torch import (LowerBound, MirrorModel, WindowAttention,
                        conv3x3, hyper_analysis, shift_mask, subpel_conv3x3,
                        window_partition, window_reverse)


# --------------------------------------------------------------------------- GDN (docs/wacnn.md §3)

class NonNegative(nn.Module):
    """Upstream's reparametrisation: effective value max(q, sqrt(minimum + pedestal))^2 - pedestal."""

    def __init__(self, minimum):
        super().__init__()
        self.register_buffer("pedestal", torch.tensor([PEDESTAL], dtype=torch.float32))
        self.lower_bound = LowerBound((minimum + PEDESTAL) ** 0.5)  # a double rounded to float32

    def forward(self, q):
        q = self.lower_bound(q)
        return q * q - self.pedestal


class GDN(nn.Module):
    """norm_i = beta_i + sum_j gamma_ij x_j^2 (a 1x1 conv of x^2); GDN x / sqrt(norm), IGDN x * sqrt(norm)."""

    def __init__(self, C, inverse=False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.full((C,), (1 + PEDESTAL) ** 0.5))
        self.gamma = nn.Parameter(torch.sqrt(0.1 * torch.eye(C) + PEDESTAL))
        self.beta_reparam = NonNegative(BETA_MIN)
        self.gamma_reparam = NonNegative(0.0)

    def forward(self, x):
        C = x.shape[1]
        gamma = self.gamma_reparam(self.gamma).view(C, C, 1, 1)
        norm = F.conv2d(x * x, gamma, self.beta_reparam(self.beta))  # (B, C, H, W)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


# --------------------------------------------------------------------------- the attention block (§4)

def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, 1)


class ResidualUnit(nn.Module):
    """GELU(x + conv1x1(GELU(conv3x3(GELU(conv1x1(x)))))), widths C -> C/2 -> C/2 -> C."""

    def __init__(self, C):
        super().__init__()
        self.conv = nn.Sequential(conv1x1(C, C // 2), nn.GELU(), conv3x3(C // 2, C // 2), nn.GELU(),
                                  conv1x1(C // 2, C))

    def forward(self, x):
        return F.gelu(self.conv(x) + x)


class WinBasedAttention(nn.Module):
    """Shifted-window attention on a map plus its input: no LayerNorm, no MLP, no padding."""

    def __init__(self, C, num_heads, ws):
        super().__init__()
        self.ws, self.shift = ws, ws // 2
        self.attn = WindowAttention(C, num_heads, ws)

    def forward(self, x):
        B, C, H, W = x.shape
        ws, s = self.ws, self.shift
        if H % ws or W % ws:
            raise ValueError(f"window attention needs a map whose sides are multiples of {ws}, got {H}x{W}")
        h = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if s:
            h = torch.roll(h, (-s, -s), (1, 2))
        mask = shift_mask(H, W, ws, s).to(x.device) if s else None  # (nW, N, N)
        h = window_reverse(self.attn(window_partition(h, ws), mask), ws, H, W)  # (B, H, W, C)
        if s:
            h = torch.roll(h, (s, s), (1, 2))
        return x + h.permute(0, 3, 1, 2)


class AttentionBlock(nn.Module):
    """Win_noShift_Attention: x + conv_a(x) * sigmoid(conv_b(x))."""

    def __init__(self, C, num_heads, ws):
        super().__init__()
        self.conv_a = nn.Sequential(*(ResidualUnit(C) for _ in range(3)))
        self.conv_b = nn.Sequential(WinBasedAttention(C, num_heads, ws), *(ResidualUnit(C) for _ in range(3)),
                                    conv1x1(C, C))

    def forward(self, x, taps=None, name=""):
        a = self.conv_a(x)
        attn = self.conv_b[0](x)
        gate = self.conv_b[4](self.conv_b[3](self.conv_b[2](self.conv_b[1](attn))))  # the gate logits
        if taps is not None:
            taps.update({f"{name}_conv_a": a, f"{name}_attn": attn, f"{name}_gate": gate})
        return x + a * torch.sigmoid(gate)


# --------------------------------------------------------------------------- g_a, g_s, h_s (§1)

def conv5x5_down(cin, cout):
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)  # n -> ceil(n / 2)


def deconv5x5_up(cin, cout):
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)  # weight (cin, cout, 5, 5); n -> 2n


def analysis(c):
    N, M, h, (ws0, ws1) = c.N, c.M, c.num_heads, c.window_sizes
    return nn.Sequential(conv5x5_down(c.in_chans, N), GDN(N), conv5x5_down(N, N), GDN(N), AttentionBlock(N, h, ws0),
                         conv5x5_down(N, N), GDN(N), conv5x5_down(N, M), AttentionBlock(M, h, ws1))


def synthesis(c):
    N, M, h, (ws0, ws1) = c.N, c.M, c.num_heads, c.window_sizes
    return nn.Sequential(AttentionBlock(M, h, ws1), deconv5x5_up(M, N), GDN(N, True), deconv5x5_up(N, N),
                         GDN(N, True), AttentionBlock(N, h, ws0), deconv5x5_up(N, N), GDN(N, True),
                         deconv5x5_up(N, c.in_chans))


def hyper_synthesis(c):
    """conv, x2 sub-pixel conv, conv, x2 sub-pixel conv, conv; widths N, N+s, N+2s, N+3s -> M."""
    w = c.hyper_synthesis_widths
    return nn.Sequential(conv3x3(c.N, w[0]), nn.GELU(), subpel_conv3x3(w[0], w[1], 2), nn.GELU(),
                         conv3x3(w[1], w[2]), nn.GELU(), subpel_conv3x3(w[2], w[3], 2), nn.GELU(),
                         conv3x3(w[3], w[4]))


def run_layers(layers, name, x, taps):
    """Run g_a / g_s layer by layer; taps `{name}{i}` after layer i, and the attention internals."""
    for i, layer in enumerate(layers):
        x = layer(x, taps, f"{name}{i}") if isinstance(layer, AttentionBlock) else layer(x)
        if taps is not None:
            taps[f"{name}{i}"] = x
    return x


# --------------------------------------------------------------------------- the model

class WACNNTorch(MirrorModel):
    def __init__(self, config: WACNNConfig = WACNNConfig()):
        super().__init__()
        c = self.config = config
        self.g_a = analysis(c)
        self.g_s = synthesis(c)
        self.h_a = hyper_analysis(c)  # STF's: five 3x3 convs, strides 1, 1, 2, 1, 2, widths from the config
        self.h_mean_s = hyper_synthesis(c)
        self.h_scale_s = hyper_synthesis(c)
        self._add_entropy_path(c)  # slice networks and entropy models, as STF's

    def analyse(self, x, taps=None):
        return run_layers(self.g_a, "g_a", x, taps)

    def synthesise(self, y_hat, taps=None):
        return run_layers(self.g_s, "g_s", y_hat, taps)

    def spec(self):
        return wacnn_state_dict_spec(self.config)
