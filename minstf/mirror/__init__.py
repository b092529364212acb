"""The PyTorch mirror of STF: oracle for cross-checks, training engine, speed yardstick.

Only tools, tests and the CLI's cross-check import this subpackage; the minstf
runtime never imports torch.
"""
from .stf_torch import STFTorch, build_indexes  # noqa: F401
