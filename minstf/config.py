"""The STF configuration: every size of the network in one frozen dataclass.

The defaults are upstream's `SymmetricalTransFormer()` (docs/architecture.md §1). Smaller
configurations run through exactly the same code; only the widths change.

Channel widths that upstream hard-codes for embed_dim = 48 are derived here so
that they scale with `embed_dim` (e = embed_dim):

    y (latent M)        8e   = 384
    z (hyper-latent)    4e   = 192
    h_a                 8e -> 8e -> 7e -> 6e (stride 2) -> 5e -> 4e (stride 2)
    h_mean_s/h_scale_s  4e -> 5e -> 6e (x2 up) -> 7e -> 8e (x2 up) -> 8e
    slice networks      M + Cs*k -> slice_hidden[0..3] -> Cs   (Cs = M / S, S = num_slices)

Ranges
------
A configuration also arrives from untrusted files (a weight file's metadata, the
shapes of a checkpoint), so `__post_init__` checks every field before anything is
built from it, and raises ValueError (the readers turn it into WeightsError).
Integers must be integers (not floats, not bools); the bounds are generous
multiples of what a real STF has (upstream: e = 48, 4 stages of depth <= 6,
24 heads, window 4, 12 slices):

    patch_size          int          1 .. 16
    in_chans            int          1 .. 16
    embed_dim           int          1 .. 1024
    depths              ints         1 .. 8 stages, each 1 .. 64 blocks
    num_heads           ints         one per stage, each 1 .. 256, dividing its stage width
    window_size         int          1 .. 32
    mlp_ratio           finite real  0 < r <= 16, at least one hidden unit in every stage
    num_slices          int          1 .. 64, dividing M
    max_support_slices  int          0 .. num_slices
    slice_hidden        4 ints       each 1 .. 4096
    M (widest stage)    derived      <= 4096

`SMALL_CONFIG` (the shipped weights) and `FULL_CONFIG` (upstream) are defined
at the end, so that they are reachable without torch.
"""
import math
import numbers
from dataclasses import asdict, dataclass

# (low, high) of every integer field, and of each entry of the tuple fields
INT_RANGES = {"patch_size": (1, 16), "in_chans": (1, 16), "embed_dim": (1, 1024), "window_size": (1, 32),
              "num_slices": (1, 64), "max_support_slices": (0, 64)}
TUPLE_RANGES = {"depths": (1, 64), "num_heads": (1, 256), "slice_hidden": (1, 4096)}
MAX_STAGES, MAX_MLP_RATIO, MAX_LATENT = 8, 16.0, 4096


