"""The PyTorch mirror of STF: oracle for cross-checks, training engine, speed yardstick.

Only tools, tests and the CLI's cross-check import this subpackage; the minstf
runtime never imports torch.

On a machine shared with other processes, OpenMP threads that spin while they wait
make torch up to 10x slower: set OMP_WAIT_POLICY=PASSIVE in the environment before
torch is imported (the benchmark does so for its torch worker). Importing this
package changes no environment variable.
"""
from .configs import CONFIGS, SMALL_CONFIG  # noqa: F401
from .stf_torch import STFTorch, build_indexes  # noqa: F401
from .wacnn_torch import WACNNTorch  # noqa: F401
