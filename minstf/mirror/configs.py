"""Named configurations for the mirror's training script.

`small` is the shipped default model: every code path of the full STF (four
stages with shifted windows in each — depth 2 everywhere, PatchMerging /
PatchSplit, hyperprior, channel-conditional slices with the max-support cap,
LRP), at 1.45 M parameters (5.8 MB as float32), so that three rate points fit
in 20 MB and train on two CPU cores. Widths derive from embed_dim = 8:
stages 8/16/32/64, y 64 channels in 4 slices of 16 (later slices see only
the first 2), z 32 channels; head dim 8/16/16/16.
"""
from ..config import STFConfig

SMALL_CONFIG = STFConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 4), num_slices=4,
                         max_support_slices=2, slice_hidden=(32, 24, 16, 16))
FULL_CONFIG = STFConfig()

CONFIGS = {"small": SMALL_CONFIG, "full": FULL_CONFIG}