def _int(name, v, low, high):
    """v as an int in low..high, or ValueError (floats and bools are not integers)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {type(v).__name__} {str(v)[:40]}")
    if not low <= v <= high:
        raise ValueError(f"{name} = {v} is outside {low}..{high}")
    return int(v)


def _check_fields(config, int_ranges, tuple_ranges, max_items=None):
    """Range-check a frozen config's integer and integer-tuple fields and store them converted
    (tuples also when built from JSON lists); ValueError names the first bad field."""
    for name, (low, high) in int_ranges.items():
        object.__setattr__(config, name, _int(name, getattr(config, name), low, high))
    for name, (low, high) in tuple_ranges.items():
        values = getattr(config, name)
        if not isinstance(values, (tuple, list)) or (max_items and not 1 <= len(values) <= max_items):
            count = f"1..{max_items} " if max_items else ""
            raise ValueError(f"{name} must be a list of {count}integers, got {str(values)[:60]}")
        object.__setattr__(config, name, tuple(_int(f"{name}[{i}]", v, low, high) for i, v in enumerate(values)))


class _JSONConfig:
    """to_dict / from_dict of a configuration dataclass (the metadata of weight files is JSON)."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"a configuration is a JSON object, not {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown configuration fields: {sorted(map(str, unknown))[:10]}")
        return cls(**d)


@dataclass(frozen=True)
class STFConfig(_JSONConfig):
    patch_size: int = 2
    in_chans: int = 3
    embed_dim: int = 48
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (3, 6, 12, 24)
    window_size: int = 4
    mlp_ratio: float = 4.0
    num_slices: int = 12
    max_support_slices: int = 6
    slice_hidden: tuple = (224, 176, 128, 64)

    model = "stf"  # a class attribute, not a field: the model id of weight files and bitstreams

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 — frozen
        _check_fields(self, INT_RANGES, TUPLE_RANGES, MAX_STAGES)
        r = self.mlp_ratio
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r) \
                or not 0 < r <= MAX_MLP_RATIO:
            raise ValueError(f"mlp_ratio must be a finite number in (0, {MAX_MLP_RATIO}], got {str(r)[:40]}")
        set_("mlp_ratio", float(r))
        if int(self.embed_dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio {self.mlp_ratio} leaves no hidden unit at width {self.embed_dim}")
        if len(self.depths) != len(self.num_heads):
            raise ValueError("depths and num_heads must have the same length")
        if len(self.slice_hidden) != 4:
            raise ValueError(f"slice_hidden must have 4 widths, got {len(self.slice_hidden)}")
        if self.M > MAX_LATENT:
            raise ValueError(f"latent channels {self.M} (embed_dim * 2**(stages-1)) exceed {MAX_LATENT}")
        if self.M % self.num_slices:
            raise ValueError(f"latent channels {self.M} are not divisible by num_slices {self.num_slices}")
        for dim, heads in zip(self.stage_dims, self.num_heads):
            if dim % heads:
                raise ValueError(f"stage width {dim} is not divisible by {heads} heads")
        if not 0 <= self.max_support_slices <= self.num_slices:
            raise ValueError("max_support_slices must lie in 0..num_slices")

    # --- derived sizes -------------------------------------------------------
    @property
    def stage_dims(self):
        """Encoder stage widths (48, 96, 192, 384); the decoder uses them reversed."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def M(self):
        """Channels of the latent y."""
        return self.stage_dims[-1]

    @property
    def N_z(self):
        """Channels of the hyper-latent z (the entropy bottleneck's channels)."""
        return self.embed_dim * 4

    @property
    def slice_channels(self):
        return self.M // self.num_slices

    @property
    def downsampling(self):
        """Total stride of g_a: patch_size * 2**(stages-1) (= 16)."""
        return self.patch_size * 2 ** (len(self.depths) - 1)

    @property
    def pad_multiple(self):
        """Image sizes must be multiples of this (4 * downsampling = 64, docs/architecture.md §4)."""
        return 4 * self.downsampling

    @property
    def hyper_widths(self):
        """(8e, 7e, 6e, 5e, 4e): the h_a output widths; h_s runs them backwards."""
        step = (self.M - self.N_z) // 4
        return tuple(self.M - i * step for i in range(4)) + (self.N_z,)



# `small` is the shipped default model: every code path of the full STF (four stages
# with shifted windows in each — depth 2 everywhere, PatchMerging / PatchSplit,
# hyperprior, channel-conditional slices with the max-support cap, LRP), at 1.45 M
# parameters (5.8 MB as float32), so that three rate points fit in 20 MB and train on
# two CPU cores. Widths derive from embed_dim = 8: stages 8/16/32/64, y 64 channels in
# 4 slices of 16 (later slices see only the first 2), z 32 channels; head dim 8/16/16/16.
SMALL_CONFIG = STFConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 4), num_slices=4,
                         max_support_slices=2, slice_hidden=(32, 24, 16, 16))
FULL_CONFIG = STFConfig()  # upstream's SymmetricalTransFormer()
CONFIGS = {"small": SMALL_CONFIG, "full": FULL_CONFIG}


# --- WACNN, the second upstream model (`cnn`, docs/wacnn.md) -------------------------------------
# (low, high) of WACNNConfig's integer fields and of each entry of its tuple fields
WACNN_INT_RANGES = {"in_chans": (1, 16), "N": (2, 4096), "M": (2, 4096), "num_heads": (1, 256),
                    "num_slices": (1, 64), "max_support_slices": (0, 64)}
WACNN_TUPLE_RANGES = {"window_sizes": (1, 32), "slice_hidden": (1, 4096)}


