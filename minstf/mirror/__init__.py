"""The PyTorch mirror of STF: oracle for cross-checks, training engine, speed yardstick.

Only tools, tests and the CLI's cross-check import this subpackage; the minstf
runtime never imports torch.
"""
import os

# Two cores shared with other processes: OpenMP threads that spin while waiting make
# torch up to 10x slower under contention. Sleep instead (only if torch is not yet
# imported and the user has not chosen otherwise).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .configs import CONFIGS, SMALL_CONFIG  # noqa: E402,F401
from .stf_torch import STFTorch, build_indexes  # noqa: E402,F401
