"""The STF configuration: every size of the network in one frozen dataclass.

The defaults are upstream's `SymmetricalTransFormer()` (STF.md §1). Smaller
configurations run through exactly the same code; only the widths change.

Channel widths that upstream hard-codes for embed_dim = 48 are derived here so
that they scale with `embed_dim` (e = embed_dim):

    y (latent M)        8e   = 384
    z (hyper-latent)    4e   = 192
    h_a                 8e -> 8e -> 7e -> 6e (stride 2) -> 5e -> 4e (stride 2)
    h_mean_s/h_scale_s  4e -> 5e -> 6e (x2 up) -> 7e -> 8e (x2 up) -> 8e
    slice networks      M + S*k -> slice_hidden[0..3] -> S   (S = M / num_slices)
"""
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class STFConfig:
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

    def __post_init__(self):
        # tuples, also when built from JSON lists
        for name in ("depths", "num_heads", "slice_hidden"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.depths) != len(self.num_heads):
            raise ValueError("depths and num_heads must have the same length")
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
        """Image sizes must be multiples of this (4 * downsampling = 64, STF.md §4)."""
        return 4 * self.downsampling

    @property
    def hyper_widths(self):
        """(8e, 7e, 6e, 5e, 4e): the h_a output widths; h_s runs them backwards."""
        step = (self.M - self.N_z) // 4
        return tuple(self.M - i * step for i in range(4)) + (self.N_z,)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown configuration fields: {sorted(unknown)}")
        return cls(**d)