@dataclass(frozen=True)
class WACNNConfig(_JSONConfig):
    """Every size of WACNN (upstream `WACNN(192, 320)`), range-checked like STFConfig.

        N                   transform channels (192); also z's channels N_z
        M                   latent channels of y (320)
        num_heads           heads of both attention blocks (8)
        window_sizes        (at H/4 with N channels, at H/16 with M channels): (8, 4)
        num_slices, max_support_slices, slice_hidden   as STFConfig: 10, 5, (224, 176, 128, 64)

    The hyperprior widths step by (M - N) / 4 (32): h_a M, M, M-32, M-64, M-96 -> N; h_s
    N, N -> N+32 (x2 up) -> N+64 -> N+96 (x2 up) -> M. The attention blocks need no padding
    but whole windows: ceil(H/4) a multiple of window_sizes[0], ceil(H/16) of window_sizes[1].
    """
    in_chans: int = 3
    N: int = 192
    M: int = 320
    num_heads: int = 8
    window_sizes: tuple = (8, 4)
    num_slices: int = 10
    max_support_slices: int = 5
    slice_hidden: tuple = (224, 176, 128, 64)

    model = "cnn"  # a class attribute, not a field: the model id of weight files and bitstreams

    def __post_init__(self):
        _check_fields(self, WACNN_INT_RANGES, WACNN_TUPLE_RANGES)
        if len(self.window_sizes) != 2:
            raise ValueError(f"window_sizes must have 2 entries, got {len(self.window_sizes)}")
        if len(self.slice_hidden) != 4:
            raise ValueError(f"slice_hidden must have 4 widths, got {len(self.slice_hidden)}")
        if self.N % 2 or self.M % 2:
            raise ValueError(f"N = {self.N} and M = {self.M} must be even (residual units halve them)")
        for dim in (self.N, self.M):
            if dim % self.num_heads:
                raise ValueError(f"width {dim} is not divisible by {self.num_heads} heads")
        if self.M < self.N or (self.M - self.N) % 4:
            raise ValueError(f"M - N = {self.M - self.N} must be a non-negative multiple of 4 (hyperprior widths)")
        if self.M % self.num_slices:
            raise ValueError(f"latent channels {self.M} are not divisible by num_slices {self.num_slices}")
        if not 0 <= self.max_support_slices <= self.num_slices:
            raise ValueError("max_support_slices must lie in 0..num_slices")

    # --- derived sizes -------------------------------------------------------
    @property
    def N_z(self):
        """Channels of the hyper-latent z (the entropy bottleneck's channels) = N."""
        return self.N

    @property
    def slice_channels(self):
        return self.M // self.num_slices

    @property
    def downsampling(self):
        """Total stride of g_a: four stride-2 convolutions (= 16)."""
        return 16

    @property
    def pad_multiple(self):
        """Sizes that always work and code: lcm(4 * ws0, 16 * ws1, 64) (= 64, docs/wacnn.md §5)."""
        return math.lcm(4 * self.window_sizes[0], 16 * self.window_sizes[1], 64)

    @property
    def hyper_widths(self):
        """(M, M-s, M-2s, M-3s, N), s = (M - N) / 4: the h_a output widths (320, 288, 256, 224, 192)."""
        step = (self.M - self.N) // 4
        return (self.M,) + tuple(self.M - i * step for i in range(1, 4)) + (self.N,)

    @property
    def hyper_synthesis_widths(self):
        """(N, N+s, N+2s, N+3s, M): the h_mean_s / h_scale_s output widths (192, 224, 256, 288, 320)."""
        step = (self.M - self.N) // 4
        return (self.N,) + tuple(self.N + i * step for i in range(1, 4)) + (self.M,)



WACNN_CONFIG = WACNNConfig()  # upstream's WACNN(192, 320), registered as 'cnn'
# a small WACNN for fast tests: every layer and both attention blocks, 16 / 32 channels
WACNN_SMALL_CONFIG = WACNNConfig(N=16, M=32, num_heads=2, window_sizes=(4, 2), num_slices=4,
                                 max_support_slices=2, slice_hidden=(32, 24, 16, 16))


# the recipe-weight models `minstf crosscheck --synthetic` and the bench offer, by name
SYNTHETIC_CONFIGS = {**CONFIGS, "cnn": WACNNConfig(), "cnn-small": WACNN_SMALL_CONFIG}
